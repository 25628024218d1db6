package intake

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// The same client bytes to pusher's frameReader and to gorilla's reader
// (a server-side *websocket.Conn): the same messages, pings, pongs, close
// and error class, but for the differences listed here, each told apart
// by a precise test of the stream, none a bug in pusher:
//
//   - gorilla's reader does not check that text messages are UTF-8 (its
//     examples/autobahn server does, after ReadMessage); pusher's collect
//     mode does (1007). Compared modulo that: where pusher fails with
//     1007, gorilla returns that text message, and is not followed further.
//   - diffCloseOneByte: a close frame with a 1-byte payload. pusher fails
//     (1002), as RFC 6455 5.5.1 and Autobahn 7.3.2 ask; gorilla reports a
//     close without status (1005). gorilla is lenient.
//   - diffClose1014: close code 1014 (Bad Gateway), registered with IANA
//     after RFC 6455. pusher accepts it; gorilla's table of codes predates
//     it and fails the connection (1002). gorilla is out of date; Autobahn
//     no longer tests it (its 7.9 list dropped 1014).
//   - diffLengthTopBit: a 64-bit length with its top bit set, which RFC
//     6455 5.2 forbids. pusher fails with 1002 once the header is whole;
//     gorilla returns ErrReadLimit as soon as the length is read, without a
//     close frame. Both refuse it; pusher's code says why.
//   - diffLengthOverflow: a fragment whose 64-bit length overflows the
//     message's running total. pusher fails with 1009, as for any message
//     over the limit; gorilla returns ErrReadLimit without a close frame.
//     Both refuse it; gorilla's client is left without a close code.

// gorillaEnd is how gorilla's reading ended.
type gorillaEnd struct {
	closeCode int  // the close frame gorilla wrote on a protocol error; 0: none
	readLimit bool // it returned ErrReadLimit
	eof       bool // the stream ended first
}

// readGorilla reads stream as a gorilla server reads a client: through
// Upgrader.Upgrade, with SetReadLimit(limit), ReadMessage until an
// error, and handlers that record pings and pongs. The events use
// pusher's shapes; a close gorilla wrote on an error becomes the error's
// code.
func readGorilla(t *testing.T, stream []byte, limit int64) ([]event, gorillaEnd) {
	t.Helper()
	nc := &memConn{r: bytes.NewReader(stream)}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	c, err := up.Upgrade(&hijacker{nc: nc}, r, nil)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	nc.w.Reset() // the handshake's response
	c.SetReadLimit(limit)
	var got []event
	c.SetPingHandler(func(p string) error { got = append(got, event{kind: framePing, payload: p}); return nil })
	c.SetPongHandler(func(p string) error { got = append(got, event{kind: framePong, payload: p}); return nil })
	c.SetCloseHandler(func(int, string) error { return nil })
	for {
		mt, p, err := c.ReadMessage()
		if err == nil {
			got = append(got, event{kind: frameMessage, payload: string(p), code: mt})
			continue
		}
		var ce *websocket.CloseError
		switch {
		case errors.As(err, &ce) && ce.Code == websocket.CloseAbnormalClosure:
			// gorilla's "unexpected EOF": no close frame can carry 1006.
			return got, gorillaEnd{eof: true}
		case errors.As(err, &ce):
			return append(got, event{kind: frameClose, code: ce.Code, reason: ce.Text}), gorillaEnd{}
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
			return got, gorillaEnd{eof: true}
		}
		end := gorillaEnd{readLimit: errors.Is(err, websocket.ErrReadLimit)}
		if w := nc.w.Bytes(); len(w) > 0 {
			if len(w) < 4 || w[0] != 0x88 || int(w[1]) != len(w)-2 {
				t.Fatalf("gorilla wrote % x after %v, not one close frame", w, err)
			}
			end.closeCode = int(binary.BigEndian.Uint16(w[2:]))
		}
		if end.closeCode == 0 && !end.readLimit {
			t.Fatalf("gorilla failed without a close frame: %v", err)
		}
		if end.closeCode != 0 {
			got = append(got, event{errCode: end.closeCode})
		}
		return got, end
	}
}

