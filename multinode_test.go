package main

// Multi-node tests: three nats-server processes forming one JetStream
// cluster, three pusher processes on it (cluster routing through NATS
// subject interest), reconnecting clients spread over the pusher nodes the
// way a load balancer would, and one publisher per NATS node. Faults: a
// pusher node SIGKILLed mid-stream and not restarted, a NATS node
// SIGKILLed mid-stream. Every acked message is accounted for: received by
// a client (per client, for users connected to two nodes) or in PUSH_DLQ,
// never lost. The process, client, publisher and accounting helpers live
// in proc_test.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/wire"
)

// clusterSize is the number of NATS nodes and of pusher nodes.
const clusterSize = 3

// natsCluster is clusterSize nats-server processes in cluster "pusher"
// with JetStream, on fixed loopback ports and store dirs, so a node can be
// SIGKILLed and started again as itself.
type natsCluster struct {
	bin     string
	client  []string // host:port for clients
	route   []string // host:port of the cluster (route) listener
	monitor []string // host:port of the HTTP monitoring endpoint
	store   []string
	extra   []string // more nats-server flags for every node
	procs   []*proc
}

// startNATSCluster builds nats-server, starts every node (with the extra
// flags) and waits until the cluster has formed with a JetStream meta
// leader.
func startNATSCluster(t testing.TB, extra ...string) *natsCluster {
	t.Helper()
	addrs := freeAddrs(t, 3*clusterSize)
	c := &natsCluster{bin: buildNATSServer(t), procs: make([]*proc, clusterSize), extra: extra}
	for i := range clusterSize {
		c.client = append(c.client, addrs[i])
		c.route = append(c.route, addrs[clusterSize+i])
		c.monitor = append(c.monitor, addrs[2*clusterSize+i])
		c.store = append(c.store, t.TempDir())
	}
	for i := range clusterSize {
		c.launch(t, i)
	}
	c.waitFormed(t, 60*time.Second)
	return c
}

func (c *natsCluster) name(i int) string { return "nats-" + strconv.Itoa(i+1) }

// launch starts node i (no waiting).
func (c *natsCluster) launch(t testing.TB, i int) {
	t.Helper()
	host, port, err := net.SplitHostPort(c.client[i])
	if err != nil {
		t.Fatal(err)
	}
	_, mport, err := net.SplitHostPort(c.monitor[i])
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for j, r := range c.route {
		if j != i {
			routes = append(routes, "nats://"+r)
		}
	}
	args := []string{
		"-js", "-sd", c.store[i], "-a", host, "-p", port, "-m", mport, "-n", c.name(i),
		"--cluster_name", "pusher", "--cluster", "nats://" + c.route[i], "--routes", strings.Join(routes, ","),
	}
	args = append(args, c.extra...)
	c.procs[i] = startProc(t, c.name(i), c.bin, args, nil)
}

func (c *natsCluster) alive(i int) bool { return c.procs[i] != nil && !c.procs[i].exited() }

// url is node i's client URL.
func (c *natsCluster) url(i int) string { return "nats://" + c.client[i] }

// urls lists every node's client URL, starting with node first.
func (c *natsCluster) urls(first int) string {
	var out []string
	for k := range clusterSize {
		out = append(out, c.url((first+k)%clusterSize))
	}
	return strings.Join(out, ",")
}

// liveURLs lists the client URLs of the nodes that run.
func (c *natsCluster) liveURLs() string {
	var out []string
	for i := range clusterSize {
		if c.alive(i) {
			out = append(out, c.url(i))
		}
	}
	return strings.Join(out, ",")
}

// monitorJSON GETs path from node i's monitoring endpoint into v.
func (c *natsCluster) monitorJSON(i int, path string, v any) error {
	status, body, err := httpGet("http://" + c.monitor[i] + path)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s: %d", path, status)
	}
	return json.Unmarshal([]byte(body), v)
}

