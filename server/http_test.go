package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pusher-io/pusher/server"
)

const testAPIKey = "api-key-for-tests"

func withAPIKey(cfg server.Config) server.Config {
	cfg.APIKey = testAPIKey
	return cfg
}

func httpDo(t testing.TB, method, u, key, contentType, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d with non-JSON body %q", method, u, resp.StatusCode, raw)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	return resp.StatusCode, out
}

func TestHTTPDoorPublishesThroughJetStream(t *testing.T) {
	n := startNode(t, withAPIKey(testConfig(t)))
	c := n.dial(t, "h1")
	base := n.url("")

	status, body := httpDo(t, "POST", base+"/v1/push", testAPIKey, "application/json", `{"uid":"h1","message":"via json"}`)
	if status != http.StatusAccepted || body["seq"] != float64(1) {
		t.Fatalf("POST /v1/push: %d %v", status, body)
	}
	if _, got := read(t, c, 5*time.Second); string(got) != "via json" {
		t.Fatalf("got %q", got)
	}
	status, body = httpDo(t, "GET", base+"/send?uid=h1&message="+url.QueryEscape("via demo /send"), testAPIKey, "", "")
	if status != http.StatusAccepted || body["seq"] != float64(2) {
		t.Fatalf("GET /send: %d %v", status, body)
	}
	if _, got := read(t, c, 5*time.Second); string(got) != "via demo /send" {
		t.Fatalf("got %q", got)
	}
	status, _ = httpDo(t, "POST", base+"/send", testAPIKey, "application/x-www-form-urlencoded", "uid=h1&message=form")
	if status != http.StatusAccepted {
		t.Fatalf("POST /send form: %d", status)
	}
	if _, got := read(t, c, 5*time.Second); string(got) != "form" {
		t.Fatalf("got %q", got)
	}
}

func TestHTTPDoorErrors(t *testing.T) {
	n := startNode(t, withAPIKey(testConfig(t)))
	base := n.url("")
	huge := strings.Repeat("x", 1<<20+1)
	tests := []struct {
		name, method, path, key, contentType, body string
		wantStatus                                 int
	}{
		{"no key", "POST", "/v1/push", "", "application/json", `{"uid":"a","message":"m"}`, 401},
		{"wrong key", "POST", "/v1/push", "nope", "application/json", `{"uid":"a","message":"m"}`, 401},
		{"bad json", "POST", "/v1/push", testAPIKey, "application/json", `{"uid":`, 400},
		{"unknown field", "POST", "/v1/push", testAPIKey, "application/json", `{"uid":"a","message":"m","x":1}`, 400},
		{"wrong content type", "POST", "/v1/push", testAPIKey, "text/plain", `{"uid":"a","message":"m"}`, 415},
		{"uid with dot", "POST", "/v1/push", testAPIKey, "application/json", `{"uid":"a.b","message":"m"}`, 400},
		{"empty uid", "POST", "/v1/push", testAPIKey, "application/json", `{"uid":"","message":"m"}`, 400},
		{"no message", "POST", "/v1/push", testAPIKey, "application/json", `{"uid":"a"}`, 400},
		{"wrong method", "GET", "/v1/push", testAPIKey, "", "", 405},
		{"too large", "POST", "/v1/push", testAPIKey, "application/json", `{"uid":"a","message":"` + huge + `"}`, 413},
		{"send without message", "GET", "/send?uid=a", testAPIKey, "", "", 400},
		{"send bad uid", "GET", "/send?uid=a*&message=m", testAPIKey, "", "", 400},
		{"send too large", "POST", "/send", testAPIKey, "application/x-www-form-urlencoded", "uid=a&message=" + huge, 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := httpDo(t, tt.method, base+tt.path, tt.key, tt.contentType, tt.body)
			if status != tt.wantStatus || body["error"] == "" || body["error"] == nil {
				t.Fatalf("%d %v, want %d with an error", status, body, tt.wantStatus)
			}
		})
	}
	if strings.Contains(n.logs.String(), testAPIKey) {
		t.Fatal("API key in logs")
	}
}

// rawDo sends a request and returns the response with its body as sent.
func rawDo(t testing.TB, method, u, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(raw)
}

// A door asked with a method it does not take answers 405 naming the ones
// it does (Allow), with a JSON error like its other answers.
func TestHTTPDoorWrongMethod(t *testing.T) {
	n := startNode(t, withAPIKey(testConfig(t)))
	tests := []struct{ method, path, wantAllow string }{
		{"GET", "/v1/push", "POST"},
		{"PUT", "/v1/push", "POST"},
		{"DELETE", "/send", "GET, HEAD, POST"},
	}
	for _, tt := range tests {
		resp, body := rawDo(t, tt.method, n.url(tt.path), "")
		var e map[string]string
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != tt.wantAllow ||
			json.Unmarshal([]byte(body), &e) != nil || e["error"] == "" {
			t.Errorf("%s %s: %d, Allow %q, body %q; want 405, Allow %q and a JSON error",
				tt.method, tt.path, resp.StatusCode, resp.Header.Get("Allow"), body, tt.wantAllow)
		}
	}
}

