package natsserver

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// glog-style flush daemons of the embedded nats-server's dependencies
		// are process-wide and outlive any one server.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
	)
}

// TestServerLinesKeepLevelAndStructure runs the embedded server and reads
// its real lines: a notice is info, a client's protocol error is error,
// and the client's prefix is split into fields.
func TestServerLinesKeepLevelAndStructure(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	logged := make(chan struct{}, 1) // "a line was logged since the last look"
	core = zapcore.RegisterHooks(core, func(zapcore.Entry) error {
		select {
		case logged <- struct{}{}:
		default:
		}
		return nil
	})
	s, err := Start(Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()

	ready := logs.FilterMessage(eventServer).FilterField(zap.String("detail", "Server is ready"))
	if ready.Len() != 1 || ready.All()[0].Level != zapcore.InfoLevel {
		t.Fatalf("want one info line \"Server is ready\", got %v", ready.All())
	}

	// A client that connects with a name, then speaks nonsense.
	u, err := url.Parse(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil { // INFO
		t.Fatal(err)
	}
	if _, err := fmt.Fprint(c, `CONNECT {"verbose":false,"name":"probe","lang":"go","version":"1.2.3"}`+"\r\nPING\r\nGARBAGE\r\n"); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	timeout := time.After(10 * time.Second)
	for line == nil {
		for _, e := range logs.FilterMessage(eventServer).FilterLevelExact(zapcore.ErrorLevel).All() {
			if strings.Contains(e.ContextMap()["detail"].(string), "parser ERROR") {
				line = e.ContextMap()
			}
		}
		if line != nil {
			break
		}
		select {
		case <-logged:
		case <-timeout:
			t.Fatalf("no error line for the client's garbage; lines: %v", logs.All())
		}
	}
	if line["nats_peer"] != c.LocalAddr().String() || line["nats_client"] != "v1.2.3:go:probe" ||
		!strings.HasPrefix(line["nats_conn"].(string), "cid:") || strings.Contains(line["detail"].(string), "cid:") {
		t.Fatalf("line %v: want nats_peer %s, nats_conn cid:N, nats_client v1.2.3:go:probe and the rest as detail", line, c.LocalAddr())
	}
}

func TestServerLine(t *testing.T) {
	tests := []struct {
		name string
		give string
		want map[string]any
	}{
		{"plain", "Server is ready", map[string]any{"detail": "Server is ready"}},
		{"client before CONNECT", "127.0.0.1:5000 - cid:7 - Client connection closed",
			map[string]any{"nats_peer": "127.0.0.1:5000", "nats_conn": "cid:7", "detail": "Client connection closed"}},
		{"client with account", `[::1]:5000 - cid:7 - "v1.55.0:go:pusher" - "$G/alice" - Slow Consumer Detected`,
			map[string]any{"nats_peer": "[::1]:5000", "nats_conn": "cid:7", "nats_client": "v1.55.0:go:pusher",
				"nats_account": "$G/alice", "detail": "Slow Consumer Detected"}},
		{"route", "10.0.0.2:6222 - rid:3 - Route connection created",
			map[string]any{"nats_peer": "10.0.0.2:6222", "nats_conn": "rid:3", "detail": "Route connection created"}},
		{"internal client", "JETSTREAM - stream lost quorum", map[string]any{"nats_conn": "JETSTREAM", "detail": "stream lost quorum"}},
		{"dashes that are no prefix", "Starting - http - monitoring", map[string]any{"detail": "Starting - http - monitoring"}},
		{"a space before the first dash", "Listening for client connections on 127.0.0.1:4222 - x - y",
			map[string]any{"detail": "Listening for client connections on 127.0.0.1:4222 - x - y"}},
		{"bad quote", `1.2.3.4:5 - cid:1 - "unterminated - text`,
			map[string]any{"nats_peer": "1.2.3.4:5", "nats_conn": "cid:1", "detail": `"unterminated - text`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := zapcore.NewMapObjectEncoder()
			for _, f := range serverLine(tt.give) {
				f.AddTo(enc)
			}
			if fmt.Sprint(enc.Fields) != fmt.Sprint(tt.want) {
				t.Fatalf("serverLine(%q) = %v, want %v", tt.give, enc.Fields, tt.want)
			}
		})
	}
}
