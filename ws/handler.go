// Package ws accepts authenticated WebSocket connections, registers them in
// the hub, and writes what the hub routes to them.
package ws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
	"github.com/pusher-io/pusher/ws/internal/intake"
)

// Config tunes a Handler. Zero values mean the documented default.
type Config struct {
	// AllowedOrigins lists origins (scheme://host[:port]) browsers may
	// connect from; "*" allows any. Empty allows only same-origin. Requests
	// without an Origin header (non-browser clients) are always allowed.
	AllowedOrigins []string
	// SendQueue caps each connection's queued messages; default 1024. It
	// bounds the memory and the unacked messages one slow client can hold;
	// a client that falls further behind is closed with 4002.
	SendQueue int
	// WriteWait bounds one write; default 10s.
	WriteWait time.Duration
	// PingInterval is how often the server pings; default 25s.
	PingInterval time.Duration
	// PongWait is how long the connection may be silent; default 60s.
	PongWait time.Duration
	// MaxMessageSize caps client frames; default 4096 bytes (close 1009).
	MaxMessageSize int64
	// CloseGrace is how long to wait for the client's close frame after
	// sending ours; default 2s.
	CloseGrace time.Duration
	// Confirm is what makes a written frame delivered; default
	// ConfirmPong.
	Confirm Confirm
	// ConfirmTimeout is how long written frames may stay unconfirmed
	// before the connection is closed as unresponsive (4004) and they are
	// reported failed; default 10s. It is also the sockets'
	// TCP_USER_TIMEOUT, so the kernel gives up on a dead peer as soon.
	ConfirmTimeout time.Duration
	// OnConnect, if set, is called with the uid after each successful
	// upgrade (replay of dead letters). It must not block.
	OnConnect func(uid string)
	// Presence, if set, hears of every connection this node gains and
	// loses (presence events for backends).
	Presence Presence
	// MaxHandshakes caps the handshakes in progress (token check,
	// registration, upgrade); more are refused at once with 503 and
	// Retry-After (1013 for pusher.v1 clients, see admit). 0: no cap.
	MaxHandshakes int
	// TrustedProxies tell the client's address behind them, for the
	// logs' remote; zero: the TCP peer.
	TrustedProxies wire.TrustedProxies
	// Registerer receives pusher_connects_total,
	// pusher_confirm_latency_seconds and pusher_unresponsive_closes_total;
	// nil keeps them unregistered.
	Registerer prometheus.Registerer
}

// Presence hears of every connection a node gains and loses, with the
// uid's connection count on the node after the change. Calls for one uid
// come in the order of the changes (they are made under the hub's lock
// for that uid), so neither method may block or call into the hub.
type Presence interface {
	Connected(uid string, conn uint64, conns int)
	// Disconnected's code is the close code the connection ended with
	// (1006 when it was dropped without one).
	Disconnected(uid string, conn uint64, conns int, code int)
}

// connected is the hub.Add callback that tells Presence of c.
func (h *Handler) connected(c *conn) func(int) {
	if h.cfg.Presence == nil {
		return nil
	}
	return func(n int) { h.cfg.Presence.Connected(c.uid, c.id, n) }
}

// disconnected is the hub.Remove callback that tells Presence of c's end.
func (h *Handler) disconnected(c *conn, code int) func(int) {
	if h.cfg.Presence == nil {
		return nil
	}
	if code == 0 {
		code = websocket.CloseAbnormalClosure
	}
	return func(n int) { h.cfg.Presence.Disconnected(c.uid, c.id, n, code) }
}

// Confirm is what counts as delivered on one connection.
type Confirm int

const (
	// ConfirmPong means a frame is delivered once the client answered a ping
	// sent after it. Every browser answers pings by itself (RFC 6455), so
	// this needs nothing of client code, and unlike the kernel's
	// acceptance of a write it is not fooled by a connection whose peer
	// vanished.
	ConfirmPong Confirm = iota
	// ConfirmWrite means a frame is delivered once the kernel accepted the
	// write. Cheaper, and loses what a dead connection swallowed.
	ConfirmWrite
)

