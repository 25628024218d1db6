package main

// The NATS cluster of cluster mode: natsClusterSize nats-server processes,
// built from the version go.mod requires, with JetStream on file storage in
// temp dirs and routes between every pair, on free loopback ports.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// natsClusterSize is the number of nats-server processes.
	natsClusterSize = 3
	// natsFormTimeout bounds the wait for routes, a JetStream meta leader
	// and a working JetStream API on every node.
	natsFormTimeout = 60 * time.Second
	// natsStopTimeout bounds a nats-server's exit after SIGTERM.
	natsStopTimeout = 15 * time.Second
)

// natsProc is one nats-server process, logging to a file.
type natsProc struct {
	name     string
	cmd      *exec.Cmd
	pid      int
	logPath  string
	storeDir string
	client   string // host:port for clients
	route    string // host:port of the route listener
	monitor  string // host:port of the HTTP monitoring endpoint
	exited   chan struct{}
	waitErr  error
	// Log offsets splitting startup (before the cluster was formed), the
	// run, and shutdown (from the bench's SIGTERM); -1 while unknown.
	formedOff, stopOff int64
}

func (n *natsProc) url() string { return "nats://" + n.client }

// buildNATS compiles nats-server from the module's requirement, the way
// the tests do, unless --nats-bin names a binary. When go.sum lacks part of
// nats-server's build list, it retries with -mod=mod against copies of
// go.mod and go.sum, so the module's files never change.
func (b *bench) buildNATS(ctx context.Context) error {
	if b.cfg.natsBin != "" {
		bin, err := filepath.Abs(b.cfg.natsBin)
		if err != nil {
			return err
		}
		if _, err := os.Stat(bin); err != nil {
			return err
		}
		b.natsBin = bin
		b.natsVersion = natsVersion(bin)
		return nil
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	b.natsBin = filepath.Join(b.tmp, "nats-server")
	build := func(extra ...string) ([]byte, error) {
		args := append([]string{"build"}, extra...)
		args = append(args, "-o", b.natsBin, "github.com/nats-io/nats-server/v2")
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = root
		return cmd.CombinedOutput()
	}
	out, err := build()
	if err != nil && strings.Contains(string(out), "go mod") {
		dir := filepath.Join(b.tmp, "modfile")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		for _, f := range []string{"go.mod", "go.sum"} {
			data, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
				return err
			}
		}
		out, err = build("-mod=mod", "-modfile="+filepath.Join(dir, "go.mod"))
	}
	if err != nil {
		return fmt.Errorf("go build nats-server: %w\n%s", err, out)
	}
	b.natsVersion = natsVersion(b.natsBin)
	b.logf("%s", b.natsVersion)
	return nil
}

// natsVersion asks the binary for its version line.
func natsVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

// freeAddrs returns n distinct 127.0.0.1:port addresses that were free a
// moment ago.
func freeAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs, nil
}

// startNATSCluster starts natsClusterSize nats-servers named nats-1.. with
// fresh store dirs (generation gen keeps the names of successive clusters
// apart) and waits until the cluster has formed and JetStream answers on
// every node. Every server it started is in b.nats at once, so stopAll
// ends it on any error path.
func (b *bench) startNATSCluster(ctx context.Context, gen int) (time.Duration, error) {
	start := time.Now()
	addrs, err := freeAddrs(3 * natsClusterSize)
	if err != nil {
		return 0, err
	}
	var procs []*natsProc
	for i := range natsClusterSize {
		procs = append(procs, &natsProc{
			name:      fmt.Sprintf("nats-%d", i+1),
			logPath:   filepath.Join(b.tmp, fmt.Sprintf("c%d-nats-%d.log", gen, i+1)),
			storeDir:  filepath.Join(b.tmp, fmt.Sprintf("c%d-nats-%d-store", gen, i+1)),
			client:    addrs[i],
			route:     addrs[natsClusterSize+i],
			monitor:   addrs[2*natsClusterSize+i],
			exited:    make(chan struct{}),
			formedOff: -1, stopOff: -1,
		})
	}
	for i, p := range procs {
		var routes []string
		for j, q := range procs {
			if j != i {
				routes = append(routes, "nats://"+q.route)
			}
		}
		if err := p.start(b.natsBin, routes); err != nil {
			return 0, err
		}
		b.nats = append(b.nats, p)
	}
	deadline := time.Now().Add(natsFormTimeout)
	for i := range procs {
		for {
			ok, why := b.natsFormed(ctx, i)
			if ok {
				break
			}
			if err := procs[i].alive(); err != nil {
				return 0, err
			}
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("NATS cluster not formed within %s: %s: %s; log tail: %s", natsFormTimeout, procs[i].name, why, tail(procs[i].logPath, 400))
			}
			if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
				return 0, err
			}
		}
	}
	for _, p := range procs {
		p.formedOff = fileSize(p.logPath)
	}
	return time.Since(start), nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

