package ws

import (
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/logging"
	"github.com/pusher-io/pusher/wire"
	"github.com/pusher-io/pusher/ws/internal/intake"
)

// errConnClosed is reported for messages still queued when a connection
// goes; the consumer retries them, so the user gets them on reconnect.
var errConnClosed = errors.New("connection closed before write")

// conn is one authenticated WebSocket connection.
//
// An idle connection costs no goroutine. The Handler's intake.Poller reads
// its socket when the client sends something and calls the intake.Conn
// methods (read.go) with what it finds. A writer runs only while there is
// something to write (messages, a ping, a pong, our close frame): Enqueue,
// the timer, the reader and Close start one when none runs (write.go), on
// a goroutine that has just finished another connection's writes if one
// waits, and it returns when nothing is left. At most one writer runs at a
// time, so it is the connection's only writer, as gorilla requires.
//
// Its life, in state (guarded by mu):
//
//	       Close                    our close frame written
//	open ──────────▶ closing ─────────────────────────────▶ closeSent
//	 │                  │                                      │
//	 │ the client       │ the client                           │ the client closes,
//	 │ closes or errs   │ closes or errs                       │ or CloseGrace passes
//	 ▼                  │                                      ▼
//	answering ◀─────────┘                                     dead
//	 │                                                         ▲
//	 └─────────────── our close frame written ─────────────────┘
//
//	any state ── a write fails, the client hangs up, PongWait of silence, a panic ──▶ dead
//
// Frames unconfirmed for ConfirmTimeout take open straight to answering:
// the client is taken to be gone, so our close frame (4004) is written
// best effort and the socket dropped without waiting for an answer.
//
// Close is hub.Conn's (a kick, shutdown), or ours (token expiry, a full
// queue). The client closes with its close frame and errs by breaking RFC
// 6455 (intake.Conn's ClientClosed and Violated).
//
// Messages, pings and pongs are written while open. Our close frame
// (closeMsg) is written in closing and answering, after a pong still owed;
// messages queued by then are reported failed, for a retry. In answering
// it echoes the client's close frame or carries the protocol error, unless
// ours was queued first. Nothing is written after it. end is the one way
// into dead: it records the cause (the first decided wins) and has
// Handler.finish tear the connection down, once.
type conn struct {
	// Static after construction; ws and started are set at the upgrade,
	// under mu, before anything reads them.
	id      uint64
	uid     string
	h       *Handler        // its cfg, its log (calls add uid and conn), finish
	ws      *websocket.Conn // nil until the upgrade
	started instant         // the upgrade, for the log

	// Reader only: the Handler's poller's, from Watch (at the upgrade) to
	// Stop (in finish).
	in intake.Reader

	// writers counts the writer running writeLoop, for finish.
	writers sync.WaitGroup

	// Guarded by mu. It is never held across a write or a read; the
	// writer takes its work under it and writes without it.
	mu      sync.Mutex
	state   connState
	writing bool   // a writer goroutine owns the writes; cleared when it finds no work
	pingDue bool   // the timer asks for a ping
	endBy   closer // with endCode: who ended the connection (here, it fits the padding)

	// queue is a slice, not a channel, so an idle connection holds no
	// buffer and a burst of up to SendQueue messages is absorbed without
	// closing a healthy client.
	queue   []*hub.Message
	confirm confirmation
	// v1 is a pusher.v1 connection's own state; nil for raw clients.
	v1 *v1State
	// pong, when set, is due: the payload of the client's last ping (a
	// pointer, as clients rarely ping and every connection carries it).
	pong     *[]byte
	closeMsg []byte // our close frame's payload; set on leaving open
	// endCode and endReason say how the connection ended, for the log;
	// the first event that decides it sets them.
	endCode   int
	endReason string

	// Timer: the connection's one timer, for pings, token expiry, the
	// silence limit and the close grace (one timer, not four, because
	// every idle connection carries it). Guarded by mu.
	timer    *time.Timer
	nextPing instant
	expires  instant // zero: the token has no exp
	heard    instant // when the client last sent anything
	closeBy  instant // in closeSent: the socket is cut then
}

// connState is where a conn is in its life; see conn.
type connState uint8

const (
	stateOpen      connState = iota // messages, pings and pongs flow
	stateClosing                    // our close frame is queued; the client may still send
	stateAnswering                  // our close frame is queued and the client is done: once it is out, dead
	stateCloseSent                  // our close frame is out; waiting for the client's, CloseGrace at most
	stateDead                       // end ran: finish tears the connection down; nothing starts
)

// closeLostText is the log's reason for a connection that ended without
// a close handshake, with 1006 (a code never sent, RFC 6455 7.4.1):
// the client hung up or the socket failed. closeSilentText is the
// reason when pusher cut it because the client sent nothing for PongWait,
// closePanicText when a panic (a bug) ended it.
const (
	closeLostText   = "connection lost"
	closeSilentText = "client silent"
	closePanicText  = "internal error"
)

