package intake

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// clientFrame encodes one frame as a client sends it: masked with key.
func clientFrame(fin bool, op byte, payload []byte, key [4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n <= 0xffff:
		out = append(out, 0x80|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i&3])
	}
	return out
}

// event is what feeding a stream reported, for comparison.
type event struct {
	kind    frameEvent
	payload string // ping or pong payload
	code    int    // close
	reason  string // close
	errCode int    // a protocolError's code; then kind is frameNone
}

// feedAll feeds stream in chunks of the given sizes (cycled; the rest in
// one piece when sizes is empty) and collects the events up to the first
// error or close, checking feed's contract on the way.
func feedAll(t *testing.T, limit int32, stream []byte, sizes []int) []event {
	t.Helper()
	return feedWith(t, frameReader{limit: limit}, stream, sizes)
}

// feedWith is feedAll with a frameReader set up by the caller (collect).
func feedWith(t *testing.T, f frameReader, stream []byte, sizes []int) []event {
	t.Helper()
	return feedInto(t, &f, stream, sizes)
}

// feedInto is feedWith on the caller's frameReader, whose state the caller
// may look at afterwards.
func feedInto(t *testing.T, f *frameReader, stream []byte, sizes []int) []event {
	t.Helper()
	var got []event
	for i := 0; len(stream) > 0; i++ {
		size := len(stream)
		if len(sizes) > 0 {
			size = min(sizes[i%len(sizes)], len(stream))
		}
		chunk := stream[:size]
		stream = stream[size:]
		for len(chunk) > 0 {
			ev, n, err := f.feed(chunk)
			if n < 0 || n > len(chunk) {
				t.Fatalf("feed consumed %d of %d bytes", n, len(chunk))
			}
			if err != nil {
				var pe *protocolError
				if !errors.As(err, &pe) {
					t.Fatalf("feed error %v is not a *protocolError", err)
				}
				return append(got, event{errCode: pe.Code})
			}
			if ev == frameNone && n != len(chunk) {
				t.Fatalf("feed returned no event after %d of %d bytes", n, len(chunk))
			}
			chunk = chunk[n:]
			switch ev {
			case framePing, framePong:
				got = append(got, event{kind: ev, payload: string(f.control())})
				f.release()
			case frameClose:
				// Reading ends here, as Reader.feed's does.
				code, reason := f.closeFrame()
				f.release()
				return append(got, event{kind: ev, code: code, reason: reason})
			case frameMessage:
				text, payload := f.message()
				got = append(got, event{kind: ev, payload: string(payload), code: map[bool]int{true: opText, false: opBinary}[text]})
				f.releaseMessage()
			}
		}
	}
	return got
}

