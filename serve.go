package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/api"
	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/cluster"
	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/logging"
	"github.com/pusher-io/pusher/natsserver"
	"github.com/pusher-io/pusher/web"
	"github.com/pusher-io/pusher/ws"
)

// devSecret signs and verifies tokens when no key is configured and NATS
// is embedded, so the README's five-minute path needs no setup. It is
// public, so serve logs a warning, and refuses it with an external NATS,
// which means a real deployment.
const devSecret = "pusher-dev-secret-do-not-use-in-production"

// Compile-time checks that hub (one node) and cluster (many) serve as
// consumer's router, and hub as its kicker.
var (
	_ consumer.Router = (*hub.Hub)(nil)
	_ consumer.Router = (*cluster.Node)(nil)
	_ consumer.Kicker = (*hub.Hub)(nil)
)

type serveConfig struct {
	httpAddr, natsListen, dataDir                     *string
	nats                                              *natsFlags
	jwtSecret, jwtPublicKey, jwtIssuer, jwtAudience   *string
	jwtUIDClaim, allowedOrigins, backoff, logLevel    *string
	apiKey, pprofAddr, routing                        *string
	retention, dlqRetention, ackWait, shutdownTimeout *time.Duration
	handshakeTimeout                                  *time.Duration
	maxDeliver, maxAckPending, sendQueue              *int
	maxConns, maxConnsPerUID, replicas                *int
	replayOnConnect, logDelivered, ui                 *bool
}

func serveFlags(env *environ) (*flagSet, *serveConfig) {
	f := newFlagSet("serve", "pusher [serve] [flags]", env)
	c := &serveConfig{
		httpAddr:   f.String("http-addr", "PUSHER_HTTP_ADDR", "127.0.0.1:8181", "HTTP listen address (/ws, /metrics, /healthz, /readyz, /v1/push)"),
		nats:       addNATSFlags(f, "NATS server URLs; empty starts an embedded NATS server", ""),
		natsListen: f.String("nats-listen", "PUSHER_NATS_LISTEN", "127.0.0.1:4222", "embedded NATS listen address (loopback only)"),
		dataDir:    f.String("data-dir", "PUSHER_DATA_DIR", "./data", "embedded NATS JetStream storage directory"),

		jwtSecret:      f.Secret("jwt-secret", "JWT_SECRET", "HS256 secret verifying client tokens"),
		jwtPublicKey:   f.String("jwt-public-key", "PUSHER_JWT_PUBLIC_KEY", "", "PEM public key file verifying RS256/ES256/EdDSA client tokens"),
		jwtIssuer:      f.String("jwt-issuer", "PUSHER_JWT_ISSUER", "", "required token issuer (iss), if set"),
		jwtAudience:    f.String("jwt-audience", "PUSHER_JWT_AUDIENCE", "", "required token audience (aud), if set"),
		jwtUIDClaim:    f.String("jwt-uid-claim", "PUSHER_JWT_UID_CLAIM", "uid", "claim holding the user id (falls back to sub)"),
		allowedOrigins: f.List("allowed-origins", "PUSHER_ALLOWED_ORIGINS", "", "browser origins allowed to connect, * for any; empty: same origin only"),
		apiKey:         f.Secret("api-key", "PUSHER_API_KEY", "bearer key for POST /v1/push and /send; empty disables them"),
		pprofAddr:      f.String("pprof-addr", "PUSHER_PPROF_ADDR", "", "serve net/http/pprof on this (loopback) address; empty: off"),
		routing: f.String("routing", "PUSHER_ROUTING", "auto",
			"local (this node's connections only), cluster (any node's, through NATS), or auto: cluster unless NATS is embedded"),

		retention:       f.Duration("retention", "PUSHER_RETENTION", 24*time.Hour, "how long PUSH keeps messages"),
		dlqRetention:    f.Duration("dlq-retention", "PUSHER_DLQ_RETENTION", 168*time.Hour, "how long PUSH_DLQ keeps dead letters"),
		maxDeliver:      f.Int("max-deliver", "PUSHER_MAX_DELIVER", 5, "deliveries before a message is dead-lettered"),
		backoff:         f.List("backoff", "PUSHER_BACKOFF", "1s,5s,30s", "redelivery delays after failed deliveries, last repeating"),
		ackWait:         f.Duration("ack-wait", "PUSHER_ACK_WAIT", 30*time.Second, "redeliver if a delivery is not settled in this time (crash)"),
		maxAckPending:   f.Int("max-ack-pending", "PUSHER_MAX_ACK_PENDING", 65536, "unacked deliveries the consumer allows"),
		sendQueue:       f.Int("send-queue", "PUSHER_SEND_QUEUE", 1024, "messages queued per connection before it is closed as slow (4002)"),
		maxConns:        f.Int("max-conns", "PUSHER_MAX_CONNS", 0, "connections per node, 0 unlimited"),
		maxConnsPerUID:  f.Int("max-conns-per-uid", "PUSHER_MAX_CONNS_PER_UID", 0, "connections per user per node, 0 unlimited"),
		replicas:        f.Int("replicas", "PUSHER_REPLICAS", 1, "stream and consumer replicas (3 on a cluster)"),
		replayOnConnect: f.Bool("replay-on-connect", "PUSHER_REPLAY_ON_CONNECT", true, "replay a user's offline dead letters when they connect"),
		logDelivered:    f.Bool("log-delivered", "PUSHER_LOG_DELIVERED", true, "log a push.delivered line per delivered message"),
		logLevel:        f.String("log-level", "PUSHER_LOG_LEVEL", "info", "debug, info, warn or error"),
		shutdownTimeout: f.Duration("shutdown-timeout", "PUSHER_SHUTDOWN_TIMEOUT", 15*time.Second, "time allowed for a graceful shutdown"),
		handshakeTimeout: f.Duration("handshake-timeout", "PUSHER_HANDSHAKE_TIMEOUT", 5*time.Second,
			"time a client has to send its request headers, so half-open handshakes cannot pile up"),
		ui: f.Bool("ui", "PUSHER_UI", true, "serve the browser test client at /"),
	}
	return f, c
}

