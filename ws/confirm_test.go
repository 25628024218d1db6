package ws

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
)

// pinger is a client that reads all the time but answers pings only when
// the test says so: each ping's payload arrives on pings, and answer
// sends the pong.
type pinger struct {
	*client
	raw   *websocket.Conn
	pings chan []byte
}

func (ts *testServer) openPinger(tb testing.TB, uid string) *pinger {
	tb.Helper()
	raw := ts.connect(tb, uid)
	p := &pinger{raw: raw, pings: make(chan []byte, 64)}
	raw.SetPingHandler(func(data string) error {
		p.pings <- []byte(data)
		return nil
	})
	p.client = pump(raw)
	return p
}

// nextPing returns the payload of the next ping the server sent.
func (p *pinger) nextPing(tb testing.TB) []byte {
	tb.Helper()
	select {
	case b := <-p.pings:
		return b
	case <-time.After(waitTimeout):
		tb.Fatal("no ping")
		return nil
	}
}

func (p *pinger) answer(tb testing.TB, payload []byte) {
	tb.Helper()
	if err := p.raw.WriteControl(websocket.PongMessage, payload, time.Now().Add(waitTimeout)); err != nil {
		tb.Fatalf("pong: %v", err)
	}
}

// TestPongConfirms: a written message is reported delivered only once
// the client answered the ping that followed it; an unsolicited pong, or
// one for another id, confirms nothing.
func TestPongConfirms(t *testing.T) {
	ts := newTestServer(t, setup{})
	p := ts.openPinger(t, "alice")
	rec := newRecorder(t)
	m := rec.message([]byte("hello"))
	ts.hub.Route("alice", m)
	wantMessage(t, p.client, websocket.TextMessage, m.Data)
	ping := p.nextPing(t)
	if len(ping) != 8 {
		t.Fatalf("ping payload %x, want an 8-byte id", ping)
	}
	// The client has the message and the ping, and has not answered: the
	// server cannot have confirmed anything.
	if n := rec.count(); n != 0 {
		t.Fatalf("%d reports before the pong", n)
	}
	other := binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(ping)+1)
	p.answer(t, other)
	p.answer(t, []byte("unsolicited"))
	p.answer(t, ping) // the pongs arrive in order: the wrong ones came first
	waitFor(t, waitTimeout, rec.hasCount(1))
	if got := rec.reports(m); len(got) != 1 || got[0] != nil {
		t.Fatalf("reports %v, want one nil", got)
	}
}

// TestWrittenWhilePingOutIsCoveredByTheNext: at most one ping is out; what
// is written meanwhile is confirmed by the next ping, sent once the first
// is answered.
func TestWrittenWhilePingOutIsCoveredByTheNext(t *testing.T) {
	ts := newTestServer(t, setup{})
	p := ts.openPinger(t, "alice")
	rec := newRecorder(t)
	m1, m2 := rec.message([]byte("one")), rec.message([]byte("two"))
	ts.hub.Route("alice", m1)
	wantMessage(t, p.client, websocket.TextMessage, m1.Data)
	ping1 := p.nextPing(t)
	ts.hub.Route("alice", m2)
	wantMessage(t, p.client, websocket.TextMessage, m2.Data)
	select {
	case b := <-p.pings:
		t.Fatalf("a second ping (%x) while the first was out", b)
	default:
	}
	p.answer(t, ping1)
	waitFor(t, waitTimeout, rec.hasCount(1))
	if got := rec.reports(m2); len(got) != 0 {
		t.Fatalf("m2 reported %v before its ping was answered", got)
	}
	ping2 := p.nextPing(t)
	p.answer(t, ping2)
	waitFor(t, waitTimeout, rec.hasCount(2))
	for _, m := range []*hub.Message{m1, m2} {
		if got := rec.reports(m); len(got) != 1 || got[0] != nil {
			t.Fatalf("%s reports %v, want one nil", m.Data, got)
		}
	}
}

// TestUnresponsiveClosesWith4004: a client that reads but never answers
// pings is closed with 4004 after ConfirmTimeout; what it was sent is
// reported unconfirmed, for a retry, and the close is logged and counted.
func TestUnresponsiveClosesWith4004(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	ts := newTestServer(t, setup{WS: Config{ConfirmTimeout: 200 * time.Millisecond}, Log: zap.New(core)})
	p := ts.openPinger(t, "mute")
	rec := newRecorder(t)
	msgs := []*hub.Message{rec.message([]byte("a")), rec.message([]byte("b"))}
	start := time.Now()
	for _, m := range msgs {
		ts.hub.Route("mute", m)
	}
	wantClose(t, readUntilClose(t, p.client, nil), wire.CloseUnresponsive, wire.CloseUnresponsiveText)
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("closed after %s, before the confirm timeout", took)
	}
	waitFor(t, waitTimeout, rec.hasCount(len(msgs)))
	for _, m := range msgs {
		if got := rec.reports(m); len(got) != 1 || !errors.Is(got[0], hub.ErrUnconfirmed) {
			t.Errorf("%s reports %v, want one hub.ErrUnconfirmed", m.Data, got)
		}
	}
	entries := logs.FilterMessage(evUnresponsive).All()
	if len(entries) != 1 || entries[0].ContextMap()["unconfirmed"] != int64(2) || entries[0].ContextMap()["uid"] != "mute" {
		t.Fatalf("ws.unresponsive log lines %v, want one with uid mute and 2 unconfirmed", entries)
	}
	if got := testutil.ToFloat64(ts.handler.met.unresponsive); got != 1 {
		t.Errorf("unresponsive closes counted %v, want 1", got)
	}
}