// Error bodies are JSON for programs, not HTML-escaped: a '>' stays '>'.
func TestHTTPErrorsAreNotHTMLEscaped(t *testing.T) {
	n := startNode(t, withAPIKey(testConfig(t)))
	resp, body := rawDo(t, "POST", n.url("/v1/push"), `{"uid":"a>b","message":"m"}`)
	want := `{"error":"invalid uid: contains '.', '*' or '>'"}` + "\n"
	if resp.StatusCode != http.StatusBadRequest || body != want {
		t.Fatalf("%d %q, want 400 %q", resp.StatusCode, body, want)
	}
}

func TestHTTPDoorDisabledWithoutKey(t *testing.T) {
	n := startNode(t, testConfig(t))
	for _, path := range []string{"/v1/push", "/send?uid=a&message=b"} {
		status, body := httpDo(t, "POST", n.url(path), "anything", "application/json", `{}`)
		if status != http.StatusNotFound || body["error"] == nil {
			t.Fatalf("%s: %d %v, want 404 JSON", path, status, body)
		}
	}
}

func TestMetrics(t *testing.T) {
	n := startNode(t, testConfig(t))
	_, js := n.natsClient(t)
	c := n.dial(t, "m1")
	publish(t, js, "push.m1", []byte("counted"))
	read(t, c, 5*time.Second)
	publish(t, js, "push.nobody", []byte("dead"))
	n.logs.Wait(t, 5*time.Second, "push.deadlettered", map[string]any{"uid": "nobody"})
	b := server.ReadBuild()
	if b.GoVersion != runtime.Version() || b.Version == "" || b.Revision == "" {
		t.Fatalf("build %+v: want this Go's version and no empty label", b)
	}
	want := []string{
		"pusher_connections 1",
		`pusher_connects_total{result="ok"} 1`,
		// Every result's series exists from the start.
		`pusher_connects_total{result="unauthorized"} 0`,
		`pusher_connects_total{result="upgrade_failed"} 0`,
		fmt.Sprintf(`pusher_build_info{goversion=%q,revision=%q,version=%q} 1`, b.GoVersion, b.Revision, b.Version),
		`pusher_messages_total{outcome="delivered",reason=""} 1`,
		`pusher_messages_total{outcome="deadlettered",reason="offline"} 1`,
		"pusher_delivery_latency_seconds_count 1",
		"pusher_confirm_latency_seconds_count 1",
		"pusher_unresponsive_closes_total 0",
		"pusher_inflight_messages 0",
		"pusher_consumer_pending",
		"pusher_consumer_ack_pending",
		"pusher_nats_connected 1",
		"go_goroutines",
		"process_resident_memory_bytes",
	}
	// The delivery settles when the client's pong arrives, which may be
	// after the dead letter was logged.
	waitFor(t, 5*time.Second, "every series", func() error {
		resp, err := http.Get(n.url("/metrics"))
		if err != nil {
			return err
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, w := range want {
			if !strings.Contains(string(raw), w) {
				return fmt.Errorf("/metrics lacks %q", w)
			}
		}
		return nil
	})
}

func TestHTTPDoorIdempotencyKeyStoresOnce(t *testing.T) {
	n := startNode(t, withAPIKey(testConfig(t)))
	c := n.dial(t, "idem")
	post := func() (int, map[string]any) {
		req, err := http.NewRequest("POST", n.url("/v1/push"), strings.NewReader(`{"uid":"idem","message":"once"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testAPIKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "order-42")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	s1, b1 := post()
	s2, b2 := post() // a retried request
	if s1 != http.StatusAccepted || s2 != http.StatusAccepted || b1["seq"] != b2["seq"] || b2["duplicate"] != true {
		t.Fatalf("first %d %v, retry %d %v: want the same seq and duplicate:true", s1, b1, s2, b2)
	}
	if _, got := read(t, c, 5*time.Second); string(got) != "once" {
		t.Fatalf("got %q", got)
	}
	// The retry stored nothing: the next frame is the next message.
	_, js := n.natsClient(t)
	publish(t, js, "push.idem", []byte("next"))
	if _, got := read(t, c, 5*time.Second); string(got) != "next" {
		t.Fatalf("after an idempotent retry got %q, want next", got)
	}
}

func TestUIOffServesNoPage(t *testing.T) {
	off := testConfig(t)
	off.UIOff = true
	n := startNode(t, off)
	resp, err := http.Get(n.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET / with PUSHER_UI=false: %d, want 404", resp.StatusCode)
	}
	js, err := http.Get(n.url("/pusher.js"))
	if err != nil {
		t.Fatal(err)
	}
	js.Body.Close()
	if js.StatusCode != http.StatusOK || !strings.Contains(js.Header.Get("Content-Type"), "javascript") {
		t.Fatalf("GET /pusher.js with PUSHER_UI=false: %d %q, want the client", js.StatusCode, js.Header.Get("Content-Type"))
	}
	on := startNode(t, testConfig(t))
	resp, err = http.Get(on.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / by default: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
