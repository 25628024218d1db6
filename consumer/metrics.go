package consumer

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pusher-io/pusher/wire"
)

// Outcome label values of pusher_messages_total.
const (
	outcomeDelivered    = "delivered"
	outcomeRetried      = "retried"
	outcomeDeadLettered = "deadlettered"
)

// metrics are the per-message counters. Each series is resolved once here
// so the hot path only increments.
type metrics struct {
	delivered    prometheus.Counter
	retried      map[string]prometheus.Counter // by reason
	deadLettered map[string]prometheus.Counter // by reason
	latency      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	messages := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pusher_messages_total",
		Help: "Messages settled by this node, by outcome (delivered, retried, deadlettered) and reason.",
	}, []string{"outcome", "reason"})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "pusher_delivery_latency_seconds",
		Help: "Time from JetStream publish to delivery: the client's confirmation (or, with PUSHER_DELIVERY_CONFIRM=write, the first successful write).",
		// 0.25 ms to about 8 s: loopback deliveries up to back-off retries.
		Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16),
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{messages, latency} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	m := &metrics{
		delivered:    messages.WithLabelValues(outcomeDelivered, ""),
		retried:      map[string]prometheus.Counter{},
		deadLettered: map[string]prometheus.Counter{},
		latency:      latency,
	}
	for _, r := range []string{wire.ReasonWriteFailed, wire.ReasonQueueFull, wire.ReasonTimeout, wire.ReasonUnconfirmed, wire.ReasonDeadLetterFailed} {
		m.retried[r] = messages.WithLabelValues(outcomeRetried, r)
	}
	for _, r := range []string{wire.ReasonOffline, wire.ReasonMaxDeliver, wire.ReasonBadSubject} {
		m.deadLettered[r] = messages.WithLabelValues(outcomeDeadLettered, r)
	}
	return m, nil
}
