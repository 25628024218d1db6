// Package presence publishes a node's presence events on
// pusher.presence.<uid>, one on every connect and disconnect, for
// backends that fall back to mobile push or show who is online.
//
// Events leave through a bounded queue and one goroutine, so the connect
// path never waits on NATS: enqueueing is a channel send that never
// blocks. When NATS is slower than the connects for long enough that the
// queue fills, events are dropped and counted
// (pusher_presence_events_total{result="dropped"}); the answer to a
// pusher.online.<uid> request stays the truth.
package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/wire"
)

// Config tunes a Publisher. Zero values mean the documented default.
type Config struct {
	// Node names this node in every event.
	Node string
	// Buffer is how many events may wait for NATS; default 65536 (a
	// connect storm's worth; an event waiting costs about 64 bytes).
	Buffer int
	// Registerer receives pusher_presence_events_total; nil keeps it
	// unregistered.
	Registerer prometheus.Registerer
}

// Log event names.
const (
	evDropped = "presence.dropped"
	evFailed  = "presence.publish_failed"
)

// Publisher publishes presence events. It implements ws.Presence.
//
// Lifecycle: New, Start, Close. Events before Start wait in the queue;
// events after Close are dropped.
type Publisher struct {
	nc  *nats.Conn
	log *zap.Logger
	cfg Config

	q         chan event
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once

	published, dropped, failed prometheus.Counter
	// lost counts drops since the run loop last logged them: the
	// enqueuing side, under the hub's lock, only adds.
	lost atomic.Int64
}

// event is one queued presence change.
type event struct {
	uid   string
	conn  uint64
	conns int
	code  int // 0: connected
	at    time.Time
}

// New returns a Publisher over nc.
func New(nc *nats.Conn, log *zap.Logger, cfg Config) (*Publisher, error) {
	if cfg.Buffer == 0 {
		cfg.Buffer = 65536
	}
	if cfg.Buffer < 1 || cfg.Node == "" {
		return nil, fmt.Errorf("presence config: buffer %d, node %q: want a positive buffer and a node name", cfg.Buffer, cfg.Node)
	}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pusher_presence_events_total",
		Help: "Presence events by result: published, dropped (queue full or shutting down), failed (NATS refused).",
	}, []string{"result"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(events); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return &Publisher{
		nc: nc, log: log.Named("presence"), cfg: cfg,
		q:         make(chan event, cfg.Buffer),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		published: events.WithLabelValues("published"),
		dropped:   events.WithLabelValues("dropped"),
		failed:    events.WithLabelValues("failed"),
	}, nil
}

// Connected queues a "connected" event. It never blocks.
func (p *Publisher) Connected(uid string, conn uint64, conns int) {
	p.enqueue(event{uid: uid, conn: conn, conns: conns, at: time.Now()})
}

// Disconnected queues a "disconnected" event. It never blocks.
func (p *Publisher) Disconnected(uid string, conn uint64, conns, code int) {
	p.enqueue(event{uid: uid, conn: conn, conns: conns, code: code, at: time.Now()})
}

func (p *Publisher) enqueue(e event) {
	select {
	case <-p.stop:
		p.dropped.Inc()
		return
	default:
	}
	select {
	case p.q <- e:
	default:
		p.dropped.Inc()
		p.lost.Add(1) // logged by the run loop, which may take its time
	}
}

// Start starts the goroutine that publishes; Close stops it.
func (p *Publisher) Start() { go p.run() }

// Close publishes what is queued (so the disconnects of a node shutting
// down leave before its NATS connection drains), within ctx, and stops.
// Idempotent.
func (p *Publisher) Close(ctx context.Context) error {
	p.closeOnce.Do(func() { close(p.stop) })
	select {
	case <-p.done:
	case <-ctx.Done():
		return fmt.Errorf("publish queued presence events: %w", ctx.Err())
	}
	if err := p.nc.FlushWithContext(ctx); err != nil && p.nc.IsConnected() {
		return fmt.Errorf("flush presence events: %w", err)
	}
	return nil
}

func (p *Publisher) run() {
	defer close(p.done)
	for {
		select {
		case e := <-p.q:
			p.publish(e)
		case <-p.stop:
			for {
				select {
				case e := <-p.q:
					p.publish(e)
				default:
					return
				}
			}
		}
	}
}

// publish encodes e and publishes it, after saying how many events the
// queue had to drop since the last one.
func (p *Publisher) publish(e event) {
	if n := p.lost.Swap(0); n > 0 {
		p.log.Warn(evDropped, zap.Int64("events", n), zap.String("detail", "the presence queue was full: NATS is slower than connects"))
	}
	ev := wire.PresenceEvent{
		UID: e.uid, Event: wire.EventConnected, Conn: e.conn, Node: p.cfg.Node, Conns: e.conns,
		TS: e.at.UTC().Format("2006-01-02T15:04:05.000Z07:00"),
	}
	if e.code != 0 {
		ev.Event, ev.Code = wire.EventDisconnected, e.code
	}
	b, err := json.Marshal(ev)
	if err == nil {
		err = p.nc.Publish(wire.PresenceSubject(e.uid), b)
	}
	if err != nil {
		p.failed.Inc()
		p.log.Warn(evFailed, zap.String("uid", e.uid), zap.Error(err))
		return
	}
	p.published.Inc()
}
