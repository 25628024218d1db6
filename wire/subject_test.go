package wire

import (
	"errors"
	"strings"
	"testing"
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
	{"full wildcard", "push.>", "", true},
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
			if err != nil && !errors.Is(err, ErrBadUID) {
				t.Fatalf("error %v does not match ErrBadUID", err)
			}
		})
	}
}

// Every subject kind round-trips through its builder and parser.
func TestSubjectsRoundTrip(t *testing.T) {
	kinds := []struct {
		name  string
		build func(string) string
		parse func(string) (string, error)
	}{
		{"push", PushSubject, UIDFromSubject},
		{"dlq", DLQSubject, UIDFromDLQSubject},
		{"kick", KickSubject, UIDFromKickSubject},
		{"replay", ReplaySubject, UIDFromReplaySubject},
		{"deliver", DeliverSubject, UIDFromDeliverSubject},
	}
	for _, k := range kinds {
		uid, err := k.parse(k.build("u-1"))
		if err != nil || uid != "u-1" {
			t.Errorf("%s: %q, %v", k.name, uid, err)
		}
		if _, err := k.parse(k.build("a.b")); err == nil {
			t.Errorf("%s: accepted two tokens", k.name)
		}
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
			if !errors.Is(err, ErrBadUID) {
				t.Fatalf("error %v does not match ErrBadUID", err)
			}
			return
		}
		if ValidUID(uid) != nil {
			t.Fatalf("accepted invalid uid %q from %q", uid, subject)
		}
		if PushSubject(uid) != subject {
			t.Fatalf("round trip: %q -> %q -> %q", subject, uid, PushSubject(uid))
		}
	})
}
