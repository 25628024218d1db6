package main

// The orchestrator's side of the client processes (see client.go for the
// protocol).

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pusher-io/pusher/e2e/harness"
)

// clientRequestTimeout bounds an answer to a quick command.
const clientRequestTimeout = 30 * time.Second

type clientProc struct {
	id     int
	cmd    *exec.Cmd
	pid    int
	stdin  io.WriteCloser
	count  atomic.Int64 // last "c N" of the current phase
	lines  chan string  // every other line, for request
	exited chan struct{}
	stderr *tailBuffer
}

// startClient re-executes this binary in client mode; tokenQuery puts
// the tokens in the URL (the original demo) instead of a header.
func startClient(id int, wsURL string, srcs []string, secret, protocol string, tokenQuery bool, progress chan<- struct{}) (*clientProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c := &clientProc{id: id, lines: make(chan string, 1024), exited: make(chan struct{}), stderr: &tailBuffer{max: 4096}}
	c.cmd = exec.Command(exe, "client", "--id", strconv.Itoa(id), "--url", wsURL, "--src", strings.Join(srcs, ","), "--protocol", protocol,
		"--token-query="+strconv.FormatBool(tokenQuery))
	c.cmd.Env = append(harness.CleanEnv(), "BENCH_JWT_SECRET="+secret)
	c.cmd.Stderr = c.stderr
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start client %d: %w", id, err)
	}
	c.pid = c.cmd.Process.Pid
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			if n, ok := strings.CutPrefix(line, "c "); ok {
				if v, err := strconv.ParseInt(n, 10, 64); err == nil {
					c.count.Store(v)
					select {
					case progress <- struct{}{}:
					default:
					}
				}
				continue
			}
			c.lines <- line
		}
	}()
	go func() {
		<-readDone
		_ = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// request sends one command and waits for its "ok" line, returning the
// data lines before it and the ok line's fields after "ok".
func (c *clientProc) request(ctx context.Context, cmd string, timeout time.Duration) ([]string, []string, error) {
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return nil, nil, fmt.Errorf("client %d: send %q: %w", c.id, cmd, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var data []string
	for {
		select {
		case line := <-c.lines:
			switch {
			case strings.HasPrefix(line, "ok"):
				return data, strings.Fields(line)[1:], nil
			case strings.HasPrefix(line, "err "):
				return nil, nil, fmt.Errorf("client %d: %s: %s", c.id, cmd, line[4:])
			default:
				data = append(data, line)
			}
		case <-c.exited:
			return nil, nil, fmt.Errorf("client %d exited during %q: %s", c.id, cmd, c.stderr)
		case <-timer.C:
			return nil, nil, fmt.Errorf("client %d: no answer to %q within %s", c.id, cmd, timeout)
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// stop asks the client to quit and kills it if it does not.
func (c *clientProc) stop() {
	_, _ = io.WriteString(c.stdin, "quit\n")
	_ = c.stdin.Close()
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// onAll runs f for every client concurrently and joins the errors.
func onAll(clients []*clientProc, f func(i int, c *clientProc) error) error {
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f(i, c) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// tailBuffer keeps the last max bytes written (a client's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// phaseReport is one client's "rep" answer.
type phaseReport struct {
	unique, dup, bad int64
	lastRecvNs       int64
	dropped          int64
	firstDrop        string
	samples          []int64 // latency phase: receive − intended, ns
	seqs             []int64 // each sample's sequence number
}

func (c *clientProc) report(ctx context.Context) (phaseReport, error) {
	data, f, err := c.request(ctx, "report", clientRequestTimeout)
	if err != nil {
		return phaseReport{}, err
	}
	if len(f) < 8 || f[0] != "rep" {
		return phaseReport{}, fmt.Errorf("client %d: bad report %q", c.id, f)
	}
	var r phaseReport
	var nsamples int64
	for i, dst := range []*int64{&r.unique, &r.dup, &r.bad, &r.lastRecvNs, &nsamples, &r.dropped} {
		if *dst, err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return r, fmt.Errorf("client %d: bad report %q", c.id, f)
		}
	}
	if s, err := strconv.Unquote(strings.Join(f[7:], " ")); err == nil {
		r.firstDrop = s
	}
	r.samples = make([]int64, 0, nsamples)
	r.seqs = make([]int64, 0, nsamples)
	for _, line := range data {
		vals, ok := strings.CutPrefix(line, "lat ")
		if !ok {
			continue
		}
		for _, v := range strings.Fields(vals) {
			seq, lat, _ := strings.Cut(v, ":")
			s, err1 := strconv.ParseInt(seq, 10, 64)
			n, err2 := strconv.ParseInt(lat, 10, 64)
			if err1 != nil || err2 != nil {
				return r, fmt.Errorf("client %d: bad sample %q", c.id, v)
			}
			r.seqs = append(r.seqs, s)
			r.samples = append(r.samples, n)
		}
	}
	if int64(len(r.samples)) != nsamples {
		return r, fmt.Errorf("client %d: got %d latency samples, announced %d", c.id, len(r.samples), nsamples)
	}
	return r, nil
}

// dialResult is one client's "dial" answer.
type dialResult struct {
	ok, failed int64
	start, end time.Time
	firstErr   string
}

func (c *clientProc) dial(ctx context.Context, n int, prefix string, first, parallel int, timeout time.Duration) (dialResult, error) {
	_, f, err := c.request(ctx, fmt.Sprintf("dial %d %s %d %d", n, prefix, first, parallel), timeout)
	if err != nil {
		return dialResult{}, err
	}
	if len(f) < 6 || f[0] != "dial" {
		return dialResult{}, fmt.Errorf("client %d: bad dial answer %q", c.id, f)
	}
	var r dialResult
	var s, e int64
	for i, dst := range []*int64{&r.ok, &r.failed, &s, &e} {
		if *dst, err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return r, fmt.Errorf("client %d: bad dial answer %q", c.id, f)
		}
	}
	r.start, r.end = time.Unix(0, s), time.Unix(0, e)
	if msg, err := strconv.Unquote(strings.Join(f[5:], " ")); err == nil {
		r.firstErr = msg
	}
	return r, nil
}
