package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/natsserver"
	"github.com/pusher-io/pusher/wire"
)

// cli runs pusher with args and env as main would, with nothing on stdin,
// and returns the exit code with what it printed.
func cli(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return cliWithStdin(t, env, nil, args...)
}

// cliWithStdin is cli with stdin; a terminal makes pusher interactive.
func cliWithStdin(t *testing.T, env map[string]string, stdin io.Reader, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, args, func(k string) string { return env[k] }, stdin, &out, &errOut)
	code = exitCode(err, &errOut)
	return code, out.String(), errOut.String()
}

// terminal is stdin as a person at a terminal: what they type.
type terminal struct{ io.Reader }

func (terminal) IsTerminal() bool { return true }

// Only a terminal makes pusher interactive: not /dev/null, not a pipe.
func TestIsTerminal(t *testing.T) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	for name, in := range map[string]io.Reader{"/dev/null": null, "pipe": r, "reader": strings.NewReader("y\n"), "nil": nil} {
		if isTerminal(in) {
			t.Errorf("%s taken for a terminal", name)
		}
	}
	if !isTerminal(terminal{strings.NewReader("y\n")}) {
		t.Error("a terminal not taken for one")
	}
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
		{name: "unknown command", give: []string{"frobnicate"}, wantCode: 2, wantErr: `unknown command "frobnicate" (see pusher --help)`},
		{name: "unknown flag", give: []string{"serve", "--nope"}, wantCode: 2, wantErr: "pusher: unknown flag --nope (see pusher serve --help)"},
		{name: "unknown flag, no command", give: []string{"--bogus"}, wantCode: 2, wantErr: "pusher: unknown flag --bogus (see pusher serve --help)"},
		{name: "duration hint", give: []string{"token", "--uid", "1", "--ttl", "5"}, wantCode: 2,
			wantErr: `pusher: --ttl wants a duration such as 5m, got "5" (see pusher token --help)`},
		{name: "integer hint", give: []string{"serve", "--max-deliver", "many"}, wantCode: 2, wantErr: `--max-deliver wants an integer such as 5, got "many"`},
		{name: "bool hint", give: []string{"online", "--json=maybe", "u"}, wantCode: 2, wantErr: `--json wants true or false, got "maybe" (see pusher online --help)`},
		{name: "missing value", give: []string{"pub", "1", "m", "--id"}, wantCode: 2, wantErr: "--id wants a value (see pusher pub --help)"},
		{name: "dash argument", give: []string{"pub", "1", "-5"}, wantCode: 2, wantErr: "pusher: unknown flag -5; to pass it as an argument, put -- before it (see pusher pub --help)"},
		{name: "bad env value", env: map[string]string{"PUSHER_MAX_DELIVER": "many"}, give: []string{"serve"}, wantCode: 2, wantErr: "PUSHER_MAX_DELIVER"},
		{name: "bad env values, one line", env: map[string]string{"PUSHER_MAX_DELIVER": "many", "PUSHER_UI": "maybe"}, give: []string{"serve"}, wantCode: 2, wantErr: "PUSHER_UI"},
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
		{name: "dlq without subcommand", give: []string{"dlq"}, wantCode: 2, wantErr: "list, replay or delete (see pusher dlq --help)"},
		{name: "dlq list bad flag", give: []string{"dlq", "list", "--bogus"}, wantCode: 2, wantErr: "(see pusher dlq list --help)"},
		{name: "replay needs uid or all", give: []string{"dlq", "replay"}, wantCode: 2, wantErr: "or --all to replay every online user's dead letters (see pusher dlq replay --help)"},
		{name: "replay uid and all", give: []string{"dlq", "replay", "--uid", "a", "--all"}, wantCode: 2, wantErr: "not both"},
		{name: "delete needs seq or uid", give: []string{"dlq", "delete", "--yes"}, wantCode: 2, wantErr: "give --seq N or --uid U (see pusher dlq delete --help)"},
		{name: "delete seq and uid", give: []string{"dlq", "delete", "--seq", "3", "--uid", "a", "--yes"}, wantCode: 2, wantErr: "give --seq N or --uid U"},
		{name: "delete older-than with seq", give: []string{"dlq", "delete", "--seq", "3", "--older-than", "1h", "--yes"}, wantCode: 2, wantErr: "--older-than takes a positive duration, with --uid"},
		{name: "delete without a terminal or --yes", give: []string{"dlq", "delete", "--uid", "a"}, wantCode: 2, wantErr: "add --yes"},
		{name: "kick needs uid", give: []string{"kick"}, wantCode: 2, wantErr: "one uid (see pusher kick --help)"},
		{name: "version takes no arguments", give: []string{"version", "now"}, wantCode: 2, wantErr: "(see pusher version --help)"},
		{name: "NATS unreachable", env: map[string]string{"PUSHER_NATS_URL": "nats://127.0.0.1:1"}, give: []string{"pub", "123", "m"}, wantCode: 1, wantErr: "connect to NATS at nats://127.0.0.1:1"},
		{name: "NATS where PUSHER_NATS_LISTEN says", env: map[string]string{"PUSHER_NATS_LISTEN": "127.0.0.1:1"}, give: []string{"pub", "123", "m"}, wantCode: 1, wantErr: "connect to NATS at nats://127.0.0.1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, tt.env, tt.give...)
			if code != tt.wantCode || !strings.Contains(out, tt.wantOut) || !strings.Contains(errOut, tt.wantErr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout ~%q, stderr ~%q",
					code, out, errOut, tt.wantCode, tt.wantOut, tt.wantErr)
			}
			if code != 0 && (strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "pusher: ")) {
				t.Fatalf("stderr %q: want one line", errOut)
			}
			if code == 2 && (!quietStdout(tt.give, out) || !strings.HasSuffix(errOut, " --help)\n")) {
				t.Fatalf("usage error: stdout %q, stderr %q; want no usage on stdout, and a pointer to --help", out, errOut)
			}
			if strings.Contains(out+errOut, "hunter2-secret") {
				t.Fatal("a secret was printed")
			}
		})
	}
}

