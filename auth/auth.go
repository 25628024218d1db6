// Package auth extracts and verifies the JWTs that authenticate WebSocket clients.
package auth

import (
	"errors"
	"fmt"
	"time"
)

// Defaults applied by NewVerifier to zero Config fields.
const (
	// DefaultMaxTokenBytes is the longest token accepted (8 KiB, the contract's limit).
	DefaultMaxTokenBytes = 8192
	// DefaultLeeway is the clock skew tolerated on exp, nbf and iat.
	DefaultLeeway = 5 * time.Second
	// DefaultUIDClaim is the claim holding the user id; "sub" is the fallback.
	DefaultUIDClaim = "uid"
)

// Sentinel errors returned (usually wrapped) by TokenFromRequest, Verify and
// Sign. Match them with errors.Is. Their text, and the text of every error this
// package returns, never contains the token or a secret, so callers may log
// them; clients should see only a generic message.
var (
	// ErrNoToken means the request carried no token at all.
	ErrNoToken = errors.New("no token")
	// ErrMalformedHeader means an Authorization header was present but was
	// not a single "Bearer <token>".
	ErrMalformedHeader = errors.New("malformed authorization header")
	// ErrTokenTooLarge means the token is longer than the configured maximum.
	ErrTokenTooLarge = errors.New("token too large")
	// ErrInvalidToken covers every failure not listed separately: garbage,
	// bad signature, disallowed or mismatched algorithm, wrong issuer or
	// audience, malformed claims.
	ErrInvalidToken = errors.New("invalid token")
	// ErrExpired means exp is in the past, beyond the leeway.
	ErrExpired = errors.New("token expired")
	// ErrNotYetValid means nbf or iat is in the future, beyond the leeway.
	ErrNotYetValid = errors.New("token not yet valid")
	// ErrMissingUID means neither the uid claim nor sub holds a non-empty
	// string, or the uid claim is present but not a string.
	ErrMissingUID = errors.New("token has no uid")
	// ErrUnknownKey is the ErrInvalidToken of a token whose kid names no
	// key of the JWKS (after the refetch Verify may make), and which no
	// other configured key verified either. From VerifyCached it means a
	// fetch might still help: Verify may accept the same token.
	ErrUnknownKey = fmt.Errorf("%w: unknown key id", ErrInvalidToken)
)