func TestFrameReader(t *testing.T) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	closePayload := func(code int, reason string) []byte { return websocket.FormatCloseMessage(code, reason) }
	big := bytes.Repeat([]byte("y"), 70_000) // a 64-bit length
	tests := []struct {
		name   string
		limit  int32
		stream []byte
		want   []event
	}{
		{name: "pong, then ping with payload", stream: cat(
			clientFrame(true, opPong, []byte("p"), key),
			clientFrame(true, opPing, []byte("hello"), key)),
			want: []event{{kind: framePong, payload: "p"}, {kind: framePing, payload: "hello"}}},
		{name: "empty ping", stream: clientFrame(true, opPing, nil, key),
			want: []event{{kind: framePing}}},
		{name: "empty pong", stream: clientFrame(true, opPong, nil, key),
			want: []event{{kind: framePong}}},
		{name: "messages are discarded, a ping between fragments is answered", stream: cat(
			clientFrame(true, opText, []byte("one"), key),
			clientFrame(false, opBinary, []byte("two-a"), key),
			clientFrame(true, opPing, []byte("mid"), key),
			clientFrame(true, opContinuation, []byte("two-b"), key),
			clientFrame(true, opText, nil, key)),
			want: []event{{kind: framePing, payload: "mid"}}},
		{name: "close with code and reason", stream: clientFrame(true, opClose, closePayload(4000, "bye ✓"), key),
			want: []event{{kind: frameClose, code: 4000, reason: "bye ✓"}}},
		{name: "close without payload is 1005", stream: clientFrame(true, opClose, nil, key),
			want: []event{{kind: frameClose, code: websocket.CloseNoStatusReceived}}},
		{name: "16-bit and 64-bit lengths", limit: 1 << 20, stream: cat(
			clientFrame(true, opBinary, bytes.Repeat([]byte("x"), 300), key),
			clientFrame(true, opBinary, big, key),
			clientFrame(true, opPing, []byte("after"), key)),
			want: []event{{kind: framePing, payload: "after"}}},
		{name: "a message of exactly the limit", limit: 10, stream: cat(
			clientFrame(false, opText, []byte("12345"), key),
			clientFrame(true, opContinuation, []byte("67890"), key),
			clientFrame(true, opText, []byte("1234567890"), key),
			clientFrame(true, opPing, nil, key)),
			want: []event{{kind: framePing}}},

		{name: "one frame over the limit", limit: 10, stream: clientFrame(true, opText, []byte("12345678901"), key),
			want: []event{{errCode: websocket.CloseMessageTooBig}}},
		{name: "fragments over the limit", limit: 10, stream: cat(
			clientFrame(false, opText, []byte("123456"), key),
			clientFrame(true, opContinuation, []byte("789012"), key)),
			want: []event{{errCode: websocket.CloseMessageTooBig}}},
		{name: "unmasked", stream: []byte{0x81, 0x01, 'x'},
			want: []event{{errCode: websocket.CloseProtocolError}}},
		{name: "RSV1 set (no compression was negotiated)", stream: append([]byte{0xc1}, clientFrame(true, opText, []byte("x"), key)[1:]...),
			want: []event{{errCode: websocket.CloseProtocolError}}},
		{name: "unknown opcode", stream: clientFrame(true, 3, nil, key),
			want: []event{{errCode: websocket.CloseProtocolError}}},
		{name: "fragmented ping", stream: clientFrame(false, opPing, nil, key),
			want: []event{{errCode: websocket.CloseProtocolError}}},
		{name: "control frame of 126 bytes", stream: clientFrame(true, opPing, bytes.Repeat([]byte("z"), 126), key),
			want: []event{{errCode: websocket.CloseProtocolError}}},
		{name: "continuation outside a message", stream: clientFrame(true, opContinuation, []byte("x"), key),
			want: []event{{errCode: websocket.CloseProtocolError}}},
		{name: "new message inside a fragmented one", stream: cat(
			clientFrame(false, opText, []byte("a"), key),
			clientFrame(true, opText, []byte("b"), key)),
			want: []event{{errCode: websocket.CloseProtocolError}}},
		{name: "64-bit length with the top bit", stream: []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4},
			want: []event{{errCode: websocket.CloseProtocolError}}},
		{name: "close with a 1-byte payload", stream: clientFrame(true, opClose, []byte{3}, key),
			want: []event{{errCode: websocket.CloseProtocolError}}},
		{name: "close with code 1005, which only a receiver may report", stream: clientFrame(true, opClose, []byte{0x03, 0xed}, key),
			want: []event{{errCode: websocket.CloseProtocolError}}},
		{name: "close with a reason that is not UTF-8", stream: clientFrame(true, opClose, append(closePayload(1000, ""), 0xff), key),
			want: []event{{errCode: websocket.CloseProtocolError}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := tt.limit
			if limit == 0 {
				limit = 4096
			}
			// Whole, a byte at a time, and in odd pieces: the same events.
			for _, sizes := range [][]int{nil, {1}, {3, 7, 2}, {13}} {
				got := feedAll(t, limit, tt.stream, sizes)
				if !equalEvents(got, tt.want) {
					t.Fatalf("chunks %v: events %+v, want %+v", sizes, got, tt.want)
				}
			}
		})
	}
}

