package auth

import (
	"fmt"
	"net/http"
	"strings"
)

// bearerScheme is the only Authorization scheme TokenFromRequest accepts
// (compared case-insensitively, RFC 9110 section 11.1).
const bearerScheme = "Bearer"

// tokenQueryParam carries the token for browsers, which cannot set headers on
// a WebSocket handshake.
const tokenQueryParam = "token"

// TokenFromRequest returns the token from "Authorization: Bearer <t>" (scheme
// case-insensitive) or, only when no Authorization header is present, from the
// `token` query parameter. It returns ErrNoToken when neither is there (or the
// query value is empty), ErrMalformedHeader when Authorization is present but
// is not exactly one Bearer credential with a non-empty token, and
// ErrTokenTooLarge when the token is longer than maxBytes (DefaultMaxTokenBytes
// when maxBytes <= 0). A nil error implies a non-empty token of at most
// maxBytes bytes. It does not verify the token; see Verifier.Verify.
func TokenFromRequest(r *http.Request, maxBytes int) (string, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxTokenBytes
	}
	var token string
	if values := r.Header.Values("Authorization"); len(values) > 0 {
		if len(values) > 1 {
			return "", fmt.Errorf("%w: %d authorization headers", ErrMalformedHeader, len(values))
		}
		t, err := bearerToken(values[0])
		if err != nil {
			return "", err
		}
		token = t
	} else {
		if r.URL != nil {
			token = r.URL.Query().Get(tokenQueryParam)
		}
		if token == "" {
			return "", ErrNoToken
		}
	}
	if len(token) > maxBytes {
		return "", fmt.Errorf("%w: %d bytes, limit %d", ErrTokenTooLarge, len(token), maxBytes)
	}
	return token, nil
}

// bearerToken parses an Authorization header value of the form
// "Bearer <token>", tolerating extra spaces or tabs around the token.
func bearerToken(h string) (string, error) {
	scheme, rest, _ := strings.Cut(strings.TrimLeft(h, " \t"), " ")
	if !strings.EqualFold(scheme, bearerScheme) {
		return "", fmt.Errorf("%w: scheme is not bearer", ErrMalformedHeader)
	}
	token := strings.Trim(rest, " \t")
	if token == "" {
		return "", fmt.Errorf("%w: empty bearer token", ErrMalformedHeader)
	}
	if strings.ContainsAny(token, " \t") {
		return "", fmt.Errorf("%w: bearer token contains whitespace", ErrMalformedHeader)
	}
	return token, nil
}
