package auth

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// verifyCase is one row of the rejection table.
type verifyCase struct {
	name string
	v    *Verifier
	give string
	want error // nil: must be accepted with UID "u1"
}

// verifyCases is the one table of every way a token is refused (plus the
// leeway edges that must still pass); FuzzVerify seeds from it too.
func verifyCases(t testing.TB) []verifyCase {
	t.Helper()
	k := newTestKeys(t)
	otherRSA := newRSAKey(t, 2048)

	hs := newTestVerifier(t, Config{HMACSecret: testSecret})
	rs := newTestVerifier(t, Config{PublicKeyPEM: k.rsaPEM})
	both := newTestVerifier(t, Config{HMACSecret: testSecret, PublicKeyPEM: k.edPEM})
	issAud := newTestVerifier(t, Config{HMACSecret: testSecret, Issuer: "pusher-issuer", Audience: "pusher"})

	// A provider's JWKS: one key of each family, plus keys that must be
	// ignored (too small, for encryption).
	jk := newTestKeys(t)
	weak := newRSAKey(t, 1024)
	p := newTestProvider(t,
		rsaJWK("r1", &jk.rsa.PublicKey, nil),
		ecJWK(t, "e1", &jk.ec.PublicKey, nil),
		edJWK("d1", jk.ed.Public().(ed25519.PublicKey), nil),
		rsaJWK("weak", &weak.PublicKey, nil),
		rsaJWK("enc1", &otherRSA.PublicKey, map[string]any{"use": "enc", "alg": omit{}}),
	)
	j, _ := newTestJWKS(t, p, JWKSConfig{}, nil)
	jwksOnly := newTestVerifier(t, Config{JWKS: j})
	jwksAll := newTestVerifier(t, Config{HMACSecret: testSecret, PublicKeyPEM: k.ecPEM, JWKS: j})
	kidTok := func(m jwt.SigningMethod, key any, kid string) string {
		return signKID(t, m, key, kid, claims("u1", nil))
	}
	enc := base64.RawURLEncoding

	hsTok := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, testSecret, c) }
	valid := hsTok(claims("u1", nil))
	// tampered keeps valid's header and signature but claims another uid.
	forged := strings.Split(hsTok(claims("u2", nil)), ".")
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + forged[1] + "." + parts[2]

	return []verifyCase{
		{name: "missing", v: hs, give: "", want: ErrNoToken},
		{name: "garbage", v: hs, give: "not-a-jwt", want: ErrInvalidToken},
		{name: "garbage segments", v: hs, give: "a.b.c", want: ErrInvalidToken},
		{name: "four segments", v: hs, give: valid + ".x", want: ErrInvalidToken},
		{name: "tampered payload", v: hs, give: tampered, want: ErrInvalidToken},
		{name: "wrong HMAC secret", v: hs, give: sign(t, jwt.SigningMethodHS256, []byte("another-secret-of-some-length"), claims("u1", nil)), want: ErrInvalidToken},
		{name: "HS384 not pinned", v: hs, give: sign(t, jwt.SigningMethodHS384, testSecret, claims("u1", nil)), want: ErrInvalidToken},
		{name: "alg none", v: hs, give: unsignedToken("none", `{"uid":"u1"}`), want: ErrInvalidToken},
		{name: "alg None", v: hs, give: unsignedToken("None", `{"uid":"u1"}`), want: ErrInvalidToken},
		{name: "alg none on public key", v: rs, give: unsignedToken("none", `{"uid":"u1"}`), want: ErrInvalidToken},
		{name: "alg none on both keys", v: both, give: unsignedToken("none", `{"uid":"u1"}`), want: ErrInvalidToken},
		{name: "HS256 with only public key", v: rs, give: hsTok(claims("u1", nil)), want: ErrInvalidToken},
		{name: "HS256 keyed with the public key PEM", v: rs, give: sign(t, jwt.SigningMethodHS256, k.rsaPEM, claims("u1", nil)), want: ErrInvalidToken},
		{name: "RS256 with only secret", v: hs, give: sign(t, jwt.SigningMethodRS256, k.rsa, claims("u1", nil)), want: ErrInvalidToken},
		{name: "RS256 other key", v: rs, give: sign(t, jwt.SigningMethodRS256, otherRSA, claims("u1", nil)), want: ErrInvalidToken},
		{name: "RS512 not pinned", v: rs, give: sign(t, jwt.SigningMethodRS512, k.rsa, claims("u1", nil)), want: ErrInvalidToken},
		{name: "PS256 not pinned", v: rs, give: sign(t, jwt.SigningMethodPS256, k.rsa, claims("u1", nil)), want: ErrInvalidToken},
		{name: "RS256 when Ed25519 and secret configured", v: both, give: sign(t, jwt.SigningMethodRS256, k.rsa, claims("u1", nil)), want: ErrInvalidToken},
		{name: "expired", v: hs, give: hsTok(claims("u1", jwt.MapClaims{"exp": testNow.Add(-time.Minute).Unix()})), want: ErrExpired},
		{name: "expired within leeway accepted", v: hs, give: hsTok(claims("u1", jwt.MapClaims{"exp": testNow.Add(-3 * time.Second).Unix()})), want: nil},
		{name: "expired just past leeway", v: hs, give: hsTok(claims("u1", jwt.MapClaims{"exp": testNow.Add(-DefaultLeeway).Unix()})), want: ErrExpired},
		{name: "future nbf", v: hs, give: hsTok(claims("u1", jwt.MapClaims{"nbf": testNow.Add(time.Minute).Unix()})), want: ErrNotYetValid},
		{name: "nbf within leeway accepted", v: hs, give: hsTok(claims("u1", jwt.MapClaims{"nbf": testNow.Add(3 * time.Second).Unix()})), want: nil},
		{name: "future iat", v: hs, give: hsTok(claims("u1", jwt.MapClaims{"iat": testNow.Add(time.Minute).Unix()})), want: ErrNotYetValid},
		{name: "exp not a number", v: hs, give: hsTok(claims("u1", jwt.MapClaims{"exp": "tomorrow"})), want: ErrInvalidToken},
		{name: "missing uid and sub", v: hs, give: hsTok(claims("", jwt.MapClaims{"uid": omit{}})), want: ErrMissingUID},
		{name: "empty uid and sub", v: hs, give: hsTok(claims("", jwt.MapClaims{"sub": ""})), want: ErrMissingUID},
		{name: "non-string uid", v: hs, give: hsTok(claims("", jwt.MapClaims{"uid": 123, "sub": "u1"})), want: ErrMissingUID},
		{name: "null uid", v: hs, give: hsTok(claims("", jwt.MapClaims{"uid": nil, "sub": "u1"})), want: ErrMissingUID},
		{name: "array uid", v: hs, give: hsTok(claims("", jwt.MapClaims{"uid": []string{"u1"}})), want: ErrMissingUID},
		{name: "non-string sub", v: hs, give: hsTok(claims("", jwt.MapClaims{"uid": omit{}, "sub": 7})), want: ErrMissingUID},
		{name: "wrong iss", v: issAud, give: hsTok(claims("u1", jwt.MapClaims{"iss": "evil", "aud": "pusher"})), want: ErrInvalidToken},
		{name: "missing iss", v: issAud, give: hsTok(claims("u1", jwt.MapClaims{"aud": "pusher"})), want: ErrInvalidToken},
		{name: "wrong aud", v: issAud, give: hsTok(claims("u1", jwt.MapClaims{"iss": "pusher-issuer", "aud": "other"})), want: ErrInvalidToken},
		{name: "aud list without ours", v: issAud, give: hsTok(claims("u1", jwt.MapClaims{"iss": "pusher-issuer", "aud": []string{"a", "b"}})), want: ErrInvalidToken},
		{name: "missing aud", v: issAud, give: hsTok(claims("u1", jwt.MapClaims{"iss": "pusher-issuer"})), want: ErrInvalidToken},
		{name: "expired and wrong iss", v: issAud, give: hsTok(claims("u1", jwt.MapClaims{"iss": "evil", "aud": "pusher", "exp": testNow.Add(-time.Hour).Unix()})), want: ErrInvalidToken},
		{name: "iss and aud list accepted", v: issAud, give: hsTok(claims("u1", jwt.MapClaims{"iss": "pusher-issuer", "aud": []string{"x", "pusher"}})), want: nil},
		{name: "too large", v: hs, give: strings.Repeat("a", DefaultMaxTokenBytes+1), want: ErrTokenTooLarge},
		{name: "too large but validly signed", v: hs, give: hsTok(claims("u1", jwt.MapClaims{"pad": strings.Repeat("p", DefaultMaxTokenBytes)})), want: ErrTokenTooLarge},

		{name: "JWKS RS256 by kid accepted", v: jwksOnly, give: kidTok(jwt.SigningMethodRS256, jk.rsa, "r1"), want: nil},
		{name: "JWKS ES256 by kid accepted", v: jwksOnly, give: kidTok(jwt.SigningMethodES256, jk.ec, "e1"), want: nil},
		{name: "JWKS EdDSA by kid accepted", v: jwksOnly, give: kidTok(jwt.SigningMethodEdDSA, jk.ed, "d1"), want: nil},
		{name: "JWKS unknown kid", v: jwksOnly, give: kidTok(jwt.SigningMethodRS256, jk.rsa, "nope"), want: ErrUnknownKey},
		{name: "JWKS known kid forged by another key", v: jwksOnly, give: kidTok(jwt.SigningMethodRS256, otherRSA, "r1"), want: ErrInvalidToken},
		{name: "JWKS RSA kid with an ES256 token", v: jwksOnly, give: kidTok(jwt.SigningMethodES256, jk.ec, "r1"), want: ErrUnknownKey},
		{name: "JWKS RSA kid with HS256 keyed by its modulus", v: jwksOnly, give: kidTok(jwt.SigningMethodHS256, jk.rsa.N.Bytes(), "r1"), want: ErrInvalidToken},
		{name: "JWKS RSA kid with HS256 keyed by its PEM, secret configured", v: jwksAll, give: kidTok(jwt.SigningMethodHS256, jk.rsaPEM, "r1"), want: ErrInvalidToken},
		{name: "JWKS RSA kid with PS256", v: jwksOnly, give: kidTok(jwt.SigningMethodPS256, jk.rsa, "r1"), want: ErrInvalidToken},
		{name: "JWKS alg none with a kid", v: jwksAll, give: enc.EncodeToString([]byte(`{"alg":"none","kid":"r1"}`)) + "." + enc.EncodeToString([]byte(`{"uid":"u1"}`)) + ".", want: ErrInvalidToken},
		{name: "JWKS key without kid in the token", v: jwksOnly, give: kidTok(jwt.SigningMethodRS256, jk.rsa, ""), want: ErrInvalidToken},
		{name: "JWKS key without kid, PEM key of its family configured", v: jwksAll, give: kidTok(jwt.SigningMethodES256, jk.ec, ""), want: ErrInvalidToken},
		{name: "JWKS kid of a 1024-bit key", v: jwksOnly, give: kidTok(jwt.SigningMethodRS256, weak, "weak"), want: ErrUnknownKey},
		{name: "JWKS kid of an encryption key", v: jwksOnly, give: kidTok(jwt.SigningMethodRS256, otherRSA, "enc1"), want: ErrUnknownKey},
		{name: "JWKS expired", v: jwksOnly, give: signKID(t, jwt.SigningMethodEdDSA, jk.ed, "d1", claims("u1", jwt.MapClaims{"exp": testNow.Add(-time.Minute).Unix()})), want: ErrExpired},
	}
}

