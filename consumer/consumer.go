// Package consumer is pusher's JetStream side: it creates the streams and
// the durable consumer, pulls push.<uid> messages, hands each to a Router,
// and settles it from the outcome (ack, nak with back-off, or dead-letter
// with the payload); it also reads and replays dead letters.
package consumer

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
)

// Router delivers to uid's live connections, wherever they are. The
// consumer declares it so that one node and a cluster of nodes serve
// alike (cluster.Node implements it for both).
type Router interface {
	// Route hands m to uid's connections and reports the outcome through
	// m.Reporter exactly once, possibly before it returns: nil once a
	// connection has the message, hub.ErrOffline when uid has none, or
	// the failure. Route must not block.
	Route(uid string, m *hub.Message)
	// Online reports whether uid has a live connection on this node.
	Online(uid string) bool
	// StoredOffline is told after an offline dead letter for uid was
	// stored, so that a connect that raced the dead-lettering (on any
	// node) still gets it replayed. It must not block.
	StoredOffline(uid string)
}

// Config tunes a Consumer. Zero values mean the documented default.
type Config struct {
	// Topology is what EnsureTopology creates.
	Topology Topology
	// MaxDeliver is how many deliveries a message gets before it is
	// dead-lettered with reason max_deliver; default 5.
	MaxDeliver int
	// Backoff is the redelivery delay after each failed delivery, the last
	// step repeating; default 1s, 5s, 30s.
	Backoff []time.Duration
	// PullBatch is how many messages are buffered from the server ahead of
	// dispatch; default 1000.
	PullBatch int
	// QuietDelivered drops the per-message push.delivered log line;
	// failures are always logged.
	QuietDelivered bool
	// MonitorInterval is how often consumer state is read, for metrics and
	// to notice a deleted consumer; default 5s.
	MonitorInterval time.Duration
	// Registerer receives pusher_messages_total and
	// pusher_delivery_latency_seconds; nil keeps them unregistered.
	Registerer prometheus.Registerer
}

func (c Config) withDefaults() (Config, error) {
	if c.MaxDeliver == 0 {
		c.MaxDeliver = 5
	}
	if len(c.Backoff) == 0 {
		c.Backoff = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}
	}
	if c.PullBatch == 0 {
		c.PullBatch = 1000
	}
	if c.MonitorInterval == 0 {
		c.MonitorInterval = 5 * time.Second
	}
	top, err := c.Topology.withDefaults()
	if err != nil {
		return c, err
	}
	c.Topology = top
	switch {
	case c.MaxDeliver < 1:
		return c, fmt.Errorf("max deliver %d: want at least 1", c.MaxDeliver)
	case c.PullBatch < 1:
		return c, fmt.Errorf("pull batch %d: want at least 1", c.PullBatch)
	}
	for _, d := range c.Backoff {
		if d < 0 {
			return c, fmt.Errorf("backoff %s: negative", d)
		}
		if d >= c.Topology.AckWait*1000 {
			return c, fmt.Errorf("backoff %s: too long", d)
		}
	}
	return c, nil
}

// Log event names (README: stable, shipped to the log stack).
const (
	evDelivered    = "push.delivered"
	evRetry        = "push.retry"
	evDeadLettered = "push.deadlettered"
	evDropped      = "push.dropped"
	evBadPolicy    = "push.bad_policy"
	evDLQFailed    = "push.deadletter_failed"
	evAckFailed    = "push.ack_failed"
	evReplayed     = "dlq.replayed"
	evReplayFailed = "dlq.replay_failed"
	evConsumerErr  = "consumer.error"
	evRecreated    = "consumer.recreated"
	evPanic        = "consumer.panic"
)

// Consumer owns the durable pull consumer "pusher" and every message it
// pulls until that message is acked, nacked or dead-lettered.
//
// Lifecycle: New, Start, then Drain (stop pulling, finish in-flight) and
// Close (stop workers). Close alone also works.
type Consumer struct {
	// Static after New.
	js     jetstream.JetStream
	router Router
	log    *zap.Logger
	cfg    Config
	met    *metrics

	// delivered and failures carry jobs from connection writers to the
	// ack and failure workers, so writers only write: they never wait on
	// NATS, and short-lived writer goroutines do not grow their stacks on
	// the ack and logging path (measured: most of the log line's cost was
	// stack growth). Capacity MaxAckPending: the server never has more
	// deliveries outstanding, so sends do not block.
	delivered chan *job
	failures  chan *job
	// dlqAcks carries dead letters awaiting their PubAck to the worker that
	// then terminates the original, in publish order.
	dlqAcks chan pendingDeadLetter

	inflight atomic.Int64
	idle     chan struct{} // signalled when inflight drops to zero
	stopping atomic.Bool   // failures are nacked at once during shutdown

	// mu guards cc and every write of pulling, so that a recreate (monitor)
	// and Drain agree on which ConsumeContext is live. It is never held
	// across a NATS round trip; pulling is also read without it (Ready).
	mu      sync.Mutex
	cc      jetstream.ConsumeContext
	pulling atomic.Bool

	// fields reuses the per-message log line's field slice: zap encodes
	// fields synchronously and keeps none, and the variadic call would
	// otherwise put 256 bytes on the heap for every delivered message.
	fields sync.Pool

	// Set by the monitor from consumer info, read by metrics and Ready.
	consumerOK atomic.Bool
	pending    atomic.Uint64 // num_pending from the last consumer info
	ackPending atomic.Int64  // num_ack_pending from the last consumer info
	recreate   chan struct{}

	cancel      context.CancelFunc
	wg          sync.WaitGroup
	closeOnce   sync.Once
	workersDone chan struct{}
}