// ParseConfirm reads "pong" or "write".
func ParseConfirm(s string) (Confirm, error) {
	switch s {
	case "pong", "":
		return ConfirmPong, nil
	case "write":
		return ConfirmWrite, nil
	}
	return 0, fmt.Errorf("delivery confirm %q: want pong or write", s)
}

func (c Config) withDefaults() (Config, error) {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.SendQueue == 0 {
		c.SendQueue = 1024
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 4096
	}
	def(&c.WriteWait, 10*time.Second)
	def(&c.PingInterval, 25*time.Second)
	def(&c.PongWait, 60*time.Second)
	def(&c.CloseGrace, 2*time.Second)
	def(&c.ConfirmTimeout, 10*time.Second)
	switch {
	case c.Confirm != ConfirmPong && c.Confirm != ConfirmWrite:
		return c, fmt.Errorf("delivery confirm %d: unknown", c.Confirm)
	case c.ConfirmTimeout < time.Millisecond:
		return c, fmt.Errorf("confirm timeout %s: want at least 1ms", c.ConfirmTimeout)
	case c.SendQueue < 1:
		return c, fmt.Errorf("send queue %d: want at least 1", c.SendQueue)
	case c.MaxMessageSize < 1:
		return c, fmt.Errorf("max message size %d: want at least 1", c.MaxMessageSize)
	case c.PingInterval >= c.PongWait:
		return c, fmt.Errorf("ping interval %s must be shorter than pong wait %s", c.PingInterval, c.PongWait)
	case c.WriteWait <= 0 || c.CloseGrace <= 0:
		return c, errors.New("write wait and close grace must be positive")
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		if u, err := url.Parse(o); err != nil || u.Scheme == "" || u.Host == "" {
			return c, fmt.Errorf("allowed origin %q: want scheme://host[:port] or *", o)
		}
	}
	return c, nil
}

// Log event names (README, Logs).
const (
	evConnected    = "ws.connected"
	evClosed       = "ws.closed"
	evRejected     = "auth.rejected"
	evRefused      = "ws.refused"
	evPanic        = "ws.panic"
	evUnresponsive = "ws.unresponsive"
	// ws.poll_failed is intake's.
)

// Handler serves GET /ws. It authenticates before upgrading, so a bad
// request gets an HTTP status and a JSON error, never a WebSocket.
type Handler struct {
	// Static after construction.
	hub      *hub.Hub
	verifier *auth.Verifier
	log      *zap.Logger
	cfg      Config
	origins  map[string]bool
	anyOrig  bool
	upgrader websocket.Upgrader
	poll     *intake.Poller // reads every connection's client
	met      *metrics
	epoch    time.Time // instants count from here

	// Safe for concurrent use by themselves.
	// inHandshake, set by tests only, runs in every admitted handshake,
	// so a test can hold handshakes in progress.
	inHandshake func()

	nextID     atomic.Uint64
	handshakes atomic.Int64   // ServeHTTP calls past the cheap checks, for admission control
	running    sync.WaitGroup // connections (until finish), the poller's goroutine, writers
	// handoff passes a connection with work to a writer goroutine that
	// finished another's and waits for more (runWriter); unbuffered, so a
	// send succeeds only when one waits.
	handoff chan *conn
	// bufs is gorilla's write buffer pool: gorilla no longer writes, but
	// with a pool it allocates no buffer of its own at the upgrade.
	bufs sync.Pool
	// frameBufs hold the frames of one writer round (frameBuf), shared by
	// every connection's writer, so an idle connection holds none.
	frameBufs sync.Pool
}

