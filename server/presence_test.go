package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/wire"
)

// presenceEvents subscribes to every presence event through nc.
func presenceEvents(t testing.TB, nc *nats.Conn) <-chan wire.PresenceEvent {
	t.Helper()
	out := make(chan wire.PresenceEvent, 256)
	sub, err := nc.Subscribe(wire.PresenceSubjects, func(m *nats.Msg) {
		var e wire.PresenceEvent
		if err := json.Unmarshal(m.Data, &e); err != nil || m.Subject != wire.PresenceSubject(e.UID) {
			e.Event = fmt.Sprintf("bad event on %s: %q (%v)", m.Subject, m.Data, err)
		}
		select {
		case out <- e:
		default:
			t.Errorf("more than %d presence events unread", cap(out))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return out
}

// wantEvent reads the next presence event and checks what the test
// knows of it; ts must be RFC 3339 and recent, conn set.
func wantEvent(t testing.TB, events <-chan wire.PresenceEvent, uid, event, node string, conns, code int) wire.PresenceEvent {
	t.Helper()
	select {
	case e := <-events:
		ts, err := time.Parse(time.RFC3339, e.TS)
		if e.UID != uid || e.Event != event || e.Node != node || e.Conns != conns || e.Code != code ||
			e.Conn == 0 || err != nil || time.Since(ts).Abs() > time.Minute {
			t.Fatalf("event %+v, want %s %s on %s with conns %d, code %d", e, uid, event, node, conns, code)
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s event for %s", event, uid)
		return wire.PresenceEvent{}
	}
}

// askOnline gathers the answers to one pusher.online.<uid> request: none
// when NATS says no responders.
func askOnline(t testing.TB, nc *nats.Conn, uid string) ([]wire.OnlineAnswer, error) {
	t.Helper()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(wire.OnlineSubject(uid), inbox, nil); err != nil {
		t.Fatal(err)
	}
	var out []wire.OnlineAnswer
	timeout := 5 * time.Second
	for {
		m, err := sub.NextMsg(timeout)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, err
		case errors.Is(err, nats.ErrTimeout) && len(out) > 0:
			sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
			return out, nil
		case err != nil:
			return nil, err
		}
		var a wire.OnlineAnswer
		if err := json.Unmarshal(m.Data, &a); err != nil {
			t.Fatalf("answer %q: %v", m.Data, err)
		}
		out = append(out, a)
		timeout = 500 * time.Millisecond // the other nodes answer within it
	}
}

// onlineIs is a waitFor condition: uid's answers are want (nodes sorted),
// or NATS says no responders when want is empty.
func onlineIs(t testing.TB, nc *nats.Conn, uid string, want ...wire.OnlineAnswer) func() error {
	return func() error {
		got, err := askOnline(t, nc, uid)
		if len(want) == 0 {
			if !errors.Is(err, nats.ErrNoResponders) {
				return fmt.Errorf("online %s: %v, %v; want no responders", uid, got, err)
			}
			return nil
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || err != nil {
			return fmt.Errorf("online %s: %v, %v; want %v", uid, got, err, want)
		}
		return nil
	}
}

func TestPresenceEventsAndOnlineAnswers(t *testing.T) {
	cfg := testConfig(t)
	cfg.NodeName = "node-a"
	n := startNode(t, cfg)
	nc, _ := n.natsClient(t)
	events := presenceEvents(t, nc)
	waitFor(t, 10*time.Second, "alice offline", onlineIs(t, nc, "alice"))

	first := n.dial(t, "alice")
	e1 := wantEvent(t, events, "alice", wire.EventConnected, "node-a", 1, 0)
	n.dial(t, "alice")
	e2 := wantEvent(t, events, "alice", wire.EventConnected, "node-a", 2, 0)
	if e1.Conn == e2.Conn {
		t.Fatalf("two connections with one id %d", e1.Conn)
	}
	waitFor(t, 10*time.Second, "alice online twice", onlineIs(t, nc, "alice", wire.OnlineAnswer{UID: "alice", Node: "node-a", Conns: 2}))

	if err := first.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if e := wantEvent(t, events, "alice", wire.EventDisconnected, "node-a", 1, websocket.CloseNormalClosure); e.Conn != e1.Conn {
		t.Fatalf("disconnect of conn %d, want %d", e.Conn, e1.Conn)
	}
	if err := nc.Publish(wire.KickSubject("alice"), nil); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, events, "alice", wire.EventDisconnected, "node-a", 0, wire.CloseKicked)
	waitFor(t, 10*time.Second, "alice offline again", onlineIs(t, nc, "alice"))
}

// TestPresenceAcrossThreeNodes: each node publishes its own events; a uid
// on two nodes is answered by both, one on none by no one.
func TestPresenceAcrossThreeNodes(t *testing.T) {
	nodes := make([]*node, 3)
	for i := range nodes {
		cfg := testConfig(t)
		cfg.NodeName = fmt.Sprintf("node-%c", 'a'+i)
		if i > 0 {
			cfg.NATSURL = nodes[0].NATSURL()
		}
		nodes[i] = startNode(t, cfg)
	}
	nc, _ := nodes[0].natsClient(t)
	events := presenceEvents(t, nc)
	nodes[0].dial(t, "both")
	wantEvent(t, events, "both", wire.EventConnected, "node-a", 1, 0)
	nodes[1].dial(t, "both")
	wantEvent(t, events, "both", wire.EventConnected, "node-b", 1, 0)
	nodes[2].dial(t, "solo")
	wantEvent(t, events, "solo", wire.EventConnected, "node-c", 1, 0)
	waitFor(t, 10*time.Second, "both on two nodes", onlineIs(t, nc, "both",
		wire.OnlineAnswer{UID: "both", Node: "node-a", Conns: 1}, wire.OnlineAnswer{UID: "both", Node: "node-b", Conns: 1}))
	waitFor(t, 10*time.Second, "solo on node c", onlineIs(t, nc, "solo", wire.OnlineAnswer{UID: "solo", Node: "node-c", Conns: 1}))
	waitFor(t, 10*time.Second, "nobody offline", onlineIs(t, nc, "nobody"))

	// Node b stops: its connection's disconnect leaves before its NATS
	// connection does, and both is still online, on a.
	nodes[1].stop(t)
	wantEvent(t, events, "both", wire.EventDisconnected, "node-b", 0, wire.CloseGoingAway)
	waitFor(t, 10*time.Second, "both on a only", onlineIs(t, nc, "both", wire.OnlineAnswer{UID: "both", Node: "node-a", Conns: 1}))
}

// TestPresenceOff: PUSHER_PRESENCE=false publishes no events (there is no
// publisher: no series of its counter) and still answers online queries.
func TestPresenceOff(t *testing.T) {
	cfg := testConfig(t)
	cfg.PresenceOff, cfg.NodeName = true, "quiet"
	n := startNode(t, cfg)
	nc, _ := n.natsClient(t)
	n.dial(t, "alice")
	waitFor(t, 10*time.Second, "alice online", onlineIs(t, nc, "alice", wire.OnlineAnswer{UID: "alice", Node: "quiet", Conns: 1}))
	m, err := harness.Scrape(context.Background(), n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Sum("pusher_presence_events_total"); got != 0 {
		t.Fatalf("%v presence events with presence off", got)
	}
	on := startNode(t, testConfig(t))
	on.dial(t, "bob")
	waitFor(t, 10*time.Second, "an event counted with presence on", func() error {
		m, err := harness.Scrape(context.Background(), on.Addr().String())
		if err != nil {
			return err
		}
		if got := m.Sum("pusher_presence_events_total", "result", "published"); got != 1 {
			return fmt.Errorf("%v events published", got)
		}
		return nil
	})
}