// memConn is a net.Conn whose reads come from r and whose writes are kept.
type memConn struct {
	r *bytes.Reader
	w bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
func (h *hijacker) Header() http.Header             { return http.Header{} }
func (h *hijacker) Write(p []byte) (int, error)     { return len(p), nil }
func (h *hijacker) WriteHeader(int)                 {}
func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return h.nc, bufio.NewReadWriter(bufio.NewReader(h.nc), bufio.NewWriter(h.nc)), nil
}

// hijacker is the http.ResponseWriter gorilla's Upgrade hijacks.
type hijacker struct{ nc net.Conn }

// Known differences between the readers (see the top of this file).
const (
	diffNone = iota
	diffUTF8
	diffCloseOneByte
	diffClose1014
	diffLengthTopBit
	diffLengthOverflow
)

var diffNames = map[int]string{diffNone: "none", diffUTF8: "UTF-8", diffCloseOneByte: "1-byte close",
	diffClose1014: "close 1014", diffLengthTopBit: "length top bit", diffLengthOverflow: "length overflow"}

// compareWithGorilla feeds stream to pusher's reader (collect mode, in
// chunks of chunk bytes) and to gorilla's, fails t where they differ
// other than as listed, and returns which listed difference it met.
func compareWithGorilla(t *testing.T, stream []byte, limit int32, chunk int) int {
	t.Helper()
	f := frameReader{limit: limit, collect: true}
	p := feedInto(t, &f, stream, []int{chunk})
	g, gEnd := readGorilla(t, stream, int64(limit))
	diff := explainDiff(&f, p, g, gEnd)
	if diff == diffNone && !equalEvents(p, g) {
		t.Fatalf("pusher and gorilla differ (limit %d, chunks of %d):\npusher:  %s\ngorilla: %s (%+v)\nstream: % x",
			limit, chunk, showEvents(p), showEvents(g), gEnd, stream)
	}
	// Without collect (raw clients) pusher skips messages unread and
	// checks no UTF-8, as gorilla's reader does: the same, messages left
	// out, but for the same listed differences.
	fRaw := frameReader{limit: limit}
	raw := feedInto(t, &fRaw, stream, []int{chunk})
	gNoMsg := withoutMessages(g)
	rawDiff := explainDiff(&fRaw, raw, gNoMsg, gEnd)
	if rawDiff == diffNone && !equalEvents(raw, gNoMsg) {
		t.Fatalf("without collect, pusher and gorilla differ (limit %d, chunks of %d):\npusher:  %s\ngorilla: %s (%+v)\nstream: % x",
			limit, chunk, showEvents(raw), showEvents(gNoMsg), gEnd, stream)
	}
	if diff != diffUTF8 && (rawDiff != diff || !equalEvents(withoutMessages(p), raw)) {
		t.Fatalf("without collect: %s (difference %q)\nwith: %s (difference %q)", showEvents(raw), diffNames[rawDiff], showEvents(p), diffNames[diff])
	}
	return diff
}

// explainDiff says which listed difference separates pusher's events p
// (f is its reader after them) from gorilla's g, or diffNone when they
// must be equal. Each is recognised from the bytes, not from the outcome
// alone, so that no other difference hides behind one.
func explainDiff(f *frameReader, p, g []event, gEnd gorillaEnd) int {
	if len(p) == 0 {
		return diffLength(f, p, gEnd)
	}
	last := p[len(p)-1]
	n := len(p) - 1
	prefixSame := len(g) >= n && equalEvents(p[:n], g[:n])
	switch {
	case last.errCode == websocket.CloseInvalidFramePayloadData:
		// gorilla returns the text message pusher refused, and goes on.
		if prefixSame && len(g) > n && g[n].kind == frameMessage && g[n].code == opText && !utf8.ValidString(g[n].payload) {
			return diffUTF8
		}
	case last.errCode == websocket.CloseProtocolError && f.op == opClose && !f.inFrame && len(f.ctl) == 1:
		if prefixSame && len(g) == n+1 && g[n] == (event{kind: frameClose, code: websocket.CloseNoStatusReceived}) {
			return diffCloseOneByte
		}
	case last.kind == frameClose && last.code == 1014:
		if prefixSame && len(g) == n+1 && g[n].errCode == websocket.CloseProtocolError {
			return diffClose1014
		}
	}
	return diffLength(f, p, gEnd)
}

