package ws

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
	"github.com/pusher-io/pusher/ws/internal/intake"
)

// Every test server waits for its handlers in t.Cleanup, so nothing of ours
// may outlive a test; no goroutine needs ignoring.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testSecret is the HS256 secret every test verifier accepts.
var testSecret = []byte("ws-test-secret-0123456789-abcdefghij")

// Timeouts of the tests' own waits; generous so a loaded -race run passes.
const (
	waitTimeout = 5 * time.Second // a condition or a frame that must come
	pollEvery   = time.Millisecond
)

// waitFor polls cond until it returns nil, failing the test after timeout
// with cond's last word on why it is still waiting.
func waitFor(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("still waiting after %s: %v", timeout, err)
		}
		<-tick.C
	}
}

// hasConns is a condition for waitFor: the hub holds n connections.
func (ts *testServer) hasConns(n int) func() error {
	return func() error {
		if got := ts.hub.Len(); got != n {
			return fmt.Errorf("the hub holds %d connections, want %d", got, n)
		}
		return nil
	}
}

// isOffline is a condition for waitFor: uid has no connection left.
func (ts *testServer) isOffline(uid string) func() error {
	return func() error {
		if ts.hub.Online(uid) {
			return fmt.Errorf("%s is still online", uid)
		}
		return nil
	}
}

// handlersReturned is a condition for waitFor: no ServeHTTP call runs.
func (ts *testServer) handlersReturned() error {
	if n := ts.active.Load(); n != 0 {
		return fmt.Errorf("%d ServeHTTP calls still run", n)
	}
	return nil
}

// released is a condition for waitFor: no connection holds m any more.
func released(m *hub.Message) func() error {
	return func() error {
		if n := m.Pending(); n != 0 {
			return fmt.Errorf("message %q still held by %d connections", short(m.Data), n)
		}
		return nil
	}
}

// setup configures a test server; zero fields mean a default.
type setup struct {
	Hub  hub.Config
	WS   Config
	Auth auth.Config // zero: HS256 with testSecret
	Log  *zap.Logger // nil: zaptest.NewLogger
	// GoroutineReaders reads every connection with a goroutine of its
	// own, as on platforms without a poller.
	GoroutineReaders bool
}

// readerModes are the two ways a connection is read; tests of what
// clients send run in both.
var readerModes = []struct {
	name       string
	goroutines bool
}{{"poller", false}, {"goroutine", true}}

// testServer is a Handler behind a real loopback HTTP server.
type testServer struct {
	hub     *hub.Hub
	handler *Handler
	srv     *httptest.Server
	wsURL   string       // ws://127.0.0.1:port/ws
	active  atomic.Int64 // ServeHTTP calls in progress
}

// newTestServer starts a server and, in t.Cleanup, shuts the hub down and
// waits until every handler (hijacked ones included, which httptest does not
// wait for) has returned. Clients dialled afterwards are closed first.
func newTestServer(tb testing.TB, s setup) *testServer {
	tb.Helper()
	if s.Log == nil {
		s.Log = zaptest.NewLogger(tb)
	}
	if len(s.Auth.HMACSecret) == 0 && len(s.Auth.PublicKeyPEM) == 0 {
		s.Auth.HMACSecret = testSecret
	}
	h, err := hub.New(s.Hub)
	if err != nil {
		tb.Fatalf("hub.New: %v", err)
	}
	v, err := auth.NewVerifier(s.Auth)
	if err != nil {
		tb.Fatalf("auth.NewVerifier: %v", err)
	}
	hd, err := NewHandler(h, v, s.Log, s.WS)
	if err != nil {
		tb.Fatalf("NewHandler: %v", err)
	}
	if s.GoroutineReaders {
		hd.poll = intake.NewPoller(&hd.running, hd.log, intake.Config{MaxMessageSize: hd.cfg.MaxMessageSize, Goroutines: true})
	}
	ts := &testServer{hub: h, handler: hd}
	ts.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.active.Add(1)
		defer ts.active.Add(-1)
		hd.ServeHTTP(w, r)
	}))
	ts.wsURL = "ws" + strings.TrimPrefix(ts.srv.URL, "http") + "/ws"
	tb.Cleanup(func() {
		done := make(chan struct{})
		t := time.AfterFunc(waitTimeout, func() { close(done) })
		defer t.Stop()
		if !h.Shutdown(done, wire.CloseGoingAway, "test over") {
			tb.Errorf("hub.Shutdown: %d connections left after %s", h.Len(), waitTimeout)
		}
		ts.srv.Close()
		waitFor(tb, waitTimeout, ts.handlersReturned)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := hd.Wait(ctx); err != nil {
			tb.Errorf("handler.Wait: %v", err)
		}
	})
	return ts
}

