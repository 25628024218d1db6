//go:build linux

package ws

import (
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// poller watches every idle connection's socket for readability with one
// epoll set and one goroutine, so an idle connection costs no goroutine of
// its own (see frameReader for why that matters). A readable socket gets a
// short-lived goroutine that reads what is there (conn.pollRead) and then
// re-arms the socket: registrations are one-shot, so at most one reader
// runs per connection.
//
// The set and its goroutine exist only while connections are registered:
// the first add starts them, the last remove stops them, so a Handler
// needs no Close and Handler.Wait covers the goroutine.
type poller struct {
	running *sync.WaitGroup // the Handler's; counts the loop goroutine
	log     *zap.Logger

	mu    sync.Mutex
	set   *epollSet // nil while no connection is registered
	conns map[uint64]*conn
}

// epollSet is one epoll instance and the eventfd that stops its loop.
type epollSet struct {
	fd   int
	wake int
}

// wakeID is the event data of the eventfd; connection ids start at 1.
const wakeID = 0

// pollEvents: readable or peer hung up, one event per arming.
const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func newPoller(running *sync.WaitGroup, log *zap.Logger) *poller {
	return &poller{running: running, log: log, conns: map[uint64]*conn{}}
}

// add registers c's socket and arms it. On error the caller reads c with a
// goroutine instead.
func (p *poller) add(c *conn) error {
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
	c.pset = p.set
	p.conns[c.id] = c
	if err := c.epollCtl(unix.EPOLL_CTL_ADD); err != nil {
		delete(p.conns, c.id)
		p.stopIfEmptyLocked()
		return fmt.Errorf("epoll add: %w", err)
	}
	return nil
}

// remove unregisters c. The caller guarantees no pollRead of c runs or
// starts, and that c's socket is still open (so its descriptor cannot
// have been reused by another connection).
func (p *poller) remove(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.conns[c.id]; !ok {
		return
	}
	delete(p.conns, c.id)
	_ = c.epollCtl(unix.EPOLL_CTL_DEL)
	p.stopIfEmptyLocked()
}

func (p *poller) stopIfEmptyLocked() {
	if len(p.conns) > 0 || p.set == nil {
		return
	}
	var one [8]byte
	one[0] = 1 // eventfd counters are host-endian; any nonzero value wakes it
	_, _ = unix.Write(p.set.wake, one[:])
	p.set = nil
}

// rearm asks for the next readable event of c. A failure means the socket
// is closing, which its teardown handles.
func (p *poller) rearm(c *conn) { _ = c.epollCtl(unix.EPOLL_CTL_MOD) }

// loop dispatches readable sockets until the set's eventfd fires.
func (p *poller) loop(s *epollSet) {
	defer p.running.Done()
	defer s.close()
	var events [256]unix.EpollEvent
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
			p.mu.Lock()
			c := p.conns[id]
			p.mu.Unlock()
			if c != nil && c.beginRead() {
				go c.pollRead(p)
			}
		}
	}
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

// epollCtl applies op to c's socket in its set. It runs under the socket's
// RawConn.Control, which holds the descriptor open, so op can never reach a
// descriptor number that a newer connection has reused.
func (c *conn) epollCtl(op int) error {
	var opErr error
	err := c.raw.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: pollEvents}
		setEventID(&ev, c.id)
		opErr = unix.EpollCtl(c.pset.fd, op, int(fd), &ev)
	})
	if err != nil {
		return err
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

// readNow reads what the socket holds without waiting: (0, nil) means
// nothing is there yet, (0, io.EOF-like) the peer is gone.
func (c *conn) readNow(buf []byte) (n int, err error) {
	var readErr error
	err = c.raw.Read(func(fd uintptr) bool {
		for {
			n, readErr = unix.Read(int(fd), buf)
			if readErr != unix.EINTR {
				return true // never park: the poller does the waiting
			}
		}
	})
	if err != nil {
		return 0, err
	}
	switch {
	case readErr == unix.EAGAIN:
		return 0, nil
	case readErr != nil:
		return 0, readErr
	case n == 0:
		return 0, errPeerGone
	}
	return n, nil
}

// havePoller: idle connections here are watched by the poller.
const havePoller = true
