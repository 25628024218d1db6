package hub

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testConn is a hub.Conn whose writes succeed or fail as the test says.
// It writes synchronously from a goroutine per message, like a pump.
type testConn struct {
	accept  bool  // Enqueue's answer
	fail    error // outcome of every write
	mu      sync.Mutex
	got     [][]byte
	closed  atomic.Int32
	code    atomic.Int32
	pending sync.WaitGroup
}

func (c *testConn) Enqueue(m *Message) bool {
	if !c.accept {
		return false
	}
	c.pending.Add(1)
	go func() {
		defer c.pending.Done()
		c.mu.Lock()
		c.got = append(c.got, m.Data)
		c.mu.Unlock()
		m.Finish(c.fail)
	}()
	return true
}

func (c *testConn) Close(code int, _ string) {
	c.closed.Add(1)
	c.code.Store(int32(code))
}

// reports records every Report call.
type reports struct {
	mu   sync.Mutex
	errs []error
	done chan struct{}
}

func newReports() *reports { return &reports{done: make(chan struct{}, 100)} }

func (r *reports) Report(_ *Message, err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.done <- struct{}{}
}

func (r *reports) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		t.Fatal("no report")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errs[len(r.errs)-1]
}

func mustNew(t *testing.T, cfg Config) *Hub {
	t.Helper()
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestRouteOutcomes(t *testing.T) {
	errWrite := errors.New("write failed")
	tests := []struct {
		name    string
		give    []*testConn
		wantN   int
		wantErr error // nil: success reported
		silent  bool  // offline: no report at all
	}{
		{name: "offline", give: nil, wantN: 0, silent: true},
		{name: "one ok", give: []*testConn{{accept: true}}, wantN: 1},
		{name: "one of two fails", give: []*testConn{{accept: true, fail: errWrite}, {accept: true}}, wantN: 2},
		{name: "all fail", give: []*testConn{{accept: true, fail: errWrite}, {accept: true, fail: errWrite}}, wantN: 2, wantErr: errWrite},
		{name: "queue full", give: []*testConn{{accept: false}}, wantN: 1, wantErr: ErrQueueFull},
		{name: "full and ok", give: []*testConn{{accept: false}, {accept: true}}, wantN: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := mustNew(t, Config{})
			for _, c := range tt.give {
				if err := h.Add("u1", c, nil); err != nil {
					t.Fatal(err)
				}
			}
			r := newReports()
			m := &Message{Data: []byte("hi"), Reporter: r}
			if n := h.Route("u1", m); n != tt.wantN {
				t.Fatalf("Route = %d, want %d", n, tt.wantN)
			}
			for _, c := range tt.give {
				c.pending.Wait()
			}
			if tt.silent {
				if len(r.errs) != 0 {
					t.Fatalf("offline route reported %v", r.errs)
				}
				return
			}
			if err := r.wait(t); !errors.Is(err, tt.wantErr) && err != tt.wantErr {
				t.Fatalf("reported %v, want %v", err, tt.wantErr)
			}
			if len(r.errs) != 1 {
				t.Fatalf("reported %d times, want exactly once", len(r.errs))
			}
			if m.Pending() != 0 {
				t.Fatalf("pending = %d after all finished", m.Pending())
			}
		})
	}
}

func TestRouteOnlyToUID(t *testing.T) {
	h := mustNew(t, Config{})
	a, b := &testConn{accept: true}, &testConn{accept: true}
	_ = h.Add("a", a, nil)
	_ = h.Add("b", b, nil)
	r := newReports()
	h.Route("a", &Message{Data: []byte("x"), Reporter: r})
	r.wait(t)
	a.pending.Wait()
	if len(a.got) != 1 || len(b.got) != 0 {
		t.Fatalf("a got %d, b got %d; want 1, 0", len(a.got), len(b.got))
	}
}

func TestLimits(t *testing.T) {
	h := mustNew(t, Config{MaxConns: 3, MaxConnsPerUID: 2})
	c := func() Conn { return &testConn{accept: true} }
	if err := h.Add("a", c(), nil); err != nil {
		t.Fatal(err)
	}
	x := c()
	if err := h.Add("a", x, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Add("a", c(), nil); !errors.Is(err, ErrUIDFull) {
		t.Fatalf("third conn for a: %v, want ErrUIDFull", err)
	}
	if err := h.Add("b", c(), nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Add("c", c(), nil); !errors.Is(err, ErrNodeFull) {
		t.Fatalf("fourth conn: %v, want ErrNodeFull", err)
	}
	h.Remove("a", x, nil)
	h.Remove("a", x, nil) // unknown conn: no effect
	if got := h.Len(); got != 2 {
		t.Fatalf("Len = %d, want 2", got)
	}
	if err := h.Add("c", c(), nil); err != nil {
		t.Fatalf("after a remove: %v", err)
	}
	if _, err := New(Config{MaxConns: -1}); err == nil {
		t.Fatal("negative limit accepted")
	}
}

func TestOnlineAndKick(t *testing.T) {
	h := mustNew(t, Config{})
	a1, a2 := &testConn{accept: true}, &testConn{accept: true}
	if h.Online("a") {
		t.Fatal("online before add")
	}
	_ = h.Add("a", a1, nil)
	_ = h.Add("a", a2, nil)
	if !h.Online("a") {
		t.Fatal("not online after add")
	}
	if n := h.Kick("a", 4001, "kicked"); n != 2 {
		t.Fatalf("Kick = %d, want 2", n)
	}
	if a1.code.Load() != 4001 || a2.code.Load() != 4001 {
		t.Fatal("kick did not close both with 4001")
	}
	h.Remove("a", a1, nil)
	h.Remove("a", a2, nil)
	if h.Online("a") {
		t.Fatal("online after remove")
	}
}

func TestShutdown(t *testing.T) {
	h := mustNew(t, Config{})
	conns := []*testConn{{accept: true}, {accept: true}, {accept: true}}
	for i, c := range conns {
		_ = h.Add(string(rune('a'+i)), c, nil)
	}
	done := make(chan bool)
	go func() { done <- h.Shutdown(nil, 1001, "bye") }()
	// Shutdown waits until every conn is removed, as the ws handler does
	// after its close.
	for i, c := range conns {
		deadline := time.Now().Add(5 * time.Second)
		for c.closed.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("conn not closed")
			}
			time.Sleep(time.Millisecond)
		}
		h.Remove(string(rune('a'+i)), c, nil)
	}
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("Shutdown returned false")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after all conns left")
	}
	if err := h.Add("z", &testConn{}, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after shutdown: %v, want ErrClosed", err)
	}
	if !h.Shutdown(nil, 1001, "bye") {
		t.Fatal("second Shutdown should return at once with true")
	}
	stop := make(chan struct{})
	close(stop)
	h2 := mustNew(t, Config{})
	_ = h2.Add("a", &testConn{accept: true}, nil)
	if h2.Shutdown(stop, 1001, "bye") {
		t.Fatal("Shutdown with expired deadline and a live conn returned true")
	}
}

