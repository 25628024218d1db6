package harness

import (
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

// The official client's reconnect policy, for Go clients that must come
// back after a restart as browsers running web/client/pusher.js do. Its
// constants and #reconnectLater are the reference: change them together.
const (
	// BackoffBase is the first back-off's ceiling (BACKOFF_BASE); it
	// doubles with every attempt.
	BackoffBase = 500 * time.Millisecond
	// BackoffCap caps the ceiling, and a server's asked-for wait
	// (BACKOFF_CAP).
	BackoffCap = 20 * time.Second
	// BackoffFloor is the shortest back-off (BACKOFF_FLOOR).
	BackoffFloor = 100 * time.Millisecond
	// BackoffStableAfter is how long a connection must stay open for the
	// next back-off to start from the beginning (STABLE_AFTER).
	BackoffStableAfter = 10 * time.Second
	// backoffMaxExp keeps 2^attempt finite (BACKOFF_MAX_EXP).
	backoffMaxExp = 16
)

// BackoffDelay is the wait before a reconnect, given the attempts since
// the last stable connection and a jitter in [0, 1): with no wait asked
// for, full jitter, max(BackoffFloor, jitter × min(BackoffCap,
// BackoffBase × 2^attempt)); when the server asked for wait (Retry-After,
// or close 1013 "busy; retry after 2s"), wait × (1 + jitter), so the
// clients it turned away do not all come back in the same instant.
func BackoffDelay(attempt int, wait time.Duration, jitter float64) time.Duration {
	if wait > 0 {
		return time.Duration(float64(wait) * (1 + jitter))
	}
	ceiling := min(BackoffCap, BackoffBase<<min(max(attempt, 0), backoffMaxExp))
	return max(BackoffFloor, time.Duration(jitter*float64(ceiling)))
}

// Backoff is one client's reconnect state under the official client's
// policy. The zero value is a client that has not failed yet. Not safe for
// concurrent use: one per client.
type Backoff struct {
	attempt int
	// Jitter returns a number in [0, 1); rand.Float64 when nil.
	Jitter func() float64
}

// Next returns the wait before the next connect and counts the attempt;
// wait is what the server asked for (0: nothing), see BackoffDelay.
func (b *Backoff) Next(wait time.Duration) time.Duration {
	jitter := rand.Float64
	if b.Jitter != nil {
		jitter = b.Jitter
	}
	d := BackoffDelay(b.attempt, wait, jitter())
	b.attempt++
	return d
}

// Ended tells the policy that a connection ended after it had been open
// for up: one that stayed open BackoffStableAfter starts the back-off
// afresh.
func (b *Backoff) Ended(up time.Duration) {
	if up >= BackoffStableAfter {
		b.attempt = 0
	}
}

// Attempt is the number of reconnects since the last stable connection.
func (b *Backoff) Attempt() int { return b.attempt }

// RetryAfter is the wait a refused handshake asks for: a 503's
// Retry-After in seconds (pusher's admission control), capped at
// BackoffCap; 0 when resp asks for none.
func RetryAfter(resp *http.Response) time.Duration {
	if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		return 0
	}
	secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || secs < 0 {
		return 0
	}
	return clampWait(secs)
}

// clampWait is secs seconds, at least 1 s and at most BackoffCap, as the
// official client's retryAfter clamps.
func clampWait(secs int) time.Duration {
	return time.Duration(min(max(secs, 1), int(BackoffCap/time.Second))) * time.Second
}

// retryAfterReason matches the wait in a close reason.
var retryAfterReason = regexp.MustCompile(`retry after (\d+)s`)

// CloseRetryAfter is the wait a close asks for, as the official client
// reads it (retryAfter): the seconds in a reason that names them ("busy;
// retry after 2s", a 1013, or a lone node's 1001 "server shutting down;
// retry after 2s"), at most BackoffCap; 1 s for a 1013 that names none;
// 0 (the back-off's own) for any other close.
func CloseRetryAfter(code int, reason string) time.Duration {
	m := retryAfterReason.FindStringSubmatch(reason)
	switch {
	case m == nil && code == websocket.CloseTryAgainLater:
		return clampWait(1)
	case m == nil:
		return 0
	}
	secs, err := strconv.Atoi(m[1])
	if err != nil { // \d+ fails only by overflowing: a huge wait
		return BackoffCap
	}
	return clampWait(secs)
}
