package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/wire"
)

// TestPolicyOutcomesAreLoggedAndCounted: what a publisher's policy drops
// is a logged and counted outcome, and a malformed policy is warned about
// and ignored (the message is stored), as the README promises operators.
func TestPolicyOutcomesAreLoggedAndCounted(t *testing.T) {
	n := startNode(t, testConfig(t))
	nc, _ := n.natsClient(t)
	pub := func(data, k, v string) {
		m := nats.NewMsg(wire.PushSubject("nobody"))
		m.Data = []byte(data)
		m.Header.Set(k, v)
		if _, err := nc.RequestMsg(m, 10*time.Second); err != nil { // a JetStream publish: the PubAck answers
			t.Fatal(err)
		}
	}
	pub("typing", wire.HeaderOffline, "drop")
	pub("typo", wire.HeaderTTL, "tomorrow")
	n.logs.Wait(t, 10*time.Second, "push.dropped", map[string]any{"uid": "nobody", "reason": "offline_dropped"})
	n.logs.Wait(t, 10*time.Second, "push.bad_policy", map[string]any{"uid": "nobody"})
	n.logs.Wait(t, 10*time.Second, "push.deadlettered", map[string]any{"uid": "nobody", "reason": "offline"})
	m, err := harness.Scrape(context.Background(), n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Sum("pusher_messages_total", "outcome", "dropped", "reason", "offline_dropped"); got != 1 {
		t.Errorf("dropped offline_dropped = %v, want 1", got)
	}
	if got := m.Sum("pusher_bad_policy_headers_total"); got != 1 {
		t.Errorf("bad policy headers = %v, want 1", got)
	}
}
