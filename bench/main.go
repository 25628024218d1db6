// Command bench is pusher's end-to-end benchmark (make bench). It starts
// pusher with its embedded NATS as a separate process, drives it with real
// WebSocket clients in child processes bound to distinct loopback source
// addresses, publishes through JetStream, and prints a table and JSON lines.
// With --cluster (make bench-cluster) it runs pusher nodes against a
// three-server NATS cluster instead (cluster.go). BENCHMARKS.md says what
// each number means and records a run.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/pusher-io/pusher/e2e/harness"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "client" {
		os.Exit(runClient(os.Args[2:], os.Stdin, os.Stdout))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		if errors.As(err, new(usageError)) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// config is the benchmark's shape; --quick shrinks the defaults.
type config struct {
	quick        bool
	messages     int
	window       int
	conns        int
	payload      int
	rate         int
	latencyDur   time.Duration
	idleConns    int
	clients      int
	dialParallel int
	pusherBin    string
	keepLogs     bool
	jsonOut      string
	dumpLatency  string
	timeout      time.Duration
	stall        time.Duration
	gcWait       time.Duration
	pprofAddr    string

	// The http phase and the original demo (--demo-bin).
	httpMessages   int
	httpPublishers int
	httpBatch      int
	demoBin        string

	// Cluster mode (--cluster).
	cluster     bool
	burstMsgs   int
	burstUIDs   int
	natsBin     string
	gcWaitSet   bool // --gc-wait given explicitly
	idlePerNode int  // cluster mode: --idle-conns is per pusher node

	// Storm mode (--storm, storm.go).
	storm        stormMode
	stormClients int
	stormRate    int
}

