package logging

import (
	"strconv"
	"time"

	"go.uber.org/zap"
)

// Ms is the one way pusher logs a duration: a float of milliseconds,
// rounded to the microsecond, under key, which ends in "_ms" by
// convention (latency_ms, duration_ms, delay_ms).
//
// zap.Duration is not used for fields: its rendering depends on the
// encoder's config. zap.Float64 alone is not enough either: it prints a
// whole number without a fraction ("30000"), and a log stack that maps
// field types from the first value it sees (Elasticsearch's dynamic
// mapping) would then make the field an integer and truncate every later
// value. A whole number of milliseconds is therefore written as "30000.0",
// through a reflected field; that costs an allocation, but measured
// durations are whole milliseconds about once in a thousand lines.
func Ms(key string, d time.Duration) zap.Field {
	us := d.Microseconds()
	if us%1000 != 0 {
		return zap.Float64(key, float64(us)/1000)
	}
	return zap.Reflect(key, wholeMs(us/1000))
}

// wholeMs is a whole number of milliseconds, encoded with a fraction so
// that JSON readers see a float.
type wholeMs int64

// MarshalJSON writes the number with ".0".
func (m wholeMs) MarshalJSON() ([]byte, error) {
	return append(strconv.AppendInt(make([]byte, 0, 24), int64(m), 10), ".0"...), nil
}
