package natsserver

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// InProcessConn connects to the embedded server without a socket, for
// nats.InProcessServer: pusher's own connections skip the loopback TCP
// hop (a write and a read syscall each way per message, on both sides).
//
// The server's in-process connection is a net.Pipe, which hands bytes
// over only when a reader and a writer meet. Used bare, the server's
// writer waits while the client parses what it read, and the client's
// flusher, which holds its connection's lock while it writes, waits
// until the server has read everything, and with it every publisher and
// acker of that connection: measured, that costs more throughput than the
// syscalls save. So the pipe is buffered both ways, as a socket is by
// the kernel: a goroutine each way moves bytes between the pipe and a
// queue of chunks, and neither side waits for the other unless a queue
// is full.
func (s *Server) InProcessConn() (net.Conn, error) {
	c, err := s.ns.InProcessConn()
	if err != nil {
		return nil, err
	}
	return newBufferedPipe(c), nil
}

// pipeChunk is the size of one chunk moved through a bufferedPipe, and
// pipeChunks how many may wait each way: 32 × 32 KiB, about what a
// loopback socket buffers.
const (
	pipeChunk  = 32 << 10
	pipeChunks = 32
)

// chunkPool recycles the chunks: a chunk lives from the pump that fills
// it (or Write) to the Read (or pump) that empties it.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, pipeChunk); return &b }}

// bufferedPipe is one end of a net.Pipe with a queue of chunks each way.
// Read and Write are each for one goroutine at a time (as nats.go uses a
// connection); the rest is safe for concurrent use.
type bufferedPipe struct {
	pipe net.Conn

	in    chan *[]byte // read from the pipe, in order; closed when the pipe fails
	inErr error        // why; written before in is closed
	cur   *[]byte      // the chunk Read is emptying
	off   int          // how much of cur Read has returned

	out     chan *[]byte  // for the pipe, in order
	outDead chan struct{} // closed when the write pump stopped
	outErr  error         // why; written before outDead is closed

	readDeadline, writeDeadline atomic.Int64 // unix ns; 0: none

	closed    chan struct{}
	closeOnce sync.Once
}

func newBufferedPipe(pipe net.Conn) *bufferedPipe {
	p := &bufferedPipe{
		pipe:    pipe,
		in:      make(chan *[]byte, pipeChunks),
		out:     make(chan *[]byte, pipeChunks),
		outDead: make(chan struct{}),
		closed:  make(chan struct{}),
	}
	go p.readPump()
	go p.writePump()
	return p
}

// readPump moves what the server writes into in, until the pipe fails.
func (p *bufferedPipe) readPump() {
	for {
		b := chunkPool.Get().(*[]byte)
		n, err := p.pipe.Read((*b)[:pipeChunk])
		if n > 0 {
			*b = (*b)[:n]
			select {
			case p.in <- b:
			case <-p.closed:
				err = net.ErrClosed
			}
		} else {
			chunkPool.Put(b)
		}
		if err != nil {
			p.inErr = err
			close(p.in)
			return
		}
	}
}

// writePump moves what Write queued into the pipe, until the pipe fails
// or the connection is closed.
func (p *bufferedPipe) writePump() {
	for {
		select {
		case b := <-p.out:
			_, err := p.pipe.Write(*b)
			chunkPool.Put(b)
			if err != nil {
				p.outErr = err
				close(p.outDead)
				return
			}
		case <-p.closed:
			p.outErr = net.ErrClosed
			close(p.outDead)
			return
		}
	}
}

// Read returns what the server wrote, waiting for some if none is queued.
func (p *bufferedPipe) Read(b []byte) (int, error) {
	if p.cur == nil {
		c, err := p.next()
		if err != nil {
			return 0, err
		}
		p.cur, p.off = c, 0
	}
	n := copy(b, (*p.cur)[p.off:])
	p.off += n
	if p.off == len(*p.cur) {
		chunkPool.Put(p.cur)
		p.cur = nil
	}
	return n, nil
}

// next takes the next chunk the server wrote, within the read deadline.
func (p *bufferedPipe) next() (*[]byte, error) {
	select {
	case c, ok := <-p.in:
		return p.got(c, ok)
	default:
	}
	expired, stop := deadlineChan(p.readDeadline.Load())
	defer stop()
	select {
	case c, ok := <-p.in:
		return p.got(c, ok)
	case <-expired:
		return nil, os.ErrDeadlineExceeded
	case <-p.closed:
		return nil, net.ErrClosed
	}
}

func (p *bufferedPipe) got(c *[]byte, ok bool) (*[]byte, error) {
	if !ok {
		if errors.Is(p.inErr, io.ErrClosedPipe) {
			return nil, io.EOF // the server closed its end
		}
		return nil, p.inErr
	}
	return c, nil
}

// Write queues b for the server, waiting only while the queue is full,
// within the write deadline. It has queued all of b when it returns nil.
func (p *bufferedPipe) Write(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		c := chunkPool.Get().(*[]byte)
		n := copy((*c)[:pipeChunk], b[written:])
		*c = (*c)[:n]
		if err := p.queue(c); err != nil {
			chunkPool.Put(c)
			return written, err
		}
		written += n
	}
	return written, nil
}

func (p *bufferedPipe) queue(c *[]byte) error {
	select {
	case <-p.closed:
		return net.ErrClosed
	case <-p.outDead:
		return p.outErr
	default:
	}
	select {
	case p.out <- c:
		return nil
	default:
	}
	expired, stop := deadlineChan(p.writeDeadline.Load())
	defer stop()
	select {
	case p.out <- c:
		return nil
	case <-p.outDead:
		return p.outErr
	case <-expired:
		return os.ErrDeadlineExceeded
	}
}

// deadlineChan is a channel that fires at the deadline (unix ns), or
// never for 0; stop releases its timer.
func deadlineChan(ns int64) (<-chan time.Time, func()) {
	if ns == 0 {
		return nil, func() {}
	}
	t := time.NewTimer(time.Until(time.Unix(0, ns)))
	return t.C, func() { t.Stop() }
}

// Close closes the pipe; the pumps stop, and what was queued for the
// server and not yet written is dropped, as unsent socket data is.
func (p *bufferedPipe) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.closed)
		err = p.pipe.Close()
	})
	return err
}

func (p *bufferedPipe) LocalAddr() net.Addr  { return p.pipe.LocalAddr() }
func (p *bufferedPipe) RemoteAddr() net.Addr { return p.pipe.RemoteAddr() }

func (p *bufferedPipe) SetDeadline(t time.Time) error {
	_ = p.SetReadDeadline(t)
	return p.SetWriteDeadline(t)
}

func (p *bufferedPipe) SetReadDeadline(t time.Time) error {
	p.readDeadline.Store(unixNano(t))
	return nil
}

func (p *bufferedPipe) SetWriteDeadline(t time.Time) error {
	p.writeDeadline.Store(unixNano(t))
	return nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
