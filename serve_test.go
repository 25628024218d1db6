package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// A serve that fails says why on stdout too, as one JSON line
// (pusher.failed), for log shippers that read stdout only; the one-line
// error on stderr stays. Other commands' failures log nothing.
func TestServeFailureIsLoggedOnStdout(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	_, busyPort, _ := net.SplitHostPort(busy.Addr().String())
	secret := map[string]string{"JWT_SECRET": testSecret}
	tests := []struct {
		name      string
		env       map[string]string
		give      []string
		wantCode  int
		wantError string // in the line's error; "" for no line at all
		wantNode  string // the line's node; "" for none
	}{
		{name: "busy port", env: secret, give: []string{"serve", "--http-addr", busy.Addr().String()},
			wantCode: 1, wantError: "address already in use", wantNode: host + ":" + busyPort},
		{name: "bad env value", env: map[string]string{"PUSHER_MAX_DELIVER": "many"}, give: []string{"serve"},
			wantCode: 2, wantError: "PUSHER_MAX_DELIVER"},
		{name: "bad log level, named node", env: map[string]string{"PUSHER_LOG_LEVEL": "loud", "PUSHER_NODE_NAME": "web-7"}, give: nil,
			wantCode: 2, wantError: "loud", wantNode: "web-7"},
		{name: "help", give: []string{"serve", "--help"}},
		{name: "another command", give: []string{"pub", "123"}, wantCode: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := cli(t, tt.env, tt.give...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.wantCode, errOut)
			}
			var failed []map[string]any
			for _, l := range strings.Split(out, "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "pusher.failed" {
					failed = append(failed, m)
				}
			}
			if tt.wantError == "" {
				if len(failed) != 0 {
					t.Fatalf("logged %v, want no pusher.failed", failed)
				}
				return
			}
			if len(failed) != 1 {
				t.Fatalf("%d pusher.failed lines in stdout %q, want 1", len(failed), out)
			}
			line := failed[0]
			if e, _ := line["error"].(string); line["level"] != "error" || !strings.Contains(e, tt.wantError) {
				t.Errorf("line %v, want level error and an error with %q", line, tt.wantError)
			}
			if ts, _ := line["ts"].(string); ts == "" {
				t.Errorf("line %v has no ts", line)
			} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
				t.Errorf("ts: %v", err)
			}
			if node, has := line["node"]; tt.wantNode != "" && node != tt.wantNode || tt.wantNode == "" && has {
				t.Errorf("node %v, want %q", node, tt.wantNode)
			}
			if !strings.Contains(errOut, tt.wantError) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
				t.Errorf("stderr %q, want one line naming %q", errOut, tt.wantError)
			}
		})
	}
}

// PUSHER_TRUSTED_PROXIES reaches the node's Config; a list that is not
// addresses and prefixes is a usage error.
func TestTrustedProxiesFlag(t *testing.T) {
	f, c := newServeFlags(&environ{getenv: func(k string) string {
		return map[string]string{"PUSHER_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7"}[k]
	}})
	cfg, err := c.parse(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.TrustedProxies.ClientAddr("10.1.2.3:80", http.Header{"X-Forwarded-For": {"198.51.100.4"}}); got != "198.51.100.4" {
		t.Fatalf("behind a trusted proxy, remote %q, want the forwarded client", got)
	}
	code, _, errOut := cli(t, map[string]string{"PUSHER_TRUSTED_PROXIES": "10.0.0.0/8, lb.internal"}, "serve")
	if code != 2 || !strings.Contains(errOut, "--trusted-proxies") {
		t.Fatalf("exit %d, stderr %q; want 2 naming --trusted-proxies", code, errOut)
	}
}
