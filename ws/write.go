package ws

import (
	"fmt"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
)

// startWriterLocked starts a writer when there is work and none runs.
// c.mu must be held. Before the upgrade (ws nil) work waits for it.
func (c *conn) startWriterLocked() {
	if c.writing || c.ws == nil || !c.hasWorkLocked() {
		return
	}
	c.writing = true
	c.writers.Add(1)
	c.h.runWriter(c)
}

// hasWorkLocked reports whether the writer has something to write: our
// close frame while it is queued, else what open lets flow. c.mu must be
// held.
func (c *conn) hasWorkLocked() bool {
	switch c.state {
	case stateOpen:
		return len(c.queue) > 0 || c.pingDue || c.pongDue
	case stateClosing, stateAnswering:
		return true
	}
	return false
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

// work is one round of the writer: what it took under c.mu, to write
// without it.
type work struct {
	batch   []*hub.Message
	ping    bool
	pongDue bool
	pong    []byte
	close   bool // our close frame: written last, the batch reported failed
}

// writeLoop writes until nothing is left, then returns (and its goroutine
// may take another connection's work: Handler.runWriter). It reports every
// message it takes to the message's owner.
func (c *conn) writeLoop() {
	defer c.writers.Done()
	defer c.recoverWriter()
	var spare []*hub.Message
	for {
		w, ok := c.takeWork(spare)
		if !ok {
			return
		}
		if w.close {
			// What is still queued goes back to the consumer for a retry;
			// the close frame goes now, after the pong to a ping that came
			// before whatever made us close.
			finishAll(w.batch, errConnClosed)
			if w.pongDue {
				_ = c.control(websocket.PongMessage, w.pong)
			}
			c.writeClose()
			return
		}
		if !c.writeWork(w) {
			return
		}
		spare = w.batch
	}
}

// takeWork takes what is to be written and leaves spare (emptied) as the
// queue, so the next burst reuses it. When there is nothing it clears
// writing, in the same critical section, so whoever adds work next starts
// a writer. Writer only.
func (c *conn) takeWork(spare []*hub.Message) (w work, ok bool) {
	if cap(spare) > keepQueueCap {
		spare = nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.hasWorkLocked() {
		c.writing = false
		if len(c.queue) == 0 { // else closeSent or dead: finish drains it
			c.queue = spare[:0]
		}
		return work{}, false
	}
	w = work{batch: c.queue, ping: c.pingDue, pongDue: c.pongDue, pong: c.pong,
		close: c.state == stateClosing || c.state == stateAnswering}
	c.queue = spare[:0]
	c.pingDue, c.pongDue, c.pong = false, false, nil
	return w, true
}

// writeWork writes a ping, a pong and the batch, in that order, and
// reports each message. A failed write ends the connection: false.
// Writer only.
func (c *conn) writeWork(w work) bool {
	if w.ping && !c.control(websocket.PingMessage, nil) || w.pongDue && !c.control(websocket.PongMessage, w.pong) {
		finishAll(w.batch, errConnClosed)
		c.end(websocket.CloseAbnormalClosure, closeLostText)
		return false
	}
	for i, m := range w.batch {
		err := c.write(m)
		m.Finish(err)
		w.batch[i] = nil
		if err != nil {
			if ce := c.h.log.Check(zap.DebugLevel, "ws.write_failed"); ce != nil {
				ce.Write(zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Error(err))
			}
			finishAll(w.batch[i+1:], errConnClosed)
			c.end(websocket.CloseAbnormalClosure, closeLostText)
			return false
		}
	}
	return true
}

// recoverWriter contains a panic while writing to this connection, which
// ends. Writer only.
func (c *conn) recoverWriter() {
	if p := recover(); p != nil {
		c.h.log.Error(evPanic, zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Any("panic", p), zap.Stack("stack"))
		c.end(websocket.CloseAbnormalClosure, closeLostText)
	}
}

// keepQueueCap is the largest queue slice a writer keeps for reuse; after
// a bigger burst it is let go so an idle connection shrinks back.
const keepQueueCap = 64

// write writes one message as a text or binary frame, under WriteWait.
func (c *conn) write(m *hub.Message) error {
	typ := websocket.TextMessage
	if m.Binary {
		typ = websocket.BinaryMessage
	}
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.h.cfg.WriteWait)); err != nil {
		return fmt.Errorf("set write deadline: %w", err)
	}
	if err := c.ws.WriteMessage(typ, m.Data); err != nil {
		return fmt.Errorf("write message: %w", err)
	}
	return nil
}

// control writes one control frame under WriteWait; false means it failed.
func (c *conn) control(typ int, payload []byte) bool {
	return c.ws.WriteControl(typ, payload, time.Now().Add(c.h.cfg.WriteWait)) == nil
}

// queueCloseLocked leaves open for next (closing or answering), with msg
// as our close frame, and starts the writer for it. c.mu must be held and
// the state open.
//
// A writer blocked on a client that stopped reading would hold the close
// frame back for up to WriteWait; this shortens that write's deadline to
// CloseGrace, after which the socket is cut. (The deadline is set on the
// net.Conn, which is safe from any goroutine; gorilla sets its own again
// before its next write.)
func (c *conn) queueCloseLocked(next connState, msg []byte) {
	c.state, c.closeMsg = next, msg
	if c.writing && c.ws != nil {
		_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(c.h.cfg.CloseGrace))
	}
	c.startWriterLocked()
}

// writeClose writes our close frame. Then closing → closeSent, with
// CloseGrace for the client's close frame to come; answering (the client
// is done) → dead, as does a failed write. Writer only.
func (c *conn) writeClose() {
	c.mu.Lock()
	msg := c.closeMsg
	c.mu.Unlock()
	err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.h.cfg.WriteWait))
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && c.state == stateClosing {
		c.state = stateCloseSent
		c.closeBy = time.Now().Add(c.h.cfg.CloseGrace)
		c.timer.Reset(c.h.cfg.CloseGrace)
		return
	}
	c.endLocked(websocket.CloseAbnormalClosure, closeLostText)
}
