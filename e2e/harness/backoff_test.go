package harness

import (
	"net/http"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	tests := []struct {
		name    string
		attempt int
		wait    time.Duration
		jitter  float64
		want    time.Duration
	}{
		{name: "first, no jitter: the floor", attempt: 0, jitter: 0, want: BackoffFloor},
		{name: "first, half", attempt: 0, jitter: 0.5, want: 250 * time.Millisecond},
		{name: "first, all but", attempt: 0, jitter: 0.999, want: 499500 * time.Microsecond},
		{name: "third doubles twice", attempt: 2, jitter: 0.5, want: time.Second},
		{name: "capped", attempt: 6, jitter: 0.5, want: 10 * time.Second},
		{name: "far past the cap", attempt: 1000, jitter: 0.5, want: 10 * time.Second},
		{name: "asked for, no jitter", attempt: 5, wait: 2 * time.Second, jitter: 0, want: 2 * time.Second},
		{name: "asked for, up to as much again", attempt: 0, wait: 2 * time.Second, jitter: 0.75, want: 3500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BackoffDelay(tt.attempt, tt.wait, tt.jitter); got != tt.want {
				t.Errorf("BackoffDelay(%d, %s, %v) = %s, want %s", tt.attempt, tt.wait, tt.jitter, got, tt.want)
			}
		})
	}
}

func TestBackoffCountsAndResets(t *testing.T) {
	b := Backoff{Jitter: func() float64 { return 0.5 }}
	for i, want := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second} {
		if got := b.Next(0); got != want {
			t.Fatalf("attempt %d: %s, want %s", i, got, want)
		}
	}
	b.Ended(BackoffStableAfter - time.Millisecond)
	if got := b.Next(0); got != 2*time.Second {
		t.Fatalf("after a short connection: %s, want the back-off to go on (2s)", got)
	}
	if got := b.Next(2 * time.Second); got != 3*time.Second || b.Attempt() != 5 {
		t.Fatalf("asked for 2s: %s after %d attempts, want 3s counted as an attempt", got, b.Attempt())
	}
	b.Ended(BackoffStableAfter)
	if got := b.Next(0); got != 250*time.Millisecond {
		t.Fatalf("after a stable connection: %s, want the first back-off again", got)
	}
}

func TestRetryAfter(t *testing.T) {
	resp := func(status int, retryAfter string) *http.Response {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{StatusCode: status, Header: h}
	}
	tests := []struct {
		name string
		give *http.Response
		want time.Duration
	}{
		{name: "admission control", give: resp(http.StatusServiceUnavailable, "2"), want: 2 * time.Second},
		{name: "zero is a second", give: resp(http.StatusServiceUnavailable, "0"), want: time.Second},
		{name: "capped", give: resp(http.StatusServiceUnavailable, "3600"), want: BackoffCap},
		{name: "no header", give: resp(http.StatusServiceUnavailable, ""), want: 0},
		{name: "an HTTP date is not read", give: resp(http.StatusServiceUnavailable, "Wed, 21 Oct 2026 07:28:00 GMT"), want: 0},
		{name: "not a 503", give: resp(http.StatusTooManyRequests, "2"), want: 0},
		{name: "no response", give: nil, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RetryAfter(tt.give); got != tt.want {
				t.Errorf("RetryAfter = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestCloseRetryAfter(t *testing.T) {
	tests := []struct {
		code int
		give string
		want time.Duration
	}{
		{1013, "busy; retry after 2s", 2 * time.Second},
		{1013, "busy", time.Second},
		{1013, "retry after 0s", time.Second},
		{1013, "retry after 999s", BackoffCap},
		{1013, "retry after 99999999999999999999s", BackoffCap},
		{1001, "server shutting down; retry after 2s", 2 * time.Second},
		{1001, "server shutting down", 0},
		{4002, "slow client", 0},
	}
	for _, tt := range tests {
		if got := CloseRetryAfter(tt.code, tt.give); got != tt.want {
			t.Errorf("CloseRetryAfter(%d, %q) = %s, want %s", tt.code, tt.give, got, tt.want)
		}
	}
}

// TestBackoffMatchesOfficialClient pins the policy's constants to
// web/client/pusher.js's, so the Go clients keep coming back as browsers
// do.
func TestBackoffMatchesOfficialClient(t *testing.T) {
	src, err := os.ReadFile("../../web/client/pusher.js")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{
		"BACKOFF_BASE":    BackoffBase.Milliseconds(),
		"BACKOFF_CAP":     BackoffCap.Milliseconds(),
		"BACKOFF_FLOOR":   BackoffFloor.Milliseconds(),
		"BACKOFF_MAX_EXP": backoffMaxExp,
		"STABLE_AFTER":    BackoffStableAfter.Milliseconds(),
	} {
		m := regexp.MustCompile(`(?m)^const ` + name + ` = (\d+);`).FindSubmatch(src)
		if m == nil {
			t.Errorf("pusher.js has no const %s", name)
			continue
		}
		if got, _ := strconv.ParseInt(string(m[1]), 10, 64); got != want {
			t.Errorf("pusher.js %s = %d, the harness has %d", name, got, want)
		}
	}
}
