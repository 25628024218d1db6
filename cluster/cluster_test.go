package cluster_test

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/pusher-io/pusher/cluster"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/natsserver"
	"github.com/pusher-io/pusher/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

// startNATS runs a fresh embedded nats-server on a random port.
func startNATS(t testing.TB) string {
	t.Helper()
	srv, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL()
}

// conn is a hub.Conn standing where a WebSocket connection stands: it
// "writes" at once, succeeding or failing with err.
type conn struct {
	err     error
	mu      sync.Mutex
	got     []string
	origins []string // "seq id published" of each message
	closed  []int
}

func (c *conn) Enqueue(m *hub.Message) bool {
	c.mu.Lock()
	c.got = append(c.got, string(m.Data))
	c.origins = append(c.origins, fmt.Sprint(m.Seq, " ", m.ID, " ", m.Published.UTC().Format(time.RFC3339Nano)))
	c.mu.Unlock()
	m.Finish(c.err)
	return true
}

func (c *conn) Close(code int, _ string) {
	c.mu.Lock()
	c.closed = append(c.closed, code)
	c.mu.Unlock()
}

func (c *conn) writes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.got...)
}

// replays records the uids a node asked to replay.
type replays chan string

func (r replays) TriggerReplay(uid string) { r <- uid }

// outcome is a hub.Reporter that keeps every report.
type outcome chan error

func (o outcome) Report(_ *hub.Message, err error) { o <- err }

// wait returns the one report, and fails if a second one comes.
func (o outcome) wait(t testing.TB, within time.Duration) error {
	t.Helper()
	var err error
	select {
	case err = <-o:
	case <-time.After(within):
		t.Fatalf("no outcome within %s", within)
	}
	select {
	case again := <-o:
		t.Fatalf("reported twice: %v, then %v", err, again)
	case <-time.After(50 * time.Millisecond):
	}
	return err
}

// testNode is one cluster.Node with its own hub and NATS connection.
type testNode struct {
	*cluster.Node
	hub     *hub.Hub
	nc      *nats.Conn
	replays replays
}

func newNode(t testing.TB, url string, cfg cluster.Config) *testNode {
	t.Helper()
	return newNodeWith(t, url, cfg, true)
}

