package intake

import (
	"encoding/binary"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// frameReader parses the frames a client sends (RFC 6455 section 5) from
// whatever bytes the socket had, in any chunking.
//
// Why not gorilla's reader: its NextReader loops over control frames until
// a data message arrives, so a goroutine must sit parked inside it for as
// long as the connection lives, and that read path needs more than the
// 2 KiB a goroutine's stack starts with: an idle connection cost a 4 KiB
// stack, the largest item it held (BENCHMARKS.md). pusher's clients only
// ever send control frames and the odd discarded message, so reading them
// takes this small state machine, fed when the socket is readable (see
// Poller), and an idle connection needs no goroutine at all. gorilla still
// does the handshake and every write.
//
// What it enforces is what gorilla's server side enforces: masked frames,
// no RSV bits (no extension is negotiated), known opcodes, control frames
// unfragmented and at most 125 bytes, continuation frames only inside a
// fragmented message, valid close codes and UTF-8 close reasons, and the
// read limit over a whole message. A message's payload is discarded
// unread (raw clients' messages are ignored), unless collect is set
// (pusher.v1 clients): then it is gathered, up to the limit, and reported
// when its last frame ends; a text message must be valid UTF-8 (1007).
//
// It is a value inside each connection's Reader, so it is kept small: the
// lengths fit 32 bits (a data frame over the limit is refused before its
// length is kept), and a payload buffer is held only while a control frame
// or a collected message is being read.
type frameReader struct {
	limit   int32 // most bytes one message may have
	msgSize int32 // bytes of the current message so far
	left    uint32

	hdr     [maxFrameHeader]byte
	mask    [4]byte
	hlen    uint8 // header bytes collected so far
	op      uint8
	pos     uint8 // payload bytes of this frame read so far, mod 4
	inFrame bool  // the header is complete; left payload bytes remain
	msgOpen bool  // a fragmented message awaits its continuation frames
	msgText bool  // the current message is text
	collect bool  // gather messages (pusher.v1) instead of skipping them

	ctl []byte  // ping, pong or close payload, unmasked; nil otherwise
	msg *msgBuf // the message being collected; nil otherwise
}

// msgBuf gathers one collected message. Buffers are pooled: a client
// message is an ack or a token refresh, and a connection holds one only
// while a message is arriving.
type msgBuf struct{ b []byte }

var msgBufs = sync.Pool{New: func() any { return &msgBuf{b: make([]byte, 0, 512)} }}

const (
	maxFrameHeader = 2 + 8 + 4 // first two bytes, 64-bit length, mask key
	maxControl     = 125
)

// frameEvent is what a completed frame asks of the connection.
type frameEvent uint8

const (
	frameNone    frameEvent = iota // nothing; keep feeding
	framePing                      // answer with a pong carrying control()
	framePong                      // the client answered a ping with control()
	frameClose                     // the client closed; see closeFrame()
	frameMessage                   // a collected message ended; see message()
)

// protocolError is a client frame RFC 6455 forbids; the connection ends
// with Code (1002, or 1009 for an over-long message).
type protocolError struct {
	Code int
	Text string
}

func (e *protocolError) Error() string {
	return "websocket: " + e.Text + " (close " + strconv.Itoa(e.Code) + ")"
}

var (
	errTooBig  = &protocolError{Code: websocket.CloseMessageTooBig, Text: "message too big"}
	errNotUTF8 = &protocolError{Code: websocket.CloseInvalidFramePayloadData, Text: "text message is not UTF-8"}
)

func protoErr(text string) error {
	return &protocolError{Code: websocket.CloseProtocolError, Text: text}
}

// feed parses b. It returns after the first frame to report (ping, pong,
// close) with n, the bytes of b consumed so far, or with n ==
// len(b) and frameNone once b is used up. After an error the reader is
// broken: stop feeding it.
func (f *frameReader) feed(b []byte) (ev frameEvent, n int, err error) {
	for n < len(b) {
		if !f.inFrame {
			k, done, err := f.readHeader(b[n:])
			n += k
			if err != nil || !done {
				return frameNone, n, err
			}
			if f.left > 0 {
				continue
			}
		} else {
			k := len(b) - n
			if uint32(k) > f.left {
				k = int(f.left)
			}
			// A control frame's payload is kept, and a collected
			// message's; otherwise a data frame's is skipped.
			switch {
			case f.ctl != nil:
				f.ctl = f.unmask(f.ctl, b[n:n+k])
			case f.msg != nil:
				f.msg.b = f.unmask(f.msg.b, b[n:n+k])
			}
			f.pos = uint8((int(f.pos) + k) & 3)
			f.left -= uint32(k)
			n += k
			if f.left > 0 {
				continue
			}
		}
		if ev, err := f.endFrame(); ev != frameNone || err != nil {
			return ev, n, err
		}
	}
	return frameNone, n, nil
}

// readHeader collects header bytes from b; done reports the header
// complete and the frame started.
func (f *frameReader) readHeader(b []byte) (n int, done bool, err error) {
	if f.hlen < 2 {
		k := copy(f.hdr[f.hlen:2], b)
		f.hlen += uint8(k)
		n += k
		if f.hlen < 2 {
			return n, false, nil
		}
		if err := f.checkFirstTwo(); err != nil {
			return n, false, err
		}
	}
	need := headerLen(f.hdr[1])
	if f.hlen < need {
		k := copy(f.hdr[f.hlen:need], b[n:])
		f.hlen += uint8(k)
		n += k
		if f.hlen < need {
			return n, false, nil
		}
	}
	return n, true, f.startFrame(need)
}

// headerLen is the header's length given its second byte: masked client
// frames carry a 4-byte key after the length.
func headerLen(b1 byte) uint8 {
	switch b1 & 0x7f {
	case 126:
		return 2 + 2 + 4
	case 127:
		return 2 + 8 + 4
	}
	return 2 + 4
}

const (
	opContinuation = 0
	opText         = websocket.TextMessage
	opBinary       = websocket.BinaryMessage
	opClose        = websocket.CloseMessage
	opPing         = websocket.PingMessage
	opPong         = websocket.PongMessage
)

// checkFirstTwo validates what the first two header bytes say.
func (f *frameReader) checkFirstTwo() error {
	b0, b1 := f.hdr[0], f.hdr[1]
	fin := b0&0x80 != 0
	op := b0 & 0x0f
	switch {
	case b0&0x70 != 0:
		return protoErr("RSV bits set")
	case b1&0x80 == 0:
		return protoErr("unmasked client frame")
	}
	switch op {
	case opClose, opPing, opPong:
		if !fin {
			return protoErr("fragmented control frame")
		}
		if b1&0x7f > maxControl {
			return protoErr("control frame over 125 bytes")
		}
	case opText, opBinary:
		if f.msgOpen {
			return protoErr("new message inside a fragmented one")
		}
	case opContinuation:
		if !f.msgOpen {
			return protoErr("continuation frame outside a message")
		}
	default:
		return protoErr("bad opcode " + strconv.Itoa(int(op)))
	}
	return nil
}

// startFrame reads the length and the mask key from the complete header
// and applies the read limit to data frames.
func (f *frameReader) startFrame(hlen uint8) error {
	b0, b1 := f.hdr[0], f.hdr[1]
	var length uint64
	switch hlen {
	case 2 + 2 + 4:
		length = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
	case 2 + 8 + 4:
		length = binary.BigEndian.Uint64(f.hdr[2:10])
		if length>>63 != 0 {
			return protoErr("frame length with the top bit set")
		}
	default:
		length = uint64(b1 & 0x7f)
	}
	copy(f.mask[:], f.hdr[hlen-4:hlen])
	f.op = b0 & 0x0f
	f.hlen, f.pos, f.inFrame, f.ctl = 0, 0, true, nil
	fin := b0&0x80 != 0
	if f.op == opText || f.op == opBinary {
		f.msgSize, f.msgText = 0, f.op == opText
		if f.collect {
			f.msg = msgBufs.Get().(*msgBuf)
		}
	}
	switch f.op {
	case opText, opBinary, opContinuation:
		if length > uint64(f.limit-f.msgSize) {
			return errTooBig
		}
		f.left = uint32(length)
		f.msgSize += int32(length)
		f.msgOpen = !fin
		return nil
	}
	f.left = uint32(length) // a control frame: at most 125
	switch f.op {
	case opPong:
		// A pong answers every batch pusher writes, so it must not
		// allocate: its payload (8 bytes for pusher's pings) is gathered
		// in the header buffer, free until the next frame begins, and is
		// only valid during the Ponged call. A longer one is not pusher's.
		if length <= uint64(len(f.hdr)) {
			f.ctl = f.hdr[:0:length]
		} else {
			f.ctl = make([]byte, 0, length)
		}
	case opPing, opClose:
		// Kept for the Conn; rare, so allocated when needed (an empty
		// payload allocates nothing).
		f.ctl = make([]byte, 0, length)
	}
	return nil
}

// unmask appends p, unmasked, to dst.
func (f *frameReader) unmask(dst, p []byte) []byte {
	start := len(dst)
	dst = append(dst, p...)
	for i := range p {
		dst[start+i] ^= f.mask[(int(f.pos)+i)&3]
	}
	return dst
}

// endFrame finishes the frame whose payload is complete.
func (f *frameReader) endFrame() (frameEvent, error) {
	f.inFrame = false
	switch f.op {
	case opPing:
		return framePing, nil
	case opPong:
		return framePong, nil
	case opClose:
		if len(f.ctl) == 1 {
			return frameNone, protoErr("close frame with a 1-byte payload")
		}
		if len(f.ctl) >= 2 {
			code := int(binary.BigEndian.Uint16(f.ctl))
			if !validCloseCode(code) {
				return frameNone, protoErr("bad close code " + strconv.Itoa(code))
			}
			if !utf8.Valid(f.ctl[2:]) {
				return frameNone, protoErr("close reason is not UTF-8")
			}
		}
		return frameClose, nil
	case opText, opBinary, opContinuation:
		if f.msgOpen || f.msg == nil {
			return frameNone, nil
		}
		if f.msgText && !utf8.Valid(f.msg.b) {
			return frameNone, errNotUTF8
		}
		return frameMessage, nil
	}
	return frameNone, nil
}

// control is the payload of the ping or pong just reported. It is the
// caller's to keep once release was called.
func (f *frameReader) control() []byte { return f.ctl }

// closeFrame is the code and reason of the close frame just reported;
// 1005 (no status) when it had none.
func (f *frameReader) closeFrame() (int, string) {
	if len(f.ctl) < 2 {
		return websocket.CloseNoStatusReceived, ""
	}
	return int(binary.BigEndian.Uint16(f.ctl)), string(f.ctl[2:])
}

// message is the collected message just reported: whether it is text,
// and its payload, valid until releaseMessage.
func (f *frameReader) message() (text bool, payload []byte) { return f.msgText, f.msg.b }

// release lets go of the last control payload, so an idle connection
// holds none.
func (f *frameReader) release() { f.ctl = nil }

// releaseMessage gives the last collected message's buffer back.
func (f *frameReader) releaseMessage() {
	if f.msg != nil {
		f.msg.b = f.msg.b[:0]
		if cap(f.msg.b) <= maxPooledMessage {
			msgBufs.Put(f.msg)
		}
		f.msg = nil
	}
}

// maxPooledMessage is the largest message buffer kept for reuse.
const maxPooledMessage = 64 << 10

// validCloseCode reports whether a client may send code (RFC 6455 7.4 and
// the IANA registry); gorilla accepts the same set.
func validCloseCode(code int) bool {
	switch {
	case code >= 3000 && code <= 4999:
		return true
	case code >= 1000 && code <= 1014:
		return code != 1004 && code != 1005 && code != 1006
	}
	return false
}
