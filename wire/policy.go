package wire

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Policy is what a publisher asked of one message's delivery through
// HeaderTTL and HeaderOffline.
type Policy struct {
	// TTL, when positive, is how long after its first publish the message
	// may still be delivered.
	TTL time.Duration
	// DropOffline drops the message when the user has no live connection
	// instead of dead-lettering it.
	DropOffline bool
}

// maxTTL keeps a TTL in seconds from overflowing a Duration; a century is
// "forever" for a push message.
const maxTTL = 100 * 365 * 24 * time.Hour

// ParseTTL reads a HeaderTTL value: a Go duration or whole seconds, more
// than zero and at most a century. Surrounding spaces are ignored.
func ParseTTL(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.ParseInt(v, 10, 64)
		if nerr != nil {
			return 0, fmt.Errorf("%s %q: want a duration such as 90s or 1h, or whole seconds", HeaderTTL, v)
		}
		if n > int64(maxTTL/time.Second) {
			return 0, fmt.Errorf("%s %q: more than a century", HeaderTTL, v)
		}
		d = time.Duration(n) * time.Second
	}
	switch {
	case d <= 0:
		return 0, fmt.Errorf("%s %q: must be positive", HeaderTTL, v)
	case d > maxTTL:
		return 0, fmt.Errorf("%s %q: more than a century", HeaderTTL, v)
	}
	return d, nil
}

// ParseOffline reads a HeaderOffline value, "drop" or "store", in any
// case; true means drop.
func ParseOffline(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "drop":
		return true, nil
	case "store":
		return false, nil
	}
	return false, fmt.Errorf("%s %q: want drop or store", HeaderOffline, v)
}

// ParsePolicy reads a message's policy from its headers, as get returns
// them ("" when absent). A malformed value counts as absent, so a typo
// never drops a message: it is returned in err, for a warning.
func ParsePolicy(get func(key string) string) (p Policy, err error) {
	var errs []error
	if v := get(HeaderTTL); v != "" {
		if p.TTL, err = ParseTTL(v); err != nil {
			errs = append(errs, err)
		}
	}
	if v := get(HeaderOffline); v != "" {
		if p.DropOffline, err = ParseOffline(v); err != nil {
			errs = append(errs, err)
		}
	}
	return p, errors.Join(errs...)
}

// Expired reports whether a message first published at published has
// outlived the policy's TTL at now.
func (p Policy) Expired(published, now time.Time) bool {
	return p.TTL > 0 && now.Sub(published) > p.TTL
}
