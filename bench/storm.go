package main

// Storm mode (go run ./bench --storm[=single|cluster|both], make
// bench-storm): connect storms at the scale (issue 16). Operators
// restart pusher nodes to deploy, and every client of a restarted node
// reconnects at once while messages for its users pile up as offline dead
// letters, replayed as they return. The e2e tier runs the same scenarios
// small (e2e/storm_test.go); here the clients are --storm-clients per node
// in the client processes (harness.BackoffClients, the official client's
// back-off, through the storm commands of client.go), a PacedPublisher
// publishes --storm-rate messages a second to their uids throughout, and
// each restart is measured and judged against the targets:
//
//   - single: one pusher with its embedded NATS, SIGTERMed and started
//     again on the same data dir and ports;
//   - cluster: three pusher nodes on a three-server NATS cluster, each
//     SIGTERMed and started again in turn (the next once every client is
//     back and no offline dead letter is left).

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/e2e/harness"
)

// The targets, per restart.
const (
	// stormBackTarget: every client connected again within 5 s of its
	// node being ready.
	stormBackTarget = 5 * time.Second
	// stormP99Target: connect p99 during a storm, from the dial's start
	// to the upgrade done, as the client processes see it.
	stormP99Target = 500 * time.Millisecond
	// stormReplayTarget: the returning users' offline dead letters
	// replayed (none left in PUSH_DLQ) within 5 s of every user back.
	stormReplayTarget = 5 * time.Second
)

// Bounds of the waits: far above the targets, so that a missed target is
// measured and reported rather than cut off.
const (
	stormOnlineTimeout = 3 * time.Minute // the first connect of every client
	stormBackTimeout   = 2 * time.Minute // every client back after a restart
	stormDLQTimeout    = 2 * time.Minute // no offline dead letter left
	stormLossTimeout   = 90 * time.Second
	// stormBaseline is the steady stretch before each SIGTERM whose
	// pusher CPU and NATS message rates are the baseline the storm's
	// are compared with.
	stormBaseline = 3 * time.Second
	// stormPollEvery is how often the client processes are asked how
	// many clients are connected.
	stormPollEvery = 50 * time.Millisecond
)

// stormMode is --storm: a bool flag (--storm is both) that also takes
// single, cluster or both.
type stormMode string

func (s *stormMode) String() string { return string(*s) }

// IsBoolFlag lets --storm stand alone.
func (s *stormMode) IsBoolFlag() bool { return true }

func (s *stormMode) Set(v string) error {
	switch v {
	case "true", "both":
		*s = "both"
	case "false", "":
		*s = ""
	case "single", "cluster":
		*s = stormMode(v)
	default:
		return fmt.Errorf("want single, cluster or both, not %q", v)
	}
	return nil
}

func (s stormMode) single() bool  { return s == "single" || s == "both" }
func (s stormMode) cluster() bool { return s == "cluster" || s == "both" }

// stormEnv is the storm pushers' environment, as the e2e storm tests
// have it: production's redelivery timing (a delivery awaiting its pong
// in a storm must not be redelivered as a duplicate) and no per-message
// log line (the storm, not the log, is measured).
func stormEnv() map[string]string {
	return map[string]string{
		"PUSHER_ACK_WAIT":      "30s",
		"PUSHER_BACKOFF":       "1s,5s,30s",
		"PUSHER_LOG_DELIVERED": "false",
		"PUSHER_UI":            "false",
	}
}

// stormFDHeadroom is what stormMaxConns leaves of ulimit -n besides
// the connections: a handshake refused because the node is full holds its
// socket until the 503 is written, and a storm has thousands in flight.
// Measured with 500 (pusherFDReserve): the nodes ran out of descriptors
// (accept4: too many open files) while refusing.
const stormFDHeadroom = 3000

// stormMaxConns is PUSHER_MAX_CONNS of a cluster storm's nodes: a node
// refuses connections beyond it (the clients go to another node, or wait)
// rather than run out of file descriptors, since a rolling restart piles
// the clients of each stopped node onto the others.
func (b *bench) stormMaxConns() int { return int(b.nofile) - stormFDHeadroom }

func (b *bench) stormSteps() []step {
	steps := []step{{"build", b.build}}
	if b.cfg.storm.single() {
		steps = append(steps, step{"storm: single node", b.stormSingle})
	}
	if b.cfg.storm.cluster() {
		steps = append(steps,
			step{"preflight", b.stormPreflight},
			step{"build nats-server", b.buildNATS},
			step{"storm: cluster", b.stormCluster})
	}
	return append(steps, step{"stop", b.finishCluster})
}

