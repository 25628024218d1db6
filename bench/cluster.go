package main

// Cluster mode (go run ./bench --cluster): pusher nodes against a
// three-server NATS cluster (JetStream R3, PUSHER_ROUTING=cluster), in
// three phases, each on a freshly started NATS cluster with fresh store
// dirs:
//
//  1. one node: one pusher, --conns connections, the closed-loop
//     throughput phase of the single-node mode;
//  2. three nodes: three pushers, the same connections spread over them
//     (uid k on node k mod 3), the same measurement;
//  3. --idle-conns idle connections to each of the three nodes, then a
//     closed-loop burst to --burst-uids of them with all of them open.
//
// CPU per message is summed over the pusher and the nats-server processes,
// and reported in both parts.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/wire"
)

const (
	// clusterNodes is the number of pusher nodes in the three-node phases.
	clusterNodes = 3
	// pusherFDReserve is what a pusher needs besides its WebSocket
	// connections: NATS, listeners, logs, metrics scrapes.
	pusherFDReserve = 500
	// settleJSTimeout bounds the wait for the consumer to have nothing
	// pending or unacknowledged after a phase.
	settleJSTimeout = 15 * time.Second
)

func (b *bench) clusterSteps() []step {
	return []step{
		{"preflight", b.clusterPreflight},
		{"build", b.build},
		{"build nats-server", b.buildNATS},
		{"one node", func(ctx context.Context) error {
			if err := b.startClusterGen(ctx, 1); err != nil {
				return err
			}
			return b.phaseClusterLoop(ctx, "1node", "one node")
		}},
		{"three nodes", func(ctx context.Context) error {
			if err := b.startClusterGen(ctx, clusterNodes); err != nil {
				return err
			}
			return b.phaseClusterLoop(ctx, "3node", "three nodes")
		}},
		{"connections per node", func(ctx context.Context) error {
			if err := b.startClusterGen(ctx, clusterNodes); err != nil {
				return err
			}
			return b.phaseClusterConns(ctx)
		}},
		{"stop", b.finishCluster},
	}
}

// clusterPreflight reads the open-files limit (ulimit -n), which every
// child inherits, and checks that a pusher holding --idle-conns
// connections and a client process fit under it.
func (b *bench) clusterPreflight(context.Context) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("getrlimit: %w", err)
	}
	b.nofile = lim.Cur
	b.logf("ulimit -n: soft %d, hard %d", lim.Cur, lim.Max)
	need := uint64(b.cfg.idlePerNode + pusherFDReserve)
	if lim.Cur < need {
		return fmt.Errorf("ulimit -n is %d: a pusher node with %d connections needs %d", lim.Cur, b.cfg.idlePerNode, need)
	}
	if lim.Cur < uint64(maxConnsPerProcess+pusherFDReserve) {
		return fmt.Errorf("ulimit -n is %d: a client process with %d connections needs %d", lim.Cur, maxConnsPerProcess, maxConnsPerProcess+pusherFDReserve)
	}
	return nil
}

// startClusterGen stops whatever runs (clients, pushers, NATS), starts a
// new NATS cluster on fresh store dirs and ports, then nodes pusher nodes
// on it (in parallel) and the client processes.
func (b *bench) startClusterGen(ctx context.Context, nodes int) error {
	for _, c := range b.clients {
		c.stop()
	}
	b.clients = nil
	b.stopNodes()
	b.stopNATS()
	b.natsGen++
	gen := b.natsGen
	took, err := b.startNATSCluster(ctx, gen)
	if err != nil {
		return err
	}
	var pids []string
	for _, n := range b.nats {
		pids = append(pids, fmt.Sprintf("%s pid %d %s", n.name, n.pid, n.client))
	}
	b.logf("NATS cluster %d formed in %s: %s", gen, took.Round(time.Millisecond), strings.Join(pids, ", "))

	if err := b.startNodes(ctx, gen, nodes); err != nil {
		return err
	}
	if err := b.waitPulling(ctx); err != nil {
		return err
	}
	if err := b.startClients(); err != nil {
		return err
	}
	if gen == 1 {
		b.limitsRow()
	}
	return nil
}

