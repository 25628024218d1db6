package ws

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
)

// TestDelivery: a routed payload arrives with its exact bytes, as a text
// frame when it is UTF-8 and as a binary frame otherwise (the consumer sets
// Binary from utf8.Valid), and the write is reported once, with nil.
func TestDelivery(t *testing.T) {
	tests := []struct {
		name     string
		give     []byte
		wantType int
	}{
		{name: "ascii", give: []byte(`{"hello":"world"}`), wantType: websocket.TextMessage},
		{name: "utf-8", give: []byte("grüße, 世界 ✓"), wantType: websocket.TextMessage},
		{name: "empty", give: []byte{}, wantType: websocket.TextMessage},
		{name: "not utf-8", give: []byte{0xff, 0xfe, 0x00, 0x80, 'a'}, wantType: websocket.BinaryMessage},
		{name: "truncated rune", give: []byte("ok \xe4\xb8"), wantType: websocket.BinaryMessage},
	}
	ts := newTestServer(t, setup{})
	c := ts.open(t, "alice")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder(t)
			m := &hub.Message{Data: tt.give, Binary: !utf8.Valid(tt.give), Reporter: rec}
			if n := ts.hub.Route("alice", m); n != 1 {
				t.Fatalf("Route = %d, want 1", n)
			}
			wantMessage(t, c, tt.wantType, tt.give)
			waitFor(t, waitTimeout, rec.hasCount(1))
			if err := rec.reports(m)[0]; err != nil {
				t.Errorf("reported %v, want nil", err)
			}
			waitFor(t, waitTimeout, released(m))
		})
	}
}

// TestFanOut: every connection of a uid gets the message, and the message
// is reported once, with nil.
func TestFanOut(t *testing.T) {
	ts := newTestServer(t, setup{})
	c1 := ts.open(t, "alice")
	c2 := ts.open(t, "alice")
	other := ts.open(t, "bob")
	rec := newRecorder(t)
	m := rec.message([]byte("to every tab"))
	if n := ts.hub.Route("alice", m); n != 2 {
		t.Fatalf("Route = %d, want 2", n)
	}
	wantMessage(t, c1, websocket.TextMessage, m.Data)
	wantMessage(t, c2, websocket.TextMessage, m.Data)
	waitFor(t, waitTimeout, released(m))
	if got := rec.reports(m); len(got) != 1 || got[0] != nil {
		t.Errorf("reports = %v, want exactly one nil", got)
	}

	// bob got nothing: the next frame he reads is his own.
	mine := rec.message([]byte("for bob"))
	ts.hub.Route("bob", mine)
	wantMessage(t, other, websocket.TextMessage, mine.Data)
}

// TestRouteOffline: a uid without connections here gets 0 from Route and
// its message is never reported.
func TestRouteOffline(t *testing.T) {
	rec := newRecorder(t)
	offline := rec.message([]byte("nobody home"))
	// Registered before the server, so it runs after the server is gone and
	// nothing can report late.
	t.Cleanup(func() {
		if got := rec.reports(offline); len(got) != 0 {
			t.Errorf("offline message reported %v, want never", got)
		}
	})
	ts := newTestServer(t, setup{})
	c := ts.open(t, "alice")
	if n := ts.hub.Route("bob", offline); n != 0 {
		t.Fatalf("Route to an offline uid = %d, want 0", n)
	}
	// A later message to alice is written and reported; had the offline one
	// been queued anywhere, it would have been reported by now too.
	m := rec.message([]byte("hi"))
	ts.hub.Route("alice", m)
	wantMessage(t, c, websocket.TextMessage, m.Data)
	waitFor(t, waitTimeout, func() error {
		if got := rec.reports(m); len(got) != 1 {
			return fmt.Errorf("%q reported %d times, want once", m.Data, len(got))
		}
		return nil
	})
	if got := rec.count(); got != 1 {
		t.Errorf("%d reports, want 1", got)
	}
}

// TestInOrder: 1,000 messages routed back to back to one connection arrive
// in order, and each is reported exactly once, with nil.
func TestInOrder(t *testing.T) {
	const total = 1000
	ts := newTestServer(t, setup{WS: Config{SendQueue: total}})
	c := ts.open(t, "alice")
	rec := newRecorder(t)
	msgs := make([]*hub.Message, total)
	for i := range msgs {
		msgs[i] = rec.message(fmt.Appendf(nil, "message %04d", i))
		if n := ts.hub.Route("alice", msgs[i]); n != 1 {
			t.Fatalf("Route #%d = %d, want 1", i, n)
		}
	}
	for i := range msgs {
		wantMessage(t, c, websocket.TextMessage, msgs[i].Data)
	}
	waitFor(t, waitTimeout, rec.hasCount(total))
	for i, m := range msgs {
		if got := rec.reports(m); len(got) != 1 || got[0] != nil {
			t.Fatalf("message %d reports = %v, want exactly one nil", i, got)
		}
	}
}