// stormPreflight reads ulimit -n, which the pushers inherit and which
// sets PUSHER_MAX_CONNS, and checks a node can hold its clients.
func (b *bench) stormPreflight(ctx context.Context) error {
	b.cfg.idlePerNode = b.cfg.stormClients
	if err := b.clusterPreflight(ctx); err != nil {
		return err
	}
	if pile := b.cfg.stormClients * 9 / 4; pile > b.stormMaxConns() {
		b.notes = append(b.notes, fmt.Sprintf("cluster storm: a rolling restart can pile up to %s clients on one node (2.25 × %s), above the %s connections ulimit -n %d allows; PUSHER_MAX_CONNS=%d refuses the rest, which wait for the restarted node",
			comma(float64(pile), 0), comma(float64(b.cfg.stormClients), 0), comma(float64(b.stormMaxConns()), 0), b.nofile, b.stormMaxConns()))
	}
	return nil
}

// stormSingle: one pusher with its embedded NATS, restarted once.
func (b *bench) stormSingle(ctx context.Context) error {
	p, err := startPusher(ctx, b.bin, b.tmp, "storm-pusher", b.secret, harness.PusherConfig{Env: stormEnv()})
	if err != nil {
		return err
	}
	b.pusher = p
	b.logf("pusher pid %d http %s nats %s", p.pid, p.HTTPAddr(), p.NATSURL())
	if err := b.startClients(); err != nil {
		return err
	}
	s, err := b.startStorm(ctx, "single", "ss", b.cfg.stormClients, []string{p.NATSURL()}, p.NATSURL())
	if err != nil {
		return err
	}
	defer s.close()
	r, err := b.restartInStorm(ctx, s, 0)
	if err != nil {
		return err
	}
	b.stormRows("storm_single", "single node restart", r)
	if err := b.stormEnd(ctx, s); err != nil {
		return err
	}
	for _, c := range b.clients {
		c.stop()
	}
	b.clients = nil
	if old := b.pusher; old != nil {
		b.pusher = nil
		b.retired = append(b.retired, old)
		if err := old.stop(); err != nil {
			b.notes = append(b.notes, "graceful stop: "+err.Error())
		}
	}
	return nil
}

// stormCluster: three pusher nodes on a three-server NATS cluster, each
// restarted in turn.
func (b *bench) stormCluster(ctx context.Context) error {
	b.nodeEnv = stormEnv()
	b.nodeEnv["PUSHER_MAX_CONNS"] = strconv.Itoa(b.stormMaxConns())
	defer func() { b.nodeEnv = nil }()
	if err := b.startClusterGen(ctx, clusterNodes); err != nil {
		return err
	}
	var urls []string
	for i := range natsClusterSize {
		urls = append(urls, b.cluster.URL(i))
	}
	s, err := b.startStorm(ctx, "cluster", "sc", clusterNodes*b.cfg.stormClients, urls, b.natsURLs(0))
	if err != nil {
		return err
	}
	defer s.close()
	for i := range clusterNodes {
		r, err := b.restartInStorm(ctx, s, i)
		if err != nil {
			return err
		}
		b.stormRows(fmt.Sprintf("storm_cluster_r%d", i+1), fmt.Sprintf("cluster: restart %d of 3 (%s)", i+1, r.node), r)
	}
	return b.stormEnd(ctx, s)
}

// stormRun is one storm scenario's clients, publisher and JetStream view.
type stormRun struct {
	mode  string
	n     int // clients
	pub   *harness.PacedPublisher
	nc    *nats.Conn
	js    jetstream.JetStream
	start time.Time
}

func (s *stormRun) close() {
	if s.pub != nil {
		s.pub.Close()
	}
	if s.nc != nil {
		s.nc.Close()
	}
}

