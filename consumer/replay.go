package consumer

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pusher-io/pusher/wire"

	"go.uber.org/zap"
)

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

// TriggerReplay asks for uid's offline dead letters to be republished to
// it. It never blocks; ws calls it when a uid connects.
func (c *Consumer) TriggerReplay(uid string) {
	q := &c.replays
	q.mu.Lock()
	if q.queued == nil {
		q.queued = make(map[string]struct{})
	}
	if _, ok := q.queued[uid]; !ok {
		q.queued[uid] = struct{}{}
		q.order = append(q.order, uid)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// replayRetryDelay is how long a failed replay (NATS away, say) waits
// before it is tried again, for as long as the uid stays connected.
const replayRetryDelay = 2 * time.Second

// retryReplay tries uid's replay again after replayRetryDelay if uid is
// still connected here then; otherwise its next connect replays.
func (c *Consumer) retryReplay(ctx context.Context, uid string) {
	t := time.NewTimer(replayRetryDelay)
	c.goWorker(func() {
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
			if c.router.Online(uid) {
				c.TriggerReplay(uid)
			}
		}
	})
}

// onReplayNotice handles pusher.replay.<uid>: some node stored an offline
// dead letter for uid; if uid is connected here, replay it.
func (c *Consumer) onReplayNotice(m *nats.Msg) {
	uid, err := wire.UIDFromReplaySubject(m.Subject)
	if err == nil && c.router.Online(uid) {
		c.TriggerReplay(uid)
	}
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

func (c *Consumer) replayWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.replays.wake:
		}
		for {
			uid, ok := c.replays.pop()
			if !ok {
				break
			}
			n, skipped, err := c.dlq.Replay(ctx, uid, OnlyOffline, nil)
			switch {
			case err != nil:
				c.log.Warn(evReplayFailed, zap.String("uid", uid), zap.Int("replayed", n), zap.Error(err))
				c.retryReplay(ctx, uid)
			case n > 0 || skipped > 0:
				c.log.Info(evReplayed, zap.String("uid", uid), zap.Int("replayed", n), zap.Int("skipped", skipped))
			}
		}
	}
}