func TestVerifyRejections(t *testing.T) {
	for _, tt := range verifyCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.v.Verify(tt.give)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify() error = %v, want accepted", err)
				}
				if got.UID != "u1" {
					t.Errorf("Verify() UID = %q, want %q", got.UID, "u1")
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify() error = %v, want %v", err, tt.want)
			}
			if got != (Claims{}) {
				t.Errorf("Verify() claims = %+v on error, want zero", got)
			}
			msg := err.Error()
			if tt.give != "" && strings.Contains(msg, tt.give) {
				t.Errorf("error %q contains the token", msg)
			}
			if strings.Contains(msg, string(testSecret)) {
				t.Errorf("error %q contains the secret", msg)
			}
		})
	}
}

func TestVerifyAccepts(t *testing.T) {
	k := newTestKeys(t)
	exp := testNow.Add(time.Hour)
	c := claims("u1", nil)

	tests := []struct {
		name string
		cfg  Config
		give string
	}{
		{name: "HS256", cfg: Config{HMACSecret: testSecret}, give: sign(t, jwt.SigningMethodHS256, testSecret, c)},
		{name: "RS256", cfg: Config{PublicKeyPEM: k.rsaPEM}, give: sign(t, jwt.SigningMethodRS256, k.rsa, c)},
		{name: "RS256 PKCS1 PEM", cfg: Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)})}, give: sign(t, jwt.SigningMethodRS256, k.rsa, c)},
		{name: "ES256", cfg: Config{PublicKeyPEM: k.ecPEM}, give: sign(t, jwt.SigningMethodES256, k.ec, c)},
		{name: "ES256 certificate", cfg: Config{PublicKeyPEM: certPEM(t, k.ec)}, give: sign(t, jwt.SigningMethodES256, k.ec, c)},
		{name: "EdDSA", cfg: Config{PublicKeyPEM: k.edPEM}, give: sign(t, jwt.SigningMethodEdDSA, k.ed, c)},
		{name: "both keys HS256", cfg: Config{HMACSecret: testSecret, PublicKeyPEM: k.edPEM}, give: sign(t, jwt.SigningMethodHS256, testSecret, c)},
		{name: "both keys EdDSA", cfg: Config{HMACSecret: testSecret, PublicKeyPEM: k.edPEM}, give: sign(t, jwt.SigningMethodEdDSA, k.ed, c)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVerifier(t, tt.cfg)
			got, err := v.Verify(tt.give)
			if err != nil {
				t.Fatalf("Verify() error = %v", err)
			}
			want := Claims{UID: "u1", ExpiresAt: exp}
			if !got.ExpiresAt.Equal(want.ExpiresAt) || got.UID != want.UID {
				t.Errorf("Verify() = %+v, want %+v", got, want)
			}
		})
	}
}