// Log events of the serve lifecycle.
const (
	evReady        = "pusher.ready"
	evStopping     = "pusher.stopping"
	evStopped      = "pusher.stopped"
	evDevSecret    = "auth.dev_secret"
	evNATSDown     = "nats.disconnected"
	evNATSUp       = "nats.reconnected"
	evShutdownStep = "pusher.shutdown_incomplete"
)

func runServe(ctx context.Context, env *environ, args []string) error {
	f, c := serveFlags(env)
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.args()) > 0 {
		return usagef("serve takes no arguments, got %q", f.args())
	}
	backoff, err := parseDurations(*c.backoff)
	if err != nil {
		return usageError{fmt.Errorf("--backoff: %w", err)}
	}

	log, closeLog, err := logging.New(env.stdout, logging.Config{Level: *c.logLevel, BufferSize: 256 << 10})
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = closeLog() }()

	embedded := *c.nats.url == ""
	clustered, err := clusterRouting(*c.routing, embedded)
	if err != nil {
		return err
	}
	verifier, err := newVerifier(c, embedded, log)
	if err != nil {
		return err
	}
	// node is set before the HTTP listener starts, so before any
	// connection can change presence.
	var node *cluster.Node
	hubCfg := hub.Config{MaxConns: *c.maxConns, MaxConnsPerUID: *c.maxConnsPerUID}
	if clustered {
		hubCfg.OnPresence = func(uid string) { node.OnPresence(uid) }
	}
	h, err := hub.New(hubCfg)
	if err != nil {
		return usageError{err}
	}

	var srv *natsserver.Server
	natsURL := *c.nats.url
	if embedded {
		dir, err := filepath.Abs(*c.dataDir)
		if err != nil {
			return fmt.Errorf("data dir %s: %w", *c.dataDir, err)
		}
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
		srv, err = natsserver.Start(natsserver.Config{Listen: *c.natsListen, StoreDir: dir}, log.Named("nats"))
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		natsURL = srv.ClientURL()
	}
	nc, ncClosed, err := connectServer(c, natsURL, log)
	if err != nil {
		return err
	}
	defer nc.Close()

	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	reg := prometheus.NewRegistry()
	var router consumer.Router = h
	if clustered {
		if node, err = cluster.New(nc, h, log, cluster.Config{}); err != nil {
			return err
		}
		if err := node.Start(); err != nil {
			return err
		}
		defer node.Close()
		router = node
	}
	cons, err := consumer.New(js, router, log, consumer.Config{
		Registerer: reg,
		Broadcast:  clustered,
		Topology: consumer.Topology{
			Replicas: *c.replicas, Retention: *c.retention, DLQRetention: *c.dlqRetention,
			AckWait: *c.ackWait, MaxAckPending: *c.maxAckPending,
		},
		MaxDeliver:     *c.maxDeliver,
		Backoff:        backoff,
		QuietDelivered: !*c.logDelivered,
	})
	if err != nil {
		return usageError{err}
	}
	startCtx, cancelStart := context.WithTimeout(ctx, 60*time.Second)
	err = cons.Start(startCtx)
	cancelStart()
	if err != nil {
		return fmt.Errorf("start consumer: %w", err)
	}
	if clustered {
		// An offline dead letter stored by another node while this one was
		// cut off from NATS was announced on pusher.replay.<uid> when this
		// node could not hear it: replay for every local user on reconnect.
		nlog := log.Named("nats")
		nc.SetReconnectHandler(func(nc *nats.Conn) {
			nlog.Warn(evNATSUp, zap.String("server", nc.ConnectedUrlRedacted()))
			h.EachUID(cons.TriggerReplay)
		})
	}
	kicks, err := consumer.SubscribeKicks(nc, h, log)
	if err != nil {
		return err
	}

	if err := registerGauges(reg, h, cons, nc); err != nil {
		return err
	}
	wsCfg := ws.Config{AllowedOrigins: splitList(*c.allowedOrigins), SendQueue: *c.sendQueue, Registerer: reg}
	if *c.replayOnConnect {
		wsCfg.OnConnect = cons.TriggerReplay
	}
	wsHandler, err := ws.NewHandler(h, verifier, log, wsCfg)
	if err != nil {
		return usageError{err}
	}

	mux := http.NewServeMux()
	mux.Handle("GET /ws", wsHandler)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		natsOK, consOK := nc.IsConnected(), cons.Ready()
		status := http.StatusOK
		if !natsOK || !consOK {
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, map[string]bool{"ready": status == http.StatusOK, "nats": natsOK, "consumer": consOK})
	})
	if *c.ui {
		mux.Handle("/", web.Handler())
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if *c.apiKey != "" {
		door, err := api.New(js, nc, log, api.Config{APIKey: *c.apiKey})
		if err != nil {
			return err
		}
		mux.HandleFunc("POST /v1/push", door.Push)
		mux.HandleFunc("GET /send", door.Send)
		mux.HandleFunc("POST /send", door.Send)
	} else {
		disabled := func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "HTTP publishing is disabled: set PUSHER_API_KEY"})
		}
		mux.HandleFunc("/v1/push", disabled)
		mux.HandleFunc("/send", disabled)
	}
	httpSrv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: *c.handshakeTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10, // a token is at most 8 KiB
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	ln, err := net.Listen("tcp", *c.httpAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *c.httpAddr, err)
	}
	if *c.pprofAddr != "" {
		stopPprof, err := servePprof(*c.pprofAddr, log)
		if err != nil {
			_ = ln.Close()
			return err
		}
		defer stopPprof()
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- httpSrv.Serve(ln) }()
	log.Info(evReady, zap.String("http_addr", ln.Addr().String()), zap.String("nats_url", redactURL(natsURL)),
		zap.Bool("embedded_nats", embedded), zap.Bool("cluster_routing", clustered))

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		log.Error(evStopping, zap.Error(err))
	}
	return shutdown(log, *c.shutdownTimeout, httpSrv, cons, h, wsHandler, node, kicks, nc, ncClosed)
}