// startStorm starts n reconnecting clients for uids prefix0.. in the
// client processes (contiguous shares), waits until all are connected,
// and starts the paced publisher on pubURLs, with two seconds of steady
// traffic before it returns.
func (b *bench) startStorm(ctx context.Context, mode, prefix string, n int, pubURLs []string, inspect string) (*stormRun, error) {
	s := &stormRun{mode: mode, n: n, start: time.Now()}
	err := onAll(b.clients, func(i int, c *clientProc) error {
		first, share := shareRange(n, len(b.clients), i)
		_, _, err := c.request(ctx, fmt.Sprintf("storm %d %s %d", share, prefix, first), clientRequestTimeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	firstAt, err := b.stormWaitOnline(ctx, stormOnlineTimeout)
	if err != nil {
		return nil, err
	}
	dials, err := b.stormDials(ctx, s.start, firstAt.Add(time.Millisecond))
	if err != nil {
		return nil, err
	}
	st := dials.Window(s.start, firstAt.Add(time.Millisecond))
	b.res.add(metric{Name: "storm_" + mode + "_first_connect_s", Label: fmt.Sprintf("storm %s: %s clients first connected, all at once", mode, comma(float64(n), 0)),
		Value: firstAt.Sub(s.start).Seconds(), Unit: "s", prec: 1,
		Extra: fmt.Sprintf("%s; %d client processes", st, len(b.clients))})
	b.logf("storm %s: %d clients connected in %s (%s)", mode, n, firstAt.Sub(s.start).Round(time.Millisecond), st)

	s.pub, err = harness.NewPacedPublisher(pubURLs, uidRange(prefix, n), prefix+"-m", float64(b.cfg.stormRate))
	if err != nil {
		return nil, err
	}
	s.nc, err = nats.Connect(inspect, nats.Name("bench-storm-inspector"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		s.close()
		return nil, fmt.Errorf("connect NATS: %w", err)
	}
	if s.js, err = jetstream.New(s.nc); err != nil {
		s.close()
		return nil, err
	}
	err = harness.Poll(ctx, 30*time.Second, "two seconds of paced publishes acked", func() error {
		if a := s.pub.Acked(); a < int64(2*b.cfg.stormRate) {
			return fmt.Errorf("%d acked", a)
		}
		return nil
	})
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// shareRange is client process i's uids of n spread over procs: the
// first index and how many.
func shareRange(n, procs, i int) (first, share int) {
	share = n / procs
	first = i*share + min(i, n%procs)
	if i < n%procs {
		share++
	}
	return first, share
}

// stormStat is the storm clients' state summed over the client processes.
type stormStat struct {
	online, n     int
	fullAt        time.Time // when the last process reached all online; zero unless all are
	frames, dups  int64
	processesFull int
}

func (b *bench) stormStat(ctx context.Context) (stormStat, error) {
	var mu sync.Mutex
	var st stormStat
	err := onAll(b.clients, func(_ int, c *clientProc) error {
		_, f, err := c.request(ctx, "sstat", clientRequestTimeout)
		if err != nil {
			return err
		}
		if len(f) != 6 || f[0] != "sstat" {
			return fmt.Errorf("client %d: bad sstat answer %q", c.id, f)
		}
		var v [5]int64
		for i := range v {
			if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				return fmt.Errorf("client %d: bad sstat answer %q", c.id, f)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		st.online += int(v[0])
		st.n += int(v[1])
		if v[2] > 0 {
			st.processesFull++
			if at := time.Unix(0, v[2]); at.After(st.fullAt) {
				st.fullAt = at
			}
		}
		st.frames += v[3]
		st.dups += v[4]
		return nil
	})
	if st.processesFull < len(b.clients) {
		st.fullAt = time.Time{}
	}
	return st, err
}

// stormWaitOnline waits until every storm client is connected and
// returns when the last one connected.
func (b *bench) stormWaitOnline(ctx context.Context, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := harness.PollEvery(ctx, timeout, stormPollEvery, "every storm client connected", func() error {
		st, err := b.stormStat(ctx)
		if err != nil {
			return harness.Abort(err)
		}
		if st.fullAt.IsZero() {
			return fmt.Errorf("%d of %d connected", st.online, st.n)
		}
		at = st.fullAt
		return nil
	})
	return at, err
}

// stormDials merges the client processes' connect attempts that started
// in [from, to) into one log, in the order they ended.
func (b *bench) stormDials(ctx context.Context, from, to time.Time) (*harness.DialLog, error) {
	per := make([][]harness.Dial, len(b.clients))
	err := onAll(b.clients, func(i int, c *clientProc) error {
		data, f, err := c.request(ctx, fmt.Sprintf("sdials %d %d", from.UnixNano(), to.UnixNano()), clientRequestTimeout)
		if err != nil {
			return err
		}
		for _, line := range data {
			vals, ok := strings.CutPrefix(line, "d ")
			if !ok {
				continue
			}
			for _, v := range strings.Fields(vals) {
				p := strings.SplitN(v, ":", 5)
				if len(p) != 5 {
					return fmt.Errorf("client %d: bad dial %q", c.id, v)
				}
				start, err1 := strconv.ParseInt(p[0], 10, 64)
				took, err2 := strconv.ParseInt(p[1], 10, 64)
				res, err3 := strconv.Atoi(p[2])
				backoff, err4 := strconv.ParseInt(p[3], 10, 64)
				if err := errors.Join(err1, err2, err3, err4); err != nil {
					return fmt.Errorf("client %d: bad dial %q: %w", c.id, v, err)
				}
				per[i] = append(per[i], harness.Dial{Start: time.Unix(0, start), Took: time.Duration(took), Result: harness.DialResult(res),
					Backoff: time.Duration(backoff), UID: p[4]})
			}
		}
		if len(f) != 2 || f[1] != strconv.Itoa(len(per[i])) {
			return fmt.Errorf("client %d: got %d dials, announced %q", c.id, len(per[i]), f)
		}
		return nil
	})
	all := slices.Concat(per...)
	// In the order they ended, as one process's log keeps them, so that
	// AfterReady sees each client's attempts in its order.
	slices.SortStableFunc(all, func(x, y harness.Dial) int { return x.Start.Add(x.Took).Compare(y.Start.Add(y.Took)) })
	l := &harness.DialLog{}
	for _, d := range all {
		l.Add(d)
	}
	return l, err
}

// stormRestart is what one restart measured.
type stormRestart struct {
	node    string
	clients int           // the node's connections when it was stopped
	stopped time.Duration // SIGTERM to exit
	ready   time.Duration // SIGTERM to the new process's pusher.ready
	back    time.Duration // SIGTERM to every client connected again
	dials   harness.DialStats
	// failedAfterReady counts dials that failed (not refused as busy)
	// although they started after the node was ready; backAfterDial is
	// the longest a client took from its first dial after ready.
	failedAfterReady int
	backAfterDial    time.Duration
	dlqStored        uint64        // dead letters stored from SIGTERM until none was left
	clean            time.Duration // SIGTERM until no offline dead letter was left
	cleanOK          bool
	dups             int64
	// connects are the successful dials of the storm window, [SIGTERM,
	// max(back, ready)); cpu is what the pusher processes used over it
	// (the stopped one until its last reading before SIGTERM, the new
	// one from its start); baseCPU is the pushers' CPU a second over
	// the stretch before SIGTERM, under the same publish rate.
	connects        int
	window          time.Duration
	cpu, baseCPU    time.Duration
	natsMsgs        float64 // cluster: Σ /varz in_msgs+out_msgs over the window
	natsBase        float64 // the same a second, before SIGTERM
	jsAPI, jsAPIBas float64 // cluster: Σ /jsz api.total over the window, and a second before
	load            string
	// inTarget is how many of the clients that reconnected during the
	// storm were back by stormBackTarget after ready (or before ready).
	inTarget, reconnected int
}

// backWithin counts the clients whose first successful dial of storm
// ended by deadline, and the clients that connected at all.
func backWithin(storm []harness.Dial, deadline time.Time) (within, all int) {
	back := map[string]bool{}
	for _, d := range storm {
		if d.Result == harness.DialOK && !back[d.UID] {
			back[d.UID] = !d.Start.Add(d.Took).After(deadline)
		}
	}
	for _, ok := range back {
		if ok {
			within++
		}
	}
	return within, len(back)
}

func (r stormRestart) backAfterReady() time.Duration { return max(0, r.back-r.ready) }
func (r stormRestart) cleanAfterBack() time.Duration { return max(0, r.clean-max(r.back, r.ready)) }

// pusherCPUs is each running pusher process's CPU so far, by pid.
func (b *bench) pusherCPUs() map[int]time.Duration {
	out := map[int]time.Duration{}
	for _, p := range b.livePushers() {
		if d, err := procCPU(p.pid, b.ticks); err == nil {
			out[p.pid] = d
		}
	}
	return out
}

func cpuDelta(before, after map[int]time.Duration) time.Duration {
	var d time.Duration
	for pid, c := range after {
		d += c - before[pid]
	}
	return d
}

// natsCounters sums the cluster's /varz in_msgs+out_msgs and /jsz
// api.total; zeros with the embedded server (not reachable from here).
func (b *bench) natsCounters(ctx context.Context) (msgs, api float64, err error) {
	if b.cluster == nil {
		return 0, 0, nil
	}
	for i := range b.nats {
		var varz struct {
			InMsgs  float64 `json:"in_msgs"`
			OutMsgs float64 `json:"out_msgs"`
		}
		if err := b.cluster.MonitorJSON(ctx, i, "/varz", &varz); err != nil {
			return 0, 0, fmt.Errorf("%s /varz: %w", b.nats[i].name, err)
		}
		msgs += varz.InMsgs + varz.OutMsgs
	}
	api, err = b.natsAPITotal(ctx)
	return msgs, api, err
}

// restartInStorm SIGTERMs live pusher i, starts it again on the same data
// dir and ports, and measures the storm: until every client is connected
// again and no offline dead letter is left.
func (b *bench) restartInStorm(ctx context.Context, s *stormRun, i int) (stormRestart, error) {
	old := b.livePushers()[i]
	var r stormRestart
	r.node = old.name
	m, err := old.Metrics(ctx)
	if err != nil {
		return r, err
	}
	r.clients = int(m.Sum("pusher_connections"))
	stored0, err := harness.DLQStored(ctx, s.js)
	if err != nil {
		return r, err
	}
	st0, err := b.stormStat(ctx)
	if err != nil {
		return r, err
	}

	// Baseline: the steady publish rate's cost, just before the SIGTERM.
	baseCPU0 := b.pusherCPUs()
	baseMsgs0, baseAPI0, err := b.natsCounters(ctx)
	if err != nil {
		return r, err
	}
	if err := sleepCtx(ctx, stormBaseline); err != nil {
		return r, err
	}
	cpu0 := b.pusherCPUs()
	msgs0, api0, err := b.natsCounters(ctx)
	if err != nil {
		return r, err
	}
	r.baseCPU = time.Duration(float64(cpuDelta(baseCPU0, cpu0)) / stormBaseline.Seconds())
	r.natsBase, r.jsAPIBas = (msgs0-baseMsgs0)/stormBaseline.Seconds(), (api0-baseAPI0)/stormBaseline.Seconds()
	r.load = loadAvg()

	stopAt := time.Now()
	stopErr := old.stop()
	r.stopped = time.Since(stopAt)
	b.retired = append(b.retired, old)
	if stopErr != nil {
		b.notes = append(b.notes, fmt.Sprintf("storm %s: graceful stop of %s: %v", s.mode, old.name, stopErr))
	}
	cfg := old.Config()
	cfg.Name = old.name + "-r"
	cfg.LogPath = filepath.Join(b.tmp, cfg.Name+".log")
	hp, err := harness.NewPusher(ctx, cfg)
	if err != nil {
		return r, fmt.Errorf("restart %s: %w", old.name, err)
	}
	np := &pusherProc{Pusher: hp, name: cfg.Name, pid: hp.Proc().PID(), logPath: cfg.LogPath, dataDir: cfg.DataDir}
	if b.pusher == old {
		b.pusher = np
	} else {
		b.nodes[i] = np
	}
	line, err := np.readyLine(ctx)
	if err != nil {
		return r, err
	}
	readyAt, err := time.Parse(time.RFC3339Nano, fmt.Sprint(line["ts"]))
	if err != nil {
		return r, fmt.Errorf("%s: %s ts %v: %w", np.name, harness.EventReady, line["ts"], err)
	}
	r.ready = readyAt.Sub(stopAt)
	b.logf("storm %s: %s stopped in %s, ready %s after SIGTERM", s.mode, old.name, r.stopped.Round(time.Millisecond), r.ready.Round(time.Millisecond))

	backAt, err := b.stormWaitOnline(ctx, stormBackTimeout)
	if err != nil {
		return r, fmt.Errorf("after %s's restart: %w", old.name, err)
	}
	end := time.Now()
	cpu1 := b.pusherCPUs()
	msgs1, api1, err := b.natsCounters(ctx)
	if err != nil {
		return r, err
	}
	r.back = backAt.Sub(stopAt)
	r.window = end.Sub(stopAt)
	r.cpu = cpuDelta(cpu0, cpu1)
	r.natsMsgs, r.jsAPI = msgs1-msgs0, api1-api0

	dials, err := b.stormDials(ctx, stopAt, stopAt.Add(max(r.back, r.ready)))
	if err != nil {
		return r, err
	}
	r.dials = dials.Window(stopAt, stopAt.Add(max(r.back, r.ready)))
	r.connects = r.dials.OK
	storm := dials.Between(stopAt, stopAt.Add(max(r.back, r.ready)))
	r.failedAfterReady, r.backAfterDial = harness.AfterReady(storm, readyAt)
	r.inTarget, r.reconnected = backWithin(storm, readyAt.Add(stormBackTarget))

	// Replays run as users return, so the dead letters may be gone
	// already; the clock runs from the SIGTERM either way.
	err = harness.Poll(ctx, stormDLQTimeout, "no offline dead letter in PUSH_DLQ", func() error {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		n, err := harness.OfflineDeadLetters(qctx, s.js)
		if err == nil && n > 0 {
			err = fmt.Errorf("%d offline dead letters", n)
		}
		return err
	})
	r.clean, r.cleanOK = time.Since(stopAt), err == nil
	if err != nil {
		if ctx.Err() != nil {
			return r, err
		}
		b.notes = append(b.notes, fmt.Sprintf("storm %s, %s: %v", s.mode, old.name, err))
	}
	stored1, err := harness.DLQStored(ctx, s.js)
	if err != nil {
		return r, err
	}
	r.dlqStored = stored1 - stored0
	st1, err := b.stormStat(ctx)
	if err != nil {
		return r, err
	}
	r.dups = st1.dups - st0.dups
	b.logf("storm %s: %s: back %s after SIGTERM (%s after ready), %s, %d dead letters, none left %s after SIGTERM",
		s.mode, old.name, r.back.Round(time.Millisecond), r.backAfterReady().Round(time.Millisecond), r.dials, r.dlqStored, r.clean.Round(time.Millisecond))
	return r, nil
}

// stormRows adds one restart's rows, each target met or missed.
func (b *bench) stormRows(key, title string, r stormRestart) {
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	name := func(s string) string { return key + "_" + s }
	b.res.add(metric{Name: name("back_after_ready_s"), Label: fmt.Sprintf("%s: every client back, after the node was ready", title),
		Value: r.backAfterReady().Seconds(), Unit: "s", prec: 2, Op: "<=", Target: stormBackTarget.Seconds(),
		Extra: fmt.Sprintf("%s held %s clients; %s of the %s that reconnected back within %s of ready; SIGTERM to exit %s, to ready %s, to every client back %s; load %s at SIGTERM",
			r.node, comma(float64(r.clients), 0), comma(float64(r.inTarget), 0), comma(float64(r.reconnected), 0), stormBackTarget, ms(r.stopped), ms(r.ready), ms(r.back), r.load)})
	b.res.add(metric{Name: name("back_after_dial_s"), Label: "  longest from a client's first dial after ready to its connection",
		Value: r.backAfterDial.Seconds(), Unit: "s", prec: 2, Op: "<=", Target: stormBackTarget.Seconds(),
		Extra: fmt.Sprintf("without the back-off a client was still waiting out; dials failed (not refused busy) after ready: %d", r.failedAfterReady)})
	b.res.add(metric{Name: name("connect_p99_ms"), Label: "  connect p99 during the storm", Value: float64(r.dials.P99) / 1e6, Unit: "ms", prec: 1,
		Op: "<=", Target: float64(stormP99Target / time.Millisecond),
		Extra: fmt.Sprintf("p50 %s, max %s; %d ok, %d refused busy, %d failed; longest back-off %s; from SIGTERM to every client back and the node ready",
			ms(r.dials.P50), ms(r.dials.Max), r.dials.OK, r.dials.Busy, r.dials.Failed, ms(r.dials.MaxBackoff))})
	replay := metric{Name: name("replay_after_back_s"), Label: "  offline dead letters all replayed, after every user was back",
		Value: r.cleanAfterBack().Seconds(), Unit: "s", prec: 2, Op: "<=", Target: stormReplayTarget.Seconds(),
		Extra: fmt.Sprintf("%s dead letters stored in PUSH_DLQ meanwhile; none left %s after SIGTERM", comma(float64(r.dlqStored), 0), ms(r.clean))}
	if !r.cleanOK {
		replay.Extra = fmt.Sprintf("NOT done within %s; ", stormDLQTimeout) + replay.Extra
		replay.Value = r.clean.Seconds()
	}
	b.res.add(replay)
	b.res.add(metric{Name: name("dlq_stored"), Value: float64(r.dlqStored), Unit: "msgs", hidden: true})
	b.res.add(metric{Name: name("restart_duplicates"), Label: "  duplicate frames during the restart", Value: float64(r.dups), Unit: "msgs", prec: 0,
		Extra: "at-least-once: a delivery not confirmed before the SIGTERM comes again"})
	if r.connects > 0 {
		c := float64(r.connects)
		b.res.add(metric{Name: name("pusher_cpu_us_per_connect"), Label: "  pusher CPU per connect during the storm", Value: us(r.cpu) / c, Unit: "µs", prec: 0,
			Extra: fmt.Sprintf("%s pusher CPU over %s (SIGTERM to every client back) / %s connects; it includes the steady publishing, %s CPU a second before the SIGTERM (%.0f µs/connect over the window); the new process counts from its start, the stopped one not after SIGTERM",
				r.cpu.Round(10*time.Millisecond), ms(r.window), comma(c, 0), r.baseCPU.Round(time.Millisecond), us(r.baseCPU)*r.window.Seconds()/c)})
		if b.cluster != nil {
			b.res.add(metric{Name: name("js_api_per_connect"), Label: "  JetStream API requests per connect (replay-on-connect lookups)",
				Value: (r.jsAPI - r.jsAPIBas*r.window.Seconds()) / c, Unit: "reqs", prec: 2,
				Extra: fmt.Sprintf("Σ /jsz api.total of the 3 servers over the window %s, minus the rate before SIGTERM (%.1f/s) × the window. All NATS messages (Σ /varz in_msgs+out_msgs) %s over the window against %s/s before: the publishing and its replication dominate them and shift during a storm, so no per-connect share of them is given",
					comma(r.jsAPI, 0), r.jsAPIBas, comma(r.natsMsgs, 0), comma(r.natsBase, 0))})
		}
	}
}

// stormEnd stops the publisher, waits until every acked message reached
// its client, and reports losses and duplicates over the whole scenario.
func (b *bench) stormEnd(ctx context.Context, s *stormRun) error {
	if err := sleepCtx(ctx, time.Second); err != nil { // a second of steady traffic after the last storm
		return err
	}
	acked, stopErr := s.pub.Stop(60 * time.Second)
	if stopErr != nil {
		b.notes = append(b.notes, fmt.Sprintf("storm %s: %v", s.mode, stopErr))
	}
	var missing int
	err := harness.PollEvery(ctx, stormLossTimeout, time.Second, "every acked message received", func() error {
		got, err := b.stormIDs(ctx)
		if err != nil {
			return harness.Abort(err)
		}
		missing = 0
		for id := range acked {
			if _, ok := got[id]; !ok {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d acked messages not received", missing, len(acked))
		}
		return nil
	})
	if err != nil && ctx.Err() != nil {
		return err
	}
	st, err := b.stormStat(ctx)
	if err != nil {
		return err
	}
	b.res.add(metric{Name: "storm_" + s.mode + "_lost", Label: fmt.Sprintf("storm %s: lost (acked by JetStream, never received)", s.mode),
		Value: float64(missing), Unit: "msgs", prec: 0, Op: "<=", Target: 0,
		Extra: fmt.Sprintf("%s acked at %d msgs/s over %s to %s uids, %d publishes repeated; %s frames, %s duplicates",
			comma(float64(len(acked)), 0), b.cfg.stormRate, time.Since(s.start).Round(time.Second), comma(float64(s.n), 0), s.pub.Retries(),
			comma(float64(st.frames), 0), comma(float64(st.dups), 0))})
	b.res.add(metric{Name: "storm_" + s.mode + "_duplicates", Value: float64(st.dups), Unit: "msgs", hidden: true})
	b.logf("storm %s: %d acked, %d lost, %d duplicates", s.mode, len(acked), missing, st.dups)
	return nil
}

// stormIDs is every payload id the storm clients received.
func (b *bench) stormIDs(ctx context.Context) (map[string]struct{}, error) {
	var mu sync.Mutex
	got := map[string]struct{}{}
	err := onAll(b.clients, func(_ int, c *clientProc) error {
		data, _, err := c.request(ctx, "sids", clientRequestTimeout)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, line := range data {
			if ids, ok := strings.CutPrefix(line, "r "); ok {
				for _, id := range strings.Fields(ids) {
					got[id] = struct{}{}
				}
			}
		}
		return nil
	})
	return got, err
}