// dialer is the clients' dialer. readBuf, when positive, shrinks the
// client's socket receive buffer so a client that does not read stalls the
// server's writes after little data.
func dialer(readBuf int) *websocket.Dialer {
	d := &websocket.Dialer{HandshakeTimeout: waitTimeout}
	if readBuf > 0 {
		d.NetDial = func(network, addr string) (net.Conn, error) {
			c, err := net.DialTimeout(network, addr, waitTimeout)
			if err != nil {
				return nil, err
			}
			if err := c.(*net.TCPConn).SetReadBuffer(readBuf); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		}
	}
	return d
}

// dial opens a WebSocket to the server with header and the raw query
// (without '?'). A connection it returns is closed in t.Cleanup.
func (ts *testServer) dial(tb testing.TB, d *websocket.Dialer, header http.Header, query string) (*websocket.Conn, *http.Response, error) {
	tb.Helper()
	u := ts.wsURL
	if query != "" {
		u += "?" + query
	}
	c, resp, err := d.Dial(u, header)
	if c != nil {
		tb.Cleanup(func() { _ = c.Close() })
	}
	return c, resp, err
}

// connect dials as uid with a fresh one-hour bearer token and fails the test
// unless the upgrade succeeds.
func (ts *testServer) connect(tb testing.TB, uid string) *websocket.Conn {
	tb.Helper()
	return ts.connectWith(tb, dialer(0), uid)
}

func (ts *testServer) connectWith(tb testing.TB, d *websocket.Dialer, uid string) *websocket.Conn {
	tb.Helper()
	c, resp, err := ts.dial(tb, d, bearer(signToken(tb, uid, time.Hour)), "")
	if err != nil {
		tb.Fatalf("dial as %q: %v (%s)", uid, err, describe(resp))
	}
	return c
}

// describe renders a handshake response for failure messages.
func describe(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	var b strings.Builder
	b.WriteString(resp.Status)
	if resp.Body != nil {
		buf := make([]byte, 512)
		n, _ := resp.Body.Read(buf)
		b.WriteString(": " + strings.TrimSpace(string(buf[:n])))
	}
	return b.String()
}

// wantRefused asserts that a handshake was answered with status and the JSON
// body {"error": wantErr}, and that no WebSocket was established.
func wantRefused(tb testing.TB, c *websocket.Conn, resp *http.Response, err error, status int, wantErr string) {
	tb.Helper()
	if c != nil {
		tb.Fatalf("upgraded; want HTTP %d %q", status, wantErr)
	}
	if !errors.Is(err, websocket.ErrBadHandshake) {
		tb.Fatalf("dial error = %v, want %v", err, websocket.ErrBadHandshake)
	}
	wantJSONError(tb, resp, status, wantErr)
}

// wantJSONError asserts resp's status, Content-Type and {"error": ...} body.
func wantJSONError(tb testing.TB, resp *http.Response, status int, wantErr string) {
	tb.Helper()
	if resp == nil {
		tb.Fatalf("no HTTP response; want %d", status)
	}
	if resp.StatusCode != status {
		tb.Errorf("status = %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		tb.Fatalf("decode error body: %v", err)
	}
	if body.Error != wantErr {
		tb.Errorf("error = %q, want %q", body.Error, wantErr)
	}
}

// bearer returns an Authorization header carrying tok.
func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// signToken mints an HS256 token for uid with auth.Sign, valid from now.
func signToken(tb testing.TB, uid string, ttl time.Duration) string {
	tb.Helper()
	tok, err := auth.Sign(testSecret, uid, ttl, time.Now())
	if err != nil {
		tb.Fatalf("auth.Sign: %v", err)
	}
	return tok
}

// signClaims mints a token with any method, key and claims.
func signClaims(tb testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s token: %v", method.Alg(), err)
	}
	return tok
}

// claimsFor returns claims for uid valid for the next hour.
func claimsFor(uid string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"uid": uid, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

// algNoneToken hand-builds an unsigned token, which must never be accepted.
func algNoneToken(uid string) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(claimsFor(uid))
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(claims) + "."
}