// shutdown stops in the contract's order under one timeout: no new
// connections, stop pulling and let in-flight writes finish and ack, close
// sockets with 1001 (what they still had queued is nacked), drain NATS.
func shutdown(log *zap.Logger, timeout time.Duration, httpSrv *http.Server, cons *consumer.Consumer,
	h *hub.Hub, wsHandler *ws.Handler, node *cluster.Node, kicks *nats.Subscription, nc *nats.Conn, ncClosed <-chan struct{}) error {
	start := time.Now()
	log.Info(evStopping, zap.Duration("timeout", timeout))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	incomplete := func(step string, err error) {
		log.Warn(evShutdownStep, zap.String("step", step), zap.Error(err))
	}

	if err := httpSrv.Shutdown(ctx); err != nil {
		incomplete("http", err)
	}
	_ = kicks.Unsubscribe()
	// Half the budget for in-flight writes; the rest for closing sockets
	// and draining NATS.
	drainCtx, cancelDrain := context.WithTimeout(ctx, timeout/2)
	if err := cons.Drain(drainCtx); err != nil {
		incomplete("drain", err)
	}
	cancelDrain()
	if !h.Shutdown(ctx.Done(), 1001, "server shutting down") {
		incomplete("close connections", ctx.Err())
	}
	if err := wsHandler.Wait(ctx); err != nil {
		incomplete("connections", err)
	}
	if node != nil {
		node.Close() // what still awaits a reply is nacked for a retry
	}
	if err := cons.Close(ctx); err != nil {
		incomplete("consumer", err)
	}
	if err := nc.Drain(); err == nil {
		select {
		case <-ncClosed:
		case <-ctx.Done():
			incomplete("nats drain", ctx.Err())
		}
	}
	log.Info(evStopped, zap.Duration("took", time.Since(start)))
	return nil
}

