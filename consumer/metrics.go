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
	outcomeDropped      = "dropped"
)

// metrics are the per-message counters. Each series is resolved once here
// so the hot path only increments.
type metrics struct {
	delivered    prometheus.Counter
	retried      map[string]prometheus.Counter // by reason
	deadLettered map[string]prometheus.Counter // by reason
	dropped      map[string]prometheus.Counter // by reason: what publishers' policies dropped
	badPolicy    prometheus.Counter
	latency      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	messages, err := messagesVec(reg)
	if err != nil {
		return nil, err
	}
	badPolicy := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pusher_bad_policy_headers_total",
		Help: "Messages whose Pusher-TTL or Pusher-Offline header was malformed, and so ignored.",
	})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "pusher_delivery_latency_seconds",
		Help: "Time from JetStream publish to delivery: the client's confirmation (or, with PUSHER_DELIVERY_CONFIRM=write, the first successful write).",
		// 0.25 ms to about 8 s: loopback deliveries up to back-off retries.
		Buckets: prometheus.ExponentialBuckets(0.00025, 2, 16),
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{badPolicy, latency} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	m := &metrics{
		delivered:    messages.WithLabelValues(outcomeDelivered, ""),
		retried:      map[string]prometheus.Counter{},
		deadLettered: map[string]prometheus.Counter{},
		dropped:      droppedCounters(messages),
		badPolicy:    badPolicy,
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

// messagesVec is pusher_messages_total, registered with reg (if not nil)
// by whichever of the Consumer and the Replayer comes first: both count
// into it.
func messagesVec(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pusher_messages_total",
		Help: "Messages settled by this node, by outcome (delivered, retried, deadlettered, dropped) and reason.",
	}, []string{"outcome", "reason"})
	if reg == nil {
		return v, nil
	}
	err := reg.Register(v)
	if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing, nil
		}
	}
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	return v, nil
}

// droppedCounters are pusher_messages_total{outcome="dropped"} by reason.
func droppedCounters(v *prometheus.CounterVec) map[string]prometheus.Counter {
	return map[string]prometheus.Counter{
		wire.ReasonExpired:        v.WithLabelValues(outcomeDropped, wire.ReasonExpired),
		wire.ReasonOfflineDropped: v.WithLabelValues(outcomeDropped, wire.ReasonOfflineDropped),
	}
}
