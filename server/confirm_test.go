package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/e2e/netfault"
	"github.com/pusher-io/pusher/server"
	"github.com/pusher-io/pusher/wire"
	"github.com/pusher-io/pusher/ws"
)

// The vanished-network scenarios of delivery confirmation, on a node in
// this process: a client reaches it through a proxy whose link goes silent
// in both directions while both sockets stay open, as when a phone leaves
// Wi-Fi. Times are scaled down (a 2 s confirm timeout, 1 s back-off); the
// e2e tier runs the same against a pusher process with the defaults.

// confirmConfig is a node whose written messages are given up on after
// 2 s, retried 1 s later.
func confirmConfig(t testing.TB, confirm ws.Confirm) server.Config {
	cfg := testConfig(t)
	cfg.Confirm = confirm
	cfg.ConfirmTimeout = 2 * time.Second
	cfg.Backoff = []time.Duration{time.Second}
	cfg.QuietDelivered = true
	return cfg
}

// silentUser connects uid through a proxy and silences the link: the
// user's network is gone, and both sockets stay open. (dialAt returns
// once the upgrade went through the proxy, so the link exists.)
func (n *node) silentUser(t testing.TB, uid string) {
	t.Helper()
	proxy, err := netfault.Listen(n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	n.dialAt(t, proxy.Addr(), uid)
	proxy.Links()[0].Silence()
}

// collect gathers what clients receive, by payload.
type collect struct {
	mu  sync.Mutex
	got map[string]int
}

func (c *collect) from(cl *client) {
	go func() {
		for {
			_, data, err := cl.Next(time.Hour)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.got[string(data)]++
			c.mu.Unlock()
		}
	}()
}

func (c *collect) count(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got[id]
}

// inflight is a waitFor condition: the node holds want messages pulled
// and not settled.
func (n *node) inflight(want float64) func() error {
	return func() error {
		m, err := harness.Scrape(context.Background(), n.Addr().String())
		if err != nil {
			return err
		}
		if got := m.Sum("pusher_inflight_messages"); got != want {
			return fmt.Errorf("%v messages in flight, want %v", got, want)
		}
		return nil
	}
}

// outcome counts, for ids, how many a client received, how many sit in
// PUSH_DLQ (and with what reason), and how many are lost: acked by
// JetStream (nothing pending) yet neither received nor dead-lettered.
type outcome struct {
	received, deadLettered, lost, duplicates int
	reasons                                  map[string]int
}

func account(t testing.TB, js jetstream.JetStream, ids []string, got *collect) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dlq, err := harness.DLQ(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	o := outcome{reasons: map[string]int{}}
	for _, id := range ids {
		n := got.count(id)
		dl, inDLQ := dlq[id]
		switch {
		case n > 0:
			o.received++
			o.duplicates += n - 1
		case inDLQ:
			o.deadLettered++
			o.reasons[dl.Reason]++
		default:
			o.lost++
		}
	}
	return o
}

// TestPhoneSwitch: the user's only connection goes silent, 20 messages
// are published to them, and the user comes back on a new connection.
// With pong confirmation nothing is lost: each message arrives on the new
// connection (or sits in PUSH_DLQ). With write confirmation the kernel
// took the 20 writes into the dead connection's buffers and they were
// acked: lost, as the README warns.
func TestPhoneSwitch(t *testing.T) {
	for _, tt := range []struct {
		name     string
		confirm  ws.Confirm
		wantLost int
	}{{"pong", ws.ConfirmPong, 0}, {"write", ws.ConfirmWrite, 20}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := startNode(t, confirmConfig(t, tt.confirm))
			_, js := n.natsClient(t)
			proxy, err := netfault.Listen(n.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(proxy.Close)
			got := &collect{got: map[string]int{}}
			old := n.dialAt(t, proxy.Addr(), "phone")
			publish(t, js, "push.phone", []byte("before"))
			if _, b := read(t, old, 5*time.Second); string(b) != "before" {
				t.Fatalf("before the switch: %q", b)
			}
			got.from(old)
			waitFor(t, 5*time.Second, "before confirmed", n.inflight(0))
			proxy.Links()[0].Silence()
			ids := make([]string, 20)
			for i := range ids {
				ids[i] = "m" + strconv.Itoa(i)
				publish(t, js, "push.phone", []byte(ids[i]))
			}
			if tt.confirm == ws.ConfirmPong {
				// Written into the silent link, awaiting their pong.
				waitFor(t, 5*time.Second, "20 written and unconfirmed", n.inflight(20))
			} else {
				waitFor(t, 5*time.Second, "20 written and acked", n.inflight(0))
			}
			got.from(n.dialAt(t, n.Addr().String(), "phone"))

			var o outcome
			waitFor(t, 15*time.Second, "every message settled", func() error {
				if err := n.inflight(0)(); err != nil {
					return err
				}
				o = account(t, js, ids, got)
				if o.lost != tt.wantLost {
					return fmt.Errorf("%+v", o)
				}
				return nil
			})
			t.Logf("%s: %d received on the new connection, %d in PUSH_DLQ %v, %d lost, %d duplicates",
				tt.name, o.received, o.deadLettered, o.reasons, o.lost, o.duplicates)
		})
	}
}

