package main

// Helpers for the fault-tolerance tests in faults_test.go: pusher and
// nats-server built and run as subprocesses (so they can be SIGKILLed and
// restarted on the same ports and data), reconnecting WebSocket clients, a
// publisher that retries until JetStream acks, and the accounting that says
// where every acked message ended up.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/wire"
)

// goBuild runs `go build -o dir/name args...` with the go on PATH, in the
// package directory, and returns the binary's path.
func goBuild(t testing.TB, name string, args ...string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go on PATH: %v", err)
	}
	out := filepath.Join(t.TempDir(), name)
	build := func(extra ...string) ([]byte, error) {
		a := append([]string{"build"}, extra...)
		a = append(a, "-o", out)
		a = append(a, args...)
		cmd := exec.Command(goBin, a...)
		return cmd.CombinedOutput()
	}
	msg, err := build()
	if err != nil && bytes.Contains(msg, []byte("go mod")) {
		// The package is required by go.mod but its build list is not
		// complete in go.sum: resolve it with -mod=mod against a copy of
		// go.mod and go.sum, so the module's own files never change.
		dir := t.TempDir()
		for _, f := range []string{"go.mod", "go.sum"} {
			b, rerr := os.ReadFile(f)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if werr := os.WriteFile(filepath.Join(dir, f), b, 0o600); werr != nil {
				t.Fatal(werr)
			}
		}
		msg, err = build("-mod=mod", "-modfile="+filepath.Join(dir, "go.mod"))
	}
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	return out
}

// buildPusher builds this module's pusher binary into a temp dir (without
// -race; the build cache makes every build after the first fast).
func buildPusher(t testing.TB) string {
	t.Helper()
	return goBuild(t, "pusher", ".")
}

// buildNATSServer builds nats-server from the version go.mod requires.
func buildNATSServer(t testing.TB) string {
	t.Helper()
	return goBuild(t, "nats-server", "github.com/nats-io/nats-server/v2")
}

// freeAddrs returns n distinct 127.0.0.1:port addresses that were free a
// moment ago. They are fixed so a restarted process comes back on the same
// ones.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var lns []net.Listener
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	return addrs
}

// lockedBuffer is a bytes.Buffer safe for the exec copy goroutine and the
// test reading it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is one subprocess: stdout goes to logs (pusher's JSON lines), stderr
// to a buffer. It is killed and reaped in t.Cleanup if still running.
type proc struct {
	name   string
	cmd    *exec.Cmd
	logs   *logSink
	stderr *lockedBuffer
	done   chan struct{} // closed once the process has exited and been reaped
	state  *os.ProcessState
}

