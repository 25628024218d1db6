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
	m := deadLetterMsg("u1", wire.ReasonOffline, "push.u1", 42, 2, now, nats.Header{"X-App": {"v"}, "Nats-Msg-Id": {"orig"}}, []byte("hi"), now)
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
