package hub

import (
	"errors"
	"sync/atomic"
	"time"
)

// Outcomes a Reporter may see besides a connection's own write error.
var (
	// ErrQueueFull is reported for a connection whose send queue had no room.
	ErrQueueFull = errors.New("send queue full")
	// ErrOffline is reported by a router that learns only after Route
	// returned that the uid has no connection anywhere (a cluster route's
	// "no responders"). The consumer dead-letters such a message as offline.
	ErrOffline = errors.New("uid offline")
	// ErrTimeout is reported by a router that got no outcome in time (a
	// lost cluster reply). The consumer retries such a message.
	ErrTimeout = errors.New("no delivery outcome in time")
	// ErrUnconfirmed is reported for a message the client did not confirm
	// within the confirm timeout; its connection was closed as
	// unresponsive. The consumer retries such a message.
	ErrUnconfirmed = errors.New("not confirmed by the client in time")
)

// Reporter learns the outcome of one Message. Report is called exactly once
// per Route that found at least one connection, from whichever goroutine
// settled the outcome (a connection's writer, or Route itself), so it must
// not block for long.
type Reporter interface {
	Report(m *Message, err error)
}

// Message is one payload on its way to every local connection of a uid.
// The router's caller owns it; connections may still hold it for a moment
// after the Reporter was called (a success is reported on the first
// write), so it must not be reused before Pending is zero.
type Message struct {
	// Data is written as one WebSocket frame; connections must not modify it.
	Data []byte
	// Binary selects a binary frame; otherwise a text frame (valid UTF-8).
	Binary bool
	// Seq is the message's sequence in stream PUSH (a replayed dead
	// letter keeps its original one), ID the publisher's Nats-Msg-Id
	// (may be empty) and Published its JetStream publish time: what a
	// pusher.v1 client is told with the payload, and what it acks by.
	Seq       uint64
	ID        string
	Published time.Time
	// Reporter is told the outcome; it must be set before Route.
	Reporter Reporter

	pending  atomic.Int32 // connections (plus Route's hold) yet to finish
	reported atomic.Bool
	err      atomic.Pointer[error]
}

// Finish is called by a connection once per Enqueue that returned true:
// with nil once the message is delivered on it (the client confirmed it,
// or, where only the write counts, the write completed), or with why it
// was not.
func (m *Message) Finish(err error) {
	if err == nil {
		if m.reported.CompareAndSwap(false, true) {
			m.Reporter.Report(m, nil)
		}
		m.pending.Add(-1)
		return
	}
	m.fail(err)
}

// Pending returns how many connections still hold m. Zero after the
// outcome is reported means m can be reused.
func (m *Message) Pending() int { return int(m.pending.Load()) }

// fail records err and drops one hold; the last hold to go reports the
// failure if no connection succeeded.
func (m *Message) fail(err error) {
	m.err.Store(&err)
	m.release()
}

// release drops one hold; when none remain and nothing succeeded, it
// reports the last recorded error.
func (m *Message) release() {
	if m.pending.Add(-1) != 0 {
		return
	}
	if m.reported.CompareAndSwap(false, true) {
		err := ErrQueueFull
		if p := m.err.Load(); p != nil {
			err = *p
		}
		m.Reporter.Report(m, err)
	}
}
