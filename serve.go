package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/logging"
	"github.com/pusher-io/pusher/server"
	"github.com/pusher-io/pusher/wire"
	"github.com/pusher-io/pusher/ws"
)

// serveFlags are serve's flags, each with its environment variable.
type serveFlags struct {
	httpAddr, natsListen, dataDir                     *string
	nats                                              *natsFlags
	jwtSecret, jwtPublicKey, jwtIssuer, jwtAudience   *string
	jwtUIDClaim, jwksURL, allowedOrigins, backoff     *string
	trustedProxies                                    *string
	logLevel, nodeName                                *string
	apiKey, pprofAddr, routing, confirm               *string
	retention, dlqRetention, ackWait, shutdownTimeout *time.Duration
	handshakeTimeout, confirmTimeout                  *time.Duration
	maxDeliver, maxAckPending, sendQueue              *int
	maxConns, maxConnsPerUID, replicas, dlqMaxPerUID  *int
	maxHandshakes                                     *int
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
		trustedProxies: f.List("trusted-proxies", "PUSHER_TRUSTED_PROXIES", "",
			"proxies (IPs, CIDRs) whose X-Forwarded-For or Forwarded names the client in the logs; empty: the TCP peer"),
		apiKey:    f.Secret("api-key", "PUSHER_API_KEY", "bearer key for POST /v1/push and /send; empty disables them"),
		pprofAddr: f.String("pprof-addr", "PUSHER_PPROF_ADDR", "", "serve net/http/pprof on this (loopback) address; empty: off"),
		routing: f.String("routing", "PUSHER_ROUTING", "auto",
			"local (this node's connections only), cluster (any node's, through NATS), or auto: cluster unless NATS is embedded"),
		confirm: f.String("delivery-confirm", "PUSHER_DELIVERY_CONFIRM", "pong",
			"what makes a message delivered: pong (the client answered the ping sent after it) or write (the kernel took the write)"),
		confirmTimeout: f.Duration("confirm-timeout", "PUSHER_CONFIRM_TIMEOUT", 10*time.Second,
			"close a connection whose written messages stay unconfirmed this long (4004) and retry them"),

		retention:      f.Duration("retention", "PUSHER_RETENTION", 24*time.Hour, "how long PUSH keeps messages"),
		dlqRetention:   f.Duration("dlq-retention", "PUSHER_DLQ_RETENTION", 168*time.Hour, "how long PUSH_DLQ keeps dead letters"),
		dlqMaxPerUID:   f.Int("dlq-max-per-uid", "PUSHER_DLQ_MAX_PER_UID", consumer.DefaultDLQMaxPerUID, "dead letters PUSH_DLQ keeps per user, oldest discarded first; 0 unlimited"),
		maxDeliver:     f.Int("max-deliver", "PUSHER_MAX_DELIVER", 5, "deliveries before a message is dead-lettered"),
		backoff:        f.List("backoff", "PUSHER_BACKOFF", "1s,5s,30s", "redelivery delays after failed deliveries, last repeating"),
		ackWait:        f.Duration("ack-wait", "PUSHER_ACK_WAIT", 30*time.Second, "redeliver if a delivery is not settled in this time (crash)"),
		maxAckPending:  f.Int("max-ack-pending", "PUSHER_MAX_ACK_PENDING", 65536, "unacked deliveries the consumer allows"),
		sendQueue:      f.Int("send-queue", "PUSHER_SEND_QUEUE", 1024, "messages queued per connection before it is closed as slow (4002)"),
		maxConns:       f.Int("max-conns", "PUSHER_MAX_CONNS", 0, "connections per node, 0 unlimited"),
		maxConnsPerUID: f.Int("max-conns-per-uid", "PUSHER_MAX_CONNS_PER_UID", 0, "connections per user per node, 0 unlimited"),
		maxHandshakes: f.Int("max-handshakes", "PUSHER_MAX_HANDSHAKES", 512,
			"WebSocket handshakes in progress at once; more get 503 with Retry-After (1013 for pusher.v1 clients); 0 unlimited"),
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
	proxies, err := wire.ParseTrustedProxies(*c.trustedProxies)
	if err != nil {
		return server.Config{}, usagef("--trusted-proxies: %w", err)
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
		AllowedOrigins: splitList(*c.allowedOrigins), TrustedProxies: proxies, APIKey: *c.apiKey, PprofAddr: *c.pprofAddr, UIOff: !*c.ui,
		Routing: routing,
		Topology: consumer.Topology{
			Replicas: *c.replicas, Retention: *c.retention, DLQRetention: *c.dlqRetention, DLQMaxPerUID: dlqCap(*c.dlqMaxPerUID),
			AckWait: *c.ackWait, MaxAckPending: *c.maxAckPending,
		},
		MaxDeliver: *c.maxDeliver, Backoff: backoff,
		QuietDelivered: !*c.logDelivered, NoReplayOnConnect: !*c.replayOnConnect,
		Version: version,
		Confirm: confirm, ConfirmTimeout: *c.confirmTimeout,
		SendQueue: *c.sendQueue, MaxConns: *c.maxConns, MaxConnsPerUID: *c.maxConnsPerUID, MaxHandshakes: *c.maxHandshakes,
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

// evFailed is serve's last line when it fails.
const evFailed = "pusher.failed"

// runServe runs one node until ctx ends (SIGINT, SIGTERM), then stops it
// within the shutdown timeout. A failure, usage errors included, is
// returned (exitCode prints it on stderr) and also logged on stdout as
// pusher.failed, with the node's name when it is known: a log shipper
// that reads stdout only then shows why a pod crash-loops.
func runServe(ctx context.Context, env *environ, args []string) error {
	f, c := newServeFlags(env)
	cfg, err := c.parse(f, args)
	if errors.Is(err, errHelp) {
		return err
	}
	log, closeLog, lerr := logging.New(env.stdout, logging.Config{Level: *c.logLevel, BufferSize: 256 << 10})
	if lerr != nil {
		// The level is the mistake: say so at the default level.
		log, closeLog, _ = logging.New(env.stdout, logging.Config{})
		if err == nil {
			err = usageError{lerr}
		}
	}
	defer func() { _ = closeLog() }()
	node := cfg.NodeName
	if node == "" && cfg.HTTPAddr != "" {
		node = server.DefaultNodeName(cfg.HTTPAddr) // "" for port 0, until it listens
	}
	if err == nil {
		var name string
		if name, err = serve(ctx, cfg, log, *c.shutdownTimeout); name != "" {
			node = name
		}
	}
	if err != nil {
		fields := []zap.Field{zap.Error(err)}
		if node != "" {
			fields = append(fields, zap.String("node", node))
		}
		log.Error(evFailed, fields...)
	}
	return err
}

// parse reads serve's flags and arguments into the node's Config; what is
// wrong with them is a usage error, --help is errHelp.
func (c *serveFlags) parse(f *flagSet, args []string) (server.Config, error) {
	if err := f.parse(args); err != nil {
		return server.Config{}, err
	}
	if len(f.args()) > 0 {
		return server.Config{}, usagef("serve takes no arguments, got %q", f.args())
	}
	return c.config()
}

// serve builds the node, runs it until ctx ends and stops it within
// shutdownTimeout. It returns the node's name, "" if it was not built.
func serve(ctx context.Context, cfg server.Config, log *zap.Logger, shutdownTimeout time.Duration) (string, error) {
	srv, err := server.New(ctx, cfg, log)
	if err != nil {
		var ce *server.ConfigError
		if errors.As(err, &ce) {
			return "", usageError{err}
		}
		return "", err
	}
	runErr := srv.Run(ctx)
	stopCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	srv.Close(stopCtx)
	return srv.Name(), runErr
}
