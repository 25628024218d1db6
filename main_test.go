package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/pusher-io/pusher/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// glog-style flush daemons of the embedded nats-server's dependencies
		// are process-wide and outlive any one server.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

func TestDeliversExactPayloadsToEveryConnectionOfTheUID(t *testing.T) {
	p := startPusher(t, nil)
	_, js := p.natsClient(t)
	tab1 := p.dial(t, "123")
	tab2 := p.dial(t, "123")
	other := p.dial(t, "456")

	publish(t, js, "push.123", []byte("Hello"))
	binary := []byte{0xff, 0x00, 0xfe, 'x'}
	publish(t, js, "push.123", binary)
	for _, c := range []*websocket.Conn{tab1, tab2} {
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
	p.logs.wait(t, 5*time.Second, "push.delivered", map[string]any{"uid": "123", "seq": 1})
	if strings.Contains(p.logs.String(), testSecret) {
		t.Fatal("the JWT secret appears in the logs")
	}
}

func TestThousandMessagesArriveInOrder(t *testing.T) {
	p := startPusher(t, map[string]string{"PUSHER_LOG_DELIVERED": "false"})
	_, js := p.natsClient(t)
	c := p.dial(t, "order")
	const n = 1000
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	futs := make([]jetstream.PubAckFuture, 0, n)
	for i := range n {
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
	for i := range n {
		_, got := read(t, c, 10*time.Second)
		if string(got) != strconv.Itoa(i) {
			t.Fatalf("message %d: got %q", i, got)
		}
	}
	if len(p.logs.find("push.delivered", nil)) != 0 {
		t.Fatal("PUSHER_LOG_DELIVERED=false still logged push.delivered")
	}
	// Every message was acked: nothing is pending or awaiting ack.
	cons, err := js.Consumer(ctx, wire.StreamName, wire.DurableName)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "all acked", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == n
	})
}

func TestOfflineIsDeadLetteredThenReplayedOnConnect(t *testing.T) {
	p := startPusher(t, nil)
	_, js := p.natsClient(t)
	seq := publish(t, js, "push.away", []byte("while you were out"))
	p.logs.wait(t, 10*time.Second, "push.deadlettered", map[string]any{"uid": "away", "reason": "offline"})

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

	c := p.dial(t, "away")
	if _, got := read(t, c, 10*time.Second); string(got) != "while you were out" {
		t.Fatalf("replayed %q", got)
	}
	waitFor(t, 10*time.Second, "DLQ empty for away", func() bool {
		return streamMsgs(t, js, wire.DLQStreamName, "dlq.push.away") == 0
	})
}

func TestMalformedSubjectIsDeadLettered(t *testing.T) {
	p := startPusher(t, nil)
	_, js := p.natsClient(t)
	long := strings.Repeat("x", 129) // one token, but longer than a uid may be
	publish(t, js, "push."+long, []byte("lost?"))
	p.logs.wait(t, 10*time.Second, "push.deadlettered", map[string]any{"reason": "bad_subject"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dlq, _ := js.Stream(ctx, wire.DLQStreamName)
	raw, err := dlq.GetLastMsgForSubject(ctx, "dlq.push._bad_subject")
	if err != nil {
		t.Fatalf("bad-subject dead letter: %v", err)
	}
	if raw.Header.Get("Pusher-Original-Subject") != "push."+long || string(raw.Data) != "lost?" {
		t.Fatalf("dead letter %v %q", raw.Header, raw.Data)
	}
}

func TestKickOverNATSClosesWith4001(t *testing.T) {
	p := startPusher(t, nil)
	nc, _ := p.natsClient(t)
	c := p.dial(t, "kickme")
	if err := nc.Publish("pusher.kick.kickme", nil); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ReadMessage()
	if !websocket.IsCloseError(err, 4001) || !strings.Contains(err.Error(), "kicked") {
		t.Fatalf("read after kick: %v, want close 4001 kicked", err)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	p := startPusher(t, nil)
	for path, want := range map[string]string{"/healthz": `"status":"ok"`, "/readyz": `"ready":true`} {
		resp, err := http.Get("http://" + p.httpAddr + path)
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

func TestGracefulShutdownClosesWith1001AndExitsCleanly(t *testing.T) {
	p := startPusher(t, nil)
	c := p.dial(t, "bye")
	closed := make(chan error, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, _, err := c.ReadMessage()
		closed <- err
	}()
	if err := p.stop(); err != nil {
		t.Fatalf("run returned %v", err)
	}
	err := <-closed
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("client saw %v, want close 1001", err)
	}
	p.logs.wait(t, time.Second, "pusher.stopped", nil)
	if l := p.logs.find("pusher.shutdown_incomplete", nil); len(l) > 0 {
		t.Fatalf("shutdown incomplete: %v", l)
	}
}

func TestWebSocketQueryTokenAndRejection(t *testing.T) {
	p := startPusher(t, nil)
	c, _, err := websocket.DefaultDialer.Dial(p.wsURL("token="+token(t, "q", time.Hour)), nil)
	if err != nil {
		t.Fatalf("query token: %v", err)
	}
	c.Close()
	_, resp, err := websocket.DefaultDialer.Dial(p.wsURL("token=garbage"), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("garbage token: err %v resp %v, want 401", err, resp)
	}
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if body["error"] == "" {
		t.Fatalf("401 without JSON error: %v", body)
	}
	p.logs.wait(t, time.Second, "auth.rejected", nil)
	if strings.Contains(p.logs.String(), "garbage") {
		t.Fatal("a rejected token appears in the logs")
	}
	_ = fmt.Sprint()
}
