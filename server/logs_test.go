package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/api"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/logging"
	"github.com/pusher-io/pusher/wire"
	"github.com/pusher-io/pusher/ws"
)

// The logs are what a log stack indexes: these tests run a node with the
// logger pusher runs with (at debug, so every line is seen) and read the
// lines as the stack would.

// forwardedFor is the client address a trusted proxy (loopback, in these
// tests) says it forwards for.
const forwardedFor = "198.51.100.4"

// realLogger is pusher's own logger (logging.New), at debug, unbuffered.
func realLogger(w io.Writer) *zap.Logger {
	log, _, err := logging.New(w, logging.Config{Level: "debug"})
	if err != nil {
		panic(err) // a constant config: cannot fail
	}
	return log
}

// dialVia connects uid as a reading client through a proxy that says it
// forwards for forwardedFor (the test is the proxy).
func (n *node) dialVia(t testing.TB, uid string, subprotocols ...string) *client {
	t.Helper()
	d := *websocket.DefaultDialer
	d.Subprotocols = subprotocols
	h := http.Header{"Authorization": {"Bearer " + token(t, uid, time.Hour)}, "X-Forwarded-For": {"6.6.6.6, " + forwardedFor}}
	c, resp, err := d.Dial(n.wsURL(""), h)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", uid, err, resp)
	}
	t.Cleanup(func() { _ = c.Close() })
	return harness.NewPump(c)
}

// pushVia publishes through the HTTP door as a backend behind the proxy.
func (n *node) pushVia(t testing.TB, key, body string) (int, uint64) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, n.url("/v1/push"), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("X-Forwarded-For", forwardedFor)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Seq uint64 }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.Seq
}

// TestLogsFollowAMessageAndKeepTheirTypes runs a node through connects
// (one refused), deliveries, an HTTP publish, a retry, a dead letter and
// its replay, a bad subject, a kick, a client's close and a shutdown, and
// then reads every line it logged: each carries node; each field has one
// JSON type on every line it appears on (a log stack maps a field's type
// once), and a duration is a float; the message published over HTTP can
// be followed by seq into the DLQ and out again.
func TestLogsFollowAMessageAndKeepTheirTypes(t *testing.T) {
	cfg := withAPIKey(confirmConfig(t, ws.ConfirmPong))
	cfg.QuietDelivered = false
	var err error
	if cfg.TrustedProxies, err = wire.ParseTrustedProxies("127.0.0.0/8, ::1"); err != nil {
		t.Fatal(err)
	}
	n := startNodeLogging(t, cfg, realLogger)
	nc, js := n.natsClient(t)
	ready := n.logs.Wait(t, 5*time.Second, "pusher.ready", nil)
	if v, _ := ready["version"].(string); v == "" {
		t.Errorf("pusher.ready %v has no version", ready)
	}

	// Refused, then connected, through the proxy.
	_, resp, err := websocket.DefaultDialer.Dial(n.wsURL("token=garbage"), http.Header{"X-Forwarded-For": {forwardedFor}})
	if err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("garbage token: %v %v", err, resp)
	}
	n.logs.Wait(t, 5*time.Second, "auth.rejected", map[string]any{"remote": forwardedFor})
	alice := n.dialVia(t, "alice")
	n.logs.Wait(t, 5*time.Second, "ws.connected", map[string]any{"uid": "alice", "remote": forwardedFor})
	publish(t, js, "push.alice", []byte("hi"))
	read(t, alice, 5*time.Second)
	n.logs.Wait(t, 5*time.Second, "push.delivered", map[string]any{"uid": "alice"})

	// Published over HTTP to a client that never acks: 4004, a retry,
	// offline, dead-lettered; replayed when bob is back, and acked.
	forgetful := n.dialV1(t, "bob")
	status, seq := n.pushVia(t, testAPIKey, `{"uid":"bob","message":"follow me"}`)
	if status != http.StatusAccepted {
		t.Fatalf("publish: %d", status)
	}
	n.logs.Wait(t, 5*time.Second, "http.published", map[string]any{"uid": "bob", "seq": seq, "remote": forwardedFor, "key_id": api.KeyID(testAPIKey)})
	readEnvelope(t, forgetful, 5*time.Second)
	n.logs.Wait(t, 10*time.Second, "push.retry", map[string]any{"seq": seq, "reason": wire.ReasonUnconfirmed})
	dead := n.logs.Wait(t, 10*time.Second, "push.deadlettered", map[string]any{"seq": seq, "reason": wire.ReasonOffline})
	back := n.dialV1(t, "bob")
	e := readEnvelope(t, back, 10*time.Second)
	sendAck(t, back, e.Seq)
	replayed := n.logs.Wait(t, 10*time.Second, "push.delivered", map[string]any{"uid": "bob", "original_seq": seq})
	if replayed["replay_of"] != dead["dlq_seq"] || replayed["seq"] == dead["seq"] || dead["dlq_seq"] == nil {
		t.Errorf("replayed delivery %v does not name dead letter %v", replayed, dead)
	}

	// What the door refuses, and a subject that names no user.
	if status, _ := n.pushVia(t, testAPIKey, `{"uid":"a.b","message":"x"}`); status != http.StatusBadRequest {
		t.Fatalf("bad uid: %d", status)
	}
	if status, _ := n.pushVia(t, "wrong-key", `{"uid":"bob","message":"x"}`); status != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", status)
	}
	refused := n.logs.Wait(t, 5*time.Second, "http.publish_failed", map[string]any{"status": 401, "remote": forwardedFor})
	if _, has := refused["key_id"]; has || strings.Contains(n.logs.String(), "wrong-key") || strings.Contains(n.logs.String(), testAPIKey) {
		t.Errorf("a presented API key, or a digest of a wrong one, was logged: %v", refused)
	}
	n.logs.Wait(t, 5*time.Second, "http.publish_failed", map[string]any{"status": 400, "key_id": api.KeyID(testAPIKey)})
	publish(t, js, "push.a.b", []byte("nobody"))
	n.logs.Wait(t, 5*time.Second, "push.deadlettered", map[string]any{"reason": wire.ReasonBadSubject, "subject": "push.a.b"})

	// Closes: a kick, a client's own, a shutdown.
	if _, err := nc.Request("pusher.kick.alice", nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	n.logs.Wait(t, 5*time.Second, "ws.closed", map[string]any{"uid": "alice", "code": wire.CloseKicked, "by": "server"})
	carol := n.dial(t, "carol")
	if err := carol.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	n.logs.Wait(t, 5*time.Second, "ws.closed", map[string]any{"uid": "carol", "by": "client"})
	n.stop(t)
	n.logs.Wait(t, 5*time.Second, "ws.closed", map[string]any{"uid": "bob", "code": wire.CloseGoingAway, "by": "server"})
	n.logs.Wait(t, 5*time.Second, "pusher.stopped", nil)

	checkLines(t, n.logs.String(), n.Name())
}

