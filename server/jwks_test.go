package server_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/server"
)

// idp is an identity provider's JWKS endpoint with Ed25519 keys it can
// rotate, fail and count fetches of.
type idp struct {
	srv     *httptest.Server
	fetches atomic.Int64

	mu     sync.Mutex
	keys   map[string]ed25519.PrivateKey // kid -> key, all published
	status int
}

func newIDP(t testing.TB, kids ...string) *idp {
	t.Helper()
	p := &idp{keys: map[string]ed25519.PrivateKey{}, status: http.StatusOK}
	p.publish(t, kids...)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.status != http.StatusOK {
			w.WriteHeader(p.status)
			return
		}
		keys := []map[string]string{}
		for kid, k := range p.keys {
			keys = append(keys, map[string]string{"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid,
				"x": base64.RawURLEncoding.EncodeToString(k.Public().(ed25519.PublicKey))})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// publish replaces the published keys with new ones named kids.
func (p *idp) publish(t testing.TB, kids ...string) {
	t.Helper()
	keys := map[string]ed25519.PrivateKey{}
	for _, kid := range kids {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[kid] = k
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = keys
}

func (p *idp) setStatus(code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status = code
}

// token signs a token for uid with the published key kid, or, for a kid
// not published, with a key nobody knows.
func (p *idp) token(t testing.TB, kid, uid string) string {
	t.Helper()
	p.mu.Lock()
	k, ok := p.keys[kid]
	p.mu.Unlock()
	if !ok {
		_, k, _ = ed25519.GenerateKey(rand.Reader)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": uid, "exp": time.Now().Add(time.Hour).Unix()})
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// jwksConfig is testConfig with the JWKS of p as the only key.
func jwksConfig(t testing.TB, p *idp) server.Config {
	cfg := testConfig(t)
	cfg.Auth = auth.Config{}
	cfg.JWKS = auth.JWKSConfig{URL: p.srv.URL + "/jwks"}
	return cfg
}

// dialToken upgrades with tok in the query, as a browser does; on a
// refusal it returns the status and the JSON error.
func (n *node) dialToken(t testing.TB, tok string) (*client, int, string) {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(n.wsURL("token="+tok), nil)
	if err == nil {
		return harness.NewPump(c), http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	defer resp.Body.Close()
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return nil, resp.StatusCode, body["error"]
}

// With the JWKS as the only key (and the embedded NATS, so no dev
// secret), a token signed by a published key connects and receives; a
// rotated key is learnt on the request that needs it; an unknown kid and
// the dev secret get 401.
func TestJWKSTokensThroughTheNode(t *testing.T) {
	p := newIDP(t, "k1")
	n := startNode(t, jwksConfig(t, p))
	n.logs.Wait(t, 5*time.Second, "auth.jwks_refreshed", map[string]any{"reason": "start", "keys": float64(1)})
	if l := n.logs.Find("auth.dev_secret", nil); len(l) > 0 {
		t.Fatalf("dev secret enabled beside a JWKS: %v", l)
	}

	good := p.token(t, "k1", "alice")
	c, code, _ := n.dialToken(t, good)
	if c == nil {
		t.Fatalf("JWKS token refused with %d", code)
	}
	_, js := n.natsClient(t)
	publish(t, js, "push.alice", []byte("hello"))
	if _, got := read(t, c, 5*time.Second); string(got) != "hello" {
		t.Fatalf("got %q", got)
	}

	p.publish(t, "k2")
	before := p.fetches.Load()
	if c, code, _ := n.dialToken(t, p.token(t, "k2", "bob")); c == nil {
		t.Fatalf("token of the rotated key refused with %d", code)
	}
	if got := p.fetches.Load() - before; got != 1 {
		t.Fatalf("%d fetches for the rotated key, want 1", got)
	}

	unknown := p.token(t, "nobody", "alice")
	dev, err := auth.Sign([]byte(auth.DevSecret), "alice", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"unknown kid": unknown, "dev secret": dev} {
		if _, code, msg := n.dialToken(t, tok); code != http.StatusUnauthorized || msg != "invalid token" {
			t.Errorf("%s: %d %q, want 401 %q", name, code, msg, "invalid token")
		}
	}

	metrics := scrape(t, n)
	for _, want := range []string{`pusher_jwks_refresh_total{result="ok"}`, `pusher_jwks_refresh_total{result="error"} 0`, "pusher_jwks_keys 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, tok := range []string{good, unknown, dev} {
		if strings.Contains(n.logs.String(), tok) {
			t.Fatal("a token is in the logs")
		}
	}
}

// A JWKS is a key: a node with it alone starts on an external NATS,
// where the dev secret is refused.
func TestJWKSOnlyWithExternalNATS(t *testing.T) {
	a := startNode(t, testConfig(t))
	p := newIDP(t, "k1")
	cfg := jwksConfig(t, p)
	cfg.NATSURL = a.NATSURL()
	b := startNode(t, cfg)
	if c, code, _ := b.dialToken(t, p.token(t, "k1", "carol")); c == nil {
		t.Fatalf("JWKS token refused with %d", code)
	}
}

// The provider down at start: with the JWKS alone, New fails (the node
// could only refuse every client); beside a secret, the node starts,
// warns, and learns the keys once the provider is back.
func TestJWKSProviderDownAtStart(t *testing.T) {
	t.Run("alone", func(t *testing.T) {
		p := newIDP(t, "k1")
		p.setStatus(http.StatusServiceUnavailable)
		_, err := server.New(context.Background(), jwksConfig(t, p), newLogger(io.Discard))
		var ce *server.ConfigError
		if err == nil || errors.As(err, &ce) || !strings.Contains(err.Error(), "first fetch") || !strings.Contains(err.Error(), "status 503") {
			t.Fatalf("New with the only key's provider down: %v, want a start (not config) error", err)
		}
	})
	t.Run("beside a secret", func(t *testing.T) {
		p := newIDP(t, "k1")
		p.setStatus(http.StatusServiceUnavailable)
		cfg := jwksConfig(t, p)
		cfg.Auth.HMACSecret = []byte(testSecret)
		cfg.JWKS.UnknownKIDInterval = 20 * time.Millisecond // first retry after 20ms
		n := startNode(t, cfg)
		n.logs.Wait(t, 5*time.Second, "auth.jwks_failed", map[string]any{"reason": "start"})
		n.dial(t, "dave") // the secret works meanwhile
		p.setStatus(http.StatusOK)
		tok := p.token(t, "k1", "dave")
		waitFor(t, 10*time.Second, "the JWKS token to be accepted", func() error {
			c, code, msg := n.dialToken(t, tok)
			if c == nil {
				return fmt.Errorf("refused: %d %q", code, msg)
			}
			return nil
		})
	})
}

// scrape returns the node's /metrics page.
func scrape(t testing.TB, n *node) string {
	t.Helper()
	resp, err := http.Get(n.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