// formed reports whether node i has routes to every other running node,
// knows the JetStream meta leader, and answers a JetStream API call from a
// client connected to it alone.
func (c *natsCluster) formed(i int) (bool, string) {
	var routez struct {
		Routes []struct {
			RemoteName string `json:"remote_name"`
		} `json:"routes"`
	}
	if err := c.monitorJSON(i, "/routez", &routez); err != nil {
		return false, err.Error()
	}
	peers := map[string]bool{}
	for _, r := range routez.Routes {
		peers[r.RemoteName] = true
	}
	for j := range clusterSize {
		if j != i && c.alive(j) && !peers[c.name(j)] {
			return false, "no route to " + c.name(j)
		}
	}
	var jsz struct {
		Meta struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if err := c.monitorJSON(i, "/jsz", &jsz); err != nil {
		return false, err.Error()
	}
	if jsz.Meta.Leader == "" {
		return false, "no JetStream meta leader"
	}
	if !jetStreamAnswers(c.url(i)) {
		return false, "JetStream account info does not answer"
	}
	return true, ""
}

// waitFormed polls every running node until formed.
func (c *natsCluster) waitFormed(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i := range clusterSize {
		if !c.alive(i) {
			continue
		}
		for {
			ok, why := c.formed(i)
			if ok {
				break
			}
			if c.procs[i].exited() {
				t.Fatalf("%s exited (%v)\n%s", c.name(i), c.procs[i].state, tail(c.procs[i].stderr.String(), 30))
			}
			if time.Now().After(deadline) {
				t.Fatalf("NATS cluster not formed within %s: %s: %s\n%s", timeout, c.name(i), why, tail(c.procs[i].stderr.String(), 30))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// kill SIGKILLs node i by its PID and waits until it is reaped.
func (c *natsCluster) kill(t testing.TB, i int) { t.Helper(); c.procs[i].kill(t) }

// restart starts node i again on its ports and store dir and waits until
// the cluster has formed again.
func (c *natsCluster) restart(t testing.TB, i int) {
	t.Helper()
	if c.alive(i) {
		t.Fatalf("%s still runs", c.name(i))
	}
	c.launch(t, i)
	c.waitFormed(t, 60*time.Second)
}

// pusherConns counts the connections named "pusher" (the pusher nodes'
// own) on node i.
func (c *natsCluster) pusherConns(i int) int {
	var connz struct {
		Conns []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := c.monitorJSON(i, "/connz?limit=1000", &connz); err != nil {
		return 0
	}
	n := 0
	for _, cn := range connz.Conns {
		if cn.Name == "pusher" {
			n++
		}
	}
	return n
}

// interest returns the subjects node i's own clients subscribe to (with
// how many subscriptions), and for each subject the peers that told node i
// of their interest in it over a route.
func (c *natsCluster) interest(i int) (map[string]int, map[string]map[string]bool, error) {
	var subsz struct {
		Subs []struct {
			Subject string `json:"subject"`
		} `json:"subscriptions_list"`
	}
	if err := c.monitorJSON(i, "/subsz?subs=1&limit=100000", &subsz); err != nil {
		return nil, nil, err
	}
	local := map[string]int{}
	for _, s := range subsz.Subs {
		local[s.Subject]++
	}
	var routez struct {
		Routes []struct {
			RemoteName string   `json:"remote_name"`
			Subs       []string `json:"subscriptions_list"`
		} `json:"routes"`
	}
	if err := c.monitorJSON(i, "/routez?subs=1", &routez); err != nil {
		return nil, nil, err
	}
	remote := map[string]map[string]bool{}
	for _, r := range routez.Routes {
		for _, s := range r.Subs {
			subject, _, _ := strings.Cut(s, " ")
			if remote[subject] == nil {
				remote[subject] = map[string]bool{}
			}
			remote[subject][r.RemoteName] = true
		}
	}
	return local, remote, nil
}

// waitInterest waits until each subject has want subscriptions on the
// cluster's nodes and every running node has heard of it from every peer
// holding one: from then on a request published on any node reaches every
// holder. pusher flushes a presence subscription to its own NATS node
// before the upgrade completes; its propagation over the routes is
// asynchronous.
func (c *natsCluster) waitInterest(t testing.TB, subjects []string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := ""
		locals := make([]map[string]int, clusterSize)
		remotes := make([]map[string]map[string]bool, clusterSize)
		for i := range clusterSize {
			if !c.alive(i) {
				continue
			}
			var err error
			if locals[i], remotes[i], err = c.interest(i); err != nil {
				why = err.Error()
			}
		}
		for _, subject := range subjects {
			if why != "" {
				break
			}
			n := 0
			for i := range clusterSize {
				n += locals[i][subject]
			}
			if n != want {
				why = fmt.Sprintf("%s: %d subscriptions, want %d", subject, n, want)
				break
			}
			for holder := range clusterSize {
				for i := range clusterSize {
					if i != holder && c.alive(i) && locals[holder][subject] > 0 && !remotes[i][subject][c.name(holder)] {
						why = fmt.Sprintf("%s: %s has not heard of %s's interest", subject, c.name(i), c.name(holder))
					}
				}
			}
		}
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence interest not propagated within %s: %s", timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// multiNode is a NATS cluster with clusterSize pusher nodes on it.
type multiNode struct {
	nats    *natsCluster
	bin     string   // the pusher binary
	pushers []*proc  // by node; nil until launched
	http    []string // each pusher's HTTP address
	// natsURL, when set, is pusher node i's PUSHER_NATS_URL; by default
	// every NATS node, starting with node i.
	natsURL func(i int) string
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
	m := newMultiNode(t)
	m.launchPusher(t, 0)
	m.waitPushersReady(t, 60*time.Second, 0)
	m.launchPusher(t, 1)
	m.launchPusher(t, 2)
	m.waitPushersReady(t, 60*time.Second, 1, 2)
	return m
}

// newMultiNode starts the NATS cluster (nats-server flags extra) and
// builds pusher; no pusher runs.
func newMultiNode(t testing.TB, extra ...string) *multiNode {
	t.Helper()
	m := &multiNode{nats: startNATSCluster(t, extra...), http: freeAddrs(t, clusterSize), bin: buildPusher(t)}
	m.pushers = make([]*proc, clusterSize)
	return m
}

// launchPusher starts pusher node i without waiting for it.
func (m *multiNode) launchPusher(t testing.TB, i int) {
	t.Helper()
	url := m.nats.urls(i)
	if m.natsURL != nil {
		url = m.natsURL(i)
	}
	env := pusherEnv(m.http[i], "127.0.0.1:-1", t.TempDir(), map[string]string{
		"PUSHER_NATS_URL": url,
		"PUSHER_REPLICAS": strconv.Itoa(clusterSize),
	})
	m.pushers[i] = startProc(t, "pusher-"+strconv.Itoa(i+1), m.bin, nil, env)
}

// pusherReady reports whether pusher node i logged pusher.ready, and
// fails the test if that line does not say cluster routing on external
// NATS, on the node's address.
func (m *multiNode) pusherReady(t testing.TB, i int) bool {
	t.Helper()
	p := m.pushers[i]
	lines := p.logs.find(evReady, nil)
	if len(lines) == 0 {
		return false
	}
	ready := lines[0]
	if ready["cluster_routing"] != true || ready["embedded_nats"] != false {
		t.Fatalf("%s: %s line %v, want cluster_routing true and embedded_nats false", p.name, evReady, ready)
	}
	if got := ready["http_addr"]; got != m.http[i] {
		t.Fatalf("%s listens on %v, want %s", p.name, got, m.http[i])
	}
	return true
}

// waitPushersReady waits until every pusher node in nodes is ready.
func (m *multiNode) waitPushersReady(t testing.TB, timeout time.Duration, nodes ...int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, i := range nodes {
		p := m.pushers[i]
		for !m.pusherReady(t, i) {
			if p.exited() {
				t.Fatalf("%s exited before ready (%v)\nstdout:\n%s\nstderr:\n%s", p.name, p.state, tail(p.logs.String(), 30), p.stderr)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready within %s\nstdout:\n%s\nstderr:\n%s", p.name, timeout, tail(p.logs.String(), 30), p.stderr)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
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
		if p != nil && !p.exited() {
			out = append(out, m.http[i])
		}
	}
	return out
}

// checkAlive fails the test if a process that should run has exited.
func (m *multiNode) checkAlive(t testing.TB, exceptPusher, exceptNATS int) {
	t.Helper()
	for i, p := range m.pushers {
		if i != exceptPusher && p != nil && p.exited() {
			t.Errorf("%s exited: %v\nstderr:\n%s", p.name, p.state, tail(p.stderr.String(), 20))
		}
	}
	for i := range clusterSize {
		if i != exceptNATS && !m.nats.alive(i) {
			t.Errorf("%s exited\n%s", m.nats.name(i), tail(m.nats.procs[i].stderr.String(), 20))
		}
	}
}

// frameClock keeps the arrival time of every frame, across clients, to
// measure how long delivery stalled around a fault.
type frameClock struct {
	mu    sync.Mutex
	times []time.Time
}

func (f *frameClock) tick() {
	now := time.Now()
	f.mu.Lock()
	f.times = append(f.times, now)
	f.mu.Unlock()
}

// maxGapAfter is the longest time without any frame from `from` to the
// last frame.
func (f *frameClock) maxGapAfter(from time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var longest time.Duration
	prev := from
	for _, at := range f.times {
		if at.Before(from) {
			continue
		}
		longest = max(longest, at.Sub(prev))
		prev = at
	}
	return longest
}

// startNodeClients runs one reconnecting client per uid. Client i first
// dials node first(i) and, after every dropped connection or failed dial,
// another node in turn, as a round-robin load balancer would send it: the
// clients of one node step through the others 1 or 2 nodes at a time,
// alternately, so those of a node that dies spread over the survivors.
// Every frame goes to rec (and clock, when not nil).
func startNodeClients(t testing.TB, urls []string, uids []string, first func(i int) int, rec *recorder, clock *frameClock) *clients {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cs := &clients{cancel: cancel}
	for i, uid := range uids {
		hdr := http.Header{"Authorization": {"Bearer " + token(t, uid, time.Hour)}}
		start, step := first(i), 1+(i/len(urls))%max(len(urls)-1, 1)
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			runRotatingClient(ctx, urls, start, step, uid, hdr, rec, clock)
		}()
	}
	t.Cleanup(cs.stop)
	return cs
}

// publishers publish msgs round-robin over one publisher per NATS node,
// each connected to its node first (it fails over to the servers the
// cluster advertises).
type publishers []*publisher

func startPublishers(t testing.TB, c *natsCluster, msgs []pubMsg, timeout time.Duration) publishers {
	t.Helper()
	shares := make([][]pubMsg, clusterSize)
	for i, m := range msgs {
		shares[i%clusterSize] = append(shares[i%clusterSize], m)
	}
	ps := make(publishers, clusterSize)
	for i := range clusterSize {
		ps[i] = startPublisher(t, c.url(i), shares[i], timeout)
	}
	return ps
}

func (ps publishers) acked() int64 {
	var n int64
	for _, p := range ps {
		n += p.acked.Load()
	}
	return n
}

func (ps publishers) retries() int64 {
	var n int64
	for _, p := range ps {
		n += p.retries.Load()
	}
	return n
}

func (ps publishers) waitAcked(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d publishes acked", n), func() bool { return ps.acked() >= n })
}

// wait waits for every publisher and returns the union of acked ids.
func (ps publishers) wait(t testing.TB) map[string]struct{} {
	t.Helper()
	out := map[string]struct{}{}
	for _, p := range ps {
		for id := range p.wait(t) {
			out[id] = struct{}{}
		}
	}
	return out
}

func (ps publishers) close() {
	for _, p := range ps {
		p.close()
	}
}

// waitClusterSettled polls until consumer pusher has nothing pending or
// awaiting ack and no running pusher node holds a message in flight.
func waitClusterSettled(t testing.TB, m *multiNode, timeout time.Duration) {
	t.Helper()
	nc, js := multiJS(t, m.nats.liveURLs())
	defer nc.Close()
	var (
		info     *jetstream.ConsumerInfo
		err      error
		inflight map[string]float64
	)
	// A settle that takes long logs how the figures went down.
	start := time.Now()
	var timeline []string
	last := ""
	defer func() {
		if took := time.Since(start); took > 5*time.Second {
			t.Logf("settling took %s: %s", took.Round(time.Millisecond), strings.Join(timeline, "; "))
		}
	}()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var c jetstream.Consumer
		if c, err = js.Consumer(ctx, wire.StreamName, wire.DurableName); err == nil {
			info, err = c.Info(ctx)
		}
		cancel()
		inflight = map[string]float64{}
		total := 0.0
		for _, a := range m.liveHTTP() {
			inflight[a] = metric(t, a, "pusher_inflight_messages")
			total += inflight[a]
		}
		if info != nil {
			if state := fmt.Sprintf("pending=%d ack_pending=%d inflight=%v", info.NumPending, info.NumAckPending, total); state != last {
				timeline = append(timeline, fmt.Sprintf("+%s %s", time.Since(start).Round(100*time.Millisecond), state))
				last = state
			}
		}
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && total == 0 {
			return
		}
		if time.Now().After(deadline) {
			if info != nil {
				t.Errorf("not settled after %s: consumer num_pending=%d num_ack_pending=%d redelivered=%d; pusher_inflight_messages=%v (%v)",
					timeout, info.NumPending, info.NumAckPending, info.NumRedelivered, inflight, err)
			} else {
				t.Errorf("not settled after %s: %v", timeout, err)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// multiJS connects to a URL list; the caller closes the connection.
func multiJS(t testing.TB, urls string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("connect %s: %v", urls, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	return nc, js
}

// dlqByReason counts PUSH_DLQ's dead letters by reason, with a few ids
// of each. One attempt is bounded by a short timeout: right after a NATS
// node dies, a JetStream API request can go unanswered.
func dlqByReason(js jetstream.JetStream) (map[string]int, map[string][]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dlq, err := dlqIDs(ctx, js)
	if err != nil {
		return nil, nil, err
	}
	counts, examples := map[string]int{}, map[string][]string{}
	for id, dl := range dlq {
		counts[dl.reason]++
		if len(examples[dl.reason]) < 5 {
			examples[dl.reason] = append(examples[dl.reason], id+"@"+dl.uid)
		}
	}
	return counts, examples, nil
}

// waitNoOfflineDeadLetters waits (bounded) until PUSH_DLQ holds no
// offline dead letter: every user is connected, so replay-on-connect or
// the replay notice must have delivered each. It returns the dead letters
// left by reason.
func waitNoOfflineDeadLetters(t testing.TB, m *multiNode, timeout time.Duration) map[string]int {
	t.Helper()
	nc, js := multiJS(t, m.nats.liveURLs())
	defer nc.Close()
	deadline := time.Now().Add(timeout)
	for {
		counts, examples, err := dlqByReason(js)
		if err == nil && counts[wire.ReasonOffline] == 0 {
			return counts
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("read PUSH_DLQ: %v", err)
			}
			t.Errorf("%d offline dead letters left in PUSH_DLQ %s after settling although every user is connected, e.g. %v",
				counts[wire.ReasonOffline], timeout, examples[wire.ReasonOffline])
			return counts
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitJetStreamAnswers waits until both streams have a leader that
// answers stream info and a direct get within a short timeout, after a
// NATS node died: account's PUSH_DLQ scan makes one attempt with a 30s
// timeout, and a request sent while a leader is being elected is not
// answered at all.
func waitJetStreamAnswers(t testing.TB, c *natsCluster, timeout time.Duration) {
	t.Helper()
	nc, js := multiJS(t, c.liveURLs())
	defer nc.Close()
	deadline := time.Now().Add(timeout)
	for _, st := range []struct{ name, filter string }{
		{wire.StreamName, wire.PushSubjects},
		{wire.DLQStreamName, wire.DLQSubjects},
	} {
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s, err := js.Stream(ctx, st.name)
			if err == nil {
				if info := s.CachedInfo(); info.Cluster == nil || info.Cluster.Leader == "" {
					err = errors.New("no leader")
				} else if _, err = s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(st.filter)); errors.Is(err, jetstream.ErrMsgNotFound) {
					err = nil
				}
			}
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stream %s does not answer %s after the fault: %v", st.name, timeout, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// waitReceived waits (bounded) until rec received every id of want. The
// accounting then needs no PUSH_DLQ scan while the cluster may still drop
// a JetStream API request (account's scan would wait 30s for it); what is
// still missing after timeout is left to account.
func waitReceived(rec *recorder, want map[string]struct{}, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for len(rec.missing(want)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

func idsOf(msgs []pubMsg, keep func(pubMsg) bool) map[string]struct{} {
	out := map[string]struct{}{}
	for _, m := range msgs {
		if keep(m) {
			out[m.id] = struct{}{}
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
		for !m.pusherReady(t, i) {
			if p.exited() {
				t.Fatalf("%s exited before ready after a simultaneous start (%v)\nstdout:\n%s\nstderr:\n%s", p.name, p.state, tail(p.logs.String(), 30), p.stderr)
			}
			if time.Since(start) > limit {
				t.Fatalf("%s not ready %s after a simultaneous start\nstdout:\n%s\nstderr:\n%s", p.name, limit, tail(p.logs.String(), 30), p.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(p.logs.find(evReady, nil)[0]["ts"]))
		if err != nil {
			t.Fatalf("%s: %s ts: %v", p.name, evReady, err)
		}
		readyAt[i] = ts.Sub(start).Round(10 * time.Millisecond)
		for _, l := range p.logs.find("consumer.error", nil) {
			if l["attempt"] != nil {
				t.Logf("%s retried its topology setup: attempt %v: %v", p.name, l["attempt"], l["error"])
			}
		}
	}
	t.Logf("pusher nodes ready %v after a simultaneous start", readyAt)
	nc, js := multiJS(t, m.nats.url(0))
	t.Cleanup(nc.Close)
	for i, a := range m.http {
		uid := "cs" + strconv.Itoa(i)
		c := dialWS(t, a, uid)
		m.nats.waitInterest(t, []string{"pusher.deliver." + uid}, 1, 10*time.Second)
		publish(t, js, wire.PushSubject(uid), []byte("hello-"+uid))
		if _, got := read(t, c, 10*time.Second); string(got) != "hello-"+uid {
			t.Errorf("%s on pusher-%d got %q", uid, i+1, got)
		}
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
	first, second := newRecorder(), newRecorder()
	startNodeClients(t, urls, all, func(i int) int { return i % clusterSize }, first, nil)
	startNodeClients(t, urls, double, func(i int) int { return (users + i + 1) % clusterSize }, second, nil)
	waitFor(t, 30*time.Second, "every client connected", func() bool {
		return first.onlineCount() == len(all) && second.onlineCount() == doubles
	})
	var doubleSubjects []string
	for _, u := range double {
		doubleSubjects = append(doubleSubjects, "pusher.deliver."+u)
	}
	m.nats.waitInterest(t, doubleSubjects, 2, 10*time.Second)
	for i, a := range m.http {
		want := float64(len(all) / clusterSize)
		if got := metric(t, a, "pusher_connections"); got < want {
			t.Errorf("pusher-%d holds %v connections, want at least %v", i+1, got, want)
		}
	}

	setup := time.Since(start)
	msgs := textMsgs(messages, all)
	pubStart := time.Now()
	pubs := startPublishers(t, m.nats, msgs, 120*time.Second)
	acked := pubs.wait(t)
	pubStop := time.Now()
	pubs.close()
	isDouble := map[string]bool{}
	for _, u := range double {
		isDouble[wire.PushSubject(u)] = true
	}
	doubleAcked := intersect(acked, idsOf(msgs, func(p pubMsg) bool { return isDouble[p.subject] }))

	waitReceived(first, acked, 30*time.Second)
	waitReceived(second, doubleAcked, 30*time.Second)
	f1 := account(t, "multinode/first-client", m.nats.liveURLs(), acked, first, 60*time.Second)
	f2 := account(t, "multinode/second-client-of-double-uids", m.nats.liveURLs(), doubleAcked, second, 60*time.Second)
	for _, f := range []struct {
		name string
		f    figures
	}{{"first clients", f1}, {"second clients", f2}} {
		if f.f.received != f.f.published {
			t.Errorf("%s received %d of %d acked messages (%d in PUSH_DLQ) without any fault", f.name, f.f.received, f.f.published, f.f.dlq)
		}
	}
	// The per-client accounting holds only if no client reconnected: a
	// uid's message is acked once any of its connections took it.
	if n, want := first.dialCount()+second.dialCount(), len(all)+doubles; n != want {
		t.Errorf("clients connected %d times, want %d (no reconnects without a fault); close codes %v %v",
			n, want, first.closeCodesSeen(), second.closeCodesSeen())
	}
	waitClusterSettled(t, m, 30*time.Second)
	m.checkAlive(t, -1, -1)
	t.Logf("FIGURES multinode/summary: users=%d double_connected=%d messages=%d outcomes=%s setup=%s publish=%s publish_retries=%d total=%s",
		len(all), doubles, messages, clusterOutcomes(t, m), setup.Round(time.Millisecond), pubStop.Sub(pubStart).Round(time.Millisecond), pubs.retries(), time.Since(start).Round(time.Millisecond))
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
	rec, clock := newRecorder(), &frameClock{}
	startNodeClients(t, m.wsURLs(), uids, func(i int) int { return i % clusterSize }, rec, clock)
	waitFor(t, 30*time.Second, "every client connected", func() bool { return rec.onlineCount() == users })
	setup := time.Since(start)

	pubs := startPublishers(t, m.nats, textMsgs(messages, uids), 150*time.Second)
	pubs.waitAcked(t, messages/3, 60*time.Second)
	t.Logf("%d of %d acked when %s is killed", pubs.acked(), messages, m.pushers[victim].name)
	killedAt := time.Now()
	m.pushers[victim].kill(t)
	rec.markRestart(killedAt, true)
	waitFor(t, 30*time.Second, "the killed node's clients reconnected elsewhere", func() bool { return rec.onlineCount() == users })
	reconnected := time.Since(killedAt)

	acked := pubs.wait(t)
	pubs.close()
	published := time.Now()
	waitReceived(rec, acked, 45*time.Second)
	f := account(t, "multinode/pusher-killed", m.nats.liveURLs(), acked, rec, 90*time.Second)
	waitClusterSettled(t, m, 45*time.Second)
	left := waitNoOfflineDeadLetters(t, m, 20*time.Second)
	m.checkAlive(t, victim, -1)
	var conns []string
	for _, a := range m.liveHTTP() {
		conns = append(conns, fmt.Sprint(metric(t, a, "pusher_connections")))
	}
	t.Logf("FIGURES multinode/pusher-killed/summary: killed=%s clients_moved=%d connections_on_survivors=[%s] reconnected_all=%s recovery=%s max_delivery_gap=%s outcomes_on_survivors=%s dlq_left=%v close_codes=%v publish_retries=%d duplicates=%d setup=%s publish_done_after_kill=%s settle=%s total=%s",
		m.pushers[victim].name, rec.dialCount()-users, strings.Join(conns, " "), reconnected.Round(time.Millisecond), rec.recovery(), clock.maxGapAfter(killedAt).Round(time.Millisecond),
		clusterOutcomes(t, m), left, rec.closeCodesSeen(), pubs.retries(), f.duplicates, setup.Round(time.Millisecond), published.Sub(killedAt).Round(time.Millisecond),
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
	rec, clock := newRecorder(), &frameClock{}
	startNodeClients(t, m.wsURLs(), uids, func(i int) int { return i % clusterSize }, rec, clock)
	waitFor(t, 30*time.Second, "every client connected", func() bool { return rec.onlineCount() == users })

	leader := consumerLeader(t, m.nats)
	victim, most := -1, -1
	for i := range clusterSize {
		if n := m.nats.pusherConns(i); eligible(leader, i) && n > most {
			victim, most = i, n
		}
	}
	if victim < 0 {
		t.Fatalf("no eligible NATS node (consumer leader %q)", leader)
	}
	setup := time.Since(start)

	pubs := startPublishers(t, m.nats, textMsgs(messages, uids), 150*time.Second)
	pubs.waitAcked(t, messages/3, 60*time.Second)
	t.Logf("%d of %d acked when %s is killed (%d pusher connections on it; consumer leader %s)",
		pubs.acked(), messages, m.nats.name(victim), most, leader)
	killedAt := time.Now()
	m.nats.kill(t, victim)
	ackedAtKill := pubs[victim].acked.Load()
	rec.markRestart(killedAt, false)
	waitFor(t, 60*time.Second, "the killed node's publisher acked again", func() bool {
		n := pubs[victim].acked.Load()
		return n > ackedAtKill || n == int64(len(pubs[victim].msgs))
	})
	pubRecovered := time.Since(killedAt)

	acked := pubs.wait(t)
	pubs.close()
	published := time.Now()
	waitReceived(rec, acked, 45*time.Second)
	waitJetStreamAnswers(t, m.nats, 30*time.Second)
	f := account(t, name, m.nats.liveURLs(), acked, rec, 90*time.Second)
	waitClusterSettled(t, m, 45*time.Second)
	left := waitNoOfflineDeadLetters(t, m, 20*time.Second)
	settled := time.Now()
	m.checkAlive(t, -1, victim)

	m.nats.restart(t, victim)
	waitStreamsCurrent(t, m.nats, 30*time.Second)
	rejoined := time.Since(settled)
	// Informational: which pusher nodes reconnected to NATS (log lines are
	// flushed within a second).
	var moved []string
	for _, p := range m.pushers {
		if l := p.logs.find(evNATSUp, nil); len(l) > 0 {
			moved = append(moved, fmt.Sprintf("%s->%v", p.name, l[0]["server"]))
		}
	}
	gap := clock.maxGapAfter(killedAt)
	t.Logf("FIGURES %s/summary: killed=%s consumer_leader=%s pusher_conns_on_it=%d pushers_reconnected=%v publisher_recovery=%s recovery=%s max_delivery_gap=%s client_reconnects=%d outcomes=%s dlq_left=%v publish_retries=%d duplicates=%d setup=%s publish_done_after_kill=%s settle=%s rejoin=%s total=%s",
		name, m.nats.name(victim), leader, most, moved, pubRecovered.Round(time.Millisecond), rec.recovery(), gap.Round(time.Millisecond),
		rec.dialCount()-users, clusterOutcomes(t, m), left, pubs.retries(), f.duplicates, setup.Round(time.Millisecond), published.Sub(killedAt).Round(time.Millisecond),
		settled.Sub(published).Round(time.Millisecond), rejoined.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	// Delivery must go on within a bounded time: the streams keep a
	// quorum, a new consumer leader is elected within seconds, and a pull
	// parked at a dead leader is re-issued after two missed heartbeats.
	if gap > maxFailoverStall {
		var stalled []string
		for _, p := range m.pushers {
			for _, l := range p.logs.find("consumer.error", nil) {
				stalled = append(stalled, fmt.Sprintf("%s %v: %v", p.name, l["ts"], l["error"]))
			}
		}
		t.Errorf("no client got a frame for %s after %s (consumer leader %s) was killed, bound %s; consumer errors: %v",
			gap.Round(time.Millisecond), m.nats.name(victim), leader, maxFailoverStall, stalled)
	}
}

// maxFailoverStall bounds how long no client may get a frame after a NATS
// node is killed: leader elections take a few seconds.
const maxFailoverStall = 15 * time.Second

// clusterOutcomes sums pusher_messages_total over the running pusher
// nodes (a killed node's counts are gone with it).
func clusterOutcomes(t testing.TB, m *multiNode) string {
	t.Helper()
	series := []struct{ name, key string }{
		{"delivered", `pusher_messages_total{outcome="delivered",reason=""}`},
		{"retried_timeout", `pusher_messages_total{outcome="retried",reason="timeout"}`},
		{"retried_write_failed", `pusher_messages_total{outcome="retried",reason="write_failed"}`},
		{"retried_queue_full", `pusher_messages_total{outcome="retried",reason="queue_full"}`},
		{"retried_deadletter_failed", `pusher_messages_total{outcome="retried",reason="deadletter_failed"}`},
		{"deadlettered_offline", `pusher_messages_total{outcome="deadlettered",reason="offline"}`},
		{"deadlettered_max_deliver", `pusher_messages_total{outcome="deadlettered",reason="max_deliver"}`},
	}
	var parts, byNode []string
	for _, a := range m.liveHTTP() {
		byNode = append(byNode, fmt.Sprint(metric(t, a, series[0].key)))
	}
	parts = append(parts, "delivered_by_node:["+strings.Join(byNode, " ")+"]")
	for _, s := range series {
		total := 0.0
		for _, a := range m.liveHTTP() {
			total += metric(t, a, s.key)
		}
		parts = append(parts, fmt.Sprintf("%s:%v", s.name, total))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// consumerLeader names the NATS node leading consumer pusher ("" if
// unknown).
func consumerLeader(t testing.TB, c *natsCluster) string {
	t.Helper()
	nc, js := multiJS(t, c.liveURLs())
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, wire.StreamName, wire.DurableName)
	if err != nil {
		return ""
	}
	info, err := cons.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
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
func moveLeader(t testing.TB, c *natsCluster, stream, cons string, ok func(leader string) bool) string {
	t.Helper()
	nc, js := multiJS(t, c.liveURLs())
	defer nc.Close()
	subject := "$JS.API.STREAM.LEADER.STEPDOWN." + stream
	if cons != "" {
		subject = "$JS.API.CONSUMER.LEADER.STEPDOWN." + stream + "." + cons
	}
	deadline := time.Now().Add(60 * time.Second)
	lastDown := time.Time{}
	for {
		leader, err := leaderOf(js, stream, cons)
		if err == nil && leader != "" && ok(leader) {
			return leader
		}
		if time.Now().After(deadline) {
			t.Fatalf("could not move the leader of %s %s: last %q (%v)", stream, cons, leader, err)
		}
		// A new leader needs a moment before it can step down again.
		if err == nil && leader != "" && time.Since(lastDown) > 2*time.Second {
			if _, err := nc.Request(subject, nil, 5*time.Second); err == nil {
				lastDown = time.Now()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitStreamsCurrent waits until both streams have a leader and every
// replica is current again (after a node rejoined).
func waitStreamsCurrent(t testing.TB, c *natsCluster, timeout time.Duration) {
	t.Helper()
	nc, js := multiJS(t, c.liveURLs())
	defer nc.Close()
	deadline := time.Now().Add(timeout)
	for _, name := range []string{wire.StreamName, wire.DLQStreamName} {
		for {
			why := ""
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s, err := js.Stream(ctx, name)
			var info *jetstream.StreamInfo
			if err == nil {
				info, err = s.Info(ctx)
			}
			cancel()
			switch {
			case err != nil:
				why = err.Error()
			case info.Cluster == nil || info.Cluster.Leader == "":
				why = "no leader"
			case len(info.Cluster.Replicas) != clusterSize-1:
				why = fmt.Sprintf("%d replicas besides the leader", len(info.Cluster.Replicas))
			default:
				for _, r := range info.Cluster.Replicas {
					if !r.Current || r.Offline {
						why = fmt.Sprintf("replica %s current=%v offline=%v lag=%d", r.Name, r.Current, r.Offline, r.Lag)
					}
				}
			}
			if why == "" {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("stream %s not fully replicated %s after the node rejoined: %s", name, timeout, why)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestMultiNodeKickAndExpiry: a kick published on core NATS (what
// `pusher kick U` does) closes the user's connections on every node with
// 4001 "kicked", and drops its presence everywhere; a connection whose
// token expires is closed by its node with 4003 "token expired".
func TestMultiNodeKickAndExpiry(t *testing.T) {
	m := startMultiNode(t)
	nc, js := multiJS(t, m.nats.url(2))
	t.Cleanup(nc.Close)

	const uid = "everywhere"
	var conns []*websocket.Conn
	for _, a := range m.http {
		conns = append(conns, dialWS(t, a, uid))
	}
	// Delivered to all three, whichever node pulls it.
	m.nats.waitInterest(t, []string{"pusher.deliver." + uid}, clusterSize, 10*time.Second)
	publish(t, js, wire.PushSubject(uid), []byte("before-kick"))
	for i, c := range conns {
		if _, got := read(t, c, 10*time.Second); string(got) != "before-kick" {
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
	waitFor(t, 10*time.Second, "presence of the kicked uid gone on every node", func() bool {
		_, err := nc.Request("pusher.deliver."+uid, []byte("probe"), time.Second)
		return errors.Is(err, nats.ErrNoResponders)
	})

	// Expiry on node 2, through the cluster: a message reaches the
	// connection while the token is valid, then the node closes it.
	const expUID = "short-lived"
	tok := token(t, expUID, 2*time.Second)
	dialed := time.Now()
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+m.http[1]+"/ws", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatalf("dial %s on pusher-2: %v (resp %v)", expUID, err, resp)
	}
	t.Cleanup(func() { _ = c.Close() })
	m.nats.waitInterest(t, []string{"pusher.deliver." + expUID}, 1, 10*time.Second)
	publish(t, js, wire.PushSubject(expUID), []byte("while-valid"))
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
	if !errors.As(err, &ce) || ce.Code != wire.CloseTokenExpired || ce.Text != "token expired" {
		t.Errorf("short-lived connection: %q, %v; want close %d \"token expired\"", data, err, wire.CloseTokenExpired)
	}
	// exp has one-second precision: it falls 1 to 2 s after the dial.
	if took > 5*time.Second {
		t.Errorf("closed %s after the dial; the token expired after at most 2s", took)
	}
	t.Logf("token with 2s ttl closed %s after the dial", took.Round(time.Millisecond))
	m.checkAlive(t, -1, -1)
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
	m.natsURL = m.nats.url // pusher-i knows nats-i only
	m.launchPusher(t, 0)
	m.waitPushersReady(t, 60*time.Second, 0)
	m.launchPusher(t, 1)
	m.waitPushersReady(t, 60*time.Second, 1)

	rec := newRecorder()
	startNodeClients(t, m.wsURLs()[:1], []string{uid}, func(int) int { return 0 }, rec, nil)
	waitFor(t, 30*time.Second, "the client connected to pusher-1", func() bool { return rec.onlineCount() == 1 })
	m.nats.waitInterest(t, []string{"pusher.deliver." + uid}, 1, 10*time.Second)

	// Only pusher-1's connection is to be cut: no JetStream leader on
	// nats-1 (TestMultiNodeDLQLeaderLoss is about that).
	notFirst := func(leader string) bool { return leader != m.nats.name(0) }
	moveLeader(t, m.nats, wire.StreamName, "", notFirst)
	moveLeader(t, m.nats, wire.DLQStreamName, "", notFirst)
	moveLeader(t, m.nats, wire.StreamName, wire.DurableName, notFirst)

	m.nats.kill(t, 0) // pusher-1's only NATS server
	downAt := time.Now()
	pub := startPublisher(t, m.nats.url(1), textMsgs(messages, []string{uid}), 60*time.Second)
	acked := pub.wait(t)
	pub.close()
	nc, js := multiJS(t, m.nats.liveURLs())
	defer nc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		counts, _, err := dlqByReason(js)
		if err == nil && counts[wire.ReasonOffline] == messages {
			break
		}
		if time.Now().After(deadline) {
			var lines []string
			for _, ev := range []string{"consumer.error", "push.retry", "push.deadlettered", "push.deadletter_failed", evNATSDown, evNATSUp} {
				for _, l := range m.pushers[1].logs.find(ev, nil) {
					lines = append(lines, fmt.Sprintf("%v %s %v %v", l["ts"], ev, l["reason"], l["error"]))
				}
			}
			t.Fatalf("the messages were not dead-lettered as offline by pusher-2 within 30s: PUSH_DLQ %v (%v); received %d; consumer leader %q; pusher-2 log: %v",
				counts, err, messages-len(rec.missing(acked)), consumerLeader(t, m.nats), lines)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rec.onlineCount() != 1 || rec.dialCount() != 1 {
		t.Fatalf("the client's WebSocket did not stay up (online %d, dials %d)", rec.onlineCount(), rec.dialCount())
	}

	m.nats.restart(t, 0)
	m.pushers[0].logs.wait(t, 30*time.Second, evNATSUp, nil)
	backAt := time.Now()
	waitReceived(rec, acked, 5*time.Second)
	counts, _, err := dlqByReason(js)
	if err != nil {
		t.Fatalf("read PUSH_DLQ: %v", err)
	}
	got := messages - len(rec.missing(acked))
	t.Logf("FIGURES multinode/replay-after-nats-reconnect: published=%d received=%d dlq_offline=%d outage=%s waited_after_reconnect=%s client_dials=%d",
		messages, got, counts[wire.ReasonOffline], backAt.Sub(downAt).Round(time.Millisecond), time.Since(backAt).Round(time.Millisecond), rec.dialCount())
	if got == messages {
		return
	}
	if counts[wire.ReasonOffline] == messages-got && rec.dialCount() == 1 {
		// Not lost: a new connection of the user replays them (to both
		// of its connections).
		dialWS(t, m.http[0], uid)
		waitReceived(rec, acked, 10*time.Second)
		if n := len(rec.missing(acked)); n > 0 {
			t.Errorf("%d messages still not received after the user connected again", n)
		}
		t.Errorf("%d offline dead letters stayed in PUSH_DLQ while %s was connected to pusher-1: a node must replay its "+
			"local users after its NATS connection comes back", messages-got, uid)
		return
	}
	t.Errorf("%d of %d messages not received 5s after pusher-1 reconnected to NATS; PUSH_DLQ offline=%d", messages-got, messages, counts[wire.ReasonOffline])
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
	isVictim := func(leader string) bool { return leader == m.nats.name(victim) }
	notVictim := func(leader string) bool { return !isVictim(leader) }
	moveLeader(t, m.nats, wire.StreamName, "", notVictim)
	moveLeader(t, m.nats, wire.StreamName, wire.DurableName, notVictim)
	moveLeader(t, m.nats, wire.DLQStreamName, "", isVictim)

	m.nats.kill(t, victim)
	killedAt := time.Now()
	pub := startPublisher(t, m.nats.url(0), textMsgs(messages, []string{uid}), 60*time.Second)
	acked := pub.wait(t)
	pub.close()
	nc, js := multiJS(t, m.nats.liveURLs())
	defer nc.Close()
	var dlq map[string]deadLetter
	deadline := time.Now().Add(45 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := dlqIDs(ctx, js)
		cancel()
		if err == nil && len(intersect(acked, idsFromDLQ(got))) == len(acked) {
			dlq = got
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages for the away user not all in PUSH_DLQ 45s after PUSH_DLQ's leader was killed (%d there, %v)", len(acked), len(got), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stored := time.Since(killedAt)
	reasons := map[string]int{}
	for id := range acked {
		reasons[dlq[id].reason]++
	}
	failed := 0.0
	for _, a := range m.liveHTTP() {
		failed += metric(t, a, `pusher_messages_total{outcome="retried",reason="deadletter_failed"}`)
	}

	// The user comes back: replay-on-connect republishes what it finds.
	rec := newRecorder()
	startNodeClients(t, m.wsURLs(), []string{uid}, func(int) int { return 0 }, rec, nil)
	waitReceived(rec, acked, 5*time.Second)
	got := len(acked) - len(rec.missing(acked))
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
func idsFromDLQ(dlq map[string]deadLetter) map[string]struct{} {
	out := make(map[string]struct{}, len(dlq))
	for id := range dlq {
		out[id] = struct{}{}
	}
	return out
}
