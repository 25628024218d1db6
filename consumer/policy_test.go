package consumer_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/wire"
)

// The publisher's per-message policy (Pusher-TTL, Pusher-Offline) and the
// per-user dead-letter cap, against a real JetStream.

// publishWith publishes data for uid with headers (key, value, ...).
func publishWith(t testing.TB, js jetstream.JetStream, uid, data string, kv ...string) (uint64, time.Time) {
	t.Helper()
	m := nats.NewMsg(wire.PushSubject(uid))
	m.Data = []byte(data)
	for i := 0; i < len(kv); i += 2 {
		m.Header.Set(kv[i], kv[i+1])
	}
	at := time.Now()
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence, at
}

// allSettled reports whether consumer "pusher" has nothing left to
// deliver and nothing awaiting an ack (or a delayed redelivery).
func allSettled(t testing.TB, js jetstream.JetStream) func() bool { return settledThrough(t, js, 0) }

// settledThrough is allSettled once every message up to seq is acked.
func settledThrough(t testing.TB, js jetstream.JetStream, seq uint64) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := js.Consumer(ctx, wire.StreamName, wire.DurableName)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= seq
	}
}

func payloads(dls []consumer.DeadLetter) []string {
	out := make([]string, len(dls))
	for i, dl := range dls {
		out[i] = string(dl.Data)
	}
	return out
}

