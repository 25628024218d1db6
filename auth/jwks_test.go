package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// A provider rotates its key: the token with the new kid is accepted after
// one unknown-kid fetch, and the retired key stops verifying.
func TestJWKSRotation(t *testing.T) {
	oldKey, newKey := newRSAKey(t, 2048), newRSAKey(t, 2048)
	p := newTestProvider(t, rsaJWK("2026-01", &oldKey.PublicKey, nil))
	core, logs := observer.New(zapcore.DebugLevel)
	j, clock := newTestJWKS(t, p, JWKSConfig{}, zap.New(core))
	v := newTestVerifier(t, Config{JWKS: j})

	oldTok := signKID(t, jwt.SigningMethodRS256, oldKey, "2026-01", claims("u1", nil))
	newTok := signKID(t, jwt.SigningMethodRS256, newKey, "2026-02", claims("u1", nil))
	if _, err := v.Verify(oldTok); err != nil {
		t.Fatalf("Verify(old kid) = %v", err)
	}
	p.serve(t, rsaJWK("2026-02", &newKey.PublicKey, nil))
	if _, err := v.VerifyCached(newTok); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("VerifyCached(new kid) before any fetch = %v, want %v", err, ErrUnknownKey)
	}
	if got := p.fetches.Load(); got != 1 {
		t.Fatalf("VerifyCached fetched: %d fetches, want 1", got)
	}
	if c, err := v.Verify(newTok); err != nil || c.UID != "u1" {
		t.Fatalf("Verify(new kid) = %+v, %v; want accepted after the refetch", c, err)
	}
	if got := p.fetches.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2 (start, unknown kid)", got)
	}
	// The old key is gone with the document that had it; asking again
	// within the rate limit fetches nothing.
	if _, err := v.Verify(oldTok); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify(retired kid) = %v, want %v", err, ErrUnknownKey)
	}
	if got := p.fetches.Load(); got != 2 {
		t.Fatalf("%d fetches within the rate limit, want 2", got)
	}
	clock.Add(DefaultJWKSUnknownKID)
	if _, err := v.Verify(oldTok); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify(retired kid) later = %v, want %v", err, ErrUnknownKey)
	}
	if got := p.fetches.Load(); got != 3 {
		t.Fatalf("%d fetches once the rate limit passed, want 3", got)
	}

	refreshed := logs.FilterMessage(evJWKSRefreshed).All()
	if len(refreshed) != 3 {
		t.Fatalf("%d %s lines, want 3", len(refreshed), evJWKSRefreshed)
	}
	if f := refreshed[1].ContextMap(); f["reason"] != reasonUnknownKID || f["keys"] != int64(1) {
		t.Errorf("%s after rotation = %v", evJWKSRefreshed, f)
	}
	for _, e := range logs.All() {
		if s := fmt.Sprint(e.ContextMap()); strings.Contains(s, oldTok) || strings.Contains(s, newTok) {
			t.Fatalf("a token is in the logs: %v", e.ContextMap())
		}
	}
}

// Junk kids, sequential or all at once, cause at most one fetch per rate
// limit interval.
func TestJWKSJunkKIDsAreRateLimited(t *testing.T) {
	key := newRSAKey(t, 2048)
	p := newTestProvider(t, rsaJWK("k1", &key.PublicKey, nil))
	j, clock := newTestJWKS(t, p, JWKSConfig{}, nil)
	v := newTestVerifier(t, Config{JWKS: j})

	junk := func(i int) string {
		return signKID(t, jwt.SigningMethodRS256, key, "junk-"+strconv.Itoa(i), claims("u1", nil))
	}
	toks := make([]string, 50)
	for i := range toks {
		toks[i] = junk(i)
	}
	var wg sync.WaitGroup
	for _, tok := range toks {
		wg.Go(func() {
			if _, err := v.Verify(tok); !errors.Is(err, ErrUnknownKey) {
				t.Errorf("Verify(junk kid) = %v, want %v", err, ErrUnknownKey)
			}
		})
	}
	wg.Wait()
	for _, tok := range toks {
		if _, err := v.Verify(tok); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("Verify(junk kid) = %v, want %v", err, ErrUnknownKey)
		}
	}
	if got := p.fetches.Load(); got > 2 {
		t.Fatalf("100 junk-kid tokens caused %d fetches, want at most 2 (start, one refetch)", got)
	}
	clock.Add(DefaultJWKSUnknownKID)
	for _, tok := range toks {
		_, _ = v.Verify(tok)
	}
	if got := p.fetches.Load(); got > 3 {
		t.Fatalf("%d fetches after one more interval, want at most 3", got)
	}
}

