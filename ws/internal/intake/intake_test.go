package intake

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"
)

// Every test Stops what it Watches and waits for the Poller's goroutines.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait of these tests; generous for -race.
const waitTimeout = 5 * time.Second

// modes are the two ways a Poller reads; every test runs in both.
var modes = []struct {
	name       string
	goroutines bool
}{{"epoll", false}, {"goroutine", true}}

// recorder is a Conn that reports every call but Heard on a channel, as
// text, and counts Heard.
type recorder struct {
	heard    atomic.Int64
	events   chan string
	panics   bool // Pinged panics
	messages bool // watched with messages: they are reported
}

func newRecorder() *recorder { return &recorder{events: make(chan string, 64)} }

func (r *recorder) Heard() { r.heard.Add(1) }
func (r *recorder) Pinged(p []byte) {
	if r.panics {
		panic("ping handler failed")
	}
	r.events <- "ping " + string(p)
}
func (r *recorder) Ponged(p []byte) { r.events <- "pong " + string(p) }
func (r *recorder) Message(text bool, p []byte) {
	kind := "binary"
	if text {
		kind = "text"
	}
	r.events <- kind + " " + string(p)
}
func (r *recorder) ClientClosed(code int, reason string) {
	r.events <- fmt.Sprintf("close %d %s", code, reason)
}
func (r *recorder) Violated(code int, reason string) {
	r.events <- fmt.Sprintf("violated %d %s", code, reason)
}
func (r *recorder) Gone(err error) {
	var pe *PanicError
	if errors.As(err, &pe) {
		r.events <- fmt.Sprintf("panic %v", pe.Value)
		return
	}
	r.events <- "gone"
}

// next returns the next event, failing the test if none comes in time.
func (r *recorder) next(tb testing.TB) string {
	tb.Helper()
	select {
	case ev := <-r.events:
		return ev
	case <-time.After(waitTimeout):
		tb.Fatalf("no event within %s", waitTimeout)
		return ""
	}
}

// rig is a Poller, its running WaitGroup, and a real loopback listener.
type rig struct {
	poller  *Poller
	running sync.WaitGroup
	ln      net.Listener
	nextID  uint64
}

func newRig(tb testing.TB, goroutines bool) *rig {
	tb.Helper()
	rg := &rig{}
	rg.poller = NewPoller(&rg.running, zaptest.NewLogger(tb), Config{MaxMessageSize: 64, Goroutines: goroutines})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	rg.ln = ln
	tb.Cleanup(func() {
		_ = ln.Close()
		done := make(chan struct{})
		go func() { rg.running.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			tb.Errorf("the Poller's goroutines still run %s after the last Stop", waitTimeout)
		}
	})
	return rg
}

// watched is one connection: the client's end, and the server's end
// watched by the Poller into r.
type watched struct {
	client net.Conn
	r      Reader
	rec    *recorder
	stop   func() // Stops r, once
}

// watch connects a client and watches the server's end; the connection
// is Stopped in tb.Cleanup unless the test did.
func (rg *rig) watch(tb testing.TB, rec *recorder) *watched {
	tb.Helper()
	client, err := net.DialTimeout("tcp", rg.ln.Addr().String(), waitTimeout)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	server, err := rg.ln.Accept()
	if err != nil {
		tb.Fatalf("accept: %v", err)
	}
	rg.nextID++
	w := &watched{client: client, rec: rec}
	rg.poller.Watch(&w.r, server, rg.nextID, rec, rec.messages)
	w.stop = sync.OnceFunc(func() { rg.poller.Stop(&w.r) })
	tb.Cleanup(func() { w.stop(); _ = client.Close() })
	return w
}

func (w *watched) send(tb testing.TB, b []byte) {
	tb.Helper()
	_ = w.client.SetWriteDeadline(time.Now().Add(waitTimeout))
	if _, err := w.client.Write(b); err != nil {
		tb.Fatalf("client write: %v", err)
	}
}

// TestPollerReports: what a client sends reaches the Conn in order, in
// either mode: pings and pongs with their payloads, then the close; after
// the close nothing more is read.
func TestPollerReports(t *testing.T) {
	key := [4]byte{5, 6, 7, 8}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			rg := newRig(t, mode.goroutines)
			w := rg.watch(t, newRecorder())
			w.send(t, clientFrame(true, opPing, []byte("one"), key))
			if got := w.rec.next(t); got != "ping one" {
				t.Fatalf("event %q, want ping one", got)
			}
			// Several frames in one write, a message among them (ignored).
			var b []byte
			b = append(b, clientFrame(true, opText, []byte("ignored"), key)...)
			b = append(b, clientFrame(true, opPong, []byte("two"), key)...)
			b = append(b, clientFrame(true, opClose, websocket.FormatCloseMessage(4000, "bye"), key)...)
			b = append(b, clientFrame(true, opPing, []byte("after the close"), key)...)
			w.send(t, b)
			for _, want := range []string{"pong two", "close 4000 bye"} {
				if got := w.rec.next(t); got != want {
					t.Fatalf("event %q, want %q", got, want)
				}
			}
			if w.rec.heard.Load() == 0 {
				t.Error("Heard never called")
			}
			w.stop()
			select {
			case ev := <-w.rec.events:
				t.Fatalf("event %q after the close", ev)
			default:
			}
		})
	}
}

