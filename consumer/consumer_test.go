package consumer_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/pusher-io/pusher/cluster"
	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/natsserver"
	"github.com/pusher-io/pusher/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startJS runs a fresh embedded nats-server with JetStream on a random
// port and returns a connected JetStream client.
func startJS(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	srv, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// testNode is what a node wires around a Consumer: the hub, the router
// (cluster.Node on one node) and the replayer.
type testNode struct {
	hub      *hub.Hub
	router   *cluster.Node
	replayer *consumer.Replayer
}

// newTestNode wires a one-node router and replayer over h; both are
// closed in t.Cleanup.
func newTestNode(t testing.TB, nc *nats.Conn, js jetstream.JetStream, h *hub.Hub) *testNode {
	t.Helper()
	log := zaptest.NewLogger(t)
	rep, err := consumer.NewReplayer(consumer.NewDLQ(js), h.Online, log, consumer.ReplayerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	rep.Start()
	t.Cleanup(rep.Close)
	node, err := cluster.New(nc, h, rep, log, cluster.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	return &testNode{hub: h, router: node, replayer: rep}
}

// startConsumer starts a Consumer routing into h on one node; closed in
// t.Cleanup.
func startConsumer(t testing.TB, nc *nats.Conn, js jetstream.JetStream, h *hub.Hub, cfg consumer.Config) (*consumer.Consumer, *testNode) {
	t.Helper()
	n := newTestNode(t, nc, js, h)
	return startConsumerWith(t, js, n.router, cfg), n
}

func startConsumerWith(t testing.TB, js jetstream.JetStream, router consumer.Router, cfg consumer.Config) *consumer.Consumer {
	t.Helper()
	c, err := consumer.New(js, router, zaptest.NewLogger(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Close(ctx); err != nil {
			t.Errorf("close consumer: %v", err)
		}
	})
	return c
}

// recConn is a connection that writes instantly, failing or not. It is
// our own hub.Conn, standing where ws's connection stands, so retries
// can be driven without breaking a socket on cue.
type recConn struct {
	mu     sync.Mutex
	fail   bool
	got    []string
	seen   []origin // what each write was told of the message
	writes chan string
}

// origin is what a connection is told of a message besides its payload.
type origin struct {
	seq       uint64
	id        string
	published time.Time
}

func newRecConn(fail bool) *recConn { return &recConn{fail: fail, writes: make(chan string, 10000)} }

// Enqueue "writes" at once and in order, as a connection's single writer
// would; hub allows the outcome to be reported before Route returns.
func (c *recConn) Enqueue(m *hub.Message) bool {
	c.mu.Lock()
	fail := c.fail
	c.got = append(c.got, string(m.Data))
	c.seen = append(c.seen, origin{m.Seq, m.ID, m.Published})
	c.mu.Unlock()
	c.writes <- string(m.Data)
	if fail {
		m.Finish(errors.New("broken pipe"))
	} else {
		m.Finish(nil)
	}
	return true
}

func (c *recConn) Close(int, string) {}

func newHub(t testing.TB) *hub.Hub {
	h, err := hub.New(hub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func deadLetters(t testing.TB, js jetstream.JetStream, uid string) []consumer.DeadLetter {
	t.Helper()
	var out []consumer.DeadLetter
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := consumer.NewDLQ(js).Each(ctx, uid, func(dl consumer.DeadLetter, err error) error {
		if err != nil {
			t.Errorf("malformed dead letter %d: %v", dl.Seq, err)
		}
		out = append(out, dl)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteFailureIsRetriedThenDeadLettered(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	bad := newRecConn(true)
	if err := h.Add("u1", bad); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, nc, js, h, consumer.Config{MaxDeliver: 3, Backoff: []time.Duration{20 * time.Millisecond}})
	ctx := context.Background()
	if _, err := js.Publish(ctx, "push.u1", []byte("doomed")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a dead letter", func() bool { return len(deadLetters(t, js, "u1")) == 1 })
	dl := deadLetters(t, js, "u1")[0]
	if dl.Reason != wire.ReasonMaxDeliver || dl.Deliveries != 3 || string(dl.Data) != "doomed" || dl.OriginalSeq != 1 {
		t.Fatalf("dead letter %+v", dl)
	}
	bad.mu.Lock()
	attempts := len(bad.got)
	bad.mu.Unlock()
	if attempts != 3 {
		t.Fatalf("%d write attempts, want MaxDeliver = 3", attempts)
	}
	// The original is settled: nothing pending or awaiting ack.
	cons, _ := js.Consumer(ctx, wire.StreamName, wire.DurableName)
	waitFor(t, 5*time.Second, "ack floor", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
}

func TestRetrySucceedsWhenTheConnectionRecovers(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	flaky := newRecConn(true)
	_ = h.Add("u1", flaky)
	startConsumer(t, nc, js, h, consumer.Config{MaxDeliver: 5, Backoff: []time.Duration{50 * time.Millisecond}})
	if _, err := js.Publish(context.Background(), "push.u1", []byte("eventually")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-flaky.writes:
	case <-time.After(5 * time.Second):
		t.Fatal("no first attempt")
	}
	flaky.mu.Lock()
	flaky.fail = false
	flaky.mu.Unlock()
	select {
	case got := <-flaky.writes:
		if got != "eventually" {
			t.Fatalf("redelivered %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not redelivered after back-off")
	}
	if n := len(deadLetters(t, js, "u1")); n != 0 {
		t.Fatalf("%d dead letters for a message that was delivered", n)
	}
}

func TestDeletedConsumerIsRecreated(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	c := newRecConn(false)
	_ = h.Add("u1", c)
	cons, _ := startConsumer(t, nc, js, h, consumer.Config{MonitorInterval: 100 * time.Millisecond})
	ctx := context.Background()
	if err := js.DeleteConsumer(ctx, wire.StreamName, wire.DurableName); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "consumer recreated", func() bool {
		_, err := js.Consumer(ctx, wire.StreamName, wire.DurableName)
		return err == nil && cons.Ready()
	})
	if _, err := js.Publish(ctx, "push.u1", []byte("after")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-c.writes:
		if got != "after" {
			t.Fatalf("got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing delivered after the consumer was recreated")
	}
}

// TestConnectRacingDeadLetterIsReplayed connects a uid while its message is
// being dead-lettered as offline, many times over: every message must end
// up written, none stranded in the DLQ.
func TestConnectRacingDeadLetterIsReplayed(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	_, node := startConsumer(t, nc, js, h, consumer.Config{})
	const n = 50
	ctx := context.Background()
	conns := make([]*recConn, n)
	for i := range n {
		uid := "race" + strconv.Itoa(i)
		if _, err := js.Publish(ctx, wire.PushSubject(uid), []byte(uid)); err != nil {
			t.Fatal(err)
		}
		// Connect as the ws handler does: register, then ask for replay.
		conns[i] = newRecConn(false)
		if err := h.Add(uid, conns[i]); err != nil {
			t.Fatal(err)
		}
		node.replayer.TriggerReplay(uid)
	}
	for i := range n {
		select {
		case got := <-conns[i].writes:
			if got != "race"+strconv.Itoa(i) {
				t.Fatalf("conn %d got %q", i, got)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("uid race%d never got its message; DLQ holds %d", i, len(deadLetters(t, js, "race"+strconv.Itoa(i))))
		}
	}
	waitFor(t, 10*time.Second, "DLQ empty", func() bool { return len(deadLetters(t, js, "")) == 0 })
}

func TestReplayRepublishesAndDeletes(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	startConsumer(t, nc, js, h, consumer.Config{})
	ctx := context.Background()
	for i := range 5 {
		if _, err := js.Publish(ctx, "push.later", []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "5 dead letters", func() bool { return len(deadLetters(t, js, "later")) == 5 })
	c := newRecConn(false)
	_ = h.Add("later", c)
	var progress []int
	n, skipped, err := consumer.NewDLQ(js).Replay(ctx, "later", consumer.AllReplayable, func(i int) { progress = append(progress, i) })
	if err != nil || n != 5 || skipped != 0 || len(progress) != 5 {
		t.Fatalf("Replay = %d, %d, %v (progress %v)", n, skipped, err, progress)
	}
	for i := range 5 {
		select {
		case got := <-c.writes:
			if got != strconv.Itoa(i) {
				t.Fatalf("replayed out of order: %q at %d", got, i)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("replayed message not delivered")
		}
	}
	waitFor(t, 5*time.Second, "DLQ empty", func() bool { return len(deadLetters(t, js, "later")) == 0 })
}

// A message replayed from PUSH_DLQ reaches the connection as it was
// first published: its seq, its Nats-Msg-Id and its publish time, so a
// pusher.v1 client can de-duplicate it.
func TestReplayKeepsTheMessagesOrigin(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	startConsumer(t, nc, js, h, consumer.Config{})
	ctx := context.Background()
	ack, err := js.Publish(ctx, "push.back", []byte("hello"), jetstream.WithMsgID("order-7"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a dead letter", func() bool { return len(deadLetters(t, js, "back")) == 1 })
	stream, err := js.Stream(ctx, wire.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	c := newRecConn(false)
	_ = h.Add("back", c)
	if _, _, err := consumer.NewDLQ(js).Replay(ctx, "back", consumer.AllReplayable, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.writes:
	case <-time.After(10 * time.Second):
		t.Fatal("replay not delivered")
	}
	c.mu.Lock()
	got := c.seen[0]
	c.mu.Unlock()
	if got.seq != ack.Sequence || got.id != "order-7" || !got.published.Equal(first.Time) {
		t.Fatalf("replay seen as %+v; want seq %d, id order-7, published %v", got, ack.Sequence, first.Time)
	}
}

// panicRouter panics for one uid and routes the rest as one node does.
type panicRouter struct {
	*cluster.Node
	bad string
}

func (r panicRouter) Route(uid string, m *hub.Message) {
	if uid == r.bad {
		panic("router bug for " + uid)
	}
	r.Node.Route(uid, m)
}

func TestPanicInDispatchIsContained(t *testing.T) {
	nc, js := startJS(t)
	h := newHub(t)
	good := newRecConn(false)
	_ = h.Add("good", good)
	node := newTestNode(t, nc, js, h)
	c, err := consumer.New(js, panicRouter{node.router, "boom"}, zaptest.NewLogger(t), consumer.Config{Backoff: []time.Duration{time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"push.boom", "push.good"} {
		if _, err := js.Publish(ctx, subj, []byte(subj)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-good.writes:
		if got != "push.good" {
			t.Fatalf("got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a panic for one uid stopped delivery to another")
	}
	// The panicking message is nacked (parked for the back-off), not lost
	// and not counted as in flight forever: Close finishes.
	if err := c.Close(ctx); err != nil {
		t.Fatalf("close after a contained panic: %v", err)
	}
	cons, _ := js.Consumer(ctx, wire.StreamName, wire.DurableName)
	info, err := cons.Info(ctx)
	if err != nil || info.NumAckPending != 1 {
		t.Fatalf("ack pending %d (%v), want the panicking message parked", info.NumAckPending, err)
	}
}
