//go:build e2e

package e2e

// Delivery confirmation against pusher processes at their defaults (a 10 s
// confirm timeout, 1 s first back-off): a phone whose network vanishes,
// on one node and across three, and a crowd of 1,000 of them at once.
// Clients reach pusher through a proxy whose link goes silent in both
// directions while both sockets stay open (e2e/netfault).

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/e2e/netfault"
	"github.com/pusher-io/pusher/wire"
)

// silentLink dials uid to httpAddr through a new proxy, reads until the
// connection is set up, and silences the link: from then on the client's
// network is gone.
func silentLink(t *testing.T, httpAddr, uid string) *netfault.Proxy {
	t.Helper()
	proxy, err := netfault.Listen(httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	c := harness.DialWS(t, proxy.Addr(), uid)
	go func() { // a browser reads all the time
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	proxy.Links()[0].Silence()
	return proxy
}

// phoneSwitch publishes n messages to uid through natsURL while uid's only
// connection is silent (on silentAddr), reconnects uid 3 s later on
// newAddr, and accounts for every message: received on the new connection,
// or in PUSH_DLQ. The silent connection's node must have given up on it
// (4004): the messages went into the vanished network first.
func phoneSwitch(t *testing.T, name, natsURL, silentAddr, newAddr string, n int) {
	t.Helper()
	const uid = "phone"
	msgs := harness.TextMsgs(n, []string{uid})
	start := time.Now()
	pub := harness.StartPublisher(t, natsURL, msgs, 30*time.Second)
	acked := pub.Wait(t)
	// The user is away for 3 s: the scenario's timing, not a wait for
	// anything to happen.
	time.Sleep(3 * time.Second)
	rec := harness.NewRecorder()
	harness.StartClients(t, newAddr, []string{uid}, nil, rec)
	f := harness.Account(t, name, natsURL, acked, rec, 60*time.Second)
	if n := harness.ScrapeT(t, silentAddr).Sum("pusher_unresponsive_closes_total"); n != 1 {
		t.Errorf("%v unresponsive closes on the silent connection's node, want 1: the messages never went its way", n)
	}
	t.Logf("%s: %d published, %d received on the new connection, %d in PUSH_DLQ, %d lost, %d duplicates, settled %s after the first publish",
		name, len(acked), f.Received, f.DLQ, f.Lost, f.Duplicates, time.Since(start).Round(100*time.Millisecond))
}

// TestPhoneSwitchLosesNothing is the report: the user's only
// connection goes silent, 20 messages are published, and 3 s later the
// user is back on a new connection. Nothing is lost.
func TestPhoneSwitchLosesNothing(t *testing.T) {
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), Env: map[string]string{"PUSHER_LOG_DELIVERED": "false"}})
	silentLink(t, p.HTTPAddr(), "phone")
	phoneSwitch(t, "phone-switch", p.NATSURL(), p.HTTPAddr(), p.HTTPAddr(), 20)
}

// TestPhoneSwitchAcrossNodes: the same on three pusher nodes over a NATS
// cluster, the silent connection on node 1 and the new one on node 2.
func TestPhoneSwitchAcrossNodes(t *testing.T) {
	// The defaults: the fault tests' 2 s ack wait would have JetStream
	// redeliver what awaits its pong, which is not this scenario.
	m := startMultiNodeEnv(t, map[string]string{"PUSHER_ACK_WAIT": "30s", "PUSHER_BACKOFF": "1s,5s,30s"})
	silentLink(t, m.http[0], "phone")
	// Node 1's interest in the uid must have reached every NATS node, or
	// the messages would find no responders and wait in PUSH_DLQ instead.
	m.nats.WaitInterest(t, []string{wire.DeliverSubject("phone")}, 1, 10*time.Second)
	phoneSwitch(t, "phone-switch-cluster", m.nats.URLs(0), m.http[0], m.http[1], 20)
}

// TestDeadCrowdDoesNotStallOthers: 1,000 phones go silent at once, each is
// sent messages, and 100 healthy users keep getting theirs meanwhile, all
// of them before the first dead connection is even given up on. The dead
// ones' messages end in PUSH_DLQ; nothing is lost.
func TestDeadCrowdDoesNotStallOthers(t *testing.T) {
	const (
		dead, perDead       = 1000, 5
		healthy, perHealthy = 100, 20
	)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), Env: map[string]string{"PUSHER_LOG_DELIVERED": "false"}})
	deadUIDs, okUIDs := uidRange("dead", dead), uidRange("ok", healthy)
	proxy, err := netfault.Listen(p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	dialDead(t, proxy.Addr(), deadUIDs)
	for _, l := range proxy.Links() {
		l.Silence()
	}
	rec := harness.NewRecorder()
	harness.StartClients(t, p.HTTPAddr(), okUIDs, nil, rec)
	rec.WaitOnline(t, healthy, 30*time.Second)

	deadMsgs := prefixed("d", harness.TextMsgs(dead*perDead, deadUIDs))
	okMsgs := prefixed("h", harness.TextMsgs(healthy*perHealthy, okUIDs))
	start := time.Now()
	deadPub := harness.StartPublisher(t, p.NATSURL(), deadMsgs, 60*time.Second)
	okPub := harness.StartPublisher(t, p.NATSURL(), okMsgs, 60*time.Second)
	okAcked := okPub.Wait(t)
	if err := rec.AwaitReceived(okAcked, 30*time.Second); err != nil {
		t.Fatalf("healthy users: %v", err)
	}
	took := time.Since(start)
	m := harness.ScrapeT(t, p.HTTPAddr())
	if n := m.Sum("pusher_unresponsive_closes_total"); n != 0 || took >= 10*time.Second {
		t.Fatalf("healthy users got everything after %s, with %v dead connections already given up on: "+
			"they waited for the dead ones", took, n)
	}
	inflight := m.Sum("pusher_inflight_messages")
	t.Logf("%d healthy messages delivered in %s while %d dead phones held %v messages in flight",
		len(okAcked), took.Round(time.Millisecond), dead, inflight)

	deadAcked := deadPub.Wait(t)
	all := map[string]struct{}{}
	for id := range okAcked {
		all[id] = struct{}{}
	}
	for id := range deadAcked {
		all[id] = struct{}{}
	}
	f := harness.Account(t, "dead-crowd", p.NATSURL(), all, rec, 90*time.Second)
	t.Logf("dead crowd: %d in PUSH_DLQ after %s; %d unresponsive closes", f.DLQ, time.Since(start).Round(100*time.Millisecond),
		int(harness.ScrapeT(t, p.HTTPAddr()).Sum("pusher_unresponsive_closes_total")))
	if f.DLQ != len(deadAcked) {
		t.Errorf("%d of the dead phones' %d messages in PUSH_DLQ", f.DLQ, len(deadAcked))
	}
}

// dialDead connects each uid through addr and keeps reading, until every
// connection is up; the caller silences them.
func dialDead(t *testing.T, addr string, uids []string) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, uid := range uids {
		h := http.Header{"Authorization": {"Bearer " + harness.Token(t, uid, time.Hour)}}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", h)
			if err != nil {
				t.Errorf("dial %s: %v", uid, err)
				return
			}
			t.Cleanup(func() { _ = c.Close() })
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			}()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// prefixed gives msgs ids (and payloads) with prefix, so two sets of
// TextMsgs do not share ids.
func prefixed(prefix string, msgs []harness.Msg) []harness.Msg {
	for i := range msgs {
		msgs[i].ID = prefix + msgs[i].ID
		msgs[i].Data = []byte(msgs[i].ID)
	}
	return msgs
}
