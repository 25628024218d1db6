package ws

import (
	"errors"
	"io"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
)

// errConnClosed is reported for messages still queued when a connection
// goes; the consumer retries them, so the user gets them on reconnect.
var errConnClosed = errors.New("connection closed before write")

// conn is one authenticated WebSocket connection.
//
// An idle connection costs one goroutine, its reader (Handler.run). A
// writer goroutine exists only while there is something to write
// (messages, a ping, a close frame): Enqueue, the ping timer and Close
// start one when none runs, and it exits when the queue is empty. At most
// one writer runs at a time, so it is the connection's only writer, as
// gorilla requires. The reader waits for the writer before it returns.
type conn struct {
	id  uint64
	uid string
	ws  *websocket.Conn // set before the reader starts; nil until the upgrade
	cfg *Config
	log *zap.Logger // the Handler's; calls add uid and conn themselves

	// mu guards everything up to writers. The queue is a slice, not a
	// channel, so an idle connection holds no buffer and a burst of up to
	// SendQueue messages is absorbed without closing a healthy client.
	mu        sync.Mutex
	queue     []*hub.Message
	writing   bool // a writer goroutine is running
	pingDue   bool // the ping timer fired; the writer sends a ping
	closeDue  bool // Close was called; the writer sends the close frame
	closeSent bool // the close frame went out; nothing else is written
	broken    bool // a write failed; nothing else is written
	dead      bool // the reader is tearing down; no writer may start
	writers   sync.WaitGroup

	// timer is the connection's one timer, for both pings and token expiry
	// (one timer, not two, because every idle connection carries it).
	// Guarded by mu, like nextPing; expires is set before the reader starts.
	timer    *time.Timer
	nextPing time.Time
	expires  time.Time // zero: the token has no exp

	// readMu orders the reader's deadline extensions against the final
	// CloseGrace deadline the writer sets after its close frame: once
	// closing is set the reader stops extending, so a client that ignores
	// our close frame but keeps sending cannot hold the connection.
	readMu  sync.Mutex
	closing bool // guarded by readMu

	closeOnce   sync.Once
	closeReq    chan struct{} // closed by Close; closeCode/closeReason are set first
	closeCode   int
	closeReason string
}

func newConn(id uint64, uid string, cfg *Config, log *zap.Logger) *conn {
	return &conn{id: id, uid: uid, cfg: cfg, log: log, closeReq: make(chan struct{})}
}

// Enqueue implements hub.Conn. A full queue means the client does not keep
// up: the message is reported failed (and retried by the consumer), and
// the connection is closed so it stops holding messages hostage.
func (c *conn) Enqueue(m *hub.Message) bool {
	c.mu.Lock()
	if len(c.queue) >= c.cfg.SendQueue {
		c.mu.Unlock()
		c.Close(CloseSlowClient, "slow client")
		return false
	}
	c.queue = append(c.queue, m)
	c.startWriterLocked()
	c.mu.Unlock()
	return true
}

// Close implements hub.Conn: the writer sends a close frame with code and
// reason, then the connection ends. Only the first call counts.
//
// A writer blocked on a client that stopped reading would hold the close
// frame back for up to WriteWait; Close shortens that write's deadline to
// CloseGrace, after which the socket is cut. (The deadline is set on the
// net.Conn, which is safe from any goroutine; gorilla sets its own again
// before its next write.)
func (c *conn) Close(code int, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		close(c.closeReq)
		c.mu.Lock()
		c.closeDue = true
		if c.writing && c.ws != nil {
			_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(c.cfg.CloseGrace))
		}
		c.startWriterLocked()
		c.mu.Unlock()
	})
}

// startTimer arms the connection's timer; the reader calls it once.
func (c *conn) startTimer(expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expires = expires
	now := time.Now()
	c.nextPing = now.Add(c.cfg.PingInterval)
	c.timer = time.AfterFunc(c.untilNextTick(now), c.tick)
}

// tick is the timer's callback: it closes the connection with 4003 once
// the token expired, else asks the writer for a ping when one is due, and
// rearms itself while the connection lives.
func (c *conn) tick() {
	now := time.Now()
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	expired := !c.expires.IsZero() && !now.Before(c.expires)
	if !expired {
		if !now.Before(c.nextPing) {
			c.pingDue = true
			c.nextPing = now.Add(c.cfg.PingInterval)
			c.startWriterLocked()
		}
		c.timer.Reset(c.untilNextTick(now))
	}
	c.mu.Unlock()
	if expired {
		c.Close(CloseTokenExpired, "token expired")
	}
}

