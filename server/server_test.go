package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/server"
	"github.com/pusher-io/pusher/wire"
)

func TestDeliversExactPayloadsToEveryConnectionOfTheUID(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, js := n.natsClient(t)
	tab1 := n.dial(t, "123")
	tab2 := n.dial(t, "123")
	other := n.dial(t, "456")

	publish(t, js, "push.123", []byte("Hello"))
	binary := []byte{0xff, 0x00, 0xfe, 'x'}
	publish(t, js, "push.123", binary)
	for _, c := range []*client{tab1, tab2} {
		typ, got := read(t, c, 5*time.Second)
		if typ != websocket.TextMessage || string(got) != "Hello" {
			t.Fatalf("got %d %q, want text Hello", typ, got)
		}
		typ, got = read(t, c, 5*time.Second)
		if typ != websocket.BinaryMessage || !bytes.Equal(got, binary) {
			t.Fatalf("got %d %x, want binary %x", typ, got, binary)
		}
	}
	// uid 456 got none of 123's messages: its first frame is its own.
	publish(t, js, "push.456", []byte("for 456"))
	if _, got := read(t, other, 5*time.Second); string(got) != "for 456" {
		t.Fatalf("uid 456 first frame %q, want its own message", got)
	}
	n.logs.Wait(t, 5*time.Second, "push.delivered", map[string]any{"uid": "123", "seq": 1})
	if strings.Contains(n.logs.String(), testSecret) {
		t.Fatal("the JWT secret appears in the logs")
	}
}

func TestThousandMessagesArriveInOrder(t *testing.T) {
	cfg := testConfig(t)
	cfg.QuietDelivered = true
	n := startNode(t, cfg)
	_, js := n.natsClient(t)
	c := n.dial(t, "order")
	const count = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	futs := make([]jetstream.PubAckFuture, 0, count)
	for i := range count {
		f, err := js.PublishAsync("push.order", []byte(strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishes not acked")
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		}
	}
	for i := range count {
		if _, got := read(t, c, 10*time.Second); string(got) != strconv.Itoa(i) {
			t.Fatalf("message %d: got %q", i, got)
		}
	}
	if len(n.logs.Find("push.delivered", nil)) != 0 {
		t.Fatal("QuietDelivered still logged push.delivered")
	}
	// Every message was acked: nothing is pending or awaiting ack.
	cons, err := js.Consumer(ctx, wire.StreamName, wire.DurableName)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "all acked", func() error {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != count {
			return fmt.Errorf("ack pending %d, pending %d, ack floor %d", info.NumAckPending, info.NumPending, info.AckFloor.Stream)
		}
		return nil
	})
}

