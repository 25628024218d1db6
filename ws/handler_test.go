package ws

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
)

// TestRejections: every request the handler refuses gets its HTTP status
// and JSON error, never a WebSocket, and leaves nothing in the hub.
func TestRejections(t *testing.T) {
	k := keys(t)
	// HS256 and RS256 both enabled, so alg confusion between them is tried.
	authCfg := auth.Config{HMACSecret: testSecret, PublicKeyPEM: publicPEM(t, &k.rsa.PublicKey)}
	now := time.Now()
	valid := signToken(t, "alice", time.Hour)
	hs := func(claims jwt.MapClaims) string { return signClaims(t, jwt.SigningMethodHS256, testSecret, claims) }
	withUID := func(uid string) string { return hs(claimsFor(uid)) }
	padded := claimsFor("alice")
	padded["pad"] = strings.Repeat("x", auth.DefaultMaxTokenBytes)
	handshake := http.Header{ // everything a handshake needs but the key
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
	}

	tests := []struct {
		name        string
		giveOrigins []string    // Config.AllowedOrigins
		giveHeader  http.Header // request headers
		giveQuery   string      // raw query
		giveMethod  string      // "": a WebSocket dial; else a plain HTTP request
		wantStatus  int
		wantError   string
	}{
		{
			name:       "missing token",
			wantStatus: http.StatusUnauthorized,
			wantError:  "missing token",
		},
		{
			name:       "empty query token",
			giveQuery:  "token=",
			wantStatus: http.StatusUnauthorized,
			wantError:  "missing token",
		},
		{
			name:       "garbage token",
			giveHeader: bearer("not-a-jwt"),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid token",
		},
		{
			name:       "garbage query token",
			giveQuery:  "token=not.a.jwt",
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid token",
		},
		{
			name:       "wrong HMAC secret",
			giveHeader: bearer(signClaims(t, jwt.SigningMethodHS256, []byte("some-other-secret-0123456789abcdef"), claimsFor("alice"))),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid token",
		},
		{
			name:       "alg none",
			giveHeader: bearer(algNoneToken("alice")),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid token",
		},
		{
			name:       "RS256 signed with another key",
			giveHeader: bearer(signClaims(t, jwt.SigningMethodRS256, k.otherRSA, claimsFor("alice"))),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid token",
		},
		{
			name:       "HS256 keyed with the RSA public key",
			giveHeader: bearer(signClaims(t, jwt.SigningMethodHS256, publicPEM(t, &k.rsa.PublicKey), claimsFor("alice"))),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid token",
		},
		{
			name:       "ES256 not configured",
			giveHeader: bearer(signClaims(t, jwt.SigningMethodES256, k.ec, claimsFor("alice"))),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid token",
		},
		{
			name:       "expired",
			giveHeader: bearer(hs(jwt.MapClaims{"uid": "alice", "exp": now.Add(-time.Hour).Unix()})),
			wantStatus: http.StatusUnauthorized,
			wantError:  "token expired",
		},
		{
			name:       "nbf in the future",
			giveHeader: bearer(hs(jwt.MapClaims{"uid": "alice", "nbf": now.Add(time.Hour).Unix(), "exp": now.Add(2 * time.Hour).Unix()})),
			wantStatus: http.StatusUnauthorized,
			wantError:  "token not yet valid",
		},
		{
			name:       "no uid or sub",
			giveHeader: bearer(hs(jwt.MapClaims{"exp": now.Add(time.Hour).Unix()})),
			wantStatus: http.StatusUnauthorized,
			wantError:  "token has no uid",
		},
		{
			name:       "uid not a string",
			giveHeader: bearer(hs(jwt.MapClaims{"uid": 42, "sub": "alice", "exp": now.Add(time.Hour).Unix()})),
			wantStatus: http.StatusUnauthorized,
			wantError:  "token has no uid",
		},
		{
			name:       "uid with dot",
			giveHeader: bearer(withUID("alice.bob")),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid uid",
		},
		{
			name:       "uid with star",
			giveHeader: bearer(withUID("alice*")),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid uid",
		},
		{
			name:       "uid with gt",
			giveHeader: bearer(withUID("alice>")),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid uid",
		},
		{
			name:       "uid with space",
			giveHeader: bearer(withUID("alice bob")),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid uid",
		},
		{
			name:       "sub fallback with dot",
			giveHeader: bearer(hs(jwt.MapClaims{"sub": "a.b", "exp": now.Add(time.Hour).Unix()})),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid uid",
		},
		{
			name:       "uid of 129 bytes",
			giveHeader: bearer(withUID(strings.Repeat("u", wire.MaxUIDLen+1))),
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid uid",
		},
		{
			name:       "token over 8 KiB",
			giveHeader: bearer(hs(padded)),
			wantStatus: http.StatusUnauthorized,
			wantError:  "token too large",
		},
		{
			name:       "query token over 8 KiB",
			giveQuery:  "token=" + hs(padded),
			wantStatus: http.StatusUnauthorized,
			wantError:  "token too large",
		},
		{
			name:       "authorization basic",
			giveHeader: http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}},
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid token",
		},
		{
			name:       "authorization basic beats a valid query token",
			giveHeader: http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}},
			giveQuery:  "token=" + valid,
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid token",
		},
		{
			name:       "two authorization headers",
			giveHeader: http.Header{"Authorization": {"Bearer " + valid, "Bearer " + valid}},
			wantStatus: http.StatusUnauthorized,
			wantError:  "invalid token",
		},
		{
			name:        "origin not in the list",
			giveOrigins: []string{"https://app.example.com"},
			giveHeader:  http.Header{"Authorization": {"Bearer " + valid}, "Origin": {"https://evil.example.com"}},
			wantStatus:  http.StatusForbidden,
			wantError:   "origin not allowed",
		},
		{
			name:        "origin differs in scheme only",
			giveOrigins: []string{"https://app.example.com"},
			giveHeader:  http.Header{"Authorization": {"Bearer " + valid}, "Origin": {"http://app.example.com"}},
			wantStatus:  http.StatusForbidden,
			wantError:   "origin not allowed",
		},
		{
			name:       "cross origin under the default same-origin rule",
			giveHeader: http.Header{"Authorization": {"Bearer " + valid}, "Origin": {"https://app.example.com"}},
			wantStatus: http.StatusForbidden,
			wantError:  "origin not allowed",
		},
		{
			name:       "opaque origin null",
			giveHeader: http.Header{"Authorization": {"Bearer " + valid}, "Origin": {"null"}},
			wantStatus: http.StatusForbidden,
			wantError:  "origin not allowed",
		},
		{
			name:       "plain GET without upgrade headers",
			giveMethod: http.MethodGet,
			giveHeader: bearer(valid),
			wantStatus: http.StatusBadRequest,
			wantError:  "websocket upgrade required",
		},
		{
			name:       "POST with upgrade headers",
			giveMethod: http.MethodPost,
			giveHeader: merge(bearer(valid), handshake),
			wantStatus: http.StatusMethodNotAllowed,
			wantError:  "method not allowed",
		},
		{
			name:       "handshake without Sec-WebSocket-Key",
			giveMethod: http.MethodGet,
			giveHeader: merge(bearer(valid), handshake),
			wantStatus: http.StatusBadRequest,
			wantError:  "bad websocket handshake",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, setup{Auth: authCfg, WS: Config{AllowedOrigins: tt.giveOrigins}})
			if tt.giveMethod == "" {
				c, resp, err := ts.dial(t, dialer(0), tt.giveHeader, tt.giveQuery)
				wantRefused(t, c, resp, err, tt.wantStatus, tt.wantError)
			} else {
				u := ts.srv.URL + "/ws"
				if tt.giveQuery != "" {
					u += "?" + tt.giveQuery
				}
				req, err := http.NewRequest(tt.giveMethod, u, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header = tt.giveHeader.Clone()
				resp, err := ts.srv.Client().Do(req)
				if err != nil {
					t.Fatalf("%s /ws: %v", tt.giveMethod, err)
				}
				defer resp.Body.Close()
				wantJSONError(t, resp, tt.wantStatus, tt.wantError)
			}
			if n := ts.hub.Len(); n != 0 {
				t.Errorf("hub.Len() = %d after a refused request, want 0", n)
			}
		})
	}
}

