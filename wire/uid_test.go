package wire

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

var uidTests = []struct {
	name string
	give string
	ok   bool
}{
	{"digits", "123", true},
	{"email-like", "user@example.com-x", false}, // '.' separates subject tokens
	{"unicode", "ユーザー", true},
	{"max length", strings.Repeat("a", 128), true},
	{"dash underscore", "a-b_c:d", true},
	{"empty", "", false},
	{"too long", strings.Repeat("a", 129), false},
	{"dot", "a.b", false},
	{"star", "a*", false},
	{"gt", ">", false},
	{"space", "a b", false},
	{"tab", "a\tb", false},
	{"newline", "a\n", false},
	{"nul", "a\x00", false},
	{"del", "a\x7f", false},
	{"nbsp", "a\u00a0b", false},
	{"c1 control", "a\u0085", false},
	{"bad utf8", "a\xffb", false},
}

func TestValidUID(t *testing.T) {
	for _, tt := range uidTests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidUID(tt.give)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidUID(%q) = %v, want ok=%v", tt.give, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadUID) {
				t.Fatalf("error %v does not match ErrBadUID", err)
			}
		})
	}
}

// FuzzValidUID checks that whatever ValidUID accepts is one NATS subject
// token: non-empty, at most 128 bytes, UTF-8, and free of separators,
// wildcards and whitespace.
func FuzzValidUID(f *testing.F) {
	for _, tt := range uidTests {
		f.Add(tt.give)
	}
	f.Fuzz(func(t *testing.T, uid string) {
		if ValidUID(uid) != nil {
			return
		}
		if uid == "" || len(uid) > MaxUIDLen || !utf8.ValidString(uid) {
			t.Fatalf("accepted %q", uid)
		}
		if strings.ContainsAny(uid, ".*> \t\r\n\x00") {
			t.Fatalf("accepted %q with a separator, wildcard or space", uid)
		}
		if len(strings.Fields(uid)) != 1 || strings.Fields(uid)[0] != uid {
			t.Fatalf("accepted %q with whitespace", uid)
		}
	})
}