func equalEvents(a, b []event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFrameReaderRandomStreams: random valid streams of messages (some
// fragmented), pings, pongs and a final close, cut into random pieces,
// report exactly the pings, the pongs and the close they contain.
func TestFrameReaderRandomStreams(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		var stream []byte
		var want []event
		for range 1 + rng.IntN(20) {
			var key [4]byte
			binary.LittleEndian.PutUint32(key[:], rng.Uint32())
			payload := make([]byte, rng.IntN(126))
			for i := range payload {
				payload[i] = byte(rng.IntN(256))
			}
			switch rng.IntN(4) {
			case 0:
				stream = append(stream, clientFrame(true, opPing, payload, key)...)
				want = append(want, event{kind: framePing, payload: string(payload)})
			case 1:
				stream = append(stream, clientFrame(true, opPong, payload, key)...)
				want = append(want, event{kind: framePong, payload: string(payload)})
			case 2:
				stream = append(stream, clientFrame(true, opBinary, payload, key)...)
			case 3:
				stream = append(stream, clientFrame(false, opText, payload, key)...)
				stream = append(stream, clientFrame(true, opContinuation, payload, key)...)
			}
		}
		stream = append(stream, clientFrame(true, opClose, websocket.FormatCloseMessage(1000, "done"), [4]byte{9, 8, 7, 6})...)
		want = append(want, event{kind: frameClose, code: 1000, reason: "done"})
		sizes := make([]int, 1+rng.IntN(5))
		for i := range sizes {
			sizes[i] = 1 + rng.IntN(40)
		}
		if got := feedAll(t, 4096, stream, sizes); !equalEvents(got, want) {
			t.Fatalf("chunks %v: events %+v, want %+v", sizes, got, want)
		}
	}
}

// FuzzFrameReader: any bytes, in any chunking, give the same events and
// never a panic, never a control payload over 125 bytes, and never a
// close code a client may not send.
func FuzzFrameReader(f *testing.F) {
	key := [4]byte{1, 2, 3, 4}
	f.Add(clientFrame(true, opPing, []byte("hi"), key), uint8(1))
	f.Add(clientFrame(true, opClose, websocket.FormatCloseMessage(1001, "x"), key), uint8(3))
	f.Add(append(clientFrame(false, opText, []byte("ab"), key), clientFrame(true, opContinuation, []byte("cd"), key)...), uint8(2))
	f.Add([]byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, uint8(5))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		for _, collect := range []bool{false, true} {
			whole := feedWith(t, frameReader{limit: 64, collect: collect}, stream, nil)
			pieces := feedWith(t, frameReader{limit: 64, collect: collect}, stream, []int{int(chunk%16) + 1})
			if !equalEvents(whole, pieces) {
				t.Fatalf("collect %v: whole %+v, in pieces of %d %+v", collect, whole, chunk%16+1, pieces)
			}
			for _, ev := range whole {
				checkEvent(t, ev, collect)
			}
		}
	})
}

// checkEvent holds one event to the reader's promises.
func checkEvent(t *testing.T, ev event, collect bool) {
	t.Helper()
	switch ev.kind {
	case framePing, framePong, frameClose:
		if len(ev.payload) > maxControl || len(ev.reason) > maxControl-2 {
			t.Fatalf("control payload over 125 bytes: %+v", ev)
		}
		if ev.kind == frameClose && ev.code != websocket.CloseNoStatusReceived && !validCloseCode(ev.code) {
			t.Fatalf("close code %d passed", ev.code)
		}
	case frameMessage:
		if !collect || len(ev.payload) > 64 || ev.code == opText && !utf8.ValidString(ev.payload) {
			t.Fatalf("message reported: %+v (collect %v)", ev, collect)
		}
	}
}

