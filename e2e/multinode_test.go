//go:build e2e

package e2e

// Multi-node tests: three nats-server processes forming one JetStream
// cluster, three pusher processes on it (cluster routing through NATS
// subject interest), reconnecting clients spread over the pusher nodes the
// way a load balancer would, and one publisher per NATS node. Faults: a
// pusher node SIGKILLed mid-stream and not restarted, a NATS node
// SIGKILLed mid-stream. Every acked message is accounted for: received by
// a client (per client, for users connected to two nodes) or in PUSH_DLQ,
// never lost. The process, client, publisher and accounting helpers live
// in the harness package.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/wire"
)

// clusterSize is the number of NATS nodes and of pusher nodes.
const clusterSize = 3

// multiNode is a NATS cluster with clusterSize pusher nodes on it.
type multiNode struct {
	nats    *harness.Cluster
	bin     string            // the pusher binary
	pushers []*harness.Pusher // by node; nil until launched
	http    []string          // each pusher's HTTP address, reserved up front
	// natsURL, when set, is pusher node i's PUSHER_NATS_URL; by default
	// every NATS node, starting with node i.
	natsURL func(i int) string
	// env is added to every pusher's faultEnv.
	env map[string]string
}

// startMultiNode starts the NATS cluster and the pusher nodes, each with
// every NATS URL (starting with a different node; nats.go shuffles the
// list anyway, so which node a pusher uses is random), R3 streams and
// routing left on auto. pusher-1 starts first and creates the topology,
// then the other two start together and find it: a simultaneous start on
// a fresh cluster can cost a node a 10s topology attempt (see
// TestMultiNodeConcurrentStart).
func startMultiNode(t testing.TB) *multiNode {
	t.Helper()
	return startMultiNodeEnv(t, nil)
}

// startMultiNodeEnv is startMultiNode with env added to every pusher's.
func startMultiNodeEnv(t testing.TB, env map[string]string) *multiNode {
	t.Helper()
	m := newMultiNode(t)
	m.env = env
	m.launchPusher(t, 0)
	m.waitPushersReady(t, 0)
	m.launchPusher(t, 1)
	m.launchPusher(t, 2)
	m.waitPushersReady(t, 1, 2)
	return m
}

// newMultiNode starts the NATS cluster (nats-server flags extra) and
// builds pusher; no pusher runs.
func newMultiNode(t testing.TB, extra ...string) *multiNode {
	t.Helper()
	return &multiNode{
		nats:    harness.StartCluster(t, harness.ClusterConfig{Bin: bins.NATSServerBin(t), Size: clusterSize, Args: extra}),
		bin:     bins.PusherBin(t),
		pushers: make([]*harness.Pusher, clusterSize),
		http:    harness.Addrs(t, clusterSize),
	}
}

// launchPusher starts pusher node i without waiting for it.
func (m *multiNode) launchPusher(t testing.TB, i int) {
	t.Helper()
	url := m.nats.URLs(i)
	if m.natsURL != nil {
		url = m.natsURL(i)
	}
	m.pushers[i] = harness.LaunchPusherT(t, harness.PusherConfig{
		Bin: m.bin, Name: "pusher-" + strconv.Itoa(i+1), HTTPAddr: m.http[i],
		NATSURL: url, Replicas: clusterSize, Env: faultEnv(m.env),
	})
}

// waitPushersReady waits until every pusher node in nodes is ready, and
// checks that its pusher.ready line says cluster routing on external NATS,
// on the node's address.
func (m *multiNode) waitPushersReady(t testing.TB, nodes ...int) {
	t.Helper()
	for _, i := range nodes {
		m.pushers[i].WaitReadyT(t)
		m.checkReadyLine(t, i)
	}
}

// checkReadyLine waits for pusher node i's pusher.ready line (logs are
// flushed within a second) and fails t unless it says cluster routing on
// external NATS, on the node's address. It returns the line.
func (m *multiNode) checkReadyLine(t testing.TB, i int) map[string]any {
	t.Helper()
	p := m.pushers[i]
	ready := p.Log().Wait(t, 5*time.Second, harness.EventReady, nil)
	if ready["cluster_routing"] != true || ready["embedded_nats"] != false {
		t.Fatalf("%s: %s line %v, want cluster_routing true and embedded_nats false", p.Name(), harness.EventReady, ready)
	}
	if got := ready["http_addr"]; got != m.http[i] {
		t.Fatalf("%s listens on %v, want %s", p.Name(), got, m.http[i])
	}
	return ready
}

// wsURLs are the pusher nodes' WebSocket URLs, in node order.
func (m *multiNode) wsURLs() []string {
	out := make([]string, len(m.http))
	for i, a := range m.http {
		out[i] = "ws://" + a + "/ws"
	}
	return out
}

// liveHTTP are the HTTP addresses of the pusher nodes that run.
func (m *multiNode) liveHTTP() []string {
	var out []string
	for i, p := range m.pushers {
		if p != nil && !p.Proc().Exited() {
			out = append(out, m.http[i])
		}
	}
	return out
}

// checkAlive fails the test if a process that should run has exited.
func (m *multiNode) checkAlive(t testing.TB, exceptPusher, exceptNATS int) {
	t.Helper()
	for i, p := range m.pushers {
		if i != exceptPusher && p != nil {
			if err := p.Proc().Alive(); err != nil {
				t.Error(err)
			}
		}
	}
	for i := range clusterSize {
		if i != exceptNATS {
			if err := m.nats.Proc(i).Alive(); err != nil {
				t.Error(err)
			}
		}
	}
}

// settled waits until the cluster's consumer and every running pusher
// node hold nothing in flight.
func (m *multiNode) settled(t testing.TB, timeout time.Duration) {
	t.Helper()
	harness.WaitSettled(t, m.nats.LiveURLs(), m.liveHTTP(), timeout)
}

