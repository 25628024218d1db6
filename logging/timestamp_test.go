package logging

import (
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
)

// stringEncoder captures what a TimeEncoder appends.
type stringEncoder struct {
	zapcore.PrimitiveArrayEncoder
	got string
}

func (e *stringEncoder) AppendByteString(b []byte) { e.got = string(b) }

func TestTimestampsMatchRFC3339Nano(t *testing.T) {
	ts := newTimestamps()
	base := time.Date(2026, 11, 21, 7, 18, 27, 0, time.UTC)
	for _, give := range []time.Time{
		base,
		base.Add(1),
		base.Add(120 * time.Millisecond),
		base.Add(999999999),
		base.Add(time.Second + 5000), // the next second: a new prefix
		base.Add(-time.Hour).In(time.FixedZone("X", 3600)),
	} {
		var e stringEncoder
		ts.encode(give, &e)
		if want := give.UTC().Format(time.RFC3339Nano); e.got != want {
			t.Errorf("encode(%v) = %q, want %q", give, e.got, want)
		}
	}
}

func TestTimestampsDoNotAllocate(t *testing.T) {
	ts := newTimestamps()
	e := &stringEncoder{}
	now := time.Now()
	ts.encode(now, e) // warm the per-second prefix
	allocs := testing.AllocsPerRun(1000, func() { ts.encode(now, discardEncoder{}) })
	if allocs != 0 {
		t.Fatalf("%.1f allocations per timestamp, want 0", allocs)
	}
}

type discardEncoder struct{ zapcore.PrimitiveArrayEncoder }

func (discardEncoder) AppendByteString([]byte) {}
func (discardEncoder) AppendString(string)     {}

func BenchmarkTimestamp(b *testing.B) {
	now := time.Now()
	b.Run("cached", func(b *testing.B) {
		ts := newTimestamps()
		b.ReportAllocs()
		for b.Loop() {
			ts.encode(now, discardEncoder{})
		}
	})
	b.Run("RFC3339Nano", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			zapcore.RFC3339NanoTimeEncoder(now, discardEncoder{})
		}
	})
}
