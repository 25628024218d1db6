package wire

import (
	"errors"
	"unicode"
	"unicode/utf8"
)

// MaxUIDLen is the longest uid accepted, in bytes.
const MaxUIDLen = 128

// ErrBadUID is returned by ValidUID; the wrapped text says which rule failed.
var ErrBadUID = errors.New("invalid uid")

// ValidUID reports whether uid can name a user: it must be exactly one NATS
// subject token (uids become subjects push.<uid>), so 1–128 bytes of valid
// UTF-8 with no '.', '*', '>', whitespace or control characters.
// Every door (JWT claim, HTTP, CLI, subject) checks uids with it.
func ValidUID(uid string) error {
	if uid == "" {
		return errBadUID("empty")
	}
	if len(uid) > MaxUIDLen {
		return errBadUID("longer than 128 bytes")
	}
	for i := 0; i < len(uid); {
		b := uid[i]
		if b < utf8.RuneSelf {
			switch {
			case b == '.' || b == '*' || b == '>':
				return errBadUID("contains '.', '*' or '>'")
			case b <= ' ' || b == 0x7f:
				return errBadUID("contains whitespace or a control character")
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(uid[i:])
		if r == utf8.RuneError && size == 1 {
			return errBadUID("not valid UTF-8")
		}
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return errBadUID("contains whitespace or a control character")
		}
		i += size
	}
	return nil
}

// uidError carries the broken rule while matching ErrBadUID.
type uidError struct{ rule string }

func (e *uidError) Error() string { return "invalid uid: " + e.rule }
func (e *uidError) Unwrap() error { return ErrBadUID }

func errBadUID(rule string) error { return &uidError{rule} }