func TestVerifyUIDClaim(t *testing.T) {
	hsTok := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, testSecret, c) }
	tests := []struct {
		name     string
		uidClaim string
		give     jwt.MapClaims
		want     string
	}{
		{name: "uid wins over sub", give: jwt.MapClaims{"uid": "a", "sub": "b"}, want: "a"},
		{name: "falls back to sub when absent", give: jwt.MapClaims{"sub": "b"}, want: "b"},
		{name: "falls back to sub when empty", give: jwt.MapClaims{"uid": "", "sub": "b"}, want: "b"},
		{name: "uid syntax not checked here", give: jwt.MapClaims{"uid": "a.b c"}, want: "a.b c"},
		{name: "configured claim", uidClaim: "user_id", give: jwt.MapClaims{"user_id": "c", "uid": "a", "sub": "b"}, want: "c"},
		{name: "configured claim falls back to sub", uidClaim: "user_id", give: jwt.MapClaims{"uid": "a", "sub": "b"}, want: "b"},
		{name: "configured sub", uidClaim: "sub", give: jwt.MapClaims{"uid": "a", "sub": "b"}, want: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newTestVerifier(t, Config{HMACSecret: testSecret, UIDClaim: tt.uidClaim})
			got, err := v.Verify(hsTok(tt.give))
			if err != nil {
				t.Fatalf("Verify() error = %v", err)
			}
			if got.UID != tt.want {
				t.Errorf("Verify() UID = %q, want %q", got.UID, tt.want)
			}
			if !got.ExpiresAt.IsZero() {
				t.Errorf("Verify() ExpiresAt = %v for a token without exp, want zero", got.ExpiresAt)
			}
		})
	}
}