// testKeys are asymmetric keys generated once per test binary (RSA
// generation is slow under -race).
type testKeys struct {
	rsa, otherRSA *rsa.PrivateKey
	ec            *ecdsa.PrivateKey
	ed            ed25519.PrivateKey
}

var loadKeys = sync.OnceValues(func() (testKeys, error) {
	var k testKeys
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return k, err
	}
	if k.otherRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return k, err
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return k, err
	}
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	return k, err
})

func keys(tb testing.TB) testKeys {
	tb.Helper()
	k, err := loadKeys()
	if err != nil {
		tb.Fatalf("generate keys: %v", err)
	}
	return k
}

// publicPEM encodes pub as a PKIX "PUBLIC KEY" block.
func publicPEM(tb testing.TB, pub crypto.PublicKey) []byte {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		tb.Fatalf("marshal public key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// recorder is a hub.Reporter that keeps every report and flags a second
// report of one message as a test failure.
type recorder struct {
	tb  testing.TB
	mu  sync.Mutex
	got map[*hub.Message][]error // guarded by mu
	n   int                      // reports so far; guarded by mu
}

func newRecorder(tb testing.TB) *recorder {
	return &recorder{tb: tb, got: map[*hub.Message][]error{}}
}

func (r *recorder) Report(m *hub.Message, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[m] = append(r.got[m], err)
	r.n++
	if len(r.got[m]) > 1 {
		r.tb.Errorf("message %q reported %d times: %v", short(m.Data), len(r.got[m]), r.got[m])
	}
}

// hasCount is a condition for waitFor: n reports arrived.
func (r *recorder) hasCount(n int) func() error {
	return func() error {
		if got := r.count(); got != n {
			return fmt.Errorf("%d reports, want %d", got, n)
		}
		return nil
	}
}

// count returns how many reports arrived.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// reports returns m's reports so far.
func (r *recorder) reports(m *hub.Message) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.got[m]...)
}

// message returns a Message reporting to r.
func (r *recorder) message(data []byte) *hub.Message {
	return &hub.Message{Data: data, Reporter: r}
}

// short abbreviates a payload for failure messages.
func short(b []byte) string {
	if len(b) > 16 {
		return string(b[:16]) + "..."
	}
	return string(b)
}

// seqPayload is size bytes (at least 8) starting with seq, big-endian.
func seqPayload(seq uint64, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b, seq)
	return b
}

// client is a connection read all the time, as a browser reads, so its
// reads answer pings, which confirm delivery, whatever the test is doing.
type client = harness.Pump

// pump starts reading c; the reader stops when c ends (the test's
// cleanup closes it). Set c's handlers first.
var pump = harness.NewPump

// open connects uid as a reading client.
func (ts *testServer) open(tb testing.TB, uid string) *client {
	tb.Helper()
	return pump(ts.connect(tb, uid))
}

// readMessage returns the next message, or the error that ended the
// connection, within waitTimeout. It does not touch a testing.TB, so any
// goroutine may call it.
func readMessage(c *client) (int, []byte, error) { return c.Next(waitTimeout) }

// wantMessage reads one message and asserts its type and bytes.
func wantMessage(tb testing.TB, c *client, typ int, data []byte) {
	tb.Helper()
	gotTyp, got, err := readMessage(c)
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	if gotTyp != typ || string(got) != string(data) {
		tb.Fatalf("read type %d %q, want type %d %q", gotTyp, short(got), typ, short(data))
	}
}

// readUntilClose hands every data message to onMessage (if set) until the
// connection ends, and returns the error that ended it.
func readUntilClose(tb testing.TB, c *client, onMessage func(typ int, data []byte)) error {
	tb.Helper()
	for {
		typ, data, err := readMessage(c)
		if err != nil {
			return err
		}
		if onMessage != nil {
			onMessage(typ, data)
		}
	}
}

// wantClose asserts that err is a close frame with code and reason.
func wantClose(tb testing.TB, err error, code int, reason string) {
	tb.Helper()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		tb.Fatalf("connection ended with %v, want close %d %q", err, code, reason)
	}
	if ce.Code != code || ce.Text != reason {
		tb.Fatalf("close %d %q, want %d %q", ce.Code, ce.Text, code, reason)
	}
}
