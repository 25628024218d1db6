//go:build linux

package intake

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// epollSet is one epoll instance and the eventfd that stops its loop.
type epollSet struct {
	fd   int
	wake int
}

// wakeID is the event data of the eventfd; connection ids start at 1.
const wakeID = 0

// pollEvents: readable or peer hung up, edge-triggered: an event comes
// when bytes arrive, and one read drains the socket. (One-shot events
// would need an epoll_ctl to re-arm after every read, and a pong comes
// back for every batch written.) Reader.state keeps reads of one socket
// to one at a time.
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET

// Reader.state on the epoll path: a phase, and the hangUp bit.
const (
	readIdle  int32 = iota // no read runs: the next event starts one
	readBusy               // a read runs
	readAgain              // a read runs, and an event came meanwhile: it reads once more
	readOver               // reading is over (close, violation, hang-up): events are ignored
	phaseMask int32 = 3

	// hangUp: an event said the peer hung up. Reads then go on until the
	// end of the stream: the hang-up's edge may have come with the last
	// bytes, and a read returns those bytes first and the end only on the
	// next call, for which no further event would come.
	hangUp int32 = 4
)

// evPollFail is ws's log event for an epoll_wait that fails (README).
const evPollFail = "ws.poll_failed"

var (
	errNotPlain = errors.New("not a plain socket")
	errPeerGone = errors.New("peer closed the connection")
)