// TestVerifyClock pins that exp and nbf follow the injected clock and leeway.
func TestVerifyClock(t *testing.T) {
	now := testNow
	v := newTestVerifier(t, Config{HMACSecret: testSecret, Leeway: time.Second, Now: func() time.Time { return now }})
	tok := sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
		"uid": "u1", "nbf": testNow.Unix(), "exp": testNow.Add(time.Minute).Unix(),
	})
	steps := []struct {
		at   time.Time
		want error
	}{
		{at: testNow.Add(-2 * time.Second), want: ErrNotYetValid},
		{at: testNow.Add(-time.Second), want: nil},
		{at: testNow.Add(time.Minute), want: nil},
		{at: testNow.Add(time.Minute + time.Second), want: ErrExpired},
	}
	for _, s := range steps {
		now = s.at
		if _, err := v.Verify(tok); !errors.Is(err, s.want) {
			t.Errorf("Verify() at %v error = %v, want %v", s.at.Sub(testNow), err, s.want)
		}
	}
}

// TestVerifyCommittedKey checks the Ed25519 pair under testdata/keys, which
// other packages' tests and the README use.
func TestVerifyCommittedKey(t *testing.T) {
	priv, pubPEM := committedEdKey(t)
	v := newTestVerifier(t, Config{PublicKeyPEM: pubPEM})
	got, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, priv, claims("u1", nil)))
	if err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	if got.UID != "u1" {
		t.Errorf("Verify() UID = %q, want %q", got.UID, "u1")
	}
}