// NewHandler returns a Handler registering connections in h and verifying
// tokens with v.
func NewHandler(h *hub.Hub, v *auth.Verifier, log *zap.Logger, cfg Config) (*Handler, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("ws config: %w", err)
	}
	met, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	hd := &Handler{hub: h, verifier: v, log: log.Named("ws"), cfg: cfg, origins: map[string]bool{}, met: met, epoch: time.Now()}
	hd.frameBufs.New = func() any { return &frameBuf{b: make([]byte, 0, 4096)} }
	hd.poll = intake.NewPoller(&hd.running, hd.log, intake.Config{MaxMessageSize: cfg.MaxMessageSize})
	hd.handoff = make(chan *conn)
	for _, o := range cfg.AllowedOrigins {
		if o == "*" {
			hd.anyOrig = true
			continue
		}
		hd.origins[strings.ToLower(strings.TrimRight(o, "/"))] = true
	}
	hd.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.WriteWait,
		// Origin was checked before auth, with a JSON 403.
		CheckOrigin: func(*http.Request) bool { return true },
		// gorilla does not read (intake does), but it allocates a
		// read buffer anyway, or keeps net/http's 4 KiB one when this is
		// 0; 1 gets its smallest, 125 bytes.
		ReadBufferSize:  1,
		WriteBufferPool: &hd.bufs,
		// Chosen when the client asks for it; raw frames otherwise.
		Subprotocols: []string{Subprotocol},
		// A handshake that passed the checks above can still be malformed
		// (no Sec-WebSocket-Key, wrong version): answer in the same JSON
		// shape; serve logs the detail.
		Error: func(w http.ResponseWriter, _ *http.Request, status int, _ error) {
			w.Header().Set("Sec-Websocket-Version", "13")
			msg := "bad websocket handshake"
			if status >= http.StatusInternalServerError {
				msg = "internal server error"
			}
			writeError(w, status, msg)
		},
	}
	return hd, nil
}

// ServeHTTP authenticates and upgrades, then hands the connection to the
// Handler's poller, which the Handler owns (see Wait), and returns.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		h.met.connects.WithLabelValues(resultBadRequest).Inc()
		writeError(w, http.StatusBadRequest, "websocket upgrade required")
		return
	}
	if r.Method != http.MethodGet {
		h.met.connects.WithLabelValues(resultBadRequest).Inc()
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	if !h.originAllowed(r) {
		h.met.connects.WithLabelValues(resultForbidden).Inc()
		h.log.Info(evRejected, zap.String("reason", "origin"), zap.String("origin", r.Header.Get("Origin")), h.remote(r))
		writeError(w, http.StatusForbidden, "origin not allowed")
		return
	}
	if !h.admit(w, r) {
		return
	}
	defer h.handshakes.Add(-1)
	if h.inHandshake != nil {
		h.inHandshake()
	}
	claims, reason, err := h.authenticate(r)
	if err != nil {
		h.met.connects.WithLabelValues(resultUnauthorized).Inc()
		h.log.Info(evRejected, zap.String("reason", reason), h.remote(r), zap.Error(err))
		writeError(w, http.StatusUnauthorized, reason)
		return
	}
	uid := claims.UID
	id := h.nextID.Add(1)
	// No child logger per connection: even a lazy one costs every idle
	// connection a clone, and a connection logs only a few lines.
	c := newConn(id, uid, h)
	if err := h.hub.Add(uid, c, h.connected(c)); err != nil {
		h.log.Info(evRefused, zap.String("uid", uid), zap.Uint64("conn", id), zap.Error(err))
		switch {
		case errors.Is(err, hub.ErrUIDFull):
			// Retrying does not help until the user closes a connection.
			h.met.connects.WithLabelValues(resultLimited).Inc()
			writeError(w, http.StatusTooManyRequests, "too many connections for this user")
		case errors.Is(err, hub.ErrClosed):
			h.met.connects.WithLabelValues(resultUnavailable).Inc()
			h.refuseForNow(w, r, "server shutting down", "shutting down")
		default:
			h.met.connects.WithLabelValues(resultLimited).Inc()
			h.refuseForNow(w, r, "server at connection limit", "full")
		}
		return
	}
	h.serve(w, r, c, claims.ExpiresAt)
}

// authenticate returns the verified claims with a valid uid, or a generic
// reason for the client (details go to the log via err only).
func (h *Handler) authenticate(r *http.Request) (auth.Claims, string, error) {
	tok, err := auth.TokenFromRequest(r, h.verifier.MaxTokenBytes())
	if err != nil {
		switch {
		case errors.Is(err, auth.ErrNoToken):
			return auth.Claims{}, "missing token", err
		case errors.Is(err, auth.ErrTokenTooLarge):
			return auth.Claims{}, "token too large", err
		default:
			return auth.Claims{}, "invalid token", err
		}
	}
	return h.checkToken(tok)
}

