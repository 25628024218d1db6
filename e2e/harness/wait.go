package harness

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Poll bounds: the first retry comes quickly, so cheap conditions are
// noticed at once; the interval then doubles up to maxPollInterval, so an
// expensive one (a scrape, a JetStream scan) is not asked hundreds of times
// a second.
const (
	minPollInterval = 5 * time.Millisecond
	maxPollInterval = 100 * time.Millisecond
)

// abortError ends a Poll at once: waiting longer cannot help.
type abortError struct{ err error }

func (e abortError) Error() string { return e.err.Error() }
func (e abortError) Unwrap() error { return e.err }

// Abort wraps err so that Poll (and WaitFor) give up at once instead of
// retrying: for a condition that can no longer come true, such as the
// process it waits for having exited.
func Abort(err error) error { return abortError{err} }

// Poll calls cond until it returns nil, for at most timeout, backing off
// between calls from 5ms to 100ms. It returns nil once cond holds, or an
// error that names what it waited for and cond's last error, which says
// why it was still waiting. A cond error wrapped by Abort, or ctx ending,
// stops it early.
func Poll(ctx context.Context, timeout time.Duration, what string, cond func() error) error {
	return PollEvery(ctx, timeout, maxPollInterval, what, cond)
}

// PollEvery is Poll with the back-off capped at every instead of 100ms:
// for a condition whose check costs the process being measured (a
// benchmark scraping /metrics while it reads RSS).
func PollEvery(ctx context.Context, timeout, every time.Duration, what string, cond func() error) error {
	start := time.Now()
	deadline := start.Add(timeout)
	interval := min(minPollInterval, every)
	timer := time.NewTimer(time.Hour) // reset before each wait
	defer timer.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if ae := (abortError{}); errors.As(err, &ae) {
			return fmt.Errorf("gave up waiting for %s after %s: %w", what, time.Since(start).Round(time.Millisecond), ae.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s: %w", timeout, what, err)
		}
		timer.Reset(min(interval, time.Until(deadline)+time.Millisecond))
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-timer.C:
		}
		interval = min(2*interval, every)
	}
}

// WaitFor is Poll for tests: it fails t with Poll's error.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Poll(context.Background(), timeout, what, cond); err != nil {
		t.Fatal(err)
	}
}

// Holds checks cond over d, at Poll's intervals, and fails t the first time
// it returns an error: for what must stay true (a page that must not
// reconnect), where WaitFor is for what must become true.
func Holds(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	var broke error
	// Poll's condition is inverted: it "holds" (stops) as soon as cond
	// fails, and times out when cond held all along.
	err := Poll(context.Background(), d, what+" to break", func() error {
		if broke = cond(); broke != nil {
			return nil
		}
		return errStillHolds
	})
	if err == nil {
		t.Fatalf("%s no longer holds: %v", what, broke)
	}
}

var errStillHolds = errors.New("still holds")