// procEnv is the test process's environment without any PUSHER_* or
// JWT_SECRET, plus env.
func procEnv(env map[string]string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PUSHER_") || k == "JWT_SECRET" {
			continue
		}
		out = append(out, kv)
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// startProc starts bin with args and exactly procEnv(env).
func startProc(t testing.TB, name, bin string, args []string, env map[string]string) *proc {
	t.Helper()
	p := &proc{name: name, logs: newLogSink(), stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = procEnv(env)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait() // a non-zero exit is read from state
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// signal sends sig to the process by its PID.
func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to timeout for the process to exit and returns its exit
// code (-1 when killed by a signal).
func (p *proc) waitExit(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.state.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s\nstderr:\n%s", p.name, timeout, p.stderr)
		return 0
	}
}

// kill SIGKILLs the process and waits until it is reaped, so its ports and
// files are free again.
func (p *proc) kill(t testing.TB) {
	t.Helper()
	if p.exited() {
		t.Fatalf("%s had already exited: %v\nstderr:\n%s", p.name, p.state, p.stderr)
	}
	p.signal(t, syscall.SIGKILL)
	p.waitExit(t, 10*time.Second)
}

// pusherEnv is the environment of a subprocess pusher with embedded NATS
// on fixed addresses and dataDir, quick redelivery after a crash, and
// extra on top.
func pusherEnv(httpAddr, natsAddr, dataDir string, extra map[string]string) map[string]string {
	env := map[string]string{
		"JWT_SECRET":           testSecret,
		"PUSHER_HTTP_ADDR":     httpAddr,
		"PUSHER_NATS_LISTEN":   natsAddr,
		"PUSHER_DATA_DIR":      dataDir,
		"PUSHER_ACK_WAIT":      "2s",
		"PUSHER_BACKOFF":       "100ms,200ms",
		"PUSHER_LOG_DELIVERED": "false",
		"PUSHER_UI":            "false",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// startPusherProc runs the pusher binary with env and waits for its
// pusher.ready line.
func startPusherProc(t testing.TB, bin string, env map[string]string) *proc {
	t.Helper()
	p := startProc(t, "pusher", bin, nil, env)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if len(p.logs.find(evReady, nil)) > 0 {
			return p
		}
		if p.exited() {
			t.Fatalf("pusher exited before ready (%v)\nstdout:\n%s\nstderr:\n%s", p.state, p.logs, p.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pusher not ready within 30s\nstdout:\n%s\nstderr:\n%s", p.logs, p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startNATSServerProc runs nats-server with JetStream on addr and storeDir
// and waits until JetStream answers.
func startNATSServerProc(t testing.TB, bin, addr, storeDir string) *proc {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "nats-server", bin, []string{"-js", "-sd", storeDir, "-a", host, "-p", port}, nil)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if jetStreamAnswers("nats://" + addr) {
			return p
		}
		if p.exited() {
			t.Fatalf("nats-server exited (%v)\n%s", p.state, p.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server on %s not ready within 30s\n%s", addr, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func jetStreamAnswers(url string) bool {
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return false
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err == nil
}

// httpGet fetches url without keep-alive (so no idle connection outlives
// the call on either side) and returns the status and body.
func httpGet(url string) (int, string, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// metric returns the value of the sample whose name and labels are exactly
// series (e.g. `pusher_connects_total{result="ok"}`) from httpAddr's
// /metrics; a missing series is 0.
func metric(t testing.TB, httpAddr, series string) float64 {
	t.Helper()
	status, body, err := httpGet("http://" + httpAddr + "/metrics")
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", status, err)
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", sc.Text(), err)
			}
			return v
		}
	}
	return 0
}

// msgKey is the id a test payload carries: everything before the first
// '|' (padding follows it in big payloads).
func msgKey(data []byte) string {
	if i := bytes.IndexByte(data, '|'); i >= 0 {
		return string(data[:i])
	}
	return string(data)
}

// recorder is what a group of test clients saw: every frame by payload
// id, close codes, and connection state per uid.
type recorder struct {
	mu         sync.Mutex
	got        map[string]int // payload id -> frames
	frames     int
	closeCodes map[int]int
	dials      int             // successful handshakes
	online     map[string]bool // uid -> connected now
	restartAt  time.Time       // see markRestart
	newConns   bool
	firstAfter time.Time
}

func newRecorder() *recorder {
	return &recorder{got: map[string]int{}, closeCodes: map[int]int{}, online: map[string]bool{}}
}

func (r *recorder) add(data []byte, dialedAt time.Time) {
	now := time.Now()
	k := msgKey(data)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[k]++
	r.frames++
	if !r.restartAt.IsZero() && r.firstAfter.IsZero() && now.After(r.restartAt) &&
		(!r.newConns || dialedAt.After(r.restartAt)) {
		r.firstAfter = now
	}
}

// markRestart starts the recovery clock: recovery() is the time to the
// first frame received after at, on a connection dialed after at when
// newConns (the server process was replaced).
func (r *recorder) markRestart(at time.Time, newConns bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.restartAt, r.newConns, r.firstAfter = at, newConns, time.Time{}
}

func (r *recorder) recovery() string {
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

func (r *recorder) setOnline(uid string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if on {
		r.dials++
		r.online[uid] = true
	} else {
		delete(r.online, uid)
	}
}

func (r *recorder) closed(err error) {
	var ce *websocket.CloseError
	code := websocket.CloseAbnormalClosure
	if errors.As(err, &ce) {
		code = ce.Code
	}
	r.mu.Lock()
	r.closeCodes[code]++
	r.mu.Unlock()
}

func (r *recorder) isOnline(uid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.online[uid]
}

// countOf returns how many of ids were received.
func (r *recorder) countOf(ids map[string]struct{}) int {
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

// anyOf reports whether any of ids was received.
func (r *recorder) anyOf(ids map[string]struct{}) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range ids {
		if r.got[id] > 0 {
			return true
		}
	}
	return false
}

func (r *recorder) onlineCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.online)
}

func (r *recorder) closeCount(code int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closeCodes[code]
}

func (r *recorder) closeCodesSeen() map[int]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[int]int, len(r.closeCodes))
	for k, v := range r.closeCodes {
		out[k] = v
	}
	return out
}

func (r *recorder) frameCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frames
}

func (r *recorder) dialCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dials
}

