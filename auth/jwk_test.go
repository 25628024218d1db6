package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
)

// Keys the package cannot or must not use are ignored, named in the log
// line of the refresh, and never fatal while one usable key remains.
func TestParseJWKSIgnoresKeys(t *testing.T) {
	good := newRSAKey(t, 2048)
	weak := newRSAKey(t, 1024)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub := &good.PublicKey
	tests := []struct {
		name string
		give map[string]any
		want string // in the reason
	}{
		{name: "RSA under 2048 bits", give: rsaJWK("weak", &weak.PublicKey, nil), want: "1024 bits"},
		{name: "P-384", give: ecJWK(t, "p384", &p384.PublicKey, map[string]any{"alg": "ES384"}), want: `"P-384" is not P-256`},
		{name: "encryption key", give: rsaJWK("enc", rsaPub, map[string]any{"use": "enc"}), want: `use "enc"`},
		{name: "key_ops without verify", give: rsaJWK("ops", rsaPub, map[string]any{"key_ops": []string{"encrypt"}}), want: "key_ops"},
		{name: "RS512", give: rsaJWK("rs512", rsaPub, map[string]any{"alg": "RS512"}), want: `alg "RS512"`},
		{name: "PS256", give: rsaJWK("ps256", rsaPub, map[string]any{"alg": "PS256"}), want: `alg "PS256"`},
		{name: "RS256 on an EC key", give: ecJWK(t, "ec-rs", &p256.PublicKey, map[string]any{"alg": "RS256"}), want: `alg "RS256"`},
		{name: "ES256 on an Ed25519 key", give: edJWK("ed-es", edPub, map[string]any{"alg": "ES256"}), want: `alg "ES256"`},
		{name: "alg none", give: rsaJWK("none", rsaPub, map[string]any{"alg": "none"}), want: `alg "none"`},
		{name: "symmetric key", give: map[string]any{"kty": "oct", "kid": "hmac", "k": b64([]byte("secret"))}, want: "symmetric"},
		{name: "oct without k", give: map[string]any{"kty": "oct", "kid": "oct"}, want: `kty "oct"`},
		{name: "private RSA key", give: rsaJWK("priv", rsaPub, map[string]any{"d": b64(good.D.Bytes())}), want: "private"},
		{name: "no kid", give: rsaJWK("", rsaPub, nil), want: "no kid"},
		{name: "kid not a string", give: rsaJWK("x", rsaPub, map[string]any{"kid": 7}), want: `"kid" is not a string`},

		{name: "RSA without n", give: rsaJWK("no-n", rsaPub, map[string]any{"n": omit{}}), want: `"n" is missing`},
		{name: "RSA even exponent", give: rsaJWK("even-e", rsaPub, map[string]any{"e": b64([]byte{1, 0, 0})}), want: "exponent"},
		{name: "RSA exponent 1", give: rsaJWK("e1", rsaPub, map[string]any{"e": b64([]byte{1})}), want: "exponent"},
		{name: "n not base64url", give: rsaJWK("bad-n", rsaPub, map[string]any{"n": "***"}), want: "base64url"},
		{name: "EC point off the curve", give: ecJWK(t, "off", &p256.PublicKey, map[string]any{"y": b64(make([]byte, 32))}), want: "not on P-256"},
		{name: "EC short coordinate", give: ecJWK(t, "short", &p256.PublicKey, map[string]any{"x": b64(make([]byte, 31))}), want: "32 bytes"},
		{name: "X25519", give: edJWK("x25519", edPub, map[string]any{"crv": "X25519", "alg": omit{}}), want: `"X25519" is not Ed25519`},
		{name: "Ed25519 short key", give: edJWK("short-ed", edPub[:31], nil), want: "32 bytes"},
		{name: "unknown kty", give: map[string]any{"kty": "XYZ", "kid": "xyz"}, want: `kty "XYZ"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, ignored, err := parseJWKS(jwksDoc(t, rsaJWK("good", rsaPub, nil), tt.give))
			if err != nil {
				t.Fatalf("parseJWKS() = %v", err)
			}
			if set.len() != 1 || set.lookup("good", "RS256") == nil {
				t.Fatalf("parseJWKS() kept %d keys %v, want only the good one", set.len(), set.kids)
			}
			if len(ignored) != 1 || !strings.Contains(ignored[0], tt.want) {
				t.Fatalf("ignored = %q, want one reason with %q", ignored, tt.want)
			}
		})
	}

	t.Run("not an object", func(t *testing.T) {
		set, ignored, err := parseJWKS([]byte(`{"keys":["just a string",{"kid":"k"},[1]]}`))
		if err != nil || set.len() != 0 || len(ignored) != 3 || ignored[0] != "#0: not a JSON object" || ignored[2] != "#2: not a JSON object" {
			t.Fatalf("parseJWKS() = %v, %q, %v", set, ignored, err)
		}
	})

	t.Run("same kid for two algorithms", func(t *testing.T) {
		set, ignored, err := parseJWKS(jwksDoc(t,
			rsaJWK("k", rsaPub, nil), ecJWK(t, "k", &p256.PublicKey, nil), rsaJWK("k", &weak.PublicKey, map[string]any{"n": b64(good.N.Bytes())})))
		if err != nil {
			t.Fatal(err)
		}
		if set.lookup("k", "RS256") == nil || set.lookup("k", "ES256") == nil || set.lookup("k", "EdDSA") != nil {
			t.Fatalf("kid k: RS256 %v, ES256 %v, EdDSA %v", set.lookup("k", "RS256"), set.lookup("k", "ES256"), set.lookup("k", "EdDSA"))
		}
		if len(ignored) != 1 || !strings.Contains(ignored[0], "duplicate") {
			t.Fatalf("ignored = %q, want the duplicate", ignored)
		}
	})
}

func TestParseJWKSDocumentErrors(t *testing.T) {
	tests := []struct {
		name string
		give string
	}{
		{name: "empty", give: ""},
		{name: "not JSON", give: "<html>"},
		{name: "array", give: `[{"kty":"RSA"}]`},
		{name: "no keys", give: `{"Keys":[]}`},
		{name: "keys not an array", give: `{"keys":{"kty":"RSA"}}`},
		{name: "keys null", give: `{"keys":null}`},
		{name: "trailing garbage", give: `{"keys":[]} x`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, _, err := parseJWKS([]byte(tt.give))
			if tt.name == "keys null" {
				// null decodes as an empty array: no error, no key, which
				// a fetch then refuses as "no usable signing key".
				if err != nil || set.len() != 0 {
					t.Fatalf("parseJWKS(%q) = %v, %v", tt.give, set, err)
				}
				return
			}
			if err == nil || set != nil {
				t.Fatalf("parseJWKS(%q) = %v, %v; want an error", tt.give, set, err)
			}
		})
	}
}