func TestNewVerifier(t *testing.T) {
	k := newTestKeys(t)
	small := newRSAKey(t, 1024)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(k.ed)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		give    Config
		wantErr string // substring; "" means success
	}{
		{name: "secret only", give: Config{HMACSecret: testSecret}},
		{name: "public key only", give: Config{PublicKeyPEM: k.edPEM}},
		{name: "both", give: Config{HMACSecret: testSecret, PublicKeyPEM: k.rsaPEM}},
		{name: "no key", give: Config{}, wantErr: "neither"},
		{name: "empty secret", give: Config{HMACSecret: []byte{}}, wantErr: "neither"},
		{name: "negative leeway", give: Config{HMACSecret: testSecret, Leeway: -time.Second}, wantErr: "negative leeway"},
		{name: "negative max", give: Config{HMACSecret: testSecret, MaxTokenBytes: -1}, wantErr: "negative max"},
		{name: "not PEM", give: Config{PublicKeyPEM: []byte("not a pem")}, wantErr: "no PEM block"},
		{name: "private key PEM", give: Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})}, wantErr: "not a public key"},
		{name: "corrupt PEM body", give: Config{PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})}, wantErr: "parse PUBLIC KEY"},
		{name: "RSA 1024", give: Config{PublicKeyPEM: pkixPEM(t, &small.PublicKey)}, wantErr: "1024 bits"},
		{name: "ECDSA P-384", give: Config{PublicKeyPEM: pkixPEM(t, &p384.PublicKey)}, wantErr: "P-384"},
		{name: "X25519", give: Config{PublicKeyPEM: pkixPEM(t, x25519.PublicKey())}, wantErr: "unsupported key type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewVerifier(tt.give)
			if tt.wantErr == "" {
				if err != nil || v == nil {
					t.Fatalf("NewVerifier() = %v, %v; want a verifier", v, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewVerifier() error = %v, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), string(testSecret)) {
				t.Errorf("error %q contains the secret", err)
			}
		})
	}
}

func TestVerifierMaxTokenBytes(t *testing.T) {
	if got := newTestVerifier(t, Config{HMACSecret: testSecret}).MaxTokenBytes(); got != DefaultMaxTokenBytes {
		t.Errorf("default MaxTokenBytes() = %d, want %d", got, DefaultMaxTokenBytes)
	}
	v := newTestVerifier(t, Config{HMACSecret: testSecret, MaxTokenBytes: 100})
	if got := v.MaxTokenBytes(); got != 100 {
		t.Errorf("MaxTokenBytes() = %d, want 100", got)
	}
	tok := sign(t, jwt.SigningMethodHS256, testSecret, claims("u1", nil))
	if len(tok) <= 100 {
		t.Fatalf("test token is only %d bytes", len(tok))
	}
	if _, err := v.Verify(tok); !errors.Is(err, ErrTokenTooLarge) {
		t.Errorf("Verify() error = %v, want %v", err, ErrTokenTooLarge)
	}
}

// TestVerifierCopiesSecret: mutating the caller's slice after NewVerifier
// must neither race with nor change verification.
func TestVerifierCopiesSecret(t *testing.T) {
	secret := append([]byte(nil), testSecret...)
	v := newTestVerifier(t, Config{HMACSecret: secret})
	clear(secret)
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, testSecret, claims("u1", nil))); err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
}

// TestKeyFamily checks the keyfunc on its own: even if an algorithm got past
// WithValidMethods, a key is only handed to its own family.
func TestKeyFamily(t *testing.T) {
	k := newTestKeys(t)
	hsOnly := newTestVerifier(t, Config{HMACSecret: testSecret})
	edOnly := newTestVerifier(t, Config{PublicKeyPEM: k.edPEM})
	both := newTestVerifier(t, Config{HMACSecret: testSecret, PublicKeyPEM: k.ecPEM})

	tests := []struct {
		name    string
		v       *Verifier
		give    jwt.SigningMethod
		wantErr bool
	}{
		{name: "HS256 with secret", v: hsOnly, give: jwt.SigningMethodHS256},
		{name: "HS256 without secret", v: edOnly, give: jwt.SigningMethodHS256, wantErr: true},
		{name: "HS512 with secret", v: hsOnly, give: jwt.SigningMethodHS512, wantErr: true},
		{name: "EdDSA with Ed25519", v: edOnly, give: jwt.SigningMethodEdDSA},
		{name: "EdDSA with secret only", v: hsOnly, give: jwt.SigningMethodEdDSA, wantErr: true},
		{name: "ES256 with P-256", v: both, give: jwt.SigningMethodES256},
		{name: "ES384 with P-256", v: both, give: jwt.SigningMethodES384, wantErr: true},
		{name: "RS256 with P-256", v: both, give: jwt.SigningMethodRS256, wantErr: true},
		{name: "EdDSA with P-256", v: both, give: jwt.SigningMethodEdDSA, wantErr: true},
		{name: "none", v: both, give: jwt.SigningMethodNone, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := tt.v.key(&jwt.Token{Method: tt.give}, new(string))
			if tt.wantErr {
				if err == nil || key != nil {
					t.Fatalf("key() = %v, %v; want an error", key, err)
				}
				return
			}
			if err != nil || key == nil {
				t.Fatalf("key() = %v, %v; want a key", key, err)
			}
		})
	}
}