// TestManyClients: many uids with several connections each, fed
// concurrently; every connection gets every message of its uid in order and
// every message is reported exactly once, with nil.
func TestManyClients(t *testing.T) {
	const (
		uids        = 16
		connsPerUID = 3
		perUID      = 200
	)
	ts := newTestServer(t, setup{})
	rec := newRecorder(t)
	var readers sync.WaitGroup
	for u := range uids {
		uid := fmt.Sprintf("user-%d", u)
		for range connsPerUID {
			c := ts.open(t, uid)
			readers.Go(func() {
				for i := range perUID {
					_, data, err := readMessage(c)
					if err != nil {
						t.Errorf("%s: read #%d: %v", uid, i, err)
						return
					}
					if want := fmt.Sprintf("%s/%d", uid, i); string(data) != want {
						t.Errorf("%s: read %q, want %q", uid, data, want)
						return
					}
				}
			})
		}
	}
	var routers sync.WaitGroup
	for u := range uids {
		routers.Go(func() {
			uid := fmt.Sprintf("user-%d", u)
			for i := range perUID {
				if n := ts.hub.Route(uid, rec.message(fmt.Appendf(nil, "%s/%d", uid, i))); n != connsPerUID {
					t.Errorf("Route(%s) = %d, want %d", uid, n, connsPerUID)
					return
				}
			}
		})
	}
	routers.Wait()
	readers.Wait()
	waitFor(t, waitTimeout, rec.hasCount(uids*perUID))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for m, errs := range rec.got {
		if len(errs) != 1 || errs[0] != nil {
			t.Errorf("%q reports = %v, want exactly one nil", m.Data, errs)
		}
	}
}

// TestReadLimit: a client message of MaxMessageSize bytes is fine; a larger
// one ends the connection with 1009, whether it comes as one frame or as
// fragments each under the limit.
func TestReadLimit(t *testing.T) {
	tests := []struct {
		name         string
		giveWriteBuf int // client's write buffer, so its largest frame; 0: default
		giveSize     int
	}{
		{name: "one frame", giveWriteBuf: 16 << 10, giveSize: 4097},
		// gorilla's default client buffer sends a first frame just under
		// the limit and the rest in a second, also under it.
		{name: "two fragments", giveSize: 4097},
		{name: "two fragments near twice the limit", giveSize: 8000},
		{name: "many small fragments", giveWriteBuf: 1024, giveSize: 10_000},
	}
	for _, mode := range readerModes {
		for _, tt := range tests {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				testReadLimit(t, setup{GoroutineReaders: mode.goroutines}, tt.giveWriteBuf, tt.giveSize)
			})
		}
	}
}

// testReadLimit: see TestReadLimit.
func testReadLimit(t *testing.T, s setup, giveWriteBuf, giveSize int) {
	ts := newTestServer(t, s)
	d := dialer(0)
	d.WriteBufferSize = giveWriteBuf
	c := ts.connectWith(t, d, "alice")
	write := func(n int) {
		t.Helper()
		_ = c.SetWriteDeadline(time.Now().Add(waitTimeout))
		if err := c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("x"), n)); err != nil {
			t.Fatalf("write %d bytes: %v", n, err)
		}
	}
	write(4096)
	// The pong to a ping sent after it proves the server read the whole
	// 4096-byte message without closing.
	pongs := make(chan string, 1)
	c.SetPongHandler(func(data string) error {
		select {
		case pongs <- data:
		default:
		}
		return nil
	})
	if err := c.WriteControl(websocket.PingMessage, []byte("after 4096"), time.Now().Add(waitTimeout)); err != nil {
		t.Fatalf("ping: %v", err)
	}
	// The server drops the socket right after its 1009: an echo of the
	// close frame, or a pong, could meet a reset, and gorilla would report
	// that write's error instead of the close.
	c.SetCloseHandler(func(int, string) error { return nil })
	c.SetPingHandler(func(data string) error {
		_ = c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(waitTimeout))
		return nil
	})
	cl := pump(c)
	rec := newRecorder(t)
	m := rec.message([]byte("still here"))
	ts.hub.Route("alice", m)
	wantMessage(t, cl, websocket.TextMessage, m.Data)

	// The server may hang up before the whole message is out.
	_ = c.SetWriteDeadline(time.Now().Add(waitTimeout))
	_ = c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("x"), giveSize))
	_, _, err := readMessage(cl)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("after a %d-byte message the read got %v, want close %d", giveSize, err, websocket.CloseMessageTooBig)
	}
	select {
	case got := <-pongs:
		if got != "after 4096" {
			t.Errorf("pong %q, want %q", got, "after 4096")
		}
	default:
		t.Error("no pong before the close: the server did not answer a ping sent after the 4096-byte message")
	}
	waitFor(t, waitTimeout, ts.hasConns(0))
}

