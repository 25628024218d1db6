package ws

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap/zaptest"

	"github.com/pusher-io/pusher/ws/internal/intake"
)

// Autobahn|Testsuite's server cases (groups 1 to 7 and 9) run in Go, since
// the suite itself needs Python 2: each case's client sends its exact
// bytes over a real loopback connection to an echo endpoint built from
// pusher's parts (abPusher), and holds what comes back to the case's
// expectation (autobahn_cases_test.go). The same bytes go to gorilla's
// reader too (autobahn_gorilla_test.go).
//
// Autobahn waits a second here and there ("continueLater"); these cases
// never sleep: a frame that Autobahn sends after a wait is sent once the
// replies before it came (abFrame.after), which is what the wait was for.

// Limits the cases run at: pusher's default MaxMessageSize, and a raised
// one for the cases whose messages exceed it, so that their reading is
// held to Autobahn too.
const (
	abLimit       = 4096
	abRaisedLimit = 256 << 10
)

const (
	abOpCont   = 0
	abNoStatus = websocket.CloseNoStatusReceived // a close frame without payload
)

// abFrame is one frame a case's client sends, masked as clients must, or
// with frag set one message sent as frames of frag bytes.
type abFrame struct {
	op      byte
	more    bool   // not the final frame of its message (FIN clear)
	rsv     byte   // RSV bits, 1 to 7: no extension gives them meaning here
	payload []byte // the payload, or with size set the pattern it repeats
	size    int    // the payload is payload repeated to size bytes (the big cases)
	frag    int    // a whole message in frames of frag bytes (Autobahn's payload_frag_size)
	chop    int    // written in writes of chop bytes (Autobahn's chopsize); 0: with its neighbours
	sync    bool   // written on its own (Autobahn's sync)
	after   int    // sent once this many replies came (instead of Autobahn's waits)
	cuts    []int  // payload offsets where the frame's writes are cut, each written on its own
}

func abData(op byte, p string) abFrame { return abFrame{op: op, payload: []byte(p)} }
func abText(p string) abFrame          { return abData(opText, p) }
func abBinary(p string) abFrame        { return abData(opBinary, p) }
func abPing(p string) abFrame          { return abData(opPing, p) }
func abCont(p string) abFrame          { return abData(abOpCont, p) }

// abClose is a close frame with code and reason, whatever the code
// (gorilla's FormatCloseMessage leaves 1005 out).
func abClose(code int, reason string) abFrame {
	return abFrame{op: opClose, payload: append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)}
}

// abBig is a message of size bytes of pattern, one frame unless frag is set.
func abBig(op byte, pattern string, size int) abFrame {
	return abFrame{op: op, payload: []byte(pattern), size: size}
}

func (f abFrame) notFinal() abFrame      { f.more = true; return f }
func (f abFrame) withRSV(r byte) abFrame { f.rsv = r; return f }
func (f abFrame) chopped(n int) abFrame  { f.chop = n; return f }
func (f abFrame) synced() abFrame        { f.sync = true; return f }
func (f abFrame) inFrags(n int) abFrame  { f.frag = n; return f }
func (f abFrame) afterReplies(n int) abFrame {
	f.after = n
	return f
}

// length is the payload's length.
func (f abFrame) length() int {
	if f.size > 0 {
		return f.size
	}
	return len(f.payload)
}

// byteAt is the payload's byte i.
func (f abFrame) byteAt(i int) byte {
	if f.size > 0 {
		return f.payload[i%len(f.payload)]
	}
	return f.payload[i]
}

// abEvent is a reply: a message, or a pong.
type abEvent struct {
	kind    string // "text", "binary" or "pong"
	payload string
}

func (e abEvent) String() string {
	if len(e.payload) > 40 {
		return fmt.Sprintf("%s(%d bytes %q...)", e.kind, len(e.payload), e.payload[:16])
	}
	return fmt.Sprintf("%s(%q)", e.kind, e.payload)
}

func abTextEcho(p string) abEvent   { return abEvent{"text", p} }
func abBinaryEcho(p string) abEvent { return abEvent{"binary", p} }
func abPong(p string) abEvent       { return abEvent{"pong", p} }