func TestOfflineIsDeadLetteredThenReplayedOnConnect(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, js := n.natsClient(t)
	seq := publish(t, js, "push.away", []byte("while you were out"))
	n.logs.Wait(t, 10*time.Second, "push.deadlettered", map[string]any{"uid": "away", "reason": "offline"})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dlq, err := js.Stream(ctx, wire.DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := dlq.GetLastMsgForSubject(ctx, "dlq.push.away")
	if err != nil {
		t.Fatalf("dead letter not in PUSH_DLQ: %v", err)
	}
	if string(raw.Data) != "while you were out" {
		t.Fatalf("dead letter payload %q", raw.Data)
	}
	wantHeaders := map[string]string{
		"Pusher-Reason":           "offline",
		"Pusher-Original-Subject": "push.away",
		"Pusher-Original-Seq":     strconv.FormatUint(seq, 10),
		"Pusher-Deliveries":       "1",
	}
	for k, v := range wantHeaders {
		if got := raw.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if _, err := time.Parse(time.RFC3339, raw.Header.Get("Pusher-Failed-At")); err != nil {
		t.Errorf("Pusher-Failed-At %q: %v", raw.Header.Get("Pusher-Failed-At"), err)
	}

	c := n.dial(t, "away")
	if _, got := read(t, c, 10*time.Second); string(got) != "while you were out" {
		t.Fatalf("replayed %q", got)
	}
	waitFor(t, 10*time.Second, "DLQ empty for away", wantMsgs(js, wire.DLQStreamName, "dlq.push.away", 0))
}

// A subject that names no valid uid, whether one token too long or several
// tokens, is stored by PUSH (which binds push.>) and dead-lettered as
// bad_subject with its subject, never dropped.
func TestMalformedSubjectIsDeadLettered(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, js := n.natsClient(t)
	for _, subject := range []string{"push." + strings.Repeat("x", 129), "push.a.b"} {
		t.Run(subject[:min(len(subject), 12)], func(t *testing.T) {
			publish(t, js, subject, []byte("lost? "+subject))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			dlq, err := js.Stream(ctx, wire.DLQStreamName)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the bad-subject dead letter", func() error {
				raw, err := dlq.GetLastMsgForSubject(ctx, "dlq.push._bad_subject")
				if err != nil {
					return err
				}
				if raw.Header.Get("Pusher-Original-Subject") != subject || string(raw.Data) != "lost? "+subject ||
					raw.Header.Get("Pusher-Reason") != "bad_subject" {
					return fmt.Errorf("last dead letter %v %q", raw.Header, raw.Data)
				}
				return nil
			})
		})
	}
}

func TestKickOverNATSClosesWith4001(t *testing.T) {
	n := startNode(t, testConfig(t))
	nc, _ := n.natsClient(t)
	c := n.dial(t, "kickme")
	reply, err := nc.Request("pusher.kick.kickme", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var answer wire.KickAnswer
	if err := json.Unmarshal(reply.Data, &answer); err != nil || answer.Closed != 1 || answer.Node == "" {
		t.Errorf("kick reply %q (%v), want one connection closed, and the node's name", reply.Data, err)
	}
	_, _, err = c.Next(5 * time.Second)
	if !websocket.IsCloseError(err, 4001) || !strings.Contains(err.Error(), "kicked") {
		t.Fatalf("read after kick: %v, want close 4001 kicked", err)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	n := startNode(t, testConfig(t))
	for path, want := range map[string]string{"/healthz": `"status":"ok"`, "/readyz": `"ready":true`} {
		resp, err := http.Get(n.url(path))
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(body.String(), want) {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body.String())
		}
	}
}

func TestGracefulShutdownClosesWith1001(t *testing.T) {
	n := startNode(t, testConfig(t))
	c := n.dial(t, "bye")
	// On the embedded NATS the node is alone: its users are asked to wait
	// for its restart.
	gracefulShutdown(t, n, c, wire.CloseGoingAwayRetryText)
}

// A node with cluster routing has others that can take its users at once.
func TestGracefulShutdownInAClusterAsksNoWait(t *testing.T) {
	_, b := twoNodes(t)
	gracefulShutdown(t, b, b.dial(t, "moves"), wire.CloseGoingAwayText)
}

// gracefulShutdown stops n and checks that c was closed with 1001 and
// reason, and that the shutdown completed.
func gracefulShutdown(t *testing.T, n *node, c *client, reason string) {
	t.Helper()
	closed := make(chan error, 1)
	go func() {
		_, _, err := c.Next(20 * time.Second)
		closed <- err
	}()
	n.stop(t)
	if err := <-n.run; err != nil {
		t.Fatalf("Run returned %v after Close", err)
	}
	var ce *websocket.CloseError
	if err := <-closed; !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway || ce.Text != reason {
		t.Fatalf("client saw %v, want close 1001 %q", err, reason)
	}
	n.logs.Wait(t, time.Second, "pusher.stopped", nil)
	if l := n.logs.Find("pusher.shutdown_incomplete", nil); len(l) > 0 {
		t.Fatalf("shutdown incomplete: %v", l)
	}
}

func TestWebSocketQueryTokenAndRejection(t *testing.T) {
	n := startNode(t, testConfig(t))
	c, _, err := websocket.DefaultDialer.Dial(n.wsURL("token="+token(t, "q", time.Hour)), nil)
	if err != nil {
		t.Fatalf("query token: %v", err)
	}
	c.Close()
	_, resp, err := websocket.DefaultDialer.Dial(n.wsURL("token=garbage"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("garbage token: err %v resp %v, want 401", err, resp)
	}
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if body["error"] == "" {
		t.Fatalf("401 without JSON error: %v", body)
	}
	n.logs.Wait(t, time.Second, "auth.rejected", nil)
	if strings.Contains(n.logs.String(), "garbage") {
		t.Fatal("a rejected token appears in the logs")
	}
}

// A busy HTTP port fails New at once, before any NATS is started or any
// message pulled, with an error that names the address.
func TestBusyHTTPPortFailsAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t)
	cfg.HTTPAddr = ln.Addr().String()
	start := time.Now()
	_, err = server.New(context.Background(), cfg, newLogger(io.Discard))
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("New on a busy port: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("busy port took %s to fail", took)
	}
}

