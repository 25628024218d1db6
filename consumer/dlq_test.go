package consumer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/wire"
)

// Get reads one dead letter by its PUSH_DLQ sequence, malformed or not;
// Delete removes it for good, and deleting it again is no error.
func TestDLQGetAndDelete(t *testing.T) {
	nc, js := startJS(t)
	startConsumer(t, nc, js, newHub(t), consumer.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range []string{"one", "two"} {
		if _, err := js.Publish(ctx, "push.gone", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "2 dead letters", func() bool { return len(deadLetters(t, js, "gone")) == 2 })
	dls := deadLetters(t, js, "gone")
	dlq := consumer.NewDLQ(js)

	got, err := dlq.Get(ctx, dls[0].Seq)
	if err != nil || got.UID != "gone" || got.Reason != wire.ReasonOffline || string(got.Data) != "one" ||
		got.OriginalSeq != 1 || got.StoredAt.IsZero() {
		t.Fatalf("Get(%d) = %+v, %v", dls[0].Seq, got, err)
	}
	if err := dlq.Delete(ctx, dls[0].Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := dlq.Get(ctx, dls[0].Seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrMsgNotFound", err)
	}
	if err := dlq.Delete(ctx, dls[0].Seq); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	if left := deadLetters(t, js, "gone"); len(left) != 1 || string(left[0].Data) != "two" {
		t.Fatalf("left %+v, want the second one only", left)
	}

	ack, err := js.Publish(ctx, wire.DLQSubject("junk"), []byte("not a dead letter"))
	if err != nil {
		t.Fatal(err)
	}
	junk, err := dlq.Get(ctx, ack.Sequence)
	if !errors.Is(err, consumer.ErrMalformedDeadLetter) || junk.UID != "junk" || junk.Seq != ack.Sequence {
		t.Fatalf("Get of a malformed dead letter = %+v, %v", junk, err)
	}
}

// Replay counts bad_subject dead letters, leaves them in place and never
// asks keep about them: they name no user to ask about.
func TestReplayCountsBadSubject(t *testing.T) {
	nc, js := startJS(t)
	startConsumer(t, nc, js, newHub(t), consumer.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, subj := range []string{"push.a.b", "push.away"} {
		if _, err := js.Publish(ctx, subj, []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "2 dead letters", func() bool { return len(deadLetters(t, js, "")) == 2 })
	var asked []string
	keep := func(dl consumer.DeadLetter) bool { asked = append(asked, dl.UID); return false }
	res, err := consumer.NewDLQ(js).Replay(ctx, "", keep, nil, nil)
	if err != nil || res != (consumer.ReplayResult{BadSubject: 1}) {
		t.Fatalf("Replay = %+v, %v; want 1 bad_subject", res, err)
	}
	if len(asked) != 1 || asked[0] != "away" {
		t.Fatalf("keep asked about %q, want only away", asked)
	}
	if n := len(deadLetters(t, js, "")); n != 2 {
		t.Fatalf("%d dead letters left, want both", n)
	}
}

// Two replays of one user at once (two nodes in a connect storm): each
// dead letter is republished once, JetStream's "duplicate message id is
// in process" answer to the slower one is no error but counted as racing,
// and PUSH_DLQ ends empty.
func TestConcurrentReplaysOfOneUser(t *testing.T) {
	nc, js := startJS(t)
	c, _ := startConsumer(t, nc, js, newHub(t), consumer.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 300
	for i := range n {
		if _, err := js.PublishAsync("push.both", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	waitFor(t, 20*time.Second, "300 dead letters", func() bool { return len(deadLetters(t, js, "both")) == n })
	if err := c.Close(ctx); err != nil { // the replays stay in PUSH, not dead-lettered again
		t.Fatal(err)
	}

	results := make(chan consumer.ReplayResult, 2)
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			res, err := consumer.NewDLQ(js).Replay(ctx, "both", consumer.OnlyOffline, nil, nil)
			results <- res
			errs <- err
		}()
	}
	var replayed, racing int
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("replay: %v", err)
		}
		res := <-results
		replayed, racing = replayed+res.Replayed, racing+res.Racing
	}
	t.Logf("replayed %d, racing %d", replayed, racing)
	if left := deadLetters(t, js, "both"); len(left) != 0 {
		t.Fatalf("%d dead letters left", len(left))
	}
	info, err := js.Stream(ctx, "PUSH")
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != 2*n {
		t.Fatalf("PUSH holds %d messages, want %d: each dead letter republished once", got, 2*n)
	}
	if replayed < n {
		t.Fatalf("replayed %d in all, want at least %d", replayed, n)
	}
}