// abResult is what a case's client saw.
type abResult struct {
	events []abEvent
	code   int    // the server's close frame: its code; abNoStatus without payload; 0 if none came
	reason string // its reason
	end    error  // how the stream ended after it: io.EOF when the server closed TCP
	bad    string // a server frame RFC 6455 forbids, if one came
}

func (r abResult) String() string {
	return fmt.Sprintf("replies %v, close %d %q, then %v%s", r.events, r.code, r.reason, r.end, map[bool]string{true: ", bad frame: " + r.bad}[r.bad != ""])
}

// abServer is an echo endpoint a case can run against.
type abServer interface{ addr() string }

// runCase runs c's client against srv and returns what it saw. The
// client writes the frames, waiting for replies where the case says;
// closes (1000) when the case's expected replies came, if the case says
// the client closes; then reads until the server ends the stream.
func runCase(tb testing.TB, srv abServer, c abCase) abResult {
	tb.Helper()
	nc, br := abDial(tb, srv.addr())
	defer nc.Close()

	// Room for every reply the case expects and then some, so the reader
	// never waits on a client that is busy writing.
	replies := make(chan abEvent, len(c.want)+64)
	stop := make(chan struct{}) // the server's close came, or the stream ended
	var res abResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(replies)
		abReadServer(nc, br, &res, replies, stop)
	}()

	w := &abWriter{nc: nc, stop: stop}
	var got []abEvent
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	await := func(n int) {
		for len(got) < n {
			select {
			case ev, ok := <-replies:
				if !ok {
					return
				}
				got = append(got, ev)
				timeout.Reset(waitTimeout)
			case <-timeout.C:
				tb.Fatalf("case %s: %d replies in %s, waiting for %d: %v", c.id, len(got), waitTimeout, n, got)
			}
		}
	}
	closed := false
	for _, f := range c.send {
		if f.after > 0 {
			w.flush()
			await(f.after)
		}
		w.frame(f)
		closed = closed || f.op == opClose
	}
	if c.end.client && !closed {
		w.flush()
		await(len(c.want))
		w.frame(abClose(websocket.CloseNormalClosure, ""))
	}
	w.flush()
	for {
		select {
		case ev, ok := <-replies:
			if !ok {
				<-done
				res.events = got
				return res
			}
			got = append(got, ev)
			timeout.Reset(waitTimeout)
		case <-timeout.C:
			tb.Fatalf("case %s: the server did not end the connection within %s; replies %v", c.id, waitTimeout, got)
		}
	}
}