// TestTTLPassedWhileAwayIsNotReplayed: three messages are dead-lettered
// while the user is away; one had a TTL that passes before the user is
// back. The user gets the other two; the expired one is removed from
// PUSH_DLQ, not replayed.
func TestTTLPassedWhileAwayIsNotReplayed(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	_, node := startConsumer(t, nc, js, h, consumer.Config{})
	_, at := publishWith(t, js, "away", "short", wire.HeaderTTL, "1s")
	publishWith(t, js, "away", "long", wire.HeaderTTL, "1h")
	publishWith(t, js, "away", "forever")
	waitFor(t, 10*time.Second, "3 dead letters", func() bool { return len(deadLetters(t, js, "away")) == 3 })
	for _, dl := range deadLetters(t, js, "away") {
		if string(dl.Data) == "short" && dl.Header.Get(wire.HeaderTTL) != "1s" {
			t.Fatalf("the dead letter lost its %s: %v", wire.HeaderTTL, dl.Header)
		}
	}
	time.Sleep(time.Until(at.Add(1100 * time.Millisecond))) // the short TTL passes while away
	c := newRecConn(false)
	if err := h.Add("away", c, nil); err != nil {
		t.Fatal(err)
	}
	node.replayer.TriggerReplay("away")
	for _, want := range []string{"long", "forever"} {
		select {
		case got := <-c.writes:
			if got != want {
				t.Fatalf("replayed %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q not replayed", want)
		}
	}
	waitFor(t, 10*time.Second, "DLQ empty", func() bool { return len(deadLetters(t, js, "away")) == 0 })
	waitFor(t, 10*time.Second, "all settled", allSettled(t, js))
	select {
	case got := <-c.writes:
		t.Fatalf("%q delivered after its TTL", got)
	default:
	}
}

// TestTTLChecksEveryDelivery: a message with a TTL is delivered while it
// is fresh; one whose first delivery failed and whose TTL passed before
// the retry is dropped at the retry, acked, and never dead-lettered.
func TestTTLChecksEveryDelivery(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	startConsumer(t, nc, js, h, consumer.Config{Backoff: []time.Duration{time.Second}})
	live := newRecConn(false)
	_ = h.Add("live", live, nil)
	publishWith(t, js, "live", "fresh", wire.HeaderTTL, "60")
	select {
	case got := <-live.writes:
		if got != "fresh" {
			t.Fatalf("got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a fresh message with a TTL was not delivered")
	}
	broken := newRecConn(true)
	_ = h.Add("flaky", broken, nil)
	seq, _ := publishWith(t, js, "flaky", "stale soon", wire.HeaderTTL, "300ms")
	<-broken.writes // the first delivery fails; the retry comes 1s later
	waitFor(t, 10*time.Second, "the expired retry acked", settledThrough(t, js, seq))
	if n := len(broken.writes); n != 0 {
		t.Fatalf("%d more deliveries after the TTL passed", n)
	}
	if dls := deadLetters(t, js, "flaky"); len(dls) != 0 {
		t.Fatalf("an expired message was dead-lettered: %v", payloads(dls))
	}
}

// TestOfflineDropIsNeverStored: with Pusher-Offline: drop, a message for
// a user with no connection is acked and gone; without it, stored. A
// malformed policy counts as absent: stored, with its headers.
func TestOfflineDropIsNeverStored(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	startConsumer(t, nc, js, h, consumer.Config{})
	publishWith(t, js, "gone", "typing...", wire.HeaderOffline, "drop")
	publishWith(t, js, "gone", "typo keeps it", wire.HeaderOffline, "dorp", wire.HeaderTTL, "soon")
	publishWith(t, js, "gone", "stored", wire.HeaderOffline, "store")
	waitFor(t, 10*time.Second, "all settled", allSettled(t, js))
	waitFor(t, 10*time.Second, "2 dead letters", func() bool { return len(deadLetters(t, js, "gone")) == 2 })
	dls := deadLetters(t, js, "gone")
	if got := fmt.Sprint(payloads(dls)); got != "[typo keeps it stored]" {
		t.Fatalf("PUSH_DLQ holds %s, want [typo keeps it stored]", got)
	}
	if dls[0].Header.Get(wire.HeaderOffline) != "dorp" || dls[0].Expired(time.Now().Add(1000*time.Hour)) {
		t.Fatalf("the malformed policy was not kept as absent: %v", dls[0].Header)
	}

	// Online, Pusher-Offline: drop changes nothing.
	c := newRecConn(false)
	_ = h.Add("here", c, nil)
	publishWith(t, js, "here", "typing...", wire.HeaderOffline, "drop")
	select {
	case <-c.writes:
	case <-time.After(10 * time.Second):
		t.Fatal("an offline-drop message for an online user was not delivered")
	}
}

// TestDLQCapKeepsTheNewest: PUSH_DLQ keeps DLQMaxPerUID dead letters per
// user, the newest; an existing stream is updated in place; other users'
// dead letters do not count against it.
func TestDLQCapKeepsTheNewest(t *testing.T) {
	nc, js := startJS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := consumer.EnsureTopology(ctx, js, consumer.Topology{}); err != nil {
		t.Fatal(err)
	}
	h := newHub(t)
	startConsumer(t, nc, js, h, consumer.Config{Topology: consumer.Topology{DLQMaxPerUID: 3}})
	s, err := js.Stream(ctx, wire.DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxMsgsPerSubject; got != 3 {
		t.Fatalf("PUSH_DLQ MaxMsgsPerSubject %d after the update, want 3", got)
	}
	for i := range 8 {
		publishWith(t, js, "week-away", strconv.Itoa(i))
	}
	publishWith(t, js, "other", "mine")
	waitFor(t, 10*time.Second, "all settled", allSettled(t, js))
	waitFor(t, 10*time.Second, "the other user's dead letter", func() bool { return len(deadLetters(t, js, "other")) == 1 })
	if got := fmt.Sprint(payloads(deadLetters(t, js, "week-away"))); got != "[5 6 7]" {
		t.Fatalf("PUSH_DLQ keeps %s for the user, want the newest three [5 6 7]", got)
	}
}

// TestConnectStormListsDeadLettersOnce: 300 users connect at once, 30 of
// them with offline dead letters. Each of the 30 gets its message, and
// the replayer asks PUSH_DLQ who has dead letters in one listing rather
// than looking up each of the 300 (counted on JetStream's API subjects).
func TestConnectStormListsDeadLettersOnce(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	_, node := startConsumer(t, nc, js, h, consumer.Config{})
	for i := range 30 {
		publishWith(t, js, "storm"+strconv.Itoa(i*10), "while away")
	}
	waitFor(t, 10*time.Second, "30 dead letters", func() bool { return len(deadLetters(t, js, "")) == 30 })

	var gets, lists atomic.Int64
	spy, err := nc.Subscribe("$JS.API.>", func(m *nats.Msg) {
		switch {
		case strings.HasPrefix(m.Subject, "$JS.API.DIRECT.GET."+wire.DLQStreamName):
			gets.Add(1)
		case m.Subject == "$JS.API.STREAM.INFO."+wire.DLQStreamName && strings.Contains(string(m.Data), "subjects_filter"):
			lists.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = spy.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	conns := make([]*recConn, 300)
	for i := range conns {
		conns[i] = newRecConn(false)
		if err := h.Add("storm"+strconv.Itoa(i), conns[i], nil); err != nil {
			t.Fatal(err)
		}
	}
	// The connects' replay triggers, as a storm brings them: within
	// moments of each other.
	for i := range conns {
		node.replayer.TriggerReplay("storm" + strconv.Itoa(i))
	}
	for i := 0; i < 300; i += 10 {
		select {
		case <-conns[i].writes:
		case <-time.After(15 * time.Second):
			t.Fatalf("storm%d never got its dead letter", i)
		}
	}
	g, l := gets.Load(), lists.Load() // before this test's own look-ups below
	waitFor(t, 10*time.Second, "DLQ empty", func() bool { return len(deadLetters(t, js, "")) == 0 })
	// One listing; the walks of the 30 holders, bounded by it, one get
	// each (the listing says how many dead letters each has).
	if l != 1 || g != 30 {
		t.Fatalf("%d listings and %d direct gets for 300 connects with 30 holders; want 1 and 30", l, g)
	}
}