// dlqByReason counts PUSH_DLQ's dead letters by reason, with a few ids
// of each. One attempt is bounded by a short timeout: right after a NATS
// node dies, a JetStream API request can go unanswered.
func dlqByReason(js jetstream.JetStream) (map[string]int, map[string][]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dlq, err := harness.DLQ(ctx, js)
	if err != nil {
		return nil, nil, err
	}
	counts, examples := map[string]int{}, map[string][]string{}
	for id, dl := range dlq {
		counts[dl.Reason]++
		if len(examples[dl.Reason]) < 5 {
			examples[dl.Reason] = append(examples[dl.Reason], id+"@"+dl.UID)
		}
	}
	return counts, examples, nil
}

// waitNoOfflineDeadLetters waits (bounded) until PUSH_DLQ holds no
// offline dead letter: every user is connected, so replay-on-connect or
// the replay notice must have delivered each. It returns the dead letters
// left by reason.
//
// When some are left, it logs what the pushers in trace (m's live ones if
// none) logged about their users, so a failure on a CI machine explains
// itself.
func waitNoOfflineDeadLetters(t testing.TB, m *multiNode, timeout time.Duration, trace ...*harness.Pusher) map[string]int {
	t.Helper()
	nc, js := harness.Connect(t, m.nats.LiveURLs())
	defer nc.Close()
	var (
		counts   map[string]int
		examples map[string][]string
		readErr  error
	)
	err := harness.Poll(context.Background(), timeout, "no offline dead letter in PUSH_DLQ", func() error {
		counts, examples, readErr = dlqByReason(js)
		if readErr != nil {
			return readErr
		}
		if n := counts[wire.ReasonOffline]; n > 0 {
			return fmt.Errorf("%d offline dead letters", n)
		}
		return nil
	})
	switch {
	case err == nil:
	case readErr != nil:
		t.Fatalf("read PUSH_DLQ: %v", readErr)
	default:
		t.Errorf("%d offline dead letters left in PUSH_DLQ %s after settling although every user is connected, e.g. %v",
			counts[wire.ReasonOffline], timeout, examples[wire.ReasonOffline])
		if len(trace) == 0 {
			trace = m.pushers
		}
		for _, ex := range examples[wire.ReasonOffline] {
			_, uid, _ := strings.Cut(ex, "@")
			logUIDLines(t, uid, trace)
		}
	}
	return counts
}

// logUIDLines logs, for a failure's diagnosis, the lines the pushers
// logged about uid, each with its process's name (at most 60 each).
func logUIDLines(t testing.TB, uid string, pushers []*harness.Pusher) {
	t.Helper()
	for _, p := range pushers {
		lines := p.Log().Find("", map[string]any{"uid": uid})
		for _, l := range lines[max(0, len(lines)-60):] {
			b, _ := json.Marshal(l)
			t.Logf("%s about %s: %s", p.Name(), uid, b)
		}
	}
}

// waitJetStreamAnswers waits until both streams have a leader that
// answers stream info and a direct get within a short timeout, after a
// NATS node died: a request sent while a leader is being elected is not
// answered at all, and the accounting's PUSH_DLQ scan would wait for it.
func waitJetStreamAnswers(t testing.TB, c *harness.Cluster, timeout time.Duration) {
	t.Helper()
	nc, js := harness.Connect(t, c.LiveURLs())
	defer nc.Close()
	for _, st := range []struct{ name, filter string }{
		{wire.StreamName, wire.PushSubjects},
		{wire.DLQStreamName, wire.DLQSubjects},
	} {
		harness.WaitFor(t, timeout, "stream "+st.name+" answering after the fault", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			s, err := js.Stream(ctx, st.name)
			if err != nil {
				return err
			}
			if info := s.CachedInfo(); info.Cluster == nil || info.Cluster.Leader == "" {
				return errors.New("no leader")
			}
			if _, err = s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(st.filter)); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return err
			}
			return nil
		})
	}
}

func idsOf(msgs []harness.Msg, keep func(harness.Msg) bool) map[string]struct{} {
	out := map[string]struct{}{}
	for _, m := range msgs {
		if keep(m) {
			out[m.ID] = struct{}{}
		}
	}
	return out
}

func intersect(a, b map[string]struct{}) map[string]struct{} {
	out := map[string]struct{}{}
	for k := range a {
		if _, ok := b[k]; ok {
			out[k] = struct{}{}
		}
	}
	return out
}

// TestMultiNodeConcurrentStart: every pusher node started at the same
// moment on a fresh cluster, as a deployment (or a restart of the whole
// fleet) does. Each sets up the same streams and consumer at once; on a
// fresh R3 cluster nats-server leaves some of such concurrent requests
// unanswered, so a node may need a second topology attempt (10s each),
// but each must get ready, and then deliver.
func TestMultiNodeConcurrentStart(t *testing.T) {
	// Two topology attempts and the back-off between them.
	const limit = 30 * time.Second
	m := newMultiNode(t)
	start := time.Now()
	for i := range clusterSize {
		m.launchPusher(t, i)
	}
	readyAt := make([]time.Duration, clusterSize)
	for i, p := range m.pushers {
		if err := p.WaitReady(context.Background(), limit-time.Since(start)); err != nil {
			t.Fatalf("%s not ready %s after a simultaneous start: %v\nstdout:\n%s", p.Name(), limit, err, harness.Tail(p.Log().String(), 30))
		}
		ready := m.checkReadyLine(t, i)
		ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(ready["ts"]))
		if err != nil {
			t.Fatalf("%s: %s ts: %v", p.Name(), harness.EventReady, err)
		}
		readyAt[i] = ts.Sub(start).Round(10 * time.Millisecond)
		for _, l := range p.Log().Find(harness.EventConsumerError, nil) {
			if l["attempt"] != nil {
				t.Logf("%s retried its topology setup: attempt %v: %v", p.Name(), l["attempt"], l["error"])
			}
		}
	}
	t.Logf("pusher nodes ready %v after a simultaneous start", readyAt)
	_, js := harness.Connect(t, m.nats.URL(0))
	checkDLQReadsFromLeader(t, js)
	for i, a := range m.http {
		uid := "cs" + strconv.Itoa(i)
		c := harness.DialWS(t, a, uid)
		m.nats.WaitInterest(t, []string{wire.DeliverSubject(uid)}, 1, 10*time.Second)
		harness.Publish(t, js, wire.PushSubject(uid), []byte("hello-"+uid))
		if _, got := harness.Read(t, c, 10*time.Second); string(got) != "hello-"+uid {
			t.Errorf("%s on pusher-%d got %q", uid, i+1, got)
		}
	}
}

