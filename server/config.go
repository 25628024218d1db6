package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/wire"
	"github.com/pusher-io/pusher/ws"
)

// Config is everything one node is built from, as values: main maps flags
// and environment to it, tests fill it directly. Zero values mean the
// documented default.
type Config struct {
	// HTTPAddr is where /ws, /metrics, /healthz, /readyz, /v1/push and /
	// listen; default 127.0.0.1:8181. Port 0 picks a free port (see Addr).
	HTTPAddr string
	// NATSURL lists NATS servers, comma-separated; empty starts an
	// embedded nats-server with JetStream.
	NATSURL string
	// NATSOptions authenticate and secure the connection to NATSURL
	// (credentials, nkey, user, token, TLS).
	NATSOptions []nats.Option
	// NATSListen is the embedded server's address; default 127.0.0.1:4222,
	// loopback only. Port -1 picks a free port (see NATSURL).
	NATSListen string
	// DataDir holds the embedded server's JetStream store; default ./data.
	// One pusher at a time may use it.
	DataDir string

	// Auth verifies client tokens. With no key at all (JWKS included)
	// and an embedded NATS, the public auth.DevSecret is used, with a
	// warning; with an external NATS that is refused.
	Auth auth.Config
	// JWKS, when its URL is set, adds the keys of an identity provider's
	// JWKS document to Auth (see auth.JWKS). New fetches it once; with
	// no other key configured that fetch must succeed.
	JWKS auth.JWKSConfig
	// AllowedOrigins lists browser origins allowed on /ws; "*" allows any;
	// empty allows same-origin only.
	AllowedOrigins []string
	// TrustedProxies are the proxies whose X-Forwarded-For or Forwarded
	// names the client in the logs' remote (WebSocket and HTTP publish
	// lines); zero: the TCP peer is the client.
	TrustedProxies wire.TrustedProxies
	// APIKey enables POST /v1/push and /send for callers presenting it.
	APIKey string
	// PprofAddr serves net/http/pprof on this loopback address; empty: off.
	PprofAddr string
	// UIOff stops serving the browser test client at /.
	UIOff bool

	// Routing says whether pulled messages reach other nodes' connections.
	Routing Routing
	// Topology is the JetStream layout (replicas, retention, ack wait).
	Topology consumer.Topology
	// MaxDeliver is the deliveries before max_deliver; default 5.
	MaxDeliver int
	// Backoff is the delay before each redelivery; default 1s, 5s, 30s.
	Backoff []time.Duration
	// QuietDelivered drops the push.delivered line (failures still log).
	QuietDelivered bool
	// NoReplayOnConnect keeps a connecting user's offline dead letters
	// where they are.
	NoReplayOnConnect bool

	// Confirm is what makes a message delivered on a connection: the
	// client's pong to the ping after it (default), or the write.
	Confirm ws.Confirm
	// ConfirmTimeout is how long written messages may stay unconfirmed
	// before their connection is closed as unresponsive (4004) and they
	// are retried; default 10s.
	ConfirmTimeout time.Duration

	// SendQueue caps each connection's queued and unconfirmed messages;
	// default 1024.
	SendQueue int
	// MaxConns and MaxConnsPerUID cap connections on this node; 0: no cap.
	MaxConns, MaxConnsPerUID int
	// HandshakeTimeout is how long a client has to send its request
	// headers; default 5s.
	HandshakeTimeout time.Duration

	// MaxHandshakes caps the WebSocket handshakes in progress; more are
	// refused at once (503 with Retry-After; 1013 for pusher.v1 clients).
	// 0: no cap.
	MaxHandshakes int

	// NodeName names this node in presence events and online answers;
	// default the host name and the HTTP port ("web-1:8181").
	NodeName string
	// PresenceOff stops the pusher.presence.<uid> events (online queries
	// are still answered).
	PresenceOff bool

	// Version names this build in pusher.ready and pusher_build_info
	// when set (make build VERSION=v1.2.3); default the version the go
	// command stamped (ReadBuild).
	Version string
}

// Routing is how a node reaches a uid's connections.
type Routing int

const (
	// RoutingAuto routes through NATS unless NATS is embedded: an external
	// NATS may be shared by other pusher nodes.
	RoutingAuto Routing = iota
	// RoutingLocal delivers to this node's connections only.
	RoutingLocal
	// RoutingCluster delivers to every node's connections through NATS.
	RoutingCluster
)

// ParseRouting reads "auto", "local" or "cluster".
func ParseRouting(s string) (Routing, error) {
	switch s {
	case "auto", "":
		return RoutingAuto, nil
	case "local":
		return RoutingLocal, nil
	case "cluster":
		return RoutingCluster, nil
	}
	return 0, fmt.Errorf("routing %q: want auto, local or cluster", s)
}

// ConfigError is a Config that cannot be built; main answers it as a
// usage error.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErr(err error) error {
	if err == nil {
		return nil
	}
	return &ConfigError{Err: err}
}

func (c Config) withDefaults() (Config, error) {
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8181"
	}
	if c.NATSListen == "" {
		c.NATSListen = "127.0.0.1:4222"
	}
	if c.DataDir == "" {
		c.DataDir = "./data"
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 5 * time.Second
	}
	if c.ConfirmTimeout == 0 {
		c.ConfirmTimeout = 10 * time.Second
	}
	if c.Topology.AckWait == 0 {
		c.Topology.AckWait = 30 * time.Second
	}

	switch {
	case c.Routing < RoutingAuto || c.Routing > RoutingCluster:
		return c, configErr(fmt.Errorf("routing %d: unknown", c.Routing))
	case c.HandshakeTimeout < 0:
		return c, configErr(errors.New("handshake timeout must be positive"))
	case c.NATSURL != "" && c.Routing == RoutingAuto:
		c.Routing = RoutingCluster
	case c.NATSURL == "" && c.Routing == RoutingAuto:
		c.Routing = RoutingLocal
	}
	return c, nil
}

// writeWait bounds one write to a client (README, WebSocket: 10 s).
const writeWait = 10 * time.Second

// ackWaitShort reports whether JetStream may redeliver a message that is
// still being written or awaiting its confirmation: a delivery settles
// within the write deadline plus the confirm timeout. That duplicates
// (never loses) messages, and a short ack wait also brings messages back
// soon after a crash, so it is a warning, not an error.
func (c Config) ackWaitShort() bool { return c.Topology.AckWait <= writeWait+c.ConfirmTimeout }

// requestTimeout bounds a delivery request to another node: its write and
// its confirmation, and a little for the NATS round trips, so a reply
// that is merely slow is not taken for a lost one.
func (c Config) requestTimeout() time.Duration { return writeWait + c.ConfirmTimeout + 5*time.Second }

// embedded reports whether this node runs its own nats-server.
func (c Config) embedded() bool { return c.NATSURL == "" }