func TestVerifyConcurrent(t *testing.T) {
	priv, pubPEM := committedEdKey(t)
	v := newTestVerifier(t, Config{HMACSecret: testSecret, PublicKeyPEM: pubPEM})
	toks := []string{
		sign(t, jwt.SigningMethodHS256, testSecret, claims("u1", nil)),
		sign(t, jwt.SigningMethodEdDSA, priv, claims("u1", nil)),
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := v.Verify(toks[i%len(toks)]); err != nil {
					t.Errorf("Verify() error = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestSign(t *testing.T) {
	tok, err := Sign(testSecret, "u1", time.Hour, testNow)
	if err != nil {
		t.Fatalf("Sign() error = %v", err)
	}
	now := testNow
	v := newTestVerifier(t, Config{HMACSecret: testSecret, Now: func() time.Time { return now }})
	got, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("Verify() error = %v", err)
	}
	if want := (Claims{UID: "u1", ExpiresAt: testNow.Add(time.Hour)}); got.UID != want.UID || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("Verify() = %+v, want %+v", got, want)
	}
	// sub carries the uid too, for verifiers configured with another claim.
	vSub := newTestVerifier(t, Config{HMACSecret: testSecret, UIDClaim: "sub"})
	if got, err := vSub.Verify(tok); err != nil || got.UID != "u1" {
		t.Errorf("Verify() with UIDClaim sub = %+v, %v; want uid u1", got, err)
	}
	now = testNow.Add(time.Hour + DefaultLeeway)
	if _, err := v.Verify(tok); !errors.Is(err, ErrExpired) {
		t.Errorf("Verify() after ttl error = %v, want %v", err, ErrExpired)
	}
	now = testNow.Add(-DefaultLeeway - time.Second)
	if _, err := v.Verify(tok); !errors.Is(err, ErrNotYetValid) {
		t.Errorf("Verify() before now error = %v, want %v", err, ErrNotYetValid)
	}
}

func TestSignErrors(t *testing.T) {
	tests := []struct {
		name   string
		secret []byte
		uid    string
		ttl    time.Duration
	}{
		{name: "empty secret", secret: nil, uid: "u1", ttl: time.Hour},
		{name: "empty uid", secret: testSecret, uid: "", ttl: time.Hour},
		{name: "zero ttl", secret: testSecret, uid: "u1", ttl: 0},
		{name: "negative ttl", secret: testSecret, uid: "u1", ttl: -time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Sign(tt.secret, tt.uid, tt.ttl, testNow)
			if err == nil || tok != "" {
				t.Fatalf("Sign() = %q, %v; want an error", tok, err)
			}
			if strings.Contains(err.Error(), string(testSecret)) {
				t.Errorf("error %q contains the secret", err)
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	k := newTestKeys(b)
	c := claims("u1", jwt.MapClaims{"sub": "u1", "iat": testNow.Unix(), "nbf": testNow.Unix()})
	benches := []struct {
		name string
		cfg  Config
		tok  string
	}{
		{name: "HS256", cfg: Config{HMACSecret: testSecret}, tok: sign(b, jwt.SigningMethodHS256, testSecret, c)},
		{name: "RS256", cfg: Config{PublicKeyPEM: k.rsaPEM}, tok: sign(b, jwt.SigningMethodRS256, k.rsa, c)},
		{name: "ES256", cfg: Config{PublicKeyPEM: k.ecPEM}, tok: sign(b, jwt.SigningMethodES256, k.ec, c)},
		{name: "EdDSA", cfg: Config{PublicKeyPEM: k.edPEM}, tok: sign(b, jwt.SigningMethodEdDSA, k.ed, c)},
	}
	for _, bb := range benches {
		b.Run(bb.name, func(b *testing.B) {
			v := newTestVerifier(b, bb.cfg)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(bb.tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