// New returns a Consumer; it does nothing until Start. js must have been
// created with an async publish timeout, so a dead letter whose PubAck
// never comes is retried instead of waited on forever.
func New(js jetstream.JetStream, router Router, log *zap.Logger, cfg Config) (*Consumer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("consumer config: %w", err)
	}
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c := &Consumer{
		met:         met,
		js:          js,
		router:      router,
		log:         log.Named("consumer"),
		cfg:         cfg,
		delivered:   make(chan *job, cfg.Topology.MaxAckPending),
		failures:    make(chan *job, cfg.Topology.MaxAckPending),
		dlqAcks:     make(chan pendingDeadLetter, dlqAckBuffer),
		idle:        make(chan struct{}, 1),
		recreate:    make(chan struct{}, 1),
		workersDone: make(chan struct{}),
	}
	c.fields.New = func() any { s := make([]zap.Field, 0, 6); return &s } // push.delivered's, replay_of and original_seq included
	return c, nil
}

// pullExpiry is how long each pull request waits on the server.
const pullExpiry = 5 * time.Second

// topologyAttempt bounds one EnsureTopology call at start; Start retries
// until its context ends, since nodes starting together on a fresh
// cluster may find JetStream busy electing leaders.
const topologyAttempt = 10 * time.Second

// dlqAckBuffer bounds dead letters awaiting their PubAck. When it is full
// the failure worker waits, which is the back-pressure we want if the DLQ
// stream is slow: nothing is dropped.
const dlqAckBuffer = 4096

// Start ensures the topology (retrying until ctx ends), starts the workers
// and begins pulling. ctx bounds the setup only; Drain and Close end what
// Start began. After an error nothing of the Consumer runs.
func (c *Consumer) Start(ctx context.Context) error {
	cons, err := c.ensureTopology(ctx)
	if err != nil {
		close(c.workersDone)
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.pulling.Store(true)
	if err := c.consume(cons); err != nil {
		c.pulling.Store(false)
		cancel()
		close(c.workersDone)
		return err
	}
	c.consumerOK.Store(true)
	c.goWorker(func() { c.ackWorker(wctx) })
	c.goWorker(func() { c.failureWorker(wctx) })
	c.goWorker(func() { c.deadLetterWorker(wctx) })
	c.goWorker(func() { c.monitor(wctx) })
	go func() { c.wg.Wait(); close(c.workersDone) }()
	return nil
}

// ensureTopology calls EnsureTopology until it succeeds or ctx ends.
func (c *Consumer) ensureTopology(ctx context.Context) (jetstream.Consumer, error) {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, topologyAttempt)
		cons, err := EnsureTopology(actx, c.js, c.cfg.Topology)
		cancel()
		if err == nil {
			return cons, nil
		}
		c.log.Warn(evConsumerErr, zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
}

func (c *Consumer) goWorker(f func()) {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); f() }()
}

// consume starts pulling from cons and makes it the live ConsumeContext,
// stopping the one it replaces. The pull starts without c.mu held; if
// Drain stopped pulling meanwhile, the new one is stopped at once.
func (c *Consumer) consume(cons jetstream.Consumer) error {
	cc, err := cons.Consume(c.handle,
		jetstream.PullMaxMessages(c.cfg.PullBatch),
		// A pull that is lost (a consumer leader elected a moment ago
		// answers "no responders") is noticed after two missed heartbeats
		// of half the expiry: 5s, not the default 30s, so a node that just
		// started does not sit idle.
		jetstream.PullExpiry(pullExpiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			c.log.Warn(evConsumerErr, zap.Error(err))
			if isGone(err) {
				c.consumerOK.Store(false)
				c.askRecreate()
			}
		}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", wire.DurableName, err)
	}
	c.mu.Lock()
	if !c.pulling.Load() {
		c.mu.Unlock()
		cc.Stop()
		return nil
	}
	old := c.cc
	c.cc = cc
	c.mu.Unlock()
	if old != nil {
		old.Stop()
	}
	return nil
}

// askRecreate has the monitor check the topology now.
func (c *Consumer) askRecreate() {
	select {
	case c.recreate <- struct{}{}:
	default:
	}
}

// Ready reports whether the consumer is pulling from a consumer that
// exists. It takes no lock, so /readyz never waits behind a recreate.
func (c *Consumer) Ready() bool {
	return c.pulling.Load() && c.consumerOK.Load() && c.js.Conn().IsConnected()
}

