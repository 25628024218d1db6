package main

// The original demo, side by side with pusher in the same run
// (--demo-bin): github.com/eleven26/go-pusher (module go-websocket), built
// from its own checkout, never part of this repository. It serves /ws
// (the JWT only in ?token=, HS256 with the secret "secret", claim uid;
// one connection per uid), /send?uid=&message= (writes message to that
// uid's connection, 200 with an empty body; 400 when the uid is not
// connected) and a plain-text /metrics; it persists nothing and has no
// acks. It prints one line per message to stdout, which goes to a file
// (the child writes it; nothing passes through the bench).

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pusher-io/pusher/e2e/harness"
)

const (
	// demoSecret is the demo's JWT secret: its main sets JWT_SECRET to it.
	demoSecret = "secret"
	// demoReadyTimeout bounds the wait for the demo's first answer.
	demoReadyTimeout = 15 * time.Second
)

// demoProc is one demo process.
type demoProc struct {
	proc    *harness.Proc
	pid     int
	addr    string // host:port of its HTTP server
	logPath string // its stdout and stderr
}

// startDemo starts bin on a reserved loopback port and waits until its
// /metrics answers.
func startDemo(ctx context.Context, bin, dir string) (*demoProc, error) {
	addrs, err := harness.ReserveAddrs(1)
	if err != nil {
		return nil, err
	}
	d := &demoProc{addr: addrs[0], logPath: filepath.Join(dir, "demo.log")}
	d.proc, err = harness.NewProc(harness.ProcConfig{Name: "demo", Bin: bin, Args: []string{"-addr", d.addr}, LogPath: d.logPath})
	if err != nil {
		return nil, err
	}
	d.pid = d.proc.PID()
	err = harness.Poll(ctx, demoReadyTimeout, "demo answering /metrics on "+d.addr, func() error {
		if err := d.proc.Alive(); err != nil {
			return harness.Abort(err)
		}
		_, err := harness.Scrape(ctx, d.addr)
		return err
	})
	if err != nil {
		_ = d.proc.Kill()
		return nil, err
	}
	return d, nil
}

// stop kills the demo and waits for it: it has no graceful shutdown (a
// SIGTERM ends it just the same).
func (d *demoProc) stop() error { return d.proc.Kill() }

// metrics reads the demo's connections and pending (messages accepted
// by /send and not yet written) gauges.
func (d *demoProc) metrics(ctx context.Context) (conns, pending int, err error) {
	m, err := harness.Scrape(ctx, d.addr)
	if err != nil {
		return 0, 0, err
	}
	return int(m.Sum("connections")), int(m.Sum("pending")), nil
}

// logSize is the size of the demo's log: where the next phase's lines
// start.
func (d *demoProc) logSize() (int64, error) {
	fi, err := os.Stat(d.logPath)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// demoLines counts a demo log's lines: sent, one "send message: {json}"
// per message /send accepted; failed, one "send message: {json}, error:
// ..." per write that failed (after its sent line); and the first few
// other lines.
type demoLines struct {
	sent, failed, other int
	firstOther          []string
}

// readLines counts the lines of the demo's log from offset on.
func (d *demoProc) readLines(offset int64) (demoLines, error) {
	var l demoLines
	f, err := os.Open(d.logPath)
	if err != nil {
		return l, err
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return l, err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	prefix := []byte("send message: {")
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case !bytes.HasPrefix(line, prefix):
			l.other++
			if len(l.firstOther) < 3 {
				l.firstOther = append(l.firstOther, string(line[:min(len(line), 300)]))
			}
		case bytes.Contains(line, []byte("}, error: ")):
			l.failed++
		default:
			l.sent++
		}
	}
	return l, sc.Err()
}

func (l demoLines) String() string {
	s := fmt.Sprintf("send=%d failed=%d other=%d", l.sent, l.failed, l.other)
	if len(l.firstOther) > 0 {
		s += "; first: " + strings.Join(l.firstOther, " | ")
	}
	return s
}

// demoVersion describes the demo binary from its build info.
func demoVersion(bin string) string {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	parts := []string{bi.Path, bi.GoVersion}
	for _, dep := range bi.Deps {
		if strings.HasSuffix(dep.Path, "/websocket") {
			parts = append(parts, dep.Path+" "+dep.Version)
		}
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			parts = append(parts, "revision "+s.Value)
		}
	}
	return strings.Join(parts, ", ")
}

// useDemo stops the clients and pusher, starts the demo and clients that
// put their tokens in the query, so the next phases measure the demo on
// the same load generator, in the same run. The next pusher phase starts
// a fresh pusher (restartPusher), which stops the demo.
func (b *bench) useDemo(ctx context.Context) error {
	b.stopClientsAndPusher()
	d, err := startDemo(ctx, b.cfg.demoBin, b.tmp)
	if err != nil {
		return fmt.Errorf("start the demo (%s): %w", b.cfg.demoBin, err)
	}
	b.demo, b.res.variant = d, "demo"
	b.logf("demo pid %d http %s (%s)", d.pid, d.addr, b.demoInfo)
	return b.startClients()
}

// stopDemo stops the demo, if it runs, and summarises its log.
func (b *bench) stopDemo() {
	d := b.demo
	if d == nil {
		return
	}
	b.demo = nil
	if err := d.stop(); err != nil {
		b.notes = append(b.notes, "demo: "+err.Error())
	}
	l, err := d.readLines(0)
	if err != nil {
		b.notes = append(b.notes, "demo log: "+err.Error())
		return
	}
	b.res.demoLogs = append(b.res.demoLogs, fmt.Sprintf("demo (%d lines): %s", l.sent+l.failed+l.other, l))
	if l.failed > 0 || l.other > 0 {
		b.notes = append(b.notes, "demo logged: "+l.String())
	}
}

// checkDemo notes anything but want messages accepted, and no write
// failed, in the demo's log since offset.
func (b *bench) checkDemo(phase string, offset int64, want int) error {
	l, err := b.demo.readLines(offset)
	if err != nil {
		return fmt.Errorf("demo log: %w", err)
	}
	if l.sent != want || l.failed != 0 {
		b.notes = append(b.notes, fmt.Sprintf("%s phase: the demo logged %d messages sent and %d failed writes, want %d sent", phase, l.sent, l.failed, want))
	}
	return nil
}

// demoHint describes the demo for a stall error.
func (b *bench) demoHint(ctx context.Context) string {
	if err := b.demo.proc.Alive(); err != nil {
		return "; " + err.Error()
	}
	conns, pending, err := b.demo.metrics(ctx)
	if err != nil {
		return "; " + err.Error()
	}
	return fmt.Sprintf("; demo: connections %d, pending %d", conns, pending)
}
