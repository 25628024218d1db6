package ws

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/gorilla/websocket"
)

// Why pusher encodes the frames it sends: delivery confirmation needs each
// batch of frames followed by a ping, and they should leave in one
// write(2). gorilla writes every message and every control frame with a
// syscall of its own (and allocates a buffer and a timer per control
// frame). Server frames are simple (RFC 6455 5.2: FIN, an opcode, a
// length, no mask, no extension negotiated here), and frameBufTest holds
// this encoder to gorilla's, byte for byte. gorilla still does the
// handshake.

// Opcodes of the frames pusher sends.
const (
	opText   = websocket.TextMessage
	opBinary = websocket.BinaryMessage
	opClose  = websocket.CloseMessage
	opPing   = websocket.PingMessage
	opPong   = websocket.PongMessage
)

// frameBuf gathers the frames of one writer round, to be written with one
// Write. One belongs to a writer goroutine at a time (Handler.frameBufs),
// so an idle connection holds none.
type frameBuf struct {
	b    []byte
	env  []byte  // a pusher.v1 envelope being built, before it is added
	ping [8]byte // the payload of the ping being added: here, so it is not allocated
}

// Bytes a frameBuf holds before it is written out: more than any batch of
// ordinary messages needs, small enough to keep pooled.
const (
	frameBufFlush = 64 << 10
	// frameBufKeep is the largest buffer put back in the pool; a bigger
	// one (one huge message) is let go.
	frameBufKeep = 256 << 10
	// bigPayload is written straight from the message after its header
	// instead of copied: copying a megabyte to save a syscall is no gain.
	bigPayload = 32 << 10
)

// appendHeader appends the header of one unmasked, final frame.
func appendHeader(b []byte, op int, n int) []byte {
	b = append(b, 0x80|byte(op))
	switch {
	case n <= 125:
		return append(b, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
}

// add appends one frame. A big payload is written at once, after what was
// gathered, so that it need not be copied: w writes it under deadline.
func (f *frameBuf) add(w net.Conn, op int, payload []byte) error {
	f.b = appendHeader(f.b, op, len(payload))
	if len(payload) >= bigPayload {
		if err := f.flush(w); err != nil {
			return err
		}
		if _, err := w.Write(payload); err != nil {
			return fmt.Errorf("write frame: %w", err)
		}
		return nil
	}
	f.b = append(f.b, payload...)
	if len(f.b) >= frameBufFlush {
		return f.flush(w)
	}
	return nil
}

// flush writes what was gathered, in one Write.
func (f *frameBuf) flush(w net.Conn) error {
	if len(f.b) == 0 {
		return nil
	}
	_, err := w.Write(f.b)
	f.b = f.b[:0]
	if err != nil {
		return fmt.Errorf("write frames: %w", err)
	}
	return nil
}

// pingPayload is the payload of ping id: 8 bytes, big-endian. A pong
// echoing it confirms every frame written before that ping.
func pingPayload(dst *[8]byte, id uint64) []byte {
	binary.BigEndian.PutUint64(dst[:], id)
	return dst[:]
}

// pongID reads the id a pong echoes; false for a payload pusher did not
// send (an unsolicited pong, a client's own format).
func pongID(payload []byte) (uint64, bool) {
	if len(payload) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(payload), true
}

// deadline is when a write started now must be done.
func deadline(d time.Duration) time.Time { return time.Now().Add(d) }
