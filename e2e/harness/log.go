package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Log collects a process's JSON log lines (pusher's zap output) as they
// are written, and lets a test find lines or wait for one. It is the one
// place tests read logs, and they read them only to assert behaviour (an
// event was logged), never to learn an address. Safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	raw     bytes.Buffer     // everything written; guarded by mu
	part    []byte           // an unfinished line; guarded by mu
	pending [][]byte         // lines not decoded yet (Find decodes them); guarded by mu
	lines   []map[string]any // decoded lines; guarded by mu
	grew    chan struct{}    // closed and replaced on every new line; guarded by mu
}

// NewLog returns an empty Log; write a process's stdout to it.
func NewLog() *Log { return &Log{grew: make(chan struct{})} }

// ReadLogFile reads a log file written so far into a Log.
func ReadLogFile(path string) (*Log, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	l := NewLog()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		l.pending = append(l.pending, append([]byte(nil), sc.Bytes()...))
	}
	return l, sc.Err()
}

// Write takes output; lines are split at '\n' and decoded lazily.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.raw.Write(p)
	l.part = append(l.part, p...)
	added := false
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		l.pending = append(l.pending, append([]byte(nil), l.part[:i]...))
		l.part = l.part[i+1:]
		added = true
	}
	if added {
		close(l.grew)
		l.grew = make(chan struct{})
	}
	return len(p), nil
}

// Find returns the lines whose msg is event (any, when event is empty)
// and whose fields equal match (compared as printed, so 4002 matches a
// JSON number 4002).
func (l *Log) Find(event string, match map[string]any) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.pending {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			m = map[string]any{"msg": "!notjson", "line": string(line)}
		}
		l.lines = append(l.lines, m)
	}
	l.pending = l.pending[:0]
	var out []map[string]any
	for _, line := range l.lines {
		if (event == "" || line["msg"] == event) && fieldsMatch(line, match) {
			out = append(out, line)
		}
	}
	return out
}

func fieldsMatch(line, match map[string]any) bool {
	for k, v := range match {
		if fmt.Sprint(line[k]) != fmt.Sprint(v) {
			return false
		}
	}
	return true
}

// Await blocks until a line with msg event and fields match is logged, or
// ctx ends, and returns the first such line. It wakes on every new line:
// no polling.
func (l *Log) Await(ctx context.Context, event string, match map[string]any) (map[string]any, error) {
	for {
		l.mu.Lock()
		grew := l.grew
		l.mu.Unlock()
		if got := l.Find(event, match); len(got) > 0 {
			return got[0], nil
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return nil, fmt.Errorf("no %s %v log line: %w", event, match, ctx.Err())
		}
	}
}

// Wait is Await for tests, bounded by timeout: it fails t with the log's
// last lines when no such line came.
func (l *Log) Wait(t testing.TB, timeout time.Duration, event string, match map[string]any) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	line, err := l.Await(ctx, event, match)
	if err != nil {
		t.Fatalf("%v within %s; last lines:\n%s", err, timeout, Tail(l.String(), 20))
	}
	return line
}

// String is everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}
