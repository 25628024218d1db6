package hub

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

// sinkConn accepts and finishes every message at once, so benchmarks
// measure the hub, not a writer.
type sinkConn struct{ n atomic.Int64 }

func (c *sinkConn) Enqueue(m *Message) bool { c.n.Add(1); m.Finish(nil); return true }
func (c *sinkConn) Close(int, string)       {}

type nopReporter struct{}

func (nopReporter) Report(*Message, error) {}

// BenchmarkRoute fans one message out to every connection of a uid.
func BenchmarkRoute(b *testing.B) {
	for _, conns := range []int{1, 10, 1000} {
		b.Run(strconv.Itoa(conns)+"conns", func(b *testing.B) {
			h, _ := New(Config{})
			for range conns {
				_ = h.Add("u", &sinkConn{}, nil)
			}
			m := &Message{Data: make([]byte, 128), Reporter: nopReporter{}}
			b.ReportAllocs()
			for b.Loop() {
				h.Route("u", m)
			}
		})
	}
}

// singleLockHub is the original demo's registry, one map under one lock,
// doing the same bookkeeping and fan-out as Hub. It exists only to answer,
// with numbers, whether sharding pays.
type singleLockHub struct {
	mu    sync.RWMutex
	conns map[string][]Conn
	count int
}

func (h *singleLockHub) Add(uid string, c Conn, _ func(int)) error {
	h.mu.Lock()
	h.conns[uid] = append(h.conns[uid], c)
	h.count++
	h.mu.Unlock()
	return nil
}

func (h *singleLockHub) Remove(uid string, c Conn, _ func(int)) {
	h.mu.Lock()
	list := h.conns[uid]
	for i := range list {
		if list[i] == c {
			list[i] = list[len(list)-1]
			list = list[:len(list)-1]
			h.count--
			break
		}
	}
	if len(list) == 0 {
		delete(h.conns, uid)
	} else {
		h.conns[uid] = list
	}
	h.mu.Unlock()
}

func (h *singleLockHub) Route(uid string, m *Message) int {
	m.pending.Store(1)
	m.reported.Store(false)
	h.mu.RLock()
	n := fanOut(h.conns[uid], m)
	h.mu.RUnlock()
	if n > 0 {
		m.release()
	}
	return n
}

type registry interface {
	Add(uid string, c Conn, added func(int)) error
	Remove(uid string, c Conn, removed func(int))
	Route(uid string, m *Message) int
}

// BenchmarkLookupParallel routes to random uids from every core while one
// operation in a hundred connects and disconnects, as a busy node does.
// Sharded versus one lock is the demo's open question.
func BenchmarkLookupParallel(b *testing.B) {
	const uids = 10000
	names := make([]string, uids)
	for i := range names {
		names[i] = "user-" + strconv.Itoa(i)
	}
	sharded, _ := New(Config{})
	for _, tc := range []struct {
		name string
		reg  registry
	}{
		{"sharded", sharded},
		{"single-lock", &singleLockHub{conns: map[string][]Conn{}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for _, n := range names {
				_ = tc.reg.Add(n, &sinkConn{}, nil)
			}
			var seed atomic.Uint64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				m := &Message{Data: make([]byte, 128), Reporter: nopReporter{}}
				x := seed.Add(0x9E3779B97F4A7C15)
				churn := &sinkConn{}
				for pb.Next() {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					uid := names[x%uids]
					if x%100 == 0 {
						_ = tc.reg.Add(uid, churn, nil)
						tc.reg.Remove(uid, churn, nil)
						continue
					}
					tc.reg.Route(uid, m)
				}
			})
		})
	}
}

// TestRouteDoesNotAllocate pins the dispatch path's promise: routing a
// message to a uid's connections allocates nothing.
func TestRouteDoesNotAllocate(t *testing.T) {
	h, _ := New(Config{})
	for range 3 {
		_ = h.Add("u", &sinkConn{}, nil)
	}
	m := &Message{Data: make([]byte, 128), Reporter: nopReporter{}}
	if allocs := testing.AllocsPerRun(1000, func() { h.Route("u", m) }); allocs != 0 {
		t.Fatalf("Route allocates %.1f times per message, want 0", allocs)
	}
	if allocs := testing.AllocsPerRun(1000, func() { h.Route("offline", m) }); allocs != 0 {
		t.Fatalf("offline Route allocates %.1f times, want 0", allocs)
	}
}