// checkLines fails t unless every line is a JSON object naming node, and
// every field keeps one JSON type (string, int, float, bool, object,
// array) across the lines, durations (*_ms) being floats.
func checkLines(t *testing.T, raw, node string) {
	t.Helper()
	type seen struct{ kind, example string }
	kinds := map[string]seen{}
	events := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(raw), "\n") {
		dec := json.NewDecoder(strings.NewReader(line))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Errorf("not a JSON object: %s", line)
			continue
		}
		events[fmt.Sprint(m["msg"])] = true
		if m["node"] != node {
			t.Errorf("node %v, want %q: %s", m["node"], node, line)
		}
		for k, v := range m {
			kind := jsonKind(v)
			if strings.HasSuffix(k, "_ms") && kind != "float" {
				t.Errorf("duration %s is %s, want float: %s", k, kind, line)
			}
			if s, ok := kinds[k]; ok && s.kind != kind {
				t.Errorf("field %s is %s in %s and %s in %s", k, s.kind, s.example, kind, line)
				continue
			}
			kinds[k] = seen{kind, line}
		}
	}
	// The run must have logged what the checks are about.
	for _, ev := range []string{"pusher.ready", "nats.server", "auth.rejected", "ws.connected", "ws.closed", "ws.unresponsive",
		"push.delivered", "push.retry", "push.deadlettered", "dlq.replayed", "ws.kicked", "http.published",
		"http.publish_failed", "pusher.stopping", "pusher.stopped"} {
		if !events[ev] {
			t.Errorf("no %s line", ev)
		}
	}
	names := make([]string, 0, len(kinds))
	for k, s := range kinds {
		names = append(names, k+":"+s.kind)
	}
	sort.Strings(names)
	t.Logf("%d events, fields: %s", len(events), strings.Join(names, " "))
}

// jsonKind is v's JSON type as a log stack maps it; a number with a
// fraction or an exponent is a float, else an int.
func jsonKind(v any) string {
	switch v := v.(type) {
	case string:
		return "string"
	case bool:
		return "bool"
	case nil:
		return "null"
	case json.Number:
		if bytes.ContainsAny([]byte(v), ".eE") {
			return "float"
		}
		return "int"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}