// TestPongDoesNotAllocate: a pong comes back for every batch pusher
// writes, so reading one must not allocate.
func TestPongDoesNotAllocate(t *testing.T) {
	frame := clientFrame(true, opPong, []byte{0, 0, 0, 0, 0, 0, 0, 42}, [4]byte{1, 2, 3, 4})
	f := frameReader{limit: 4096}
	read := func() {
		ev, n, err := f.feed(frame)
		if ev != framePong || n != len(frame) || err != nil || len(f.control()) != 8 || f.control()[7] != 42 {
			t.Fatalf("feed = %v, %d, %v, payload %x", ev, n, err, f.control())
		}
		f.release()
	}
	if allocs := testing.AllocsPerRun(1000, read); allocs != 0 {
		t.Fatalf("reading a pong allocates %.1f times, want 0", allocs)
	}
}

// TestFrameReaderCollects: with collect set (pusher.v1 clients) a data
// message is reassembled from its fragments, control frames in between
// included, unmasked, and reported once its last frame ended; a text
// message must be UTF-8 (1007); the limit holds over the whole message.
func TestFrameReaderCollects(t *testing.T) {
	key := [4]byte{0x01, 0x02, 0x03, 0x04}
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	tests := []struct {
		name   string
		stream []byte
		want   []event
	}{
		{name: "text", stream: clientFrame(true, opText, []byte(`{"ack":[1]}`), key),
			want: []event{{kind: frameMessage, payload: `{"ack":[1]}`, code: opText}}},
		{name: "binary, not UTF-8", stream: clientFrame(true, opBinary, []byte{0xff, 0xfe}, key),
			want: []event{{kind: frameMessage, payload: "\xff\xfe", code: opBinary}}},
		{name: "fragments with a ping between", stream: cat(
			clientFrame(false, opText, []byte(`{"ack":`), key),
			clientFrame(true, opPing, []byte("p"), key),
			clientFrame(false, opContinuation, []byte(`[1,`), key),
			clientFrame(true, opContinuation, []byte(`2]}`), key)),
			want: []event{{kind: framePing, payload: "p"}, {kind: frameMessage, payload: `{"ack":[1,2]}`, code: opText}}},
		{name: "two messages", stream: cat(
			clientFrame(true, opText, []byte("a"), key),
			clientFrame(true, opText, []byte("b"), key)),
			want: []event{{kind: frameMessage, payload: "a", code: opText}, {kind: frameMessage, payload: "b", code: opText}}},
		{name: "text not UTF-8", stream: clientFrame(true, opText, []byte("ok \xff"), key),
			want: []event{{errCode: websocket.CloseInvalidFramePayloadData}}},
		{name: "text not UTF-8 across fragments", stream: cat(
			clientFrame(false, opText, []byte("\xe4\xb8"), key),
			clientFrame(true, opContinuation, []byte("x"), key)),
			want: []event{{errCode: websocket.CloseInvalidFramePayloadData}}},
		{name: "a rune split across fragments is fine", stream: cat(
			clientFrame(false, opText, []byte("\xe4\xb8"), key),
			clientFrame(true, opContinuation, []byte("\x96"), key)),
			want: []event{{kind: frameMessage, payload: "\xe4\xb8\x96", code: opText}}},
		{name: "over the limit in fragments", stream: cat(
			clientFrame(false, opText, []byte("1234567890"), key),
			clientFrame(true, opContinuation, []byte("1234567"), key)),
			want: []event{{errCode: websocket.CloseMessageTooBig}}},
	}
	for _, tt := range tests {
		for _, sizes := range [][]int{nil, {1}, {3, 7}} {
			t.Run(fmt.Sprintf("%s/chunks %v", tt.name, sizes), func(t *testing.T) {
				got := feedWith(t, frameReader{limit: 16, collect: true}, tt.stream, sizes)
				if !equalEvents(got, tt.want) {
					t.Fatalf("events %+v, want %+v", got, tt.want)
				}
			})
		}
	}
}
