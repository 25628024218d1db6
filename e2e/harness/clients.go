package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// MsgKey is the id a test payload carries: everything before the first
// '|' (padding follows it in big payloads).
func MsgKey(data []byte) string {
	if i := bytes.IndexByte(data, '|'); i >= 0 {
		return string(data[:i])
	}
	return string(data)
}

// Recorder is what a group of test clients saw: every frame by payload
// id, close codes, and connection state per uid. Safe for concurrent use.
type Recorder struct {
	mu         sync.Mutex
	got        map[string]int  // payload id -> frames; guarded by mu
	frames     int             // guarded by mu
	closeCodes map[int]int     // guarded by mu
	dials      int             // successful handshakes; guarded by mu
	online     map[string]bool // uid -> connected now; guarded by mu
	restartAt  time.Time       // see MarkRestart; guarded by mu
	newConns   bool            // guarded by mu
	firstAfter time.Time       // guarded by mu
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{got: map[string]int{}, closeCodes: map[int]int{}, online: map[string]bool{}}
}

// Add records a frame received on a connection dialed at dialedAt.
func (r *Recorder) Add(data []byte, dialedAt time.Time) {
	now := time.Now()
	k := MsgKey(data)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[k]++
	r.frames++
	if !r.restartAt.IsZero() && r.firstAfter.IsZero() && now.After(r.restartAt) &&
		(!r.newConns || dialedAt.After(r.restartAt)) {
		r.firstAfter = now
	}
}

// MarkRestart starts the recovery clock: Recovery is the time to the first
// frame received after at, on a connection dialed after at when newConns
// (the server process was replaced).
func (r *Recorder) MarkRestart(at time.Time, newConns bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.restartAt, r.newConns, r.firstAfter = at, newConns, time.Time{}
}

// Recovery is the time from MarkRestart to the first frame after it, or
// "n/a" (never marked) or "none" (no frame since).
func (r *Recorder) Recovery() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.restartAt.IsZero():
		return "n/a"
	case r.firstAfter.IsZero():
		return "none"
	}
	return r.firstAfter.Sub(r.restartAt).Round(time.Millisecond).String()
}

// SetOnline records uid connecting (a dial) or disconnecting.
func (r *Recorder) SetOnline(uid string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.dials++
		r.online[uid] = true
	} else {
		delete(r.online, uid)
	}
}

// Closed records how a connection ended: its close code, or 1006.
func (r *Recorder) Closed(err error) {
	var ce *websocket.CloseError
	code := websocket.CloseAbnormalClosure
	if errors.As(err, &ce) {
		code = ce.Code
	}
	r.mu.Lock()
	r.closeCodes[code]++
	r.mu.Unlock()
}

// IsOnline reports whether uid is connected now.
func (r *Recorder) IsOnline(uid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.online[uid]
}

// CountOf returns how many of ids were received.
func (r *Recorder) CountOf(ids map[string]struct{}) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id := range ids {
		if r.got[id] > 0 {
			n++
		}
	}
	return n
}

// OnlineCount is how many uids are connected now.
func (r *Recorder) OnlineCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.online)
}

// CloseCount is how many connections ended with code.
func (r *Recorder) CloseCount(code int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closeCodes[code]
}

// CloseCodes counts the connections' ends by close code.
func (r *Recorder) CloseCodes() map[int]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[int]int, len(r.closeCodes))
	for k, v := range r.closeCodes {
		out[k] = v
	}
	return out
}

// Frames is how many frames were received.
func (r *Recorder) Frames() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frames
}

// Duplicates is how many frames repeated an id received before.
func (r *Recorder) Duplicates() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frames - len(r.got)
}

// Dials is how many handshakes succeeded.
func (r *Recorder) Dials() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dials
}

// Missing returns the ids of want not received yet.
func (r *Recorder) Missing(want map[string]struct{}) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for id := range want {
		if r.got[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// IDs returns every payload id received, once each: for a recorder in
// another process (the benchmark's client processes) to send what it got
// to the one that knows what was published.
func (r *Recorder) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.got))
	for id := range r.got {
		out = append(out, id)
	}
	return out
}

// FrameClock keeps the arrival time of every frame, across clients, to
// measure how long delivery stalled around a fault.
type FrameClock struct {
	mu    sync.Mutex
	times []time.Time // guarded by mu
}

// Tick records a frame's arrival now.
func (f *FrameClock) Tick() {
	now := time.Now()
	f.mu.Lock()
	f.times = append(f.times, now)
	f.mu.Unlock()
}

// MaxGapAfter is the longest time without any frame from `from` to the
// last frame.
func (f *FrameClock) MaxGapAfter(from time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var longest time.Duration
	prev := from
	for _, at := range f.times {
		if at.Before(from) {
			continue
		}
		longest = max(longest, at.Sub(prev))
		prev = at
	}
	return longest
}

// Clients is a group of reconnecting WebSocket clients, one goroutine
// each, stopped and waited for by Stop (t.Cleanup calls it).
type Clients struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Stop ends every client and waits for its goroutine; idempotent.
func (cs *Clients) Stop() {
	cs.cancel()
	cs.wg.Wait()
}

// StartClients runs one reconnecting client per uid against
// ws://httpAddr/ws. Each dials with a bearer token (and header h), reads
// frames forever into rec, and redials after any error with a short
// back-off until stopped.
func StartClients(t testing.TB, httpAddr string, uids []string, h http.Header, rec *Recorder) *Clients {
	t.Helper()
	url := []string{"ws://" + httpAddr + "/ws"}
	return startClients(t, uids, h, rec, nil, func(int) (urls []string, first, step int) { return url, 0, 1 })
}

