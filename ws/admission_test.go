package ws

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pusher-io/pusher/wire"
)

// TestAdmissionRefusesTheExcess: with MaxHandshakes in progress, the next
// handshake is refused at once: 503 with Retry-After for a raw client,
// the upgrade and close 1013 with the delay for a pusher.v1 client (a
// browser sees no status); once the handshakes in progress finish,
// clients are admitted again.
func TestAdmissionRefusesTheExcess(t *testing.T) {
	ts := newTestServer(t, setup{WS: Config{MaxHandshakes: 2}})
	held, release := make(chan struct{}, 2), make(chan struct{})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	t.Cleanup(releaseAll) // before the server's cleanup, which waits for the handlers
	ts.handler.inHandshake = func() {
		select {
		case held <- struct{}{}:
			<-release
		default: // the handshakes after the first two go through
		}
	}
	done := make(chan error, 2)
	for _, uid := range []string{"a", "b"} {
		go func() {
			c, _, err := dialer(0).Dial(ts.wsURL, bearer(signToken(t, uid, time.Hour)))
			if c != nil {
				defer c.Close()
			}
			done <- err
		}()
	}
	for range 2 {
		<-held
	}
	// Two in progress: a raw client is told to come back.
	c, resp, err := ts.dial(t, dialer(0), bearer(signToken(t, "raw", time.Hour)), "")
	wantRefused(t, c, resp, err, http.StatusServiceUnavailable, "too many connections being set up; retry after 2s")
	if got := resp.Header.Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After %q, want 2", got)
	}
	// A pusher.v1 client gets a close it can read.
	v1, _, err := ts.dial(t, v1Dialer(), bearer(signToken(t, "browser", time.Hour)), "")
	if err != nil {
		t.Fatalf("pusher.v1 dial: %v", err)
	}
	_, _, err = v1.ReadMessage()
	wantClose(t, err, wire.CloseTryAgain, "busy; retry after 2s")
	if n := ts.hub.Len(); n != 0 {
		t.Fatalf("%d connections registered, want none: the refused ones never were, the held ones not yet", n)
	}

	releaseAll()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("held handshake: %v", err)
		}
	}
	ts.open(t, "later") // admitted again
	if got := testutil.ToFloat64(ts.handler.met.connects.WithLabelValues("busy")); got != 2 {
		t.Fatalf("busy refusals counted %v, want 2", got)
	}
	if wire.CloseTryAgain != websocket.CloseTryAgainLater {
		t.Fatal("1013 is RFC 6455's try again later")
	}
}