// merge returns a copy of a with b's fields added.
func merge(a, b http.Header) http.Header {
	m := a.Clone()
	for k, v := range b {
		m[k] = append(m[k], v...)
	}
	return m
}

// TestAccepted: every supported way to present a token and every allowed
// origin gets a live, registered connection.
func TestAccepted(t *testing.T) {
	k := keys(t)
	rsaTok := signClaims(t, jwt.SigningMethodRS256, k.rsa, claimsFor("alice"))
	ecTok := signClaims(t, jwt.SigningMethodES256, k.ec, claimsFor("alice"))
	edTok := signClaims(t, jwt.SigningMethodEdDSA, k.ed, claimsFor("alice"))
	tok := signToken(t, "alice", time.Hour)

	tests := []struct {
		name        string
		giveAuth    auth.Config // zero: HS256 with testSecret
		giveOrigins []string
		giveHeader  http.Header
		giveQuery   string
		giveSameOrg bool // send the server's own origin
	}{
		{name: "bearer header", giveHeader: bearer(tok)},
		{name: "lower-case bearer scheme", giveHeader: http.Header{"Authorization": {"bearer " + tok}}},
		{name: "query token", giveQuery: "token=" + tok},
		{name: "RS256", giveAuth: auth.Config{PublicKeyPEM: publicPEM(t, &k.rsa.PublicKey)}, giveHeader: bearer(rsaTok)},
		{name: "ES256", giveAuth: auth.Config{PublicKeyPEM: publicPEM(t, &k.ec.PublicKey)}, giveHeader: bearer(ecTok)},
		{name: "EdDSA", giveAuth: auth.Config{PublicKeyPEM: publicPEM(t, k.ed.Public())}, giveQuery: "token=" + edTok},
		{
			name:        "origin in the list",
			giveOrigins: []string{"http://localhost:3000", "https://app.example.com"},
			giveHeader:  http.Header{"Authorization": {"Bearer " + tok}, "Origin": {"https://app.example.com"}},
		},
		{
			name:        "origin in the list, case and trailing slash aside",
			giveOrigins: []string{"https://App.Example.com/"},
			giveHeader:  http.Header{"Authorization": {"Bearer " + tok}, "Origin": {"https://app.EXAMPLE.com"}},
		},
		{
			name:        "no origin header with a list",
			giveOrigins: []string{"https://app.example.com"},
			giveHeader:  bearer(tok),
		},
		{
			name:        "star allows any origin",
			giveOrigins: []string{"*"},
			giveHeader:  http.Header{"Authorization": {"Bearer " + tok}, "Origin": {"https://anything.example.net"}},
		},
		{
			name:        "default allows same origin",
			giveHeader:  bearer(tok),
			giveSameOrg: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, setup{Auth: tt.giveAuth, WS: Config{AllowedOrigins: tt.giveOrigins}})
			header := tt.giveHeader.Clone()
			if tt.giveSameOrg {
				header.Set("Origin", ts.srv.URL)
			}
			c, resp, err := ts.dial(t, dialer(0), header, tt.giveQuery)
			if err != nil {
				t.Fatalf("dial: %v (%s)", err, describe(resp))
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Errorf("status = %d, want 101", resp.StatusCode)
			}
			if !ts.hub.Online("alice") || ts.hub.Len() != 1 {
				t.Fatalf("alice online = %v, hub.Len() = %d; want registered", ts.hub.Online("alice"), ts.hub.Len())
			}
			rec := newRecorder(t)
			if n := ts.hub.Route("alice", rec.message([]byte("hello"))); n != 1 {
				t.Fatalf("Route = %d, want 1", n)
			}
			wantMessage(t, pump(c), websocket.TextMessage, []byte("hello"))
		})
	}
}

