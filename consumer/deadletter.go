package consumer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/wire"
)

// DeadLetter is one message in PUSH_DLQ.
type DeadLetter struct {
	Seq             uint64    // sequence in PUSH_DLQ
	StoredAt        time.Time // when PUSH_DLQ stored it (zero from ParseDeadLetter)
	UID             string    // from the DLQ subject
	Reason          string
	OriginalSubject string
	OriginalSeq     uint64
	Deliveries      int
	FailedAt        time.Time
	Data            []byte
	Header          nats.Header // the original publisher's headers; Pusher-* and Nats-* removed
}

// ErrMalformedDeadLetter is returned by ParseDeadLetter for a PUSH_DLQ
// message that pusher did not write, or that was altered.
var ErrMalformedDeadLetter = errors.New("malformed dead letter")

// ParseDeadLetter reads a stored PUSH_DLQ message. It never panics on
// hostile input; anything off returns an error wrapping
// ErrMalformedDeadLetter with the DeadLetter filled as far as it could be.
func ParseDeadLetter(subject string, seq uint64, h nats.Header, data []byte) (DeadLetter, error) {
	dl := DeadLetter{Seq: seq, Data: data, Header: nats.Header{}}
	for k, v := range h {
		if !strings.HasPrefix(k, "Pusher-") && !strings.HasPrefix(k, "Nats-") {
			dl.Header[k] = v
		}
	}
	dl.Reason = h.Get(wire.HeaderReason)
	dl.OriginalSubject = h.Get(wire.HeaderOriginalSubject)
	var errs []error
	uid, err := wire.UIDFromDLQSubject(subject)
	if err != nil {
		errs = append(errs, err)
	}
	dl.UID = uid
	if dl.Reason == "" {
		errs = append(errs, errors.New("no "+wire.HeaderReason))
	}
	if v := h.Get(wire.HeaderOriginalSeq); v != "" {
		if dl.OriginalSeq, err = strconv.ParseUint(v, 10, 64); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", wire.HeaderOriginalSeq, err))
		}
	}
	if v := h.Get(wire.HeaderDeliveries); v != "" {
		if dl.Deliveries, err = strconv.Atoi(v); err != nil || dl.Deliveries < 0 {
			errs = append(errs, fmt.Errorf("%s %q: not a count", wire.HeaderDeliveries, v))
		}
	}
	if v := h.Get(wire.HeaderFailedAt); v != "" {
		if dl.FailedAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", wire.HeaderFailedAt, err))
		}
	}
	if len(errs) > 0 {
		return dl, fmt.Errorf("%w: %w", ErrMalformedDeadLetter, errors.Join(errs...))
	}
	return dl, nil
}

// deadLetterMsg builds the PUSH_DLQ message for a failed original. It
// keeps the payload and the publisher's headers except Nats-* ones, and
// sets a Nats-Msg-Id so a crash between publishing the dead letter and
// terminating the original does not store it twice.
func deadLetterMsg(uid, reason, subject string, seq uint64, deliveries uint64, published time.Time, h nats.Header, data []byte, now time.Time) *nats.Msg {
	out := nats.Header{}
	for k, v := range h {
		if !strings.HasPrefix(k, "Nats-") && !strings.HasPrefix(k, "Pusher-") {
			out[k] = v
		}
	}
	out.Set(wire.HeaderReason, reason)
	out.Set(wire.HeaderOriginalSubject, subject)
	out.Set(wire.HeaderOriginalSeq, strconv.FormatUint(seq, 10))
	out.Set(wire.HeaderDeliveries, strconv.FormatUint(deliveries, 10))
	out.Set(wire.HeaderFailedAt, now.UTC().Format(time.RFC3339Nano))
	// Sequence plus publish time: unique even if PUSH is recreated and
	// its sequences start again.
	out.Set(jetstream.MsgIDHeader, "pusher-dl-"+strconv.FormatUint(seq, 10)+"-"+strconv.FormatInt(published.UnixNano(), 10))
	return &nats.Msg{Subject: wire.DLQSubject(uid), Header: out, Data: data}
}