// abDial connects to addr and does the opening handshake by hand, as
// the cases' client is a raw TCP client.
func abDial(tb testing.TB, addr string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	_ = nc.SetDeadline(time.Now().Add(waitTimeout))
	const key = "dGhlIHNhbXBsZSBub25jZQ==" // RFC 6455 1.3's example
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		tb.Fatalf("handshake: %v", err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		tb.Fatalf("handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		tb.Fatalf("handshake: %s, accept %q", resp.Status, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, br
}

// abReadServer reads the server's frames, as a client must (unmasked, no
// RSV bits, known opcodes, control frames short and whole), reassembles
// messages and sends each reply on replies; the close frame goes into res,
// and reading goes on to the end of the stream (res.end). stop is closed
// once the close came or the stream ended, so the writer stops.
func abReadServer(nc net.Conn, br *bufio.Reader, res *abResult, replies chan<- abEvent, stop chan struct{}) {
	stopOnce := sync.OnceFunc(func() {
		close(stop)
		// A write blocked on a server that stopped reading gives up.
		_ = nc.SetWriteDeadline(time.Now())
	})
	defer stopOnce()
	var msg []byte
	msgOp := -1
	for {
		_ = nc.SetReadDeadline(time.Now().Add(waitTimeout))
		fin, op, payload, err := abReadFrame(br)
		if err != nil {
			res.end = err
			if res.code == 0 && errors.Is(err, errABBadFrame) {
				res.bad = err.Error()
			}
			return
		}
		if res.code != 0 {
			res.bad = fmt.Sprintf("opcode %d after the close frame", op)
			continue
		}
		switch op {
		case opText, opBinary, abOpCont:
			if (op == abOpCont) != (msgOp >= 0) {
				res.bad = fmt.Sprintf("data frame opcode %d, message open: %v", op, msgOp >= 0)
				return
			}
			if op != abOpCont {
				msgOp = op
			}
			msg = append(msg, payload...)
			if fin {
				kind := map[int]string{opText: "text", opBinary: "binary"}[msgOp]
				replies <- abEvent{kind, string(msg)}
				msg, msgOp = nil, -1
			}
		case opPong:
			replies <- abPong(string(payload))
		case opPing:
			res.bad = "the server pinged" // neither echo server does
		case opClose:
			switch len(payload) {
			case 0:
				res.code = abNoStatus
			case 1:
				res.bad = "close frame with a 1-byte payload"
				res.code = -1
			default:
				res.code = int(binary.BigEndian.Uint16(payload))
				res.reason = string(payload[2:])
			}
			stopOnce()
		default:
			res.bad = fmt.Sprintf("opcode %d", op)
			return
		}
	}
}

var errABBadFrame = errors.New("bad server frame")

// abReadFrame reads one server frame.
func abReadFrame(br *bufio.Reader) (fin bool, op int, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return false, 0, nil, err
	}
	fin, op = h[0]&0x80 != 0, int(h[0]&0x0f)
	if h[0]&0x70 != 0 || h[1]&0x80 != 0 {
		return false, 0, nil, fmt.Errorf("%w: RSV bits or mask set: % x", errABBadFrame, h)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return false, 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return false, 0, nil, err
		}
		n = binary.BigEndian.Uint64(l[:])
	}
	if op >= opClose && (n > 125 || !fin) {
		return false, 0, nil, fmt.Errorf("%w: control frame %d of %d bytes, fin %v", errABBadFrame, op, n, fin)
	}
	if n > abRaisedLimit {
		return false, 0, nil, fmt.Errorf("%w: %d bytes, more than any case sends", errABBadFrame, n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		return false, 0, nil, err
	}
	return fin, op, payload, nil
}

// abWriter writes a case's frames: small ones gathered and written
// together, chopped or synced ones on their own, big payloads in pieces;
// after the server's close (stop) or a failed write it writes nothing.
type abWriter struct {
	nc      net.Conn
	stop    <-chan struct{}
	pending []byte
	keys    uint32 // frames masked so far: each gets its own key
	failed  bool
	block   []byte // blockOf repeated (repeated)
	blockOf string
}

// abBigPiece is the most a write of an unchopped frame carries.
const abBigPiece = 64 << 10

func (w *abWriter) frame(f abFrame) {
	if f.frag == 0 {
		w.one(f, 0, f.length(), !f.more)
		return
	}
	for off := 0; off == 0 || off < f.length(); off += f.frag {
		n := min(f.frag, f.length()-off)
		g := f
		if off > 0 {
			g.op = abOpCont
		}
		w.one(g, off, n, off+n == f.length())
		if w.stopped() {
			return
		}
	}
}

// one writes the frame whose payload is f's bytes [off, off+n).
func (w *abWriter) one(f abFrame, off, n int, fin bool) {
	w.keys++
	key := [4]byte{byte(w.keys), 0xa5, byte(w.keys >> 8), 0x3c}
	b0 := f.op | f.rsv<<4
	if fin {
		b0 |= 0x80
	}
	hdr := []byte{b0}
	switch {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n <= 0xffff:
		hdr = binary.BigEndian.AppendUint16(append(hdr, 0x80|126), uint16(n))
	default:
		hdr = binary.BigEndian.AppendUint64(append(hdr, 0x80|127), uint64(n))
	}
	hdr = append(hdr, key[:]...)
	total := len(hdr) + n
	// bytes appends the frame's bytes [start, end) to dst.
	bytesOf := func(dst []byte, start, end int) []byte {
		if start < len(hdr) {
			dst = append(dst, hdr[start:min(end, len(hdr))]...)
			start = len(hdr)
		}
		if start >= end {
			return dst
		}
		from, to := off+start-len(hdr), off+end-len(hdr)
		k := len(dst)
		if f.size == 0 {
			dst = append(dst, f.payload[from:to]...)
		} else {
			block := w.repeated(f.payload)
			for i := from; i < to; {
				j := i % len(f.payload)
				n := min(to-i, len(block)-j)
				dst = append(dst, block[j:j+n]...)
				i += n
			}
		}
		abMask(dst[k:], key, start-len(hdr))
		return dst
	}
	if f.chop == 0 && !f.sync && f.cuts == nil && total <= abBigPiece {
		w.pending = bytesOf(w.pending, 0, total)
		if len(w.pending) >= abBigPiece {
			w.flush()
		}
		return
	}
	w.flush()
	piece := f.chop
	if piece == 0 {
		piece = abBigPiece
	}
	// next is where the write that starts at start ends.
	next := func(start int) int {
		if f.cuts == nil {
			return min(start+piece, total)
		}
		for _, c := range f.cuts {
			if len(hdr)+c > start {
				return len(hdr) + c
			}
		}
		return total
	}
	buf := make([]byte, 0, min(piece, total))
	for start := 0; start < total; {
		end := next(start)
		buf = bytesOf(buf[:0], start, end)
		w.write(buf)
		if w.stopped() {
			return
		}
		start = end
	}
}

// abMask masks b, which starts at payload offset pos, with key: eight
// bytes at a time, as the big cases send megabytes.
func abMask(b []byte, key [4]byte, pos int) {
	for len(b) > 0 && pos&3 != 0 {
		b[0] ^= key[pos&3]
		b, pos = b[1:], pos+1
	}
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
}

// repeated is pattern repeated to more than abBigPiece bytes, kept for
// the writer's next frames, so big payloads are copied, not built byte by
// byte.
func (w *abWriter) repeated(pattern []byte) []byte {
	if w.blockOf != string(pattern) || w.block == nil {
		w.block = bytes.Repeat(pattern, abBigPiece/len(pattern)+2)
		w.blockOf = string(pattern)
	}
	return w.block
}

func (w *abWriter) flush() {
	if len(w.pending) > 0 {
		w.write(w.pending)
		w.pending = w.pending[:0]
	}
}

func (w *abWriter) stopped() bool {
	select {
	case <-w.stop:
		return true
	default:
		return w.failed
	}
}

// write writes b unless the server closed already. A failed write is
// no test failure: a server that fails the connection stops reading, and
// what the client then reads says whether it did so rightly.
func (w *abWriter) write(b []byte) {
	if w.stopped() {
		return
	}
	_ = w.nc.SetWriteDeadline(time.Now().Add(waitTimeout))
	if _, err := w.nc.Write(b); err != nil {
		w.failed = true
	}
}

// abPusher is Autobahn's echo endpoint built from pusher's own parts: the
// upgrade as Handler does it, intake's reader in collect mode (the epoll
// Poller, or a goroutine per connection), replies encoded by frameBuf. Its
// connections (abEcho) echo each message unchanged, answer each ping with
// a pong, answer a close with a close echoing the code (RFC 6455 5.5.1),
// and close with the reader's code on a violation.
type abPusher struct {
	srv     *httptest.Server
	poll    *intake.Poller
	running sync.WaitGroup // the Poller's goroutines
	echoes  sync.WaitGroup // the connections' writers
	nextID  atomic.Uint64
	quit    chan struct{} // closed at cleanup: writers stop

	mu    sync.Mutex
	conns []net.Conn
}

func newABPusher(tb testing.TB, limit int64, goroutines bool) *abPusher {
	tb.Helper()
	s := &abPusher{quit: make(chan struct{})}
	s.poll = intake.NewPoller(&s.running, zaptest.NewLogger(tb), intake.Config{MaxMessageSize: limit, Goroutines: goroutines})
	up := websocket.Upgrader{ReadBufferSize: 1, CheckOrigin: func(*http.Request) bool { return true }}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wsConn, err := up.Upgrade(w, r, nil)
		if err != nil {
			tb.Errorf("upgrade: %v", err)
			return
		}
		nc := wsConn.NetConn()
		s.mu.Lock()
		s.conns = append(s.conns, nc)
		s.mu.Unlock()
		e := &abEcho{nc: nc, wake: make(chan struct{}, 1)}
		s.poll.Watch(&e.in, nc, s.nextID.Add(1), e, true)
		s.echoes.Add(1)
		go e.write(s)
	}))
	tb.Cleanup(func() {
		s.srv.Close()
		close(s.quit)
		s.mu.Lock()
		for _, nc := range s.conns {
			_ = nc.SetDeadline(time.Now()) // a writer still draining gives up
		}
		s.mu.Unlock()
		abWait(tb, "the echo writers", &s.echoes)
		abWait(tb, "the Poller's goroutines", &s.running)
	})
	return s
}

