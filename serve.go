package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/logging"
	"github.com/pusher-io/pusher/server"
	"github.com/pusher-io/pusher/ws"
)

// serveFlags are serve's flags, each with its environment variable.
type serveFlags struct {
	httpAddr, natsListen, dataDir                     *string
	nats                                              *natsFlags
	jwtSecret, jwtPublicKey, jwtIssuer, jwtAudience   *string
	jwtUIDClaim, jwksURL, allowedOrigins, backoff     *string
	logLevel, nodeName                                *string
	apiKey, pprofAddr, routing, confirm               *string
	retention, dlqRetention, ackWait, shutdownTimeout *time.Duration
	handshakeTimeout, confirmTimeout                  *time.Duration
	maxDeliver, maxAckPending, sendQueue              *int
	maxConns, maxConnsPerUID, replicas, dlqMaxPerUID  *int
	replayOnConnect, logDelivered, ui, presence       *bool
}

func newServeFlags(env *environ) (*flagSet, *serveFlags) {
	f := newFlagSet("serve", "pusher [serve] [flags]", env)
	c := &serveFlags{
		httpAddr:   f.String("http-addr", "PUSHER_HTTP_ADDR", "127.0.0.1:8181", "HTTP listen address (/ws, /metrics, /healthz, /readyz, /v1/push)"),
		nats:       addNATSFlags(f, "NATS server URLs; empty starts an embedded NATS server", ""),
		natsListen: f.String("nats-listen", "PUSHER_NATS_LISTEN", defaultNATSListen, "embedded NATS listen address (loopback only)"),
		dataDir:    f.String("data-dir", "PUSHER_DATA_DIR", "./data", "embedded NATS JetStream storage directory"),

		jwtSecret:      f.Secret("jwt-secret", "JWT_SECRET", "HS256 secret verifying client tokens"),
		jwtPublicKey:   f.String("jwt-public-key", "PUSHER_JWT_PUBLIC_KEY", "", "PEM public key file verifying RS256/ES256/EdDSA client tokens"),
		jwtIssuer:      f.String("jwt-issuer", "PUSHER_JWT_ISSUER", "", "required token issuer (iss), if set"),
		jwtAudience:    f.String("jwt-audience", "PUSHER_JWT_AUDIENCE", "", "required token audience (aud), if set"),
		jwtUIDClaim:    f.String("jwt-uid-claim", "PUSHER_JWT_UID_CLAIM", "uid", "claim holding the user id (falls back to sub)"),
		jwksURL:        f.String("jwks-url", "PUSHER_JWKS_URL", "", "identity provider's JWKS URL (https://): its RS256/ES256/EdDSA keys verify client tokens by kid"),
		allowedOrigins: f.List("allowed-origins", "PUSHER_ALLOWED_ORIGINS", "", "browser origins allowed to connect, * for any; empty: same origin only"),
		apiKey:         f.Secret("api-key", "PUSHER_API_KEY", "bearer key for POST /v1/push and /send; empty disables them"),
		pprofAddr:      f.String("pprof-addr", "PUSHER_PPROF_ADDR", "", "serve net/http/pprof on this (loopback) address; empty: off"),
		routing: f.String("routing", "PUSHER_ROUTING", "auto",
			"local (this node's connections only), cluster (any node's, through NATS), or auto: cluster unless NATS is embedded"),
		confirm: f.String("delivery-confirm", "PUSHER_DELIVERY_CONFIRM", "pong",
			"what makes a message delivered: pong (the client answered the ping sent after it) or write (the kernel took the write)"),
		confirmTimeout: f.Duration("confirm-timeout", "PUSHER_CONFIRM_TIMEOUT", 10*time.Second,
			"close a connection whose written messages stay unconfirmed this long (4004) and retry them"),

		retention:       f.Duration("retention", "PUSHER_RETENTION", 24*time.Hour, "how long PUSH keeps messages"),
		dlqRetention:    f.Duration("dlq-retention", "PUSHER_DLQ_RETENTION", 168*time.Hour, "how long PUSH_DLQ keeps dead letters"),
		dlqMaxPerUID:    f.Int("dlq-max-per-uid", "PUSHER_DLQ_MAX_PER_UID", consumer.DefaultDLQMaxPerUID, "dead letters PUSH_DLQ keeps per user, oldest discarded first; 0 unlimited"),
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
		ui:       f.Bool("ui", "PUSHER_UI", true, "serve the browser test client at /"),
		presence: f.Bool("presence", "PUSHER_PRESENCE", true, "publish pusher.presence.<uid> events on every connect and disconnect"),
		nodeName: f.String("node-name", "PUSHER_NODE_NAME", "", "this node's name in presence events and online answers; default host:http-port"),
	}
	return f, c
}