// Requests with the same new kid arriving together wait for one fetch
// and are all accepted by it.
func TestJWKSConcurrentUnknownKIDShareOneFetch(t *testing.T) {
	oldKey, newKey := newRSAKey(t, 2048), newRSAKey(t, 2048)
	p := newTestProvider(t, rsaJWK("old", &oldKey.PublicKey, nil))
	j, _ := newTestJWKS(t, p, JWKSConfig{}, nil)
	v := newTestVerifier(t, Config{JWKS: j})

	p.serve(t, rsaJWK("new", &newKey.PublicKey, nil))
	release := p.holdRequests()
	defer release()
	tok := signKID(t, jwt.SigningMethodRS256, newKey, "new", claims("u1", nil))
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if _, err := v.Verify(tok); err != nil {
				t.Errorf("Verify(new kid) = %v, want accepted", err)
			}
		})
	}
	waitFor(t, 5*time.Second, "the unknown-kid fetch to reach the provider", func() error {
		if n := p.fetches.Load(); n != 2 {
			return fmt.Errorf("%d fetches", n)
		}
		return nil
	})
	release()
	wg.Wait()
	if got := p.fetches.Load(); got != 2 {
		t.Fatalf("%d fetches, want 2 (start, one shared refetch)", got)
	}
}

// A failed refresh, whatever the failure, keeps the keys in use.
func TestJWKSOutageKeepsKeys(t *testing.T) {
	key := newRSAKey(t, 2048)
	good := rsaJWK("k1", &key.PublicKey, nil)
	tests := []struct {
		name    string
		breakIt func(p *testProvider)
		wantErr string
	}{
		{name: "status 500", breakIt: func(p *testProvider) { p.setStatus(http.StatusInternalServerError) }, wantErr: "status 500"},
		{name: "status 204", breakIt: func(p *testProvider) { p.setStatus(http.StatusNoContent) }, wantErr: "status 204"},
		{name: "not JSON", breakIt: func(p *testProvider) { p.serveDoc([]byte("<html>maintenance</html>")) }, wantErr: "parse JWKS"},
		{name: "no keys member", breakIt: func(p *testProvider) { p.serveDoc([]byte(`{"kys":[]}`)) }, wantErr: `no "keys"`},
		{name: "no usable key", breakIt: func(p *testProvider) { p.serve(t, rsaJWK("k1", &key.PublicKey, map[string]any{"use": "enc"})) }, wantErr: "no usable signing key"},
		{name: "empty key set", breakIt: func(p *testProvider) { p.serve(t) }, wantErr: "no usable signing key"},
		{name: "server gone", breakIt: func(p *testProvider) { p.srv.Close() }, wantErr: "fetch JWKS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestProvider(t, good)
			core, logs := observer.New(zapcore.DebugLevel)
			j, clock := newTestJWKS(t, p, JWKSConfig{}, zap.New(core))
			v := newTestVerifier(t, Config{JWKS: j})
			tok := signKID(t, jwt.SigningMethodRS256, key, "k1", claims("u1", nil))

			tt.breakIt(p)
			err := j.Refresh(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Refresh() = %v, want an error with %q", err, tt.wantErr)
			}
			if _, err := v.Verify(tok); err != nil {
				t.Fatalf("Verify() after a failed refresh = %v, want the cached key", err)
			}
			// An unknown-kid fetch fails the same way, is logged, and
			// still leaves the cached key.
			clock.Add(DefaultJWKSUnknownKID)
			junk := signKID(t, jwt.SigningMethodRS256, key, "junk", claims("u1", nil))
			if _, err := v.Verify(junk); !errors.Is(err, ErrUnknownKey) {
				t.Fatalf("Verify(junk kid) = %v, want %v", err, ErrUnknownKey)
			}
			if _, err := v.Verify(tok); err != nil {
				t.Fatalf("Verify() after a failed refetch = %v, want the cached key", err)
			}
			failed := logs.FilterMessage(evJWKSFailed).All()
			if len(failed) != 1 || failed[0].Level != zapcore.WarnLevel {
				t.Fatalf("%s lines: %v, want one warning", evJWKSFailed, failed)
			}
			if f := failed[0].ContextMap(); f["reason"] != reasonUnknownKID || f["keys"] != int64(1) ||
				!strings.Contains(fmt.Sprint(f["error"]), tt.wantErr) || strings.Contains(fmt.Sprint(f), junk) {
				t.Errorf("%s = %v", evJWKSFailed, f)
			}
			if s := j.Stats(); s.Succeeded != 1 || s.Failed != 2 || s.Keys != 1 {
				t.Errorf("Stats() = %+v, want 1 succeeded, 2 failed, 1 key", s)
			}
		})
	}
}

