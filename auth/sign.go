package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// DevSecret signs and verifies tokens when no key is configured and NATS
// is embedded, so the five-minute path needs no setup. It is public: the
// server warns when it uses it and refuses it with an external NATS,
// which means a real deployment.
const DevSecret = "pusher-dev-secret-do-not-use-in-production"

// Sign mints an HS256 development token for uid, valid from now for ttl:
// claims uid and sub (both uid), iat and nbf (now) and exp (now+ttl), at
// one-second precision. It is what the `pusher token` CLI prints; a Verifier
// configured with the same secret accepts the token. secret and uid must be
// non-empty (uid syntax is not checked) and ttl must be positive.
func Sign(secret []byte, uid string, ttl time.Duration, now time.Time) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("sign token: empty secret")
	}
	if uid == "" {
		return "", fmt.Errorf("sign token: %w", ErrMissingUID)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("sign token: ttl %s is not positive", ttl)
	}
	claims := jwt.MapClaims{
		"uid": uid,
		"sub": uid,
		"iat": jwt.NewNumericDate(now),
		"nbf": jwt.NewNumericDate(now),
		"exp": jwt.NewNumericDate(now.Add(ttl)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}