// TestOnConnect: OnConnect gets the uid once the connection is registered
// and upgraded, so what it routes (a replay) reaches the new client; it is
// not called for refused requests.
func TestOnConnect(t *testing.T) {
	type call struct {
		uid    string
		online bool
		routed int
	}
	calls := make(chan call, 4)
	var h atomic.Pointer[hub.Hub]
	rec := newRecorder(t)
	welcome := rec.message([]byte("welcome back"))
	ts := newTestServer(t, setup{WS: Config{OnConnect: func(uid string) {
		hb := h.Load()
		calls <- call{uid: uid, online: hb.Online(uid), routed: hb.Route(uid, welcome)}
	}}})
	h.Store(ts.hub)

	c, resp, err := ts.dial(t, dialer(0), bearer("garbage"), "")
	wantRefused(t, c, resp, err, http.StatusUnauthorized, "invalid token")
	carol := ts.open(t, "carol")

	select {
	case got := <-calls:
		if got != (call{uid: "carol", online: true, routed: 1}) {
			t.Errorf("OnConnect saw %+v, want uid carol, online, routed to 1 connection", got)
		}
	case <-time.After(waitTimeout):
		t.Fatal("OnConnect not called")
	}
	wantMessage(t, carol, websocket.TextMessage, welcome.Data)
	waitFor(t, waitTimeout, rec.hasCount(1))
	if got := rec.reports(welcome); got[0] != nil {
		t.Errorf("welcome reported %v, want nil", got[0])
	}
	select {
	case got := <-calls:
		t.Errorf("extra OnConnect call %+v", got)
	default:
	}
}

