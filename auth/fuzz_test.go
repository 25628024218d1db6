package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// fuzzMaxTokenBytes is small so the fuzzer reaches the too-large branch.
const fuzzMaxTokenBytes = 64

func FuzzTokenFromRequest(f *testing.F) {
	for _, tt := range tokenRequestTests {
		var h string
		if len(tt.headers) > 0 {
			h = tt.headers[0]
		}
		f.Add(h, len(tt.headers) > 0, tt.query)
	}
	f.Fuzz(func(t *testing.T, header string, setHeader bool, rawQuery string) {
		r := &http.Request{Header: http.Header{}, URL: &url.URL{Path: "/ws", RawQuery: rawQuery}}
		if setHeader {
			r.Header.Set("Authorization", header)
		}
		tok, err := TokenFromRequest(r, fuzzMaxTokenBytes)
		if len(tok) > fuzzMaxTokenBytes {
			t.Fatalf("token of %d bytes exceeds max %d", len(tok), fuzzMaxTokenBytes)
		}
		if err != nil {
			if tok != "" {
				t.Fatalf("token %q returned with error %v", tok, err)
			}
			if !errors.Is(err, ErrNoToken) && !errors.Is(err, ErrMalformedHeader) && !errors.Is(err, ErrTokenTooLarge) {
				t.Fatalf("error %v is none of the sentinels", err)
			}
			return
		}
		if tok == "" {
			t.Fatal("empty token without error")
		}
		if setHeader && !strings.Contains(header, tok) {
			t.Fatalf("token %q not taken from the Authorization header %q", tok, header)
		}
		if strings.ContainsAny(tok, " \t") && setHeader {
			t.Fatalf("header token %q contains whitespace", tok)
		}
	})
}

func FuzzVerify(f *testing.F) {
	priv, pubPEM := committedEdKey(f)
	v := newTestVerifier(f, Config{HMACSecret: testSecret, PublicKeyPEM: pubPEM})
	for _, tt := range verifyCases(f) {
		f.Add(tt.give)
	}
	f.Add(sign(f, jwt.SigningMethodEdDSA, priv, claims("u1", nil)))
	f.Add(sign(f, jwt.SigningMethodEdDSA, priv, jwt.MapClaims{"sub": "u2"}))
	f.Add(unsignedToken("EdDSA", `{"uid":"u1"}`))
	f.Add(unsignedToken("HS256", `{"uid":"u1"}`))

	sentinels := []error{ErrNoToken, ErrTokenTooLarge, ErrInvalidToken, ErrExpired, ErrNotYetValid, ErrMissingUID}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token)
		if err != nil {
			if c != (Claims{}) {
				t.Fatalf("claims %+v returned with error %v", c, err)
			}
			n := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %v matches %d sentinels, want exactly 1", err, n)
			}
			msg := err.Error()
			// A token can only show up in an error through a decoded
			// fragment, which is shorter than the token; short tokens may
			// coincide with fixed message text, so only longer ones count.
			if len(token) >= 32 && strings.Contains(msg, token) {
				t.Fatalf("error %q contains the token", msg)
			}
			if strings.Contains(msg, string(testSecret)) {
				t.Fatalf("error %q contains the secret", msg)
			}
			return
		}
		if c.UID == "" {
			t.Fatal("accepted token with an empty UID")
		}
		if alg := headerAlg(t, token); alg != "HS256" && alg != "EdDSA" {
			t.Fatalf("accepted token with alg %q", alg)
		}
	})
}

// headerAlg decodes an accepted token's header the way the jwt library does
// (a map, so key matching is exact) and returns its alg.
func headerAlg(t *testing.T, token string) string {
	t.Helper()
	seg, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("accepted token with undecodable header: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("accepted token with non-JSON header: %v", err)
	}
	alg, _ := h["alg"].(string)
	return alg
}
