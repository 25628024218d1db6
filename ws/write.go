package ws

import (
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
)

// startWriterLocked starts a writer when there is work and none runs.
// c.mu must be held. Before the upgrade (ws nil) work waits for it.
func (c *conn) startWriterLocked() {
	if c.writing || c.dead || c.broken || c.closeSent || c.ws == nil {
		return
	}
	if len(c.queue) == 0 && !c.pingDue && !c.pongDue && !c.closeDue {
		return
	}
	c.writing = true
	c.writers.Add(1)
	c.h.runWriter(c)
}

// writerLinger is how long a writer goroutine, its connection's work
// done, waits to take another connection's. Under load writers are reused,
// so a goroutine's stack, grown in gorilla's write path, is not regrown
// from the starting size for every burst (runtime.newstack was 6% of
// pusher's CPU in the throughput benchmark); when traffic stops, none
// stays.
const writerLinger = 50 * time.Millisecond

// runWriter runs c.writeLoop on a waiting writer goroutine, or a new one.
// c.mu is held (conn.startWriterLocked); the send does not wait.
func (h *Handler) runWriter(c *conn) {
	select {
	case h.handoff <- c:
	default:
		h.running.Add(1) // c is live, so the count is not zero
		go h.writer(c)
	}
}

// writer writes for c, then for whichever connection is handed to it
// within writerLinger, then exits.
func (h *Handler) writer(c *conn) {
	defer h.running.Done()
	linger := time.NewTimer(writerLinger)
	defer linger.Stop()
	for {
		c.writeLoop()
		linger.Reset(writerLinger)
		select {
		case c = <-h.handoff:
		case <-linger.C:
			return
		}
	}
}

// writeLoop writes until nothing is left, then returns (and its goroutine
// may take another connection's work: Handler.runWriter). It reports every
// message it takes to the message's owner.
func (c *conn) writeLoop() {
	defer c.writers.Done()
	defer func() {
		if p := recover(); p != nil {
			c.h.log.Error(evPanic, zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Any("panic", p), zap.Stack("stack"))
			c.fail()
		}
	}()
	var spare []*hub.Message
	for {
		c.mu.Lock()
		batch := c.queue
		if cap(spare) > keepQueueCap {
			spare = nil
		}
		c.queue = spare[:0]
		ping, pong, pongDue, closing := c.pingDue, c.pong, c.pongDue, c.closeDue
		c.pingDue, c.pong, c.pongDue = false, nil, false
		if len(batch) == 0 && !ping && !pongDue && !closing {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		if closing {
			// What is still queued goes back to the consumer for a retry;
			// the close frame goes now, after the pong to a ping that came
			// before whatever made us close.
			finishAll(batch, errConnClosed)
			if pongDue {
				_ = c.control(websocket.PongMessage, pong)
			}
			c.writeClose()
			return
		}
		if ping && !c.control(websocket.PingMessage, nil) || pongDue && !c.control(websocket.PongMessage, pong) {
			finishAll(batch, errConnClosed)
			c.fail()
			return
		}
		for i, m := range batch {
			err := c.write(m)
			m.Finish(err)
			batch[i] = nil
			if err != nil {
				if ce := c.h.log.Check(zap.DebugLevel, "ws.write_failed"); ce != nil {
					ce.Write(zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Error(err))
				}
				finishAll(batch[i+1:], errConnClosed)
				c.fail()
				return
			}
		}
		spare = batch
	}
}

// keepQueueCap is the largest queue slice a writer keeps for reuse; after
// a bigger burst it is let go so an idle connection shrinks back.
const keepQueueCap = 64

func (c *conn) write(m *hub.Message) error {
	typ := websocket.TextMessage
	if m.Binary {
		typ = websocket.BinaryMessage
	}
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteWait)); err != nil {
		return err
	}
	return c.ws.WriteMessage(typ, m.Data)
}

func (c *conn) control(typ int, payload []byte) bool {
	return c.ws.WriteControl(typ, payload, time.Now().Add(c.h.cfg.WriteWait)) == nil
}

// requestCloseLocked asks the writer for a close frame with payload msg.
//
// A writer blocked on a client that stopped reading would hold the close
// frame back for up to WriteWait; this shortens that write's deadline to
// CloseGrace, after which the socket is cut. (The deadline is set on the
// net.Conn, which is safe from any goroutine; gorilla sets its own again
// before its next write.) c.mu must be held.
func (c *conn) requestCloseLocked(msg []byte) {
	if c.closeDue || c.closeSent {
		return
	}
	c.closeDue, c.closeMsg = true, msg
	if c.writing && c.ws != nil {
		_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(c.h.cfg.CloseGrace))
	}
	c.startWriterLocked()
}

// writeClose writes the close frame, then ends the connection at once if
// the client closed or hung up already, else after CloseGrace unless the
// client's close frame comes first. Writer only.
func (c *conn) writeClose() {
	c.mu.Lock()
	msg := c.closeMsg
	c.mu.Unlock()
	err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.h.cfg.WriteWait))
	c.mu.Lock()
	c.closeSent, c.writing = true, false
	done := err != nil || c.readsDone
	if !done {
		c.closeBy = time.Now().Add(c.h.cfg.CloseGrace)
		c.timer.Reset(c.h.cfg.CloseGrace)
	}
	c.mu.Unlock()
	if done {
		c.end()
	}
}

// fail marks the connection broken after a failed write and ends it.
// Writer only.
func (c *conn) fail() {
	c.mu.Lock()
	c.broken, c.writing = true, false
	c.mu.Unlock()
	c.end()
}