// quietStdout reports whether a failed command's stdout holds what it
// may: nothing, or for serve, whose stdout is its log, JSON log lines only.
func quietStdout(args []string, out string) bool {
	serve := len(args) == 0 || args[0] == "serve" || strings.HasPrefix(args[0], "-")
	if !serve {
		return out == ""
	}
	for line := range strings.Lines(out) {
		if !json.Valid([]byte(line)) {
			return false
		}
	}
	return true
}

// --help prints the command's usage once, naming the program, with its
// flags spelled as the README spells them, on stdout; exit 0.
func TestCLIHelpPrintsUsageOnce(t *testing.T) {
	tests := []struct {
		give     []string
		wantLine string // a line of the usage
	}{
		{[]string{"serve", "--help"}, "Usage: pusher [serve] [flags]"},
		{[]string{"token", "--help"}, "Usage: pusher token --uid U [--ttl 24h]"},
		{[]string{"token", "-h"}, "  --ttl duration"},
		{[]string{"pub", "--help"}, "Usage: pusher pub [--ttl D] [--offline drop|store] [--id ID] U MESSAGE"},
		{[]string{"pub", "123", "--help"}, "  --nats-url string"},
		{[]string{"help", "pub"}, "Usage: pusher pub [--ttl D] [--offline drop|store] [--id ID] U MESSAGE"},
		{[]string{"kick", "--help"}, "Usage: pusher kick U"},
		{[]string{"online", "--help"}, "Usage: pusher online [--json] U"},
		{[]string{"version", "--help"}, "Usage: pusher version   (or pusher --version)"},
		{[]string{"dlq", "--help"}, "  pusher dlq delete (--seq N | --uid U) [--older-than D] [--yes]"},
		{[]string{"dlq", "list", "--help"}, "Usage: pusher dlq list [--uid U] [--json]"},
		{[]string{"dlq", "replay", "--help"}, "Usage: pusher dlq replay (--uid U | --all) [--force]"},
		{[]string{"dlq", "delete", "--help"}, "  --older-than duration"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.give, " "), func(t *testing.T) {
			code, out, errOut := cli(t, nil, tt.give...)
			if code != 0 || errOut != "" || strings.Count(out, "Usage:") != 1 {
				t.Fatalf("exit %d, stderr %q, stdout:\n%s\nwant exit 0 and the usage once", code, errOut, out)
			}
			if !strings.Contains(out, tt.wantLine+"\n") {
				t.Fatalf("stdout lacks the line %q:\n%s", tt.wantLine, out)
			}
		})
	}
}