const (
	// maxConnsPerProcess keeps each client process, and each source
	// address, well under the 20,000 open-files cap.
	maxConnsPerProcess = 9000
	// srcsPerClient is how many loopback source addresses each client
	// process spreads its connections over.
	srcsPerClient = 2
	// fdLimit is the per-process open-files cap the clients must respect.
	fdLimit = 19500
)

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run ./bench [flags]\n\nEnd-to-end benchmark of pusher; see BENCHMARKS.md.\n\nFlags:")
		fs.PrintDefaults()
	}
	fs.BoolVar(&c.quick, "quick", false, "smoke run: 200 connections, 20k messages, 3s latency (and JetStream floor), 5k http messages per door, 2,000 idle connections (per node with --cluster), 10k burst messages to 300 uids, no GC wait (explicit flags still win)")
	fs.IntVar(&c.messages, "messages", 300000, "messages in the throughput phase and in the raw JetStream phase")
	fs.IntVar(&c.window, "window", 4000, "closed loop: most messages outstanding between publish and receipt")
	fs.IntVar(&c.conns, "conns", 1000, "connections (one uid each) in the throughput and latency phases")
	fs.IntVar(&c.payload, "payload", 128, "payload bytes (at least 33)")
	fs.IntVar(&c.rate, "rate", 5000, "latency phase: fixed publish rate, msgs/s")
	fs.DurationVar(&c.latencyDur, "latency-duration", 20*time.Second, "latency phase: how long to publish")
	fs.IntVar(&c.idleConns, "idle-conns", 15000, "connection phase: idle authenticated connections (with --cluster: per pusher node)")
	fs.IntVar(&c.clients, "clients", 4, "client processes (more are used if needed to stay under 9,000 connections each)")
	fs.IntVar(&c.dialParallel, "dial-parallel", 64, "handshakes in flight per client process")
	fs.StringVar(&c.pusherBin, "pusher-bin", "", "pusher binary to run (default: go build the module's root package)")
	fs.BoolVar(&c.keepLogs, "keep-logs", false, "keep the temp dir with the pusher (and nats-server) logs; binaries and JetStream data are removed")
	fs.StringVar(&c.jsonOut, "json-out", "", "also write the JSON lines to this file")
	fs.StringVar(&c.dumpLatency, "dump-latency", "", "write every latency sample (seq, intended offset, latency, publisher lag; ms) to this file")
	fs.DurationVar(&c.timeout, "timeout", 20*time.Minute, "abort the whole run after this long")
	fs.DurationVar(&c.gcWait, "gc-wait", 150*time.Second, "connection phase: wait this long at most for pusher's next GC before the final RSS reading (Go forces one every 2 minutes); 0 skips; with --cluster 0 unless given")
	fs.DurationVar(&c.stall, "stall-timeout", 15*time.Second, "fail a phase when nothing progresses for this long")
	fs.IntVar(&c.httpMessages, "http-messages", 50000, "http phase: messages per door (POST /v1/push single and batch; the demo's /send); the batch rounds up to whole requests")
	fs.IntVar(&c.httpPublishers, "http-publishers", 32, "http phase, and the demo's publisher in every phase: concurrent HTTP publishers, one keep-alive connection each")
	fs.IntVar(&c.httpBatch, "http-batch", 100, "http phase: messages per POST /v1/push batch request")
	fs.StringVar(&c.demoBin, "demo-bin", "", "the original demo's binary (github.com/eleven26/go-pusher; BENCHMARKS.md says how to build it): run its throughput, 5,000 msgs/s and http phases in the same run and report pusher/demo ratios; without it they are skipped")
	fs.StringVar(&c.pprofAddr, "pprof-addr", "", "serve pusher's pprof here (PUSHER_PPROF_ADDR), to profile it during a phase; the benchmark does not read it")
	fs.BoolVar(&c.cluster, "cluster", false, "cluster mode: pusher nodes against a 3-server NATS cluster (one node, three nodes, --idle-conns per node); see BENCHMARKS.md")
	fs.IntVar(&c.burstMsgs, "burst-messages", 50000, "cluster mode: messages in the burst with every idle connection open")
	fs.IntVar(&c.burstUIDs, "burst-uids", 1500, "cluster mode: connected uids the burst goes to, spread over the nodes")
	fs.StringVar(&c.natsBin, "nats-bin", "", "cluster mode: nats-server binary to run (default: go build the version go.mod requires)")
	fs.Var(&c.storm, "storm", "storm mode, instead of the other phases: --storm (or =both) restarts a single node then each node of a 3-node cluster under reconnecting clients and a steady publish rate; =single or =cluster for one (see BENCHMARKS.md, Storm)")
	fs.IntVar(&c.stormClients, "storm-clients", 15000, "storm mode: reconnecting clients (one uid each) per pusher node")
	fs.IntVar(&c.stormRate, "storm-rate", 1000, "storm mode: messages a second published to the clients' uids throughout")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, usageError{err}
		}
		return c, usageError{err}
	}
	if fs.NArg() > 0 {
		return c, usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c.gcWaitSet = set["gc-wait"]
	if c.cluster && !c.gcWaitSet {
		c.gcWait = 0 // cluster mode reads RSS settled, before the next GC, unless asked
	}
	if c.quick {
		quick := map[string]func(){
			"messages":         func() { c.messages = 20000 },
			"conns":            func() { c.conns = 200 },
			"latency-duration": func() { c.latencyDur = 3 * time.Second },
			"http-messages":    func() { c.httpMessages = 5000 },
			"idle-conns":       func() { c.idleConns = 2000 },
			"gc-wait":          func() { c.gcWait = 0 },
			"burst-messages":   func() { c.burstMsgs = 10000 },
			"burst-uids":       func() { c.burstUIDs = 300 },
			"storm-clients":    func() { c.stormClients = 1500 },
			"storm-rate":       func() { c.stormRate = 250 },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	switch {
	case c.messages < 1 || c.window < 1 || c.conns < 1 || c.rate < 1 || c.idleConns < 1 || c.clients < 1 || c.dialParallel < 1 ||
		c.httpMessages < 1 || c.httpPublishers < 1 || c.httpBatch < 1:
		return c, usageError{errors.New("counts must be positive")}
	case c.payload < minPayload:
		return c, usageError{fmt.Errorf("--payload %d: want at least %d", c.payload, minPayload)}
	case c.latencyDur <= 0:
		return c, usageError{errors.New("--latency-duration must be positive")}
	case c.cluster && c.demoBin != "":
		return c, usageError{errors.New("--demo-bin is for the single-node run, not --cluster")}
	}
	if c.storm != "" {
		if c.cluster || c.demoBin != "" {
			return c, usageError{errors.New("--storm runs alone: not with --cluster or --demo-bin (--storm=cluster is the cluster storm)")}
		}
		if c.stormClients < 1 || c.stormRate < 1 {
			return c, usageError{errors.New("--storm-clients and --storm-rate must be positive")}
		}
		total := c.stormClients
		if c.storm.cluster() {
			total *= clusterNodes
		}
		c.clients = max(c.clients, (total+maxConnsPerProcess-1)/maxConnsPerProcess)
		if c.clients*srcsPerClient > 250 {
			return c, usageError{errors.New("too many client processes for 127.0.0.2-127.0.0.251")}
		}
		return c, nil
	}
	idleTotal := c.idleConns
	if c.cluster {
		c.idlePerNode = c.idleConns
		idleTotal = natsClusterSize * c.idleConns
		switch {
		case c.burstMsgs < 1 || c.burstUIDs < 1:
			return c, usageError{errors.New("--burst-messages and --burst-uids must be positive")}
		case c.burstUIDs > idleTotal:
			return c, usageError{fmt.Errorf("--burst-uids %d: at most the %d idle connections", c.burstUIDs, idleTotal)}
		}
	}
	need := (max(c.conns, idleTotal) + maxConnsPerProcess - 1) / maxConnsPerProcess
	c.clients = max(c.clients, need)
	if c.clients*srcsPerClient > 250 {
		return c, usageError{errors.New("too many client processes for 127.0.0.2-127.0.0.251")}
	}
	return c, nil
}

// step is one stage of a run; a failing step ends it.
type step struct {
	name string
	f    func(context.Context) error
}

// bench is one run of the orchestrator.
type bench struct {
	cfg     config
	stdout  io.Writer
	stderr  io.Writer
	tmp     string
	secret  string
	apiKey  string // PUSHER_API_KEY of every single-node pusher (the http phase)
	bin     string
	ticks   float64
	started time.Time

	pusher      *pusherProc
	retired     []*pusherProc    // stopped pushers, for the log summary
	nodes       []*pusherProc    // cluster mode: the running pusher nodes
	natsBin     string           // cluster mode
	cluster     *harness.Cluster // cluster mode: the current NATS cluster
	nats        []*natsServer    // cluster mode: the running NATS servers
	natsDone    []*natsServer    // stopped NATS servers, for the log summary
	natsGen     int              // cluster mode: NATS clusters started so far
	nofile      uint64           // cluster mode: RLIMIT_NOFILE, soft
	natsVersion string           // cluster mode: nats-server --version
	// nodeEnv is the environment of the cluster's pusher nodes started
	// next, on top of the bench's (storm mode's); nil for the others.
	nodeEnv  map[string]string
	clients  []*clientProc
	progress chan struct{} // signalled when a client reports a count
	// demo is the original demo while its phases run (useDemo), instead
	// of a pusher; demoInfo describes its binary.
	demo     *demoProc
	demoInfo string
	// The lowrate floor's first half, and pusher idle in cores, until
	// the second half reports them.
	floorBefore *floorHalf
	floorIdle   float64

	res       results
	loadStart string   // /proc/loadavg when the run started
	notes     []string // observations about pusher itself
	command   string
	// confirm is PUSHER_DELIVERY_CONFIRM for the next pusher started;
	// empty: pusher's default (pong).
	confirm string
	// protocol is the clients' subprotocol for the next ones started:
	// "" (raw frames) or "v1" (pusher.v1).
	protocol string
	// presenceOff starts the next pusher with PUSHER_PRESENCE=false.
	presenceOff bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	b := &bench{
		cfg: cfg, stdout: stdout, stderr: stderr,
		ticks: clockTicks(), started: time.Now(),
		progress: make(chan struct{}, 1),
		command:  "go run ./bench " + strings.Join(args, " "),
	}
	b.command = strings.TrimSpace(b.command)
	b.loadStart = loadAvg()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	b.secret = hex.EncodeToString(secret)
	if _, err := rand.Read(secret); err != nil {
		return err
	}
	b.apiKey = hex.EncodeToString(secret)
	if b.tmp, err = os.MkdirTemp("", "pusher-bench-"); err != nil {
		return err
	}
	defer func() {
		b.stopAll()
		for _, p := range append(b.retired, b.pusher) {
			if p != nil {
				_ = os.RemoveAll(p.dataDir)
			}
		}
		for _, n := range b.natsDone {
			_ = os.RemoveAll(n.storeDir)
		}
		interrupted := errors.Is(err, context.Canceled)
		if cfg.keepLogs || (err != nil && !interrupted) {
			// Keep the logs only: not the binaries or any data.
			for _, pat := range []string{"pusher", "nats-server", "*-modfile", "*-data", "*-store"} {
				matches, _ := filepath.Glob(filepath.Join(b.tmp, pat))
				for _, m := range matches {
					_ = os.RemoveAll(m)
				}
			}
			fmt.Fprintf(stderr, "bench: logs kept in %s\n", b.tmp)
		} else {
			_ = os.RemoveAll(b.tmp)
		}
	}()

	var steps []step
	switch {
	case cfg.storm != "":
		steps = b.stormSteps()
	case cfg.cluster:
		steps = b.clusterSteps()
	default:
		steps = b.singleSteps()
	}
	for _, s := range steps {
		b.logf("%s", s.name)
		if err := s.f(ctx); err != nil {
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (%v)", err, ctx.Err())
			}
			b.dumpPartial()
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return b.print()
}

// singleSteps is the single-node run: one pusher with its embedded NATS,
// and the original demo when --demo-bin names it.
func (b *bench) singleSteps() []step {
	steps := []step{
		{"build", b.build},
		{"start", b.start},
		{"jetstream ceiling", b.phaseRaw},
		{"throughput", b.phaseThroughput},
		{"lowrate: jetstream floor, before", b.phaseFloorBefore},
		{"latency", b.phaseLatency},
		{"lowrate: jetstream floor, after", b.phaseFloorAfter},
		{"http", b.phaseHTTP},
	}
	if b.cfg.demoBin != "" {
		// Right after pusher's, so both see the machine in the same state.
		steps = append(steps, []step{
			{"demo", b.useDemo},
			{"throughput [demo]", b.phaseThroughput},
			{"latency [demo]", b.phaseLatency},
			{"http [demo]", b.phaseHTTP},
			{"pusher vs demo", b.compareDemo},
		}...)
	} else {
		b.notes = append(b.notes, "the original demo's phases were skipped: no --demo-bin (BENCHMARKS.md says how to build it)")
	}
	return append(steps, []step{
		{"pusher.v1", b.useV1},
		{"throughput [v1]", b.phaseThroughput},
		{"latency [v1]", b.phaseLatency},
		{"write mode", b.useWriteMode},
		{"throughput [write]", b.phaseThroughput},
		{"latency [write]", b.phaseLatency},
		{"pong vs write, v1 vs raw", b.compareModes},
		{"connections", b.phaseConnections},
		{"presence off", b.usePresenceOff},
		{"connections [nopresence]", b.phaseConnections},
		{"presence on vs off", b.comparePresence},
		{"stop", b.finish},
	}...)
}

func (b *bench) logf(format string, a ...any) {
	fmt.Fprintf(b.stderr, "bench %6.1fs: %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, a...))
}

// build compiles pusher from the module root (without -race), unless
// --pusher-bin names a binary, and checks --demo-bin.
func (b *bench) build(ctx context.Context) error {
	if b.cfg.demoBin != "" {
		bin, err := filepath.Abs(b.cfg.demoBin)
		if err == nil {
			_, err = os.Stat(bin)
		}
		if err != nil {
			return fmt.Errorf("--demo-bin: %w", err)
		}
		b.cfg.demoBin, b.demoInfo = bin, demoVersion(bin)
	}
	if b.cfg.pusherBin != "" {
		if _, err := os.Stat(b.cfg.pusherBin); err != nil {
			return err
		}
		bin, err := filepath.Abs(b.cfg.pusherBin)
		b.bin = bin
		return err
	}
	bin, err := harness.BuildPusher(ctx, b.tmp)
	b.bin = bin
	return err
}

// start starts pusher and the client processes.
func (b *bench) start(ctx context.Context) error {
	p, err := startPusher(ctx, b.bin, b.tmp, "pusher-1", b.secret, b.pusherConfig())
	if err != nil {
		return err
	}
	b.pusher = p
	b.logf("pusher pid %d http %s nats %s", p.pid, p.HTTPAddr(), p.NATSURL())
	return b.startClients()
}

func (b *bench) startClients() error {
	for i := range b.cfg.clients {
		srcs := make([]string, srcsPerClient)
		for j := range srcs {
			srcs[j] = fmt.Sprintf("127.0.0.%d", 2+i*srcsPerClient+j)
		}
		secret := b.secret
		if b.demo != nil {
			secret = demoSecret
		}
		c, err := startClient(i, b.wsURLs(), srcs, secret, b.protocol, b.demo != nil, b.progress)
		if err != nil {
			return err
		}
		b.clients = append(b.clients, c)
	}
	return nil
}

// pusherConfig is the single-node pusher's: embedded NATS on a reserved
// port, the HTTP door open with b.apiKey, and pprof if asked for.
func (b *bench) pusherConfig() harness.PusherConfig {
	cfg := harness.PusherConfig{Env: map[string]string{"PUSHER_API_KEY": b.apiKey}}
	if b.cfg.pprofAddr != "" {
		cfg.Env["PUSHER_PPROF_ADDR"] = b.cfg.pprofAddr
	}
	if b.confirm != "" {
		cfg.Env["PUSHER_DELIVERY_CONFIRM"] = b.confirm
	}
	if b.presenceOff {
		cfg.Env["PUSHER_PRESENCE"] = "false"
	}
	return cfg
}

// useV1 restarts pusher and the clients, which now speak pusher.v1 (JSON
// envelopes, an ack per message), so the next phases measure what the
// subprotocol costs against raw frames confirmed by pongs, in the same run.
func (b *bench) useV1(ctx context.Context) error {
	b.protocol, b.res.variant = "v1", "v1"
	return b.restartPusher(ctx)
}

// usePresenceOff has the next pusher (the connections phase starts its
// own) run without presence events, so that phase says what they cost
// the connect path, in the same run.
func (b *bench) usePresenceOff(context.Context) error {
	b.presenceOff, b.res.variant = true, "nopresence"
	return nil
}

// comparePresence puts the connect path with presence events next to the
// one without.
func (b *bench) comparePresence(context.Context) error {
	b.presenceOff, b.res.variant = false, ""
	b.ratios([]ratioRow{
		{name: "connect_rate_per_s", b: "nopresence", label: "presence on / off: connect rate", unit: "conns/s"},
		{name: "server_cpu_us_per_connect", b: "nopresence", label: "presence on / off: server CPU per connect", unit: "µs"},
		{name: "rss_kib_per_idle_conn", b: "nopresence", label: "presence on / off: RSS per idle connection", unit: "KiB"},
	})
	return nil
}

// useWriteMode restarts pusher with PUSHER_DELIVERY_CONFIRM=write and raw
// clients, so the next phases measure what delivery confirmation costs,
// in the same run.
func (b *bench) useWriteMode(ctx context.Context) error {
	b.confirm, b.protocol, b.res.variant = "write", "", "write"
	return b.restartPusher(ctx)
}

// compareModes puts pong's costs next to write's and goes back to the
// default for the phases after.
func (b *bench) compareModes(context.Context) error {
	b.confirm, b.res.variant = "", ""
	at := fmt.Sprintf("at %s msgs/s", comma(float64(b.cfg.rate), 0))
	b.ratios([]ratioRow{
		{name: "server_cpu_us_per_msg", b: "write", label: "pong / write: server CPU per message, throughput", unit: "µs", target: 1.15},
		{name: "latency_cpu_us_per_msg", b: "write", label: "pong / write: server CPU per message " + at, unit: "µs", target: 1.15},
		{name: "server_cpu_us_per_msg", a: "v1", label: "pusher.v1 / raw: server CPU per message, throughput", unit: "µs"},
		{name: "latency_cpu_us_per_msg", a: "v1", label: "pusher.v1 / raw: server CPU per message " + at, unit: "µs"},
		{name: "throughput_msgs_per_s", a: "v1", label: "pusher.v1 / raw: throughput", unit: "msgs/s"},
		{name: "latency_p99_ms", a: "v1", label: "pusher.v1 / raw: latency p99 " + at, unit: "ms"},
	})
	return nil
}

// compareDemo puts pusher's figures next to the demo's from the same run,
// with issue 15's targets and its earlier figures.
func (b *bench) compareDemo(context.Context) error {
	b.res.variant = ""
	at := fmt.Sprintf("at %s msgs/s", comma(float64(b.cfg.rate), 0))
	pubs := fmt.Sprintf("%d publishers", b.cfg.httpPublishers)
	b.ratios([]ratioRow{
		{name: "throughput_msgs_per_s", b: "demo", label: "pusher / demo: throughput, closed loop (pusher's publisher JetStream, the demo's HTTP /send)", unit: "msgs/s",
			op: ">=", target: 1.5, before: "issue 15: 1.9"},
		{name: "server_cpu_us_per_msg", b: "demo", label: "pusher / demo: server CPU per message, closed loop", unit: "µs", target: 1, before: "issue 15: 0.76"},
		{name: "latency_cpu_us_per_msg", b: "demo", label: "pusher / demo: server CPU per message " + at, unit: "µs", target: 1, before: "issue 15: 1.48 (144 / 97 µs)"},
		{name: "latency_p99_ms", b: "demo", label: "pusher / demo: latency p99 " + at, unit: "ms", target: 1, before: "issue 15: 0.93"},
		{name: "latency_p50_ms", b: "demo", label: "pusher / demo: latency p50 " + at, unit: "ms"},
		{name: "http_single_msgs_per_s", b: "demo", label: "pusher POST /v1/push / demo /send: messages/s, " + pubs, unit: "msgs/s",
			op: ">=", target: 1, before: "issue 15: 0.43"},
		{name: "http_single_cpu_us_per_msg", b: "demo", label: "pusher POST /v1/push / demo /send: server CPU per message", unit: "µs", target: 1.5, before: "issue 15: 3.1"},
	})
	return nil
}

// restartPusher stops the current pusher (or the demo) and starts a
// fresh pusher on a new data dir; the clients are restarted to point at
// it.
func (b *bench) restartPusher(ctx context.Context) error {
	b.stopClientsAndPusher() // none runs while the demo does
	b.stopDemo()
	p, err := startPusher(ctx, b.bin, b.tmp, fmt.Sprintf("pusher-%d", len(b.retired)+1), b.secret, b.pusherConfig())
	if err != nil {
		return err
	}
	b.pusher = p
	b.logf("pusher pid %d http %s nats %s", p.pid, p.HTTPAddr(), p.NATSURL())
	return b.startClients()
}

// finish stops everything gracefully and summarises pusher's logs.
func (b *bench) finish(context.Context) error {
	for _, c := range b.clients {
		c.stop()
	}
	b.clients = nil
	b.stopDemo()
	if b.pusher != nil {
		p := b.pusher
		b.pusher = nil
		b.retired = append(b.retired, p)
		if err := p.stop(); err != nil {
			b.notes = append(b.notes, "graceful stop: "+err.Error())
		} else {
			b.logf("%s stopped gracefully in %s", p.name, p.stopped.Round(time.Millisecond))
		}
	}
	b.summarizeLogs()
	return nil
}

// wsURLs is the comma-separated WebSocket URLs the clients dial: a client
// connects the uid of global index k to the (k mod n)th.
func (b *bench) wsURLs() string {
	if b.demo != nil {
		return "ws://" + b.demo.addr + "/ws"
	}
	var urls []string
	for _, p := range b.livePushers() {
		urls = append(urls, "ws://"+p.HTTPAddr()+"/ws")
	}
	return strings.Join(urls, ",")
}

// livePushers is the running pusher process (single mode) or nodes.
func (b *bench) livePushers() []*pusherProc {
	if b.pusher != nil {
		return []*pusherProc{b.pusher}
	}
	return b.nodes
}

func (b *bench) summarizeLogs() {
	// Warnings and errors during startup and shutdown are summed over
	// every server (they are the same few each time); those while the
	// cluster served the run are listed per server and noted.
	edge := map[string]map[string]int{winStartup: {}, winShutdown: {}}
	for _, n := range b.natsDone {
		s, err := summarizeNATSLog(n)
		if err != nil {
			b.notes = append(b.notes, fmt.Sprintf("%s log: %v", n.logPath, err))
			continue
		}
		name := strings.TrimSuffix(filepath.Base(n.logPath), ".log")
		b.res.natsLogs = append(b.res.natsLogs, fmt.Sprintf("%s (%d lines): %s", name, s.lines, s))
		for w, m := range edge {
			for l, c := range s.problems[w] {
				m[normalizeNATSLine(l)] += c
			}
		}
		for i, l := range countedLines(s.problems[winRun]) {
			if i == 10 {
				break
			}
			b.res.natsProblems = append(b.res.natsProblems, "during the run, "+name+": "+l)
			b.notes = append(b.notes, name+" logged while serving: "+l)
		}
	}
	for _, w := range []string{winStartup, winShutdown} {
		for _, l := range countedLines(edge[w]) {
			b.res.natsProblems = append(b.res.natsProblems, fmt.Sprintf("at %s, all servers: %s", w, l))
		}
	}
	b.natsDone = nil
	for _, p := range b.retired {
		s, err := summarizeLog(p.logPath)
		if err != nil {
			b.notes = append(b.notes, fmt.Sprintf("%s log: %v", p.name, err))
			continue
		}
		b.res.logs = append(b.res.logs, fmt.Sprintf("%s (%d lines): %s", p.name, s.lines, s))
		for _, l := range s.problems {
			b.notes = append(b.notes, fmt.Sprintf("%s logged: %s", p.name, l))
		}
	}
}

// stopAll kills whatever is still running (error paths, signals).
func (b *bench) stopAll() {
	for _, c := range b.clients {
		c.stop()
	}
	b.clients = nil
	b.stopDemo()
	if b.pusher != nil {
		if err := b.pusher.stop(); err != nil {
			b.pusher.kill()
		}
		b.retired = append(b.retired, b.pusher)
		b.pusher = nil
	}
	b.stopNodes()
	b.stopNATS()
}

// dumpPartial prints what was measured before a failure, and pusher's log
// findings, to stderr.
func (b *bench) dumpPartial() {
	b.stopAll()
	b.summarizeLogs()
	if len(b.res.metrics) > 0 {
		fmt.Fprintln(b.stderr, "bench: partial results:")
		b.res.table(b.stderr)
	}
	for _, l := range b.res.logs {
		fmt.Fprintln(b.stderr, "bench: "+l)
	}
	for _, l := range b.res.demoLogs {
		fmt.Fprintln(b.stderr, "bench: "+l)
	}
	for _, l := range b.res.natsLogs {
		fmt.Fprintln(b.stderr, "bench: "+l)
	}
	for _, l := range b.res.natsProblems {
		fmt.Fprintln(b.stderr, "bench: nats-server logged: "+l)
	}
	for _, n := range b.notes {
		fmt.Fprintln(b.stderr, "bench: note: "+n)
	}
}

// machine describes where the run happened.
type machine struct {
	NProc     int    `json:"nproc"`
	Model     string `json:"cpu_model"`
	MemTotal  string `json:"mem_total"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	OS        string `json:"os_arch"`
}

func describeMachine() machine {
	m := machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				m.MemTotal = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// ratioRow is one figure of a variant over another's, both measured in
// this run; a variant "" is the default configuration.
type ratioRow struct {
	name, a, b  string // the metric, and the variants over each other
	label, unit string
	op          string  // with target: "<=" (when empty) or ">="
	target      float64 // > 0: what the ratio must meet
	before      string  // an earlier measurement, for the anchors column
}

// ratios adds each row's ratio, where both figures were measured. The
// default configuration is called pong in the ratio's name, presence
// against nopresence, and pusher against the demo.
func (b *bench) ratios(rows []ratioRow) {
	key := func(name, v string) string {
		if v == "" {
			return name
		}
		return name + "_" + v
	}
	for _, r := range rows {
		x, ok1 := b.res.get(key(r.name, r.a))
		y, ok2 := b.res.get(key(r.name, r.b))
		if !ok1 || !ok2 || y == 0 {
			continue
		}
		def := "pong"
		switch r.b {
		case "nopresence":
			def = "presence"
		case "demo":
			def = "pusher"
		}
		or := func(v string) string {
			if v == "" {
				return def
			}
			return v
		}
		m := metric{Name: r.name + "_" + or(r.a) + "_to_" + or(r.b), Label: r.label, Value: x / y, Unit: "ratio", prec: 2,
			Extra: fmt.Sprintf("%s / %s %s", comma(x, 2), comma(y, 2), r.unit), AnchorText: r.before}
		if r.target > 0 {
			m.Op, m.Target = cmp.Or(r.op, "<="), r.target
		}
		b.res.add(m)
	}
}

// stopClientsAndPusher stops the client processes and the running pusher
// (kept among the retired for its log), gracefully, and removes its data.
func (b *bench) stopClientsAndPusher() {
	for _, c := range b.clients {
		c.stop()
	}
	b.clients = nil
	if p := b.pusher; p != nil {
		b.pusher = nil
		b.retired = append(b.retired, p)
		if err := p.stop(); err != nil {
			b.notes = append(b.notes, "graceful stop: "+err.Error())
		} else {
			b.logf("%s stopped gracefully in %s", p.name, p.stopped.Round(time.Millisecond))
		}
		_ = os.RemoveAll(p.dataDir)
	}
}
