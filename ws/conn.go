package ws

import (
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
	"github.com/pusher-io/pusher/ws/internal/intake"
)

// errConnClosed is reported for messages still queued when a connection
// goes; the consumer retries them, so the user gets them on reconnect.
var errConnClosed = errors.New("connection closed before write")

// conn is one authenticated WebSocket connection.
//
// An idle connection costs no goroutine. The Handler's intake.Poller
// reads its socket when the client sends something and calls the
// intake.Conn methods (read.go) with what it finds. A writer runs only while
// there is something to write (messages, a ping, a pong, a close frame):
// Enqueue, the timer, the reader and Close start one when none runs, on a
// goroutine that has just finished another connection's writes if one
// waits (Handler.runWriter), and it returns when there is nothing left. At most one writer runs at
// a time, so it is the connection's only writer, as gorilla requires.
//
// The connection ends (Handler.finish, run once, by end) when the client
// hangs up, after the close handshake, after CloseGrace past our close
// frame, after PongWait of silence, or when a write fails.
type conn struct {
	id  uint64
	uid string
	ws  *websocket.Conn // set under mu before reading starts; nil until the upgrade
	h   *Handler        // its cfg, its log (calls add uid and conn), finish

	started time.Time // the upgrade, for the log

	// in is the Handler's intake.Poller's, from Watch (under mu, at the
	// upgrade) to Stop (in finish).
	in intake.Reader

	// mu guards everything below. The queue is a slice, not a channel, so
	// an idle connection holds no buffer and a burst of up to SendQueue
	// messages is absorbed without closing a healthy client.
	mu        sync.Mutex
	queue     []*hub.Message
	pong      []byte // the payload of the client's last ping
	closeMsg  []byte // the close frame's payload
	writing   bool   // a writer goroutine is running
	pingDue   bool   // the timer asks for a ping
	pongDue   bool   // the client pinged: echo pong
	closeDue  bool   // a close frame is to be written: closeMsg
	closeSent bool   // the close frame went out; nothing else is written
	readsDone bool   // the client closed, hung up or broke the protocol
	broken    bool   // a write failed; nothing else is written
	dead      bool   // end was called: no writer may start
	writers   sync.WaitGroup

	// timer is the connection's one timer, for pings, token expiry, the
	// silence limit and the close grace (one timer, not four, because
	// every idle connection carries it).
	timer    *time.Timer
	nextPing time.Time
	expires  time.Time // zero: the token has no exp
	heard    time.Time // when the client last sent anything
	closeBy  time.Time // set with closeSent: the socket is cut then

	// endCode and endReason say how the connection ended, for the log;
	// the first event that decides it sets them.
	endCode   int
	endReason string
}

func newConn(id uint64, uid string, h *Handler) *conn {
	return &conn{id: id, uid: uid, h: h}
}

// Enqueue implements hub.Conn. A full queue means the client does not keep
// up: the message is reported failed (and retried by the consumer), and
// the connection is closed so it stops holding messages hostage.
func (c *conn) Enqueue(m *hub.Message) bool {
	c.mu.Lock()
	if len(c.queue) >= c.h.cfg.SendQueue {
		c.mu.Unlock()
		c.Close(wire.CloseSlowClient, wire.CloseSlowClientText)
		return false
	}
	c.queue = append(c.queue, m)
	c.startWriterLocked()
	c.mu.Unlock()
	return true
}

// Close implements hub.Conn: the writer sends a close frame with code and
// reason, then waits up to CloseGrace for the client's. Only the first
// close frame counts.
func (c *conn) Close(code int, reason string) {
	c.mu.Lock()
	c.noteEndLocked(code, reason)
	c.requestCloseLocked(websocket.FormatCloseMessage(code, reason))
	c.mu.Unlock()
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

// noteEndLocked records why the connection ends unless that is decided.
func (c *conn) noteEndLocked(code int, reason string) {
	if c.endCode == 0 {
		c.endCode, c.endReason = code, reason
	}
}

// endStatus is how the connection ended, for the log.
func (c *conn) endStatus() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.endCode == 0 {
		return websocket.CloseAbnormalClosure, "connection lost"
	}
	return c.endCode, c.endReason
}

// end stops new readers and writers from starting and has Handler.finish
// tear the connection down, once. It never blocks, so readers, writers and
// the timer may call it.
func (c *conn) end() {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	c.timer.Stop()
	c.mu.Unlock()
	go c.h.finish(c)
}

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

func (c *conn) control(typ int, payload []byte) bool {
	return c.ws.WriteControl(typ, payload, time.Now().Add(c.h.cfg.WriteWait)) == nil
}

// fail marks the connection broken after a failed write and ends it.
// Writer only.
func (c *conn) fail() {
	c.mu.Lock()
	c.broken, c.writing = true, false
	c.mu.Unlock()
	c.end()
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

// drain reports every message still queued as failed. The caller has
// removed c from the hub and stopped writing, so the queue stays empty.
func (c *conn) drain() int {
	c.mu.Lock()
	batch := c.queue
	c.queue = nil
	c.mu.Unlock()
	finishAll(batch, errConnClosed)
	return len(batch)
}

func finishAll(ms []*hub.Message, err error) {
	for i, m := range ms {
		m.Finish(err)
		ms[i] = nil
	}
}
