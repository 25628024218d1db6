package consumer

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pusher-io/pusher/wire"
)

func TestParseDeadLetter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := deadLetterMsg(letter{
		uid: "u1", reason: wire.ReasonOffline, subject: "push.u1",
		streamSeq: 42, streamTime: now, deliveries: 2,
		seq: 42, published: now, msgID: "orig",
		header: nats.Header{"X-App": {"v"}, "Nats-Msg-Id": {"orig"}}, data: []byte("hi"),
	}, now)
	dl, err := ParseDeadLetter(m.Subject, 7, m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if dl.UID != "u1" || dl.Reason != wire.ReasonOffline || dl.OriginalSeq != 42 || dl.Deliveries != 2 ||
		!dl.FailedAt.Equal(now) || dl.Seq != 7 || string(dl.Data) != "hi" || dl.OriginalSubject != "push.u1" {
		t.Fatalf("parsed %+v", dl)
	}
	if dl.Header.Get("X-App") != "v" || dl.Header.Get("Nats-Msg-Id") != "" || dl.Header.Get(wire.HeaderReason) != "" {
		t.Fatalf("headers kept: %v", dl.Header)
	}
	if dl.MsgID != "orig" || !dl.PublishedAt.Equal(now) {
		t.Fatalf("origin not kept: id %q, published %v", dl.MsgID, dl.PublishedAt)
	}

	bad := []struct {
		name    string
		subject string
		h       nats.Header
	}{
		{"no reason", "dlq.push.u1", nats.Header{}},
		{"bad seq", "dlq.push.u1", nats.Header{wire.HeaderReason: {"offline"}, wire.HeaderOriginalSeq: {"x"}}},
		{"negative deliveries", "dlq.push.u1", nats.Header{wire.HeaderReason: {"offline"}, wire.HeaderDeliveries: {"-1"}}},
		{"bad time", "dlq.push.u1", nats.Header{wire.HeaderReason: {"offline"}, wire.HeaderFailedAt: {"yesterday"}}},
		{"bad subject", "elsewhere", nats.Header{wire.HeaderReason: {"offline"}}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseDeadLetter(tt.subject, 1, tt.h, nil); !errors.Is(err, ErrMalformedDeadLetter) {
				t.Fatalf("err %v, want ErrMalformedDeadLetter", err)
			}
		})
	}
}

// FuzzParseDeadLetter feeds hostile header values: it must never panic,
// and a dead letter it accepts names a valid uid and a reason.
func FuzzParseDeadLetter(f *testing.F) {
	f.Add("dlq.push.u1", "offline", "42", "2", "2026-01-02T03:04:05Z")
	f.Add("dlq.push.u1", "", "x", "-1", "yesterday")
	f.Add("dlq.push.", "max_deliver", "18446744073709551616", "9999999999999999999", "")
	f.Fuzz(func(t *testing.T, subject, reason, seq, deliveries, failedAt string) {
		h := nats.Header{}
		for k, v := range map[string]string{wire.HeaderReason: reason, wire.HeaderOriginalSeq: seq, wire.HeaderDeliveries: deliveries, wire.HeaderFailedAt: failedAt} {
			if v != "" {
				h.Set(k, v)
			}
		}
		dl, err := ParseDeadLetter(subject, 1, h, []byte("x"))
		if err != nil {
			if !errors.Is(err, ErrMalformedDeadLetter) {
				t.Fatalf("error %v does not wrap ErrMalformedDeadLetter", err)
			}
			return
		}
		if wire.ValidUID(dl.UID) != nil || dl.Reason == "" || dl.Deliveries < 0 {
			t.Fatalf("accepted %+v", dl)
		}
	})
}

func TestOrigin(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	later := at.Add(time.Hour)
	tests := []struct {
		name    string
		give    nats.Header
		wantSeq uint64
		wantAt  time.Time
		wantID  string
	}{
		{name: "no headers", give: nil, wantSeq: 9, wantAt: later},
		{name: "publisher's id", give: nats.Header{"Nats-Msg-Id": {"abc"}}, wantSeq: 9, wantAt: later, wantID: "abc"},
		{name: "a replay", give: nats.Header{
			"Nats-Msg-Id": {"pusher-replay-3-1"}, wire.HeaderOriginalSeq: {"4"},
			wire.HeaderPublishedAt: {at.Format(time.RFC3339Nano)}, wire.HeaderMsgID: {"abc"},
		}, wantSeq: 4, wantAt: at, wantID: "abc"},
		{name: "a replay of a message without an id", give: nats.Header{
			"Nats-Msg-Id": {"pusher-replay-3-1"}, wire.HeaderOriginalSeq: {"4"},
		}, wantSeq: 4, wantAt: later},
		{name: "malformed replay headers", give: nats.Header{
			wire.HeaderOriginalSeq: {"four"}, wire.HeaderPublishedAt: {"yesterday"},
		}, wantSeq: 9, wantAt: later},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, published, id := origin(tt.give, 9, later)
			if seq != tt.wantSeq || !published.Equal(tt.wantAt) || id != tt.wantID {
				t.Fatalf("origin = %d, %v, %q; want %d, %v, %q", seq, published, id, tt.wantSeq, tt.wantAt, tt.wantID)
			}
		})
	}
}
