// Package intake reads what WebSocket clients send, without a goroutine
// per idle connection, and reports each frame to the connection.
//
// Three calls: NewPoller makes the one Poller a server needs; Watch starts
// reading a connection's socket into a Reader that lives inside the
// connection, which hears the client through the Conn interface; Stop
// ends that and closes the socket.
package intake

import (
	"errors"
	"fmt"
	"math"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
)

// Conn is a connection as intake sees it: what its client sends arrives
// as calls of these methods. ws's connection implements it.
//
// For one connection the calls come from one goroutine at a time, in the
// order the client sent, and none follows ClientClosed, Violated or Gone
// (reading is over then) unless one of those panicked. They run on the
// goroutine that reads the socket, so they must not block, and must not
// call Stop, which waits for them.
//
// Data messages are reported, with Message, only for connections watched
// with messages set (pusher.v1 clients); others' are read and discarded.
type Conn interface {
	// Heard: bytes arrived, so the client is alive. It comes before the
	// frames those bytes complete.
	Heard()
	// Pinged: the client pinged; RFC 6455 asks for a pong with payload
	// (at most 125 bytes, the Conn's to keep).
	Pinged(payload []byte)
	// Ponged: the client answered a ping with payload (at most 125
	// bytes, valid only during the call: pongs are frequent, so their
	// payload is not allocated). A client may answer only the latest of
	// several pings (RFC 6455 5.5.3), so a pong confirms every ping up to
	// the one it echoes.
	Ponged(payload []byte)
	// Message: a complete data message came (text is valid UTF-8, or a
	// text message violates with 1007); payload, at most MaxMessageSize
	// bytes, is valid only during the call.
	Message(text bool, payload []byte)
	// ClientClosed: the client's close frame came, with code (1005 when
	// it had none) and reason. Reading is over.
	ClientClosed(code int, reason string)
	// Violated: the client broke RFC 6455; the answer is a close frame with
	// code (1002, or 1009 for a message over the limit) and reason. Reading
	// is over.
	Violated(code int, reason string)
	// Gone: the client hung up, the socket failed, or reading it panicked
	// (err is then a *PanicError). Reading is over.
	Gone(err error)
}

// PanicError is what Conn.Gone gets when reading a connection panicked:
// the panic ends that connection only.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the reading goroutine's stack at the panic
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic while reading: %v", e.Value) }

// Reader is one connection's reading state. It is a value inside the
// connection, not an object of its own, so watching a connection costs no
// allocation and an idle one holds only these few words. Watch fills it and
// Stop ends it; the connection never touches it.
type Reader struct {
	// Set by Watch before any read; read-only after.
	c   Conn
	nc  net.Conn
	raw syscall.RawConn // non-nil: the epoll set watches the socket; nil: goRead reads it
	id  uint64          // the connection's id: epoll events carry it, not the descriptor

	// reads counts the goroutines reading the socket, at most one at a
	// time (state on the epoll path; goRead is one goroutine). Stop waits
	// for them.
	reads sync.WaitGroup
	// state keeps the epoll path's reads to one at a time (readIdle...).
	state atomic.Int32
	// frames is used only by the goroutine that reads.
	frames frameReader
}

// Config tunes a Poller.
type Config struct {
	// MaxMessageSize is the most bytes one client message may have; a
	// longer one is Violated with 1009. It must be positive (and is
	// capped at 2 GiB).
	MaxMessageSize int64
	// Goroutines reads every connection with a goroutine of its own, as
	// where there is no epoll, so tests can cover that path on Linux.
	Goroutines bool
}

// Poller reads the sockets of many connections. On Linux, for a plain
// socket, one epoll set and one goroutine watch them all, and a readable
// socket is read by a short-lived goroutine (read), so an idle connection
// costs no goroutine. Elsewhere, or when epoll refuses the socket, a
// goroutine per connection blocks in Read (goRead), which costs an idle
// connection a goroutine stack but behaves the same.
//
// The epoll set and its goroutine exist only while sockets are watched:
// the first Watch starts them and the last Stop stops them, so a Poller
// needs no Close, and the owner's running WaitGroup covers the goroutine.
type Poller struct {
	// Static after construction.
	cfg     Config
	running *sync.WaitGroup // the owner's; counts the epoll loop goroutines
	log     *zap.Logger
	// ops holds what read uses (readOp): shared, so an idle connection
	// holds none.
	ops sync.Pool
	// handoff passes a readable socket to a reader goroutine that waits
	// for one (Poller.reader); unbuffered, so a send succeeds only when one
	// waits.
	handoff chan readJob

	// mu guards the epoll set and who is in it. It is never held across a
	// read or a Conn call.
	mu      sync.Mutex
	set     *epollSet          // nil while no socket is watched
	readers map[uint64]*Reader // watched sockets by connection id
	leaving int                // readers Stop took out of readers whose read may still run
}

