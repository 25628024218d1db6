package server

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/hub"
)

// registerGauges adds the gauges read at scrape time, pusher_build_info,
// and the Go runtime
// and process collectors (the process one includes the embedded NATS,
// which runs in this process). The counters and histograms are
// registered by the packages that own them.
func registerGauges(reg *prometheus.Registry, b Build, h *hub.Hub, cons *consumer.Consumer, nc *nats.Conn) error {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfoGauge(b),
		gauge("pusher_connections", "Live WebSocket connections on this node.",
			func() float64 { return float64(h.Len()) }),
		gauge("pusher_inflight_messages", "Messages pulled by this node and not yet acked, nacked or dead-lettered.",
			func() float64 { return float64(cons.Stats().Inflight) }),
		gauge("pusher_consumer_pending", "Messages in PUSH not yet delivered to consumer pusher (consumer lag), as of the last poll.",
			func() float64 { return float64(cons.Stats().Pending) }),
		gauge("pusher_consumer_ack_pending", "Deliveries awaiting ack across all nodes, as of the last poll; near max-ack-pending means stalling.",
			func() float64 { return float64(cons.Stats().AckPending) }),
		gauge("pusher_nats_connected", "1 while connected to NATS.", func() float64 {
			if nc.IsConnected() {
				return 1
			}
			return 0
		}),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