// diffLength recognises the two 64-bit length differences: f's last
// header (complete or not) has a 64-bit length, and gorilla returned
// ErrReadLimit without writing a close frame.
func diffLength(f *frameReader, p []event, gEnd gorillaEnd) int {
	if !gEnd.readLimit || gEnd.closeCode != 0 || f.hdr[1]&0x7f != 127 {
		return diffNone
	}
	hlen := f.hlen
	if hlen == 0 { // startFrame took the header: it was whole
		hlen = maxFrameHeader
	}
	if hlen < 10 {
		return diffNone
	}
	length := binary.BigEndian.Uint64(f.hdr[2:10])
	var last event
	if len(p) > 0 {
		last = p[len(p)-1]
	}
	switch {
	case length>>63 != 0 && (last.errCode == websocket.CloseProtocolError || last.errCode == 0 && f.hlen >= 10):
		return diffLengthTopBit
	case length>>63 == 0 && last.errCode == websocket.CloseMessageTooBig && length > uint64(math.MaxInt64-int64(f.msgSize)):
		return diffLengthOverflow
	}
	return diffNone
}

func withoutMessages(evs []event) []event {
	var out []event
	for _, ev := range evs {
		if ev.kind != frameMessage {
			out = append(out, ev)
		}
	}
	return out
}

func showEvents(evs []event) string {
	var b strings.Builder
	for _, ev := range evs {
		switch {
		case ev.errCode != 0:
			fmt.Fprintf(&b, "[error %d]", ev.errCode)
		case ev.kind == framePing:
			fmt.Fprintf(&b, "[ping %q]", ev.payload)
		case ev.kind == framePong:
			fmt.Fprintf(&b, "[pong %q]", ev.payload)
		case ev.kind == frameClose:
			fmt.Fprintf(&b, "[close %d %q]", ev.code, ev.reason)
		case ev.kind == frameMessage:
			fmt.Fprintf(&b, "[message %d %q]", ev.code, ev.payload)
		}
	}
	if b.Len() == 0 {
		return "[nothing]"
	}
	return b.String()
}

// diffCase is a client stream, named after the Autobahn case it comes
// from where it does, and the listed difference it meets.
type diffCase struct {
	name   string
	limit  int32
	stream []byte
	want   int // diffNone, or the listed difference
}

