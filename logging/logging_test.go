package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestJSONLinesWithRFC3339AndEventName(t *testing.T) {
	var buf bytes.Buffer
	log, closeLog, err := New(&buf, Config{})
	if err != nil {
		t.Fatal(err)
	}
	log.Named("consumer").Info("push.delivered", zap.String("uid", "123"), Ms("latency_ms", 1500*time.Microsecond))
	log.Debug("hidden at info")
	if err := closeLog(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1: %q", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	if m["msg"] != "push.delivered" || m["level"] != "info" || m["logger"] != "consumer" || m["uid"] != "123" || m["latency_ms"] != 1.5 {
		t.Fatalf("line %v", m)
	}
	if _, err := time.Parse(time.RFC3339Nano, m["ts"].(string)); err != nil {
		t.Fatalf("ts %v: %v", m["ts"], err)
	}
}

func TestBufferedFlushesOnClose(t *testing.T) {
	var buf bytes.Buffer
	log, closeLog, err := New(&buf, Config{BufferSize: 64 << 10, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("ws.connected")
	if buf.Len() != 0 {
		t.Fatal("buffered logger wrote at once")
	}
	if err := closeLog(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"msg":"ws.connected"`) {
		t.Fatalf("close did not flush: %q", buf.String())
	}
}

func TestBadLevel(t *testing.T) {
	if _, _, err := New(&bytes.Buffer{}, Config{Level: "loud"}); err == nil {
		t.Fatal("level loud accepted")
	}
}

// Durations are floats of milliseconds on every line, whole ones too, so a
// log stack never takes the field for an integer.
func TestMsIsAlwaysAFloat(t *testing.T) {
	tests := []struct {
		give time.Duration
		want string
	}{
		{1500 * time.Microsecond, `"d_ms":1.5`},
		{1234567 * time.Nanosecond, `"d_ms":1.234`},
		{30 * time.Second, `"d_ms":30000.0`},
		{0, `"d_ms":0.0`},
		{999 * time.Nanosecond, `"d_ms":0.0`},
		{-2 * time.Millisecond, `"d_ms":-2.0`},
		{-2500 * time.Microsecond, `"d_ms":-2.5`},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		log, closeLog, err := New(&buf, Config{})
		if err != nil {
			t.Fatal(err)
		}
		log.Info("x", Ms("d_ms", tt.give))
		_ = closeLog()
		if !strings.Contains(buf.String(), tt.want+"}") {
			t.Errorf("Ms(%s) logged %s, want %s", tt.give, buf.String(), tt.want)
		}
	}
}

// A fractional duration, the usual case, costs the hot path no allocation.
func TestMsFractionDoesNotAllocate(t *testing.T) {
	var f zap.Field
	if allocs := testing.AllocsPerRun(1000, func() { f = Ms("latency_ms", 1234567*time.Nanosecond) }); allocs != 0 {
		t.Fatalf("%.1f allocations per field, want 0", allocs)
	}
	_ = f
}