// TestHubRefusals: the hub's connection caps and its shutdown refuse the
// upgrade with 429 or 503 and a JSON error.
func TestHubRefusals(t *testing.T) {
	tests := []struct {
		name         string
		giveHub      hub.Config
		giveFirst    string // uid connected first; "" for none
		giveShutdown bool   // shut the hub down before dialling
		giveUID      string // uid of the refused dial
		thenAccept   string // a uid that must still connect; "" for none
		wantStatus   int
		wantError    string
		wantRetry    string // Retry-After
		wantV1       string // a pusher.v1 client's 1013 reason; "": refused like a raw client
	}{
		{
			name:       "uid at MaxConnsPerUID",
			giveHub:    hub.Config{MaxConnsPerUID: 1},
			giveFirst:  "alice",
			giveUID:    "alice",
			thenAccept: "bob",
			wantStatus: http.StatusTooManyRequests,
			wantError:  "too many connections for this user",
		},
		{
			name:       "node at MaxConns",
			giveHub:    hub.Config{MaxConns: 1},
			giveFirst:  "alice",
			giveUID:    "bob",
			wantStatus: http.StatusServiceUnavailable,
			wantError:  "server at connection limit; retry after 2s",
			wantRetry:  "2",
			wantV1:     "full; retry after 2s",
		},
		{
			name:         "hub shut down",
			giveShutdown: true,
			giveUID:      "alice",
			wantStatus:   http.StatusServiceUnavailable,
			wantError:    "server shutting down; retry after 2s",
			wantRetry:    "2",
			wantV1:       "shutting down; retry after 2s",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, setup{Hub: tt.giveHub})
			want := 0
			if tt.giveFirst != "" {
				ts.connect(t, tt.giveFirst)
				want++
			}
			if tt.giveShutdown && !ts.hub.Shutdown(nil, wire.CloseGoingAway, "bye") {
				t.Fatal("Shutdown of an empty hub returned false")
			}
			c, resp, err := ts.dial(t, dialer(0), bearer(signToken(t, tt.giveUID, time.Hour)), "")
			wantRefused(t, c, resp, err, tt.wantStatus, tt.wantError)
			if got := resp.Header.Get("Retry-After"); got != tt.wantRetry {
				t.Errorf("Retry-After %q, want %q", got, tt.wantRetry)
			}
			if tt.wantV1 != "" {
				v1, _, err := ts.dial(t, v1Dialer(), bearer(signToken(t, tt.giveUID, time.Hour)), "")
				if err != nil {
					t.Fatalf("pusher.v1 dial: %v", err)
				}
				_, _, err = v1.ReadMessage()
				wantClose(t, err, wire.CloseTryAgain, tt.wantV1)
			}
			if n := ts.hub.Len(); n != want {
				t.Errorf("hub.Len() = %d after the refusal, want %d", n, want)
			}
			if tt.thenAccept != "" {
				ts.connect(t, tt.thenAccept)
				if n := ts.hub.Len(); n != want+1 {
					t.Errorf("hub.Len() = %d, want %d", n, want+1)
				}
			}
		})
	}
}
