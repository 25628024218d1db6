package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// glog-style flush daemons of the embedded nats-server's dependencies
		// are process-wide and outlive any one server.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

const testSecret = "test-secret-0123456789abcdef0123456789"

// logSink collects a node's JSON log lines, so tests can assert the
// events the contract names.
type logSink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	cond chan struct{} // closed and replaced on every write
}

func newLogSink() *logSink { return &logSink{cond: make(chan struct{})} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Write(p)
	close(s.cond)
	s.cond = make(chan struct{})
	return len(p), nil
}

func (s *logSink) Sync() error { return nil }

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// find returns the log lines whose msg is event and whose fields match.
func (s *logSink) find(event string, match map[string]any) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(s.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != event {
			continue
		}
		ok := true
		for k, v := range match {
			ok = ok && fmt.Sprint(m[k]) == fmt.Sprint(v)
		}
		if ok {
			out = append(out, m)
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

// node is one server.Server under test, serving until the test ends.
type node struct {
	*server.Server
	logs *logSink
	run  chan error // Run's result
}

// testConfig is a node with embedded NATS on random ports, a temp data
// dir and the test secret.
func testConfig(t testing.TB) server.Config {
	return server.Config{
		HTTPAddr:   "127.0.0.1:0",
		NATSListen: "127.0.0.1:-1",
		DataDir:    t.TempDir(),
		Auth:       auth.Config{HMACSecret: []byte(testSecret)},
	}
}

// newLogger writes JSON lines like the real one, into sink.
func newLogger(sink *logSink) *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, sink, zap.InfoLevel))
}

// startNode builds and runs a node; it is closed in t.Cleanup.
func startNode(t testing.TB, cfg server.Config) *node {
	t.Helper()
	n := &node{logs: newLogSink(), run: make(chan error, 1)}
	s, err := server.New(context.Background(), cfg, newLogger(n.logs))
	if err != nil {
		t.Fatalf("server.New: %v\n%s", err, n.logs)
	}
	n.Server = s
	ctx, cancel := context.WithCancel(context.Background())
	go func() { n.run <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); n.stop(t) })
	return n
}

// stop ends Run and closes the node, as main does on SIGTERM; safe to
// call twice.
func (n *node) stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	n.Close(ctx)
}

func (n *node) url(path string) string { return "http://" + n.Addr().String() + path }

func (n *node) wsURL(query string) string {
	u := "ws://" + n.Addr().String() + "/ws"
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

// client reads its connection all the time, as a browser does, so that
// its reads answer the node's pings, which confirm delivery. Data
// messages, then the error that ended the connection, arrive on msgs.
type client struct {
	*websocket.Conn
	msgs chan readResult
}

type readResult struct {
	typ  int
	data []byte
	err  error
}

// dial connects uid with a bearer header, as a reading client. A node
// registers a connection before it answers the upgrade, so once Dial
// returns, messages published for uid find it.
func (n *node) dial(t testing.TB, uid string) *client {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token(t, uid, time.Hour)}}
	c, resp, err := websocket.DefaultDialer.Dial(n.wsURL(""), h)
	if err != nil {
		t.Fatalf("dial %s: %v (resp %v)", uid, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return pumpClient(c)
}

// pumpClient starts reading c all the time; the reader stops when c ends.
func pumpClient(c *websocket.Conn) *client {
	cl := &client{Conn: c, msgs: make(chan readResult, 4096)}
	go func() {
		for {
			typ, data, err := c.ReadMessage()
			cl.msgs <- readResult{typ, data, err}
			if err != nil {
				return
			}
		}
	}()
	return cl
}

// next returns the next message, or the error that ended the connection,
// within timeout.
func (c *client) next(timeout time.Duration) (int, []byte, error) {
	select {
	case r := <-c.msgs:
		if r.err != nil {
			c.msgs <- r // every later read sees it too
		}
		return r.typ, r.data, r.err
	case <-time.After(timeout):
		return 0, nil, fmt.Errorf("no message within %s", timeout)
	}
}

// natsClient connects a backend-like client to the node's NATS.
func (n *node) natsClient(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.NATSURL())
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

// read returns the next message within timeout, or fails.
func read(t testing.TB, c *client, timeout time.Duration) (int, []byte) {
	t.Helper()
	typ, data, err := c.next(timeout)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, data
}

// waitFor polls cond until it returns nil or timeout passes, and then
// fails with cond's last answer: why it is still waiting.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// streamMsgs counts messages in a stream under subject filter.
func streamMsgs(js jetstream.JetStream, stream, filter string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// wantMsgs is a waitFor condition: stream holds want messages under filter.
func wantMsgs(js jetstream.JetStream, stream, filter string, want uint64) func() error {
	return func() error {
		n, err := streamMsgs(js, stream, filter)
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("%s holds %d under %s, want %d", stream, n, filter, want)
		}
		return nil
	}
}
