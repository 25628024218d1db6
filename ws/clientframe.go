package ws

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
)

// What a pusher.v1 client sends is one of two JSON objects:
//
//	{"ack":[seq, ...]}        the application has these messages
//	{"refresh":"<jwt>"}       a new token for this connection's uid
//
// An ack comes for every message, so the usual spellings of both are read
// by a small scanner that allocates nothing (for acks); anything it does
// not recognise at once (escapes, odd spacing of numbers, other keys) is
// decided by encoding/json, so what is accepted is exactly what
// encoding/json accepts for that shape. FuzzClientFrame holds the two to
// the same answers.

// Errors for a client frame that is not pusher.v1: the connection closes
// with 1008 and this reason.
var (
	errNotJSON    = errors.New("not a JSON object")
	errFrameShape = errors.New(`want {"ack":[seq,...]} or {"refresh":"<token>"}`)
)

// parseClientFrame reads one client frame: each acked seq goes to onAck,
// a refresh's token is returned. It does not keep b.
func parseClientFrame(b []byte, onAck func(seq uint64)) (token string, err error) {
	if token, ok := scanClientFrame(b, onAck); ok {
		return token, nil
	}
	return decodeClientFrame(b, onAck)
}

// clientFrameJSON is the shape encoding/json decodes a client frame into.
type clientFrameJSON struct {
	Ack     *[]uint64 `json:"ack"`
	Refresh *string   `json:"refresh"`
}

// decodeClientFrame is parseClientFrame by encoding/json: one JSON
// value, an object with exactly one of the two keys and no other.
func decodeClientFrame(b []byte, onAck func(seq uint64)) (string, error) {
	if !json.Valid(b) {
		return "", errNotJSON
	}
	var f clientFrameJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil || (f.Ack == nil) == (f.Refresh == nil) {
		return "", errFrameShape
	}
	if f.Refresh != nil {
		if *f.Refresh == "" {
			return "", errFrameShape
		}
		return *f.Refresh, nil
	}
	for _, seq := range *f.Ack {
		onAck(seq)
	}
	return "", nil
}

// scanClientFrame is the fast path: {"ack":[d,d,...]} and
// {"refresh":"token"} with optional spaces, decimal seqs without sign,
// point, exponent or leading zero, and a token without escapes. ok is
// false for anything else (the caller then asks encoding/json); then
// onAck was not called.
func scanClientFrame(b []byte, onAck func(seq uint64)) (token string, ok bool) {
	s := scanner{b: b}
	if !s.byte('{') {
		return "", false
	}
	switch {
	case s.literal(`"ack"`):
		if !s.byte(':') || !s.byte('[') {
			return "", false
		}
		list := s.pos
		if !s.seqs() || !s.byte('}') || !s.atEnd() {
			return "", false
		}
		// Checked whole, so nothing is acked for a frame that is then
		// refused: report the seqs in a second pass.
		s.pos = list
		if s.byte(']') {
			return "", true
		}
		for {
			n, _ := s.seq()
			onAck(n)
			if !s.byte(',') {
				return "", true
			}
		}
	case s.literal(`"refresh"`):
		if !s.byte(':') || !s.byte('"') {
			return "", false
		}
		start := s.pos
		i := bytes.IndexAny(b[start:], "\"\\")
		if i <= 0 || b[start+i] != '"' || !validTokenBytes(b[start:start+i]) {
			return "", false
		}
		s.pos = start + i + 1
		if !s.byte('}') || !s.atEnd() {
			return "", false
		}
		return string(b[start : start+i]), true
	}
	return "", false
}

// validTokenBytes reports whether b has no control characters or
// non-ASCII bytes (which JSON would allow, and encoding/json decides).
func validTokenBytes(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// scanner walks a client frame; every method skips white space first.
type scanner struct {
	b   []byte
	pos int
}

func (s *scanner) skipSpace() {
	for s.pos < len(s.b) {
		switch s.b[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// byte consumes c.
func (s *scanner) byte(c byte) bool {
	s.skipSpace()
	if s.pos < len(s.b) && s.b[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

// literal consumes lit exactly.
func (s *scanner) literal(lit string) bool {
	s.skipSpace()
	if bytes.HasPrefix(s.b[s.pos:], []byte(lit)) {
		s.pos += len(lit)
		return true
	}
	return false
}

func (s *scanner) atEnd() bool {
	s.skipSpace()
	return s.pos == len(s.b)
}

// seqs checks a list of seqs up to and including its ']', without
// reporting them.
func (s *scanner) seqs() bool {
	if s.byte(']') {
		return true
	}
	for {
		if _, ok := s.seq(); !ok {
			return false
		}
		if s.byte(']') {
			return true
		}
		if !s.byte(',') {
			return false
		}
	}
}

// seq reads one seq; ok is false when there is none the fast path reads.
func (s *scanner) seq() (n uint64, ok bool) {
	s.skipSpace()
	start := s.pos
	for s.pos < len(s.b) && s.b[s.pos] >= '0' && s.b[s.pos] <= '9' {
		d := uint64(s.b[s.pos] - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false // overflow: encoding/json decides
		}
		n = n*10 + d
		s.pos++
	}
	digits := s.pos - start
	if digits == 0 || digits > 1 && s.b[start] == '0' {
		return 0, false
	}
	if s.pos < len(s.b) && (s.b[s.pos] == '.' || s.b[s.pos] == 'e' || s.b[s.pos] == 'E') {
		return 0, false
	}
	return n, true
}
