package ws

import (
	"github.com/pusher-io/pusher/hub"
)

// confirmation tracks, for one connection in ConfirmPong mode, the
// messages written and not yet confirmed. At most one ping is out at a
// time (RFC 6455 lets an endpoint answer only the latest of several), so
// two lists suffice: sent, written before the ping that is out, which its
// pong confirms; and later, written after it, which the next ping covers.
// The ping after a batch leaves in the same write as the batch.
//
// All of it is guarded by conn.mu; an idle connection holds two nil
// slices.
type confirmation struct {
	sent, later     []*hub.Message
	sentAt, laterAt instant // when the first of each was written
	pingID          uint64  // the id of the last ping written
	awaiting        bool    // ping pingID is out and unanswered
}

// pending is how many messages await confirmation.
func (f *confirmation) pending() int { return len(f.sent) + len(f.later) }

// since is when the oldest unconfirmed message was written; zero when
// none is.
func (f *confirmation) since() instant {
	switch {
	case len(f.sent) > 0:
		return f.sentAt
	case len(f.later) > 0:
		return f.laterAt
	}
	return 0
}

// wantsPing reports whether the writer should send a ping now: nothing is
// awaited and there is something for a ping to cover (a batch about to be
// written, or messages written while the last ping was out), or a
// keepalive is due. While a ping is out, it is the keepalive.
func (f *confirmation) wantsPing(batch int, keepalive bool) bool {
	return !f.awaiting && (batch > 0 || len(f.later) > 0 || keepalive)
}

// written records batch as written at now, before the write itself: the
// client cannot answer a ping before the frames ahead of it arrived, so
// the pong always finds them here. pingID is the ping that follows the
// batch in the same write, 0 for none (one is out already).
func (f *confirmation) written(batch []*hub.Message, pingID uint64, now instant) {
	if pingID == 0 {
		if len(batch) > 0 && len(f.later) == 0 {
			f.laterAt = now
		}
		f.later = append(f.later, batch...)
		return
	}
	// Nothing is awaited, so sent is empty: this ping covers later and
	// the batch.
	f.sentAt = now
	if len(f.later) > 0 {
		f.sentAt = f.laterAt
	}
	f.sent = append(append(f.sent[:0], f.later...), batch...)
	clear(f.later)
	f.later = f.later[:0]
	f.pingID, f.awaiting = pingID, true
}

// ponged takes the messages a pong with id confirms, and when they were
// written; ok is false when id is not the ping that is out. The caller
// finishes them outside conn.mu and gives the slice back (reuse).
func (f *confirmation) ponged(id uint64) (done []*hub.Message, at instant, ok bool) {
	if !f.awaiting || id != f.pingID {
		return nil, 0, false
	}
	done, at = f.sent, f.sentAt
	f.sent, f.awaiting = nil, false
	return done, at, true
}

// reuse gives a finished slice back as sent's storage unless it is big.
func (f *confirmation) reuse(done []*hub.Message) {
	if f.sent == nil && cap(done) <= keepQueueCap {
		f.sent = done[:0]
	}
}

// takeAll takes every unconfirmed message; a pong that comes afterwards
// confirms nothing.
func (f *confirmation) takeAll() (sent, later []*hub.Message) {
	sent, later = f.sent, f.later
	f.sent, f.later, f.awaiting = nil, nil, false
	return sent, later
}
