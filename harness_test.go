package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/logging"
	"github.com/pusher-io/pusher/server"
)

const testSecret = "test-secret-0123456789abcdef0123456789"

// logSink collects pusher's JSON log lines and lets tests wait for one.
type logSink struct {
	mu      sync.Mutex
	pending [][]byte         // lines not decoded yet; find decodes them
	lines   []map[string]any // decoded lines
	raw     bytes.Buffer
	part    []byte
	cond    chan struct{} // closed and replaced on every new line
}

func newLogSink() *logSink { return &logSink{cond: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw.Write(p)
	s.part = append(s.part, p...)
	for {
		i := bytes.IndexByte(s.part, '\n')
		if i < 0 {
			break
		}
		s.pending = append(s.pending, append([]byte(nil), s.part[:i]...))
		s.part = s.part[i+1:]
	}
	close(s.cond)
	s.cond = make(chan struct{})
	return len(p), nil
}

// find returns log lines whose msg is event and whose fields match.
func (s *logSink) find(event string, match map[string]any) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, line := range s.pending {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			m = map[string]any{"msg": "!notjson", "line": string(line)}
		}
		s.lines = append(s.lines, m)
	}
	s.pending = s.pending[:0]
	var out []map[string]any
	for _, l := range s.lines {
		if l["msg"] != event {
			continue
		}
		ok := true
		for k, v := range match {
			if fmt.Sprint(l[k]) != fmt.Sprint(v) {
				ok = false
			}
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// wait blocks until a line with msg event (and fields) is logged.
func (s *logSink) wait(t testing.TB, timeout time.Duration, event string, match map[string]any) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		ch := s.cond
		s.mu.Unlock()
		if got := s.find(event, match); len(got) > 0 {
			return got[0]
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %s %v log line within %s", event, match, timeout)
		}
	}
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

// pusherRun is one pusher started through run(), as main would.
type pusherRun struct {
	t        testing.TB
	httpAddr string
	natsURL  string
	logs     *logSink
	cancel   context.CancelFunc
	done     chan error
	env      map[string]string
}

// startPusher runs serve with embedded NATS on random ports and a temp data
// dir; env adds or overrides variables. It is stopped in t.Cleanup.
func startPusher(t testing.TB, env map[string]string) *pusherRun {
	t.Helper()
	full := map[string]string{
		"JWT_SECRET":         testSecret,
		"PUSHER_HTTP_ADDR":   "127.0.0.1:0",
		"PUSHER_NATS_LISTEN": "127.0.0.1:-1",
		"PUSHER_DATA_DIR":    t.TempDir(),
		"PUSHER_LOG_LEVEL":   "info",
	}
	for k, v := range env {
		full[k] = v
	}
	p := &pusherRun{t: t, logs: newLogSink(), done: make(chan error, 1), env: full}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() {
		p.done <- run(ctx, nil, func(k string) string { return full[k] }, p.logs, io.Discard)
	}()
	t.Cleanup(func() { p.stop() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if l := p.logs.find(evReady, nil); len(l) > 0 {
			p.httpAddr = l[0]["http_addr"].(string)
			p.natsURL = l[0]["nats_url"].(string)
			break
		}
		select {
		case err := <-p.done:
			close(p.done)
			t.Fatalf("pusher exited before ready: %v\n%s", err, p.logs)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("pusher not ready\n%s", p.logs)
		}
	}
	return p
}

// stop cancels run and returns its error; safe to call twice.
func (p *pusherRun) stop() error {
	p.cancel()
	select {
	case err, ok := <-p.done:
		if ok {
			close(p.done)
		}
		return err
	case <-time.After(60 * time.Second):
		p.t.Errorf("pusher did not stop within 60s\n%s", p.logs)
		return errors.New("timeout")
	}
}

func (p *pusherRun) wsURL(query string) string {
	u := "ws://" + p.httpAddr + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

// token mints an HS256 token for uid with the test secret.
func token(t testing.TB, uid string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Sign([]byte(testSecret), uid, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dial connects uid with a bearer header. pusher registers a connection
// before it answers the upgrade, so once Dial returns, messages published
// for uid find it.
func (p *pusherRun) dial(t testing.TB, uid string) *websocket.Conn {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token(t, uid, time.Hour)}}
	c, resp, err := websocket.DefaultDialer.Dial(p.wsURL(""), h)
	if err != nil {
		t.Fatalf("dial %s: %v (resp %v)", uid, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// natsJS connects a plain client to url; closed in t.Cleanup.
func natsJS(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// natsClient connects a backend-like client to the embedded NATS.
func (p *pusherRun) natsClient(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return natsJS(t, p.natsURL)
}

func publish(t testing.TB, js jetstream.JetStream, subject string, data []byte) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, subject, data)
	if err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

// read reads one frame with a deadline.
func read(t testing.TB, c *websocket.Conn, timeout time.Duration) (int, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	typ, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, data
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// streamMsgs counts messages in a stream under subject filter.
func streamMsgs(t testing.TB, js jetstream.JetStream, stream, filter string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for subj, c := range info.State.Subjects {
		if filter == "" || strings.HasSuffix(filter, "*") || subj == filter {
			n += c
		}
	}
	return n
}

// startNode runs one node in this process through server.New, with
// embedded NATS on random ports and a temp data dir; its addresses come
// from the node. It is stopped in t.Cleanup.
func startNode(t testing.TB) *pusherRun {
	t.Helper()
	logs := newLogSink()
	log, closeLog, err := logging.New(logs, logging.Config{Level: "info"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		HTTPAddr: "127.0.0.1:0", NATSListen: "127.0.0.1:-1", DataDir: t.TempDir(),
		Auth: auth.Config{HMACSecret: []byte(testSecret)},
	}
	s, err := server.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("server.New: %v\n%s", err, logs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &pusherRun{t: t, httpAddr: s.Addr().String(), natsURL: s.NATSURL(), logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() {
		err := s.Run(ctx)
		stopCtx, stop := context.WithTimeout(context.Background(), 15*time.Second)
		defer stop()
		s.Close(stopCtx)
		_ = closeLog()
		p.done <- err
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// Log events the process tests wait for (the contract's names).
const (
	evReady        = "pusher.ready"
	evStopped      = "pusher.stopped"
	evShutdownStep = "pusher.shutdown_incomplete"
	evNATSUp       = "nats.reconnected"
	evNATSDown     = "nats.disconnected"
)