func (n *natsProc) start(bin string, routes []string) error {
	if err := os.MkdirAll(n.storeDir, 0o700); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(n.client)
	if err != nil {
		return err
	}
	_, mport, err := net.SplitHostPort(n.monitor)
	if err != nil {
		return err
	}
	logFile, err := os.Create(n.logPath)
	if err != nil {
		return err
	}
	defer func() { _ = logFile.Close() }()
	n.cmd = exec.Command(bin,
		"-js", "-sd", n.storeDir, "-a", host, "-p", port, "-m", mport, "-n", n.name,
		"--cluster_name", "pusher", "--cluster", "nats://"+n.route, "--routes", strings.Join(routes, ","))
	n.cmd.Env = cleanEnv()
	n.cmd.Stdout, n.cmd.Stderr = logFile, logFile
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	n.pid = n.cmd.Process.Pid
	go func() { n.waitErr = n.cmd.Wait(); close(n.exited) }()
	return nil
}

func (n *natsProc) alive() error {
	select {
	case <-n.exited:
		return fmt.Errorf("%s exited unexpectedly (%v); log tail: %s", n.name, n.waitErr, tail(n.logPath, 400))
	default:
		return nil
	}
}

// stop sends SIGTERM and waits, killing after natsStopTimeout.
func (n *natsProc) stop() error {
	select {
	case <-n.exited:
		return fmt.Errorf("%s had already exited: %v", n.name, n.waitErr)
	default:
	}
	n.stopOff = fileSize(n.logPath)
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		return nil
	case <-time.After(natsStopTimeout):
		n.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", n.name, natsStopTimeout)
	}
}

func (n *natsProc) kill() {
	select {
	case <-n.exited:
		return
	default:
	}
	if n.stopOff < 0 {
		n.stopOff = fileSize(n.logPath)
	}
	_ = n.cmd.Process.Kill()
	<-n.exited
}