// servePprof serves the runtime profiles on their own loopback listener,
// away from the public mux. It returns a func that stops it and waits.
func servePprof(addr string, log *zap.Logger) (func(), error) {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return nil, usagef("--pprof-addr %q: want a loopback host:port", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	log.Info("pprof.listening", zap.String("addr", ln.Addr().String()))
	return func() { _ = srv.Close(); <-done }, nil
}

// clusterRouting decides whether pulled messages are routed through NATS
// to whichever node holds the uid. auto does so unless NATS is embedded:
// an external NATS may be shared by other pusher nodes.
func clusterRouting(mode string, embedded bool) (bool, error) {
	switch mode {
	case "local":
		return false, nil
	case "cluster":
		return true, nil
	case "auto":
		return !embedded, nil
	}
	return false, usagef("--routing %q: want auto, local or cluster", mode)
}

// registerGauges adds the gauges read at scrape time, and the Go runtime
// and process collectors (the process one includes the embedded NATS,
// which runs in this process).
func registerGauges(reg *prometheus.Registry, h *hub.Hub, cons *consumer.Consumer, nc *nats.Conn) error {
	boolGauge := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pusher_connections", Help: "Live WebSocket connections on this node."},
			func() float64 { return float64(h.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pusher_inflight_messages", Help: "Messages pulled by this node and not yet acked, nacked or dead-lettered."},
			func() float64 { return float64(cons.Stats().Inflight) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pusher_consumer_pending", Help: "Messages in PUSH not yet delivered to consumer pusher (consumer lag), as of the last poll."},
			func() float64 { return float64(cons.Stats().Pending) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pusher_consumer_ack_pending", Help: "Deliveries awaiting ack across all nodes, as of the last poll; near max-ack-pending means stalling."},
			func() float64 { return float64(cons.Stats().AckPending) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pusher_nats_connected", Help: "1 while connected to NATS."},
			func() float64 { return boolGauge(nc.IsConnected()) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}

// newVerifier builds the token verifier from the configured keys.
func newVerifier(c *serveConfig, embedded bool, log *zap.Logger) (*auth.Verifier, error) {
	cfg := auth.Config{
		HMACSecret: []byte(*c.jwtSecret),
		Issuer:     *c.jwtIssuer,
		Audience:   *c.jwtAudience,
		UIDClaim:   *c.jwtUIDClaim,
	}
	if *c.jwtPublicKey != "" {
		pem, err := os.ReadFile(*c.jwtPublicKey)
		if err != nil {
			return nil, fmt.Errorf("read JWT public key: %w", err)
		}
		cfg.PublicKeyPEM = pem
	}
	if len(cfg.HMACSecret) == 0 && len(cfg.PublicKeyPEM) == 0 {
		if !embedded {
			return nil, usagef("set JWT_SECRET or PUSHER_JWT_PUBLIC_KEY to verify client tokens")
		}
		cfg.HMACSecret = []byte(devSecret)
		log.Warn(evDevSecret, zap.String("detail",
			"JWT_SECRET is not set: tokens are verified with the public development secret; anyone can mint them. Set JWT_SECRET or PUSHER_JWT_PUBLIC_KEY before exposing pusher."))
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		return nil, usageError{fmt.Errorf("JWT verifier: %w", err)}
	}
	return v, nil
}

// connectServer connects the server's own NATS client to natsURL (the
// embedded server's loopback address, or the cluster), reconnecting
// forever. It does not use nats.InProcessServer for the embedded server:
// that is an unbuffered net.Pipe, measured slower than loopback TCP here.
func connectServer(c *serveConfig, natsURL string, log *zap.Logger) (*nats.Conn, <-chan struct{}, error) {
	opts, err := c.nats.options()
	if err != nil {
		return nil, nil, err
	}
	closed := make(chan struct{})
	nlog := log.Named("nats")
	opts = append(opts,
		nats.Name("pusher"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			// A nil error is our own drain or close at shutdown, not trouble.
			if err != nil {
				nlog.Warn(evNATSDown, zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { nlog.Warn(evNATSUp, zap.String("server", nc.ConnectedUrlRedacted())) }),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			nlog.Warn("nats.error", zap.String("subject", subj), zap.Error(err))
		}),
	)
	nc, err := nats.Connect(natsURL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", redactURL(natsURL), err)
	}
	return nc, closed, nil
}

// redactURL hides user info in a (comma-separated) NATS URL list before
// it reaches an error or a log.
func redactURL(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// writeJSON answers with status and v as a JSON body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
