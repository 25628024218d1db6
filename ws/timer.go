package ws

import (
	"time"

	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/wire"
)

// startTimerLocked arms the connection's timer; serve calls it once, at
// the upgrade. c.mu must be held.
func (c *conn) startTimerLocked(expires time.Time) {
	now := time.Now()
	c.expires, c.heard = expires, now
	c.nextPing = now.Add(c.h.cfg.PingInterval)
	c.timer = time.AfterFunc(c.untilNextTick(now), c.tick)
}

// tick is the timer's callback: it ends the connection once CloseGrace
// passed after our close frame or the client stayed silent for PongWait,
// closes it with 4003 once the token expired, else asks the writer for a
// ping when one is due, and rearms itself while the connection lives.
func (c *conn) tick() {
	now := time.Now()
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	cut := !c.closeBy.IsZero() && !now.Before(c.closeBy)
	silent := now.Sub(c.heard) >= c.h.cfg.PongWait
	expired := !c.expires.IsZero() && !now.Before(c.expires)
	switch {
	case cut || silent:
		c.noteEndLocked(websocket.CloseAbnormalClosure, "connection lost")
	case expired:
	default:
		if !now.Before(c.nextPing) {
			c.pingDue = true
			c.nextPing = now.Add(c.h.cfg.PingInterval)
			c.startWriterLocked()
		}
		c.timer.Reset(c.untilNextTick(now))
	}
	c.mu.Unlock()
	switch {
	case cut || silent:
		c.end()
	case expired:
		// The writer rearms the timer for the close grace.
		c.Close(wire.CloseTokenExpired, wire.CloseTokenExpiredText)
	}
}

// untilNextTick is the time to the next ping, the expiry, the silence
// limit or the close grace's end, whichever is first. c.mu must be held.
func (c *conn) untilNextTick(now time.Time) time.Duration {
	next := c.heard.Add(c.h.cfg.PongWait)
	if !c.closeDue && !c.closeSent {
		next = earliest(next, c.nextPing)
		if !c.expires.IsZero() {
			next = earliest(next, c.expires)
		}
	}
	if !c.closeBy.IsZero() {
		next = earliest(next, c.closeBy)
	}
	return next.Sub(now)
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
