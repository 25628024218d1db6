package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/wire"
)

// pendingDeadLetter is a dead letter published asynchronously whose
// original is terminated only once the PubAck arrives.
type pendingDeadLetter struct {
	j      *job
	reason string
	fut    jetstream.PubAckFuture
}

// deadLetter publishes j's payload to PUSH_DLQ with the reason. The
// original is settled by deadLetterWorker when JetStream has stored the
// copy; if it cannot be stored, the original is nacked and comes back.
func (c *Consumer) deadLetter(j *job, reason string, cause error) {
	subject := j.msg.Subject()
	uid := j.uid
	if reason == wire.ReasonBadSubject {
		uid = wire.BadSubjectUID
	}
	dl := deadLetterMsg(uid, reason, subject, j.seq, j.delivered, j.published, j.msg.Headers(), j.msg.Data(), time.Now())
	fut, err := c.js.PublishMsgAsync(dl)
	if err != nil {
		c.deadLetterFailed(j, reason, err)
		return
	}
	if cause != nil {
		c.log.Debug(evDeadLettered, zap.String("uid", j.uid), zap.Uint64("seq", j.seq), zap.NamedError("cause", cause))
	}
	c.dlqAcks <- pendingDeadLetter{j: j, reason: reason, fut: fut}
}

// deadLetterFailed leaves the original to be delivered again later; the
// dead letter is attempted anew then. Nothing is dropped.
func (c *Consumer) deadLetterFailed(j *job, reason string, err error) {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, jetstream.ErrStreamNotFound) {
		// PUSH_DLQ may be gone: have the monitor check and rebuild now.
		select {
		case c.recreate <- struct{}{}:
		default:
		}
	}
	nerr := j.msg.NakWithDelay(c.cfg.Backoff[0])
	c.met.retried[wire.ReasonDeadLetterFailed].Inc()
	c.log.Error(evDLQFailed, zap.String("uid", j.uid), zap.Uint64("seq", j.seq),
		zap.String("reason", reason), zap.Error(err), zap.NamedError("nak_error", nerr))
	c.settled()
}

// deadLetterWorker waits for each dead letter's PubAck in publish order and
// then terminates the original.
func (c *Consumer) deadLetterWorker(ctx context.Context) {
	for {
		select {
		case p := <-c.dlqAcks:
			select {
			case <-p.fut.Ok():
				c.deadLettered(p)
			case err := <-p.fut.Err():
				c.deadLetterFailed(p.j, p.reason, err)
			case <-ctx.Done():
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

func (c *Consumer) deadLettered(p pendingDeadLetter) {
	j := p.j
	err := j.msg.Term()
	c.met.deadLettered[p.reason].Inc()
	c.log.Info(evDeadLettered, zap.String("uid", j.uid), zap.Uint64("seq", j.seq),
		zap.String("reason", p.reason), zap.Uint64("attempt", j.delivered), zap.NamedError("term_error", err))
	// A connect that raced this dead-lettering may have looked at the DLQ
	// before the copy was stored. The copy is stored now, so if the user
	// is here, replay for them: either their connect's replay or this one
	// sees it.
	if p.reason == wire.ReasonOffline {
		if c.cfg.Broadcast {
			// Every node, this one included, replays if it holds the uid.
			if err := c.js.Conn().Publish(wire.ReplaySubject(j.uid), nil); err != nil {
				c.log.Warn(evReplayFailed, zap.String("uid", j.uid), zap.Error(err))
			}
		} else if c.router.Online(j.uid) {
			c.TriggerReplay(j.uid)
		}
	}
	c.settled()
}
