package ws

import (
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
)

// startTimerLocked arms the connection's timer; serve calls it once, at
// the upgrade. c.mu must be held.
func (c *conn) startTimerLocked(expires time.Time) {
	now := c.h.now()
	c.expires, c.heard = c.h.instantOf(expires), now
	c.nextPing = now.add(c.h.cfg.PingInterval)
	c.timer = time.AfterFunc(c.untilNextTick(now), c.tick)
}

// tick is the timer's callback. It ends the connection once CloseGrace
// passed in closeSent or the client stayed silent for PongWait; while open
// it closes it with 4004 once written messages stayed unconfirmed for
// ConfirmTimeout, with 4003 once the token expired, else asks the writer
// for a ping when one is due; and it rearms itself while the connection
// lives.
func (c *conn) tick() {
	now := c.h.now()
	c.mu.Lock()
	cut := c.state == stateCloseSent && !now.before(c.closeBy)
	silent := now.sub(c.heard) >= c.h.cfg.PongWait
	open := c.state == stateOpen
	var sent, later, acks []*hub.Message
	switch {
	case c.state == stateDead:
		c.mu.Unlock()
		return
	case cut || silent:
		// After our close frame (cut) the cause is decided already.
		c.endLocked(websocket.CloseAbnormalClosure, closeSilentText, byServer)
		c.mu.Unlock()
		return
	case open && c.unresponsiveLocked(now):
		// Best effort: our close frame, then the socket is dropped
		// without waiting for the client's (answering).
		sent, later = c.confirm.takeAll()
		acks = c.v1.takeAll()
		c.noteEndLocked(wire.CloseUnresponsive, wire.CloseUnresponsiveText, byServer)
		c.queueCloseLocked(stateAnswering, websocket.FormatCloseMessage(wire.CloseUnresponsive, wire.CloseUnresponsiveText))
	case open && !c.expires.isZero() && !now.before(c.expires):
		c.closeLocked(wire.CloseTokenExpired, wire.CloseTokenExpiredText)
	case open && !now.before(c.nextPing):
		c.pingDue = true
		c.nextPing = now.add(c.h.cfg.PingInterval)
		c.startWriterLocked()
	}
	c.timer.Reset(c.untilNextTick(now))
	c.mu.Unlock()
	if n := len(sent) + len(later) + len(acks); n > 0 {
		// The client had every chance: the messages go back for a retry,
		// to the uid's other connections or, with none left, to PUSH_DLQ.
		c.h.met.unresponsive.Inc()
		c.h.log.Warn(evUnresponsive, zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Int("unconfirmed", n))
		finishAll(sent, hub.ErrUnconfirmed)
		finishAll(later, hub.ErrUnconfirmed)
		finishAll(acks, hub.ErrUnconfirmed)
	}
}

// unresponsiveLocked reports whether a message written has waited
// ConfirmTimeout for its confirmation by now. c.mu must be held.
func (c *conn) unresponsiveLocked(now instant) bool {
	since := c.unconfirmedSince()
	return !since.isZero() && now.sub(since) >= c.h.cfg.ConfirmTimeout
}

// unconfirmedSince is when the oldest message awaiting its confirmation
// (pong or ack) was written; zero when none awaits. c.mu must be held.
func (c *conn) unconfirmedSince() instant {
	if c.v1 != nil {
		return c.v1.since()
	}
	return c.confirm.since()
}

// untilNextTick is the time to the next ping, the expiry, the silence
// limit or the close grace's end, whichever is first. c.mu must be held.
func (c *conn) untilNextTick(now instant) time.Duration {
	next := c.heard.add(c.h.cfg.PongWait)
	switch c.state {
	case stateOpen:
		next = earliest(next, c.nextPing)
		if !c.expires.isZero() {
			next = earliest(next, c.expires)
		}
		if since := c.unconfirmedSince(); !since.isZero() {
			next = earliest(next, since.add(c.h.cfg.ConfirmTimeout))
		}
	case stateCloseSent:
		next = earliest(next, c.closeBy)
	}
	return next.sub(now)
}
