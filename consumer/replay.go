package consumer

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/wire"
)

// ReplayerConfig tunes a Replayer. Zero values mean the documented default.
type ReplayerConfig struct {
	// Workers replay concurrently; default 8. Each replay is a few
	// JetStream round trips, so a storm's replays are bound by latency,
	// not CPU: more workers keep more round trips in flight.
	Workers int
	// RetryDelay is how long a failed replay (NATS away, say), or one
	// that raced another replay of the same dead letters, waits before it
	// is tried again, for as long as the uid stays connected here;
	// default 2s.
	RetryDelay time.Duration
	// Registerer receives pusher_messages_total (shared with the
	// Consumer), where dead letters found past their TTL count as
	// dropped/expired; nil keeps it unregistered.
	Registerer prometheus.Registerer
}

// Replayer republishes a user's offline dead letters to them when they
// are back: on connect, on another node's notice, after a NATS reconnect.
// Triggers queue the uid (once while queued), so the callers, connect
// paths and NATS callbacks, never wait on JetStream. One planner takes
// the queue in batches and hands the replays to a few workers.
type Replayer struct {
	dlq    *DLQ
	online func(uid string) bool
	log    *zap.Logger
	cfg    ReplayerConfig

	expiredTotal prometheus.Counter

	q      replayQueue
	jobs   chan replayJob // planner to workers
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// replayJob is one user's replay, bounded by a listing when there was one.
type replayJob struct {
	uid      string
	holders  Holders
	isListed bool
}

// NewReplayer returns a Replayer reading dlq; online tells whether a uid is
// still connected on this node (a failed replay is retried only then). It
// does nothing until Start.
func NewReplayer(dlq *DLQ, online func(uid string) bool, log *zap.Logger, cfg ReplayerConfig) (*Replayer, error) {
	if cfg.Workers == 0 {
		cfg.Workers = 8
	}
	if cfg.RetryDelay == 0 {
		cfg.RetryDelay = 2 * time.Second
	}
	if cfg.Workers < 1 || cfg.RetryDelay < 0 {
		return nil, fmt.Errorf("replayer config: workers %d, retry delay %s", cfg.Workers, cfg.RetryDelay)
	}
	messages, err := messagesVec(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	r := &Replayer{dlq: dlq, online: online, log: log.Named("replay"), cfg: cfg,
		expiredTotal: droppedCounters(messages)[wire.ReasonExpired],
		jobs:         make(chan replayJob, cfg.Workers)}
	r.q.wake = make(chan struct{}, 1)
	return r, nil
}

// Start starts the planner and the workers; Close stops them.
func (r *Replayer) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.goWorker(func() { r.plan(ctx) })
	for range r.cfg.Workers {
		r.goWorker(func() { r.work(ctx) })
	}
}

// Close stops the planner and workers and waits for them; a replay in
// progress is cut short (what it republished is kept; the rest waits for
// the next connect). Idempotent.
func (r *Replayer) Close() {
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
}

func (r *Replayer) goWorker(f func()) {
	r.wg.Add(1)
	go func() { defer r.wg.Done(); f() }()
}

// TriggerReplay asks for uid's offline dead letters to be republished to
// it. It never blocks.
func (r *Replayer) TriggerReplay(uid string) {
	if r.q.push(uid) {
		select {
		case r.q.wake <- struct{}{}:
		default:
		}
	}
}

// Batching: the planner lets triggers gather for gatherDelay after the
// first, then takes up to replayBatch uids; a batch of listBatch or more
// is looked up with one listing of PUSH_DLQ's users (Holders) instead of
// a look-up each. In a connect storm (a node restarted, every client
// back at once) that spares a round trip for every returning user with
// nothing to replay, and bounds the walks of those with some. A lone
// connect waits gatherDelay more for its replay, which nobody sees.
const (
	gatherDelay = 5 * time.Millisecond
	replayBatch = 4096
	listBatch   = 64
)

// plan turns the queue into jobs for the workers.
func (r *Replayer) plan(ctx context.Context) {
	gather := time.NewTimer(0)
	<-gather.C
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.q.wake:
		}
		gather.Reset(gatherDelay)
		select {
		case <-ctx.Done():
			return
		case <-gather.C:
		}
		for {
			uids := r.q.popBatch(replayBatch)
			if len(uids) == 0 {
				break
			}
			if !r.dispatch(ctx, uids) {
				return
			}
		}
	}
}