// TestSlowClient: a client that stops reading fills its queue; the message
// that finds it full is reported ErrQueueFull, the server closes the
// connection with wire.CloseSlowClient, and every message that found the
// connection is reported exactly once. Where a write counts, it is nil for
// each the client got and an error for the others; where the client's
// pong counts, nil only for messages the client got (one it got but did
// not confirm before the close is retried: a duplicate, never a loss).
func TestSlowClient(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name    string
		confirm Confirm
	}{{"pong", ConfirmPong}, {"write", ConfirmWrite}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testSlowClient(t, mode.confirm)
		})
	}
}

func testSlowClient(t *testing.T, confirm Confirm) {
	const (
		payload  = 256 << 10
		maxRoute = 500 // bounds memory too: each message has its own payload
	)
	ts := newTestServer(t, setup{WS: Config{SendQueue: 4, Confirm: confirm}})
	c := ts.connectWith(t, dialer(16<<10), "slow")
	rec := newRecorder(t)

	var msgs []*hub.Message
	var full *hub.Message
	deadline := time.Now().Add(waitTimeout)
	for full == nil {
		if len(msgs) == maxRoute || time.Now().After(deadline) {
			t.Fatalf("no ErrQueueFull after %d messages", len(msgs))
		}
		m := &hub.Message{Data: seqPayload(uint64(len(msgs)), payload), Binary: true, Reporter: rec}
		if n := ts.hub.Route("slow", m); n != 1 {
			t.Fatalf("Route #%d = %d, want 1", len(msgs), n)
		}
		msgs = append(msgs, m)
		// With one connection, a full queue is reported inside Route.
		if got := rec.reports(m); len(got) == 1 && errors.Is(got[0], hub.ErrQueueFull) {
			full = m
		}
	}

	received := map[uint64]bool{}
	err := readUntilClose(t, pump(c), func(typ int, data []byte) {
		if typ != websocket.BinaryMessage || len(data) != payload {
			t.Errorf("read type %d of %d bytes, want binary of %d", typ, len(data), payload)
			return
		}
		received[binary.BigEndian.Uint64(data)] = true
	})
	wantClose(t, err, wire.CloseSlowClient, wire.CloseSlowClientText)

	waitFor(t, waitTimeout, rec.hasCount(len(msgs)))
	waitFor(t, waitTimeout, ts.hasConns(0))
	for i, m := range msgs {
		got := rec.reports(m)
		if len(got) != 1 {
			t.Fatalf("message %d: %d reports, want 1", i, len(got))
		}
		delivered := got[0] == nil
		if delivered && !received[uint64(i)] || confirm == ConfirmWrite && delivered != received[uint64(i)] {
			t.Errorf("message %d: reported %v, received by the client %v", i, got[0], received[uint64(i)])
		}
	}
	t.Logf("%d messages routed, %d written before the close", len(msgs), len(received))
}

// TestKick: hub.Kick closes with the given code and reason.
func TestKick(t *testing.T) {
	ts := newTestServer(t, setup{})
	c1 := ts.open(t, "alice")
	c2 := ts.open(t, "alice")
	bob := ts.open(t, "bob")
	if n := ts.hub.Kick("alice", wire.CloseKicked, wire.CloseKickedText); n != 2 {
		t.Fatalf("Kick = %d, want 2", n)
	}
	for _, c := range []*client{c1, c2} {
		wantClose(t, readUntilClose(t, c, nil), wire.CloseKicked, wire.CloseKickedText)
	}
	waitFor(t, waitTimeout, ts.isOffline("alice"))
	if n := ts.hub.Len(); n != 1 {
		t.Errorf("hub.Len() = %d, want 1 (bob)", n)
	}
	rec := newRecorder(t)
	m := rec.message([]byte("bob unaffected"))
	ts.hub.Route("bob", m)
	wantMessage(t, bob, websocket.TextMessage, m.Data)
}