// checkDLQReadsFromLeader checks that the replicated PUSH_DLQ does not
// allow direct gets: a replica answering one may not hold yet a dead
// letter the leader acked, and a connect that raced its storing would
// find nothing to replay (consumer.EnsureTopology).
func checkDLQReadsFromLeader(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, wire.DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := s.CachedInfo().Config; cfg.Replicas != clusterSize || cfg.AllowDirect {
		t.Errorf("%s: replicas %d, allow direct %v; want %d replicas read through the leader only",
			wire.DLQStreamName, cfg.Replicas, cfg.AllowDirect, clusterSize)
	}
}

// TestMultiNodeDeliveryAcrossNodes: 300 users spread over three pusher
// nodes plus 20 users connected to two nodes at once; 9,000 messages
// published through all three NATS nodes. Every client gets every message
// of its user, wherever the message was pulled.
func TestMultiNodeDeliveryAcrossNodes(t *testing.T) {
	const (
		users    = 300
		doubles  = 20
		messages = 9000
	)
	start := time.Now()
	m := startMultiNode(t)
	urls := m.wsURLs()

	single, double := uidRange("mu", users), uidRange("md", doubles)
	all := append(append([]string(nil), single...), double...)
	// One client per uid in first (node i%3); the double uids' second
	// client in second, on the next node.
	first, second := harness.NewRecorder(), harness.NewRecorder()
	harness.StartNodeClients(t, urls, all, func(i int) int { return i % clusterSize }, first, nil)
	harness.StartNodeClients(t, urls, double, func(i int) int { return (users + i + 1) % clusterSize }, second, nil)
	first.WaitOnline(t, len(all), 30*time.Second)
	second.WaitOnline(t, doubles, 30*time.Second)
	var doubleSubjects []string
	for _, u := range double {
		doubleSubjects = append(doubleSubjects, wire.DeliverSubject(u))
	}
	m.nats.WaitInterest(t, doubleSubjects, 2, 10*time.Second)
	for i, a := range m.http {
		want := float64(len(all) / clusterSize)
		if got := harness.ScrapeT(t, a).Sum("pusher_connections"); got < want {
			t.Errorf("pusher-%d holds %v connections, want at least %v", i+1, got, want)
		}
	}

	setup := time.Since(start)
	msgs := harness.TextMsgs(messages, all)
	pubStart := time.Now()
	pubs := harness.StartPublishers(t, m.nats, msgs, 120*time.Second)
	acked := pubs.Wait(t)
	pubStop := time.Now()
	pubs.Close()
	isDouble := map[string]bool{}
	for _, u := range double {
		isDouble[wire.PushSubject(u)] = true
	}
	doubleAcked := intersect(acked, idsOf(msgs, func(p harness.Msg) bool { return isDouble[p.Subject] }))

	// Bounded waits: the accounting then needs no PUSH_DLQ scan while the
	// cluster may still drop a JetStream API request; what is still
	// missing is left to it.
	_ = first.AwaitReceived(acked, 30*time.Second)
	_ = second.AwaitReceived(doubleAcked, 30*time.Second)
	f1 := harness.Account(t, "multinode/first-client", m.nats.LiveURLs(), acked, first, 60*time.Second)
	f2 := harness.Account(t, "multinode/second-client-of-double-uids", m.nats.LiveURLs(), doubleAcked, second, 60*time.Second)
	for _, f := range []struct {
		name string
		f    harness.Figures
	}{{"first clients", f1}, {"second clients", f2}} {
		if f.f.Received != f.f.Published {
			t.Errorf("%s received %d of %d acked messages (%d in PUSH_DLQ) without any fault", f.name, f.f.Received, f.f.Published, f.f.DLQ)
		}
	}
	// The per-client accounting holds only if no client reconnected: a
	// uid's message is acked once any of its connections took it.
	if n, want := first.Dials()+second.Dials(), len(all)+doubles; n != want {
		t.Errorf("clients connected %d times, want %d (no reconnects without a fault); close codes %v %v",
			n, want, first.CloseCodes(), second.CloseCodes())
	}
	m.settled(t, 30*time.Second)
	m.checkAlive(t, -1, -1)
	t.Logf("FIGURES multinode/summary: users=%d double_connected=%d messages=%d outcomes=%s setup=%s publish=%s publish_retries=%d total=%s",
		len(all), doubles, messages, clusterOutcomes(t, m), setup.Round(time.Millisecond), pubStop.Sub(pubStart).Round(time.Millisecond), pubs.Retries(), time.Since(start).Round(time.Millisecond))
}