// diffCases are the streams of Autobahn's cases that the frame reader sees
// (its groups 1 to 7 and 9, limits scaled down) and the listed differences'
// minimal reproducers; they seed FuzzReaderMatchesGorilla too.
func diffCases() []diffCase {
	k := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	fr := func(fin bool, op byte, p string) []byte { return clientFrame(fin, op, []byte(p), k) }
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	withRSV := func(b []byte, rsv byte) []byte { b = bytes.Clone(b); b[0] |= rsv << 4; return b }
	closing := func(code int, reason string) []byte {
		return fr(true, opClose, string(binary.BigEndian.AppendUint16(nil, uint16(code)))+reason)
	}
	hello := "Hello, world!"
	kosme := "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
	var inFrags []byte // 6.2.4: κόσμε a byte a frame
	for i := range len(kosme) {
		op := byte(opContinuation)
		if i == 0 {
			op = opText
		}
		inFrags = append(inFrags, fr(i == len(kosme)-1, op, kosme[i:i+1])...)
	}
	var frags64 []byte // 9.3.1, scaled: 64-byte fragments past a 256-byte limit
	for i := range 6 {
		op := byte(opContinuation)
		if i == 0 {
			op = opText
		}
		frags64 = append(frags64, fr(i == 5, op, strings.Repeat("*", 64))...)
	}
	topBit := []byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}
	overflow := cat(fr(false, opBinary, "ab"), []byte{0x80, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4})
	return []diffCase{
		{name: "1.1.3 text of 126 bytes", limit: 4096, stream: fr(true, opText, strings.Repeat("*", 126))},
		{name: "1.2.6 binary of 65535 bytes", limit: 1 << 16, stream: fr(true, opBinary, strings.Repeat("\xfe", 65535))},
		{name: "1.2.6 at a 4 KiB limit", limit: 4096, stream: fr(true, opBinary, strings.Repeat("\xfe", 65535))[:100]},
		{name: "1.2.7 cut short", limit: 1 << 17, stream: fr(true, opBinary, strings.Repeat("\xfe", 65536))[:100]},
		{name: "2.4 ping of 125 bytes", limit: 64, stream: fr(true, opPing, strings.Repeat("\xfe", 125))},
		{name: "2.5 ping of 126 bytes", limit: 64, stream: fr(true, opPing, strings.Repeat("\xfe", 126))},
		{name: "2.9 pong, ping", limit: 64, stream: cat(fr(true, opPong, "unsolicited pong payload"), fr(true, opPing, "ping payload"))},
		{name: "3.2 RSV 2 after a message", limit: 64, stream: cat(fr(true, opText, hello), withRSV(fr(true, opText, hello), 2), fr(true, opPing, ""))},
		{name: "3.7 close with RSV 7", limit: 64, stream: withRSV(fr(true, opClose, ""), 7)},
		{name: "4.1.3 opcode 5", limit: 64, stream: cat(fr(true, opText, hello), fr(true, 5, ""), fr(true, opPing, ""))},
		{name: "4.2.4 opcode 14", limit: 64, stream: cat(fr(true, opText, hello), fr(true, 14, hello), fr(true, opPing, ""))},
		{name: "5.2 fragmented pong", limit: 64, stream: cat(fr(false, opPong, "fragment1"), fr(true, opContinuation, "fragment2"))},
		{name: "5.6 ping between fragments", limit: 64, stream: cat(fr(false, opText, "fragment1"), fr(true, opPing, "ping payload"), fr(true, opContinuation, "fragment2"))},
		{name: "5.15 continuation after the message", limit: 64, stream: cat(fr(false, opText, "fragment1"), fr(true, opContinuation, "fragment2"),
			fr(false, opContinuation, "fragment3"), fr(true, opText, "fragment4"))},
		{name: "5.18 two first fragments", limit: 64, stream: cat(fr(false, opText, "fragment1"), fr(true, opText, "fragment2"))},
		{name: "5.19 pings inside a message", limit: 64, stream: cat(fr(false, opText, "fragment1"), fr(false, opContinuation, "fragment2"),
			fr(true, opPing, "pongme 1!"), fr(false, opContinuation, "fragment3"), fr(false, opContinuation, "fragment4"),
			fr(true, opPing, "pongme 2!"), fr(true, opContinuation, "fragment5"))},
		{name: "6.1.2 empty fragments", limit: 64, stream: cat(fr(false, opText, ""), fr(false, opContinuation, ""), fr(true, opContinuation, ""))},
		{name: "6.2.4 a byte a fragment", limit: 64, stream: inFrags},
		{name: "6.3.1 a surrogate", limit: 64, stream: fr(true, opText, kosme+"\xed\xa0\x80edited"), want: diffUTF8},
		{name: "6.4.2 over U+10FFFF, split", limit: 64, stream: cat(fr(false, opText, kosme+"\xf4"), fr(false, opContinuation, "\x90"),
			fr(true, opContinuation, "\x80\x80edited")), want: diffUTF8},
		{name: "6.12.8 continuation bytes, then a ping", limit: 64, stream: cat(fr(true, opText, "\x80\xbf"), fr(true, opPing, "after")), want: diffUTF8},
		{name: "7.1.1 message, close", limit: 64, stream: cat(fr(true, opText, "Hello World!"), closing(1000, ""))},
		{name: "7.1.5 close inside a message", limit: 64, stream: cat(fr(false, opText, "fragment1"), closing(1000, ""), fr(true, opContinuation, "fragment2"))},
		{name: "7.3.1 empty close", limit: 64, stream: fr(true, opClose, "")},
		{name: "7.3.2 close of 1 byte", limit: 64, stream: fr(true, opClose, "a"), want: diffCloseOneByte},
		{name: "7.3.6 close reason of 124 bytes", limit: 64, stream: closing(1000, strings.Repeat("*", 124))},
		{name: "7.5.1 close reason not UTF-8", limit: 64, stream: closing(1000, kosme+"\xed\xa0\x80edited")},
		{name: "7.7.13 close 4999", limit: 64, stream: closing(4999, "")},
		{name: "7.9.4 close 1005", limit: 64, stream: closing(1005, "")},
		{name: "7.13.2 close 65535", limit: 64, stream: closing(65535, "")},
		{name: "close 1012", limit: 64, stream: closing(1012, "restart")},
		{name: "close 1014", limit: 64, stream: closing(1014, ""), want: diffClose1014},
		{name: "close 1015", limit: 64, stream: closing(1015, "")},
		{name: "9.3.1 fragments past the limit", limit: 256, stream: frags64},
		{name: "9.3.1 fragments up to the limit", limit: 384, stream: frags64},
		{name: "64-bit length with the top bit", limit: 64, stream: topBit, want: diffLengthTopBit},
		{name: "64-bit length with the top bit, cut in the mask key", limit: 64, stream: topBit[:11], want: diffLengthTopBit},
		{name: "64-bit length overflowing the message", limit: 64, stream: overflow, want: diffLengthOverflow},
		{name: "16-bit length of a short frame", limit: 64, stream: []byte{0x81, 0xfe, 0, 1, 0, 0, 0, 0, 'x'}},
		{name: "16-bit length on a ping", limit: 64, stream: []byte{0x89, 0xfe, 0, 1, 0, 0, 0, 0, 'x'}},
		{name: "unmasked", limit: 64, stream: []byte{0x81, 0x01, 'x'}},
		{name: "cut short", limit: 64, stream: fr(true, opText, hello)[:9]},
	}
}