func TestCLIVersion(t *testing.T) {
	code, out, errOut := cli(t, nil, "version")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || errOut != "" || len(lines) != 3 || !strings.HasPrefix(lines[0], "pusher ") ||
		!strings.HasPrefix(lines[1], "revision ") || !strings.HasPrefix(lines[2], runtime.Version()+" ") {
		t.Fatalf("version: exit %d, stderr %q, stdout:\n%s", code, errOut, out)
	}
	code, again, _ := cli(t, nil, "--version")
	if code != 0 || again != out {
		t.Fatalf("--version: exit %d\n%s\nwant what version printed", code, again)
	}
}

// A token verifies, whatever the order of its flags and arguments (flags
// may follow the positional ones).
func TestCLITokenVerifies(t *testing.T) {
	v, err := auth.NewVerifier(auth.Config{HMACSecret: []byte(testSecret)})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"token", "--uid", "123", "--ttl", "1h"}, {"token", "123", "--ttl", "1h"}} {
		code, out, errOut := cli(t, map[string]string{"JWT_SECRET": testSecret}, args...)
		if code != 0 {
			t.Fatalf("%q: exit %d, %q", args, code, errOut)
		}
		claims, err := v.Verify(strings.TrimSpace(out))
		if err != nil || claims.UID != "123" || time.Until(claims.ExpiresAt) > time.Hour {
			t.Fatalf("%q: token %+v, %v", args, claims, err)
		}
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

// Client commands find the embedded NATS where PUSHER_NATS_LISTEN puts it.
func TestClientNATSURL(t *testing.T) {
	tests := []struct{ give, want string }{
		{"", "nats://127.0.0.1:4222"},
		{"127.0.0.1:5222", "nats://127.0.0.1:5222"},
		{"localhost:5222", "nats://localhost:5222"},
		{":5222", "nats://127.0.0.1:5222"},
		{"0.0.0.0:5222", "nats://127.0.0.1:5222"},
		{"[::]:5222", "nats://127.0.0.1:5222"},
		{"[::1]:5222", "nats://[::1]:5222"},
	}
	for _, tt := range tests {
		if got := clientNATSURL(func(string) string { return tt.give }); got != tt.want {
			t.Errorf("PUSHER_NATS_LISTEN=%q: %q, want %q", tt.give, got, tt.want)
		}
	}
}

// listenEnv points the client commands at n the way a person does who
// moved the embedded NATS: PUSHER_NATS_LISTEN, no PUSHER_NATS_URL.
func listenEnv(n *node) map[string]string {
	return map[string]string{"PUSHER_NATS_LISTEN": strings.TrimPrefix(n.natsURL, "nats://")}
}

func TestCLIAgainstARunningPusher(t *testing.T) {
	p := startNode(t)
	env := listenEnv(p)
	c := harness.DialWS(t, p.httpAddr, "cli-user")

	code, out, _ := cli(t, env, "pub", "cli-user", "from the CLI", "--id", "m1")
	if code != 0 || !strings.Contains(out, "published push.cli-user seq 1") {
		t.Fatalf("pub: %d %q", code, out)
	}
	if _, got := harness.Read(t, c, 5*time.Second); string(got) != "from the CLI" {
		t.Fatalf("got %q", got)
	}
	code, out, _ = cli(t, env, "pub", "cli-user", "--", "-dash")
	if code != 0 || !strings.Contains(out, "published push.cli-user seq 2") {
		t.Fatalf("pub -- -dash: %d %q", code, out)
	}
	if _, got := harness.Read(t, c, 5*time.Second); string(got) != "-dash" {
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
	// SEQ is the dead letter's in PUSH_DLQ, ORIGINAL SEQ the message's in PUSH.
	if fields := strings.Fields(strings.Split(out, "\n")[1]); len(fields) < 4 || fields[0] != "1" || fields[1] != "3" || fields[2] != "away" {
		t.Fatalf("dlq list first row %q, want SEQ 1, ORIGINAL SEQ 3, UID away", fields)
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
	if first["uid"] != "away" || first["reason"] != "offline" || first["data"] != "first  line\nsecond line" ||
		first["original_subject"] != "push.away" || first["original_seq"] != 3.0 {
		t.Fatalf("json line %v", first)
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
	if code != 0 || !strings.Contains(out, "cli-user is online: 1 connection on 1 node") {
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

	// A message whose TTL passes while its user is away is not replayed,
	// and is removed even though its user is offline.
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

	code, out, _ = cli(t, env, "kick", "away")
	if code != 0 || out != "no connection of away on any node (1 node answered)\n" {
		t.Fatalf("kick of a user not connected: %d %q", code, out)
	}
	code, out, _ = cli(t, env, "kick", "cli-user")
	if code != 0 || !strings.HasPrefix(out, "closed 1 connection of cli-user on 1 node\n  ") || !strings.HasSuffix(out, "\t1\n") {
		t.Fatalf("kick: %d %q", code, out)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 4001) {
		t.Fatalf("after pusher kick: %v, want 4001", err)
	}
}

// With no pusher on the NATS, a kick closes nothing and says nobody answered.
func TestCLIKickWithoutPusher(t *testing.T) {
	srv, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	code, out, errOut := cli(t, map[string]string{"PUSHER_NATS_URL": srv.ClientURL()}, "kick", "u1")
	if code != 0 || out != "no connection of u1 on any node (no pusher node answered)\n" {
		t.Fatalf("kick: %d %q %q", code, out, errOut)
	}
}

// deadLetter stores a dead letter as pusher writes one, for a user who
// was online when its deliveries failed (so no connect replays it).
func deadLetter(t *testing.T, js jetstream.JetStream, uid, data string) uint64 {
	t.Helper()
	m := nats.NewMsg(wire.DLQSubject(uid))
	m.Header.Set(wire.HeaderReason, wire.ReasonMaxDeliver)
	m.Header.Set(wire.HeaderOriginalSubject, wire.PushSubject(uid))
	m.Data = []byte(data)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// dlqSeqs are uid's dead letters' PUSH_DLQ sequences.
func dlqSeqs(t *testing.T, env map[string]string, uid string) []float64 {
	t.Helper()
	code, out, errOut := cli(t, env, "dlq", "list", "--json", "--uid", uid)
	if code != 0 {
		t.Fatalf("dlq list: %d %q", code, errOut)
	}
	var seqs []float64
	for line := range strings.Lines(out) {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, l["seq"].(float64))
	}
	return seqs
}

// dlq replay republishes only to users who are online; for the others it
// leaves the dead letters where they are, unless forced, and --all says
// what it left and why.
func TestCLIDLQReplayOnlyToOnlineUsers(t *testing.T) {
	p := startNode(t)
	env := listenEnv(p)
	_, js := harness.Connect(t, p.natsURL)
	here := harness.DialWS(t, p.httpAddr, "here")
	deadLetter(t, js, "here", "h1")
	deadLetter(t, js, "here", "h2")
	harness.Publish(t, js, "push.away", []byte("a1"))
	harness.Publish(t, js, "push.a.b", []byte("nobody's"))
	harness.Publish(t, js, "dlq.push.junk", []byte("not a dead letter"))
	harness.WaitStreamMsgs(t, 10*time.Second, js, wire.DLQStreamName, wire.DLQSubjects, 5)
	awaySeqs := dlqSeqs(t, env, "away")

	code, out, errOut := cli(t, env, "dlq", "replay", "--all")
	want := "replayed 2 dead letters, skipped 1 malformed, skipped 1 bad_subject (they name no user), left 1 dead letter of 1 offline user in place\n"
	if code != 0 || out != want {
		t.Fatalf("replay --all: exit %d, stdout %q, stderr %q; want %q", code, out, errOut, want)
	}
	for _, w := range []string{"h1", "h2"} {
		if _, got := harness.Read(t, here, 5*time.Second); string(got) != w {
			t.Fatalf("got %q, want %q", got, w)
		}
	}
	harness.WaitStreamMsgs(t, 10*time.Second, js, wire.DLQStreamName, "dlq.push.here", 0)

	code, out, errOut = cli(t, env, "dlq", "replay", "--uid", "away")
	if code != 1 || out != "replayed 0 dead letters, left 1 dead letter of 1 offline user in place\n" ||
		errOut != "pusher: away is offline: 1 dead letter left in PUSH_DLQ (--force replays anyway)\n" {
		t.Fatalf("replay to an offline user: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if got := dlqSeqs(t, env, "away"); len(got) != 1 || got[0] != awaySeqs[0] {
		t.Fatalf("away's dead letters %v, want %v untouched", got, awaySeqs)
	}

	// Forced, it goes out and, away still being away, comes back as a new
	// dead letter.
	code, out, _ = cli(t, env, "dlq", "replay", "--uid", "away", "--force")
	if code != 0 || out != "replayed 1 dead letter\n" {
		t.Fatalf("replay --force: %d %q", code, out)
	}
	harness.WaitFor(t, 10*time.Second, "away's dead letter stored again", func() error {
		if got := dlqSeqs(t, env, "away"); len(got) != 1 || got[0] == awaySeqs[0] {
			return fmt.Errorf("away's dead letters %v", got)
		}
		return nil
	})
}

// dlq delete removes dead letters by sequence or by user, after a yes on
// the terminal or with --yes.
func TestCLIDLQDelete(t *testing.T) {
	p := startNode(t)
	env := listenEnv(p)
	_, js := harness.Connect(t, p.natsURL)
	s1 := deadLetter(t, js, "old", "o1")
	deadLetter(t, js, "old", "o2")
	s3 := deadLetter(t, js, "other", "x1")

	code, out, errOut := cliWithStdin(t, env, terminal{strings.NewReader("n\n")}, "dlq", "delete", "--uid", "old")
	if code != 1 || out != "" || errOut != "delete 2 dead letters of old? [y/N] pusher: not confirmed: nothing deleted\n" {
		t.Fatalf("answered n: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if n := len(dlqSeqs(t, env, "old")); n != 2 {
		t.Fatalf("%d dead letters of old left, want 2", n)
	}
	code, out, _ = cli(t, env, "dlq", "delete", "--uid", "old", "--older-than", "1h", "--yes")
	if code != 0 || out != "no dead letters of old stored more than 1h0m0s ago: nothing to delete\n" {
		t.Fatalf("--older-than 1h: %d %q", code, out)
	}
	code, out, errOut = cliWithStdin(t, env, terminal{strings.NewReader("y\n")}, "dlq", "delete", "--uid", "old")
	if code != 0 || out != "deleted 2 dead letters\n" || !strings.HasPrefix(errOut, "delete 2 dead letters of old? [y/N] ") {
		t.Fatalf("answered y: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if n := len(dlqSeqs(t, env, "old")); n != 0 {
		t.Fatalf("%d dead letters of old left, want none", n)
	}

	code, out, errOut = cli(t, env, "dlq", "delete", "--seq", fmt.Sprint(s1))
	if code != 2 || !strings.Contains(errOut, "add --yes") {
		t.Fatalf("--seq without a terminal or --yes: %d %q %q", code, out, errOut)
	}
	code, out, errOut = cli(t, env, "dlq", "delete", "--seq", fmt.Sprint(s1), "--yes")
	if code != 1 || errOut != fmt.Sprintf("pusher: no dead letter %d in PUSH_DLQ\n", s1) {
		t.Fatalf("--seq of a deleted one: %d %q %q", code, out, errOut)
	}
	code, out, errOut = cliWithStdin(t, env, terminal{strings.NewReader("yes\n")}, "dlq", "delete", "--seq", fmt.Sprint(s3))
	if code != 0 || out != "deleted 1 dead letter\n" ||
		!strings.HasPrefix(errOut, fmt.Sprintf("delete dead letter %d (uid other, max_deliver, 2 bytes)? [y/N] ", s3)) {
		t.Fatalf("--seq: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	harness.WaitStreamMsgs(t, 5*time.Second, js, wire.DLQStreamName, wire.DLQSubjects, 0)
}
