package consumer

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pusher-io/pusher/hub"
)

var subjectTests = []struct {
	name    string
	give    string
	wantUID string
	wantErr bool
}{
	{"plain", "push.123", "123", false},
	{"unicode", "push.ユーザー", "ユーザー", false},
	{"no prefix", "dlq.push.123", "", true},
	{"empty uid", "push.", "", true},
	{"two tokens", "push.a.b", "", true},
	{"wildcard", "push.*", "", true},
	{"too long", "push." + strings.Repeat("a", 129), "", true},
	{"control", "push.a\x01", "", true},
}

func TestUIDFromSubject(t *testing.T) {
	for _, tt := range subjectTests {
		t.Run(tt.name, func(t *testing.T) {
			uid, err := UIDFromSubject(tt.give)
			if (err != nil) != tt.wantErr || uid != tt.wantUID {
				t.Fatalf("UIDFromSubject(%q) = %q, %v", tt.give, uid, err)
			}
			if err != nil && !errors.Is(err, hub.ErrBadUID) {
				t.Fatalf("error %v does not match hub.ErrBadUID", err)
			}
		})
	}
}

// FuzzUIDFromSubject: a subject is accepted exactly when it is push.<valid
// uid>, and accepted uids round-trip through PushSubject.
func FuzzUIDFromSubject(f *testing.F) {
	for _, tt := range subjectTests {
		f.Add(tt.give)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		uid, err := UIDFromSubject(subject)
		if err != nil {
			return
		}
		if hub.ValidUID(uid) != nil {
			t.Fatalf("accepted invalid uid %q from %q", uid, subject)
		}
		if PushSubject(uid) != subject {
			t.Fatalf("round trip: %q -> %q -> %q", subject, uid, PushSubject(uid))
		}
	})
}

func TestParseDeadLetter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := deadLetterMsg("u1", ReasonOffline, "push.u1", 42, 2, now, nats.Header{"X-App": {"v"}, "Nats-Msg-Id": {"orig"}}, []byte("hi"), now)
	dl, err := ParseDeadLetter(m.Subject, 7, m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if dl.UID != "u1" || dl.Reason != ReasonOffline || dl.OriginalSeq != 42 || dl.Deliveries != 2 ||
		!dl.FailedAt.Equal(now) || dl.Seq != 7 || string(dl.Data) != "hi" || dl.OriginalSubject != "push.u1" {
		t.Fatalf("parsed %+v", dl)
	}
	if dl.Header.Get("X-App") != "v" || dl.Header.Get("Nats-Msg-Id") != "" || dl.Header.Get(HeaderReason) != "" {
		t.Fatalf("headers kept: %v", dl.Header)
	}

	bad := []struct {
		name    string
		subject string
		h       nats.Header
	}{
		{"no reason", "dlq.push.u1", nats.Header{}},
		{"bad seq", "dlq.push.u1", nats.Header{HeaderReason: {"offline"}, HeaderOriginalSeq: {"x"}}},
		{"negative deliveries", "dlq.push.u1", nats.Header{HeaderReason: {"offline"}, HeaderDeliveries: {"-1"}}},
		{"bad time", "dlq.push.u1", nats.Header{HeaderReason: {"offline"}, HeaderFailedAt: {"yesterday"}}},
		{"bad subject", "elsewhere", nats.Header{HeaderReason: {"offline"}}},
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
		for k, v := range map[string]string{HeaderReason: reason, HeaderOriginalSeq: seq, HeaderDeliveries: deliveries, HeaderFailedAt: failedAt} {
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
		if hub.ValidUID(dl.UID) != nil || dl.Reason == "" || dl.Deliveries < 0 {
			t.Fatalf("accepted %+v", dl)
		}
	})
}