func (s *abPusher) addr() string { return s.srv.Listener.Addr().String() }

// abWait waits for wg, failing the test after waitTimeout.
func abWait(tb testing.TB, what string, wg *sync.WaitGroup) {
	tb.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		tb.Errorf("%s still run %s after the test", what, waitTimeout)
	}
}

// abEcho is one connection of abPusher: the intake.Conn that queues the
// replies, and its writer goroutine, which writes them with frameBuf.
type abEcho struct {
	in intake.Reader
	nc net.Conn

	mu    sync.Mutex
	out   []abOut // guarded by mu: replies for the writer
	final bool    // guarded by mu: out ends the connection (a close, or none after Gone)
	wake  chan struct{}
}

type abOut struct {
	op      int
	payload []byte
}

var _ intake.Conn = (*abEcho)(nil)

func (e *abEcho) queue(op int, payload []byte, final bool) {
	e.mu.Lock()
	if op >= 0 {
		e.out = append(e.out, abOut{op, payload})
	}
	e.final = e.final || final
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *abEcho) Heard()                {}
func (e *abEcho) Pinged(payload []byte) { e.queue(opPong, payload, false) }
func (e *abEcho) Ponged([]byte)         {}
func (e *abEcho) Message(text bool, p []byte) {
	op := opBinary
	if text {
		op = opText
	}
	e.queue(op, bytes.Clone(p), false)
}