// missing returns the ids of want not received yet.
func (r *recorder) missing(want map[string]struct{}) []string {
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

// clients is a group of reconnecting WebSocket clients, one goroutine
// each, stopped (and waited for) in t.Cleanup or by stop.
type clients struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startClients runs one reconnecting client per uid against
// ws://httpAddr/ws. Each dials with a bearer token (and header h), reads
// frames forever into rec, and redials after any error with a short
// back-off until stopped.
func startClients(t testing.TB, httpAddr string, uids []string, h http.Header, rec *recorder) *clients {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cs := &clients{cancel: cancel}
	url := "ws://" + httpAddr + "/ws"
	for _, uid := range uids {
		hdr := h.Clone()
		if hdr == nil {
			hdr = http.Header{}
		}
		hdr.Set("Authorization", "Bearer "+token(t, uid, time.Hour))
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			runClient(ctx, url, uid, hdr, rec)
		}()
	}
	t.Cleanup(cs.stop)
	return cs
}

// dialWS connects uid to ws://httpAddr/ws once, without reading; closed in
// t.Cleanup.
func dialWS(t testing.TB, httpAddr, uid string) *websocket.Conn {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token(t, uid, time.Hour)}}
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+httpAddr+"/ws", h)
	if err != nil {
		t.Fatalf("dial %s: %v (resp %v)", uid, err, resp)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (cs *clients) stop() {
	cs.cancel()
	cs.wg.Wait()
}

// runRotatingClient is a reconnecting client over several nodes: it dials
// urls[node], and after each connection or failed dial moves step nodes
// on (step must be coprime with len(urls), so every node is visited).
func runRotatingClient(ctx context.Context, urls []string, node, step int, uid string, h http.Header, rec *recorder, clock *frameClock) {
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
			case <-time.After(time.Duration(20+rand.IntN(50)) * time.Millisecond):
			}
			continue
		}
		dialedAt := time.Now()
		rec.setOnline(uid, true)
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		for {
			_, data, err := c.ReadMessage()
			if err != nil {
				if ctx.Err() == nil {
					rec.closed(err)
				}
				break
			}
			if clock != nil {
				clock.tick()
			}
			rec.add(data, dialedAt)
		}
		stop()
		_ = c.Close()
		rec.setOnline(uid, false)
	}
}

// runClient is runRotatingClient on one node.
func runClient(ctx context.Context, url, uid string, h http.Header, rec *recorder) {
	runRotatingClient(ctx, []string{url}, 0, 1, uid, h, rec, nil)
}

// pubMsg is one message the publisher must get acked.
type pubMsg struct {
	id      string // Nats-Msg-Id and payload key
	subject string
	data    []byte
}

// textMsgs builds n messages "m-<i>" spread over uids round-robin.
func textMsgs(n int, uids []string) []pubMsg {
	out := make([]pubMsg, n)
	for i := range out {
		id := "m-" + strconv.Itoa(i)
		out[i] = pubMsg{id: id, subject: wire.PushSubject(uids[i%len(uids)]), data: []byte(id)}
	}
	return out
}