// config maps the flags to the node's Config; what it cannot map is a
// usage error.
func (c *serveFlags) config() (server.Config, error) {
	backoff, err := parseDurations(*c.backoff)
	if err != nil {
		return server.Config{}, usagef("--backoff: %w", err)
	}
	if *c.dlqMaxPerUID < 0 {
		return server.Config{}, usagef("--dlq-max-per-uid %d: want 0 (unlimited) or more", *c.dlqMaxPerUID)
	}
	routing, err := server.ParseRouting(*c.routing)
	if err != nil {
		return server.Config{}, usagef("--routing: %w", err)
	}
	confirm, err := ws.ParseConfirm(*c.confirm)
	if err != nil {
		return server.Config{}, usagef("--delivery-confirm: %w", err)
	}
	natsOpts, err := c.nats.options()
	if err != nil {
		return server.Config{}, err
	}
	cfg := server.Config{
		HTTPAddr: *c.httpAddr, NATSURL: *c.nats.url, NATSOptions: natsOpts,
		NATSListen: *c.natsListen, DataDir: *c.dataDir,
		Auth: auth.Config{
			HMACSecret: []byte(*c.jwtSecret), Issuer: *c.jwtIssuer,
			Audience: *c.jwtAudience, UIDClaim: *c.jwtUIDClaim,
		},
		JWKS:           auth.JWKSConfig{URL: *c.jwksURL},
		AllowedOrigins: splitList(*c.allowedOrigins), APIKey: *c.apiKey, PprofAddr: *c.pprofAddr, UIOff: !*c.ui,
		Routing: routing,
		Topology: consumer.Topology{
			Replicas: *c.replicas, Retention: *c.retention, DLQRetention: *c.dlqRetention, DLQMaxPerUID: dlqCap(*c.dlqMaxPerUID),
			AckWait: *c.ackWait, MaxAckPending: *c.maxAckPending,
		},
		MaxDeliver: *c.maxDeliver, Backoff: backoff,
		QuietDelivered: !*c.logDelivered, NoReplayOnConnect: !*c.replayOnConnect,
		Confirm: confirm, ConfirmTimeout: *c.confirmTimeout,
		SendQueue: *c.sendQueue, MaxConns: *c.maxConns, MaxConnsPerUID: *c.maxConnsPerUID,
		HandshakeTimeout: *c.handshakeTimeout,
		NodeName:         *c.nodeName, PresenceOff: !*c.presence,
	}
	if *c.jwtPublicKey != "" {
		if cfg.Auth.PublicKeyPEM, err = os.ReadFile(*c.jwtPublicKey); err != nil {
			return cfg, fmt.Errorf("read JWT public key: %w", err)
		}
	}
	return cfg, nil
}

// dlqCap maps --dlq-max-per-uid, where 0 means unlimited as for the other
// caps, to consumer.Topology's, where 0 means the default.
func dlqCap(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// runServe runs one node until ctx ends (SIGINT, SIGTERM), then stops it
// within the shutdown timeout.
func runServe(ctx context.Context, env *environ, args []string) error {
	f, c := newServeFlags(env)
	if err := f.parse(args); err != nil {
		return err
	}
	if len(f.args()) > 0 {
		return usagef("serve takes no arguments, got %q", f.args())
	}
	cfg, err := c.config()
	if err != nil {
		return err
	}
	log, closeLog, err := logging.New(env.stdout, logging.Config{Level: *c.logLevel, BufferSize: 256 << 10})
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = closeLog() }()

	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		var ce *server.ConfigError
		if errors.As(err, &ce) {
			return usageError{err}
		}
		return err
	}
	runErr := srv.Run(ctx)
	stopCtx, cancel := context.WithTimeout(context.Background(), *c.shutdownTimeout)
	defer cancel()
	srv.Close(stopCtx)
	return runErr
}