// ClientClosed answers with the client's code and no reason (an empty
// close when it sent none).
func (e *abEcho) ClientClosed(code int, _ string) {
	var p []byte
	if code != abNoStatus {
		p = websocket.FormatCloseMessage(code, "")
	}
	e.queue(opClose, p, true)
}

func (e *abEcho) Violated(code int, reason string) {
	e.queue(opClose, websocket.FormatCloseMessage(code, reason), true)
}

func (e *abEcho) Gone(error) { e.queue(-1, nil, true) }

// write writes the replies as they are queued, each round in one write
// (as pusher's writer does); after the final close it ends the stream
// (FIN), reads until the client closed too, so the socket closes with
// nothing unread, and stops the reading.
func (e *abEcho) write(s *abPusher) {
	defer s.echoes.Done()
	defer s.poll.Stop(&e.in)
	var fb frameBuf
	for {
		select {
		case <-e.wake:
		case <-s.quit:
			return
		}
		e.mu.Lock()
		out, final := e.out, e.final
		e.out = nil
		e.mu.Unlock()
		_ = e.nc.SetWriteDeadline(time.Now().Add(waitTimeout))
		for _, o := range out {
			if err := fb.add(e.nc, o.op, o.payload); err != nil {
				return
			}
		}
		if err := fb.flush(e.nc); err != nil || !final {
			if err != nil {
				return
			}
			continue
		}
		// Reading is over (intake reads no more after a close, a violation
		// or Gone), so this goroutine may read the socket.
		if tcp, ok := e.nc.(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
		}
		_ = e.nc.SetReadDeadline(time.Now().Add(waitTimeout))
		_, _ = io.Copy(io.Discard, e.nc)
		return
	}
}

