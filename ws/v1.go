package ws

import (
	"encoding/base64"
	"errors"
	"net"
	"strconv"

	"go.uber.org/zap"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/hub"
)

// Subprotocol is the WebSocket subprotocol of pusher's own client
// protocol: a client that asks for it gets every message as a JSON
// envelope ({"seq","data" or "data_b64","id","ts"}) and confirms each with
// {"ack":[seq,...]}, and may refresh its token in band. Other clients get
// raw frames.
const Subprotocol = "pusher.v1"

// confirmByAck is the confirmation of pusher.v1 connections, whatever
// Config.Confirm says: the client's application acks each message. (The
// client asked for it by asking for pusher.v1.)
const confirmByAck Confirm = -1

// confirmMode is how this connection's messages are confirmed.
func (c *conn) confirmMode() Confirm {
	if c.v1 != nil {
		return confirmByAck
	}
	return c.h.cfg.Confirm
}

// v1State is a pusher.v1 connection's own state, guarded by conn.mu: the
// messages written and not acked yet, in write order, and the frames the
// server owes the client (answers to refreshes).
type v1State struct {
	pending []pendingAck
	notes   [][]byte
}

// pendingAck is a message written to a pusher.v1 client and not acked.
type pendingAck struct {
	m  *hub.Message
	at instant // written
}

// The methods below take a nil *v1State (a raw connection) as empty.

func (s *v1State) pendingCount() int {
	if s == nil {
		return 0
	}
	return len(s.pending)
}

func (s *v1State) hasNotes() bool { return s != nil && len(s.notes) > 0 }

// since is when the oldest unacked message was written; zero when none is.
func (s *v1State) since() instant {
	if s == nil || len(s.pending) == 0 {
		return 0
	}
	return s.pending[0].at
}

// takeNotes takes the frames the server owes the client.
func (s *v1State) takeNotes() [][]byte {
	if s == nil {
		return nil
	}
	notes := s.notes
	s.notes = nil
	return notes
}

// takeAll takes every unacked message; an ack that comes afterwards
// confirms nothing.
func (s *v1State) takeAll() []*hub.Message {
	if s == nil || len(s.pending) == 0 {
		return nil
	}
	out := make([]*hub.Message, len(s.pending))
	for i, p := range s.pending {
		out[i] = p.m
	}
	s.pending = nil
	return out
}

// recordAckWaitLocked records batch as written, before the write: the
// client cannot ack a message before it arrived, so the ack always finds
// it here. c.mu must be held.
func (c *conn) recordAckWaitLocked(batch []*hub.Message) {
	if len(batch) == 0 {
		return
	}
	now := c.h.now()
	waiting := len(c.v1.pending) > 0
	for _, m := range batch {
		c.v1.pending = append(c.v1.pending, pendingAck{m: m, at: now})
	}
	if !waiting {
		// The first message to await an ack: the timer must fire by its
		// ConfirmTimeout.
		c.timer.Reset(c.untilNextTick(now))
	}
}

// acked confirms every pending message with seq (a message redelivered
// while its first copy awaited the ack may be pending twice). It returns
// the confirmed messages and when each was written, to be finished
// outside c.mu. c.mu must be held.
func (s *v1State) acked(seq uint64, done []pendingAck) []pendingAck {
	kept := s.pending[:0]
	for _, p := range s.pending {
		if p.m.Seq == seq {
			done = append(done, p)
			continue
		}
		kept = append(kept, p)
	}
	clear(s.pending[len(kept):])
	s.pending = kept
	return done
}

// addMessage adds m to fb as this connection's clients expect it: its
// payload as a text or binary frame, or for pusher.v1 the JSON envelope.
func (c *conn) addMessage(fb *frameBuf, nc net.Conn, m *hub.Message) error {
	if c.v1 == nil {
		op := opText
		if m.Binary {
			op = opBinary
		}
		return fb.add(nc, op, m.Data)
	}
	fb.env = appendEnvelope(fb.env[:0], m)
	return fb.add(nc, opText, fb.env)
}

