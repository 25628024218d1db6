package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	pusherReadyTimeout = 30 * time.Second
	// pusherStopTimeout exceeds pusher's default 15s shutdown timeout.
	pusherStopTimeout = 25 * time.Second
)

// pusherProc is one pusher process, logging to a file: with its embedded
// NATS, or (cluster mode) a node on the external NATS cluster.
type pusherProc struct {
	name     string
	cmd      *exec.Cmd
	pid      int
	logPath  string
	dataDir  string
	httpAddr string
	natsURL  string
	ready    readyLine
	exited   chan struct{}
	waitErr  error // valid once exited is closed
	stopped  time.Duration
}

// startPusher starts bin serve on a free loopback HTTP port, with its data
// dir and log under dir and the extra environment (the embedded NATS's
// listen address, or the cluster's URLs), and waits for pusher.ready.
func startPusher(ctx context.Context, bin, dir, name, secret string, extraEnv ...string) (*pusherProc, error) {
	p := &pusherProc{
		name:    name,
		logPath: filepath.Join(dir, name+".log"),
		dataDir: filepath.Join(dir, name+"-data"),
		exited:  make(chan struct{}),
	}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	defer func() { _ = logFile.Close() }() // the child has its own descriptor
	p.cmd = exec.Command(bin, "serve")
	p.cmd.Env = append(cleanEnv(),
		"JWT_SECRET="+secret,
		"PUSHER_DATA_DIR="+p.dataDir,
		"PUSHER_HTTP_ADDR=127.0.0.1:0",
		"PUSHER_LOG_DELIVERED=true", // the per-message log is part of the cost
	)
	p.cmd.Env = append(p.cmd.Env, extraEnv...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p.pid = p.cmd.Process.Pid
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()

	deadline := time.Now().Add(pusherReadyTimeout)
	for {
		if ready, ok := findReady(p.logPath); ok {
			p.httpAddr, p.natsURL, p.ready = ready.HTTPAddr, ready.NATSURL, ready
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("pusher exited before ready (%v); log %s: %s", p.waitErr, p.logPath, tail(p.logPath, 400))
		case <-ctx.Done():
			p.kill()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("no pusher.ready log line within %s; log: %s", pusherReadyTimeout, tail(p.logPath, 400))
		}
	}
}

// cleanEnv is the environment without pusher's own settings, so a
// developer's shell cannot change what is measured.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PUSHER_") || strings.HasPrefix(kv, "JWT_SECRET=") || strings.HasPrefix(kv, "BENCH_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

type readyLine struct {
	Msg            string `json:"msg"`
	HTTPAddr       string `json:"http_addr"`
	NATSURL        string `json:"nats_url"`
	EmbeddedNATS   bool   `json:"embedded_nats"`
	ClusterRouting bool   `json:"cluster_routing"`
}

func findReady(path string) (readyLine, bool) {
	f, err := os.Open(path)
	if err != nil {
		return readyLine{}, false
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), []byte(`"pusher.ready"`)) {
			continue
		}
		var r readyLine
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Msg == "pusher.ready" && r.HTTPAddr != "" {
			return r, true
		}
	}
	return readyLine{}, false
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// stop sends SIGTERM and waits for a graceful exit, killing after
// pusherStopTimeout. It returns an error for anything but a clean exit 0.
func (p *pusherProc) stop() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s had already exited: %v", p.name, p.waitErr)
	default:
	}
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		p.stopped = time.Since(start)
		if p.waitErr != nil {
			return fmt.Errorf("%s exited after SIGTERM with %v", p.name, p.waitErr)
		}
		return nil
	case <-time.After(pusherStopTimeout):
		p.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, pusherStopTimeout)
	}
}

// kill ends the process at once and waits for it.
func (p *pusherProc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

func (p *pusherProc) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited unexpectedly (%v); log tail: %s", p.name, p.waitErr, tail(p.logPath, 400))
	default:
		return nil
	}
}

// metrics scrapes pusher's /metrics.
func (p *pusherProc) metrics(ctx context.Context) (promText, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	return parseProm(resp.Body)
}

// promText maps a sample's full name with labels, as exposed, to its value.
type promText map[string]float64

func parseProm(r io.Reader) (promText, error) {
	out := promText{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// sum adds every sample of metric name whose labels contain all of match
// (each as `k="v"`).
func (m promText) sum(name string, match ...string) float64 {
	var s float64
	for k, v := range m {
		base, labels, _ := strings.Cut(k, "{")
		if base != name {
			continue
		}
		ok := true
		for _, want := range match {
			if !strings.Contains(labels, want) {
				ok = false
			}
		}
		if ok {
			s += v
		}
	}
	return s
}

// procCPU returns the process's user+system CPU time from /proc/pid/stat.
func procCPU(pid int, ticksPerSec float64) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name start with field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc/pid/stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc/pid/stat format")
	}
	ut, err1 := strconv.ParseFloat(f[11], 64) // field 14, utime
	st, err2 := strconv.ParseFloat(f[12], 64) // field 15, stime
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration((ut + st) / ticksPerSec * float64(time.Second)), nil
}

// procRSS returns VmRSS in bytes.
func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/pid/status")
}

// procNoFile returns the soft and hard "Max open files" of a process from
// /proc/pid/limits.
func procNoFile(pid int) (soft, hard string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if len(f) >= 2 {
				return f[0], f[1], nil
			}
		}
	}
	return "", "", errors.New("no Max open files in /proc/pid/limits")
}

// procFDs counts the process's open file descriptors.
func procFDs(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// machineCPU returns busy, irq+softirq and total jiffies from /proc/stat's
// cpu line.
func machineCPU() (busy, irq, total float64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, 0, errors.New("unexpected /proc/stat format")
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice,
	// already counted in user and nice]
	for i, s := range f[1:min(len(f), 9)] {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, 0, 0, err
		}
		total += v
		switch i {
		case 3, 4: // idle, iowait
		case 5, 6:
			irq += v
			busy += v
		default:
			busy += v
		}
	}
	return busy, irq, total, nil
}

// clockTicks is USER_HZ from getconf CLK_TCK, 100 if that fails.
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
			return v
		}
	}
	return 100
}

// logSummary counts a pusher log's events by level and name and keeps the
// first few warn/error lines verbatim.
type logSummary struct {
	lines    int
	events   map[string]int // "level:event" -> count
	problems []string       // first warn/error lines
}

func summarizeLog(path string) (logSummary, error) {
	s := logSummary{events: map[string]int{}}
	f, err := os.Open(path)
	if err != nil {
		return s, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 256<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		s.lines++
		level, event := jsonField(line, "level"), jsonField(line, "msg")
		if level == "" {
			level, event = "text", "(not JSON)"
		}
		s.events[level+":"+event]++
		if level != "info" && level != "debug" && len(s.problems) < 5 {
			l := string(line)
			if len(l) > 400 {
				l = l[:400] + "..."
			}
			s.problems = append(s.problems, l)
		}
	}
	return s, sc.Err()
}

// jsonField extracts a top-level string field from a zap JSON line without
// decoding the whole line (the log has a line per delivered message).
func jsonField(line []byte, key string) string {
	k := []byte(`"` + key + `":"`)
	i := bytes.Index(line, k)
	if i < 0 {
		return ""
	}
	rest := line[i+len(k):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

func (s logSummary) String() string {
	keys := make([]string, 0, len(s.events))
	for k := range s.events {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, s.events[k])
	}
	return strings.TrimSpace(b.String())
}
