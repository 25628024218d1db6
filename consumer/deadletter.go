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
	PublishedAt     time.Time // the original's first JetStream publish time; zero if not recorded
	MsgID           string    // the publisher's Nats-Msg-Id, if it set one
	Data            []byte
	Header          nats.Header // the original publisher's headers; Nats-* and Pusher-* removed, except the policy (Pusher-TTL, Pusher-Offline)
}

// Expired reports whether the dead letter's Pusher-TTL, counted from its
// first publish (or, for a dead letter that did not record it, from when
// it was stored), has passed at now. A malformed TTL never expires: it
// was warned about when the message was first pulled.
func (dl DeadLetter) Expired(now time.Time) bool {
	v := dl.Header.Get(wire.HeaderTTL)
	if v == "" {
		return false
	}
	ttl, err := wire.ParseTTL(v)
	if err != nil {
		return false
	}
	from := dl.PublishedAt
	if from.IsZero() {
		from = dl.StoredAt
	}
	return wire.Policy{TTL: ttl}.Expired(from, now)
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
		if publisherHeader(k) {
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
	if v := h.Get(wire.HeaderPublishedAt); v != "" {
		if dl.PublishedAt, err = time.Parse(time.RFC3339Nano, v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", wire.HeaderPublishedAt, err))
		}
	}
	dl.MsgID = h.Get(wire.HeaderMsgID)
	if len(errs) > 0 {
		return dl, fmt.Errorf("%w: %w", ErrMalformedDeadLetter, errors.Join(errs...))
	}
	return dl, nil
}

// letter is what a dead letter is built from: the failed delivery of one
// message of PUSH.
type letter struct {
	uid, reason, subject string
	streamSeq            uint64    // this copy's sequence in PUSH
	streamTime           time.Time // this copy's JetStream publish time
	deliveries           uint64
	// The message as first published, which a replay restores: its seq
	// (HeaderOriginalSeq), publish time and Nats-Msg-Id.
	seq       uint64
	published time.Time
	msgID     string
	header    nats.Header
	data      []byte
}

// publisherHeader reports whether a message's header k is its
// publisher's to keep through dead-lettering and replay: not NATS's own
// (Nats-Msg-Id and the like) and not pusher's bookkeeping, except the
// delivery policy, which holds for the message's whole life.
func publisherHeader(k string) bool {
	switch {
	case k == wire.HeaderTTL || k == wire.HeaderOffline:
		return true
	case strings.HasPrefix(k, "Nats-") || strings.HasPrefix(k, "Pusher-"):
		return false
	}
	return true
}

// deadLetterMsg builds the PUSH_DLQ message for a failed original. It
// keeps the payload and the publisher's headers except Nats-* ones, and
// sets a Nats-Msg-Id so a crash between publishing the dead letter and
// terminating the original does not store it twice.
func deadLetterMsg(l letter, now time.Time) *nats.Msg {
	out := nats.Header{}
	for k, v := range l.header {
		if publisherHeader(k) {
			out[k] = v
		}
	}
	out.Set(wire.HeaderReason, l.reason)
	out.Set(wire.HeaderOriginalSubject, l.subject)
	out.Set(wire.HeaderOriginalSeq, strconv.FormatUint(l.seq, 10))
	out.Set(wire.HeaderDeliveries, strconv.FormatUint(l.deliveries, 10))
	out.Set(wire.HeaderFailedAt, now.UTC().Format(time.RFC3339Nano))
	out.Set(wire.HeaderPublishedAt, l.published.UTC().Format(time.RFC3339Nano))
	if l.msgID != "" {
		out.Set(wire.HeaderMsgID, l.msgID)
	}
	// This copy's sequence plus publish time: unique even if PUSH is
	// recreated and its sequences start again.
	out.Set(jetstream.MsgIDHeader, "pusher-dl-"+strconv.FormatUint(l.streamSeq, 10)+"-"+strconv.FormatInt(l.streamTime.UnixNano(), 10))
	return &nats.Msg{Subject: wire.DLQSubject(l.uid), Header: out, Data: l.data}
}

// replayOf is the PUSH_DLQ sequence a replayed message carries
// (HeaderReplayOf), or 0 for a message that is no replay, or whose header
// is malformed.
func replayOf(h nats.Header) uint64 {
	v := h.Get(wire.HeaderReplayOf)
	if v == "" {
		return 0
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// origin is the message as first published: for a replay (it carries
// HeaderOriginalSeq) what its headers recorded, else this copy's own
// sequence, publish time and Nats-Msg-Id. A malformed header is ignored:
// the copy's own value stands.
func origin(h nats.Header, streamSeq uint64, streamTime time.Time) (seq uint64, published time.Time, msgID string) {
	seq, published = streamSeq, streamTime
	if len(h) == 0 {
		return seq, published, ""
	}
	v := h.Get(wire.HeaderOriginalSeq)
	if v == "" {
		return seq, published, h.Get(jetstream.MsgIDHeader)
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil && n > 0 {
		seq = n
	}
	if t, err := time.Parse(time.RFC3339Nano, h.Get(wire.HeaderPublishedAt)); err == nil {
		published = t
	}
	return seq, published, h.Get(wire.HeaderMsgID)
}