// publisher publishes messages asynchronously with Nats-Msg-Id set and
// republishes each until JetStream acks it (errors, ack timeouts, NATS
// down), so retries de-duplicate. It survives server restarts.
type publisher struct {
	msgs     []pubMsg
	nc       *nats.Conn
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	allAcked chan struct{}
	acked    atomic.Int64
	retries  atomic.Int64

	mu       sync.Mutex
	ackedIDs map[string]struct{}
}

// startPublisher connects to url and starts publishing msgs; it gives up
// after timeout. It is stopped in t.Cleanup.
func startPublisher(t testing.TB, url string, msgs []pubMsg, timeout time.Duration) *publisher {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.Name("fault-test-publisher"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(64<<20),
		// Write errors while a server is killed are expected here; the
		// default handler would print each to stderr.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	)
	if err != nil {
		t.Fatalf("publisher connect: %v", err)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(512),
		jetstream.WithPublishAsyncTimeout(3*time.Second),
	)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	p := &publisher{
		msgs: msgs, nc: nc, cancel: cancel,
		allAcked: make(chan struct{}),
		ackedIDs: make(map[string]struct{}, len(msgs)),
	}
	// Every index is in exactly one place (todo, being published, futs,
	// being awaited), so neither channel send ever blocks.
	todo := make(chan int, len(msgs))
	for i := range msgs {
		todo <- i
	}
	type inflight struct {
		i   int
		fut jetstream.PubAckFuture
	}
	futs := make(chan inflight, len(msgs))
	p.wg.Add(2)
	go func() { // publish
		defer p.wg.Done()
		for {
			var i int
			select {
			case <-ctx.Done():
				return
			case <-p.allAcked:
				return
			case i = <-todo:
			}
			m := msgs[i]
			for {
				fut, err := js.PublishAsync(m.subject, m.data, jetstream.WithMsgID(m.id))
				if err == nil {
					futs <- inflight{i, fut}
					break
				}
				p.retries.Add(1)
				if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
					select { // not stalled: do not spin
					case <-ctx.Done():
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
				if ctx.Err() != nil {
					return
				}
			}
		}
	}()
	go func() { // await acks in publish order
		defer p.wg.Done()
		for {
			var f inflight
			select {
			case <-ctx.Done():
				return
			case f = <-futs:
			}
			select {
			case <-f.fut.Ok():
				p.mu.Lock()
				p.ackedIDs[msgs[f.i].id] = struct{}{}
				n := len(p.ackedIDs)
				p.mu.Unlock()
				p.acked.Store(int64(n))
				if n == len(msgs) {
					close(p.allAcked)
					return
				}
			case <-f.fut.Err():
				p.retries.Add(1)
				todo <- f.i
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(p.close)
	return p
}

// close stops publishing and closes the connection; idempotent.
func (p *publisher) close() {
	p.cancel()
	p.wg.Wait()
	p.nc.Close()
}

// wait blocks until every message is acked or the publisher gives up, and
// returns the acked ids; it fails the test if some were never acked.
func (p *publisher) wait(t testing.TB) map[string]struct{} {
	t.Helper()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ackedIDs) != len(p.msgs) {
		t.Errorf("publisher: %d of %d messages acked before its deadline (%d retries)", len(p.ackedIDs), len(p.msgs), p.retries.Load())
	}
	out := make(map[string]struct{}, len(p.ackedIDs))
	for k := range p.ackedIDs {
		out[k] = struct{}{}
	}
	return out
}

// waitAcked polls until at least n messages are acked.
func (p *publisher) waitAcked(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d publishes acked", n), func() bool { return p.acked.Load() >= n })
}

// deadLetter is what the accounting needs of one dead letter.
type deadLetter struct {
	uid, reason string
}

// dlqIDs returns the dead letters in PUSH_DLQ by payload id.
func dlqIDs(ctx context.Context, js jetstream.JetStream) (map[string]deadLetter, error) {
	out := map[string]deadLetter{}
	err := consumer.NewDLQ(js).Each(ctx, "", func(dl consumer.DeadLetter, _ error) error {
		out[msgKey(dl.Data)] = deadLetter{uid: dl.UID, reason: dl.Reason}
		return nil
	})
	return out, err
}

// figures is the outcome of one run's accounting.
type figures struct {
	published, received, dlq, lost, duplicates int
	// stranded are dead letters with reason offline of users who are
	// connected: replay-on-connect should have delivered them.
	stranded int
}

// account waits (up to timeout) until every acked id was received by a
// client of rec or sits in PUSH_DLQ (and not as an offline dead letter of a
// user who is connected, which replay-on-connect must deliver), then logs
// one FIGURES line and fails the test if any acked message is lost or
// stranded. NATS is reached at natsURL.
func account(t testing.TB, name, natsURL string, acked map[string]struct{}, rec *recorder, timeout time.Duration) figures {
	t.Helper()
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("accounting connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// scan reads PUSH_DLQ in short tries: a JetStream request sent while a
	// leader is being elected gets no answer, and one long try would wait
	// out the whole outage.
	scan := func() (map[string]deadLetter, error) {
		var err error
		for range 10 {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			var dlq map[string]deadLetter
			dlq, err = dlqIDs(ctx, js)
			cancel()
			if err == nil {
				return dlq, nil
			}
		}
		return nil, err
	}
	// settled: a dead letter that is not waiting for a replay.
	settled := func(dl deadLetter, ok bool) bool {
		return ok && (dl.reason != wire.ReasonOffline || !rec.isOnline(dl.uid))
	}
	deadline := time.Now().Add(timeout)
	var lastScan time.Time
	for time.Now().Before(deadline) {
		missing := rec.missing(acked)
		if len(missing) == 0 {
			break
		}
		if time.Since(lastScan) >= time.Second {
			lastScan = time.Now()
			if dlq, err := scan(); err == nil && func() bool {
				for _, id := range missing {
					if dl, ok := dlq[id]; !settled(dl, ok) {
						return false
					}
				}
				return true
			}() {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	dlq, err := scan()
	if err != nil {
		t.Fatalf("read PUSH_DLQ: %v", err)
	}
	f := figures{published: len(acked)}
	var lost, stranded []string
	for _, id := range rec.missing(acked) {
		dl, ok := dlq[id]
		switch {
		case !ok:
			lost = append(lost, id)
		case !settled(dl, ok):
			stranded = append(stranded, id)
			f.dlq++
		default:
			f.dlq++
		}
	}
	f.lost, f.stranded = len(lost), len(stranded)
	f.received = f.published - f.lost - f.dlq
	rec.mu.Lock()
	f.duplicates = rec.frames - len(rec.got)
	rec.mu.Unlock()
	t.Logf("FIGURES %s: published=%d received=%d dlq=%d lost=%d duplicates=%d recovery=%s",
		name, f.published, f.received, f.dlq, f.lost, f.duplicates, rec.recovery())
	if f.lost > 0 {
		sort.Strings(lost)
		t.Errorf("%d acked messages neither received nor in PUSH_DLQ after %s, e.g. %v", f.lost, timeout, lost[:min(10, len(lost))])
	}
	if f.stranded > 0 {
		sort.Strings(stranded)
		t.Errorf("%d offline dead letters of connected users not replayed after %s, e.g. %v", f.stranded, timeout, stranded[:min(10, len(stranded))])
	}
	return f
}

// waitSettled polls until consumer pusher has nothing pending or awaiting
// ack, and the pusher at httpAddr holds no message in flight: every
// delivery was acked, nacked to completion or dead-lettered.
func waitSettled(t testing.TB, natsURL, httpAddr string) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var info *jetstream.ConsumerInfo
	var inflight float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := js.Consumer(ctx, wire.StreamName, wire.DurableName)
		if err == nil {
			info, err = c.Info(ctx)
		}
		cancel()
		inflight = metric(t, httpAddr, "pusher_inflight_messages")
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && inflight == 0 {
			return
		}
		if time.Now().After(deadline) {
			if info != nil {
				t.Errorf("not settled after 30s: consumer num_pending=%d num_ack_pending=%d redelivered=%d; pusher_inflight_messages=%v (%v)",
					info.NumPending, info.NumAckPending, info.NumRedelivered, inflight, err)
			} else {
				t.Errorf("not settled after 30s: %v", err)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