// A second node on the same data dir fails at once and says the dir is in
// use, instead of waiting for an embedded NATS that never gets ready.
func TestDataDirInUseFailsAtOnce(t *testing.T) {
	cfg1 := testConfig(t)
	first := startNode(t, cfg1)
	cfg := testConfig(t)
	cfg.DataDir = cfg1.DataDir
	start := time.Now()
	_, err := server.New(context.Background(), cfg, newLogger(io.Discard))
	if err == nil || !strings.Contains(err.Error(), "in use by another pusher") {
		t.Fatalf("New on a data dir in use: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("data dir in use took %s to fail", took)
	}
	// The first node is unharmed.
	_, js := first.natsClient(t)
	c := first.dial(t, "still")
	publish(t, js, "push.still", []byte("here"))
	if _, got := read(t, c, 5*time.Second); string(got) != "here" {
		t.Fatalf("got %q", got)
	}
}

// A busy embedded NATS port fails at once too, naming the cause.
func TestBusyNATSPortFailsAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t)
	cfg.NATSListen = ln.Addr().String()
	start := time.Now()
	_, err = server.New(context.Background(), cfg, newLogger(io.Discard))
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("New on a busy NATS port: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("busy NATS port took %s to fail", took)
	}
}

// A config error is a ConfigError (main's usage error, exit 2), and New
// leaves nothing running behind it (TestMain checks for goroutines).
func TestConfigErrorsCloseWhatWasBuilt(t *testing.T) {
	tests := []struct {
		name string
		give func(*server.Config)
	}{
		{"external NATS without a key", func(c *server.Config) { c.Auth.HMACSecret = nil; c.NATSURL = "nats://127.0.0.1:1" }},
		{"JWKS URL not http(s)", func(c *server.Config) { c.JWKS.URL = "ftp://idp.example/jwks" }},
		{"negative max deliver", func(c *server.Config) { c.MaxDeliver = -1 }},
		{"bad origin", func(c *server.Config) { c.AllowedOrigins = []string{"not a url"} }},
		{"pprof off loopback", func(c *server.Config) { c.PprofAddr = "0.0.0.0:0" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			tt.give(&cfg)
			_, err := server.New(context.Background(), cfg, newLogger(io.Discard))
			var ce *server.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("New: %v, want a ConfigError", err)
			}
		})
	}
}

// An ack wait shorter than a write plus its confirmation is allowed (it
// duplicates, never loses, and brings messages back soon after a crash)
// but warned about.
func TestShortAckWaitIsWarnedAbout(t *testing.T) {
	cfg := testConfig(t)
	cfg.Topology.AckWait = 15 * time.Second
	n := startNode(t, cfg)
	n.logs.Wait(t, time.Second, "config.ack_wait_short", map[string]any{"ack_wait_ms": 15000})
}