// TestUserNeverComesBack: the silent connection's messages are in
// PUSH_DLQ as offline within the confirm timeout plus back-off, and are
// replayed when the user connects again.
func TestUserNeverComesBack(t *testing.T) {
	n := startNode(t, confirmConfig(t, ws.ConfirmPong))
	_, js := n.natsClient(t)
	n.silentUser(t, "gone")
	start := time.Now()
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = "m" + strconv.Itoa(i)
		publish(t, js, "push.gone", []byte(ids[i]))
	}
	waitFor(t, 15*time.Second, "20 offline dead letters", func() error {
		o := account(t, js, ids, &collect{got: map[string]int{}})
		if o.reasons[wire.ReasonOffline] != 20 {
			return fmt.Errorf("%+v", o)
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("20 messages in PUSH_DLQ (offline) %s after the silence (confirm timeout 2s, back-off 1s)", took.Round(time.Millisecond))
	got := &collect{got: map[string]int{}}
	got.from(n.dialAt(t, n.Addr().String(), "gone"))
	waitFor(t, 15*time.Second, "the 20 replayed", func() error {
		if o := account(t, js, ids, got); o.received != 20 {
			return fmt.Errorf("%+v", o)
		}
		return nil
	})
}

// TestHealthyAndSilentConnection: a user with one healthy and one silent
// connection gets everything on the healthy one, acked without waiting for
// the silent one (a confirm timeout of a minute would show).
func TestHealthyAndSilentConnection(t *testing.T) {
	cfg := confirmConfig(t, ws.ConfirmPong)
	cfg.ConfirmTimeout = time.Minute
	cfg.Topology.AckWait = 2 * time.Minute
	n := startNode(t, cfg)
	_, js := n.natsClient(t)
	n.silentUser(t, "two")
	got := &collect{got: map[string]int{}}
	got.from(n.dialAt(t, n.Addr().String(), "two"))
	ids := make([]string, 50)
	start := time.Now()
	for i := range ids {
		ids[i] = "m" + strconv.Itoa(i)
		publish(t, js, "push.two", []byte(ids[i]))
	}
	waitFor(t, 10*time.Second, "all acked", n.inflight(0))
	if o := account(t, js, ids, got); o.received != len(ids) || o.lost != 0 {
		t.Fatalf("%+v", o)
	}
	t.Logf("50 messages delivered and acked in %s with a silent second connection", time.Since(start).Round(time.Millisecond))
}

// TestClientThatNeverAnswersPings: a client that reads but never answers
// pings is closed with 4004, and nothing it was sent is lost.
func TestClientThatNeverAnswersPings(t *testing.T) {
	n := startNode(t, confirmConfig(t, ws.ConfirmPong))
	_, js := n.natsClient(t)
	h := http.Header{"Authorization": {"Bearer " + token(t, "mute", time.Hour)}}
	raw, _, err := websocket.DefaultDialer.Dial(n.wsURL(""), h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.SetPingHandler(func(string) error { return nil }) // reads, never answers
	mute := harness.NewPump(raw)
	publish(t, js, "push.mute", []byte("m0"))
	if _, b := read(t, mute, 5*time.Second); string(b) != "m0" {
		t.Fatalf("got %q", b)
	}
	_, _, err = mute.Next(10 * time.Second)
	if !websocket.IsCloseError(err, wire.CloseUnresponsive) {
		t.Fatalf("connection ended with %v, want close 4004", err)
	}
	n.logs.Wait(t, 5*time.Second, "ws.unresponsive", map[string]any{"uid": "mute", "unconfirmed": 1})
	got := &collect{got: map[string]int{}}
	waitFor(t, 15*time.Second, "m0 in PUSH_DLQ", func() error {
		if o := account(t, js, []string{"m0"}, got); o.deadLettered != 1 {
			return fmt.Errorf("%+v", o)
		}
		return nil
	})
}