// add registers r's socket with the epoll set, which it starts if none
// runs, and arms it. On error Watch reads r with a goroutine instead.
func (p *Poller) add(r *Reader) error {
	sc, ok := r.nc.(syscall.Conn)
	if !ok {
		return errNotPlain
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("raw conn: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.set == nil {
		s, err := newEpollSet()
		if err != nil {
			return err
		}
		p.set = s
		p.running.Add(1)
		go p.loop(s)
	}
	r.raw = raw
	p.readers[r.id] = r
	if err := p.set.ctl(unix.EPOLL_CTL_ADD, r); err != nil {
		r.raw = nil
		delete(p.readers, r.id)
		p.stopIfIdleLocked()
		return fmt.Errorf("epoll add: %w", err)
	}
	return nil
}

// remove takes r's socket out of the epoll set once no read of it runs.
// The socket is still open (Stop closes it after), so its descriptor is
// still r's.
func (p *Poller) remove(r *Reader) {
	p.mu.Lock()
	delete(p.readers, r.id) // no read of r starts after this...
	p.leaving++             // ...and the set outlives the one that may run
	p.mu.Unlock()
	r.reads.Wait() // that read may have re-armed the socket
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.set.ctl(unix.EPOLL_CTL_DEL, r)
	p.leaving--
	p.stopIfIdleLocked()
}

// stopIfIdleLocked stops the set's loop once no socket is in the set and
// no read of a removed one runs. p.mu must be held.
func (p *Poller) stopIfIdleLocked() {
	if len(p.readers) > 0 || p.leaving > 0 || p.set == nil {
		return
	}
	var one [8]byte
	one[0] = 1 // eventfd counters are host-endian; any nonzero value wakes it
	_, _ = unix.Write(p.set.wake, one[:])
	p.set = nil
}

// loop dispatches readable sockets until the set's eventfd fires.
func (p *Poller) loop(s *epollSet) {
	defer p.running.Done()
	defer s.close()
	var events [256]unix.EpollEvent
	op := newReadOp() // the loop's own, for the first read of each event
	for {
		n, err := unix.EpollWait(s.fd, events[:], -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			// Cannot happen with a valid set; do not spin on it.
			p.log.Error(evPollFail, zap.Error(err))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for i := range events[:n] {
			id := eventID(&events[i])
			if id == wakeID {
				return
			}
			p.dispatch(s, op, id, events[i].Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0)
		}
	}
}

// dispatch reads connection id's readable socket, unless a read runs
// (which then reads once more) or Stop took the connection out. The first
// read happens here, on the epoll loop: most events are one small frame,
// the pong to a ping, and handing each to another goroutine would cost
// more than reading it. What the first read does not finish (a client
// sending more than one buffer) goes on on a reader goroutine that
// finished another socket's read and waits for more, or a new one, so a
// busy client cannot hold up the loop.
func (p *Poller) dispatch(s *epollSet, op *readOp, id uint64, hup bool) {
	p.mu.Lock()
	r := p.readers[id]
	start := r != nil && r.claim(hup)
	if start {
		r.reads.Add(1) // under mu, so remove's Wait sees it
	}
	p.mu.Unlock()
	if !start {
		return
	}
	if p.step(r, op) {
		r.reads.Done()
		return
	}
	select {
	case p.handoff <- readJob{r, s}:
	default:
		p.running.Add(1) // r is watched, so its owner's count is not zero
		go p.reader(readJob{r, s})
	}
}

// claim records an event for r, and whether it said the peer hung up:
// true means no read ran and the caller starts one; false means the
// running one will read again, or reading is over.
func (r *Reader) claim(hup bool) bool {
	var bit int32
	if hup {
		bit = hangUp
	}
	for {
		st := r.state.Load()
		next := st | bit
		switch st & phaseMask {
		case readIdle:
			next = next&^phaseMask | readBusy
		case readBusy:
			next = next&^phaseMask | readAgain
		case readAgain:
		default:
			return false
		}
		if r.state.CompareAndSwap(st, next) {
			return st&phaseMask == readIdle
		}
	}
}

// settle ends a read that found the socket drained: idle again, unless an
// event came meanwhile (then false: read once more).
func (r *Reader) settle() bool {
	for {
		st := r.state.Load()
		if st&phaseMask == readAgain {
			if r.state.CompareAndSwap(st, st&^phaseMask|readBusy) {
				return false
			}
			continue
		}
		if r.state.CompareAndSwap(st, st&^phaseMask) { // readIdle is 0: the phase cleared
			return true
		}
	}
}

// readJob is one readable socket for a reader goroutine.
type readJob struct {
	r *Reader
	s *epollSet
}

// readerLinger is how long a reader goroutine, its read done, waits to
// take another socket's. Pongs come back for every batch written, so
// under load a few goroutines do all the reading instead of one being
// started (and allocated) per pong; when clients go quiet, none stays.
const readerLinger = 50 * time.Millisecond

// reader reads j's socket, then whichever is handed to it within
// readerLinger, then exits.
func (p *Poller) reader(j readJob) {
	defer p.running.Done()
	linger := time.NewTimer(readerLinger)
	defer linger.Stop()
	for {
		p.read(j.r, j.s)
		linger.Reset(readerLinger)
		select {
		case j = <-p.handoff:
		case <-linger.C:
			return
		}
	}
}

// read reads r's readable socket until it is drained (a short read, or
// the end of the stream once the peer hung up), again if an event came
// meanwhile, then leaves it idle for the next event. A client that keeps
// sending yields the goroutine every maxReadsPerWake reads.
func (p *Poller) read(r *Reader, _ *epollSet) {
	defer r.reads.Done()
	op := p.ops.Get().(*readOp)
	defer p.ops.Put(op)
	for reads := 1; !p.step(r, op); reads++ {
		if reads%maxReadsPerWake == 0 {
			runtime.Gosched()
		}
	}
}

// step reads r's socket once and hands what came to r's Conn; it reports
// whether this read is finished: the socket is drained and r idle, or
// reading is over. A panic in the Conn ends r's reading only.
func (p *Poller) step(r *Reader, op *readOp) (finished bool) {
	defer func() {
		if v := recover(); v != nil {
			r.state.Store(readOver)
			r.c.Gone(&PanicError{Value: v, Stack: debug.Stack()})
			finished = true
		}
	}()
	n, err := op.read(r)
	if err != nil {
		r.state.Store(readOver)
		r.c.Gone(err)
		return true
	}
	if n > 0 && !r.feed(op.buf[:n]) {
		r.state.Store(readOver)
		return true
	}
	if n == len(op.buf) || n > 0 && r.state.Load()&hangUp != 0 {
		return false // more may wait, and no event will say so
	}
	return r.settle()
}

// readOp is what one read of a readable socket needs: the buffer, and the
// RawConn callback, built once with the fields it fills. Reads are as
// frequent as pongs, one per batch of messages written, and a closure
// made per call would be put on the heap; pooled, a read allocates
// nothing, and an idle connection holds none.
type readOp struct {
	buf []byte

	// For readFn: the descriptor's read.
	n      int
	err    error
	readFn func(fd uintptr) bool
}

func newReadOp() *readOp {
	op := &readOp{buf: make([]byte, readBufferSize)}
	op.readFn = func(fd uintptr) bool {
		for {
			op.n, op.err = unix.Read(int(fd), op.buf)
			if op.err != unix.EINTR {
				return true // never park: the epoll set does the waiting
			}
		}
	}
	return op
}

// read reads what r's socket holds without waiting: (0, nil) means
// nothing is there yet; an error means the peer is gone or the socket
// failed. It runs under the socket's RawConn.Read, which holds the
// descriptor open.
func (op *readOp) read(r *Reader) (int, error) {
	op.n, op.err = 0, nil
	if err := r.raw.Read(op.readFn); err != nil {
		return 0, fmt.Errorf("read: %w", err)
	}
	switch {
	case op.err == unix.EAGAIN:
		return 0, nil
	case op.err != nil:
		return 0, fmt.Errorf("read: %w", op.err)
	case op.n == 0:
		return 0, errPeerGone
	}
	return op.n, nil
}

func newEpollSet() (*epollSet, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setEventID(&ev, wakeID)
	if err := unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(wake)
		_ = unix.Close(fd)
		return nil, fmt.Errorf("epoll add eventfd: %w", err)
	}
	return &epollSet{fd: fd, wake: wake}, nil
}

func (s *epollSet) close() {
	_ = unix.Close(s.wake)
	_ = unix.Close(s.fd)
}

// ctl applies op to r's socket in s. It runs under the socket's
// RawConn.Control, which holds the descriptor open, so op can never reach
// a descriptor number that a newer connection has reused.
func (s *epollSet) ctl(op int, r *Reader) error {
	var opErr error
	err := r.raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: pollEvents}
		setEventID(&ev, r.id)
		opErr = unix.EpollCtl(s.fd, op, int(fd), &ev)
	})
	if err != nil {
		return fmt.Errorf("socket control: %w", err)
	}
	return opErr
}

// The event's 64 bits of user data carry the connection id, not the
// descriptor, for the same reason.
func setEventID(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func eventID(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