// Stats are the consumer figures an operator watches.
type Stats struct {
	Inflight   int64  // pulled and not yet acked, nacked or dead-lettered here
	Pending    uint64 // in the stream, not yet delivered (last poll)
	AckPending int64  // delivered, awaiting ack, all nodes (last poll)
}

// Stats returns current figures; the consumer-wide ones are as of the last
// monitor poll.
func (c *Consumer) Stats() Stats {
	return Stats{Inflight: c.inflight.Load(), Pending: c.pending.Load(), AckPending: c.ackPending.Load()}
}

// Drain stops pulling, lets every message already pulled reach its
// outcome, and returns when none is in flight or ctx is done.
func (c *Consumer) Drain(ctx context.Context) error {
	c.mu.Lock()
	cc := c.cc
	c.pulling.Store(false)
	c.mu.Unlock()
	if cc != nil {
		// Drain hands buffered messages to the handler before closing,
		// so they are delivered rather than left to time out.
		cc.Drain()
		select {
		case <-cc.Closed():
		case <-ctx.Done():
			return fmt.Errorf("stop pulling: %w", ctx.Err())
		}
	}
	return c.waitIdle(ctx)
}

// Close stops pulling, nacks failures at once from now on so another node
// can take them, waits until nothing is in flight or ctx is done, then
// stops the workers. It is idempotent; after it returns no goroutine of
// the Consumer runs.
func (c *Consumer) Close(ctx context.Context) error {
	c.stopping.Store(true)
	err := c.Drain(ctx)
	c.closeOnce.Do(func() {
		if c.cancel != nil {
			c.cancel()
		}
	})
	select {
	case <-c.workersDone:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("stop consumer workers: %w", ctx.Err())
		}
	}
	return err
}

func (c *Consumer) waitIdle(ctx context.Context) error {
	for c.inflight.Load() > 0 {
		select {
		case <-c.idle:
		case <-ctx.Done():
			return fmt.Errorf("wait for %d in-flight messages: %w", c.inflight.Load(), ctx.Err())
		}
	}
	return nil
}

func (c *Consumer) settled() {
	if c.inflight.Add(-1) == 0 {
		select {
		case c.idle <- struct{}{}:
		default:
		}
	}
}

// handle is called by nats.go for each pulled message, one at a time, in
// stream order per consumer: that is what keeps one uid's messages in
// publish order.
func (c *Consumer) handle(msg jetstream.Msg) {
	c.inflight.Add(1)
	// handedOff is set once the outcome path owns the message's settling.
	handedOff := false
	defer func() {
		if p := recover(); p != nil {
			c.contain(msg, p, !handedOff)
		}
	}()
	meta, err := msg.Metadata()
	if err != nil {
		// Not a JetStream delivery: nothing to ack; should never happen.
		c.log.Error(evConsumerErr, zap.String("subject", msg.Subject()), zap.Error(err))
		c.settled()
		return
	}
	j := &job{
		c:         c,
		msg:       msg,
		seq:       meta.Sequence.Stream,
		delivered: meta.NumDelivered,
		published: meta.Timestamp,
	}
	uid, err := wire.UIDFromSubject(msg.Subject())
	if err != nil {
		handedOff = true
		c.deadLetter(j, wire.ReasonBadSubject, err)
		return
	}
	j.uid = uid
	h := msg.Headers()
	j.m.Seq, j.m.Published, j.m.ID = origin(h, j.seq, j.published)
	if len(h) > 0 {
		j.policy = c.policyOf(j, h)
		j.replayOf = replayOf(h)
	}
	if j.policy.Expired(j.m.Published, time.Now()) {
		handedOff = true
		c.drop(j, wire.ReasonExpired)
		return
	}
	if j.delivered > uint64(c.cfg.MaxDeliver) {
		// The last allowed delivery never settled (crash, AckWait, or the
		// dead letter could not be stored): give up now rather than
		// deliver more than promised. If the user is not connected here,
		// call it offline, so their connect replays it: deliveries burnt
		// on a DLQ leader election must not cost an absent user the
		// message.
		handedOff = true
		if c.router.Online(uid) {
			c.deadLetter(j, wire.ReasonMaxDeliver, nil)
		} else {
			c.offline(j)
		}
		return
	}
	data := msg.Data()
	j.m.Data, j.m.Binary, j.m.Reporter = data, !utf8.Valid(data), j
	// A panic inside Route leaves it unknown whether the outcome was
	// already reported; contain settles anyway, since a leaked in-flight
	// count would stall shutdown, while a double one only makes it
	// briefly low.
	c.router.Route(uid, &j.m)
}

// contain keeps a panic in handle (a bug) to its message: the message is
// nacked for a later retry and logged, and the node keeps serving. settle
// says whether the message's in-flight count is still handle's to drop.
func (c *Consumer) contain(msg jetstream.Msg, p any, settle bool) {
	err := msg.NakWithDelay(c.cfg.Backoff[len(c.cfg.Backoff)-1])
	c.log.Error(evPanic, zap.String("subject", msg.Subject()), zap.String("panic", fmt.Sprint(p)),
		zap.Stack("stack"), zap.NamedError("nak_error", err))
	if settle {
		c.settled()
	}
}
