package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/wire"
)

// cli runs pusher with args and env as main would, and returns the exit
// code with what it printed.
func cli(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, args, func(k string) string { return env[k] }, &out, &errOut)
	code = exitCode(err, &errOut)
	return code, out.String(), errOut.String()
}

func TestCLIUsageAndHelp(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		give     []string
		wantCode int
		wantOut  string // in stdout
		wantErr  string // in stderr
	}{
		{name: "overview", give: []string{"--help"}, wantCode: 0, wantOut: "Commands:"},
		{name: "serve help names env vars", give: []string{"serve", "--help"}, wantCode: 0, wantOut: "$PUSHER_MAX_DELIVER"},
		{name: "secrets not shown in help", env: map[string]string{"JWT_SECRET": "hunter2-secret"}, give: []string{"serve", "--help"}, wantCode: 0, wantOut: "$JWT_SECRET"},
		{name: "unknown command", give: []string{"frobnicate"}, wantCode: 2, wantErr: `unknown command "frobnicate"`},
		{name: "unknown flag", give: []string{"serve", "--nope"}, wantCode: 2, wantErr: "flag provided but not defined"},
		{name: "bad env value", env: map[string]string{"PUSHER_MAX_DELIVER": "many"}, give: []string{"serve"}, wantCode: 2, wantErr: "PUSHER_MAX_DELIVER"},
		{name: "bad routing", give: []string{"serve", "--routing", "sideways"}, wantCode: 2, wantErr: "--routing"},
		{name: "bad confirm", give: []string{"serve", "--delivery-confirm", "maybe"}, wantCode: 2, wantErr: "--delivery-confirm"},
		{name: "external NATS needs a key", env: map[string]string{"PUSHER_NATS_URL": "nats://127.0.0.1:1"}, give: []string{"serve"}, wantCode: 2, wantErr: "JWT_SECRET"},
		{name: "JWKS URL not http(s)", env: map[string]string{"PUSHER_JWKS_URL": "ftp://idp.example/jwks"}, give: []string{"serve", "--http-addr", "127.0.0.1:0"}, wantCode: 2, wantErr: "JWKS URL"},
		{name: "JWKS alone, provider down", env: map[string]string{"PUSHER_JWKS_URL": "http://127.0.0.1:1/jwks"}, give: []string{"serve", "--http-addr", "127.0.0.1:0"}, wantCode: 1, wantErr: "first fetch"},
		{name: "token without uid", give: []string{"token"}, wantCode: 2, wantErr: "--uid is required"},
		{name: "token with bad uid", give: []string{"token", "--uid", "a.b"}, wantCode: 2, wantErr: "invalid uid"},
		{name: "pub needs two args", give: []string{"pub", "123"}, wantCode: 2, wantErr: "uid and a message"},
		{name: "pub bad uid", give: []string{"pub", "a*", "m"}, wantCode: 2, wantErr: "invalid uid"},
		{name: "pub bad ttl", give: []string{"pub", "--ttl", "soon", "123", "m"}, wantCode: 2, wantErr: "Pusher-TTL"},
		{name: "pub bad offline", give: []string{"pub", "--offline", "maybe", "123", "m"}, wantCode: 2, wantErr: "Pusher-Offline"},
		{name: "negative dlq cap", give: []string{"serve", "--dlq-max-per-uid", "-1"}, wantCode: 2, wantErr: "--dlq-max-per-uid"},
		{name: "dlq without subcommand", give: []string{"dlq"}, wantCode: 2, wantErr: "list or replay"},
		{name: "replay needs uid or all", give: []string{"dlq", "replay"}, wantCode: 2, wantErr: "--all"},
		{name: "kick needs uid", give: []string{"kick"}, wantCode: 2, wantErr: "one uid"},
		{name: "NATS unreachable", env: map[string]string{"PUSHER_NATS_URL": "nats://127.0.0.1:1"}, give: []string{"pub", "123", "m"}, wantCode: 1, wantErr: "connect to NATS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, tt.env, tt.give...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout ~%q, stderr ~%q",
					code, out, errOut, tt.wantCode, tt.wantOut, tt.wantErr)
			}
			if code != 0 && strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Fatalf("error is not one line: %q", errOut)
			}
			if strings.Contains(out+errOut, "hunter2-secret") {
				t.Fatal("a secret was printed")
			}
		})
	}
}

