package server_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// glog-style flush daemons of the embedded nats-server's dependencies
		// are process-wide and outlive any one server.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

const testSecret = harness.Secret

// node is one server.Server under test, serving until the test ends.
type node struct {
	*server.Server
	logs *harness.Log
	run  chan error // Run's result
}

// testConfig is a node with embedded NATS on random ports, a temp data
// dir and the test secret.
func testConfig(t testing.TB) server.Config {
	return server.Config{
		HTTPAddr:   "127.0.0.1:0",
		NATSListen: "127.0.0.1:-1",
		DataDir:    t.TempDir(),
		Auth:       auth.Config{HMACSecret: []byte(testSecret)},
	}
}

// newLogger writes JSON lines like the real one, into sink.
func newLogger(sink io.Writer) *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(sink), zap.InfoLevel))
}

// startNode builds and runs a node; it is closed in t.Cleanup.
func startNode(t testing.TB, cfg server.Config) *node {
	t.Helper()
	return startNodeLogging(t, cfg, newLogger)
}

// startNodeLogging is startNode with the node's logger made by logger,
// writing to the node's logs.
func startNodeLogging(t testing.TB, cfg server.Config, logger func(io.Writer) *zap.Logger) *node {
	t.Helper()
	n := &node{logs: harness.NewLog(), run: make(chan error, 1)}
	s, err := server.New(context.Background(), cfg, logger(n.logs))
	if err != nil {
		t.Fatalf("server.New: %v\n%s", err, n.logs)
	}
	n.Server = s
	ctx, cancel := context.WithCancel(context.Background())
	go func() { n.run <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); n.stop(t) })
	return n
}

// stop ends Run and closes the node, as main does on SIGTERM; safe to
// call twice.
func (n *node) stop(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	n.Close(ctx)
}

func (n *node) url(path string) string { return "http://" + n.Addr().String() + path }

func (n *node) wsURL(query string) string {
	u := "ws://" + n.Addr().String() + "/ws"
	if query != "" {
		u += "?" + query
	}
	return u
}

func token(t testing.TB, uid string, ttl time.Duration) string { return harness.Token(t, uid, ttl) }

// client is a connection read all the time, as a browser reads, so it
// answers the node's pings, which confirm delivery.
type client = harness.Pump

// dial connects uid with a bearer header, as a reading client. A node
// registers a connection before it answers the upgrade, so once Dial
// returns, messages published for uid find it.
func (n *node) dial(t testing.TB, uid string) *client {
	t.Helper()
	return n.dialAt(t, n.Addr().String(), uid)
}

// dialAt connects uid through hostport (a proxy, or the node itself) as a
// reading client.
func (n *node) dialAt(t testing.TB, hostport, uid string) *client {
	t.Helper()
	return harness.NewPump(harness.DialWS(t, hostport, uid))
}

// natsClient connects a backend-like client to the node's NATS.
func (n *node) natsClient(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// read returns the next message within timeout, or fails.
func read(t testing.TB, c *client, timeout time.Duration) (int, []byte) {
	t.Helper()
	typ, data, err := c.Next(timeout)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, data
}

var (
	publish = harness.Publish
	waitFor = harness.WaitFor
)

// wantMsgs is a waitFor condition: stream holds want messages under filter.
var wantMsgs = harness.StreamHolds
