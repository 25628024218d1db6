package consumer

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/logging"
	"github.com/pusher-io/pusher/wire"
)

// job is one pulled message on its way to its outcome.
type job struct {
	c         *Consumer
	msg       jetstream.Msg
	uid       string
	seq       uint64
	delivered uint64
	published time.Time
	// replayOf is the dead letter's sequence in PUSH_DLQ when this
	// message is its replay (HeaderReplayOf), else 0; m.Seq is then the
	// message's first sequence in PUSH.
	replayOf uint64
	policy   wire.Policy
	err      error // set before the job is sent to failures
	m        hub.Message
}

// deliveredFields appends push.delivered's fields to fs; with room for
// six, it allocates nothing.
func (j *job) deliveredFields(fs []zap.Field, latency time.Duration) []zap.Field {
	return j.traced(append(fs, zap.String("uid", j.uid), zap.Uint64("seq", j.seq),
		zap.Uint64("attempt", j.delivered), logging.Ms("latency_ms", latency)))
}

// traced appends to fs what follows a replayed message back through its
// dead letter to its first publish: replay_of, the dead letter's
// sequence in PUSH_DLQ, and original_seq. A message never dead-lettered
// gets nothing.
func (j *job) traced(fs []zap.Field) []zap.Field {
	if j.replayOf == 0 {
		return fs
	}
	return append(fs, zap.Uint64("replay_of", j.replayOf), zap.Uint64("original_seq", j.m.Seq))
}

// Report is called once per routed message by the Router, from a
// connection's writer, a NATS callback or Route itself; it hands the job
// to a worker and never blocks (see Consumer.delivered).
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
			fs := j.deliveredFields((*fp)[:0], latency)
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

// retryOrDeadLetter settles a failed delivery: dead-letter an offline uid
// at once (so it does not hold an ack slot), nak with the back-off step for
// this attempt, or dead-letter once MaxDeliver deliveries failed.
func (c *Consumer) retryOrDeadLetter(j *job) {
	if j.policy.Expired(j.m.Published, time.Now()) {
		c.drop(j, wire.ReasonExpired)
		return
	}
	if errors.Is(j.err, hub.ErrOffline) {
		c.offline(j)
		return
	}
	reason := wire.ReasonWriteFailed
	switch {
	case errors.Is(j.err, hub.ErrQueueFull):
		reason = wire.ReasonQueueFull
	case errors.Is(j.err, hub.ErrTimeout):
		reason = wire.ReasonTimeout
	case errors.Is(j.err, hub.ErrUnconfirmed):
		reason = wire.ReasonUnconfirmed
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
	c.log.Info(evRetry, j.traced([]zap.Field{zap.String("uid", j.uid), zap.Uint64("seq", j.seq),
		zap.Uint64("attempt", j.delivered), zap.String("reason", reason),
		logging.Ms("delay_ms", delay), zap.NamedError("cause", j.err), zap.NamedError("nak_error", err)})...)
	c.settled()
}

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
	seq, published, msgID := origin(j.msg.Headers(), j.seq, j.published)
	dl := deadLetterMsg(letter{
		uid: uid, reason: reason, subject: subject,
		streamSeq: j.seq, streamTime: j.published, deliveries: j.delivered,
		seq: seq, published: published, msgID: msgID,
		header: j.msg.Headers(), data: j.msg.Data(),
	}, time.Now())
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
		c.askRecreate()
	}
	nerr := j.msg.NakWithDelay(c.cfg.Backoff[0])
	c.met.retried[wire.ReasonDeadLetterFailed].Inc()
	c.log.Error(evDLQFailed, j.traced([]zap.Field{zap.String("uid", j.uid), zap.Uint64("seq", j.seq),
		zap.String("reason", reason), zap.Error(err), zap.NamedError("nak_error", nerr)})...)
	c.settled()
}

// deadLetterWorker waits for each dead letter's PubAck in publish order and
// then terminates the original.
func (c *Consumer) deadLetterWorker(ctx context.Context) {
	for {
		select {
		case p := <-c.dlqAcks:
			select {
			case ack := <-p.fut.Ok():
				c.deadLettered(p, ack.Sequence)
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

// deadLettered settles a message whose dead letter PUSH_DLQ stored at
// dlqSeq: the original is terminated, and the line links the two
// sequences (and names the subject of one that named no uid).
func (c *Consumer) deadLettered(p pendingDeadLetter, dlqSeq uint64) {
	j := p.j
	err := j.msg.Term()
	c.met.deadLettered[p.reason].Inc()
	fields := []zap.Field{zap.String("uid", j.uid), zap.Uint64("seq", j.seq), zap.Uint64("dlq_seq", dlqSeq),
		zap.String("reason", p.reason), zap.Uint64("attempt", j.delivered), zap.NamedError("term_error", err)}
	if p.reason == wire.ReasonBadSubject {
		fields = append(fields, zap.String("subject", j.msg.Subject()))
	}
	c.log.Info(evDeadLettered, j.traced(fields)...)
	// A connect that raced this dead-lettering may have looked at the DLQ
	// before the copy was stored. The copy is stored now: the router has
	// whichever node holds the user replay it.
	if p.reason == wire.ReasonOffline {
		c.router.StoredOffline(j.uid)
	}
	c.settled()
}

// offline settles a message whose user has no live connection: dropped
// if its publisher said so, else dead-lettered for replay when the user
// is back.
func (c *Consumer) offline(j *job) {
	if j.policy.DropOffline {
		c.drop(j, wire.ReasonOfflineDropped)
		return
	}
	c.deadLetter(j, wire.ReasonOffline, nil)
}

// drop settles a message its publisher's policy says not to deliver any
// more (expired, or offline with Pusher-Offline: drop): acked, so it is
// gone, and counted and logged with the reason.
func (c *Consumer) drop(j *job, reason string) {
	err := j.msg.Ack()
	c.met.dropped[reason].Inc()
	c.log.Info(evDropped, j.traced([]zap.Field{zap.String("uid", j.uid), zap.Uint64("seq", j.seq),
		zap.String("reason", reason), zap.Uint64("attempt", j.delivered), zap.NamedError("ack_error", err)})...)
	c.settled()
}

// policyOf reads j's delivery policy from its headers; a malformed value
// counts as absent (the message is kept) and is warned about, so the
// publisher finds the typo.
func (c *Consumer) policyOf(j *job, h nats.Header) wire.Policy {
	p, err := wire.ParsePolicy(h.Get)
	if err != nil {
		c.met.badPolicy.Inc()
		c.log.Warn(evBadPolicy, zap.String("uid", j.uid), zap.Uint64("seq", j.seq), zap.Error(err))
	}
	return p
}
