package harness

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPollSaysWhyItStillWaits(t *testing.T) {
	calls := 0
	err := Poll(context.Background(), 50*time.Millisecond, "the answer", func() error {
		calls++
		return errors.New("it is still 41")
	})
	if err == nil || !strings.Contains(err.Error(), "the answer") || !strings.Contains(err.Error(), "it is still 41") {
		t.Fatalf("Poll = %v, want what it waited for and the last reason", err)
	}
	if calls < 3 {
		t.Errorf("cond called %d times in 50ms", calls)
	}

	start := time.Now()
	err = Poll(context.Background(), time.Minute, "a dead process", func() error { return Abort(errors.New("exited")) })
	if err == nil || !strings.Contains(err.Error(), "exited") || time.Since(start) > time.Second {
		t.Fatalf("Poll with Abort = %v after %s, want the abort at once", err, time.Since(start))
	}

	n := 0
	if err := Poll(context.Background(), time.Minute, "three calls", func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("Poll = %v after %d calls, want nil after 3", err, n)
	}
}

const exposition = `# TYPE pusher_messages_total counter
pusher_messages_total{outcome="delivered",reason=""} 7
pusher_messages_total{outcome="retried",reason="queue_full"} 2
pusher_messages_total{outcome="retried",reason="timeout"} 1
# TYPE pusher_connections gauge
pusher_connections 3
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0.5"} 0.001
go_gc_duration_seconds_sum 0.01
go_gc_duration_seconds_count 12
# TYPE pusher_delivery_latency_seconds histogram
pusher_delivery_latency_seconds_bucket{le="0.01"} 4
pusher_delivery_latency_seconds_bucket{le="+Inf"} 5
pusher_delivery_latency_seconds_sum 0.2
pusher_delivery_latency_seconds_count 5
`

func TestMetricsSumsSeriesAsExposed(t *testing.T) {
	m, err := ParseMetrics(strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		give  []string // name, then label pairs
		want  float64
		merge int // scrapes merged
	}{
		{"every label value", []string{"pusher_messages_total"}, 10, 1},
		{"one label", []string{"pusher_messages_total", "outcome", "retried"}, 3, 1},
		{"exact series", []string{"pusher_messages_total", "outcome", "retried", "reason", "queue_full"}, 2, 1},
		{"empty label value", []string{"pusher_messages_total", "outcome", "delivered", "reason", ""}, 7, 1},
		{"gauge", []string{"pusher_connections"}, 3, 1},
		{"summary count", []string{"go_gc_duration_seconds_count"}, 12, 1},
		{"histogram bucket", []string{"pusher_delivery_latency_seconds_bucket", "le", "+Inf"}, 5, 1},
		{"never exposed", []string{"pusher_nothing"}, 0, 1},
		{"over three nodes", []string{"pusher_connections"}, 9, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ms []Metrics
			for range tt.merge {
				ms = append(ms, m)
			}
			if got := Merge(ms...).Sum(tt.give[0], tt.give[1:]...); got != tt.want {
				t.Fatalf("Sum%v = %v, want %v", tt.give, got, tt.want)
			}
		})
	}
}

func TestLogAwaitsALineWrittenInPieces(t *testing.T) {
	l := NewLog()
	got := make(chan map[string]any, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		line, err := l.Await(ctx, "ws.closed", map[string]any{"uid": "u1", "code": 4002})
		if err != nil {
			t.Error(err)
		}
		got <- line
	}()
	_, _ = l.Write([]byte(`{"msg":"ws.closed","uid":"u2","code":4002}` + "\n" + `{"msg":"ws.clo`))
	_, _ = l.Write([]byte(`sed","uid":"u1","code":4002}` + "\n"))
	if line := <-got; line["uid"] != "u1" {
		t.Fatalf("Await returned %v", line)
	}
	if n := len(l.Find("ws.closed", nil)); n != 2 {
		t.Fatalf("Find: %d lines, want 2", n)
	}
}