// A document over the limit is refused without being read to its end,
// whether or not its length was announced.
func TestJWKSDocumentTooLarge(t *testing.T) {
	key := newRSAKey(t, 2048)
	small := jwksDoc(t, rsaJWK("k1", &key.PublicKey, nil))
	const limit = 2048
	big := jwksDoc(t, rsaJWK("k1", &key.PublicKey, map[string]any{"pad": strings.Repeat("x", 4*limit)}))
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			var mu sync.Mutex
			doc := small
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				mu.Lock()
				d := doc
				mu.Unlock()
				if !chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(d)))
				}
				for len(d) > 0 {
					n := min(len(d), 512)
					if _, err := w.Write(d[:n]); err != nil {
						return
					}
					if chunked {
						w.(http.Flusher).Flush()
					}
					d = d[n:]
				}
			}))
			defer srv.Close()
			j, err := NewJWKS(JWKSConfig{URL: srv.URL, MaxBytes: limit}, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			if err := j.Refresh(context.Background()); err != nil {
				t.Fatalf("Refresh(small document) = %v", err)
			}
			mu.Lock()
			doc = big
			mu.Unlock()
			if err := j.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
				t.Fatalf("Refresh(%d-byte document, limit %d) = %v, want it refused", len(big), limit, err)
			}
			if s := j.Stats(); s.Keys != 1 {
				t.Fatalf("Stats() = %+v: the key set in use was dropped", s)
			}
		})
	}
}

// A provider that does not answer holds a fetch, and the request that
// caused it, for at most the timeout.
func TestJWKSSlowProviderIsBounded(t *testing.T) {
	key := newRSAKey(t, 2048)
	p := newTestProvider(t, rsaJWK("k1", &key.PublicKey, nil))
	const timeout = 200 * time.Millisecond
	j, _ := newTestJWKS(t, p, JWKSConfig{Timeout: timeout}, nil)
	v := newTestVerifier(t, Config{JWKS: j})
	release := p.holdRequests()
	defer release()

	start := time.Now()
	err := j.Refresh(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Refresh() from a silent provider = %v, want %v", err, context.DeadlineExceeded)
	}
	if took := time.Since(start); took > timeout+2*time.Second {
		t.Fatalf("Refresh() took %s with a timeout of %s", took, timeout)
	}
	start = time.Now()
	tok := signKID(t, jwt.SigningMethodRS256, key, "unknown", claims("u1", nil))
	if _, err := v.Verify(tok); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("Verify(unknown kid) = %v, want %v", err, ErrUnknownKey)
	}
	if took := time.Since(start); took > timeout+2*time.Second {
		t.Fatalf("Verify() took %s with a fetch timeout of %s", took, timeout)
	}
	// A canceled caller stops waiting at once, and cancels the fetch it
	// started.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := j.Refresh(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Refresh(canceled ctx) = %v, want %v", err, context.Canceled)
	}
}

