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

// finish tears c down, once (conn.end): it stops the reading and the
// writer, unregisters c, reports whatever was still queued as failed,
// and logs how the connection ended.
func (h *Handler) finish(c *conn) {
	// No writer starts now (dead). Stop closes the socket, which fails a
	// write in progress, once the poller let go of it and no read runs.
	h.poll.Stop(&c.in)
	c.writers.Wait()
	h.hub.Remove(c.uid, c)
	c.drain()
	code, reason := c.endStatus()
	if ce := h.log.Check(zap.InfoLevel, evClosed); ce != nil {
		ce.Write(zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Int("code", code), zap.String("reason", reason),
			zap.Duration("duration", time.Since(c.started)))
	}
	h.running.Done()
}