// dispatch hands the batch's replays to the workers: after a listing,
// only those of users with dead letters. False means ctx ended.
func (r *Replayer) dispatch(ctx context.Context, uids []string) bool {
	var job replayJob
	if len(uids) >= listBatch {
		h, err := r.dlq.Holders(ctx)
		switch {
		case err == nil:
			job.holders, job.isListed = h, true
		case ctx.Err() != nil:
			return false
		default:
			r.log.Warn(evReplayFailed, zap.Int("uids", len(uids)), zap.Error(err)) // each is looked up instead
		}
	}
	for _, uid := range uids {
		if job.isListed && !job.holders.Has(uid) {
			continue
		}
		job.uid = uid
		select {
		case r.jobs <- job:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func (r *Replayer) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-r.jobs:
			r.replay(ctx, job)
		}
	}
}

// replay runs one user's replay and logs the outcome.
func (r *Replayer) replay(ctx context.Context, job replayJob) {
	var res ReplayResult
	var err error
	if job.isListed {
		res, err = r.dlq.ReplayListed(ctx, job.holders, job.uid, OnlyOffline, r.expired)
	} else {
		res, err = r.dlq.Replay(ctx, job.uid, OnlyOffline, nil, r.expired)
	}
	switch {
	case err != nil && ctx.Err() != nil:
		// Shutting down; the next connect replays.
	case err != nil:
		r.log.Warn(evReplayFailed, zap.String("uid", job.uid), zap.Int("replayed", res.Replayed), zap.Error(err))
		r.retryLater(ctx, job.uid)
	case res != ReplayResult{}:
		r.log.Info(evReplayed, zap.String("uid", job.uid), zap.Int("replayed", res.Replayed),
			zap.Int("expired", res.Expired), zap.Int("skipped", res.Skipped), zap.Int("racing", res.Racing))
	}
	if err == nil && res.Racing > 0 {
		// The other replay stores and deletes what raced, unless it fails
		// (its node stopping mid-publish, say); then nobody would replay
		// those dead letters before the user's next connect. Look again:
		// what the other replay finished is gone, and its id makes a
		// republish of what it stored a duplicate that JetStream drops.
		r.retryLater(ctx, job.uid)
	}
}

// expired accounts for a dead letter dropped at replay, past its TTL,
// as the consumer accounts for one dropped at delivery. No copy of it is
// in PUSH, so the line has no seq: dlq_seq names the dead letter and
// original_seq the message, as on the lines of a replayed message.
func (r *Replayer) expired(dl DeadLetter) {
	r.expiredTotal.Inc()
	r.log.Info(evDropped, zap.String("uid", dl.UID), zap.Uint64("dlq_seq", dl.Seq),
		zap.Uint64("original_seq", dl.OriginalSeq), zap.String("reason", wire.ReasonExpired))
}

// retryLater tries uid's replay again after RetryDelay if uid is still
// connected here then; otherwise its next connect replays.
func (r *Replayer) retryLater(ctx context.Context, uid string) {
	t := time.NewTimer(r.cfg.RetryDelay)
	r.goWorker(func() {
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
			if r.online(uid) {
				r.TriggerReplay(uid)
			}
		}
	})
}

// replayQueue holds uids whose offline dead letters should be replayed,
// each at most once while queued. It is unbounded on purpose: dropping a
// trigger would strand a user's messages until their next connect, and its
// size is bounded by the number of distinct users connecting.
type replayQueue struct {
	mu     sync.Mutex // guards queued, order
	queued map[string]struct{}
	order  []string
	wake   chan struct{} // capacity 1: "the queue may be non-empty"
}

// push queues uid unless it is queued already; true means it was added.
func (q *replayQueue) push(uid string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.queued == nil {
		q.queued = make(map[string]struct{})
	}
	if _, ok := q.queued[uid]; ok {
		return false
	}
	q.queued[uid] = struct{}{}
	q.order = append(q.order, uid)
	return true
}

// popBatch takes up to most queued uids, oldest first.
func (q *replayQueue) popBatch(most int) []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(most, len(q.order))
	if n == 0 {
		return nil
	}
	uids := append([]string(nil), q.order[:n]...)
	clear(q.order[:n])
	q.order = q.order[n:]
	for _, uid := range uids {
		delete(q.queued, uid)
	}
	return uids
}
