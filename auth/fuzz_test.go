package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
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

// FuzzJWKS feeds parseJWKS arbitrary documents (they come from outside):
// no panic; a document either fails whole or has each of its keys kept or
// ignored exactly once; and a kept key is always one of the three pinned
// kinds, never a symmetric key, a weak RSA key or another curve.
func FuzzJWKS(f *testing.F) {
	k := newTestKeys(f)
	weak := newRSAKey(f, 1024)
	edPub := k.ed.Public().(ed25519.PublicKey)
	f.Add(jwksDoc(f, rsaJWK("r", &k.rsa.PublicKey, nil), ecJWK(f, "e", &k.ec.PublicKey, nil), edJWK("d", edPub, nil)))
	f.Add(jwksDoc(f, rsaJWK("k", &k.rsa.PublicKey, map[string]any{"alg": omit{}, "use": omit{}}), ecJWK(f, "k", &k.ec.PublicKey, nil)))
	f.Add(jwksDoc(f, rsaJWK("weak", &weak.PublicKey, nil), rsaJWK("enc", &k.rsa.PublicKey, map[string]any{"use": "enc"}),
		rsaJWK("ops", &k.rsa.PublicKey, map[string]any{"key_ops": []string{"verify"}}), edJWK("x", edPub, map[string]any{"crv": "X25519"})))
	f.Add(jwksDoc(f, ecJWK(f, "rs", &k.ec.PublicKey, map[string]any{"alg": "RS256"}), edJWK("none", edPub, map[string]any{"alg": "none"})))
	f.Add([]byte(`{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0","alg":"HS256"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"},"x",null,{"kid":7}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`{"keys":{}}`))
	f.Add([]byte(`[]`))

	f.Fuzz(func(t *testing.T, data []byte) {
		set, ignored, err := parseJWKS(data)
		if err != nil {
			if set != nil || ignored != nil {
				t.Fatalf("keys %v, ignored %q returned with error %v", set, ignored, err)
			}
			return
		}
		var doc map[string]json.RawMessage
		var keys []json.RawMessage
		if json.Unmarshal(data, &doc) != nil || json.Unmarshal(doc["keys"], &keys) != nil {
			t.Fatalf("parseJWKS accepted what encoding/json refuses: %q", data)
		}
		if got := set.len() + len(ignored); got != len(keys) {
			t.Fatalf("%d kept + %d ignored for %d keys", set.len(), len(ignored), len(keys))
		}
		if len(set.kids) != len(set.byKID) || !slices.IsSorted(set.kids) {
			t.Fatalf("kids %q do not list the %d named keys in order", set.kids, len(set.byKID))
		}
		for _, kid := range set.kids {
			ks := set.byKID[kid]
			if kid == "" || len(ks) == 0 {
				t.Fatalf("kid %q with %d keys", kid, len(ks))
			}
			seen := map[string]bool{}
			for _, key := range ks {
				if seen[key.alg] {
					t.Fatalf("kid %q has two %s keys", kid, key.alg)
				}
				seen[key.alg] = true
				checkPinned(t, kid, key)
			}
		}
	})
}

// checkPinned fails t unless key is of the one kind its alg allows.
func checkPinned(t *testing.T, kid string, key jwk) {
	t.Helper()
	switch pub := key.key.(type) {
	case *rsa.PublicKey:
		if bits := pub.N.BitLen(); key.alg != "RS256" || bits < minRSABits || bits > maxRSABits || pub.E < 3 || pub.E%2 == 0 {
			t.Fatalf("kid %q: RSA key of %d bits, e %d, for %s", kid, bits, pub.E, key.alg)
		}
	case *ecdsa.PublicKey:
		if _, err := pub.ECDH(); key.alg != "ES256" || pub.Curve != elliptic.P256() || err != nil {
			t.Fatalf("kid %q: EC key on %s for %s (%v)", kid, pub.Curve.Params().Name, key.alg, err)
		}
	case ed25519.PublicKey:
		if key.alg != "EdDSA" || len(pub) != ed25519.PublicKeySize {
			t.Fatalf("kid %q: Ed25519 key of %d bytes for %s", kid, len(pub), key.alg)
		}
	default:
		t.Fatalf("kid %q: key of type %T for %s", kid, key.key, key.alg)
	}
}
