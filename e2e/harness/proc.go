package harness

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process timing bounds.
const (
	// reapTimeout bounds the wait for a SIGKILLed process to be reaped.
	reapTimeout = 10 * time.Second
	// outputWaitDelay bounds the wait for children that inherited a
	// process's output (Chromium's renderers) after it exited.
	outputWaitDelay = 10 * time.Second
	// stderrKeep is how much of a process's stderr is kept in memory.
	stderrKeep = 1 << 20
)

// ProcConfig describes one subprocess.
type ProcConfig struct {
	Name string   // for messages ("pusher-2", "nats-1")
	Bin  string   // the program
	Args []string // its arguments
	// Env is set on top of CleanEnv(); nothing else of the caller's
	// environment reaches the process.
	Env map[string]string
	// LogPath, when set, receives stdout and stderr directly (the child
	// writes the file; nothing is copied through this process, whose CPU a
	// benchmark measures). When empty, stdout goes to Log() and stderr to
	// Stderr().
	LogPath string
	// Group puts the process in its own process group, and Kill kills the
	// group: for programs that fork helpers (Chromium).
	Group bool
}

// Proc is one running subprocess, started with StartProc or NewProc. It
// dies with this process (PR_SET_PDEATHSIG). One goroutine waits for its
// exit (and os/exec's copy its output), until it is reaped. Methods are
// safe for concurrent use.
type Proc struct {
	cfg    ProcConfig
	cmd    *exec.Cmd
	log    *Log        // stdout, when not LogPath
	stderr *tailBuffer // stderr, when not LogPath
	done   chan struct{}
	state  *os.ProcessState // set before done is closed
}

// CleanEnv is this process's environment without pusher's settings
// (PUSHER_*, JWT_SECRET) or the benchmark's (BENCH_*), so a developer's
// shell cannot change what a test or a benchmark runs.
func CleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PUSHER_") || k == "JWT_SECRET" || strings.HasPrefix(k, "BENCH_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// NewProc starts cfg's process. The caller ends it (Kill, Stop).
func NewProc(cfg ProcConfig) (*Proc, error) {
	p := &Proc{cfg: cfg, done: make(chan struct{})}
	p.cmd = exec.Command(cfg.Bin, cfg.Args...)
	p.cmd.Env = CleanEnv()
	keys := make([]string, 0, len(cfg.Env))
	for k := range cfg.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p.cmd.Env = append(p.cmd.Env, k+"="+cfg.Env[k])
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: cfg.Group}
	p.cmd.WaitDelay = outputWaitDelay
	if cfg.LogPath != "" {
		f, err := os.Create(cfg.LogPath)
		if err != nil {
			return nil, fmt.Errorf("%s log: %w", cfg.Name, err)
		}
		defer func() { _ = f.Close() }() // the child has its own descriptor
		p.cmd.Stdout, p.cmd.Stderr = f, f
	} else {
		p.log, p.stderr = NewLog(), &tailBuffer{max: stderrKeep}
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.stderr
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", cfg.Name, cfg.Bin, err)
	}
	go func() {
		_ = p.cmd.Wait() // how it ended is in state
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	return p, nil
}

// StartProc is NewProc for tests: the process is killed and reaped in
// t.Cleanup if it still runs.
func StartProc(t testing.TB, cfg ProcConfig) *Proc {
	t.Helper()
	p, err := NewProc(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Kill(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return p
}

// Name is the process's name from its config.
func (p *Proc) Name() string { return p.cfg.Name }

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Log is the process's stdout as log lines; nil with LogPath.
func (p *Proc) Log() *Log { return p.log }

// Stderr is what the process wrote to stderr (its last MiB), or the tail
// of its log file with LogPath.
func (p *Proc) Stderr() string {
	if p.stderr != nil {
		return p.stderr.String()
	}
	return fileTail(p.cfg.LogPath, 4096)
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Alive returns nil while the process runs, and otherwise an error with
// how it ended and the end of its output.
func (p *Proc) Alive() error {
	if !p.Exited() {
		return nil
	}
	return fmt.Errorf("%s exited (%v)\n%s", p.cfg.Name, p.state, Tail(p.Stderr(), 30))
}

// Signal sends sig to the process (to its group with Group).
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Exited() {
		return fmt.Errorf("signal %v to %s: already exited (%v)", sig, p.cfg.Name, p.state)
	}
	pid := p.PID()
	if p.cfg.Group {
		pid = -pid
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal %v to %s: %w", sig, p.cfg.Name, err)
	}
	return nil
}

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 when a signal ended it).
func (p *Proc) Wait(timeout time.Duration) (int, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.state.ExitCode(), nil
	case <-t.C:
		return 0, fmt.Errorf("%s did not exit within %s\n%s", p.cfg.Name, timeout, Tail(p.Stderr(), 30))
	}
}

// Kill SIGKILLs the process (its group with Group, which may outlive its
// leader) and waits until it is reaped, so its ports and files are free
// again. Killing an exited process only reaps what is left.
func (p *Proc) Kill() error {
	switch {
	case p.cfg.Group:
		_ = syscall.Kill(-p.PID(), syscall.SIGKILL) // ESRCH: nothing left
	case !p.Exited():
		if err := p.cmd.Process.Kill(); err != nil && !p.Exited() {
			return fmt.Errorf("kill %s: %w", p.cfg.Name, err)
		}
	}
	_, err := p.Wait(reapTimeout + outputWaitDelay)
	return err
}

// Stop sends SIGTERM and waits up to timeout for a clean exit; a process
// still running then is killed. It returns an error unless the process
// exited with status 0 in time; one that had exited already is an error.
func (p *Proc) Stop(timeout time.Duration) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	code, err := p.Wait(timeout)
	if err != nil {
		return errors.Join(err, p.Kill())
	}
	if code != 0 {
		return fmt.Errorf("%s exited after SIGTERM with %v\n%s", p.cfg.Name, p.state, Tail(p.Stderr(), 30))
	}
	return nil
}

// KillT is Kill for tests: it fails t if the process had already exited
// (a fault injected into a dead process proves nothing) or is not reaped.
func (p *Proc) KillT(t testing.TB) {
	t.Helper()
	if err := p.Alive(); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte // guarded by mu
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// fileTail returns the last n bytes of the file at path ("" if unreadable).
func fileTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}