// startNodes starts nodes pusher nodes on the NATS cluster of generation
// gen and checks that each says it routes through the cluster. Node 1
// starts first, so it creates the streams and the consumer alone; then the
// others at once. Started together on an empty cluster, nodes racing to
// create the R3 streams hang in CreateOrUpdateStream until pusher's 30s
// start timeout (see BENCHMARKS.md, Cluster).
func (b *bench) startNodes(ctx context.Context, gen, nodes int) error {
	procs := make([]*pusherProc, nodes)
	errs := make([]error, nodes)
	start := func(i int) {
		procs[i], errs[i] = startPusher(ctx, b.bin, b.tmp, fmt.Sprintf("c%d-pusher-%d", gen, i+1), b.secret, harness.PusherConfig{
			NATSURL: b.natsURLs(i), Replicas: natsClusterSize, Routing: "cluster", Env: b.nodeEnv,
		})
	}
	start(0)
	if errs[0] == nil {
		var wg sync.WaitGroup
		for i := 1; i < nodes; i++ {
			wg.Add(1)
			go func() { defer wg.Done(); start(i) }()
		}
		wg.Wait()
	}
	for i, p := range procs {
		if p != nil {
			b.nodes = append(b.nodes, p)
		}
		if errs[i] != nil {
			return errs[i]
		}
	}
	for _, p := range b.nodes {
		ready, err := p.readyLine(ctx)
		if err != nil {
			return err
		}
		if ready["embedded_nats"] != false || ready["cluster_routing"] != true {
			return fmt.Errorf("%s: pusher.ready says embedded_nats %v, cluster_routing %v; want false, true", p.name, ready["embedded_nats"], ready["cluster_routing"])
		}
		b.logf("%s pid %d http %s", p.name, p.pid, p.HTTPAddr())
	}
	return nil
}

// pullWaitTimeout bounds the wait for every node to have a pull request
// outstanding: more than nats.go's recovery from a lost initial pull, which
// re-pulls after two missed heartbeats (2 x 15 s with pusher's options).
const pullWaitTimeout = 45 * time.Second