// TestTokenExpiry: when the token's exp passes, the connection is closed
// with wire.CloseTokenExpired, not before; a token that expired within the
// verifier's leeway connects and is closed at once.
func TestTokenExpiry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		giveStart time.Duration // token's iat/nbf relative to now
		giveTTL   time.Duration
	}{
		// auth.Sign rounds exp down to the second: it lands 1-2s from now.
		{name: "expires while connected", giveTTL: 2 * time.Second},
		{name: "expired within leeway", giveStart: -3 * time.Second, giveTTL: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestServer(t, setup{})
			start := time.Now().Add(tt.giveStart)
			tok, err := auth.Sign(testSecret, "alice", tt.giveTTL, start)
			if err != nil {
				t.Fatal(err)
			}
			exp := start.Add(tt.giveTTL).Truncate(time.Second)
			c, resp, err := ts.dial(t, dialer(0), bearer(tok), "")
			if err != nil {
				t.Fatalf("dial: %v (%s)", err, describe(resp))
			}
			err = readUntilClose(t, pump(c), nil)
			closedAt := time.Now()
			wantClose(t, err, wire.CloseTokenExpired, wire.CloseTokenExpiredText)
			if closedAt.Before(exp) {
				t.Errorf("closed at %s, before exp %s", closedAt.Format(time.StampMilli), exp.Format(time.StampMilli))
			}
			waitFor(t, waitTimeout, ts.hasConns(0))
		})
	}
}

// TestShutdown: hub.Shutdown closes every connection with its code and
// reason, waits for them all, and later dials are refused.
func TestShutdown(t *testing.T) {
	ts := newTestServer(t, setup{})
	clients := []*client{ts.open(t, "alice"), ts.open(t, "alice"), ts.open(t, "bob")}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	result := make(chan bool, 1)
	go func() { result <- ts.hub.Shutdown(done, wire.CloseGoingAway, wire.CloseGoingAwayText) }()

	for _, c := range clients {
		wantClose(t, readUntilClose(t, c, nil), wire.CloseGoingAway, wire.CloseGoingAwayText)
	}
	select {
	case ok := <-result:
		if !ok {
			t.Error("Shutdown returned false, want true")
		}
	case <-time.After(waitTimeout):
		t.Fatal("Shutdown did not return")
	}
	if n := ts.hub.Len(); n != 0 {
		t.Errorf("hub.Len() = %d after Shutdown, want 0", n)
	}
	c, resp, err := ts.dial(t, dialer(0), bearer(signToken(t, "carol", time.Hour)), "")
	wantRefused(t, c, resp, err, http.StatusServiceUnavailable, "server shutting down; retry after 2s")
}

// TestQueuedReportedOnClose: messages still queued when a connection
// closes are reported as failures, not lost; a message written before is
// reported nil.
func TestQueuedReportedOnClose(t *testing.T) {
	t.Parallel()
	const (
		queued = 4
		// Far more than a stalled socket's buffers hold (the client's
		// receive buffer is shrunk; the kernel caps the send buffer at a
		// few MiB), so writing it blocks until WriteWait.
		huge = 32 << 20
	)
	ts := newTestServer(t, setup{WS: Config{
		SendQueue:  queued + 2, // never full here
		WriteWait:  300 * time.Millisecond,
		CloseGrace: 300 * time.Millisecond,
		// The write counts: this client must stop reading (so never
		// answer a ping) after its first message. Unconfirmed messages on
		// a closing connection: TestUnconfirmedReportedOnClose.
		Confirm: ConfirmWrite,
	}})
	c := ts.connectWith(t, dialer(16<<10), "alice")
	rec := newRecorder(t)

	first := rec.message([]byte("read in time"))
	ts.hub.Route("alice", first)
	if typ, data, err := c.ReadMessage(); err != nil || typ != websocket.TextMessage || string(data) != string(first.Data) {
		t.Fatalf("read %d %q %v, want %q", typ, data, err, first.Data)
	}
	waitFor(t, waitTimeout, rec.hasCount(1))

	// The client stops reading now: the huge write stalls the pump, the
	// next ones wait in the queue, then the connection is kicked.
	stuck := []*hub.Message{{Data: make([]byte, huge), Binary: true, Reporter: rec}}
	for i := range queued {
		stuck = append(stuck, rec.message(fmt.Appendf(nil, "queued %d", i)))
	}
	for i, m := range stuck {
		if n := ts.hub.Route("alice", m); n != 1 {
			t.Fatalf("Route #%d = %d, want 1", i, n)
		}
	}
	if n := ts.hub.Kick("alice", wire.CloseKicked, wire.CloseKickedText); n != 1 {
		t.Fatalf("Kick = %d, want 1", n)
	}

	waitFor(t, waitTimeout, rec.hasCount(1+len(stuck)))
	waitFor(t, waitTimeout, ts.hasConns(0))
	if got := rec.reports(first); len(got) != 1 || got[0] != nil {
		t.Errorf("first message reports = %v, want exactly one nil", got)
	}
	for i, m := range stuck {
		got := rec.reports(m)
		if len(got) != 1 || got[0] == nil {
			t.Errorf("stuck message %d reports = %v, want exactly one error", i, got)
		}
		if i > 0 && !errors.Is(got[0], errConnClosed) {
			t.Errorf("queued message %d reported %v, want %v", i, got[0], errConnClosed)
		}
	}
}

