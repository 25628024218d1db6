// Package server runs one pusher node: it builds the parts in order,
// serves HTTP and WebSocket, and stops them in the contract's order.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/cluster"
	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/logging"
	"github.com/pusher-io/pusher/natsserver"
	"github.com/pusher-io/pusher/presence"
	"github.com/pusher-io/pusher/wire"
	"github.com/pusher-io/pusher/ws"
)

// Compile-time check: cluster.Node is the consumer's router, on one node
// as on many.
var _ consumer.Router = (*cluster.Node)(nil)

// Log events of a node's lifecycle.
const (
	evReady      = "pusher.ready"
	evStopping   = "pusher.stopping"
	evStopped    = "pusher.stopped"
	evIncomplete = "pusher.shutdown_incomplete"
	evDevSecret  = "auth.dev_secret"
	evAckWait    = "config.ack_wait_short"
)

// startTimeout bounds New's JetStream set-up: nodes starting together on
// a fresh cluster may find JetStream electing leaders for a while.
const startTimeout = 60 * time.Second

// failedStartTimeout bounds the teardown after New failed part way.
const failedStartTimeout = 10 * time.Second

// Server is one running pusher node.
//
// Lifecycle: New builds every part, listening first, and starts pulling;
// Run serves HTTP until its context ends; Close stops everything in the
// contract's order. Close may be called without Run, and more than once.
type Server struct {
	cfg    Config
	log    *zap.Logger // with the node's name once the listener exists
	binary Build       // what pusher.ready and pusher_build_info name

	// Built by New in this order, closed by Close in about the reverse.
	ln       net.Listener
	jwks     *auth.JWKS   // nil without a JWKS URL
	pprof    *pprofServer // nil when off
	embedded *natsserver.Server
	nats     *natsConns
	hub      *hub.Hub
	replayer *consumer.Replayer
	node     *cluster.Node
	cons     *consumer.Consumer
	presence *presence.Publisher // nil when off
	ws       *ws.Handler
	http     *http.Server

	running   atomic.Bool
	served    chan struct{} // closed when Serve returned, once Run started it
	serveErr  error         // Serve's result; set before served is closed
	closeOnce sync.Once
}

// New builds a node in order: HTTP listener, the JWKS's first fetch (if
// configured), NATS (embedded or remote), hub, cluster, consumer,
// WebSocket handler, HTTP routes. The listener
// comes first so that a busy port fails before anything is pulled. On any
// error it closes what it built. ctx bounds the start-up only.
func New(ctx context.Context, cfg Config, log *zap.Logger) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, served: make(chan struct{}), binary: ReadBuild()}
	if cfg.Version != "" {
		s.binary.Version = cfg.Version
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := s.build(ctx); err != nil {
		tctx, cancel := context.WithTimeout(context.Background(), failedStartTimeout)
		defer cancel()
		s.teardown(tctx)
		return nil, err
	}
	return s, nil
}

// build does New's work; teardown undoes whatever part of it succeeded.
// Nothing is logged before the listener exists: from then on the node
// has its name, and every line carries it.
func (s *Server) build(ctx context.Context) error {
	if err := s.checkKeys(); err != nil { // configuration only: before any I/O
		return err
	}
	var err error
	if s.ln, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.HTTPAddr, err)
	}
	s.nameNode()
	if s.cfg.ackWaitShort() {
		s.log.Warn(evAckWait, logging.Ms("ack_wait_ms", s.cfg.Topology.AckWait), logging.Ms("write_deadline_ms", writeWait),
			logging.Ms("confirm_timeout_ms", s.cfg.ConfirmTimeout), zap.String("detail",
				"JetStream will redeliver messages still awaiting their confirmation: expect duplicates; raise PUSHER_ACK_WAIT"))
	}
	verifier, err := s.verifier()
	if err != nil {
		return err
	}
	if s.cfg.PprofAddr != "" {
		if s.pprof, err = listenPprof(s.cfg.PprofAddr, s.log); err != nil {
			return err
		}
	}
	if err := s.startJWKS(ctx); err != nil {
		return err
	}
	if err := s.connectNATS(); err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	if err := s.buildDelivery(ctx, reg); err != nil {
		return err
	}
	wsCfg := ws.Config{
		AllowedOrigins: s.cfg.AllowedOrigins, TrustedProxies: s.cfg.TrustedProxies, SendQueue: s.cfg.SendQueue, Registerer: reg,
		WriteWait: writeWait, Confirm: s.cfg.Confirm, ConfirmTimeout: s.cfg.ConfirmTimeout,
		MaxHandshakes: s.cfg.MaxHandshakes,
	}
	if !s.cfg.PresenceOff {
		if s.presence, err = presence.New(s.nats.js.Conn(), s.log, presence.Config{Node: s.cfg.NodeName, Registerer: reg}); err != nil {
			return configErr(err)
		}
		s.presence.Start()
		wsCfg.Presence = s.presence
	}
	if !s.cfg.NoReplayOnConnect {
		wsCfg.OnConnect = s.replayer.TriggerReplay
	}
	if s.ws, err = ws.NewHandler(s.hub, verifier, s.log, wsCfg); err != nil {
		return configErr(err)
	}
	if err := registerGauges(reg, s.binary, s.hub, s.cons, s.nats.js.Conn()); err != nil {
		return err
	}
	if err := registerJWKSMetrics(reg, s.jwks); err != nil {
		return err
	}
	return s.buildHTTP(reg)
}

