package server_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/server"
	"github.com/pusher-io/pusher/wire"
)

// twoNodes runs node A with the embedded NATS and cluster routing, and
// node B on A's NATS (auto routing: cluster, as NATS is external to it).
func twoNodes(t *testing.T) (a, b *node) {
	t.Helper()
	cfgA := testConfig(t)
	cfgA.Routing = server.RoutingCluster
	a = startNode(t, cfgA)
	cfgB := testConfig(t)
	cfgB.NATSURL = a.NATSURL()
	b = startNode(t, cfgB)
	return a, b
}

func TestClusterDeliversToTheNodeHoldingTheUID(t *testing.T) {
	a, b := twoNodes(t)
	_, js := a.natsClient(t)
	onA := a.dial(t, "on-a")
	onB := b.dial(t, "on-b")
	both := []*client{a.dial(t, "both"), b.dial(t, "both")}
	waitDelivered := func(c *client, subj, want string) {
		t.Helper()
		publish(t, js, subj, []byte(want))
		if _, got := read(t, c, 10*time.Second); string(got) != want {
			t.Fatalf("%s: got %q, want %q", subj, got, want)
		}
	}
	for i := range 20 {
		// Whichever node pulls, the message reaches the holder.
		waitDelivered(onA, "push.on-a", "a"+strconv.Itoa(i))
		waitDelivered(onB, "push.on-b", "b"+strconv.Itoa(i))
	}
	for i := range 20 {
		want := "both" + strconv.Itoa(i)
		publish(t, js, "push.both", []byte(want))
		for _, c := range both {
			if _, got := read(t, c, 10*time.Second); string(got) != want {
				t.Fatalf("uid on two nodes: got %q, want %q", got, want)
			}
		}
	}
	// No message was retried or dead-lettered on the way.
	for _, n := range []*node{a, b} {
		if l := n.logs.Find("push.retry", nil); len(l) > 0 {
			t.Errorf("retries: %v", l)
		}
		if l := n.logs.Find("push.deadlettered", nil); len(l) > 0 {
			t.Errorf("dead letters: %v", l)
		}
	}
}

func TestClusterOfflineDeadLetterReplaysOnAnyNode(t *testing.T) {
	a, b := twoNodes(t)
	_, js := a.natsClient(t)
	for i := range 5 {
		publish(t, js, "push.later", []byte("m"+strconv.Itoa(i)))
	}
	waitFor(t, 15*time.Second, "5 offline dead letters", wantMsgs(js, wire.DLQStreamName, "dlq.push.later", 5))
	c := b.dial(t, "later")
	got := map[string]bool{}
	for range 5 {
		_, m := read(t, c, 15*time.Second)
		got[string(m)] = true
	}
	if len(got) != 5 {
		t.Fatalf("replayed %v, want m0..m4", got)
	}
	waitFor(t, 10*time.Second, "DLQ empty", wantMsgs(js, wire.DLQStreamName, "dlq.push.later", 0))
}

func TestClusterKickReachesEveryNode(t *testing.T) {
	a, b := twoNodes(t)
	nc, _ := a.natsClient(t)
	conns := []*client{a.dial(t, "k"), b.dial(t, "k")}
	if err := nc.Publish("pusher.kick.k", nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		if _, _, err := c.Next(5 * time.Second); !websocket.IsCloseError(err, 4001) {
			t.Fatalf("after kick: %v, want 4001", err)
		}
	}
}