// TestHealthyConnectionIsNotHeldBackByADeadOne: a uid with a connection
// that answers and one that does not is reported delivered as soon as the
// healthy one confirms, long before the dead one's confirm timeout.
func TestHealthyConnectionIsNotHeldBackByADeadOne(t *testing.T) {
	ts := newTestServer(t, setup{WS: Config{ConfirmTimeout: time.Minute}})
	healthy := ts.open(t, "both")
	dead := ts.openPinger(t, "both")
	rec := newRecorder(t)
	m := rec.message([]byte("hi"))
	ts.hub.Route("both", m)
	wantMessage(t, healthy, websocket.TextMessage, m.Data)
	wantMessage(t, dead.client, websocket.TextMessage, m.Data)
	waitFor(t, waitTimeout, rec.hasCount(1))
	if got := rec.reports(m); got[0] != nil {
		t.Fatalf("reported %v, want nil", got[0])
	}
}

// TestWriteModeReportsAtWrite: in ConfirmWrite mode the write is enough,
// pong or not.
func TestWriteModeReportsAtWrite(t *testing.T) {
	ts := newTestServer(t, setup{WS: Config{Confirm: ConfirmWrite}})
	p := ts.openPinger(t, "alice")
	rec := newRecorder(t)
	m := rec.message([]byte("hi"))
	ts.hub.Route("alice", m)
	wantMessage(t, p.client, websocket.TextMessage, m.Data)
	waitFor(t, waitTimeout, rec.hasCount(1))
	if got := rec.reports(m); got[0] != nil {
		t.Fatalf("reported %v, want nil", got[0])
	}
}

// TestUnconfirmedCountAgainstTheQueue: a client that never confirms holds
// at most SendQueue messages; the next one finds the queue full.
func TestUnconfirmedCountAgainstTheQueue(t *testing.T) {
	ts := newTestServer(t, setup{WS: Config{SendQueue: 2, ConfirmTimeout: time.Minute}})
	p := ts.openPinger(t, "mute")
	rec := newRecorder(t)
	for _, b := range []string{"one", "two"} {
		m := rec.message([]byte(b))
		ts.hub.Route("mute", m)
		wantMessage(t, p.client, websocket.TextMessage, m.Data)
	}
	third := rec.message([]byte("three"))
	ts.hub.Route("mute", third)
	if got := rec.reports(third); len(got) != 1 || !errors.Is(got[0], hub.ErrQueueFull) {
		t.Fatalf("third reports %v, want hub.ErrQueueFull", got)
	}
	wantClose(t, readUntilClose(t, p.client, nil), wire.CloseSlowClient, wire.CloseSlowClientText)
}

// TestUnconfirmedReportedOnClose: messages written and not confirmed when
// a connection ends for another reason (a kick) are reported failed, not
// lost.
func TestUnconfirmedReportedOnClose(t *testing.T) {
	ts := newTestServer(t, setup{WS: Config{ConfirmTimeout: time.Minute}})
	p := ts.openPinger(t, "alice")
	rec := newRecorder(t)
	m := rec.message([]byte("unanswered"))
	ts.hub.Route("alice", m)
	wantMessage(t, p.client, websocket.TextMessage, m.Data)
	ts.hub.Kick("alice", wire.CloseKicked, wire.CloseKickedText)
	wantClose(t, readUntilClose(t, p.client, nil), wire.CloseKicked, wire.CloseKickedText)
	waitFor(t, waitTimeout, rec.hasCount(1))
	if got := rec.reports(m); got[0] == nil {
		t.Fatal("an unconfirmed message was reported delivered")
	}
}

// TestConfirmationDoesNotAllocate pins the promise that confirming adds no
// per-message allocation: a batch recorded, its pong, the slice reused.
func TestConfirmationDoesNotAllocate(t *testing.T) {
	var f confirmation
	batch := []*hub.Message{{Data: []byte("a")}, {Data: []byte("b")}}
	now := instant(1)
	cycle := func() {
		f.written(batch, f.pingID+1, now)
		done, _, ok := f.ponged(f.pingID)
		if !ok || len(done) != len(batch) {
			t.Fatalf("ponged %d, %v", len(done), ok)
		}
		clear(done)
		f.reuse(done)
	}
	cycle() // the first one sizes the slice
	if allocs := testing.AllocsPerRun(1000, cycle); allocs != 0 {
		t.Fatalf("a confirmed batch allocates %.1f times, want 0", allocs)
	}
	var fb frameBuf
	w := &sink{}
	write := func() {
		_ = fb.add(w, opText, batch[0].Data)
		_ = fb.add(w, opPing, pingPayload(&fb.ping, 7))
		_ = fb.flush(w)
		w.b.Reset()
	}
	write()
	if allocs := testing.AllocsPerRun(1000, write); allocs != 0 {
		t.Fatalf("encoding a batch and its ping allocates %.1f times, want 0", allocs)
	}
}
