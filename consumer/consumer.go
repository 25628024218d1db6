// Package consumer pulls push.<uid> messages from JetStream, hands each to the
// uid's connections through a Router, and settles it from the outcome: ack
// after a write, nak with back-off, or dead-letter with the payload.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
)

// Router delivers to a uid's live connections. *hub.Hub implements it for
// one node; a cluster-wide route can implement it later without changes
// here.
type Router interface {
	// Route hands m to uid's connections and returns how many there are;
	// 0 means offline and m's Reporter is not called. Otherwise the
	// Reporter is called exactly once; hub.ErrOffline there also means
	// offline (a router that learns it late). Route must not block.
	Route(uid string, m *hub.Message) int
	// Online reports whether uid has a live connection. The consumer asks
	// after storing an offline dead letter, so that a connect racing the
	// dead-lettering still gets it replayed.
	Online(uid string) bool
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
	// ReplayWorkers replay dead letters to users who connect; default 2.
	ReplayWorkers int
	// MonitorInterval is how often consumer state is read, for metrics and
	// to notice a deleted consumer; default 5s.
	MonitorInterval time.Duration
	// Registerer receives pusher_messages_total and
	// pusher_delivery_latency_seconds; nil keeps them unregistered.
	Registerer prometheus.Registerer
	// Broadcast announces each stored offline dead letter on core NATS
	// pusher.replay.<uid>, and replays for local uids announced by any
	// node. With several nodes the uid may be connected elsewhere, where
	// the local Online check cannot see it.
	Broadcast bool
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
	if c.ReplayWorkers == 0 {
		c.ReplayWorkers = 2
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
	case c.ReplayWorkers < 1:
		return c, fmt.Errorf("replay workers %d: want at least 1", c.ReplayWorkers)
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

// Log event names (DESIGN.md: stable, shipped to the log stack).
const (
	evDelivered    = "push.delivered"
	evRetry        = "push.retry"
	evDeadLettered = "push.deadlettered"
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
	js     jetstream.JetStream
	router Router
	log    *zap.Logger
	cfg    Config
	dlq    *DLQ
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

	replays replayQueue

	mu      sync.Mutex // guards cc, pulling
	cc      jetstream.ConsumeContext
	pulling bool

	// fields reuses the per-message log line's field slice: zap encodes
	// fields synchronously and keeps none, and the variadic call would
	// otherwise put 256 bytes on the heap for every delivered message.
	fields sync.Pool

	replaySub *nats.Subscription // pusher.replay.*, with Broadcast

	consumerOK  atomic.Bool
	pending     atomic.Uint64 // num_pending from the last consumer info
	ackPending  atomic.Int64  // num_ack_pending from the last consumer info
	recreate    chan struct{}
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
		dlq:         NewDLQ(js),
		delivered:   make(chan *job, cfg.Topology.MaxAckPending),
		failures:    make(chan *job, cfg.Topology.MaxAckPending),
		dlqAcks:     make(chan pendingDeadLetter, dlqAckBuffer),
		idle:        make(chan struct{}, 1),
		recreate:    make(chan struct{}, 1),
		workersDone: make(chan struct{}),
	}
	c.replays.wake = make(chan struct{}, 1)
	c.fields.New = func() any { s := make([]zap.Field, 0, 4); return &s }
	return c, nil
}

// pullExpiry is how long each pull request waits on the server.
const pullExpiry = 5 * time.Second

// topologyAttempt bounds one EnsureTopology call at start; Start retries
// until its context ends, since nodes starting together on a fresh
// cluster may find JetStream busy electing leaders.
const topologyAttempt = 10 * time.Second

// dlqAckBuffer bounds dead letters awaiting their PubAck. When it is full
// dispatch waits, which is the back-pressure we want if the DLQ stream is
// slow: nothing is dropped.
const dlqAckBuffer = 4096

// Start ensures the topology (retrying until ctx ends), starts the workers
// and begins pulling. ctx bounds the setup only; Drain and Close end what
// Start began.
func (c *Consumer) Start(ctx context.Context) error {
	var cons jetstream.Consumer
	var err error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, topologyAttempt)
		cons, err = EnsureTopology(actx, c.js, c.cfg.Topology)
		cancel()
		if err == nil {
			break
		}
		c.log.Warn(evConsumerErr, zap.Int("attempt", attempt), zap.Error(err))
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
	wctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.mu.Lock()
	c.pulling = true
	err = c.consumeLocked(cons)
	c.mu.Unlock()
	if err != nil {
		cancel()
		close(c.workersDone)
		return err
	}
	c.consumerOK.Store(true)
	if c.cfg.Broadcast {
		sub, err := c.js.Conn().Subscribe(wire.ReplaySubjects, c.onReplayNotice)
		if err != nil {
			c.mu.Lock()
			c.cc.Stop()
			c.mu.Unlock()
			cancel()
			close(c.workersDone)
			return fmt.Errorf("subscribe %s: %w", wire.ReplaySubjects, err)
		}
		c.replaySub = sub
	}
	c.goWorker(func() { c.ackWorker(wctx) })
	c.goWorker(func() { c.failureWorker(wctx) })
	c.goWorker(func() { c.deadLetterWorker(wctx) })
	c.goWorker(func() { c.monitor(wctx) })
	for range c.cfg.ReplayWorkers {
		c.goWorker(func() { c.replayWorker(wctx) })
	}
	go func() { c.wg.Wait(); close(c.workersDone) }()
	return nil
}

