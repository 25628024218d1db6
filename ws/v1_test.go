package ws

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
)

// v1Dialer asks for pusher.v1.
func v1Dialer() *websocket.Dialer {
	d := dialer(0)
	d.Subprotocols = []string{Subprotocol}
	return d
}

// openV1 connects uid with pusher.v1 as a reading client.
func (ts *testServer) openV1(tb testing.TB, uid string) *client {
	tb.Helper()
	c := ts.connectWith(tb, v1Dialer(), uid)
	if got := c.Subprotocol(); got != Subprotocol {
		tb.Fatalf("negotiated subprotocol %q, want %q", got, Subprotocol)
	}
	return pump(c)
}

// envelope is a pusher.v1 server frame as a client decodes it.
type envelope struct {
	Seq     uint64 `json:"seq"`
	Data    string `json:"data"`
	DataB64 string `json:"data_b64"`
	ID      string `json:"id"`
	TS      string `json:"ts"`
	Type    string `json:"type"`
	Error   string `json:"error"`
	Exp     int64  `json:"exp"`
}

// nextFrame reads the next server frame, which must be a JSON text frame
// with no other keys than envelope's.
func nextFrame(tb testing.TB, c *client) envelope {
	tb.Helper()
	typ, b, err := readMessage(c)
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		tb.Fatalf("frame type %d (%q), want text", typ, short(b))
	}
	var e envelope
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		tb.Fatalf("frame %s: %v", b, err)
	}
	return e
}

// send writes a text frame from the client.
func send(tb testing.TB, c *client, frame string) {
	tb.Helper()
	if err := c.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
		tb.Fatalf("write %s: %v", frame, err)
	}
}

// ack acks seqs.
func ack(tb testing.TB, c *client, seqs ...uint64) {
	tb.Helper()
	b, _ := json.Marshal(map[string][]uint64{"ack": seqs})
	send(tb, c, string(b))
}

