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
	// Workers replay concurrently; default 2. Each replay is a few
	// JetStream round trips, and a user who connects with nothing waiting
	// costs one.
	Workers int
	// RetryDelay is how long a failed replay (NATS away, say) waits
	// before it is tried again, for as long as the uid stays connected
	// here; default 2s.
	RetryDelay time.Duration
	// Registerer receives pusher_messages_total (shared with the
	// Consumer), where dead letters found past their TTL count as
	// dropped/expired; nil keeps it unregistered.
	Registerer prometheus.Registerer
}

// Replayer republishes a user's offline dead letters to them when they
// are back: on connect, on another node's notice, after a NATS reconnect.
// Triggers queue the uid (once while queued) for a few workers, so the
// callers, connect paths and NATS callbacks, never wait on JetStream.
type Replayer struct {
	dlq    *DLQ
	online func(uid string) bool
	log    *zap.Logger
	cfg    ReplayerConfig

	expiredTotal prometheus.Counter

	q      replayQueue
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewReplayer returns a Replayer reading dlq; online tells whether a uid is
// still connected on this node (a failed replay is retried only then). It
// does nothing until Start.
func NewReplayer(dlq *DLQ, online func(uid string) bool, log *zap.Logger, cfg ReplayerConfig) (*Replayer, error) {
	if cfg.Workers == 0 {
		cfg.Workers = 2
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
		expiredTotal: droppedCounters(messages)[wire.ReasonExpired]}
	r.q.wake = make(chan struct{}, 1)
	return r, nil
}

// Start starts the workers; Close stops them.
func (r *Replayer) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	for range r.cfg.Workers {
		r.goWorker(func() { r.work(ctx) })
	}
}

// Close stops the workers and waits for them; a replay in progress is cut
// short (what it republished is kept; the rest waits for the next
// connect). Idempotent.
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

func (r *Replayer) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.q.wake:
		}
		for {
			uid, ok := r.q.pop()
			if !ok {
				break
			}
			res, err := r.dlq.Replay(ctx, uid, OnlyOffline, nil, r.expired)
			switch {
			case err != nil && ctx.Err() != nil:
				return // shutting down; the next connect replays
			case err != nil:
				r.log.Warn(evReplayFailed, zap.String("uid", uid), zap.Int("replayed", res.Replayed), zap.Error(err))
				r.retryLater(ctx, uid)
			case res != ReplayResult{}:
				r.log.Info(evReplayed, zap.String("uid", uid), zap.Int("replayed", res.Replayed),
					zap.Int("expired", res.Expired), zap.Int("skipped", res.Skipped))
			}
		}
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

func (q *replayQueue) pop() (string, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.order) == 0 {
		return "", false
	}
	uid := q.order[0]
	q.order[0] = ""
	q.order = q.order[1:]
	delete(q.queued, uid)
	if len(q.order) > 0 {
		// Let another worker help.
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return uid, true
}