// untilNextTick is the time to the next ping or the expiry, whichever is
// first. c.mu must be held.
func (c *conn) untilNextTick(now time.Time) time.Duration {
	next := c.nextPing
	if !c.expires.IsZero() && c.expires.Before(next) {
		next = c.expires
	}
	return next.Sub(now)
}

// startWriterLocked starts a writer when there is work and none runs.
// c.mu must be held. Before the upgrade (ws nil) work waits for it.
func (c *conn) startWriterLocked() {
	if c.writing || c.dead || c.broken || c.closeSent || c.ws == nil {
		return
	}
	if len(c.queue) == 0 && !c.pingDue && !c.closeDue {
		return
	}
	c.writing = true
	c.writers.Add(1)
	go c.writeLoop()
}

// writeLoop writes until nothing is left, then exits. It reports every
// message it takes to the message's owner.
func (c *conn) writeLoop() {
	defer c.writers.Done()
	defer func() {
		if p := recover(); p != nil {
			c.log.Error(evPanic, zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Any("panic", p), zap.Stack("stack"))
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
		ping, closing := c.pingDue, c.closeDue
		c.pingDue = false
		if len(batch) == 0 && !ping && !closing {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		if closing {
			// What is still queued goes back to the consumer for a retry;
			// the close frame goes now.
			finishAll(batch, errConnClosed)
			msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
			_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.cfg.WriteWait))
			c.endReadsBy(time.Now().Add(c.cfg.CloseGrace))
			c.mu.Lock()
			c.closeSent, c.writing = true, false
			c.mu.Unlock()
			return
		}
		if ping {
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.cfg.WriteWait)); err != nil {
				finishAll(batch, errConnClosed)
				c.fail()
				return
			}
		}
		for i, m := range batch {
			err := c.write(m)
			m.Finish(err)
			batch[i] = nil
			if err != nil {
				if ce := c.log.Check(zap.DebugLevel, "ws.write_failed"); ce != nil {
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

// fail marks the connection broken after a failed write and closes the
// socket so the reader stops and tears down. Writer only.
func (c *conn) fail() {
	c.mu.Lock()
	c.broken, c.writing = true, false
	c.mu.Unlock()
	_ = c.ws.NetConn().Close()
}

// keepQueueCap is the largest queue slice a writer keeps for reuse; after
// a bigger burst it is let go so an idle connection shrinks back.
const keepQueueCap = 64

func (c *conn) write(m *hub.Message) error {
	typ := websocket.TextMessage
	if m.Binary {
		typ = websocket.BinaryMessage
	}
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.cfg.WriteWait)); err != nil {
		return err
	}
	return c.ws.WriteMessage(typ, m.Data)
}

// readLoop reads (and discards) client frames so control frames are
// processed and dead peers are noticed, until the connection fails or
// closes. Frames over the read limit end it with 1009.
func (c *conn) readLoop() error {
	c.ws.SetReadLimit(c.cfg.MaxMessageSize)
	_ = c.extendReads()
	c.ws.SetPongHandler(func(string) error { return c.extendReads() })
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			return err
		}
		// Read the message to its end: gorilla applies the read limit to
		// the frames a reader reads, and NextReader skips the unread rest
		// of a fragmented message frame by frame, unchecked.
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
		_ = c.extendReads()
	}
}

// extendReads moves the read deadline PongWait ahead, unless the writer
// has set the final one with endReadsBy. Reader only.
func (c *conn) extendReads() error {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.closing {
		return nil
	}
	return c.ws.SetReadDeadline(time.Now().Add(c.cfg.PongWait))
}

// endReadsBy sets the last read deadline, t; extendReads no longer moves it.
// Writer only, after its close frame.
func (c *conn) endReadsBy(t time.Time) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.closing = true
	_ = c.ws.SetReadDeadline(t)
}

// stopWriting forbids new writers, closes the socket so a writer stuck in
// a write returns, and waits for the running one. Reader only, at teardown.
func (c *conn) stopWriting() {
	c.mu.Lock()
	c.dead = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	if c.ws != nil {
		_ = c.ws.NetConn().Close()
	}
	c.writers.Wait()
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