// monitorJSON GETs path from the monitoring endpoint into v.
func (n *natsProc) monitorJSON(ctx context.Context, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.monitor+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// natsFormed reports whether server i has routes to every other server,
// knows the JetStream meta leader, and answers AccountInfo to a client
// connected to it alone.
func (b *bench) natsFormed(ctx context.Context, i int) (bool, string) {
	n := b.nats[i]
	var routez struct {
		Routes []struct {
			RemoteName string `json:"remote_name"`
		} `json:"routes"`
	}
	if err := n.monitorJSON(ctx, "/routez", &routez); err != nil {
		return false, err.Error()
	}
	peers := map[string]bool{}
	for _, r := range routez.Routes {
		peers[r.RemoteName] = true
	}
	for j, q := range b.nats {
		if j != i && !peers[q.name] {
			return false, "no route to " + q.name
		}
	}
	var jsz struct {
		Meta struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if err := n.monitorJSON(ctx, "/jsz", &jsz); err != nil {
		return false, err.Error()
	}
	if jsz.Meta.Leader == "" {
		return false, "no JetStream meta leader"
	}
	nc, err := nats.Connect(n.url(), nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return false, err.Error()
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false, err.Error()
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(actx); err != nil {
		return false, "AccountInfo: " + err.Error()
	}
	return true, ""
}

// natsURLs lists every server's client URL, starting with server first.
func (b *bench) natsURLs(first int) string {
	var out []string
	for k := range b.nats {
		out = append(out, b.nats[(first+k)%len(b.nats)].url())
	}
	return strings.Join(out, ",")
}

// connNames counts, per server, the client connections by name
// ("pusher", "bench-publisher", ...).
func (b *bench) connNames(ctx context.Context) []map[string]int {
	out := make([]map[string]int, len(b.nats))
	for i, n := range b.nats {
		var connz struct {
			Conns []struct {
				Name string `json:"name"`
			} `json:"connections"`
		}
		out[i] = map[string]int{}
		if err := n.monitorJSON(ctx, "/connz?limit=1024", &connz); err != nil {
			continue
		}
		for _, c := range connz.Conns {
			out[i][c.Name]++
		}
	}
	return out
}

// natsLogSummary counts a nats-server log's lines by level, and its
// warnings and errors (timestamps stripped) by the window they fell in:
// startup (before the cluster was formed), run, or shutdown (after the
// bench's SIGTERM).
type natsLogSummary struct {
	lines    int
	levels   map[string]int
	problems map[string]map[string]int // window -> line -> count
}

// Log windows of a nats-server.
const (
	winStartup  = "startup"
	winRun      = "run"
	winShutdown = "shutdown"
)

var natsLogPrefix = regexp.MustCompile(`^\[\d+\] \d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+ `)

func summarizeNATSLog(n *natsProc) (natsLogSummary, error) {
	s := natsLogSummary{levels: map[string]int{}, problems: map[string]map[string]int{}}
	f, err := os.Open(n.logPath)
	if err != nil {
		return s, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var off int64
	for sc.Scan() {
		at := off
		off += int64(len(sc.Bytes())) + 1
		line := natsLogPrefix.ReplaceAllString(sc.Text(), "")
		s.lines++
		level := "text"
		if len(line) >= 5 && line[0] == '[' && line[4] == ']' {
			level = line[1:4]
		}
		s.levels[level]++
		if level == "INF" || level == "DBG" || level == "TRC" {
			continue
		}
		win := winRun
		switch {
		case n.formedOff < 0 || at < n.formedOff:
			win = winStartup
		case n.stopOff >= 0 && at >= n.stopOff:
			win = winShutdown
		}
		if len(line) > 300 {
			line = line[:300] + "..."
		}
		if s.problems[win] == nil {
			s.problems[win] = map[string]int{}
		}
		s.problems[win][line]++
	}
	return s, sc.Err()
}

func (s natsLogSummary) String() string {
	keys := make([]string, 0, len(s.levels))
	for k := range s.levels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s=%d ", k, s.levels[k])
	}
	var wins []string
	for _, w := range []string{winStartup, winRun, winShutdown} {
		n := 0
		for _, c := range s.problems[w] {
			n += c
		}
		wins = append(wins, fmt.Sprintf("%s %d", w, n))
	}
	return strings.TrimSpace(sb.String()) + "; warnings+errors at " + strings.Join(wins, ", ")
}

// natsLogNoise normalises a log line so the same event on different
// servers and runs counts once: addresses, ids and numbers go.
var natsLogNoise = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\d+\.\d+\.\d+\.\d+:\d+`), "ADDR"},
	{regexp.MustCompile(`\[C-R\dF-\w+\]|\[S-R\dF-\w+\]`), "[GROUP]"},
	{regexp.MustCompile(`\d+(\.\d+)?`), "N"},
}

func normalizeNATSLine(l string) string {
	for _, n := range natsLogNoise {
		l = n.re.ReplaceAllString(l, n.with)
	}
	return l
}

// countedLines lists m's lines most frequent first, as "Nx line".
func countedLines(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, strconv.Itoa(m[k])+"x "+k)
	}
	return out
}