// TestPollerEnds: a hang-up, a protocol violation, a message over the
// limit and a panic in a Conn method each end reading with their call.
func TestPollerEnds(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	tests := []struct {
		name   string
		panics bool
		give   func(tb testing.TB, w *watched)
		want   string
	}{
		{name: "hang-up", give: func(_ testing.TB, w *watched) { _ = w.client.Close() }, want: "gone"},
		{name: "unmasked frame", give: func(tb testing.TB, w *watched) { w.send(tb, []byte{0x89, 0x00}) },
			want: fmt.Sprintf("violated %d unmasked client frame", websocket.CloseProtocolError)},
		{name: "message over the limit", give: func(tb testing.TB, w *watched) {
			w.send(tb, clientFrame(true, opBinary, make([]byte, 65), key))
		}, want: fmt.Sprintf("violated %d message too big", websocket.CloseMessageTooBig)},
		{name: "panic in a Conn method", panics: true, give: func(tb testing.TB, w *watched) {
			w.send(tb, clientFrame(true, opPing, nil, key))
		}, want: "panic ping handler failed"},
	}
	for _, mode := range modes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				rg := newRig(t, mode.goroutines)
				rec := newRecorder()
				rec.panics = tt.panics
				w := rg.watch(t, rec)
				tt.give(t, w)
				if got := rec.next(t); got != tt.want {
					t.Fatalf("event %q, want %q", got, tt.want)
				}
			})
		}
	}
}

// TestPollerStop: Stop closes the socket (the client reads EOF) and waits
// for a read in progress; after the last Stop the epoll loop exits (the rig
// waits for it), and a later Watch starts a new one.
func TestPollerStop(t *testing.T) {
	key := [4]byte{9, 9, 9, 9}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			rg := newRig(t, mode.goroutines)
			for round := range 2 {
				var ws []*watched
				for range 3 {
					ws = append(ws, rg.watch(t, newRecorder()))
				}
				for _, w := range ws {
					w.send(t, clientFrame(true, opPing, []byte("hi"), key))
					if got := w.rec.next(t); got != "ping hi" {
						t.Fatalf("round %d: event %q, want ping hi", round, got)
					}
				}
				for _, w := range ws {
					w.stop()
					_ = w.client.SetReadDeadline(time.Now().Add(waitTimeout))
					if _, err := w.client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
						t.Fatalf("round %d: client read after Stop: %v, want EOF", round, err)
					}
				}
				waitRunning(t, &rg.running)
			}
		})
	}
}

// waitRunning waits until no goroutine the Poller started runs.
func waitRunning(tb testing.TB, running *sync.WaitGroup) {
	tb.Helper()
	done := make(chan struct{})
	go func() { running.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		tb.Fatalf("the epoll loop still runs %s after the last Stop", waitTimeout)
	}
}

// TestEveryFrameIsHeardPromptly: frames that arrive one at a time, each
// after the previous one was handled, are each reported at once: no
// readable socket is left unread until a later event.
func TestEveryFrameIsHeardPromptly(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			rg := newRig(t, mode.goroutines)
			rec := newRecorder()
			w := rg.watch(t, rec)
			var slowest time.Duration
			for i := range 2000 {
				payload := []byte(fmt.Sprint(i))
				start := time.Now()
				if _, err := w.client.Write(clientFrame(true, opPing, payload, [4]byte{9, 8, 7, 6})); err != nil {
					t.Fatal(err)
				}
				if got := rec.next(t); got != "ping "+string(payload) {
					t.Fatalf("event %q, want ping %s", got, payload)
				}
				slowest = max(slowest, time.Since(start))
			}
			if slowest > time.Second {
				t.Fatalf("a frame waited %s to be heard", slowest)
			}
			t.Logf("slowest of 2000: %s", slowest)
		})
	}
}

// TestHangUpRightAfterBytesIsHeard: a client that sends a frame and hangs
// up at once (the bytes and the end of the stream can come with one
// event) is reported gone, after its frame, not left half-read.
func TestHangUpRightAfterBytesIsHeard(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			rg := newRig(t, mode.goroutines)
			for i := range 200 {
				rec := newRecorder()
				w := rg.watch(t, rec)
				payload := []byte(fmt.Sprint(i))
				if _, err := w.client.Write(clientFrame(true, opPing, payload, [4]byte{1, 1, 1, 1})); err != nil {
					t.Fatal(err)
				}
				_ = w.client.Close()
				if got := rec.next(t); got != "ping "+string(payload) {
					t.Fatalf("event %q, want the ping", got)
				}
				if got := rec.next(t); got != "gone" {
					t.Fatalf("event %q, want gone", got)
				}
				w.stop()
			}
		})
	}
}
