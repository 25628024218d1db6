package consumer

import (
	"testing"
	"time"

	"go.uber.org/zap"
)

// The push.delivered line is built once per message, into the pooled
// slice of six fields (Consumer.fields): building it allocates nothing,
// for a replayed message, the longest line, too. (Writing it is zap's,
// allocation-free as zap promises; logging pins its timestamp.)
func TestDeliveredFieldsDoNotAllocate(t *testing.T) {
	j := &job{uid: "u-123", seq: 42, delivered: 2, replayOf: 7}
	j.m.Seq = 5
	fs := make([]zap.Field, 0, 6)
	latency := 1234567 * time.Nanosecond
	build := func() { fs = j.deliveredFields(fs[:0], latency) }
	if allocs := testing.AllocsPerRun(1000, build); allocs != 0 {
		t.Fatalf("%.1f allocations per push.delivered line, want 0", allocs)
	}
	if len(fs) != 6 {
		t.Fatalf("%d fields for a replayed message, want 6", len(fs))
	}
}
