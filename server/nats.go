package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/natsserver"
)

// Log events of the NATS connections.
const (
	evNATSDown  = "nats.disconnected"
	evNATSUp    = "nats.reconnected"
	evNATSError = "nats.error"
)

// natsConns are a node's two connections to NATS: main carries JetStream
// (pulls, acks, dead letters, replays); cluster carries what nodes say to
// each other and is made with NoEcho, so a node never receives the
// delivery requests it sends (it delivers to its own connections
// directly). Two connections also keep a burst of delivery requests from
// queueing in front of acks.
type natsConns struct {
	main, cluster *nats.Conn
	js            jetstream.JetStream
	// Closed by each connection's ClosedHandler.
	mainClosed, clusterClosed chan struct{}
}

// connectNATS starts the embedded server when there is no URL, and
// connects both connections.
func (s *Server) connectNATS() error {
	natsURL := s.cfg.NATSURL
	if s.cfg.embedded() {
		dir, err := filepath.Abs(s.cfg.DataDir)
		if err != nil {
			return fmt.Errorf("data dir %s: %w", s.cfg.DataDir, err)
		}
		srv, err := natsserver.Start(natsserver.Config{Listen: s.cfg.NATSListen, StoreDir: dir}, s.log.Named("nats"))
		if err != nil {
			return err
		}
		s.embedded = srv
		natsURL = srv.ClientURL()
	}
	conns := &natsConns{mainClosed: make(chan struct{}), clusterClosed: make(chan struct{})}
	var err error
	if conns.main, err = s.dial(natsURL, "pusher", conns.mainClosed); err != nil {
		return err
	}
	s.nats = conns // from here on teardown closes what is open
	if conns.cluster, err = s.dial(natsURL, "pusher-cluster", conns.clusterClosed, nats.NoEcho()); err != nil {
		return err
	}
	// Dead letters are published asynchronously: a PubAck that never comes
	// must time out and be retried instead of waited on forever.
	if conns.js, err = jetstream.New(conns.main, jetstream.WithPublishAsyncTimeout(10*time.Second)); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// dial connects to natsURL (the embedded server's loopback address, or
// the cluster), reconnecting forever once connected. It does not use
// nats.InProcessServer for the embedded server. Measured here (issue 15):
// the server's own in-process connection, an unbuffered net.Pipe, cost
// 20 % of the maximum throughput; one buffered like a socket (a queue of
// 32 KiB chunks and a pump each way) saved 8 % of the CPU per message at
// 5,000 msgs/s (186-189 against 199-206 µs, three rounds) but cost 5-24 %
// more at full load with 2-16 % less throughput. Loopback TCP is the
// better trade.
func (s *Server) dial(natsURL, name string, closed chan struct{}, extra ...nats.Option) (*nats.Conn, error) {
	nlog := s.log.Named("nats")
	opts := append([]nats.Option{}, s.cfg.NATSOptions...)
	opts = append(opts,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			// A nil error is our own drain or close at shutdown, not trouble.
			if err != nil {
				nlog.Warn(evNATSDown, zap.String("nats_conn", name), zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			nlog.Warn(evNATSUp, zap.String("nats_conn", name), zap.String("server", nc.ConnectedUrlRedacted()))
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			nlog.Warn(evNATSError, zap.String("nats_conn", name), zap.String("subject", subj), zap.Error(err))
		}),
	)
	opts = append(opts, extra...)
	nc, err := nats.Connect(natsURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURL(natsURL), err)
	}
	return nc, nil
}

// drain drains both connections (what is buffered is sent, subscriptions
// finish) and waits until they are closed or ctx ends.
func (c *natsConns) drain(ctx context.Context) error {
	return errors.Join(drainConn(ctx, c.cluster, c.clusterClosed), drainConn(ctx, c.main, c.mainClosed))
}

func drainConn(ctx context.Context, nc *nats.Conn, closed <-chan struct{}) error {
	if nc == nil {
		return nil
	}
	if err := nc.Drain(); err != nil {
		nc.Close() // not connected: nothing to drain
		return nil
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		nc.Close()
		return fmt.Errorf("drain NATS: %w", ctx.Err())
	}
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