// waitPulling waits until consumer pusher has a waiting pull request from
// every node, so the clock never starts with a node that is not pulling.
// An idle node keeps exactly one pull request outstanding. A wait of more
// than a second is noted, with what the nodes logged.
func (b *bench) waitPulling(ctx context.Context) error {
	nc, err := nats.Connect(b.natsURLs(0), nats.Name("bench-inspector"), nats.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("connect NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	start := time.Now()
	first := -1 // pull requests waiting at the first answer
	err = harness.Poll(ctx, pullWaitTimeout, fmt.Sprintf("one pull request per node (%d)", len(b.nodes)), func() error {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c, err := js.Consumer(ictx, wire.StreamName, wire.DurableName)
		if err != nil {
			return err
		}
		ci, err := c.Info(ictx)
		if err != nil {
			return err
		}
		if first < 0 {
			first = ci.NumWaiting
		}
		if ci.NumWaiting < len(b.nodes) {
			return fmt.Errorf("consumer %s: %d pull requests waiting", wire.DurableName, ci.NumWaiting)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w%s", err, b.consumerErrors())
	}
	if d := time.Since(start); d > time.Second {
		b.notes = append(b.notes, fmt.Sprintf("cluster %d: consumer %s had %d pull requests waiting for %d nodes; every node pulled only %s after pusher.ready%s",
			b.natsGen, wire.DurableName, max(first, 0), len(b.nodes), d.Round(100*time.Millisecond), b.consumerErrors()))
		b.logf("every node pulls, after %s", d.Round(100*time.Millisecond))
	}
	return nil
}

// consumerErrors quotes the consumer.error lines the nodes logged so far.
func (b *bench) consumerErrors() string {
	var out []string
	for _, p := range b.nodes {
		s, err := summarizeLog(p.logPath)
		if err != nil {
			continue
		}
		for _, l := range s.problems {
			if strings.Contains(l, "consumer.error") {
				out = append(out, p.name+": "+l)
			}
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; " + strings.Join(out, "; ")
}

// limitsRow reports ulimit -n and what the children actually got.
func (b *bench) limitsRow() {
	var parts []string
	var hard string
	for _, x := range []struct {
		name string
		pid  int
	}{{b.nodes[0].name, b.nodes[0].pid}, {b.nats[0].name, b.nats[0].pid}, {fmt.Sprintf("client %d", b.clients[0].id), b.clients[0].pid}} {
		soft, h, err := procNoFile(x.pid)
		if err != nil {
			parts = append(parts, x.name+" ?")
			continue
		}
		hard = h
		parts = append(parts, x.name+" "+soft)
	}
	b.res.add(metric{Name: "cluster_ulimit_nofile", Label: "open files limit (ulimit -n)", Value: float64(b.nofile), Unit: "fds", prec: 0,
		Extra: fmt.Sprintf("hard %s; children: %s; a pusher needs %d + %d, a client at most %d", hard, strings.Join(parts, ", "),
			b.cfg.idlePerNode, pusherFDReserve, maxConnsPerProcess)})
}

// stopNodes stops the pusher nodes gracefully, in parallel.
func (b *bench) stopNodes() {
	nodes := b.nodes
	b.nodes = nil
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, p := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = p.stop() }()
	}
	wg.Wait()
	for i, p := range nodes {
		b.retired = append(b.retired, p)
		_ = os.RemoveAll(p.dataDir)
		if errs[i] != nil {
			p.kill()
			b.notes = append(b.notes, "graceful stop: "+errs[i].Error())
		} else {
			b.logf("%s stopped gracefully in %s", p.name, p.stopped.Round(time.Millisecond))
		}
	}
}

// stopNATS stops the NATS servers, in parallel, after the pushers.
func (b *bench) stopNATS() {
	servers := b.nats
	b.nats, b.cluster = nil, nil
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, n := range servers {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = n.stop() }()
	}
	wg.Wait()
	for i, n := range servers {
		b.natsDone = append(b.natsDone, n)
		_ = os.RemoveAll(n.storeDir)
		if errs[i] != nil {
			b.notes = append(b.notes, "nats-server stop: "+errs[i].Error())
		}
	}
}

// finishCluster stops everything gracefully and summarises the logs.
func (b *bench) finishCluster(context.Context) error {
	for _, c := range b.clients {
		c.stop()
	}
	b.clients = nil
	b.stopNodes()
	b.stopNATS()
	b.summarizeLogs()
	return nil
}

// jsState is what JetStream says about pusher's streams and consumer.
type jsState struct {
	replicas                   int
	streamLeader, consLeader   string
	pending, ackPending, redel uint64
	dlq                        uint64
}

// jetStreamState waits (bounded) until consumer pusher has nothing
// pending or unacknowledged, and returns the state it last saw.
func (b *bench) jetStreamState(ctx context.Context) (jsState, error) {
	var st jsState
	nc, err := nats.Connect(b.natsURLs(0), nats.Name("bench-inspector"), nats.Timeout(5*time.Second))
	if err != nil {
		return st, fmt.Errorf("connect NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return st, err
	}
	var readErr error
	err = harness.Poll(ctx, settleJSTimeout, "consumer "+wire.DurableName+" settled", func() error {
		st, readErr = readJSState(ctx, js)
		if readErr != nil {
			return readErr
		}
		if st.pending != 0 || st.ackPending != 0 {
			return fmt.Errorf("%d pending, %d unacknowledged", st.pending, st.ackPending)
		}
		return nil
	})
	switch {
	case ctx.Err() != nil:
		return st, ctx.Err()
	case err != nil && readErr != nil:
		return st, readErr
	}
	return st, nil // still pending: reported as a note by the caller
}

func readJSState(ctx context.Context, js jetstream.JetStream) (jsState, error) {
	var st jsState
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, wire.StreamName)
	if err != nil {
		return st, fmt.Errorf("stream %s: %w", wire.StreamName, err)
	}
	si, err := s.Info(ctx)
	if err != nil {
		return st, err
	}
	st.replicas = si.Config.Replicas
	if si.Cluster != nil {
		st.streamLeader = si.Cluster.Leader
	}
	c, err := s.Consumer(ctx, wire.DurableName)
	if err != nil {
		return st, fmt.Errorf("consumer %s: %w", wire.DurableName, err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return st, err
	}
	st.pending, st.ackPending, st.redel = ci.NumPending, uint64(ci.NumAckPending), uint64(ci.NumRedelivered)
	if ci.Cluster != nil {
		st.consLeader = ci.Cluster.Leader
	}
	d, err := js.Stream(ctx, wire.DLQStreamName)
	if err != nil {
		return st, fmt.Errorf("stream %s: %w", wire.DLQStreamName, err)
	}
	di, err := d.Info(ctx)
	if err != nil {
		return st, err
	}
	st.dlq = di.State.Msgs
	return st, nil
}

// pusherServers says which NATS server each pusher node is connected to.
func (b *bench) pusherServers(ctx context.Context) string {
	var parts []string
	for i, names := range b.connNames(ctx) {
		if n := names["pusher"]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", b.nats[i].name, n))
		}
	}
	return strings.Join(parts, ", ")
}

// checkJetStream notes a consumer that did not settle or anything
// redelivered or dead-lettered.
func (b *bench) checkJetStream(phase string, st jsState) {
	if st.replicas != natsClusterSize {
		b.notes = append(b.notes, fmt.Sprintf("%s phase: stream %s has %d replicas, want %d", phase, wire.StreamName, st.replicas, natsClusterSize))
	}
	if st.pending != 0 || st.ackPending != 0 {
		b.notes = append(b.notes, fmt.Sprintf("%s phase: consumer %s still had %d pending and %d unacknowledged %s after the phase",
			phase, wire.DurableName, st.pending, st.ackPending, settleJSTimeout))
	}
	if st.redel != 0 || st.dlq != 0 {
		b.notes = append(b.notes, fmt.Sprintf("%s phase: consumer %s reports %d redelivered messages; %s holds %d dead letters",
			phase, wire.DurableName, st.redel, wire.DLQStreamName, st.dlq))
	}
}

// cpuParts describes the CPU per message of the pusher and nats-server
// processes between two snapshots, per process.
func cpuParts(c0, c1 cpuSnap, m int, names []string) string {
	var ps, ns []string
	for i := range c1.perPusher {
		if i < len(c0.perPusher) {
			ps = append(ps, fmt.Sprintf("%.2f", us(c1.perPusher[i]-c0.perPusher[i])/float64(m)))
		}
	}
	for i := range c1.perNATS {
		if i < len(c0.perNATS) && i < len(names) {
			ns = append(ns, fmt.Sprintf("%s %.2f", names[i], us(c1.perNATS[i]-c0.perNATS[i])/float64(m)))
		}
	}
	return fmt.Sprintf("per process, µs: pusher %s; %s", strings.Join(ps, " + "), strings.Join(ns, ", "))
}

func (b *bench) natsNames() []string {
	var out []string
	for _, n := range b.nats {
		out = append(out, n.name)
	}
	return out
}

// phaseClusterLoop is the closed-loop throughput phase on the pusher
// nodes that run: --conns connections, uid k on node k mod n.
func (b *bench) phaseClusterLoop(ctx context.Context, key, title string) error {
	m, w := b.cfg.messages, b.cfg.window
	nodes := len(b.nodes)
	if _, err := b.dialAll(ctx, b.cfg.conns, "b"); err != nil {
		return err
	}
	if err := b.waitConnections(ctx, b.cfg.conns); err != nil {
		return err
	}
	servers := b.pusherServers(ctx)
	r, err := b.closedLoop(ctx, title, m, uidRange("b", b.cfg.conns))
	if err != nil {
		return err
	}
	st, err := b.jetStreamState(ctx)
	if err != nil {
		return err
	}
	b.checkJetStream(title, st)
	c0, c1, rep := r.c0, r.c1, r.rep
	var split []string
	for i := range nodes {
		split = append(split, strconv.Itoa(shareOf(b.cfg.conns, nodes, i)))
	}
	name := func(s string) string { return "cluster_" + key + "_" + s }
	nodeWord := map[bool]string{true: "1 pusher node", false: fmt.Sprintf("%d pusher nodes", nodes)}[nodes == 1]
	b.res.add(metric{Name: name("throughput_msgs_per_s"),
		Label: fmt.Sprintf("%s: throughput, %s conns, %d B, closed loop (window %d)", title, comma(float64(b.cfg.conns), 0), b.cfg.payload, w),
		Value: r.rate, Unit: "msgs/s", prec: 0,
		Extra: fmt.Sprintf("%s (conns %s), R%d, routing cluster; PUSH leader %s, consumer leader %s; pushers on %s; publisher on %s",
			nodeWord, strings.Join(split, "/"), st.replicas, st.streamLeader, st.consLeader, servers, b.nats[0].name)})
	if key == "3node" {
		if one, ok := b.res.get("cluster_1node_throughput_msgs_per_s"); ok && one > 0 {
			b.res.add(metric{Name: "cluster_3node_to_1node_ratio", Label: "three nodes / one node throughput", Value: r.rate / one, Unit: "ratio", prec: 2,
				Extra: fmt.Sprintf("%s / %s msgs/s", comma(r.rate, 0), comma(one, 0))})
		}
	}
	pUS, nUS := us(c1.pusher-c0.pusher)/float64(m), us(c1.nats-c0.nats)/float64(m)
	b.res.add(metric{Name: name("cpu_us_per_msg"), Label: "  CPU per delivered message (pushers + nats-servers)", Value: pUS + nUS, Unit: "µs", prec: 2,
		Extra: cpuParts(c0, c1, m, b.natsNames())})
	b.res.add(metric{Name: name("pusher_cpu_us_per_msg"), Label: "    of which pusher processes", Value: pUS, Unit: "µs", prec: 2})
	b.res.add(metric{Name: name("nats_cpu_us_per_msg"), Label: "    of which nats-server processes", Value: nUS, Unit: "µs", prec: 2})
	b.res.add(metric{Name: name("lost"), Label: "  lost / duplicate messages", Value: float64(int64(m) - rep.unique), Unit: "msgs", prec: 0,
		Extra: fmt.Sprintf("%d dup; %s", rep.dup, b.outcomeText(r, st))})
	b.res.add(metric{Name: name("duplicates"), Value: float64(rep.dup), Unit: "msgs", hidden: true})
	if nodes > 1 {
		b.pullsRow(name("pulls_largest_share_pct"), r, m)
	}
	b.machineRow(name("machine_cpu_busy_pct"), title, c0, c1)
	b.logf("%s: %d msgs in %s = %.0f msgs/s, %.2f µs CPU/msg (pushers %.2f + nats-servers %.2f)",
		title, m, r.elapsed.Round(time.Millisecond), r.rate, pUS+nUS, pUS, nUS)
	return nil
}

// outcomeText sums the pushers' settlement counters over a loop and what
// JetStream says afterwards.
func (b *bench) outcomeText(r loopResult, st jsState) string {
	d := func(outcome string) float64 {
		return harness.Merge(r.met1...).Sum("pusher_messages_total", "outcome", outcome) - harness.Merge(r.met0...).Sum("pusher_messages_total", "outcome", outcome)
	}
	return fmt.Sprintf("pushers delivered %.0f, retried %.0f, dead-lettered %.0f; consumer redelivered %d, %s %d msgs",
		d("delivered"), d("retried"), d("deadlettered"), st.redel, wire.DLQStreamName, st.dlq)
}

// pullsRow reports how the consumer spread the messages over the nodes:
// each node settles what it pulled, wherever the uid is connected.
func (b *bench) pullsRow(name string, r loopResult, m int) {
	var parts []string
	largest := 0.0
	for i := range r.met1 {
		if i >= len(r.met0) {
			break
		}
		n := r.met1[i].Sum("pusher_messages_total", "outcome", "delivered") - r.met0[i].Sum("pusher_messages_total", "outcome", "delivered")
		parts = append(parts, comma(n, 0))
		largest = max(largest, n)
	}
	b.res.add(metric{Name: name, Label: "  messages pulled and settled per node, largest share", Value: 100 * largest / float64(m), Unit: "%", prec: 1,
		Extra: "nodes 1/2/3: " + strings.Join(parts, " / ")})
}

// phaseClusterConns opens --idle-conns idle connections to each node,
// reports the connect rate and each node's RSS growth, then runs the
// closed-loop burst with every connection open.
func (b *bench) phaseClusterConns(ctx context.Context) error {
	nodes, per := len(b.nodes), b.cfg.idlePerNode
	total := nodes * per
	rss0, err := b.settleAll(ctx)
	if err != nil {
		return err
	}
	nrss0 := b.natsRSS()
	m0, err := b.scrapeEach(ctx)
	if err != nil {
		return err
	}
	if err := b.beginPhase(ctx, "idle", 0); err != nil {
		return err
	}
	api0, err := b.natsAPITotal(ctx)
	if err != nil {
		return err
	}
	c0, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	rate, err := b.dialAll(ctx, total, "idle")
	if err != nil {
		return err
	}
	c1, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	connected := time.Now()
	// Sample the JetStream API counters from now on, so the end of the
	// replay-on-connect lookups is timed to the sampling interval.
	sampler := b.sampleAPI(ctx)
	defer sampler.stop()
	if err := b.waitConnections(ctx, total); err != nil {
		return err
	}
	maxFDs := 0
	for _, c := range b.clients {
		fds, err := procFDs(c.pid)
		if err != nil {
			return err
		}
		maxFDs = max(maxFDs, fds)
	}
	var pusherFDs, natsFDs []string
	maxPusherFDs := 0
	for _, p := range b.nodes {
		fds, _ := procFDs(p.pid)
		maxPusherFDs = max(maxPusherFDs, fds)
		pusherFDs = append(pusherFDs, strconv.Itoa(fds))
	}
	for _, n := range b.nats {
		fds, _ := procFDs(n.pid)
		natsFDs = append(natsFDs, strconv.Itoa(fds))
	}
	rss1, err := b.settleAll(ctx)
	if err != nil {
		return err
	}
	gcNote := "settled, before the next GC"
	if b.cfg.gcWait > 0 {
		pre, err := b.scrapeEach(ctx)
		if err != nil {
			return err
		}
		b.logf("connections: waiting up to %s for every node's next GC", b.cfg.gcWait)
		seen := make([]bool, nodes)
		errs := make([]error, nodes)
		var wg sync.WaitGroup
		for i, p := range b.nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				seen[i], errs[i] = b.waitGC(ctx, p, pre[i].Sum("go_gc_duration_seconds_count"), b.cfg.gcWait)
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
		gcNote = "after a GC"
		for i, ok := range seen {
			if !ok {
				gcNote = "after a GC (not on every node)"
				b.notes = append(b.notes, fmt.Sprintf("connection phase: %s ran no GC within %s", b.nodes[i].name, b.cfg.gcWait))
			}
		}
		if rss1, err = b.settleAll(ctx); err != nil {
			return err
		}
	}
	nrss1 := b.natsRSS()
	m1, err := b.scrapeEach(ctx)
	if err != nil {
		return err
	}

	lbl := fmt.Sprintf("%s conns per node (%s in all)", comma(float64(per), 0), comma(float64(total), 0))
	b.res.add(metric{Name: "cluster_connect_rate_per_s", Label: fmt.Sprintf("connect rate, %s over %d nodes (%d processes x %d in flight)", comma(float64(total), 0), nodes, len(b.clients), b.cfg.dialParallel),
		Value: rate, Unit: "conns/s", prec: 0})
	pUS, nUS := us(c1.pusher-c0.pusher)/float64(total), us(c1.nats-c0.nats)/float64(total)
	b.res.add(metric{Name: "cluster_cpu_us_per_connect", Label: "  CPU per connect (pushers + nats-servers)", Value: pUS + nUS, Unit: "µs", prec: 1,
		Extra: fmt.Sprintf("pushers %.1f + nats-servers %.1f (presence subscription and flush)", pUS, nUS)})
	b.machineRow("cluster_connect_machine_cpu_busy_pct", "connects", c0, c1)
	var later []metric // the memory rows, after the replay rows
	heap := func(m harness.Metrics) float64 { return m.Sum("go_memstats_heap_inuse_bytes") }
	stack := func(m harness.Metrics) float64 { return m.Sum("go_memstats_stack_inuse_bytes") }
	for i, p := range b.nodes {
		n := float64(per)
		later = append(later, metric{Name: fmt.Sprintf("cluster_node%d_rss_kib_per_idle_conn", i+1), Label: fmt.Sprintf("node %d: RSS per idle connection, %s", i+1, lbl),
			Value: float64(rss1[i]-rss0[i]) / n / 1024, Unit: "KiB", prec: 2,
			Extra: fmt.Sprintf("%s RSS %.1f -> %.1f MiB, %s; Go heap %.2f + stacks %.2f KiB/conn in use; %.2f goroutines/conn",
				p.name, float64(rss0[i])/(1<<20), float64(rss1[i])/(1<<20), gcNote,
				(heap(m1[i])-heap(m0[i]))/n/1024, (stack(m1[i])-stack(m0[i]))/n/1024,
				(m1[i].Sum("go_goroutines")-m0[i].Sum("go_goroutines"))/n)})
	}
	var nparts []string
	var ngrow int64
	for i, n := range b.natsNames() {
		nparts = append(nparts, fmt.Sprintf("%s %.1f -> %.1f MiB", n, float64(nrss0[i])/(1<<20), float64(nrss1[i])/(1<<20)))
		ngrow += nrss1[i] - nrss0[i]
	}
	later = append(later, metric{Name: "cluster_nats_rss_kib_per_conn", Label: "  nats-servers' RSS growth per connection (all 3)", Value: float64(ngrow) / float64(total) / 1024, Unit: "KiB", prec: 2,
		Extra: strings.Join(nparts, ", ") + fmt.Sprintf("; %s presence subscriptions", comma(float64(total), 0))})
	later = append(later, metric{Name: "cluster_pusher_max_open_fds", Label: "open fds at " + comma(float64(total), 0) + " conns, pusher max", Value: float64(maxPusherFDs), Unit: "fds", prec: 0,
		Extra: fmt.Sprintf("pushers %s; clients max %d (cap %s); nats-servers %s; ulimit -n %d",
			strings.Join(pusherFDs, "/"), maxFDs, comma(fdLimit, 0), strings.Join(natsFDs, "/"), b.nofile)})
	later = append(later, metric{Name: "cluster_client_max_open_fds", Value: float64(maxFDs), Unit: "fds", hidden: true})
	b.logf("connections: %d per node at %.0f conns/s; RSS/conn %s KiB", per, rate, rssText(rss0, rss1, per))

	// Every connect queues a replay-on-connect lookup of the uid's dead
	// letters, which are JetStream API requests; pusher works through
	// them after the upgrade. Wait until they are done, so the burst is
	// measured alone, and charge their CPU to the connects.
	b.logf("connections: waiting for the replay-on-connect lookups to finish (JetStream API requests to stop)")
	drained, apiD, err := b.waitAPIQuiet(ctx, replayDrainTimeout)
	lastBusy := sampler.stop()
	if err != nil {
		return err
	}
	cD, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	took := lastBusy.Sub(connected)
	if !drained {
		took = time.Since(connected)
	}
	detail := fmt.Sprintf("%s JetStream API requests = %.2f per connect (sum of /jsz api.total over the servers)", comma(apiD-api0, 0), (apiD-api0)/float64(total))
	if !drained {
		b.notes = append(b.notes, fmt.Sprintf("connection phase: JetStream API requests had not stopped %s after the last connect; the burst ran with replay-on-connect lookups still going", took.Round(time.Second)))
		detail = "NOT finished; " + detail
	}
	b.res.add(metric{Name: "cluster_replay_drain_s", Label: "  replay-on-connect lookups done, after the last connect", Value: took.Seconds(), Unit: "s", prec: 1, Extra: detail})
	pUS, nUS = us(cD.pusher-c0.pusher)/float64(total), us(cD.nats-c0.nats)/float64(total)
	b.res.add(metric{Name: "cluster_cpu_us_per_connect_with_replay", Label: "  CPU per connect, with its replay-on-connect lookup", Value: pUS + nUS, Unit: "µs", prec: 1,
		Extra: fmt.Sprintf("pushers %.1f + nats-servers %.1f; from the first connect until the lookups were done", pUS, nUS)})
	b.logf("connections: lookups done %s after the last connect; %.0f JetStream API requests", took.Round(100*time.Millisecond), apiD-api0)
	for _, m := range later {
		b.res.add(m)
	}
	return b.clusterBurst(ctx, total)
}

// apiSampler polls the servers' JetStream API counters every
// apiSampleEvery and remembers when they last grew faster than
// apiQuietRate.
type apiSampler struct {
	cancel   context.CancelFunc
	done     chan struct{}
	lastBusy time.Time
}

const apiSampleEvery = 250 * time.Millisecond

func (b *bench) sampleAPI(ctx context.Context) *apiSampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &apiSampler{cancel: cancel, done: make(chan struct{}), lastBusy: time.Now()}
	go func() {
		defer close(s.done)
		prev, err := b.natsAPITotal(ctx)
		t := time.NewTicker(apiSampleEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				cur, err2 := b.natsAPITotal(ctx)
				if err != nil || err2 != nil {
					prev, err = cur, err2
					continue
				}
				if cur-prev >= apiQuietRate*apiSampleEvery.Seconds() {
					s.lastBusy = now
				}
				prev = cur
			}
		}
	}()
	return s
}

// stop ends the sampling and returns when the counters last grew.
func (s *apiSampler) stop() time.Time {
	s.cancel()
	<-s.done
	return s.lastBusy
}

// replayDrainTimeout bounds the wait for the replay-on-connect lookups.
const replayDrainTimeout = 3 * time.Minute

// natsAPITotal sums the servers' JetStream API request counters.
func (b *bench) natsAPITotal(ctx context.Context) (float64, error) {
	var sum float64
	for i, n := range b.nats {
		var jsz struct {
			API struct {
				Total float64 `json:"total"`
			} `json:"api"`
		}
		if err := b.cluster.MonitorJSON(ctx, i, "/jsz", &jsz); err != nil {
			return 0, fmt.Errorf("%s /jsz: %w", n.name, err)
		}
		sum += jsz.API.Total
	}
	return sum, nil
}

// waitAPIQuiet waits until the servers' JetStream API request counters
// grow by fewer than apiQuietRate a second (each pusher polls its
// consumer's info every 5 s), for at most limit. It returns whether they
// did and the last total.
func (b *bench) waitAPIQuiet(ctx context.Context, limit time.Duration) (bool, float64, error) {
	deadline := time.Now().Add(limit)
	prev, err := b.natsAPITotal(ctx)
	if err != nil {
		return false, 0, err
	}
	for {
		if err := sleepCtx(ctx, time.Second); err != nil {
			return false, prev, err
		}
		cur, err := b.natsAPITotal(ctx)
		if err != nil {
			return false, prev, err
		}
		if cur-prev < apiQuietRate {
			return true, cur, nil
		}
		if time.Now().After(deadline) {
			return false, cur, nil
		}
		prev = cur
	}
}

// apiQuietRate is the JetStream API requests per second below which the
// servers count as quiet.
const apiQuietRate = 10

func rssText(rss0, rss1 []int64, per int) string {
	var out []string
	for i := range rss0 {
		out = append(out, fmt.Sprintf("%.2f", float64(rss1[i]-rss0[i])/float64(per)/1024))
	}
	return strings.Join(out, "/")
}

// clusterBurst: with every idle connection open, a closed-loop burst to
// the first --burst-uids of them (uid k on node k mod 3).
func (b *bench) clusterBurst(ctx context.Context, total int) error {
	m, u := b.cfg.burstMsgs, b.cfg.burstUIDs
	r, err := b.closedLoop(ctx, "burst", m, uidRange("idle", u))
	if err != nil {
		return err
	}
	st, err := b.jetStreamState(ctx)
	if err != nil {
		return err
	}
	b.checkJetStream("burst", st)
	if err := b.waitConnections(ctx, total); err != nil {
		return fmt.Errorf("after the burst: %w", err)
	}
	c0, c1, rep := r.c0, r.c1, r.rep
	var split []string
	for i := range b.nodes {
		split = append(split, strconv.Itoa(shareOf(u, len(b.nodes), i)))
	}
	b.res.add(metric{Name: "cluster_burst_msgs_per_s",
		Label: fmt.Sprintf("burst with %s conns open: %s msgs to %s uids, closed loop (window %d)", comma(float64(total), 0), comma(float64(m), 0), comma(float64(u), 0), b.cfg.window),
		Value: r.rate, Unit: "msgs/s", prec: 0,
		Extra: fmt.Sprintf("uids per node %s; PUSH leader %s, consumer leader %s", strings.Join(split, "/"), st.streamLeader, st.consLeader)})
	pUS, nUS := us(c1.pusher-c0.pusher)/float64(m), us(c1.nats-c0.nats)/float64(m)
	b.res.add(metric{Name: "cluster_burst_cpu_us_per_msg", Label: "  CPU per delivered message (pushers + nats-servers)", Value: pUS + nUS, Unit: "µs", prec: 2,
		Extra: fmt.Sprintf("pushers %.2f + nats-servers %.2f", pUS, nUS)})
	b.res.add(metric{Name: "cluster_burst_lost", Label: "  lost / duplicate messages", Value: float64(int64(m) - rep.unique), Unit: "msgs", prec: 0,
		Extra: fmt.Sprintf("%d dup; %s; connections the servers ended %d", rep.dup, b.outcomeText(r, st), rep.dropped)})
	b.res.add(metric{Name: "cluster_burst_duplicates", Value: float64(rep.dup), Unit: "msgs", hidden: true})
	b.pullsRow("cluster_burst_pulls_largest_share_pct", r, m)
	b.machineRow("cluster_burst_machine_cpu_busy_pct", "burst", c0, c1)
	b.logf("burst: %d msgs to %d uids in %s = %.0f msgs/s", m, u, r.elapsed.Round(time.Millisecond), r.rate)
	return nil
}

// settleAll waits, for every node in parallel, until its RSS settled.
func (b *bench) settleAll(ctx context.Context) ([]int64, error) {
	out := make([]int64, len(b.nodes))
	errs := make([]error, len(b.nodes))
	var wg sync.WaitGroup
	for i, p := range b.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); out[i], errs[i] = b.settleRSS(ctx, p.name, p.pid) }()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// natsRSS reads every nats-server's RSS (0 when unreadable).
func (b *bench) natsRSS() []int64 {
	out := make([]int64, len(b.nats))
	for i, n := range b.nats {
		out[i], _ = procRSS(n.pid)
	}
	return out
}
