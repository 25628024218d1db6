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

// tick is the timer's callback. It ends the connection once CloseGrace
// passed in closeSent or the client stayed silent for PongWait; while open
// it closes it with 4003 once the token expired, else asks the writer for
// a ping when one is due; and it rearms itself while the connection lives.
func (c *conn) tick() {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	cut := c.state == stateCloseSent && !now.Before(c.closeBy)
	silent := now.Sub(c.heard) >= c.h.cfg.PongWait
	open := c.state == stateOpen
	switch {
	case c.state == stateDead:
		return
	case cut || silent:
		c.endLocked(websocket.CloseAbnormalClosure, closeLostText)
		return
	case open && !c.expires.IsZero() && !now.Before(c.expires):
		c.closeLocked(wire.CloseTokenExpired, wire.CloseTokenExpiredText)
	case open && !now.Before(c.nextPing):
		c.pingDue = true
		c.nextPing = now.Add(c.h.cfg.PingInterval)
		c.startWriterLocked()
	}
	c.timer.Reset(c.untilNextTick(now))
}

// untilNextTick is the time to the next ping, the expiry, the silence
// limit or the close grace's end, whichever is first. c.mu must be held.
func (c *conn) untilNextTick(now time.Time) time.Duration {
	next := c.heard.Add(c.h.cfg.PongWait)
	switch c.state {
	case stateOpen:
		next = earliest(next, c.nextPing)
		if !c.expires.IsZero() {
			next = earliest(next, c.expires)
		}
	case stateCloseSent:
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