// newNodeWith is newNode; without presence the hub does not tell the node
// when a uid comes or goes, so a test can leave a subscription behind.
func newNodeWith(t testing.TB, url string, cfg cluster.Config, presence bool) *testNode {
	t.Helper()
	opts := []nats.Option{}
	if cfg.Routing {
		opts = append(opts, nats.NoEcho())
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	n := &testNode{nc: nc, replays: make(replays, 100)}
	hcfg := hub.Config{}
	if presence {
		hcfg.OnPresence = func(uid string) { n.OnPresence(uid) }
	}
	n.hub, err = hub.New(hcfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Node, err = cluster.New(nc, n.hub, n.replays, zaptest.NewLogger(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	// A round trip, so the subscriptions Start made are known to the
	// server before the test publishes.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return n
}

// add connects c as uid on n and waits until NATS knows n holds uid: the
// subscription went out on n's connection, so a round trip on it
// (Flush) returns only after the server has it.
func (n *testNode) add(t testing.TB, uid string, c *conn) {
	t.Helper()
	if err := n.hub.Add(uid, c, nil); err != nil {
		t.Fatal(err)
	}
	if err := n.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func route(n *testNode, uid, data string) outcome {
	o := make(outcome, 2)
	n.Route(uid, &hub.Message{Data: []byte(data), Reporter: o})
	return o
}

func bystander(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestLocalRouting(t *testing.T) {
	n := newNode(t, startNATS(t), cluster.Config{})
	c := &conn{}
	if err := n.hub.Add("u", c, nil); err != nil {
		t.Fatal(err)
	}
	if err := route(n, "u", "hi").wait(t, time.Second); err != nil {
		t.Fatalf("online: %v", err)
	}
	if err := route(n, "nobody", "hi").wait(t, time.Second); !errors.Is(err, hub.ErrOffline) {
		t.Fatalf("offline: %v, want hub.ErrOffline", err)
	}
}

func TestRoutingOutcomes(t *testing.T) {
	url := startNATS(t)
	cfg := cluster.Config{Routing: true, Stall: 200 * time.Millisecond, Timeout: 10 * time.Second}
	a, b := newNode(t, url, cfg), newNode(t, url, cfg)
	errWrite := errors.New("broken pipe")

	a.add(t, "only-a", &conn{})
	b.add(t, "only-b", &conn{})
	bad := &conn{err: errWrite}
	a.add(t, "bad-a-good-b", bad)
	goodB := &conn{}
	b.add(t, "bad-a-good-b", goodB)
	a.add(t, "bad-both", &conn{err: errWrite})
	b.add(t, "bad-both", &conn{err: errWrite})

	tests := []struct {
		name    string
		uid     string
		want    error
		within  time.Duration
		minimum time.Duration // the outcome must not come sooner
	}{
		// Only this node holds it: delivered directly, NATS's no-responders
		// for the others changes nothing.
		{name: "local only", uid: "only-a", within: time.Second},
		{name: "remote only", uid: "only-b", within: time.Second},
		// Nobody holds it: offline at once, no timeout.
		{name: "offline everywhere", uid: "nobody", want: hub.ErrOffline, within: time.Second},
		// A fast local failure does not nak what the other node wrote.
		{name: "any success acks", uid: "bad-a-good-b", within: time.Second},
		// Both fail: a failure, once the other nodes had Stall to answer.
		{name: "all fail", uid: "bad-both", want: errWrite, within: 2 * time.Second, minimum: 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			err := route(a, tt.uid, tt.name).wait(t, tt.within)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("outcome %v, want %v", err, tt.want)
			}
			if took := time.Since(start); took < tt.minimum {
				t.Fatalf("settled after %s, before %s", took, tt.minimum)
			}
		})
	}
	if got := goodB.writes(); len(got) != 1 || got[0] != "any success acks" {
		t.Fatalf("node B wrote %q, want the message once", got)
	}
}

// A node whose uid left between the request's routing and its arrival
// answers "offline" at once: the requester dead-letters after Stall, not
// after Timeout.
func TestUIDThatLeftAnswersOfflineAtOnce(t *testing.T) {
	url := startNATS(t)
	cfg := cluster.Config{Routing: true, Stall: 100 * time.Millisecond, Timeout: time.Minute}
	a := newNode(t, url, cfg)
	b := newNodeWith(t, url, cfg, false)
	c := &conn{}
	if err := b.hub.Add("gone", c, nil); err != nil {
		t.Fatal(err)
	}
	b.OnPresence("gone") // subscribes
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The user leaves; B's subscription is still there, as it is for a
	// moment when a request races the leaving.
	b.hub.Remove("gone", c, nil)
	start := time.Now()
	err := route(a, "gone", "late").wait(t, 5*time.Second)
	if !errors.Is(err, hub.ErrOffline) {
		t.Fatalf("outcome %v, want offline", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %s: waited for the timeout", took)
	}
}

// A request nobody answers times out and is retried, not dead-lettered.
func TestSilentNodeTimesOut(t *testing.T) {
	url := startNATS(t)
	a := newNode(t, url, cluster.Config{Routing: true, Timeout: 200 * time.Millisecond})
	silent := bystander(t, url)
	if _, err := silent.Subscribe(wire.DeliverSubject("mute"), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := silent.Flush(); err != nil {
		t.Fatal(err)
	}
	err := route(a, "mute", "x").wait(t, 5*time.Second)
	if !errors.Is(err, hub.ErrTimeout) {
		t.Fatalf("outcome %v, want a timeout", err)
	}
}

func TestKickAnswersHowManyClosed(t *testing.T) {
	url := startNATS(t)
	n := newNode(t, url, cluster.Config{Name: "node-k"})
	c1, c2 := &conn{}, &conn{}
	_ = n.hub.Add("k", c1, nil)
	_ = n.hub.Add("k", c2, nil)
	reply, err := bystander(t, url).Request(wire.KickSubject("k"), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(reply.Data) != `{"closed":2,"node":"node-k"}` {
		t.Fatalf("reply %q", reply.Data)
	}
	for _, c := range []*conn{c1, c2} {
		c.mu.Lock()
		closed := fmt.Sprint(c.closed)
		c.mu.Unlock()
		if closed != fmt.Sprint([]int{wire.CloseKicked}) {
			t.Fatalf("closed with %s, want 4001", closed)
		}
	}
}

// An offline dead letter stored by any node is replayed by the node that
// holds the uid: this one directly, another through the notice.
func TestStoredOfflineReplaysWhereTheUIDIs(t *testing.T) {
	url := startNATS(t)
	cfg := cluster.Config{Routing: true}
	a, b := newNode(t, url, cfg), newNode(t, url, cfg)
	a.add(t, "here", &conn{})
	b.add(t, "there", &conn{})
	a.StoredOffline("here")
	a.StoredOffline("there")
	a.StoredOffline("nowhere")
	for _, w := range []struct {
		n   *testNode
		uid string
	}{{a, "here"}, {b, "there"}} {
		select {
		case got := <-w.n.replays:
			if got != w.uid {
				t.Fatalf("replayed %q, want %q", got, w.uid)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no replay for %s", w.uid)
		}
	}
	select {
	case got := <-a.replays:
		t.Fatalf("unexpected replay of %q", got)
	case got := <-b.replays:
		t.Fatalf("unexpected replay of %q", got)
	case <-time.After(100 * time.Millisecond):
	}
}

// A message delivered by another node keeps its seq, id and publish time
// (what a pusher.v1 client is told), on this node as on that one.
func TestDeliveryCarriesTheMessagesOrigin(t *testing.T) {
	url := startNATS(t)
	cfg := cluster.Config{Routing: true}
	a, b := newNode(t, url, cfg), newNode(t, url, cfg)
	onA, onB := &conn{}, &conn{}
	a.add(t, "u", onA)
	b.add(t, "u", onB)
	at := time.Date(2026, 11, 30, 1, 2, 3, 456000000, time.UTC)
	o := make(outcome, 2)
	a.Route("u", &hub.Message{Data: []byte("x"), Seq: 42, ID: "order-7", Published: at, Reporter: o})
	if err := o.wait(t, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	want := "42 order-7 2026-11-30T01:02:03.456Z"
	for name, c := range map[string]*conn{"local": onA, "remote": onB} {
		// The first success settles the message; the other node's write
		// may still be on its way.
		harness.WaitFor(t, 5*time.Second, name+" write", func() error {
			c.mu.Lock()
			defer c.mu.Unlock()
			if len(c.origins) != 1 || c.origins[0] != want {
				return fmt.Errorf("saw %q, want %q", c.origins, want)
			}
			return nil
		})
	}
}

// gated is a connection whose writes wait until the gate opens.
type gated struct {
	conn
	gate    chan struct{}
	entered chan struct{}
}

func (g *gated) Enqueue(m *hub.Message) bool {
	g.entered <- struct{}{}
	<-g.gate
	return g.conn.Enqueue(m)
}

// A node that stops answers the delivery requests still queued for its
// workers, so the requester retries at once instead of waiting out its
// timeout (in a rolling restart that wait held the next node's shutdown).
func TestClosingNodeAnswersQueuedRequests(t *testing.T) {
	url := startNATS(t)
	cfg := cluster.Config{Routing: true, Timeout: time.Minute, Stall: 100 * time.Millisecond}
	a := newNode(t, url, cfg)
	bcfg := cfg
	bcfg.Workers = 1
	b := newNode(t, url, bcfg)
	g := &gated{gate: make(chan struct{}), entered: make(chan struct{}, 10)}
	if err := b.hub.Add("busy", g, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	outs := []outcome{route(a, "busy", "m0")}
	<-g.entered // B's only worker is writing m0; the rest queue
	for i := 1; i < 6; i++ {
		outs = append(outs, route(a, "busy", fmt.Sprint("m", i)))
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil { // B's client has read the requests
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { b.Close(); close(closed) }()
	// Close unsubscribes, then stops the workers; the blocked worker can
	// take no more, so the queued requests are left to Close.
	for b.nc.NumSubscriptions() > 0 {
		runtime.Gosched()
	}
	close(g.gate)
	<-closed
	for i, o := range outs {
		err := o.wait(t, 5*time.Second) // the timeout is a minute: an answer, not the timeout
		if i == 0 && err != nil {
			t.Fatalf("m0 was written: %v", err)
		}
		if errors.Is(err, hub.ErrTimeout) {
			t.Fatalf("m%d timed out", i)
		}
	}
}

// A leaving node keeps a departed uid's delivery subscription until
// Close and answers it "offline": in a NATS cluster a request may still
// be routed to it while its unsubscription spreads, and one that found
// no subscription would be dropped, its sender waiting out its timeout.
func TestLeavingNodeAnswersForDepartedUIDs(t *testing.T) {
	url := startNATS(t)
	b := newNode(t, url, cluster.Config{Routing: true})
	c := &conn{}
	b.add(t, "leaving", c)
	b.Leave()
	b.hub.Remove("leaving", c, nil)
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	asker := bystander(t, url)
	reply, err := asker.Request(wire.DeliverSubject("leaving"), []byte("late"), 5*time.Second)
	if err != nil || string(reply.Data) != "offline" {
		t.Fatalf("request after the uid left a leaving node: %v %v, want the answer offline", reply, err)
	}
	if _, err := asker.Request(wire.OnlineSubject("leaving"), nil, time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("online query: %v, want no responders (only delivery is kept)", err)
	}
	b.Close()
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := asker.Request(wire.DeliverSubject("leaving"), []byte("later"), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("after Close: %v, want no responders", err)
	}
}

// A leaving node does not wait out the full timeout for an answer that
// may never come: after leavingPatience the message is retried.
func TestLeavingNodeGivesUpOnSilentRequestsSooner(t *testing.T) {
	url := startNATS(t)
	a := newNode(t, url, cluster.Config{Routing: true, Timeout: time.Minute, Stall: 100 * time.Millisecond})
	silent := bystander(t, url)
	if _, err := silent.Subscribe(wire.DeliverSubject("lost"), func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := silent.Flush(); err != nil {
		t.Fatal(err)
	}
	o := route(a, "lost", "x")
	a.Leave()
	start := time.Now()
	if err := o.wait(t, 10*time.Second); !errors.Is(err, hub.ErrTimeout) {
		t.Fatalf("outcome %v, want a timeout", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("took %s: the full timeout, not the leaving node's patience", took)
	}
}
