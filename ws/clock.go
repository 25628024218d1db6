package ws

import "time"

// instant is a point in time as nanoseconds on the monotonic clock since
// the Handler was made, 0 meaning unset. A connection keeps seven times;
// as time.Time, 24 bytes each, they pushed an idle connection's struct
// into the next allocation size class.
type instant int64

// now is the current instant; never 0.
func (h *Handler) now() instant { return instant(time.Since(h.epoch)) + 1 }

// instantOf converts a wall-clock time (a token's exp); zero stays 0.
func (h *Handler) instantOf(t time.Time) instant {
	if t.IsZero() {
		return 0
	}
	return instant(t.Sub(h.epoch)) + 1
}

func (i instant) isZero() bool                { return i == 0 }
func (i instant) add(d time.Duration) instant { return i + instant(d) }
func (i instant) sub(j instant) time.Duration { return time.Duration(i - j) }
func (i instant) before(j instant) bool       { return i < j }
func earliest(a, b instant) instant           { return min(a, b) }
