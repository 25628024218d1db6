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

// conn is one authenticated WebSocket connection. The handler goroutine
// that accepted it is its reader; writePump, started and awaited by that
// goroutine, is its only writer (messages, pings, close frames).
type conn struct {
	id  uint64
	uid string
	ws  *websocket.Conn // set before writePump starts
	cfg *Config
	log *zap.Logger

	// mu guards queue. The queue is a slice, not a channel, so an idle
	// connection holds no buffer and a burst up to SendQueue messages is
	// absorbed without closing a healthy client.
	mu     sync.Mutex
	queue  []*hub.Message
	notify chan struct{} // capacity 1: "queue may be non-empty"

	// readMu orders the reader's deadline extensions against the final
	// CloseGrace deadline the pump sets after its close frame: once closing
	// is set the reader stops extending, so a client that ignores our close
	// frame but keeps sending cannot hold the connection (or Shutdown).
	readMu  sync.Mutex
	closing bool // guarded by readMu

	closeOnce   sync.Once
	closeReq    chan struct{} // closed by Close; closeCode/closeReason are set first
	closeCode   int
	closeReason string
}

func newConn(id uint64, uid string, cfg *Config, log *zap.Logger) *conn {
	return &conn{
		id:       id,
		uid:      uid,
		cfg:      cfg,
		log:      log,
		notify:   make(chan struct{}, 1),
		closeReq: make(chan struct{}),
	}
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
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
	return true
}

// take returns everything queued and empties the queue. spare, when it has
// room, becomes the new queue so steady traffic reuses two slices; after a
// burst the big slice is let go so an idle connection shrinks back.
func (c *conn) take(spare []*hub.Message) []*hub.Message {
	if cap(spare) > keepQueueCap {
		spare = nil
	}
	c.mu.Lock()
	batch := c.queue
	c.queue = spare[:0]
	c.mu.Unlock()
	return batch
}

// keepQueueCap is the largest queue slice kept across batches.
const keepQueueCap = 64

// Close implements hub.Conn: the write pump sends a close frame with code
// and reason, then the connection ends. Only the first call counts.
func (c *conn) Close(code int, reason string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeReason = code, reason
		close(c.closeReq)
	})
}

// writePump writes queued messages and pings until Close is called, a
// write fails, or stop is closed (the reader is gone). It reports every
// message it takes to the message's owner. It returns whether it sent a
// close frame.
func (c *conn) writePump(stop <-chan struct{}) (sentClose bool) {
	ping := time.NewTicker(c.cfg.PingInterval)
	defer ping.Stop()
	var spare []*hub.Message
	for {
		select {
		case <-c.notify:
			batch := c.take(spare)
			for i, m := range batch {
				err := c.write(m)
				m.Finish(err)
				if err != nil {
					c.log.Debug("ws.write_failed", zap.Error(err))
					finishAll(batch[i+1:], errConnClosed)
					return false
				}
				batch[i] = nil
			}
			spare = batch
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.cfg.WriteWait)); err != nil {
				return false
			}
		case <-c.closeReq:
			msg := websocket.FormatCloseMessage(c.closeCode, c.closeReason)
			_ = c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(c.cfg.WriteWait))
			return true
		case <-stop:
			return false
		}
	}
}

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

// extendReads moves the read deadline PongWait ahead, unless the pump has
// set the final one with endReadsBy. Reader only.
func (c *conn) extendReads() error {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	if c.closing {
		return nil
	}
	return c.ws.SetReadDeadline(time.Now().Add(c.cfg.PongWait))
}

// endReadsBy sets the last read deadline, t; extendReads no longer moves it.
// Write pump only, after its close frame.
func (c *conn) endReadsBy(t time.Time) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.closing = true
	_ = c.ws.SetReadDeadline(t)
}

// drain reports every message still queued as failed. The caller has
// removed c from the hub, so nothing is enqueued after this starts.
func (c *conn) drain() int {
	batch := c.take(nil)
	finishAll(batch, errConnClosed)
	return len(batch)
}

func finishAll(ms []*hub.Message, err error) {
	for i, m := range ms {
		m.Finish(err)
		ms[i] = nil
	}
}