// TestMultiNodePusherKilled: a pusher node is SIGKILLed once a third of
// 15,000 messages are acked, and stays down; its clients reconnect to the
// other nodes. Nothing acked may be lost, and no offline dead letter of a
// (reconnected) user may stay in PUSH_DLQ.
func TestMultiNodePusherKilled(t *testing.T) {
	const (
		users    = 300
		messages = 15000
		victim   = 1 // pusher-2
	)
	start := time.Now()
	m := startMultiNode(t)
	uids := uidRange("pk", users)
	rec, clock := harness.NewRecorder(), &harness.FrameClock{}
	harness.StartNodeClients(t, m.wsURLs(), uids, func(i int) int { return i % clusterSize }, rec, clock)
	rec.WaitOnline(t, users, 30*time.Second)
	setup := time.Since(start)

	pubs := harness.StartPublishers(t, m.nats, harness.TextMsgs(messages, uids), 150*time.Second)
	pubs.WaitAcked(t, messages/3, 60*time.Second)
	t.Logf("%d of %d acked when %s is killed", pubs.Acked(), messages, m.pushers[victim].Name())
	killedAt := time.Now()
	m.pushers[victim].Proc().KillT(t)
	rec.MarkRestart(killedAt, true)
	rec.WaitOnline(t, users, 30*time.Second) // the killed node's clients, reconnected elsewhere
	reconnected := time.Since(killedAt)

	acked := pubs.Wait(t)
	pubs.Close()
	published := time.Now()
	_ = rec.AwaitReceived(acked, 45*time.Second)
	f := harness.Account(t, "multinode/pusher-killed", m.nats.LiveURLs(), acked, rec, 90*time.Second)
	m.settled(t, 45*time.Second)
	left := waitNoOfflineDeadLetters(t, m, 20*time.Second)
	m.checkAlive(t, victim, -1)
	var conns []string
	for _, a := range m.liveHTTP() {
		conns = append(conns, fmt.Sprint(harness.ScrapeT(t, a).Sum("pusher_connections")))
	}
	t.Logf("FIGURES multinode/pusher-killed/summary: killed=%s clients_moved=%d connections_on_survivors=[%s] reconnected_all=%s recovery=%s max_delivery_gap=%s outcomes_on_survivors=%s dlq_left=%v close_codes=%v publish_retries=%d duplicates=%d setup=%s publish_done_after_kill=%s settle=%s total=%s",
		m.pushers[victim].Name(), rec.Dials()-users, strings.Join(conns, " "), reconnected.Round(time.Millisecond), rec.Recovery(), clock.MaxGapAfter(killedAt).Round(time.Millisecond),
		clusterOutcomes(t, m), left, rec.CloseCodes(), pubs.Retries(), f.Duplicates, setup.Round(time.Millisecond), published.Sub(killedAt).Round(time.Millisecond),
		time.Since(published).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// TestMultiNodeNATSNodeKilled: a NATS node is SIGKILLed once a third of
// 15,000 messages are acked; the publisher and the pusher nodes connected
// to it fail over to the other two, which keep the R3 streams. Nothing
// acked may be lost, and no offline dead letter may be left for a
// connected user. The node is then restarted and rejoins. Two victims:
// the consumer's leader (delivery waits for a new one), and a node that
// does not lead the consumer but holds pusher connections (delivery goes
// on while those pusher nodes reconnect).
func TestMultiNodeNATSNodeKilled(t *testing.T) {
	t.Run("victim=consumer-leader", func(t *testing.T) {
		natsNodeKilled(t, "multinode/nats-leader-killed", func(leader string, i int) bool { return leader == "nats-"+strconv.Itoa(i+1) })
	})
	t.Run("victim=follower-with-pushers", func(t *testing.T) {
		natsNodeKilled(t, "multinode/nats-follower-killed", func(leader string, i int) bool { return leader != "nats-"+strconv.Itoa(i+1) })
	})
}

// natsNodeKilled runs the NATS node kill with the victim picked among the
// nodes eligible(consumer leader, node): the one with most pusher
// connections.
func natsNodeKilled(t *testing.T, name string, eligible func(leader string, node int) bool) {
	const (
		users    = 300
		messages = 15000
	)
	start := time.Now()
	m := startMultiNode(t)
	uids := uidRange("nk", users)
	rec, clock := harness.NewRecorder(), &harness.FrameClock{}
	harness.StartNodeClients(t, m.wsURLs(), uids, func(i int) int { return i % clusterSize }, rec, clock)
	rec.WaitOnline(t, users, 30*time.Second)
	leader, victim, most := pickNATSVictim(t, m, eligible)
	setup := time.Since(start)

	pubs := harness.StartPublishers(t, m.nats, harness.TextMsgs(messages, uids), 150*time.Second)
	pubs.WaitAcked(t, messages/3, 60*time.Second)
	t.Logf("%d of %d acked when %s is killed (%d pusher connections on it; consumer leader %s)",
		pubs.Acked(), messages, m.nats.Name(victim), most, leader)
	killedAt := time.Now()
	m.nats.KillT(t, victim)
	ackedAtKill := pubs[victim].Acked()
	rec.MarkRestart(killedAt, false)
	harness.WaitFor(t, 60*time.Second, "the killed node's publisher acked again", func() error {
		if n := pubs[victim].Acked(); n == ackedAtKill && n != int64(len(pubs[victim].Msgs())) {
			return fmt.Errorf("still %d acked", n)
		}
		return nil
	})
	pubRecovered := time.Since(killedAt)

	acked := pubs.Wait(t)
	pubs.Close()
	published := time.Now()
	_ = rec.AwaitReceived(acked, 45*time.Second)
	waitJetStreamAnswers(t, m.nats, 30*time.Second)
	f := harness.Account(t, name, m.nats.LiveURLs(), acked, rec, 90*time.Second)
	m.settled(t, 45*time.Second)
	left := waitNoOfflineDeadLetters(t, m, 20*time.Second)
	settled := time.Now()
	m.checkAlive(t, -1, victim)

	m.nats.RestartT(t, victim)
	waitStreamsCurrent(t, m.nats, 30*time.Second)
	rejoined := time.Since(settled)
	// Informational: which pusher nodes reconnected to NATS (log lines are
	// flushed within a second).
	var moved []string
	for _, p := range m.pushers {
		if l := p.Log().Find(harness.EventNATSUp, nil); len(l) > 0 {
			moved = append(moved, fmt.Sprintf("%s->%v", p.Name(), l[0]["server"]))
		}
	}
	gap := clock.MaxGapAfter(killedAt)
	t.Logf("FIGURES %s/summary: killed=%s consumer_leader=%s pusher_conns_on_it=%d pushers_reconnected=%v publisher_recovery=%s recovery=%s max_delivery_gap=%s client_reconnects=%d outcomes=%s dlq_left=%v publish_retries=%d duplicates=%d setup=%s publish_done_after_kill=%s settle=%s rejoin=%s total=%s",
		name, m.nats.Name(victim), leader, most, moved, pubRecovered.Round(time.Millisecond), rec.Recovery(), gap.Round(time.Millisecond),
		rec.Dials()-users, clusterOutcomes(t, m), left, pubs.Retries(), f.Duplicates, setup.Round(time.Millisecond), published.Sub(killedAt).Round(time.Millisecond),
		settled.Sub(published).Round(time.Millisecond), rejoined.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	checkFailoverStall(t, m, gap, victim, leader)
}

// pickNATSVictim returns the consumer's leader and, among the nodes
// eligible(leader, node), the one with most pusher connections (and how
// many).
func pickNATSVictim(t *testing.T, m *multiNode, eligible func(leader string, node int) bool) (leader string, victim, most int) {
	t.Helper()
	leader = consumerLeader(t, m.nats)
	victim, most = -1, -1
	for i := range clusterSize {
		names, err := m.nats.ConnNames(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		if n := names["pusher"]; eligible(leader, i) && n > most {
			victim, most = i, n
		}
	}
	if victim < 0 {
		t.Fatalf("no eligible NATS node (consumer leader %q)", leader)
	}
	return leader, victim, most
}

// maxFailoverStall bounds how long no client may get a frame after a NATS
// node is killed: leader elections take a few seconds.
const maxFailoverStall = 15 * time.Second

// checkFailoverStall: delivery must go on within a bounded time: the
// streams keep a quorum, a new consumer leader is elected within seconds,
// and a pull parked at a dead leader is re-issued after two missed
// heartbeats.
func checkFailoverStall(t *testing.T, m *multiNode, gap time.Duration, victim int, leader string) {
	t.Helper()
	if gap <= maxFailoverStall {
		return
	}
	var stalled []string
	for _, p := range m.pushers {
		for _, l := range p.Log().Find(harness.EventConsumerError, nil) {
			stalled = append(stalled, fmt.Sprintf("%s %v: %v", p.Name(), l["ts"], l["error"]))
		}
	}
	t.Errorf("no client got a frame for %s after %s (consumer leader %s) was killed, bound %s; consumer errors: %v",
		gap.Round(time.Millisecond), m.nats.Name(victim), leader, maxFailoverStall, stalled)
}

// clusterOutcomes sums pusher_messages_total over the running pusher
// nodes (a killed node's counts are gone with it).
func clusterOutcomes(t testing.TB, m *multiNode) string {
	t.Helper()
	series := []struct{ name, outcome, reason string }{
		{"delivered", "delivered", ""},
		{"retried_timeout", "retried", wire.ReasonTimeout},
		{"retried_write_failed", "retried", wire.ReasonWriteFailed},
		{"retried_queue_full", "retried", wire.ReasonQueueFull},
		{"retried_deadletter_failed", "retried", wire.ReasonDeadLetterFailed},
		{"deadlettered_offline", "deadlettered", wire.ReasonOffline},
		{"deadlettered_max_deliver", "deadlettered", wire.ReasonMaxDeliver},
	}
	var byNode []string
	var all []harness.Metrics
	for _, a := range m.liveHTTP() {
		node := harness.ScrapeT(t, a)
		all = append(all, node)
		byNode = append(byNode, fmt.Sprint(node.Sum("pusher_messages_total", "outcome", "delivered", "reason", "")))
	}
	total := harness.Merge(all...)
	parts := []string{"delivered_by_node:[" + strings.Join(byNode, " ") + "]"}
	for _, s := range series {
		parts = append(parts, fmt.Sprintf("%s:%v", s.name, total.Sum("pusher_messages_total", "outcome", s.outcome, "reason", s.reason)))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// consumerLeader names the NATS node leading consumer pusher ("" if
// unknown).
func consumerLeader(t testing.TB, c *harness.Cluster) string {
	t.Helper()
	nc, js := harness.Connect(t, c.LiveURLs())
	defer nc.Close()
	leader, err := leaderOf(js, wire.StreamName, wire.DurableName)
	if err != nil {
		return ""
	}
	return leader
}

// leaderOf names the NATS node leading stream, or its consumer cons when
// cons is not empty.
func leaderOf(js jetstream.JetStream, stream, cons string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var cl *jetstream.ClusterInfo
	if cons == "" {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return "", err
		}
		cl = s.CachedInfo().Cluster
	} else {
		c, err := js.Consumer(ctx, stream, cons)
		if err != nil {
			return "", err
		}
		cl = c.CachedInfo().Cluster
	}
	if cl == nil {
		return "", errors.New("no cluster info")
	}
	return cl.Leader, nil
}

// moveLeader asks the leader of stream (or of its consumer cons) to step
// down until a leader that ok accepts is elected.
func moveLeader(t testing.TB, c *harness.Cluster, stream, cons string, ok func(leader string) bool) string {
	t.Helper()
	nc, js := harness.Connect(t, c.LiveURLs())
	defer nc.Close()
	subject := "$JS.API.STREAM.LEADER.STEPDOWN." + stream
	if cons != "" {
		subject = "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + cons
	}
	var leader string
	var lastDown time.Time
	harness.WaitFor(t, 60*time.Second, fmt.Sprintf("the leader of %s %s moved", stream, cons), func() error {
		var err error
		leader, err = leaderOf(js, stream, cons)
		switch {
		case err != nil:
			return err
		case leader == "":
			return errors.New("no leader")
		case ok(leader):
			return nil
		}
		// A new leader needs a moment before it can step down again.
		if time.Since(lastDown) > 2*time.Second {
			if _, err := nc.Request(subject, nil, 5*time.Second); err == nil {
				lastDown = time.Now()
			}
		}
		return fmt.Errorf("led by %s", leader)
	})
	return leader
}

// waitStreamsCurrent waits until both streams have a leader and every
// replica is current again (after a node rejoined); it fails t, without
// stopping it, when they are not within timeout.
func waitStreamsCurrent(t testing.TB, c *harness.Cluster, timeout time.Duration) {
	t.Helper()
	nc, js := harness.Connect(t, c.LiveURLs())
	defer nc.Close()
	for _, name := range []string{wire.StreamName, wire.DLQStreamName} {
		err := harness.Poll(context.Background(), timeout, "stream "+name+" fully replicated after the node rejoined", func() error {
			return streamCurrent(js, name, c.Size())
		})
		if err != nil {
			t.Error(err)
			return
		}
	}
}

// streamCurrent returns nil when stream has a leader and size-1 current
// replicas.
func streamCurrent(js jetstream.JetStream, name string, size int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	switch {
	case err != nil:
		return err
	case info.Cluster == nil || info.Cluster.Leader == "":
		return errors.New("no leader")
	case len(info.Cluster.Replicas) != size-1:
		return fmt.Errorf("%d replicas besides the leader", len(info.Cluster.Replicas))
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Current || r.Offline {
			return fmt.Errorf("replica %s current=%v offline=%v lag=%d", r.Name, r.Current, r.Offline, r.Lag)
		}
	}
	return nil
}

// TestMultiNodeKickAndExpiry: a kick published on core NATS (what
// `pusher kick U` does) closes the user's connections on every node with
// 4001 "kicked", and drops its presence everywhere; a connection whose
// token expires is closed by its node with 4003 "token expired".
func TestMultiNodeKickAndExpiry(t *testing.T) {
	m := startMultiNode(t)
	nc, js := harness.Connect(t, m.nats.URL(2))

	const uid = "everywhere"
	var conns []*websocket.Conn
	for _, a := range m.http {
		conns = append(conns, harness.DialWS(t, a, uid))
	}
	// Delivered to all three, whichever node pulls it.
	m.nats.WaitInterest(t, []string{wire.DeliverSubject(uid)}, clusterSize, 10*time.Second)
	harness.Publish(t, js, wire.PushSubject(uid), []byte("before-kick"))
	for i, c := range conns {
		if _, got := harness.Read(t, c, 10*time.Second); string(got) != "before-kick" {
			t.Fatalf("connection on pusher-%d got %q, want before-kick", i+1, got)
		}
	}
	if err := nc.Publish(wire.KickSubject(uid), nil); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, data, err := c.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != wire.CloseKicked || ce.Text != wire.CloseKickedText {
			t.Errorf("connection on pusher-%d after the kick: %q, %v; want close %d %q", i+1, data, err, wire.CloseKicked, wire.CloseKickedText)
		}
	}
	// No node holds the uid any more: a delivery request finds no
	// responder (presence interest drops on every node).
	harness.WaitFor(t, 10*time.Second, "presence of the kicked uid gone on every node", func() error {
		_, err := nc.Request(wire.DeliverSubject(uid), []byte("probe"), time.Second)
		if errors.Is(err, nats.ErrNoResponders) {
			return nil
		}
		return fmt.Errorf("delivery request answered: %v", err)
	})
	checkExpiryOnNode(t, m, js)
	m.checkAlive(t, -1, -1)
}

// checkExpiryOnNode: on pusher-2, through the cluster, a message reaches a
// connection while its token is valid, then the node closes it with 4003.
func checkExpiryOnNode(t *testing.T, m *multiNode, js jetstream.JetStream) {
	t.Helper()
	const expUID = "short-lived"
	tok := harness.Token(t, expUID, 2*time.Second)
	dialed := time.Now()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+m.http[1]+"/ws", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatalf("dial %s on pusher-2: %v (resp %v)", expUID, err, resp)
	}
	t.Cleanup(func() { _ = c.Close() })
	m.nats.WaitInterest(t, []string{wire.DeliverSubject(expUID)}, 1, 10*time.Second)
	harness.Publish(t, js, wire.PushSubject(expUID), []byte("while-valid"))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := c.ReadMessage()
	if err != nil || string(data) != "while-valid" {
		t.Errorf("short-lived connection: %q, %v; want while-valid before the expiry", data, err)
	}
	if err == nil {
		_, data, err = c.ReadMessage()
	}
	took := time.Since(dialed)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != wire.CloseTokenExpired || ce.Text != wire.CloseTokenExpiredText {
		t.Errorf("short-lived connection: %q, %v; want close %d %q", data, err, wire.CloseTokenExpired, wire.CloseTokenExpiredText)
	}
	// exp has one-second precision: it falls 1 to 2 s after the dial.
	if took > 5*time.Second {
		t.Errorf("closed %s after the dial; the token expired after at most 2s", took)
	}
	t.Logf("token with 2s ttl closed %s after the dial", took.Round(time.Millisecond))
}

// TestMultiNodeReplayAfterNATSReconnect: a pusher node loses its NATS
// server for a few seconds while its users stay connected to it over
// WebSocket. Messages for them are pulled by another node meanwhile, find
// no responder and are dead-lettered as offline; the replay notice is
// published while the node is away. Once it is back, those users must
// still get them without reconnecting (README: "a connect racing the
// dead-lettering on another node is still replayed"; "Nothing is dropped
// silently"). The NATS nodes do not advertise each other to clients, and
// each pusher knows one NATS node only, so the outage lasts until that
// node is back.
func TestMultiNodeReplayAfterNATSReconnect(t *testing.T) {
	const (
		uid      = "stays-connected"
		messages = 5
	)
	m := newMultiNode(t, "--no_advertise=true")
	m.natsURL = m.nats.URL // pusher-i knows nats-i only
	m.launchPusher(t, 0)
	m.waitPushersReady(t, 0)
	m.launchPusher(t, 1)
	m.waitPushersReady(t, 1)

	rec := harness.NewRecorder()
	harness.StartNodeClients(t, m.wsURLs()[:1], []string{uid}, func(int) int { return 0 }, rec, nil)
	rec.WaitOnline(t, 1, 30*time.Second)
	m.nats.WaitInterest(t, []string{wire.DeliverSubject(uid)}, 1, 10*time.Second)

	// Only pusher-1's connection is to be cut: no JetStream leader on
	// nats-1 (TestMultiNodeDLQLeaderLoss is about that).
	notFirst := func(leader string) bool { return leader != m.nats.Name(0) }
	moveLeader(t, m.nats, wire.StreamName, "", notFirst)
	moveLeader(t, m.nats, wire.DLQStreamName, "", notFirst)
	moveLeader(t, m.nats, wire.StreamName, wire.DurableName, notFirst)

	m.nats.KillT(t, 0) // pusher-1's only NATS server
	downAt := time.Now()
	pub := harness.StartPublisher(t, m.nats.URL(1), harness.TextMsgs(messages, []string{uid}), 60*time.Second)
	acked := pub.Wait(t)
	pub.Close()
	nc, js := harness.Connect(t, m.nats.LiveURLs())
	defer nc.Close()
	waitOfflineByNode2(t, m, js, rec, acked, messages)
	if rec.OnlineCount() != 1 || rec.Dials() != 1 {
		t.Fatalf("the client's WebSocket did not stay up (online %d, dials %d)", rec.OnlineCount(), rec.Dials())
	}

	m.nats.RestartT(t, 0)
	m.pushers[0].Log().Wait(t, 30*time.Second, harness.EventNATSUp, nil)
	backAt := time.Now()
	_ = rec.AwaitReceived(acked, 5*time.Second)
	counts, _, err := dlqByReason(js)
	if err != nil {
		t.Fatalf("read PUSH_DLQ: %v", err)
	}
	got := messages - len(rec.Missing(acked))
	t.Logf("FIGURES multinode/replay-after-nats-reconnect: published=%d received=%d dlq_offline=%d outage=%s waited_after_reconnect=%s client_dials=%d",
		messages, got, counts[wire.ReasonOffline], backAt.Sub(downAt).Round(time.Millisecond), time.Since(backAt).Round(time.Millisecond), rec.Dials())
	if got == messages {
		return
	}
	if counts[wire.ReasonOffline] == messages-got && rec.Dials() == 1 {
		// Not lost: a new connection of the user replays them (to both
		// of its connections).
		harness.DialWS(t, m.http[0], uid)
		_ = rec.AwaitReceived(acked, 10*time.Second)
		if n := len(rec.Missing(acked)); n > 0 {
			t.Errorf("%d messages still not received after the user connected again", n)
		}
		t.Errorf("%d offline dead letters stayed in PUSH_DLQ while %s was connected to pusher-1: a node must replay its "+
			"local users after its NATS connection comes back", messages-got, uid)
		return
	}
	t.Errorf("%d of %d messages not received 5s after pusher-1 reconnected to NATS; PUSH_DLQ offline=%d", messages-got, messages, counts[wire.ReasonOffline])
}

// waitOfflineByNode2 waits up to 30s until PUSH_DLQ holds the messages as
// offline dead letters (pusher-2 pulled them while pusher-1, holding the
// uid, was cut off), and fails t with pusher-2's story if not.
func waitOfflineByNode2(t *testing.T, m *multiNode, js jetstream.JetStream, rec *harness.Recorder, acked map[string]struct{}, messages int) {
	t.Helper()
	var counts map[string]int
	err := harness.Poll(context.Background(), 30*time.Second, "the messages dead-lettered as offline", func() error {
		var err error
		if counts, _, err = dlqByReason(js); err != nil {
			return err
		}
		if n := counts[wire.ReasonOffline]; n != messages {
			return fmt.Errorf("%d offline dead letters", n)
		}
		return nil
	})
	if err == nil {
		return
	}
	var lines []string
	for _, ev := range []string{harness.EventConsumerError, "push.retry", "push.deadlettered", "push.deadletter_failed", harness.EventNATSDown, harness.EventNATSUp} {
		for _, l := range m.pushers[1].Log().Find(ev, nil) {
			lines = append(lines, fmt.Sprintf("%v %s %v %v", l["ts"], ev, l["reason"], l["error"]))
		}
	}
	t.Fatalf("the messages were not dead-lettered as offline by pusher-2 within 30s: PUSH_DLQ %v (%v); received %d; consumer leader %q; pusher-2 log: %v",
		counts, err, messages-len(rec.Missing(acked)), consumerLeader(t, m.nats), lines)
}

// TestMultiNodeDLQLeaderLoss: the NATS node leading PUSH_DLQ is killed
// while messages arrive for a user who is away. Storing their dead letters
// fails until PUSH_DLQ has a new leader (seconds); they must still end up
// as offline dead letters, which the user gets on connecting (README,
// "Offline users").
func TestMultiNodeDLQLeaderLoss(t *testing.T) {
	const (
		uid      = "away-during-election"
		messages = 20
		victim   = 2 // nats-3
	)
	m := startMultiNode(t)
	isVictim := func(leader string) bool { return leader == m.nats.Name(victim) }
	notVictim := func(leader string) bool { return !isVictim(leader) }
	moveLeader(t, m.nats, wire.StreamName, "", notVictim)
	moveLeader(t, m.nats, wire.StreamName, wire.DurableName, notVictim)
	moveLeader(t, m.nats, wire.DLQStreamName, "", isVictim)

	m.nats.KillT(t, victim)
	killedAt := time.Now()
	pub := harness.StartPublisher(t, m.nats.URL(0), harness.TextMsgs(messages, []string{uid}), 60*time.Second)
	acked := pub.Wait(t)
	pub.Close()
	nc, js := harness.Connect(t, m.nats.LiveURLs())
	defer nc.Close()
	var dlq map[string]harness.DeadLetter
	harness.WaitFor(t, 45*time.Second, "every message for the away user in PUSH_DLQ after its leader was killed", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := harness.DLQ(ctx, js)
		if err != nil {
			return err
		}
		if n := len(intersect(acked, idsFromDLQ(got))); n != len(acked) {
			return fmt.Errorf("%d of %d there", n, len(acked))
		}
		dlq = got
		return nil
	})
	stored := time.Since(killedAt)
	reasons := map[string]int{}
	for id := range acked {
		reasons[dlq[id].Reason]++
	}
	failed := 0.0
	for _, a := range m.liveHTTP() {
		failed += harness.ScrapeT(t, a).Sum("pusher_messages_total", "outcome", "retried", "reason", wire.ReasonDeadLetterFailed)
	}

	// The user comes back: replay-on-connect republishes what it finds.
	rec := harness.NewRecorder()
	harness.StartNodeClients(t, m.wsURLs(), []string{uid}, func(int) int { return 0 }, rec, nil)
	_ = rec.AwaitReceived(acked, 5*time.Second)
	got := len(acked) - len(rec.Missing(acked))
	t.Logf("FIGURES multinode/dlq-leader-loss: published=%d dead_letters_by_reason=%v deadletter_store_failures=%v stored_after=%s received_on_connect=%d",
		len(acked), reasons, failed, stored.Round(time.Millisecond), got)
	if reasons[wire.ReasonOffline] == len(acked) && got == len(acked) {
		return
	}
	if reasons[wire.ReasonMaxDeliver] > 0 && got == reasons[wire.ReasonOffline] {
		t.Errorf("%d of %d messages for a user who was away were dead-lettered as max_deliver, not offline, while PUSH_DLQ "+
			"elected a leader; the user got %d of %d on connecting", reasons[wire.ReasonMaxDeliver], len(acked), got, len(acked))
		return
	}
	t.Errorf("dead letters by reason %v, %d of %d received on connect; want all offline and all received", reasons, got, len(acked))
}

// idsFromDLQ is the set of payload ids in a PUSH_DLQ scan.
func idsFromDLQ(dlq map[string]harness.DeadLetter) map[string]struct{} {
	out := make(map[string]struct{}, len(dlq))
	for id := range dlq {
		out[id] = struct{}{}
	}
	return out
}

// TestDLQReadsSeeAckedDeadLetters: on a three-node cluster with pusher's
// topology, a dead letter is looked up, right after its PubAck, through
// each NATS node, as replay-on-connect does when a user connects while
// another node dead-letters a message for them. Every look-up finds it.
// With direct gets allowed, a replica answered some look-ups before it
// had the write (measured here: 27, 1 and 0 of 1,193 missed through the
// three nodes), and the dead letter waited for the user's next connect.
// The stream starts as earlier versions left it, allowing direct gets,
// and pusher's start updates it in place.
func TestDLQReadsSeeAckedDeadLetters(t *testing.T) {
	const writes = 300
	c := harness.StartCluster(t, harness.ClusterConfig{Bin: bins.NATSServerBin(t), Size: clusterSize})
	_, js := harness.Connect(t, c.URL(0))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ensure := func() {
		t.Helper()
		harness.WaitFor(t, 30*time.Second, "pusher's topology on the cluster", func() error {
			_, err := consumer.EnsureTopology(ctx, js, consumer.Topology{Replicas: clusterSize})
			return err
		})
	}
	ensure()
	old, err := js.Stream(ctx, wire.DLQStreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := old.CachedInfo().Config
	cfg.AllowDirect = true
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("set up %s as earlier versions left it: %v", wire.DLQStreamName, err)
	}
	ensure()
	checkDLQReadsFromLeader(t, js)
	var readers []*consumer.DLQ
	for i := range clusterSize {
		_, rjs := harness.Connect(t, c.URL(i))
		readers = append(readers, consumer.NewDLQ(rjs))
	}
	// Followers of a stream that allows direct gets join in answering
	// them on a 2 s ticker once caught up: keep writing past two ticks.
	until := time.Now().Add(5 * time.Second)
	missed := make([]int, clusterSize)
	k := 0
	for ; k < writes || time.Now().Before(until); k++ {
		uid := "lag" + strconv.Itoa(k)
		msg := nats.NewMsg(wire.DLQSubject(uid))
		msg.Header.Set(wire.HeaderReason, wire.ReasonOffline)
		msg.Data = []byte("dead letter " + uid)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
		for i, d := range readers {
			found := 0
			if err := d.Each(ctx, uid, func(consumer.DeadLetter, error) error { found++; return nil }); err != nil {
				t.Fatalf("reader on nats-%d: %v", i+1, err)
			}
			if found != 1 {
				missed[i]++
			}
		}
	}
	if slices.Max(missed) > 0 {
		t.Errorf("of %d dead letters, looked up right after their PubAck through nats-1/2/3, not found: %v", k, missed)
	}
}
