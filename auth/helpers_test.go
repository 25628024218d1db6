package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
)

// testNow is the injected clock of every test: nothing here reads the wall clock.
var testNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

func fixedClock() time.Time { return testNow }

// testSecret is the HS256 secret shared by the tests and fuzz targets.
var testSecret = []byte("test-secret-0123456789-abcdefghij")

// keyDir holds the committed Ed25519 pair other packages' tests use too.
var keyDir = filepath.Join("..", "testdata", "keys")

// testKeys is one freshly generated key of every supported family, with the
// public halves PEM-encoded as an operator would supply them.
type testKeys struct {
	rsa    *rsa.PrivateKey
	rsaPEM []byte
	ec     *ecdsa.PrivateKey
	ecPEM  []byte
	ed     ed25519.PrivateKey
	edPEM  []byte
}

func newTestKeys(tb testing.TB) testKeys {
	tb.Helper()
	var k testKeys
	k.rsa = newRSAKey(tb, 2048)
	k.rsaPEM = pkixPEM(tb, &k.rsa.PublicKey)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate ECDSA key: %v", err)
	}
	k.ec, k.ecPEM = ec, pkixPEM(tb, &ec.PublicKey)
	edPub, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatalf("generate Ed25519 key: %v", err)
	}
	k.ed, k.edPEM = ed, pkixPEM(tb, edPub)
	return k
}

func newRSAKey(tb testing.TB, bits int) *rsa.PrivateKey {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		tb.Fatalf("generate RSA-%d key: %v", bits, err)
	}
	return k
}

// pkixPEM encodes pub as a "PUBLIC KEY" PEM block.
func pkixPEM(tb testing.TB, pub any) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatalf("marshal public key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// certPEM wraps priv's public key in a self-signed "CERTIFICATE" PEM block.
func certPEM(tb testing.TB, priv *ecdsa.PrivateKey) []byte {
	tb.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: testNow, NotAfter: testNow.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		tb.Fatalf("create certificate: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// sign mints a token with the given method, key and claims.
func sign(tb testing.TB, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s token: %v", m.Alg(), err)
	}
	return s
}

// unsignedToken builds "<header>.<payload>." by hand, as an attacker would,
// with the given alg and raw JSON payload.
func unsignedToken(alg, payload string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"`+alg+`","typ":"JWT"}`)) + "." +
		enc.EncodeToString([]byte(payload)) + "."
}

// omit, as a value in claims' extra, deletes that claim (nil means JSON null).
type omit struct{}

// claims returns {uid, exp: now+1h} merged with extra.
func claims(uid string, extra jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{"uid": uid, "exp": testNow.Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == (omit{}) {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

func newTestVerifier(tb testing.TB, cfg Config) *Verifier {
	tb.Helper()
	if cfg.Now == nil {
		cfg.Now = fixedClock
	}
	v, err := NewVerifier(cfg)
	if err != nil {
		tb.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// readKeyFile reads one of the committed keys under testdata/keys.
func readKeyFile(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(keyDir, name))
	if err != nil {
		tb.Fatalf("read key: %v", err)
	}
	return b
}

// committedEdKey returns the committed Ed25519 private key and public PEM.
func committedEdKey(tb testing.TB) (any, []byte) {
	tb.Helper()
	priv, err := jwt.ParseEdPrivateKeyFromPEM(readKeyFile(tb, "ed25519.pem"))
	if err != nil {
		tb.Fatalf("parse committed private key: %v", err)
	}
	return priv, readKeyFile(tb, "ed25519.pub.pem")
}

// signKID mints a token like sign, with kid in its header when non-empty.
func signKID(tb testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	tb.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s token: %v", m.Alg(), err)
	}
	return s
}

// b64 is base64url without padding, as JWKs encode their members.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwkWith merges extra into a JWK (omit{} deletes a member).
func jwkWith(k, extra map[string]any) map[string]any {
	for name, v := range extra {
		if v == (omit{}) {
			delete(k, name)
			continue
		}
		k[name] = v
	}
	return k
}

func rsaJWK(kid string, pub *rsa.PublicKey, extra map[string]any) map[string]any {
	return jwkWith(map[string]any{
		"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes()),
	}, extra)
}

func ecJWK(tb testing.TB, kid string, pub *ecdsa.PublicKey, extra map[string]any) map[string]any {
	tb.Helper()
	point, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		tb.Fatal(err)
	}
	size := (len(point) - 1) / 2
	return jwkWith(map[string]any{
		"kty": "EC", "kid": kid, "crv": pub.Curve.Params().Name, "alg": "ES256",
		"x": b64(point[1 : 1+size]), "y": b64(point[1+size:]),
	}, extra)
}

func edJWK(kid string, pub ed25519.PublicKey, extra map[string]any) map[string]any {
	return jwkWith(map[string]any{"kty": "OKP", "kid": kid, "crv": "Ed25519", "alg": "EdDSA", "x": b64(pub)}, extra)
}

// jwksDoc encodes keys as a JWKS document.
func jwksDoc(tb testing.TB, keys ...map[string]any) []byte {
	tb.Helper()
	if keys == nil {
		keys = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// testProvider is an identity provider's JWKS endpoint: a real HTTP
// server whose document, status and speed a test changes while it runs,
// and which counts the requests it got.
type testProvider struct {
	srv     *httptest.Server
	fetches atomic.Int64 // requests received, counted on arrival

	mu     sync.Mutex
	doc    []byte
	status int
	hold   chan struct{} // non-nil: requests wait for it to close, or for the client to give up
}

func newTestProvider(tb testing.TB, keys ...map[string]any) *testProvider {
	tb.Helper()
	p := &testProvider{doc: jwksDoc(tb, keys...), status: http.StatusOK}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		doc, status, hold := p.doc, p.status, p.hold
		p.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		_, _ = w.Write(doc)
	}))
	tb.Cleanup(p.srv.Close)
	return p
}

func (p *testProvider) url() string { return p.srv.URL + "/.well-known/jwks.json" }

func (p *testProvider) serve(tb testing.TB, keys ...map[string]any) { p.serveDoc(jwksDoc(tb, keys...)) }

func (p *testProvider) serveDoc(doc []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doc = doc
}

func (p *testProvider) setStatus(code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status = code
}

// holdRequests makes requests wait until release is called.
func (p *testProvider) holdRequests() (release func()) {
	hold := make(chan struct{})
	p.mu.Lock()
	p.hold = hold
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			p.hold = nil
			p.mu.Unlock()
			close(hold)
		})
	}
}

// fakeClock is the unknown-kid rate limit's clock, moved by the test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newTestJWKS builds a JWKS on p with a fake rate-limit clock, fetches
// once (which must succeed), and closes it in t.Cleanup.
func newTestJWKS(tb testing.TB, p *testProvider, cfg JWKSConfig, log *zap.Logger) (*JWKS, *fakeClock) {
	tb.Helper()
	clock := &fakeClock{now: testNow}
	cfg.URL = p.url()
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	j, err := NewJWKS(cfg, log)
	if err != nil {
		tb.Fatalf("NewJWKS: %v", err)
	}
	tb.Cleanup(j.Close)
	if err := j.Refresh(context.Background()); err != nil {
		tb.Fatalf("first JWKS fetch: %v", err)
	}
	return j, clock
}

// waitFor polls cond until it returns nil, failing tb with cond's last
// error (why it was still waiting) after timeout.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