func TestCLITokenVerifies(t *testing.T) {
	code, out, _ := cli(t, map[string]string{"JWT_SECRET": testSecret}, "token", "--uid", "123", "--ttl", "1h")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	v, err := auth.NewVerifier(auth.Config{HMACSecret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(strings.TrimSpace(out))
	if err != nil || claims.UID != "123" || time.Until(claims.ExpiresAt) > time.Hour {
		t.Fatalf("token: %+v, %v", claims, err)
	}
	// Without JWT_SECRET it signs with the development secret and says so.
	code, out, errOut := cli(t, nil, "token", "--uid", "123")
	if code != 0 || !strings.Contains(errOut, "development secret") {
		t.Fatalf("dev token: exit %d, stderr %q", code, errOut)
	}
	dev, _ := auth.NewVerifier(auth.Config{HMACSecret: []byte(auth.DevSecret)})
	if _, err := dev.Verify(strings.TrimSpace(out)); err != nil {
		t.Fatalf("dev token does not verify: %v", err)
	}
}

func TestCLIAgainstARunningPusher(t *testing.T) {
	p := startNode(t)
	env := map[string]string{"PUSHER_NATS_URL": p.natsURL}
	c := harness.DialWS(t, p.httpAddr, "cli-user")

	code, out, _ := cli(t, env, "pub", "cli-user", "from the CLI")
	if code != 0 || !strings.Contains(out, "published push.cli-user seq 1") {
		t.Fatalf("pub: %d %q", code, out)
	}
	if _, got := harness.Read(t, c, 5*time.Second); string(got) != "from the CLI" {
		t.Fatalf("got %q", got)
	}

	// Two dead letters for a user who is away, one of them binary.
	_, js := harness.Connect(t, p.natsURL)
	harness.Publish(t, js, "push.away", []byte("first  line\nsecond line"))
	harness.Publish(t, js, "push.away", []byte{0xff, 0xfe})
	harness.WaitStreamMsgs(t, 10*time.Second, js, wire.DLQStreamName, "dlq.push.away", 2)
	code, out, errOut := cli(t, env, "dlq", "list")
	if code != 0 || !strings.Contains(out, "REASON") || !strings.Contains(out, `"first line second line"`) ||
		!strings.Contains(out, "<2 bytes binary>") || !strings.Contains(errOut, "2 dead letters") {
		t.Fatalf("dlq list: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = cli(t, env, "dlq", "list", "--uid", "away", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("dlq list --json: %d %q", code, out)
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["uid"] != "away" || first["reason"] != "offline" || first["data"] != "first  line\nsecond line" || first["original_subject"] != "push.away" {
		t.Fatalf("json line %v", first)
	}

	// Replay with the user still away: republished, dead-lettered again,
	// so the count stays; the point is exit 0 and the report.
	code, out, _ = cli(t, env, "dlq", "replay", "--uid", "away")
	if code != 0 || !strings.Contains(out, "replayed 2 dead letters") {
		t.Fatalf("dlq replay: %d %q", code, out)
	}

	// Something that is not a dead letter in PUSH_DLQ (no Pusher-* headers):
	// listed as MALFORMED, skipped by replay, left in place, nothing crashes.
	harness.Publish(t, js, "dlq.push.junk", []byte("not a dead letter"))
	code, out, _ = cli(t, env, "dlq", "list", "--uid", "junk")
	if code != 0 || !strings.Contains(out, "MALFORMED") {
		t.Fatalf("dlq list of a malformed dead letter: %d %q", code, out)
	}
	code, out, _ = cli(t, env, "dlq", "replay", "--uid", "junk")
	if code != 0 || !strings.Contains(out, "replayed 0 dead letters, skipped 1 malformed") {
		t.Fatalf("dlq replay of a malformed dead letter: %d %q", code, out)
	}
	if n := harness.StreamMsgs(t, js, wire.DLQStreamName, "dlq.push.junk"); n != 1 {
		t.Fatalf("malformed dead letter count %d, want it left in place", n)
	}

	// Online: one node holds cli-user; nobody holds away.
	code, out, _ = cli(t, env, "online", "cli-user")
	if code != 0 || !strings.Contains(out, "cli-user is online: 1 connections on 1 nodes") {
		t.Fatalf("online: %d %q", code, out)
	}
	code, out, _ = cli(t, env, "online", "--json", "cli-user")
	var answer map[string]any
	if err := json.Unmarshal([]byte(out), &answer); code != 0 || err != nil || answer["uid"] != "cli-user" || answer["conns"] != 1.0 || answer["node"] == "" {
		t.Fatalf("online --json: %d %q (%v)", code, out, err)
	}
	code, out, errOut = cli(t, env, "online", "away")
	if code != 1 || out != "" || !strings.Contains(errOut, "away is offline") {
		t.Fatalf("online for an offline user: %d %q %q", code, out, errOut)
	}

	// A message whose TTL passes while its user is away is not replayed.
	code, out, _ = cli(t, env, "pub", "--ttl", "1s", "--offline", "store", "brief", "stale soon")
	if code != 0 || !strings.Contains(out, "published push.brief") {
		t.Fatalf("pub --ttl: %d %q", code, out)
	}
	harness.WaitStreamMsgs(t, 10*time.Second, js, wire.DLQStreamName, "dlq.push.brief", 1)
	time.Sleep(1100 * time.Millisecond) // the TTL passes
	code, out, _ = cli(t, env, "dlq", "replay", "--uid", "brief")
	if code != 0 || !strings.Contains(out, "replayed 0 dead letters, removed 1 past their Pusher-TTL") {
		t.Fatalf("dlq replay of an expired dead letter: %d %q", code, out)
	}

	code, out, _ = cli(t, env, "kick", "cli-user")
	if code != 0 || !strings.Contains(out, "kick sent") {
		t.Fatalf("kick: %d %q", code, out)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 4001) {
		t.Fatalf("after pusher kick: %v, want 4001", err)
	}
}