// abMaxMessage is the largest message c sends.
func abMaxMessage(c abCase) int {
	most, cur := 0, 0
	for _, f := range c.send {
		switch f.op {
		case opText, opBinary:
			cur = f.length()
		case abOpCont:
			cur += f.length()
		default:
			continue
		}
		most = max(most, cur)
	}
	return most
}

// wantAt is what c expects of a server whose limit is limit: Autobahn's
// expectation, or, for a message over the limit, 1009 before anything is
// echoed (every such case sends its big message first).
func (c abCase) wantAt(limit int) ([]abEvent, abEnd) {
	if abMaxMessage(c) > limit {
		return nil, abFailed(websocket.CloseMessageTooBig)
	}
	return c.want, c.end
}

// check holds got to c's expectation at limit.
func (c abCase) check(tb testing.TB, got abResult, limit int) {
	tb.Helper()
	want, end := c.wantAt(limit)
	if got.bad != "" {
		tb.Errorf("the server sent a bad frame: %s", got.bad)
	}
	if len(got.events) != len(want) {
		tb.Errorf("replies %v, want %v", got.events, want)
	} else {
		for i := range want {
			if got.events[i] != want[i] {
				tb.Errorf("reply %d: %v, want %v", i, got.events[i], want[i])
			}
		}
	}
	if got.code != end.code {
		tb.Errorf("close code %d (%q), want %d", got.code, got.reason, end.code)
	}
	if !errors.Is(got.end, io.EOF) {
		tb.Errorf("after the close: %v, want the server to end the stream (EOF)", got.end)
	}
}

// TestAutobahn runs Autobahn's server cases of groups 1 to 7 and 9
// against pusher's reader and frame encoder, read by the epoll Poller and
// by a goroutine per connection, at pusher's default limit (4 KiB:
// bigger messages get 1009) and, for the cases over it, at a raised one
// too. Where pusher's verdict would not be Autobahn's OK, the case's note
// says what and why.
//
// The goroutine reader skips the round-trip cases (9.7, 9.8): 12,000
// messages that read as any other message does, and the slowest cases
// under the race detector.
func TestAutobahn(t *testing.T) {
	cases := abCases()
	for _, mode := range readerModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			for _, limit := range []int{abLimit, abRaisedLimit} {
				srv := newABPusher(t, int64(limit), mode.goroutines)
				for _, c := range cases {
					if limit == abRaisedLimit && !c.raised() || mode.goroutines && c.roundTrips() {
						continue
					}
					t.Run(c.name(limit), func(t *testing.T) {
						t.Parallel()
						c.check(t, runCase(t, srv, c), limit)
					})
				}
			}
		})
	}
}

// roundTrips says whether c is one of 9.7 and 9.8, a thousand round trips.
func (c abCase) roundTrips() bool {
	return strings.HasPrefix(c.id, "9.7.") || strings.HasPrefix(c.id, "9.8.")
}

// raised says whether c also runs at abRaisedLimit: its messages exceed
// pusher's default limit and fit the raised one.
func (c abCase) raised() bool {
	n := abMaxMessage(c)
	return n > abLimit && n <= abRaisedLimit
}

// name is the subtest's: the Autobahn id, and the limit when raised.
func (c abCase) name(limit int) string {
	if limit == abRaisedLimit {
		return "case " + c.id + " at 256 KiB"
	}
	return "case " + c.id
}

// TestAutobahnCaseCount: the table holds each group's cases, as many as
// Autobahn has.
func TestAutobahnCaseCount(t *testing.T) {
	want := map[string]int{"1": 16, "2": 11, "3": 7, "4": 10, "5": 20, "6": 145, "7": 37, "9": 54}
	got := map[string]int{}
	seen := map[string]bool{}
	for _, c := range abCases() {
		if seen[c.id] {
			t.Errorf("case %s twice", c.id)
		}
		seen[c.id] = true
		got[strings.SplitN(c.id, ".", 2)[0]]++
	}
	for g, n := range want {
		if got[g] != n {
			t.Errorf("group %s: %d cases, Autobahn has %d", g, got[g], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("groups %v, want %v", got, want)
	}
}