// buildDelivery builds the path a message takes: hub, replayer, cluster
// node, consumer; the consumer starts pulling.
func (s *Server) buildDelivery(ctx context.Context, reg prometheus.Registerer) error {
	// The hub reports presence changes to the node, which exists only
	// after the hub; no connection can arrive before HTTP serves, so the
	// closure never sees node nil.
	var node *cluster.Node
	h, err := hub.New(hub.Config{
		MaxConns: s.cfg.MaxConns, MaxConnsPerUID: s.cfg.MaxConnsPerUID,
		OnPresence: func(uid string) { node.OnPresence(uid) },
	})
	if err != nil {
		return configErr(err)
	}
	s.hub = h
	if s.replayer, err = consumer.NewReplayer(consumer.NewDLQ(s.nats.js), h.Online, s.log, consumer.ReplayerConfig{Registerer: reg}); err != nil {
		return configErr(err)
	}
	s.replayer.Start()
	node, err = cluster.New(s.nats.cluster, h, s.replayer, s.log, cluster.Config{
		Routing: s.cfg.Routing == RoutingCluster, Timeout: s.cfg.requestTimeout(), Name: s.cfg.NodeName,
	})
	if err != nil {
		return configErr(err)
	}
	if err := node.Start(); err != nil {
		return err
	}
	s.node = node
	cons, err := consumer.New(s.nats.js, node, s.log, consumer.Config{
		Registerer:     reg,
		Topology:       s.cfg.Topology,
		MaxDeliver:     s.cfg.MaxDeliver,
		Backoff:        s.cfg.Backoff,
		QuietDelivered: s.cfg.QuietDelivered,
	})
	if err != nil {
		return configErr(err)
	}
	if err := cons.Start(ctx); err != nil {
		return fmt.Errorf("start consumer: %w", err)
	}
	s.cons = cons
	return nil
}

// nameNode names the node after its listener unless Config named it, and
// puts the name on the node's logger, so that every line from here on,
// the subsystems' included, says which node wrote it.
func (s *Server) nameNode() {
	if s.cfg.NodeName == "" {
		s.cfg.NodeName = DefaultNodeName(s.ln.Addr().String())
	}
	s.log = s.log.With(zap.String("node", s.cfg.NodeName))
}

// DefaultNodeName is the name of a node listening on httpAddr whose
// Config.NodeName is empty: the host name and the HTTP port, unique per
// node even with several on one host, and what an operator recognises.
// It is "" while the port is still to be picked (port 0): the node then
// takes its name from the listener.
func DefaultNodeName(httpAddr string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "pusher"
	}
	_, port, err := net.SplitHostPort(httpAddr)
	switch {
	case err != nil || port == "":
		return host
	case port == "0":
		return ""
	}
	return host + ":" + port
}

// Name is the node's name: Config.NodeName, or DefaultNodeName of its
// listener. Every line the node logs carries it as node.
func (s *Server) Name() string { return s.cfg.NodeName }

// Addr is the address HTTP and WebSocket clients reach this node on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// NATSURL is the URL of the NATS this node uses: the embedded server's
// client URL, or Config.NATSURL.
func (s *Server) NATSURL() string {
	if s.embedded != nil {
		return s.embedded.ClientURL()
	}
	return s.cfg.NATSURL
}