// TestReaderMatchesGorilla: the Autobahn streams and the listed
// differences' reproducers, whole and in pieces, read alike by pusher's
// reader and gorilla's, or differ exactly as listed.
func TestReaderMatchesGorilla(t *testing.T) {
	for _, tt := range diffCases() {
		t.Run(tt.name, func(t *testing.T) {
			for _, chunk := range []int{len(tt.stream) + 1, 1, 7} {
				if got := compareWithGorilla(t, tt.stream, tt.limit, chunk); got != tt.want {
					t.Fatalf("chunks of %d: difference %q, want %q", chunk, diffNames[got], diffNames[tt.want])
				}
			}
		})
	}
}

// FuzzReaderMatchesGorilla: any bytes, at any limit and in any chunking,
// are read by pusher's reader as by gorilla's, but for the listed
// differences. The input is read twice: as the stream itself, and as a
// program of frames (framesFrom), which reaches well-formed frames of
// every kind far sooner than mutated bytes do.
func FuzzReaderMatchesGorilla(f *testing.F) {
	for _, tt := range diffCases() {
		if len(tt.stream) > 4096 {
			continue // the fuzzer's minimizer crawls through big inputs
		}
		f.Add(tt.stream, uint16(tt.limit-1), uint8(len(tt.stream)))
	}
	f.Fuzz(func(t *testing.T, data []byte, limit uint16, chunk uint8) {
		compareWithGorilla(t, data, int32(limit)+1, int(chunk)+1)
		compareWithGorilla(t, framesFrom(data), int32(limit)+1, int(chunk)+1)
	})
}

// framesFrom reads program as frames and returns them encoded as a
// client sends them. Each frame takes two bytes and its payload: the
// first byte as on the wire (FIN, RSV, opcode), then one whose low 3 bits
// choose how the length is written and whose top 5 bits are the payload's
// length (0 to 31 bytes, taken from what follows). Length forms: 0 the
// shortest, 1 16 bits, 2 64 bits, 3 64 bits with the top bit set, 4 a
// 64-bit length near 2^63 (the payload is then cut short), 5 unmasked.
func framesFrom(program []byte) []byte {
	var out []byte
	for i := 0; len(program) >= 2; i++ {
		b0, sel := program[0], program[1]
		n := min(int(sel>>3), len(program)-2)
		payload := program[2 : 2+n]
		program = program[2+n:]
		out = append(out, b0)
		mask := byte(0x80)
		if sel&7 == 5 {
			mask = 0
		}
		switch sel & 7 {
		case 1:
			out = binary.BigEndian.AppendUint16(append(out, mask|126), uint16(n))
		case 2:
			out = binary.BigEndian.AppendUint64(append(out, mask|127), uint64(n))
		case 3:
			out = binary.BigEndian.AppendUint64(append(out, mask|127), 1<<63|uint64(n))
		case 4:
			out = binary.BigEndian.AppendUint64(append(out, mask|127), math.MaxInt64-uint64(n))
		default:
			out = append(out, mask|byte(n))
		}
		key := [4]byte{byte(i), 0x5a, byte(n), 0xc3}
		if mask == 0 {
			out = append(out, payload...)
			continue
		}
		out = append(out, key[:]...)
		for j, c := range payload {
			out = append(out, c^key[j&3])
		}
	}
	return out
}
