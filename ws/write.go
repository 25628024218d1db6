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
		return len(c.queue) > 0 || c.pingDue || c.pong != nil || c.v1.hasNotes() ||
			c.confirmMode() == ConfirmPong && c.confirm.wantsPing(0, false)
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
// within writerLinger, then exits. It holds one frameBuf meanwhile.
func (h *Handler) writer(c *conn) {
	defer h.running.Done()
	fb := h.frameBufs.Get().(*frameBuf)
	defer func() {
		if cap(fb.b) <= frameBufKeep && cap(fb.env) <= frameBufKeep {
			h.frameBufs.Put(fb)
		}
	}()
	linger := time.NewTimer(writerLinger)
	defer linger.Stop()
	for {
		c.writeLoop(fb)
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
	batch  []*hub.Message
	notes  [][]byte // pusher.v1 server frames (refreshed, error), before the batch
	pingID uint64   // a ping to write after the batch; 0 for none
	pong   *[]byte  // a pong owed, with its payload
	close  bool     // our close frame: written last, the batch reported failed
}

// writeLoop writes until nothing is left, then returns (and its goroutine
// may take another connection's work: Handler.runWriter). It reports every
// message it takes to the message's owner, or leaves it to the
// confirmation (ConfirmPong).
func (c *conn) writeLoop(fb *frameBuf) {
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
			c.writeClose(fb, w)
			return
		}
		if !c.writeWork(fb, w) {
			return
		}
		spare = w.batch
	}
}

// takeWork takes what is to be written and leaves spare (emptied) as the
// queue, so the next burst reuses it. In ConfirmPong mode it also decides
// the ping that follows the batch and records the batch as written, before
// the write, so that a pong can never overtake the bookkeeping. When there
// is nothing it clears writing, in the same critical section, so whoever
// adds work next starts a writer. Writer only.
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
	w = work{batch: c.queue, pong: c.pong, close: c.state == stateClosing || c.state == stateAnswering}
	c.queue = spare[:0]
	c.pong = nil
	if !w.close {
		w.notes = c.v1.takeNotes()
		w.pingID = c.takePingLocked(w.batch)
	}
	return w, true
}

// takePingLocked returns the id of the ping to write after batch, or 0
// for none, and in ConfirmPong mode records the batch as written. c.mu
// must be held.
func (c *conn) takePingLocked(batch []*hub.Message) uint64 {
	keepalive := c.pingDue
	c.pingDue = false
	if c.confirmMode() != ConfirmPong {
		if c.v1 != nil {
			c.recordAckWaitLocked(batch)
		}
		if !keepalive {
			return 0
		}
		c.confirm.pingID++
		return c.confirm.pingID
	}
	var id uint64
	if c.confirm.wantsPing(len(batch), keepalive) {
		id = c.confirm.pingID + 1
	}
	now := c.h.now()
	waiting := !c.confirm.since().isZero()
	c.confirm.written(batch, id, now)
	if !waiting && len(batch) > 0 {
		// The first message to await confirmation: the timer must fire
		// by its ConfirmTimeout, sooner than anything it waits for now.
		c.timer.Reset(c.untilNextTick(now))
	}
	return id
}

// writeWork writes a pong, the batch and a ping, in that order and in one
// write where it can. In ConfirmWrite mode it reports each message; in
// ConfirmPong mode the pong to the ping will. A failed write ends the
// connection: false. Writer only.
func (c *conn) writeWork(fb *frameBuf, w work) bool {
	nc := c.ws.NetConn()
	err := nc.SetWriteDeadline(deadline(c.h.cfg.WriteWait))
	if err == nil && w.pong != nil {
		err = fb.add(nc, opPong, *w.pong)
	}
	for _, note := range w.notes {
		if err == nil {
			err = fb.add(nc, opText, note)
		}
	}
	added := 0 // messages whose frames went into fb (or out)
	for _, m := range w.batch {
		if err != nil {
			break
		}
		err = c.addMessage(fb, nc, m)
		added++
	}
	if err == nil && w.pingID != 0 {
		err = fb.add(nc, opPing, pingPayload(&fb.ping, w.pingID))
	}
	if err == nil {
		err = fb.flush(nc)
	}
	if c.confirmMode() == ConfirmWrite {
		// A failed write may have taken the frames before it: they are
		// reported failed too, and retried (a duplicate, never a loss).
		finishAll(w.batch[:added], err)
		finishAll(w.batch[added:], errConnClosed)
	} else {
		clear(w.batch) // the confirmation holds them now
	}
	if err != nil {
		fb.b = fb.b[:0]
		if ce := c.h.log.Check(zap.DebugLevel, "ws.write_failed"); ce != nil {
			ce.Write(zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Error(err))
		}
		c.end(websocket.CloseAbnormalClosure, closeLostText, byClient)
		return false
	}
	return true
}

// recoverWriter contains a panic while writing to this connection, which
// ends. Writer only.
func (c *conn) recoverWriter() {
	if p := recover(); p != nil {
		c.h.log.Error(evPanic, zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.String("panic", fmt.Sprint(p)), zap.Stack("stack"))
		c.end(websocket.CloseAbnormalClosure, closePanicText, byServer)
	}
}

// keepQueueCap is the largest queue slice a writer keeps for reuse; after
// a bigger burst it is let go so an idle connection shrinks back.
const keepQueueCap = 64

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

// writeClose writes our close frame, after the pong still owed, in one
// write. Then closing → closeSent, with CloseGrace for the client's close
// frame to come; answering (the client is done) → dead, as does a failed
// write. Writer only.
func (c *conn) writeClose(fb *frameBuf, w work) {
	c.mu.Lock()
	msg := c.closeMsg
	c.mu.Unlock()
	nc := c.ws.NetConn()
	// A close frame that takes longer than the grace to write is to a
	// client that does not read: the socket is cut then anyway.
	err := nc.SetWriteDeadline(deadline(c.h.cfg.CloseGrace))
	if err == nil && w.pong != nil {
		err = fb.add(nc, opPong, *w.pong)
	}
	if err == nil {
		err = fb.add(nc, opClose, msg)
	}
	if err == nil {
		err = fb.flush(nc)
	}
	fb.b = fb.b[:0]
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && c.state == stateClosing {
		c.state = stateCloseSent
		c.closeBy = c.h.now().add(c.h.cfg.CloseGrace)
		c.timer.Reset(c.h.cfg.CloseGrace)
		return
	}
	// Our close frame was queued, so the cause is decided, unless a
	// failed write of it is the first news that the client is gone.
	c.endLocked(websocket.CloseAbnormalClosure, closeLostText, byClient)
}