// The background refresher picks up a new key without any request
// asking, retries soon after failures, takes unknown kids from
// VerifyCached, and stops with Close.
func TestJWKSBackgroundRefresh(t *testing.T) {
	oldKey, newKey := newRSAKey(t, 2048), newRSAKey(t, 2048)
	p := newTestProvider(t, rsaJWK("old", &oldKey.PublicKey, nil))

	t.Run("interval", func(t *testing.T) {
		j, _ := newTestJWKS(t, p, JWKSConfig{RefreshInterval: 20 * time.Millisecond}, nil)
		v := newTestVerifier(t, Config{JWKS: j})
		p.serve(t, rsaJWK("new", &newKey.PublicKey, nil))
		j.Start()
		tok := signKID(t, jwt.SigningMethodRS256, newKey, "new", claims("u1", nil))
		waitFor(t, 5*time.Second, "the refresher to fetch the new key", func() error {
			_, err := v.VerifyCached(tok)
			return err
		})
		j.Close()
		if err := j.Refresh(context.Background()); !errors.Is(err, errJWKSClosed) {
			t.Fatalf("Refresh() after Close = %v, want %v", err, errJWKSClosed)
		}
		j.Start() // after Close: starts nothing (TestMain checks for goroutines)
	})

	t.Run("nudged by VerifyCached", func(t *testing.T) {
		p.serve(t, rsaJWK("old", &oldKey.PublicKey, nil))
		j, _ := newTestJWKS(t, p, JWKSConfig{RefreshInterval: time.Hour}, nil)
		v := newTestVerifier(t, Config{JWKS: j})
		j.Start()
		p.serve(t, rsaJWK("new", &newKey.PublicKey, nil))
		before := p.fetches.Load()
		tok := signKID(t, jwt.SigningMethodRS256, newKey, "new", claims("u1", nil))
		if _, err := v.VerifyCached(tok); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("VerifyCached(new kid) = %v, want %v at once", err, ErrUnknownKey)
		}
		waitFor(t, 5*time.Second, "the refresher to fetch for the nudged kid", func() error {
			_, err := v.VerifyCached(tok)
			return err
		})
		if got := p.fetches.Load() - before; got != 1 {
			t.Fatalf("%d fetches for the nudge, want 1", got)
		}
	})

	t.Run("retries soon when the start failed", func(t *testing.T) {
		p.setStatus(http.StatusServiceUnavailable)
		defer p.setStatus(http.StatusOK)
		j, err := NewJWKS(JWKSConfig{URL: p.url(), UnknownKIDInterval: 10 * time.Millisecond}, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		if err := j.Refresh(context.Background()); err == nil {
			t.Fatal("Refresh() from a failing provider succeeded")
		}
		j.Start()
		p.setStatus(http.StatusOK)
		waitFor(t, 5*time.Second, "a retry well before the refresh interval", func() error {
			if s := j.Stats(); s.Keys == 0 {
				return fmt.Errorf("no keys yet: %+v", s)
			}
			return nil
		})
	})
}

// With a secret, a PEM key and a JWKS, each token goes to the key its
// algorithm and kid name, and only HS256 and unknown kids of asymmetric
// tokens could ever cause a fetch.
func TestJWKSBesideOtherKeys(t *testing.T) {
	k := newTestKeys(t) // k.ed is the PEM key
	jwksKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := newTestProvider(t, ecJWK(t, "e1", &jwksKey.PublicKey, nil))
	j, _ := newTestJWKS(t, p, JWKSConfig{}, nil)
	v := newTestVerifier(t, Config{HMACSecret: testSecret, PublicKeyPEM: k.edPEM, JWKS: j})
	c := claims("u1", nil)

	tests := []struct {
		name        string
		give        string
		want        error
		wantFetches int64 // beyond the one at start
	}{
		{name: "HS256 with a kid: the secret, no fetch", give: signKID(t, jwt.SigningMethodHS256, testSecret, "any", c)},
		{name: "EdDSA without kid: the PEM key", give: signKID(t, jwt.SigningMethodEdDSA, k.ed, "", c)},
		{name: "ES256 by kid: the JWKS key", give: signKID(t, jwt.SigningMethodES256, jwksKey, "e1", c)},
		{name: "EdDSA with a kid the JWKS lacks: the PEM key, no fetch", give: signKID(t, jwt.SigningMethodEdDSA, k.ed, "pem-1", c)},
		{name: "ES256 without kid: not the JWKS key", give: signKID(t, jwt.SigningMethodES256, jwksKey, "", c), want: ErrInvalidToken},
		{name: "EdDSA unknown kid, not the PEM key: one fetch", give: signKID(t, jwt.SigningMethodEdDSA, ed25519.NewKeyFromSeed(make([]byte, 32)), "x", c), want: ErrUnknownKey, wantFetches: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := p.fetches.Load()
			_, err := v.Verify(tt.give)
			if tt.want == nil && err != nil {
				t.Fatalf("Verify() = %v, want accepted", err)
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify() = %v, want %v", err, tt.want)
			}
			if got := p.fetches.Load() - before; got != tt.wantFetches {
				t.Fatalf("%d fetches, want %d", got, tt.wantFetches)
			}
		})
	}
}