// TestV1Negotiation: pusher.v1 is granted to a client that lists it among
// others; a client that asks for nothing, or only for protocols pusher
// does not speak, gets raw frames, as before.
func TestV1Negotiation(t *testing.T) {
	ts := newTestServer(t, setup{})
	for _, tt := range []struct {
		name  string
		give  []string
		want  string
		frame string
	}{
		{name: "none", give: nil, want: "", frame: "hi"},
		{name: "unknown only", give: []string{"mqtt"}, want: "", frame: "hi"},
		{name: "among others", give: []string{"mqtt", Subprotocol}, want: Subprotocol, frame: `{"seq":7,"data":"hi"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := dialer(0)
			d.Subprotocols = tt.give
			c, resp, err := ts.dial(t, d, bearer(signToken(t, "neg", time.Hour)), "")
			if err != nil {
				t.Fatalf("dial: %v (%s)", err, describe(resp))
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tt.want {
				t.Fatalf("Sec-WebSocket-Protocol %q, want %q", got, tt.want)
			}
			p := pump(c)
			waitFor(t, waitTimeout, ts.hasConns(1))
			ts.hub.Route("neg", &hub.Message{Data: []byte("hi"), Seq: 7, Reporter: newRecorder(t)})
			wantMessage(t, p, websocket.TextMessage, []byte(tt.frame))
			_ = c.Close()
			waitFor(t, waitTimeout, ts.hasConns(0))
		})
	}
}

// TestV1Envelope: each message is one JSON text frame: UTF-8 payloads as
// "data" (escaped as JSON needs, nothing else), others as "data_b64";
// "id" and "ts" only when known; ts in UTC with milliseconds.
func TestV1Envelope(t *testing.T) {
	ts := newTestServer(t, setup{})
	c := ts.openV1(t, "env")
	published := time.Date(2026, 11, 30, 11, 2, 3, 456_789_000, time.FixedZone("CET", 3600))
	rec := newRecorder(t)
	tests := []struct {
		give *hub.Message
		want string
	}{
		{&hub.Message{Data: []byte("Hello"), Seq: 1}, `{"seq":1,"data":"Hello"}`},
		{&hub.Message{Data: []byte("a \"q\" \\ \n\t\x01 é 😀 </script>"), Seq: 2},
			`{"seq":2,"data":"a \"q\" \\ \n\t\u0001 é 😀 </script>"}`},
		{&hub.Message{Data: []byte{0xff, 0x00, 'x'}, Binary: true, Seq: 3}, `{"seq":3,"data_b64":"/wB4"}`},
		{&hub.Message{Data: []byte(""), Seq: 4, ID: "order-\"9\"", Published: published},
			`{"seq":4,"data":"","id":"order-\"9\"","ts":"2026-11-30T10:02:03.456Z"}`},
	}
	for _, tt := range tests {
		tt.give.Reporter = rec
		ts.hub.Route("env", tt.give)
		wantMessage(t, c, websocket.TextMessage, []byte(tt.want))
	}
}

// TestV1AckConfirms: on pusher.v1 only the ack confirms, not the pongs the
// client's WebSocket answers by itself; an ack for a seq not awaited
// confirms nothing; one frame may ack several.
func TestV1AckConfirms(t *testing.T) {
	ts := newTestServer(t, setup{WS: Config{ConfirmTimeout: time.Minute, PingInterval: 50 * time.Millisecond}})
	raw := ts.connectWith(t, v1Dialer(), "acker")
	pings := make(chan struct{}, 16)
	raw.SetPingHandler(func(data string) error {
		select {
		case pings <- struct{}{}:
		default:
		}
		return raw.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(waitTimeout))
	})
	c := pump(raw)
	rec := newRecorder(t)
	m1 := &hub.Message{Data: []byte("one"), Seq: 11, Reporter: rec}
	m2 := &hub.Message{Data: []byte("two"), Seq: 12, Reporter: rec}
	m3 := &hub.Message{Data: []byte("three"), Seq: 13, Reporter: rec}
	for _, m := range []*hub.Message{m1, m2, m3} {
		ts.hub.Route("acker", m)
		if e := nextFrame(t, c); e.Seq != m.Seq {
			t.Fatalf("got seq %d, want %d", e.Seq, m.Seq)
		}
	}
	for range 2 { // keepalive pings come and are answered
		select {
		case <-pings:
		case <-time.After(waitTimeout):
			t.Fatal("no keepalive ping")
		}
	}
	ack(t, c, 99)
	// Frames are handled in order: once the answer to this refresh is
	// back, the ack for 99 has been handled.
	send(t, c, `{"refresh":"not-a-token"}`)
	if e := nextFrame(t, c); e.Type != "error" {
		t.Fatalf("answer to a bad refresh %+v, want an error frame", e)
	}
	if n := rec.count(); n != 0 {
		t.Fatalf("%d reports before any ack of ours", n)
	}
	ack(t, c, 11, 13)
	waitFor(t, waitTimeout, rec.hasCount(2))
	ack(t, c, 12, 11) // 11 again: confirms nothing more
	waitFor(t, waitTimeout, rec.hasCount(3))
	for _, m := range []*hub.Message{m1, m2, m3} {
		if got := rec.reports(m); len(got) != 1 || got[0] != nil {
			t.Fatalf("seq %d reports %v, want one nil", m.Seq, got)
		}
	}
}

// TestV1UnackedClosesWith4004: a pusher.v1 client that reads and answers
// pings but does not ack is closed with 4004 after ConfirmTimeout; what
// it was sent is reported unconfirmed.
func TestV1UnackedClosesWith4004(t *testing.T) {
	ts := newTestServer(t, setup{WS: Config{ConfirmTimeout: 200 * time.Millisecond}})
	c := ts.openV1(t, "forgetful")
	rec := newRecorder(t)
	m := &hub.Message{Data: []byte("x"), Seq: 1, Reporter: rec}
	start := time.Now()
	ts.hub.Route("forgetful", m)
	wantClose(t, readUntilClose(t, c, nil), wire.CloseUnresponsive, wire.CloseUnresponsiveText)
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("closed after %s, before the confirm timeout", took)
	}
	waitFor(t, waitTimeout, rec.hasCount(1))
	if got := rec.reports(m); !errors.Is(got[0], hub.ErrUnconfirmed) {
		t.Fatalf("reported %v, want hub.ErrUnconfirmed", got[0])
	}
}

// TestV1AckModeIgnoresWriteConfig: a pusher.v1 client asked for acks, so
// even a server in ConfirmWrite mode waits for them.
func TestV1AckModeIgnoresWriteConfig(t *testing.T) {
	ts := newTestServer(t, setup{WS: Config{Confirm: ConfirmWrite, ConfirmTimeout: time.Minute}})
	c := ts.openV1(t, "acker")
	rec := newRecorder(t)
	m := &hub.Message{Data: []byte("x"), Seq: 5, Reporter: rec}
	ts.hub.Route("acker", m)
	nextFrame(t, c)
	send(t, c, `{"refresh":"x"}`)
	nextFrame(t, c)
	if n := rec.count(); n != 0 {
		t.Fatalf("reported at write on a pusher.v1 connection")
	}
	ack(t, c, 5)
	waitFor(t, waitTimeout, rec.hasCount(1))
}

// TestV1Refresh: a token for the same uid moves the expiry (the
// connection outlives the first token) and is answered "refreshed" with
// the new exp; a token for another uid, or a bad one, gets an error frame
// and changes nothing: the first token's expiry still closes with 4003.
func TestV1Refresh(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		giveToken func(t *testing.T) string
		wantErr   string // "" for a refresh that works
	}{
		{"same uid", func(t *testing.T) string { return signToken(t, "alice", time.Hour) }, ""},
		{"other uid", func(t *testing.T) string { return signToken(t, "mallory", time.Hour) }, "refresh: token is for another user"},
		{"expired", func(*testing.T) string {
			tok, _ := auth.Sign(testSecret, "alice", time.Second, time.Now().Add(-time.Hour))
			return tok
		}, "refresh: token expired"},
		{"garbage", func(*testing.T) string { return "abc.def.ghi" }, "refresh: invalid token"},
		{"too large", func(*testing.T) string { return strings.Repeat("a", 3000) }, "refresh: token too large"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A small token limit, for the "too large" case: the default
			// (8 KiB) is more than a client frame may carry (4 KiB).
			ts := newTestServer(t, setup{Auth: auth.Config{MaxTokenBytes: 2048}})
			start := time.Now()
			tok, err := auth.Sign(testSecret, "alice", 2*time.Second, start)
			if err != nil {
				t.Fatal(err)
			}
			firstExp := start.Add(2 * time.Second).Truncate(time.Second)
			c, resp, err := ts.dial(t, v1Dialer(), bearer(tok), "")
			if err != nil {
				t.Fatalf("dial: %v (%s)", err, describe(resp))
			}
			p := pump(c)
			newTok := tt.giveToken(t)
			b, _ := json.Marshal(map[string]string{"refresh": newTok})
			send(t, p, string(b))
			e := nextFrame(t, p)
			if tt.wantErr != "" {
				if e.Type != "error" || e.Error != tt.wantErr {
					t.Fatalf("answer %+v, want error %q", e, tt.wantErr)
				}
				wantClose(t, readUntilClose(t, p, nil), wire.CloseTokenExpired, wire.CloseTokenExpiredText)
				if time.Now().Before(firstExp) {
					t.Fatalf("closed before the first token's exp")
				}
				return
			}
			if e.Type != "refreshed" || e.Exp < time.Now().Add(59*time.Minute).Unix() {
				t.Fatalf("answer %+v, want refreshed with exp an hour away", e)
			}
			// Past the first token's expiry (and the leeway the upgrade
			// allows), the connection still delivers.
			time.Sleep(time.Until(firstExp.Add(time.Second)))
			ts.hub.Route("alice", &hub.Message{Data: []byte("still here"), Seq: 1, Reporter: newRecorder(t)})
			if e := nextFrame(t, p); e.Data != "still here" {
				t.Fatalf("got %+v after the first exp, want the message", e)
			}
		})
	}
}

// TestV1Violations: what a pusher.v1 client must not send closes its
// connection with the code RFC 6455 names and a reason; what it was sent
// and had not acked is reported failed, for a retry.
func TestV1Violations(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode.name, func(t *testing.T) {
			ts := newTestServer(t, setup{WS: Config{ConfirmTimeout: time.Minute}, GoroutineReaders: mode.goroutines})
			for _, tt := range []struct {
				name       string
				giveType   int
				give       string
				wantCode   int
				wantReason string
			}{
				{"binary", websocket.BinaryMessage, `{"ack":[1]}`, closePolicy, "pusher.v1 frames are JSON text"},
				{"not json", websocket.TextMessage, `ack 1`, closePolicy, errNotJSON.Error()},
				{"two values", websocket.TextMessage, `{"ack":[1]}{"ack":[2]}`, closePolicy, errNotJSON.Error()},
				{"unknown key", websocket.TextMessage, `{"nack":[1]}`, closePolicy, errFrameShape.Error()},
				{"both keys", websocket.TextMessage, `{"ack":[1],"refresh":"t"}`, closePolicy, errFrameShape.Error()},
				{"negative seq", websocket.TextMessage, `{"ack":[-1]}`, closePolicy, errFrameShape.Error()},
				{"empty refresh", websocket.TextMessage, `{"refresh":""}`, closePolicy, errFrameShape.Error()},
				{"invalid utf-8", websocket.TextMessage, "{\"refresh\":\"\xff\"}", 1007, "text message is not UTF-8"},
			} {
				t.Run(tt.name, func(t *testing.T) {
					uid := "v-" + strings.ReplaceAll(tt.name, " ", "-")
					c := ts.openV1(t, uid)
					rec := newRecorder(t)
					m := &hub.Message{Data: []byte("unacked"), Seq: 3, Reporter: rec}
					ts.hub.Route(uid, m)
					nextFrame(t, c)
					if err := c.WriteMessage(tt.giveType, []byte(tt.give)); err != nil {
						t.Fatal(err)
					}
					wantClose(t, readUntilClose(t, c, nil), tt.wantCode, tt.wantReason)
					waitFor(t, waitTimeout, rec.hasCount(1))
					if got := rec.reports(m); got[0] == nil {
						t.Fatal("an unacked message was reported delivered")
					}
				})
			}
		})
	}
}

// TestRawClientsDataIgnored: a raw client's data frames are read and
// dropped, as before pusher.v1, even ones that look like acks.
func TestRawClientsDataIgnored(t *testing.T) {
	ts := newTestServer(t, setup{WS: Config{Confirm: ConfirmWrite}})
	c := ts.open(t, "raw")
	send(t, c, `{"ack":[1]}`)
	send(t, c, "not json at all")
	if err := c.WriteMessage(websocket.BinaryMessage, []byte{0xff}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(t)
	m := rec.message([]byte("still open"))
	ts.hub.Route("raw", m)
	wantMessage(t, c, websocket.TextMessage, m.Data)
	waitFor(t, waitTimeout, rec.hasCount(1))
}

// FuzzClientFrame holds the scanner to encoding/json: whatever the fast
// path accepts, encoding/json accepts with the same token and seqs, and
// parseClientFrame never panics.
func FuzzClientFrame(f *testing.F) {
	for _, s := range []string{
		`{"ack":[1,2,3]}`, `{ "ack" : [ 18446744073709551615 ] }`, `{"ack":[]}`,
		`{"refresh":"a.b.c"}`, `{"refresh":"a\u002eb"}`, `{"ack":[1.0]}`, `{"ack":[01]}`,
		`{"ack":[18446744073709551616]}`, `{"ACK":[1]}`, `{"ack":[1],}`, `{"ack":[1]} `,
		`{"ack":null}`, `{"refresh":null}`, `[]`, `{}`, ``, `{"ack":[1e2]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, slow []uint64
		tokFast, ok := scanClientFrame(b, func(s uint64) { fast = append(fast, s) })
		tokSlow, err := decodeClientFrame(b, func(s uint64) { slow = append(slow, s) })
		if !ok {
			if fast != nil {
				t.Fatalf("scanner gave up on %q after acking %v", b, fast)
			}
			return
		}
		if err != nil {
			t.Fatalf("scanner accepted %q (token %q, acks %v); encoding/json: %v", b, tokFast, fast, err)
		}
		if tokFast != tokSlow || fmt.Sprint(fast) != fmt.Sprint(slow) {
			t.Fatalf("%q: scanner token %q acks %v; encoding/json token %q acks %v", b, tokFast, fast, tokSlow, slow)
		}
	})
}

// FuzzEnvelope: every envelope is JSON that decodes back to the message:
// the payload (text or base64), seq and id.
func FuzzEnvelope(f *testing.F) {
	f.Add([]byte("Hello"), false, uint64(1), "")
	f.Add([]byte("\x00\"\\\u2028\U0001F600"), false, uint64(1<<63), "id\x7f")
	f.Add([]byte{0xff, 0xfe}, true, uint64(0), "x")
	f.Fuzz(func(t *testing.T, data []byte, binary bool, seq uint64, id string) {
		if !binary && !utf8.Valid(data) || !utf8.Valid([]byte(id)) {
			return // the consumer sends such payloads as binary; ids are headers, checked on the way in
		}
		m := &hub.Message{Data: data, Binary: binary, Seq: seq, ID: id, Published: time.Unix(1e9, 5e6)}
		b := appendEnvelope(nil, m)
		var e envelope
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("envelope %q is not JSON: %v", b, err)
		}
		got := []byte(e.Data)
		if binary {
			var err error
			if got, err = base64.StdEncoding.DecodeString(e.DataB64); err != nil {
				t.Fatal(err)
			}
		}
		if string(got) != string(data) || e.Seq != seq || e.ID != id || e.TS != "2001-09-09T01:46:40.005Z" {
			t.Fatalf("envelope %s decodes to %+v, want data %q seq %d id %q", b, e, data, seq, id)
		}
	})
}

// TestV1HotPathDoesNotAllocate: an envelope into a warm buffer and an ack
// frame through the fast path allocate nothing.
func TestV1HotPathDoesNotAllocate(t *testing.T) {
	m := &hub.Message{Data: []byte("Hello, \"world\""), Seq: 123456, ID: "abc", Published: time.Now()}
	buf := appendEnvelope(nil, m)
	if allocs := testing.AllocsPerRun(1000, func() { buf = appendEnvelope(buf[:0], m) }); allocs != 0 {
		t.Errorf("an envelope allocates %.1f times, want 0", allocs)
	}
	frame := []byte(`{"ack":[123456,123457,123458]}`)
	var sum uint64
	onAck := func(seq uint64) { sum += seq }
	if allocs := testing.AllocsPerRun(1000, func() {
		if _, err := parseClientFrame(frame, onAck); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Errorf("an ack frame allocates %.1f times, want 0", allocs)
	}
}