// Run serves HTTP and WebSocket until ctx ends (nil) or serving fails. It
// does not stop the node: call Close after it returns.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("server: Run called twice")
	}
	go func() { s.serveErr = s.http.Serve(s.ln); close(s.served) }()
	s.log.Info(evReady, zap.String("version", s.binary.Version), zap.String("revision", s.binary.Revision),
		zap.String("http_addr", s.Addr().String()), zap.String("nats_url", redactURL(s.NATSURL())),
		zap.Bool("embedded_nats", s.cfg.embedded()), zap.Bool("cluster_routing", s.cfg.Routing == RoutingCluster))
	select {
	case <-ctx.Done():
		return nil
	case <-s.served:
		if errors.Is(s.serveErr, http.ErrServerClosed) {
			return nil // Close was called
		}
		return fmt.Errorf("serve http: %w", s.serveErr)
	}
}

// Close stops the node in the contract's order, within ctx: stop taking
// connections, stop pulling and let in-flight writes finish and ack, close
// every socket with 1001 (what they still had queued is nacked), stop the
// cluster and the consumer, drain NATS. A step that ctx cuts short is
// logged (pusher.shutdown_incomplete); what it left behind is redelivered
// by JetStream, so Close reports nothing. Idempotent.
func (s *Server) Close(ctx context.Context) {
	s.closeOnce.Do(func() { s.shutdown(ctx) })
}

func (s *Server) shutdown(ctx context.Context) {
	start := time.Now()
	var budget time.Duration
	if deadline, ok := ctx.Deadline(); ok {
		budget = time.Until(deadline)
	}
	s.log.Info(evStopping, logging.Ms("timeout_ms", budget))
	incomplete := func(step string, err error) {
		if err != nil {
			s.log.Warn(evIncomplete, zap.String("step", step), zap.Error(err))
		}
	}
	if err := s.http.Shutdown(ctx); err != nil {
		incomplete("http", err)
	}
	if s.running.Load() {
		<-s.served // Serve has returned: Shutdown closed the listener
	}
	// Half the budget for in-flight writes; the rest for closing sockets
	// and draining NATS.
	drainCtx, cancelDrain := context.WithCancel(ctx)
	if budget > 0 {
		drainCtx, cancelDrain = context.WithTimeout(ctx, budget/2)
	}
	s.node.Leave()
	incomplete("drain", s.cons.Drain(drainCtx))
	cancelDrain()
	if !s.hub.Shutdown(ctx.Done(), wire.CloseGoingAway, s.goingAwayText()) {
		incomplete("close connections", ctx.Err())
	}
	incomplete("connections", s.ws.Wait(ctx))
	s.teardown(ctx)
	s.log.Info(evStopped, logging.Ms("duration_ms", time.Since(start)))
}

// goingAwayText is the reason of the 1001 a shutdown closes connections
// with. With cluster routing other nodes can take the users at once;
// a node routing locally is alone, and its users are asked to wait for
// its restart (wire.CloseGoingAwayRetryText) instead of failing dial
// after dial while it is away, which grows their back-off to many
// seconds (measured: the last of 15,000 clients back 15 s after the node
// was ready).
func (s *Server) goingAwayText() string {
	if s.cfg.Routing == RoutingCluster {
		return wire.CloseGoingAwayText
	}
	return wire.CloseGoingAwayRetryText
}

// teardown closes, in order, whatever of the node exists, after the
// connections are gone (or were never accepted): the JWKS refresher, the
// presence events still queued, the cluster (what awaits a reply from
// another node is nacked for a retry), the replayer, the consumer, NATS,
// the pprof listener. New calls it on
// an error; Close after the steps that need live connections.
func (s *Server) teardown(ctx context.Context) {
	if s.jwks != nil {
		s.jwks.Close()
	}
	if s.presence != nil {
		// The connections' disconnects are queued: out they go, before
		// NATS drains.
		if err := s.presence.Close(ctx); err != nil {
			s.log.Warn(evIncomplete, zap.String("step", "presence"), zap.Error(err))
		}
	}
	if s.node != nil {
		s.node.Close()
	}
	if s.replayer != nil {
		s.replayer.Close()
	}
	if s.cons != nil {
		if err := s.cons.Close(ctx); err != nil {
			s.log.Warn(evIncomplete, zap.String("step", "consumer"), zap.Error(err))
		}
	}
	if s.nats != nil {
		if err := s.nats.drain(ctx); err != nil {
			s.log.Warn(evIncomplete, zap.String("step", "nats drain"), zap.Error(err))
		}
	}
	if s.embedded != nil {
		s.embedded.Shutdown()
	}
	if s.pprof != nil {
		s.pprof.close()
	}
	if s.ln != nil && !s.running.Load() {
		_ = s.ln.Close()
	}
}