// Ignored keys are named, with the reason, in the refresh's log line.
func TestJWKSLogsIgnoredKeys(t *testing.T) {
	good, weak := newRSAKey(t, 2048), newRSAKey(t, 1024)
	p := newTestProvider(t, rsaJWK("good", &good.PublicKey, nil), rsaJWK("weak", &weak.PublicKey, nil))
	core, logs := observer.New(zapcore.DebugLevel)
	newTestJWKS(t, p, JWKSConfig{}, zap.New(core))
	lines := logs.FilterMessage(evJWKSRefreshed).All()
	if len(lines) != 1 || lines[0].Level != zapcore.InfoLevel {
		t.Fatalf("%s lines: %v, want one at info", evJWKSRefreshed, lines)
	}
	f := lines[0].ContextMap()
	if f["reason"] != reasonStart || f["keys"] != int64(1) || fmt.Sprint(f["kids"]) != "[good]" ||
		!strings.Contains(fmt.Sprint(f["ignored"]), `"weak": RSA key has 1024 bits`) {
		t.Fatalf("%s = %v", evJWKSRefreshed, f)
	}
}

func TestNewJWKS(t *testing.T) {
	tests := []struct {
		name    string
		give    JWKSConfig
		wantErr string
		wantLog bool // the plain-HTTP warning
	}{
		{name: "https", give: JWKSConfig{URL: "https://idp.example/.well-known/jwks.json"}},
		{name: "http warns", give: JWKSConfig{URL: "http://keycloak:8080/realms/r/protocol/openid-connect/certs"}, wantLog: true},
		{name: "empty", give: JWKSConfig{}, wantErr: "want https://"},
		{name: "no scheme", give: JWKSConfig{URL: "idp.example/jwks"}, wantErr: "want https://"},
		{name: "ftp", give: JWKSConfig{URL: "ftp://idp.example/jwks"}, wantErr: "want https://"},
		{name: "no host", give: JWKSConfig{URL: "https:///jwks"}, wantErr: "want https://"},
		{name: "unparsable", give: JWKSConfig{URL: "https://idp.example/%zz"}, wantErr: "JWKS URL"},
		{name: "negative timeout", give: JWKSConfig{URL: "https://idp.example/j", Timeout: -1}, wantErr: "negative"},
		{name: "negative max bytes", give: JWKSConfig{URL: "https://idp.example/j", MaxBytes: -1}, wantErr: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.DebugLevel)
			j, err := NewJWKS(tt.give, zap.New(core))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewJWKS() = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewJWKS() = %v", err)
			}
			j.Close()
			if got := logs.FilterMessage(evJWKSPlainHTTP).Len() == 1; got != tt.wantLog {
				t.Fatalf("plain HTTP warning logged: %v, want %v", got, tt.wantLog)
			}
		})
	}
	// A password in the URL is never repeated.
	_, err := NewJWKS(JWKSConfig{URL: "ftp://user:hunter2@idp.example/j"}, zap.NewNop())
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("NewJWKS() = %v, want an error without the password", err)
	}
}

// Redirects are followed, but never from https down to http.
func TestCheckJWKSRedirect(t *testing.T) {
	req := func(u string) *http.Request {
		r, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := checkJWKSRedirect(req("https://b/j"), []*http.Request{req("https://a/j")}); err != nil {
		t.Errorf("https to https: %v", err)
	}
	if err := checkJWKSRedirect(req("http://b/j"), []*http.Request{req("https://a/j")}); err == nil {
		t.Error("https to http allowed")
	}
	via := []*http.Request{req("http://a/1"), req("http://a/2"), req("http://a/3"), req("http://a/4")}
	if err := checkJWKSRedirect(req("http://a/5"), via); err == nil {
		t.Error("a fifth redirect allowed")
	}
}
