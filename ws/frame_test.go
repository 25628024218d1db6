package ws

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// frameCase is one frame the server sends.
type frameCase struct {
	name    string
	op      int
	payload []byte
}

func frameCases() []frameCase {
	sizes := []int{0, 1, 125, 126, 127, 0xffff, 0x10000, 70_000}
	var cases []frameCase
	for _, n := range sizes {
		cases = append(cases,
			frameCase{"text", opText, bytes.Repeat([]byte("a"), n)},
			frameCase{"binary", opBinary, bytes.Repeat([]byte{0xfe}, n)})
	}
	var id [8]byte
	return append(cases,
		frameCase{"ping with an id", opPing, pingPayload(&id, 0x0102030405060708)},
		frameCase{"empty ping", opPing, nil},
		frameCase{"pong", opPong, []byte("echo")},
		frameCase{"close", opClose, websocket.FormatCloseMessage(4004, "unresponsive")},
		frameCase{"close without status", opClose, nil},
	)
}

// recordingConn keeps every byte read through it.
type recordingConn struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (r *recordingConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	r.got.Write(p[:n])
	r.mu.Unlock()
	return n, err
}

// gorillaBytes is what gorilla's server side puts on the wire for c,
// after the handshake, read off a real loopback socket.
func gorillaBytes(t *testing.T, c frameCase) []byte {
	t.Helper()
	// A write buffer bigger than any payload here, so gorilla writes each
	// message as one frame, as pusher does.
	up := websocket.Upgrader{WriteBufferSize: 1 << 20}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		defer conn.Close()
		if c.op == opText || c.op == opBinary {
			err = conn.WriteMessage(c.op, c.payload)
		} else {
			err = conn.WriteControl(c.op, c.payload, time.Now().Add(waitTimeout))
		}
		if err != nil {
			t.Errorf("gorilla write: %v", err)
		}
	}))
	defer srv.Close()
	var rec *recordingConn
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		nc, err := net.Dial(network, addr)
		rec = &recordingConn{Conn: nc}
		return rec, err
	}}
	client, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_ = client.SetReadDeadline(time.Now().Add(waitTimeout))
	client.SetPingHandler(func(string) error { return nil })
	client.SetPongHandler(func(string) error { return nil })
	client.SetCloseHandler(func(int, string) error { return nil })
	_, _, _ = client.ReadMessage() // the frame, or the close (and then EOF)
	_, _, _ = client.ReadMessage() // after a control frame: the end
	rec.mu.Lock()
	defer rec.mu.Unlock()
	raw := rec.got.Bytes()
	i := bytes.Index(raw, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatalf("no handshake response in %q", raw)
	}
	return raw[i+4:]
}

// TestFrameEncoderMatchesGorilla holds pusher's frame encoder to
// gorilla's writer, byte for byte, for every opcode and each length
// encoding (7, 16 and 64 bits, and their edges).
func TestFrameEncoderMatchesGorilla(t *testing.T) {
	for _, c := range frameCases() {
		t.Run(c.name+"/"+strconv.Itoa(len(c.payload)), func(t *testing.T) {
			want := gorillaBytes(t, c)
			var fb frameBuf
			w := &sink{}
			if err := fb.add(w, c.op, c.payload); err != nil {
				t.Fatal(err)
			}
			if err := fb.flush(w); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(want, w.b.Bytes()) || w.b.Len() == 0 {
				t.Fatalf("pusher wrote % x...\ngorilla wrote % x...", head(w.b.Bytes()), head(want))
			}
			// gorilla may have sent nothing after the frame, or a close on
			// its way out: the frame itself must match exactly.
			if got := w.b.Len(); !bytes.Equal(want[:got], w.b.Bytes()) {
				t.Fatalf("frame differs")
			}
		})
	}
}

// TestFrameBufOneWrite: a batch of small frames and the ping after it
// leave in one write; a big payload is written straight from the message.
func TestFrameBufOneWrite(t *testing.T) {
	var fb frameBuf
	w := &sink{}
	for range 10 {
		if err := fb.add(w, opText, []byte("hello")); err != nil {
			t.Fatal(err)
		}
	}
	var id [8]byte
	_ = fb.add(w, opPing, pingPayload(&id, 7))
	_ = fb.flush(w)
	if w.writes != 1 || w.b.Len() != 10*(2+5)+2+8 {
		t.Fatalf("%d writes of %d bytes, want 1 of %d", w.writes, w.b.Len(), 10*7+10)
	}
	big := make([]byte, bigPayload)
	w = &sink{}
	_ = fb.add(w, opText, []byte("x"))
	_ = fb.add(w, opBinary, big)
	_ = fb.add(w, opPing, pingPayload(&id, 8))
	_ = fb.flush(w)
	if w.writes != 3 || w.b.Len() != 3+(4+bigPayload)+10 { // 32 KiB: a 16-bit length
		t.Fatalf("big payload: %d writes of %d bytes", w.writes, w.b.Len())
	}
}

// sink is a net.Conn that keeps what is written to it.
type sink struct {
	net.Conn
	b      bytes.Buffer
	writes int
}

func (s *sink) Write(p []byte) (int, error) { s.writes++; return s.b.Write(p) }

func head(b []byte) []byte { return b[:min(len(b), 16)] }