// appendEnvelope appends m's pusher.v1 envelope: {"seq":N,"data":"..."}
// for a UTF-8 payload, else {"seq":N,"data_b64":"..."}, with "id" (the
// publisher's Nats-Msg-Id) and "ts" (JetStream publish time, RFC 3339
// with milliseconds) when known. It appends into dst's storage: no
// allocation once dst is big enough.
func appendEnvelope(dst []byte, m *hub.Message) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	if m.Binary {
		dst = append(dst, `,"data_b64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, m.Data)
		dst = append(dst, '"')
	} else {
		dst = append(dst, `,"data":`...)
		dst = appendJSONString(dst, m.Data)
	}
	if m.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = appendJSONString(dst, []byte(m.ID))
	}
	if !m.Published.IsZero() {
		dst = append(dst, `,"ts":"`...)
		dst = m.Published.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// appendJSONString appends s, valid UTF-8, as a JSON string: quotes,
// backslashes and control characters escaped (RFC 8259 7), nothing else.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i, b := range s {
		if b >= 0x20 && b != '"' && b != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch b {
		case '"', '\\':
			dst = append(dst, '\\', b)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Message implements intake.Conn: a pusher.v1 client's frame, an ack or
// a token refresh (only pusher.v1 connections are read for messages).
// Anything else breaks the protocol: close 1008 with the reason.
func (c *conn) Message(text bool, payload []byte) {
	if !text {
		c.Violated(closePolicy, "pusher.v1 frames are JSON text")
		return
	}
	var done []pendingAck
	c.mu.Lock()
	token, err := parseClientFrame(payload, func(seq uint64) { done = c.v1.acked(seq, done) })
	c.mu.Unlock()
	if err != nil {
		c.Violated(closePolicy, err.Error())
		return
	}
	if token != "" {
		c.refresh(token)
	}
	if len(done) == 0 {
		return
	}
	now := c.h.now()
	for _, p := range done {
		p.m.Finish(nil)
		c.h.met.confirmLatency.Observe(now.sub(p.at).Seconds())
	}
}

// closePolicy is RFC 6455's 1008: a message that violates the protocol
// this endpoint speaks.
const closePolicy = 1008

// refresh verifies a new token for this connection's uid and moves its
// expiry; the client is told either way (refreshed, or an error frame that
// changes nothing: the old expiry still closes with 4003).
func (c *conn) refresh(token string) {
	claims, reason, err := c.h.verify(token)
	if err == nil && claims.UID != c.uid {
		reason, err = "token is for another user", errOtherUID
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.h.log.Info(evRejected, zap.String("reason", "refresh: "+reason), zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Error(err))
		c.noteLocked(appendNote(nil, "error", "refresh: "+reason, 0))
		return
	}
	c.expires = c.h.instantOf(claims.ExpiresAt)
	if c.state == stateOpen {
		c.timer.Reset(c.untilNextTick(c.h.now()))
	}
	var exp int64
	if !claims.ExpiresAt.IsZero() {
		exp = claims.ExpiresAt.Unix()
	}
	c.noteLocked(appendNote(nil, "refreshed", "", exp))
}

var errOtherUID = errors.New("refresh token names another uid")

// noteLocked queues a server frame for the writer. c.mu must be held.
func (c *conn) noteLocked(note []byte) {
	c.v1.notes = append(c.v1.notes, note)
	c.startWriterLocked()
}

// appendNote appends a pusher.v1 server frame: {"type":"refreshed","exp":N}
// or {"type":"error","error":"..."}.
func appendNote(dst []byte, typ, msg string, exp int64) []byte {
	dst = append(dst, `{"type":"`...)
	dst = append(dst, typ...)
	dst = append(dst, '"')
	if msg != "" {
		dst = append(dst, `,"error":`...)
		dst = appendJSONString(dst, []byte(msg))
	}
	if exp != 0 {
		dst = append(dst, `,"exp":`...)
		dst = strconv.AppendInt(dst, exp, 10)
	}
	return append(dst, '}')
}

// verify checks a token as the upgrade does: the claims, or a generic
// reason for the client (details go to the log via err only).
func (h *Handler) verify(tok string) (auth.Claims, string, error) {
	if len(tok) > h.verifier.MaxTokenBytes() {
		return auth.Claims{}, "token too large", auth.ErrTokenTooLarge
	}
	return h.checkToken(tok)
}