// readBufferSize is what one read takes from a socket: client frames are
// small and rare.
const readBufferSize = 512

// maxReadsPerWake bounds one read of a readable socket, so a client that
// keeps sending shares the reading goroutines' time with the others.
const maxReadsPerWake = 8

// NewPoller returns a Poller. running counts the goroutines the Poller
// starts that outlive a Stop (an epoll loop, until the last Stop; reader
// goroutines, for a moment after their last read), so the owner's wait on
// it covers them; log reports epoll failures.
func NewPoller(running *sync.WaitGroup, log *zap.Logger, cfg Config) *Poller {
	p := &Poller{cfg: cfg, running: running, log: log, readers: map[uint64]*Reader{}, handoff: make(chan readJob)}
	p.ops.New = func() any { return newReadOp() }
	return p
}

// Watch starts reading nc, the socket of connection c, whose id is unique
// for the Poller's life, into r. r must be a zero Reader that stays in
// place (inside c) until Stop(r); from now on c hears what the client
// sends, its data messages too when messages is set. Watch returns at
// once; a socket epoll cannot watch gets a goroutine.
func (p *Poller) Watch(r *Reader, nc net.Conn, id uint64, c Conn, messages bool) {
	r.c, r.nc, r.id = c, nc, id
	r.frames.limit = int32(min(p.cfg.MaxMessageSize, math.MaxInt32))
	r.frames.collect = messages
	if !p.cfg.Goroutines && p.add(r) == nil {
		return
	}
	r.reads.Add(1)
	go r.goRead()
}

// Stop ends the reading of r and closes its socket. It returns once no
// call of r's Conn runs or will start. The socket is closed only after the
// epoll set let go of it, so no epoll_ctl can reach its descriptor number
// once a newer connection reuses it. Call it once, after Watch returned,
// never from a Conn method.
func (p *Poller) Stop(r *Reader) {
	if r.raw != nil {
		p.remove(r)
	}
	_ = r.nc.Close() // unblocks goRead
	r.reads.Wait()
}

// goRead is the reader where the epoll set does not watch the socket: a
// goroutine per connection, blocked in Read until Stop closes the socket.
func (r *Reader) goRead() {
	defer r.reads.Done()
	defer r.recoverPanic()
	buf := make([]byte, readBufferSize)
	for {
		n, err := r.nc.Read(buf)
		if n > 0 && !r.feed(buf[:n]) {
			return
		}
		if err != nil {
			r.c.Gone(fmt.Errorf("read: %w", err))
			return
		}
	}
}

// feed hands b, just read from the socket, to the frame reader, and what
// it finds to the Conn; false means reading is over.
func (r *Reader) feed(b []byte) bool {
	r.c.Heard()
	for len(b) > 0 {
		ev, n, err := r.frames.feed(b)
		b = b[n:]
		if err != nil {
			pe := &protocolError{Code: websocket.CloseProtocolError, Text: err.Error()}
			errors.As(err, &pe)
			r.c.Violated(pe.Code, pe.Text)
			return false
		}
		switch ev {
		case framePing:
			payload := r.frames.control()
			r.frames.release()
			r.c.Pinged(payload)
		case framePong:
			payload := r.frames.control()
			r.frames.release()
			r.c.Ponged(payload)
		case frameMessage:
			text, payload := r.frames.message()
			r.c.Message(text, payload)
			r.frames.releaseMessage()
		case frameClose:
			code, reason := r.frames.closeFrame()
			r.frames.release()
			r.c.ClientClosed(code, reason)
			return false
		}
	}
	return true
}

// recoverPanic contains a panic while reading r's socket to r's
// connection, which Gone ends.
func (r *Reader) recoverPanic() {
	if v := recover(); v != nil {
		r.c.Gone(&PanicError{Value: v, Stack: debug.Stack()})
	}
}
