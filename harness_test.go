package main

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/server"
)

const testSecret = "test-secret-0123456789abcdef0123456789"

// node is one pusher node run in this process for the CLI tests; its
// addresses come from the node itself.
type node struct {
	httpAddr, natsURL string
}

// startNode runs a node through server.New, with embedded NATS on random
// ports and a temp data dir. It is stopped in t.Cleanup.
func startNode(t testing.TB) *node {
	t.Helper()
	cfg := server.Config{
		HTTPAddr: "127.0.0.1:0", NATSListen: "127.0.0.1:-1", DataDir: t.TempDir(),
		Auth: auth.Config{HMACSecret: []byte(testSecret)},
	}
	s, err := server.New(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		stop, cancelStop := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancelStop()
		s.Close(stop)
	})
	return &node{httpAddr: s.Addr().String(), natsURL: s.NATSURL()}
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

// dial connects uid with a bearer header; closed in t.Cleanup.
func (n *node) dial(t testing.TB, uid string) *websocket.Conn {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token(t, uid, time.Hour)}}
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+n.httpAddr+"/ws", h)
	if err != nil {
		t.Fatalf("dial %s: %v (resp %v)", uid, err, resp)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// natsClient connects a backend-like client to the node's NATS.
func (n *node) natsClient(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.natsURL)
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

func publish(t testing.TB, js jetstream.JetStream, subject string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, subject, data); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
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

// streamMsgs counts the messages in stream under subject filter.
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

// holds is a waitFor condition: stream holds want messages under filter.
func holds(js jetstream.JetStream, stream, filter string, want uint64) func() error {
	return func() error {
		n, err := streamMsgs(js, stream, filter)
		if err == nil && n != want {
			err = fmt.Errorf("%s holds %d under %s, want %d", stream, n, filter, want)
		}
		return err
	}
}
