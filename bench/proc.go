package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pusher-io/pusher/e2e/harness"
)

// pusherStopTimeout exceeds pusher's default 15s shutdown timeout.
const pusherStopTimeout = 25 * time.Second

// pusherProc is one pusher process, logging to a file: with its embedded
// NATS, or (cluster mode) a node on the external NATS cluster. The
// harness chose its addresses before starting it.
type pusherProc struct {
	*harness.Pusher
	name    string
	pid     int
	logPath string
	dataDir string
	stopped time.Duration // how long the graceful stop took
}

// startPusher starts bin serve with its data dir and log under dir and
// env on top (the cluster's URLs, pprof), on loopback ports the harness
// reserved, and waits until its /readyz answers 200.
func startPusher(ctx context.Context, bin, dir, name, secret string, cfg harness.PusherConfig) (*pusherProc, error) {
	cfg.Bin, cfg.Name, cfg.Secret = bin, name, secret
	cfg.DataDir = filepath.Join(dir, name+"-data")
	cfg.LogPath = filepath.Join(dir, name+".log")
	env := map[string]string{"PUSHER_LOG_DELIVERED": "true"} // the per-message log is part of the cost
	for k, v := range cfg.Env {
		env[k] = v
	}
	cfg.Env = env
	p, err := harness.NewPusher(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &pusherProc{Pusher: p, name: name, pid: p.Proc().PID(), logPath: cfg.LogPath, dataDir: cfg.DataDir}, nil
}

// readyLine waits (bounded: pusher flushes its log every second) for the
// pusher.ready line in p's log file and returns it.
func (p *pusherProc) readyLine(ctx context.Context) (map[string]any, error) {
	var line map[string]any
	err := harness.Poll(ctx, 10*time.Second, p.name+"'s "+harness.EventReady+" line", func() error {
		l, err := harness.ReadLogFile(p.logPath)
		if err != nil {
			return err
		}
		lines := l.Find(harness.EventReady, nil)
		if len(lines) == 0 {
			return errors.New("not logged yet")
		}
		line = lines[0]
		return nil
	})
	return line, err
}

// stop sends SIGTERM and waits for a graceful exit, killing after
// pusherStopTimeout. It returns an error for anything but a clean exit 0.
func (p *pusherProc) stop() error {
	start := time.Now()
	if err := p.Proc().Stop(pusherStopTimeout); err != nil {
		return err
	}
	p.stopped = time.Since(start)
	return nil
}

// kill ends the process at once and waits for it.
func (p *pusherProc) kill() { _ = p.Proc().Kill() }

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
