package main

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/server"
)

const testSecret = harness.Secret

// node is one pusher node run in this process for the CLI tests; its
// addresses come from the node.
type node struct {
	httpAddr, natsURL string
}

// startNode runs a node through server.New, with embedded NATS on random
// ports and a temp data dir, after each of opts changed its Config. It is
// stopped in t.Cleanup.
func startNode(t testing.TB, opts ...func(*server.Config)) *node {
	t.Helper()
	cfg := server.Config{
		HTTPAddr: "127.0.0.1:0", NATSListen: "127.0.0.1:-1", DataDir: t.TempDir(),
		Auth: auth.Config{HMACSecret: []byte(testSecret)},
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := server.New(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		stop, cancelStop := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancelStop()
		s.Close(stop)
	})
	return &node{httpAddr: s.Addr().String(), natsURL: s.NATSURL()}
}
