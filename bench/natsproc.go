package main

// The NATS cluster of cluster mode: natsClusterSize nats-server processes,
// built from the version go.mod requires, with JetStream on file storage in
// temp dirs and routes between every pair, on loopback ports the harness
// reserved; and the summary of their logs.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pusher-io/pusher/e2e/harness"
)

const (
	// natsClusterSize is the number of nats-server processes.
	natsClusterSize = 3
	// natsStopTimeout bounds a nats-server's exit after SIGTERM.
	natsStopTimeout = 15 * time.Second
)

// natsServer is one nats-server of the bench's cluster, with what the
// log summary needs: its log file is split into startup (before the
// cluster was formed), the run, and shutdown (from the bench's SIGTERM).
type natsServer struct {
	name     string
	pid      int
	proc     *harness.Proc
	client   string // host:port for clients
	logPath  string
	storeDir string
	// Log offsets of the windows; -1 while unknown.
	formedOff, stopOff int64
}

// alive is nil while the server runs.
func (n *natsServer) alive() error { return n.proc.Alive() }

// buildNATS compiles nats-server from the module's requirement, the way
// the tests do, unless --nats-bin names a binary.
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
	bin, err := harness.BuildNATSServer(ctx, b.tmp)
	if err != nil {
		return err
	}
	b.natsBin = bin
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

// startNATSCluster starts natsClusterSize nats-servers named nats-1.. with
// fresh store dirs and log files (generation gen keeps the names of
// successive clusters apart), on ports the harness reserved, and waits
// until the cluster has formed and JetStream answers on every node.
func (b *bench) startNATSCluster(ctx context.Context, gen int) (time.Duration, error) {
	start := time.Now()
	c, err := harness.NewCluster(ctx, harness.ClusterConfig{
		Bin: b.natsBin, Size: natsClusterSize, Dir: b.tmp, Prefix: fmt.Sprintf("c%d-", gen), LogFiles: true,
	})
	if err != nil {
		return 0, err
	}
	b.cluster = c
	for i := range natsClusterSize {
		b.nats = append(b.nats, &natsServer{
			name: c.Name(i), pid: c.Proc(i).PID(), proc: c.Proc(i), client: c.ClientAddr(i),
			logPath: c.LogPath(i), storeDir: c.StoreDir(i),
			formedOff: fileSize(c.LogPath(i)), stopOff: -1,
		})
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

// stop sends SIGTERM and waits, killing after natsStopTimeout.
func (n *natsServer) stop() error {
	n.stopOff = fileSize(n.logPath)
	return n.proc.Stop(natsStopTimeout)
}

// natsURLs lists every server's client URL, starting with server first.
func (b *bench) natsURLs(first int) string { return b.cluster.URLs(first) }

// connNames counts, per server, the client connections by name
// ("pusher", "bench-publisher", ...); a server that does not answer has
// none.
func (b *bench) connNames(ctx context.Context) []map[string]int {
	out := make([]map[string]int, len(b.nats))
	for i := range b.nats {
		names, err := b.cluster.ConnNames(ctx, i)
		if err != nil {
			names = map[string]int{}
		}
		out[i] = names
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

func summarizeNATSLog(n *natsServer) (natsLogSummary, error) {
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
