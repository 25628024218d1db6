package harness

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Ports come from blocks of portBlockSize in [portLow, 65535] outside the
// kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range): the
// kernel never picks those for an outgoing connection or a :0 listener, so
// the only other users of a port are processes that chose it on purpose.
// The processes that choose them through this package agree on who owns a
// block with a lock file per block (flock, exclusive, held until the
// process exits, which the kernel ends even on SIGKILL), so concurrent test
// binaries and bench runs never hand out the same port. Each port is bound
// once before it is handed out, to skip one a stranger holds, and no port
// is handed out twice by one process. This is HashiCorp's freeport, with
// lock files where freeport holds a listener on each block.
//
// Unlike listening on :0 and passing the port on, nothing else can take a
// reserved port in between, and a process restarted on the same port finds
// it free.
const (
	portLow       = 10000
	portBlockSize = 64
)

// portLockDir holds one lock file per block; the files stay (removing one
// would let two processes lock different files for the same block).
var portLockDir = filepath.Join(os.TempDir(), "pusher-test-ports")

// portAllocator hands out the ports of the blocks it locked.
type portAllocator struct {
	mu     sync.Mutex
	loaded bool       // starts was filled; guarded by mu
	starts []int      // candidate block starts not tried yet, shuffled; guarded by mu
	locks  []*os.File // the blocks held, open for the process's life; guarded by mu
	next   int        // next port of the current block; guarded by mu
	end    int        // end of the current block; guarded by mu
}

// ports is process-wide because a lock belongs to the process: two
// allocators in one process would only lock each other out.
var ports portAllocator

// ReserveAddrs returns n loopback addresses (127.0.0.1:port) on ports no
// other cooperating process will use while this one runs; see portLow.
func ReserveAddrs(n int) ([]string, error) {
	ports.mu.Lock()
	defer ports.mu.Unlock()
	out := make([]string, 0, n)
	for len(out) < n {
		port, err := ports.take()
		if err != nil {
			return nil, err
		}
		out = append(out, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	}
	return out, nil
}

// Addrs is ReserveAddrs for tests: it fails t if no port is left.
func Addrs(t testing.TB, n int) []string {
	t.Helper()
	addrs, err := ReserveAddrs(n)
	if err != nil {
		t.Fatalf("reserve %d ports: %v", n, err)
	}
	return addrs
}

// take returns the next port that binds, locking a new block when the
// current one is used up. Callers hold mu.
func (a *portAllocator) take() (int, error) {
	for {
		for a.next < a.end {
			port := a.next
			a.next++
			if bindable(port) {
				return port, nil
			}
		}
		if err := a.lockBlock(); err != nil {
			return 0, err
		}
	}
}

// lockBlock locks the next free block and makes it current.
func (a *portAllocator) lockBlock() error {
	if !a.loaded {
		starts, err := blockStarts()
		if err != nil {
			return err
		}
		a.starts, a.loaded = starts, true
	}
	if err := os.MkdirAll(portLockDir, 0o700); err != nil {
		return fmt.Errorf("port lock dir: %w", err)
	}
	for len(a.starts) > 0 {
		start := a.starts[0]
		a.starts = a.starts[1:]
		f, err := os.OpenFile(filepath.Join(portLockDir, strconv.Itoa(start)+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return fmt.Errorf("port lock file: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			_ = f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue // another process has it
			}
			return fmt.Errorf("lock ports %d-%d: %w", start, start+portBlockSize-1, err)
		}
		a.locks = append(a.locks, f)
		a.next, a.end = start, start+portBlockSize
		return nil
	}
	return errors.New("every port block outside the ephemeral range is taken")
}

// blockStarts lists the blocks in [portLow, 65535] that stay clear of the
// ephemeral range, in random order so that processes starting together
// rarely try the same block first.
func blockStarts() ([]int, error) {
	lo, hi := ephemeralRange()
	var starts []int
	for s := portLow; s+portBlockSize-1 <= 65535; s += portBlockSize {
		if s+portBlockSize-1 < lo || s > hi {
			starts = append(starts, s)
		}
	}
	if len(starts) == 0 {
		return nil, fmt.Errorf("no port block outside the ephemeral range %d-%d", lo, hi)
	}
	rand.Shuffle(len(starts), func(i, j int) { starts[i], starts[j] = starts[j], starts[i] })
	return starts, nil
}

// ephemeralRange is the kernel's range for automatic ports, or the widest
// default (Linux's low end to the top) when it cannot be read.
func ephemeralRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		f := strings.Fields(string(b))
		if len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && l <= h {
				return l, h
			}
		}
	}
	return 32768, 65535
}

// bindable reports whether a TCP listener can bind 127.0.0.1:port now.
func bindable(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}