// TestConcurrentRouteAndChurn runs Route against Add/Remove of the same
// uids; with -race it checks the lock contract, and it checks that every
// route that found a connection reported exactly once.
func TestConcurrentRouteAndChurn(t *testing.T) {
	h := mustNew(t, Config{})
	const uids, rounds = 8, 2000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range uids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uid := string(rune('a' + i))
			for {
				select {
				case <-stop:
					return
				default:
				}
				c := &testConn{accept: true}
				_ = h.Add(uid, c, nil)
				h.Remove(uid, c, nil)
				c.pending.Wait()
			}
		}()
	}
	var routed, reported atomic.Int64
	var rwg sync.WaitGroup
	counter := reporterFunc(func(*Message, error) { reported.Add(1); rwg.Done() })
	for i := range rounds {
		m := &Message{Data: []byte("x"), Reporter: counter}
		rwg.Add(1)
		if h.Route(string(rune('a'+i%uids)), m) > 0 {
			routed.Add(1)
		} else {
			rwg.Done()
		}
	}
	rwg.Wait()
	close(stop)
	wg.Wait()
	if routed.Load() != reported.Load() {
		t.Fatalf("routed %d, reported %d", routed.Load(), reported.Load())
	}
}

type reporterFunc func(*Message, error)

func (f reporterFunc) Report(m *Message, err error) { f(m, err) }

func TestOnPresenceFiresOnFirstAndLast(t *testing.T) {
	var calls []string
	h := mustNew(t, Config{OnPresence: func(uid string) { calls = append(calls, uid) }})
	a1, a2 := &testConn{accept: true}, &testConn{accept: true}
	_ = h.Add("a", a1, nil) // first: call
	_ = h.Add("a", a2, nil) // second: none
	h.Remove("a", a1, nil)  // one left: none
	h.Remove("a", a2, nil)  // last: call
	h.Remove("a", a2, nil)  // unknown: none
	if len(calls) != 2 || calls[0] != "a" || calls[1] != "a" {
		t.Fatalf("OnPresence calls %v, want [a a]", calls)
	}
}

func TestEachUID(t *testing.T) {
	h := mustNew(t, Config{})
	want := map[string]bool{}
	for i := range 1000 {
		uid := "u" + string(rune('a'+i%26)) + string(rune('0'+i%10)) + string(rune(i))
		_ = h.Add(uid, &testConn{accept: true}, nil)
		want[uid] = true
	}
	got := map[string]bool{}
	h.EachUID(func(uid string) { got[uid] = true })
	if len(got) != len(want) {
		t.Fatalf("EachUID saw %d uids, want %d", len(got), len(want))
	}
	for uid := range want {
		if !got[uid] {
			t.Fatalf("EachUID missed %q", uid)
		}
	}
}

// TestAddRemoveReportCountsInOrder: the counts Add and Remove report for
// one uid, from many goroutines at once, form the history of the changes:
// each add one more than the report before it, each remove one less. A
// presence event built from them never says "gone" after a later "here".
func TestAddRemoveReportCountsInOrder(t *testing.T) {
	h, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // guards history; taken inside the hub's lock, as a sink's queue would be
	var history []int // +n for an add reporting n, -n-1 for a remove reporting n
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				c := &testConn{accept: true}
				if err := h.Add("u", c, func(n int) { mu.Lock(); history = append(history, n); mu.Unlock() }); err != nil {
					t.Errorf("goroutine %d add %d: %v", g, i, err)
					return
				}
				h.Remove("u", c, func(n int) { mu.Lock(); history = append(history, -n-1); mu.Unlock() })
			}
		}()
	}
	wg.Wait()
	if len(history) != 2*8*200 {
		t.Fatalf("%d reports, want %d", len(history), 2*8*200)
	}
	count := 0
	for i, r := range history {
		switch {
		case r > 0 && r == count+1:
			count++
		case r < 0 && -r-1 == count-1:
			count--
		default:
			t.Fatalf("report %d (%d) does not follow count %d: %v", i, r, count, history[max(0, i-5):i+1])
		}
	}
	if count != 0 || h.Count("u") != 0 {
		t.Fatalf("count %d at the end (hub %d), want 0", count, h.Count("u"))
	}
}
