package ws

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Result label values of pusher_connects_total.
const (
	resultOK            = "ok"
	resultBadRequest    = "bad_request"
	resultForbidden     = "forbidden"
	resultBusy          = "busy"
	resultUnauthorized  = "unauthorized"
	resultLimited       = "limited"
	resultUnavailable   = "unavailable"
	resultUpgradeFailed = "upgrade_failed"
)

// connectResults are every result, so that each series exists, at 0, from
// the start: a rate() or an alert on one that never happened yet then
// sees 0, not no data.
var connectResults = []string{resultOK, resultBadRequest, resultForbidden, resultBusy, resultUnauthorized, resultLimited, resultUnavailable, resultUpgradeFailed}

// metrics are the Handler's series, resolved once so hot paths only
// observe and increment.
type metrics struct {
	connects       *prometheus.CounterVec // by result
	confirmLatency prometheus.Histogram
	unresponsive   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pusher_connects_total",
			Help: "WebSocket connection attempts by result (ok, bad_request, forbidden, busy, unauthorized, limited, unavailable, upgrade_failed).",
		}, []string{"result"}),
		confirmLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "pusher_confirm_latency_seconds",
			Help: "Time from a frame's write to the client's confirmation of it (the pong to the ping after it).",
			// 0.1 ms to about 13 s: loopback to a phone about to be declared unresponsive.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		unresponsive: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pusher_unresponsive_closes_total",
			Help: "Connections closed with 4004 because written frames stayed unconfirmed for the confirm timeout.",
		}),
	}
	for _, r := range connectResults {
		m.connects.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.connects, m.confirmLatency, m.unresponsive} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