// StartNodeClients runs one reconnecting client per uid over several
// nodes. Client i first dials urls[first(i)] and, after every dropped
// connection or failed dial, another node in turn, as a round-robin load
// balancer would send it: the clients of one node step through the others
// 1 or 2 nodes at a time, alternately, so those of a node that dies spread
// over the survivors. Every frame goes to rec (and clock, when not nil).
func StartNodeClients(t testing.TB, urls []string, uids []string, first func(i int) int, rec *Recorder, clock *FrameClock) *Clients {
	t.Helper()
	return startClients(t, uids, nil, rec, clock, func(i int) ([]string, int, int) {
		return urls, first(i), 1 + (i/len(urls))%max(len(urls)-1, 1)
	})
}

// startClients starts uids' clients, client i on route(i)'s nodes.
func startClients(t testing.TB, uids []string, h http.Header, rec *Recorder, clock *FrameClock,
	route func(i int) (urls []string, first, step int)) *Clients {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cs := &Clients{cancel: cancel}
	for i, uid := range uids {
		hdr := h.Clone()
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("Authorization", "Bearer "+Token(t, uid, time.Hour))
		urls, first, step := route(i)
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			runClient(ctx, urls, first, step, uid, hdr, rec, clock)
		}()
	}
	t.Cleanup(cs.Stop)
	return cs
}

// runClient is a reconnecting client over several nodes: it dials
// urls[node], and after each connection or failed dial moves step nodes
// on (step must be coprime with len(urls), so every node is visited).
func runClient(ctx context.Context, urls []string, node, step int, uid string, h http.Header, rec *Recorder, clock *FrameClock) {
	dialer := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	for ctx.Err() == nil {
		c, resp, err := dialer.DialContext(ctx, urls[node], h)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		node = (node + step) % len(urls)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(20+rand.IntN(50)) * time.Millisecond): // redial back-off, not a wait for a condition
			}
			continue
		}
		_ = readFrames(ctx, c, uid, rec, clock)
	}
}

// readFrames reads c until it ends or ctx does, recording every frame,
// and returns the error that ended it.
func readFrames(ctx context.Context, c *websocket.Conn, uid string, rec *Recorder, clock *FrameClock) error {
	dialedAt := time.Now()
	rec.SetOnline(uid, true)
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	var err error
	for {
		var data []byte
		if _, data, err = c.ReadMessage(); err != nil {
			if ctx.Err() == nil {
				rec.Closed(err)
			}
			break
		}
		if clock != nil {
			clock.Tick()
		}
		rec.Add(data, dialedAt)
	}
	stop()
	_ = c.Close()
	rec.SetOnline(uid, false)
	return err
}

// DialWS connects uid to ws://httpAddr/ws once with a bearer token, without
// reading; closed in t.Cleanup. pusher registers a connection before it
// answers the upgrade, so once DialWS returns, messages for uid find it.
// It asks for subprotocols, if any (pusher.v1).
func DialWS(t testing.TB, httpAddr, uid string, subprotocols ...string) *websocket.Conn {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + Token(t, uid, time.Hour)}}
	d := *websocket.DefaultDialer
	d.Subprotocols = subprotocols
	c, resp, err := d.Dial("ws://"+httpAddr+"/ws", h)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close() // the upgrade's, or the refusal's, read already
	}
	if err != nil {
		t.Fatalf("dial %s: %v (resp %v)", uid, err, resp)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Read reads one frame with a deadline, failing t on an error.
func Read(t testing.TB, c *websocket.Conn, timeout time.Duration) (int, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	typ, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, data
}

// ReadUntilError reads c's frames into rec until an error, each read
// bounded by idle, and returns the error.
func ReadUntilError(c *websocket.Conn, rec *Recorder, idle time.Duration) error {
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		_, data, err := c.ReadMessage()
		if err != nil {
			return err
		}
		rec.Add(data, time.Time{})
	}
}

// WaitOnline waits until n uids are connected at once.
func (r *Recorder) WaitOnline(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, fmt.Sprintf("%d clients connected", n), func() error {
		if got := r.OnlineCount(); got != n {
			return fmt.Errorf("%d connected", got)
		}
		return nil
	})
}

// AwaitReceived waits up to timeout until every id of want was received,
// and returns Poll's error when some were not: for a bounded wait whose
// shortfall a later check (Account) reports.
func (r *Recorder) AwaitReceived(want map[string]struct{}, timeout time.Duration) error {
	return Poll(context.Background(), timeout, fmt.Sprintf("%d messages received", len(want)), func() error {
		if n := len(r.Missing(want)); n > 0 {
			return fmt.Errorf("%d missing", n)
		}
		return nil
	})
}

// Pump is a client connection read all the time, as a browser reads: its
// reads answer the server's pings, which is how pusher confirms delivery,
// whatever the test is doing meanwhile. Data messages, then the error
// that ended the connection, come out of Next. Set handlers (SetPingHandler
// and the like) before NewPump: the reading starts at once.
type Pump struct {
	*websocket.Conn
	msgs chan pumped
}

type pumped struct {
	typ  int
	data []byte
	err  error
}

// NewPump starts reading c; the reader ends with c.
func NewPump(c *websocket.Conn) *Pump {
	p := &Pump{Conn: c, msgs: make(chan pumped, 4096)}
	go func() {
		for {
			typ, data, err := c.ReadMessage()
			p.msgs <- pumped{typ, data, err}
			if err != nil {
				return
			}
		}
	}()
	return p
}

// Next returns the next message, or the error that ended the connection
// (every call after the end returns it too), within timeout.
func (p *Pump) Next(timeout time.Duration) (int, []byte, error) {
	select {
	case m := <-p.msgs:
		if m.err != nil {
			p.msgs <- m
		}
		return m.typ, m.data, m.err
	case <-time.After(timeout):
		return 0, nil, fmt.Errorf("no message within %s", timeout)
	}
}