// closer is who ended a connection, for ws.closed's by. The side that
// decided the close is its closer, whoever was at fault: a protocol
// violation is the client's fault, but pusher closes the connection, so
// it is byServer (its code, 1002, 1007, 1008 or 1009, says why).
type closer uint8

const (
	// byServer: pusher decided: a kick (4001), a slow client (4002), the
	// token's expiry (4003), unconfirmed frames (4004), shutdown (1001),
	// a protocol violation, the client's silence for PongWait, a panic.
	byServer closer = iota
	// byClient: the client's close frame, or its connection broke under
	// us (end of stream, a reset, a failed write).
	byClient
)

func (b closer) String() string {
	if b == byClient {
		return "client"
	}
	return "server"
}

func newConn(id uint64, uid string, h *Handler) *conn {
	return &conn{id: id, uid: uid, h: h}
}

// Enqueue implements hub.Conn. A full queue means the client does not keep
// up: the message is reported failed (and retried by the consumer), and
// the connection is closed so it stops holding messages hostage. Messages
// written and not yet confirmed count against the queue: a client that
// stopped answering holds at most SendQueue messages (and ack slots).
func (c *conn) Enqueue(m *hub.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return false // closing: the message goes back for a retry
	}
	if len(c.queue)+c.confirm.pending()+c.v1.pendingCount() >= c.h.cfg.SendQueue {
		c.closeLocked(wire.CloseSlowClient, wire.CloseSlowClientText)
		return false
	}
	c.queue = append(c.queue, m)
	c.startWriterLocked()
	return true
}

// Close implements hub.Conn: open → closing. The writer sends a close
// frame with code and reason, then waits up to CloseGrace for the
// client's. Only the first close frame counts.
func (c *conn) Close(code int, reason string) {
	c.mu.Lock()
	c.closeLocked(code, reason)
	c.mu.Unlock()
}

// closeLocked is Close with c.mu held.
func (c *conn) closeLocked(code int, reason string) {
	c.noteEndLocked(code, reason, byServer)
	if c.state == stateOpen {
		c.queueCloseLocked(stateClosing, websocket.FormatCloseMessage(code, reason))
	}
}

// noteEndLocked records why the connection ends, and who ended it,
// unless that is decided.
func (c *conn) noteEndLocked(code int, reason string, by closer) {
	if c.endCode == 0 {
		c.endCode, c.endReason, c.endBy = code, reason, by
	}
}

// end ends the connection: → dead, with code, reason and by as the cause
// unless one was decided before. It stops the timer and has Handler.finish
// tear the connection down, once, on a goroutine of its own; it never
// blocks, so the reader, a writer and the timer call it.
func (c *conn) end(code int, reason string, by closer) {
	c.mu.Lock()
	c.endLocked(code, reason, by)
	c.mu.Unlock()
}

// endLocked is end with c.mu held.
func (c *conn) endLocked(code int, reason string, by closer) {
	if c.state == stateDead {
		return
	}
	c.noteEndLocked(code, reason, by)
	c.state = stateDead
	c.timer.Stop()
	go c.h.finish(c)
}

// endStatus is how the connection ended, and who ended it, for the log.
func (c *conn) endStatus() (int, string, closer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.endCode, c.endReason, c.endBy
}

// drain reports every message still queued, or written and not yet
// confirmed, as failed. The caller has removed c from the hub and stopped
// reading and writing, so nothing is added or confirmed after it.
func (c *conn) drain() int {
	c.mu.Lock()
	batch := c.queue
	c.queue = nil
	sent, later := c.confirm.takeAll()
	acks := c.v1.takeAll()
	c.mu.Unlock()
	finishAll(batch, errConnClosed)
	finishAll(sent, errConnClosed)
	finishAll(later, errConnClosed)
	finishAll(acks, errConnClosed)
	return len(batch) + len(sent) + len(later) + len(acks)
}

func finishAll(ms []*hub.Message, err error) {
	for i, m := range ms {
		m.Finish(err)
		ms[i] = nil
	}
}

// finish tears c down, once (conn.endLocked): it stops the reading and the
// writer, unregisters c, reports whatever was still queued as failed,
// and logs how the connection ended.
func (h *Handler) finish(c *conn) {
	// No writer starts now (dead). Stop closes the socket, which fails a
	// write in progress, once the poller let go of it and no read runs.
	h.poll.Stop(&c.in)
	c.writers.Wait()
	code, reason, by := c.endStatus()
	h.hub.Remove(c.uid, c, h.disconnected(c, code))
	c.drain()
	if ce := h.log.Check(zap.InfoLevel, evClosed); ce != nil {
		ce.Write(zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Int("code", code), zap.String("reason", reason),
			zap.String("by", by.String()), logging.Ms("duration_ms", h.now().sub(c.started)))
	}
	h.running.Done()
}