// TestPingKeepsAlive: the server pings every PingInterval; a client that
// reads (and so answers pongs) outlives PongWait, one that does not read
// is dropped after PongWait.
func TestPingKeepsAlive(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testPingKeepsAlive(t, mode.goroutines)
		})
	}
}

func testPingKeepsAlive(t *testing.T, goroutineReaders bool) {
	const (
		// pongWait leaves room for a loaded machine: the live client's
		// pong must cross a scheduler that may be busy for 100 ms.
		interval = 50 * time.Millisecond
		pongWait = 400 * time.Millisecond
	)
	ts := newTestServer(t, setup{WS: Config{PingInterval: interval, PongWait: pongWait}, GoroutineReaders: goroutineReaders})
	raw := ts.connect(t, "live")
	ts.connect(t, "mute") // never reads, so never answers

	pings := make(chan struct{}, 64)
	raw.SetPingHandler(func(data string) error {
		select {
		case pings <- struct{}{}:
		default:
		}
		return raw.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(waitTimeout))
	})
	live := pump(raw)
	readErr := make(chan error, 1)
	go func() { _, _, err := readMessage(live); readErr <- err }()

	// Two PongWaits' worth of pings, answered.
	timeout := time.After(waitTimeout)
	for range 2 * pongWait / interval {
		select {
		case <-pings:
		case <-timeout:
			t.Fatal("no pings")
		}
	}
	waitFor(t, waitTimeout, ts.isOffline("mute"))
	if !ts.hub.Online("live") {
		t.Fatal("the answering client was dropped")
	}
	rec := newRecorder(t)
	m := rec.message([]byte("alive"))
	ts.hub.Route("live", m)
	select {
	case err := <-readErr:
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("no message")
	}
}

// TestCloseGrace: a client that ignores our close frame but keeps sending
// cannot hold the connection (and so Shutdown) open past CloseGrace.
func TestCloseGrace(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			testCloseGrace(t, mode.goroutines)
		})
	}
}

func testCloseGrace(t *testing.T, goroutineReaders bool) {
	const grace = 200 * time.Millisecond
	ts := newTestServer(t, setup{WS: Config{CloseGrace: grace}, GoroutineReaders: goroutineReaders})
	c := ts.connect(t, "rude")
	ts.hub.Kick("rude", wire.CloseKicked, wire.CloseKickedText)

	// Never read (so never answer the close frame); send a frame every
	// tenth of the grace period until the server hangs up.
	stopped := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		tick := time.NewTicker(grace / 10)
		defer tick.Stop()
		for {
			_ = c.SetWriteDeadline(time.Now().Add(waitTimeout))
			if err := c.WriteMessage(websocket.TextMessage, []byte("still here")); err != nil {
				sent <- err
				return
			}
			select {
			case <-tick.C:
			case <-stopped:
				sent <- nil
				return
			}
		}
	}()
	defer func() {
		close(stopped)
		<-sent
	}()
	start := time.Now()
	waitFor(t, waitTimeout, ts.hasConns(0))
	if d := time.Since(start); d > 10*grace {
		t.Errorf("connection held %s after our close frame, want about %s", d.Round(time.Millisecond), grace)
	}
}
