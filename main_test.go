package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pusher-io/pusher/server"
	"github.com/pusher-io/pusher/ws"
)

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main() // pusher, for the README's examples (readme_test.go)
		return
	}
	goleak.VerifyTestMain(m,
		// glog-style flush daemons of the embedded nats-server's dependencies
		// are process-wide and outlive any one server.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

// serveConfig is the node's Config serve makes of env, with no flags.
func serveConfig(t *testing.T, env map[string]string) server.Config {
	t.Helper()
	f, c := newServeFlags(&environ{getenv: func(k string) string { return env[k] }})
	if err := f.parse(nil); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.config()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Every serve flag's environment variable lands in the node's Config.
func TestServeEnvMapsToConfig(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyFile, []byte("PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PUSHER_HTTP_ADDR": "127.0.0.1:9999", "PUSHER_NATS_URL": "nats://a:4222,nats://b:4222",
		"PUSHER_NATS_LISTEN": "127.0.0.1:5222", "PUSHER_DATA_DIR": "/var/lib/pusher",
		"JWT_SECRET": "s3cret", "PUSHER_JWT_PUBLIC_KEY": keyFile, "PUSHER_JWT_ISSUER": "iss",
		"PUSHER_JWT_AUDIENCE": "aud", "PUSHER_JWT_UID_CLAIM": "user", "PUSHER_JWKS_URL": "https://idp.example/jwks",
		"PUSHER_ALLOWED_ORIGINS": "https://a.example, https://b.example", "PUSHER_API_KEY": "k",
		"PUSHER_PPROF_ADDR": "127.0.0.1:6060", "PUSHER_UI": "false", "PUSHER_ROUTING": "local",
		"PUSHER_RETENTION": "1h", "PUSHER_DLQ_RETENTION": "2h", "PUSHER_ACK_WAIT": "40s",
		"PUSHER_MAX_ACK_PENDING": "7", "PUSHER_REPLICAS": "3", "PUSHER_MAX_DELIVER": "9",
		"PUSHER_BACKOFF": "1s,2s", "PUSHER_LOG_DELIVERED": "false", "PUSHER_REPLAY_ON_CONNECT": "false",
		"PUSHER_SEND_QUEUE": "11", "PUSHER_MAX_CONNS": "12", "PUSHER_MAX_CONNS_PER_UID": "13",
		"PUSHER_HANDSHAKE_TIMEOUT": "3s", "PUSHER_DELIVERY_CONFIRM": "write", "PUSHER_CONFIRM_TIMEOUT": "4s",
		"PUSHER_DLQ_MAX_PER_UID": "50", "PUSHER_PRESENCE": "false", "PUSHER_NODE_NAME": "web-7",
		"PUSHER_MAX_HANDSHAKES": "64",
	}
	got := serveConfig(t, env)
	checks := []struct {
		name string
		ok   bool
	}{
		{"http", got.HTTPAddr == "127.0.0.1:9999"},
		{"nats url", got.NATSURL == "nats://a:4222,nats://b:4222"},
		{"nats listen", got.NATSListen == "127.0.0.1:5222"},
		{"data dir", got.DataDir == "/var/lib/pusher"},
		{"secret", string(got.Auth.HMACSecret) == "s3cret"},
		{"public key", string(got.Auth.PublicKeyPEM) == "PEM"},
		{"iss aud claim", got.Auth.Issuer == "iss" && got.Auth.Audience == "aud" && got.Auth.UIDClaim == "user"},
		{"jwks", got.JWKS.URL == "https://idp.example/jwks"},
		{"origins", slices.Equal(got.AllowedOrigins, []string{"https://a.example", "https://b.example"})},
		{"api key", got.APIKey == "k"},
		{"pprof", got.PprofAddr == "127.0.0.1:6060"},
		{"ui", got.UIOff},
		{"routing", got.Routing == server.RoutingLocal},
		{"retention", got.Topology.Retention == time.Hour && got.Topology.DLQRetention == 2*time.Hour},
		{"ack wait", got.Topology.AckWait == 40*time.Second && got.Topology.MaxAckPending == 7},
		{"replicas", got.Topology.Replicas == 3},
		{"dlq cap", got.Topology.DLQMaxPerUID == 50},
		{"presence", got.PresenceOff && got.NodeName == "web-7"},
		{"handshakes", got.MaxHandshakes == 64},
		{"deliveries", got.MaxDeliver == 9 && slices.Equal(got.Backoff, []time.Duration{time.Second, 2 * time.Second})},
		{"quiet", got.QuietDelivered && got.NoReplayOnConnect},
		{"limits", got.SendQueue == 11 && got.MaxConns == 12 && got.MaxConnsPerUID == 13},
		{"handshake", got.HandshakeTimeout == 3*time.Second},
		{"confirm", got.Confirm == ws.ConfirmWrite && got.ConfirmTimeout == 4*time.Second},
	}
	for _, ck := range checks {
		if !ck.ok {
			t.Errorf("%s not mapped: %+v", ck.name, got)
		}
	}
}

// Exporting where the embedded servers listen, so that the client
// commands follow, never makes serve use an external NATS.
func TestServeListenEnvKeepsNATSEmbedded(t *testing.T) {
	got := serveConfig(t, map[string]string{"PUSHER_NATS_LISTEN": "127.0.0.1:5222", "PUSHER_HTTP_ADDR": "127.0.0.1:8282"})
	if got.NATSURL != "" || got.NATSListen != "127.0.0.1:5222" || got.HTTPAddr != "127.0.0.1:8282" {
		t.Fatalf("NATS URL %q, listen %q, HTTP %q: want the embedded NATS on 5222, HTTP on 8282", got.NATSURL, got.NATSListen, got.HTTPAddr)
	}
}
