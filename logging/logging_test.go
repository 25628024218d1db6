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
	log.Named("consumer").Info("push.delivered", zap.String("uid", "123"), zap.Duration("latency", 1500*time.Microsecond))
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
	if m["msg"] != "push.delivered" || m["level"] != "info" || m["logger"] != "consumer" || m["uid"] != "123" || m["latency"] != 0.0015 {
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