func (c *Consumer) goWorker(f func()) {
	c.wg.Add(1)
	go func() { defer c.wg.Done(); f() }()
}

// consumeLocked starts pulling from cons; c.mu must be held.
func (c *Consumer) consumeLocked(cons jetstream.Consumer) error {
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
				select {
				case c.recreate <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		return fmt.Errorf("consume %s: %w", wire.DurableName, err)
	}
	c.cc = cc
	return nil
}

// Ready reports whether the consumer is pulling from a consumer that exists.
func (c *Consumer) Ready() bool {
	c.mu.Lock()
	pulling := c.pulling
	c.mu.Unlock()
	return pulling && c.consumerOK.Load() && c.js.Conn().IsConnected()
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
	c.pulling = false
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
		if c.replaySub != nil {
			_ = c.replaySub.Unsubscribe()
		}
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

// job is one pulled message on its way to its outcome.
type job struct {
	c         *Consumer
	msg       jetstream.Msg
	uid       string
	seq       uint64
	delivered uint64
	published time.Time
	err       error // set before the job is sent to failures
	m         hub.Message
}

// handle is called by nats.go for each pulled message, one at a time, in
// stream order per consumer: that is what keeps one uid's messages in
// publish order.
func (c *Consumer) handle(msg jetstream.Msg) {
	c.inflight.Add(1)
	// handedOff is set once the dead-letter path owns the message's
	// settling.
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
	if j.delivered > uint64(c.cfg.MaxDeliver) {
		// The last allowed delivery never settled (crash, AckWait, or the
		// dead letter could not be stored): give up now rather than
		// deliver more than promised. If the user is not connected here,
		// call it offline, so their connect replays it: deliveries burnt
		// on a DLQ leader election must not cost an absent user the
		// message.
		reason := wire.ReasonMaxDeliver
		if !c.router.Online(uid) {
			reason = wire.ReasonOffline
		}
		handedOff = true
		c.deadLetter(j, reason, nil)
		return
	}
	data := msg.Data()
	j.m = hub.Message{Data: data, Binary: !utf8.Valid(data), Reporter: j}
	// A panic inside Route leaves it unknown whether a connection already
	// reported; contain settles anyway, since a leaked in-flight count
	// would stall shutdown, while a double one only makes it briefly low.
	if c.router.Route(uid, &j.m) == 0 {
		handedOff = true
		c.deadLetter(j, wire.ReasonOffline, nil)
	}
}

// contain keeps a panic in handle (a bug) to its message: the message is
// nacked for a later retry and logged, and the node keeps serving. settle
// says whether the message's in-flight count is still handle's to drop.
func (c *Consumer) contain(msg jetstream.Msg, p any, settle bool) {
	err := msg.NakWithDelay(c.cfg.Backoff[len(c.cfg.Backoff)-1])
	c.log.Error(evPanic, zap.String("subject", msg.Subject()), zap.Any("panic", p),
		zap.Stack("stack"), zap.NamedError("nak_error", err))
	if settle {
		c.settled()
	}
}

// Report is called once per routed message by hub, from a connection's
// writer or from Route itself; it hands the job to a worker.
func (j *job) Report(_ *hub.Message, err error) {
	if err != nil {
		j.err = err
		j.c.failures <- j
		return
	}
	j.c.delivered <- j
}

func (c *Consumer) ackWorker(ctx context.Context) {
	for {
		select {
		case j := <-c.delivered:
			c.ack(j)
		case <-ctx.Done():
			return
		}
	}
}

// ack settles a delivered message: ack, count, and the outcome line.
func (c *Consumer) ack(j *job) {
	if aerr := j.msg.Ack(); aerr != nil {
		// The write happened; the message will be redelivered and arrive
		// twice. That is at-least-once, and worth a line.
		c.log.Warn(evAckFailed, zap.String("uid", j.uid), zap.Uint64("seq", j.seq), zap.Error(aerr))
	}
	latency := time.Since(j.published)
	c.met.delivered.Inc()
	c.met.latency.Observe(latency.Seconds())
	if !c.cfg.QuietDelivered {
		if ce := c.log.Check(zap.InfoLevel, evDelivered); ce != nil {
			fp := c.fields.Get().(*[]zap.Field)
			fs := append((*fp)[:0], zap.String("uid", j.uid), zap.Uint64("seq", j.seq),
				zap.Uint64("attempt", j.delivered), zap.Duration("latency", latency))
			ce.Write(fs...)
			clear(fs)
			*fp = fs
			c.fields.Put(fp)
		}
	}
	c.settled()
}

func (c *Consumer) failureWorker(ctx context.Context) {
	for {
		select {
		case j := <-c.failures:
			c.retryOrDeadLetter(j)
		case <-ctx.Done():
			return
		}
	}
}

// retryOrDeadLetter settles a failed delivery: nak with the back-off step
// for this attempt, or dead-letter once MaxDeliver deliveries failed.
func (c *Consumer) retryOrDeadLetter(j *job) {
	if errors.Is(j.err, hub.ErrOffline) {
		c.deadLetter(j, wire.ReasonOffline, nil)
		return
	}
	reason := wire.ReasonWriteFailed
	switch {
	case errors.Is(j.err, hub.ErrQueueFull):
		reason = wire.ReasonQueueFull
	case errors.Is(j.err, hub.ErrTimeout):
		reason = wire.ReasonTimeout
	}
	if !c.stopping.Load() && j.delivered >= uint64(c.cfg.MaxDeliver) {
		c.deadLetter(j, wire.ReasonMaxDeliver, j.err)
		return
	}
	var delay time.Duration
	if !c.stopping.Load() {
		delay = c.cfg.Backoff[min(int(j.delivered)-1, len(c.cfg.Backoff)-1)]
	}
	var err error
	if delay > 0 {
		err = j.msg.NakWithDelay(delay)
	} else {
		err = j.msg.Nak()
	}
	c.met.retried[reason].Inc()
	c.log.Info(evRetry, zap.String("uid", j.uid), zap.Uint64("seq", j.seq),
		zap.Uint64("attempt", j.delivered), zap.String("reason", reason),
		zap.Duration("delay", delay), zap.NamedError("cause", j.err), zap.NamedError("nak_error", err))
	c.settled()
}