// checkToken verifies tok and its uid: the claims, or a generic reason.
// It may wait for a JWKS refetch (auth.Verifier.Verify): the upgrade runs
// on the request's own goroutine.
func (h *Handler) checkToken(tok string) (auth.Claims, string, error) {
	return tokenClaims(h.verifier.Verify(tok))
}

// tokenClaims maps a verification's outcome to the claims with a valid
// uid, or a generic reason for the client.
func tokenClaims(claims auth.Claims, err error) (auth.Claims, string, error) {
	if err != nil {
		switch {
		case errors.Is(err, auth.ErrExpired):
			return claims, "token expired", err
		case errors.Is(err, auth.ErrNotYetValid):
			return claims, "token not yet valid", err
		case errors.Is(err, auth.ErrMissingUID):
			return claims, "token has no uid", err
		default:
			return claims, "invalid token", err
		}
	}
	if err := wire.ValidUID(claims.UID); err != nil {
		return claims, "invalid uid", err
	}
	return claims, "", nil
}

// serve upgrades the registered connection c and starts reading it. It
// returns at once, so net/http lets go of the request, its buffers and its
// goroutine's stack: an idle connection then costs no goroutine at all.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, c *conn, exp time.Time) {
	wsConn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		// The upgrader has answered with an HTTP error already.
		h.met.connects.WithLabelValues(resultUpgradeFailed).Inc()
		h.log.Info(evRefused, zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.Error(err))
		h.hub.Remove(c.uid, c, h.disconnected(c, websocket.CloseAbnormalClosure))
		c.drain()
		return
	}
	h.met.connects.WithLabelValues(resultOK).Inc()
	h.log.Info(evConnected, zap.String("uid", c.uid), zap.Uint64("conn", c.id), h.remote(r))
	h.running.Add(1) // finish, which needs ws, says Done
	if err := setUserTimeout(wsConn.NetConn(), h.cfg.ConfirmTimeout); err != nil {
		h.log.Debug("ws.sockopt_failed", zap.Uint64("conn", c.id), zap.Error(err))
	}
	c.mu.Lock()
	c.ws, c.started = wsConn, h.now()
	if wsConn.Subprotocol() == Subprotocol {
		c.v1 = &v1State{}
	}
	c.startTimerLocked(exp)
	// Under mu, so no end, and so no Stop, comes before it.
	h.poll.Watch(&c.in, wsConn.NetConn(), c.id, c, c.v1 != nil)
	c.startWriterLocked() // anything routed or a Close during the upgrade
	c.mu.Unlock()
	if h.cfg.OnConnect != nil {
		h.cfg.OnConnect(c.uid)
	}
}

// Wait blocks until every connection has been torn down (and the
// poller's goroutine, which lives while connections do, and the writers,
// which outlive them by writerLinger, have returned) or ctx is done. Call
// it after the http.Server stopped accepting requests and the hub closed
// the connections (hub.Shutdown): then no connection starts anew.
func (h *Handler) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { h.running.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for connections to end: %w", ctx.Err())
	}
}

// remote is the log field naming the client's address: the TCP peer, or
// what trusted proxies say of the client behind them.
func (h *Handler) remote(r *http.Request) zap.Field {
	return zap.String("remote", h.cfg.TrustedProxies.ClientAddr(r.RemoteAddr, r.Header))
}

// originAllowed applies the Origin allow-list. No Origin header means a
// non-browser client, which cross-site request forgery cannot drive.
func (h *Handler) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || h.anyOrig {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if len(h.origins) == 0 {
		return strings.EqualFold(u.Host, r.Host)
	}
	return h.origins[strings.ToLower(u.Scheme+"://"+u.Host)]
}

// writeError answers with status and a JSON body {"error": msg}, not
// HTML-escaped.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		Error string `json:"error"`
	}{msg})
}
