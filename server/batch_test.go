package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pusher-io/pusher/wire"
)

// batchResult is one item of a batch's answer.
type batchResult struct {
	Seq       uint64 `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	Error     string `json:"error"`
}

// postBatch POSTs body to /v1/push with extra headers and decodes the
// answer's results (nil when the answer has none).
func (n *node) postBatch(t testing.TB, body string, headers map[string]string) (int, []batchResult, string) {
	t.Helper()
	req, err := http.NewRequest("POST", n.url("/v1/push"), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Results []batchResult `json:"results"`
		Error   string        `json:"error"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("batch answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, out.Results, out.Error
}

// A batch is stored in order, each message's answer in its place: the
// valid ones get increasing sequences and reach their users in that
// order, the refused ones an error that says why, and the status says
// whether all, some or none were stored.
func TestHTTPBatchAnswersEachMessageInPlace(t *testing.T) {
	n := startNode(t, withAPIKey(testConfig(t)))
	a, b := n.dial(t, "ba"), n.dial(t, "bb")
	status, res, _ := n.postBatch(t, `[
		{"uid":"ba","message":"a1"},
		{"uid":"bad.uid","message":"x"},
		{"uid":"bb","message":"b1"},
		{"uid":"ba"},
		"not an object",
		{"uid":"ba","message":"a2","extra":1},
		{"uid":"ba","message":"a3"}]`, nil)
	if status != http.StatusMultiStatus || len(res) != 7 {
		t.Fatalf("mixed batch: %d %+v, want 207 with 7 results", status, res)
	}
	for _, i := range []int{1, 3, 4, 5} {
		if res[i].Seq != 0 || res[i].Error == "" {
			t.Errorf("item %d: %+v, want an error and no seq", i, res[i])
		}
	}
	if !strings.Contains(res[1].Error, "invalid uid") || !strings.Contains(res[3].Error, "message is required") ||
		!strings.Contains(res[4].Error, "item must be a JSON object") {
		t.Errorf("errors do not say why: %+v", res)
	}
	if res[0].Seq == 0 || res[2].Seq <= res[0].Seq || res[6].Seq <= res[2].Seq {
		t.Fatalf("stored items' seqs not increasing in order: %+v", res)
	}
	for _, want := range []string{"a1", "a3"} {
		if _, got := read(t, a, 5*time.Second); string(got) != want {
			t.Fatalf("ba got %q, want %q", got, want)
		}
	}
	if _, got := read(t, b, 5*time.Second); string(got) != "b1" {
		t.Fatalf("bb got %q", got)
	}

	var all []string
	for i := range 100 {
		all = append(all, fmt.Sprintf(`{"uid":"bb","message":"m%d"}`, i))
	}
	status, res, _ = n.postBatch(t, "["+strings.Join(all, ",")+"]", nil)
	if status != http.StatusAccepted || len(res) != 100 {
		t.Fatalf("batch of 100: %d with %d results", status, len(res))
	}
	for i := range 100 {
		if _, got := read(t, b, 5*time.Second); string(got) != fmt.Sprintf("m%d", i) {
			t.Fatalf("message %d: got %q", i, got)
		}
	}
	status, res, _ = n.postBatch(t, `[{"uid":"a*","message":"x"},{"uid":"bb"}]`, nil)
	if status != http.StatusBadRequest || len(res) != 2 || res[0].Error == "" || res[1].Error == "" {
		t.Fatalf("all refused: %d %+v, want 400 with two errors", status, res)
	}
}

// What is wrong with a batch as a whole is one error, and nothing of it
// is stored.
func TestHTTPBatchLimits(t *testing.T) {
	n := startNode(t, withAPIKey(testConfig(t)))
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"uid":"u","message":"m"},`, 1001), ",") + "]"
	tests := []struct {
		name, body string
		want       int
	}{
		{"empty", `[]`, http.StatusBadRequest},
		{"malformed", `[{"uid":"u","message":"m"}`, http.StatusBadRequest},
		{"too many", many, http.StatusRequestEntityTooLarge},
		{"too large", `[{"uid":"u","message":"` + strings.Repeat("x", 8<<20) + `"}]`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, res, msg := n.postBatch(t, tt.body, nil)
			if status != tt.want || msg == "" || res != nil {
				t.Fatalf("%d %q %+v, want %d with one error", status, msg, res, tt.want)
			}
		})
	}
	_, js := n.natsClient(t)
	if info, err := js.Stream(t.Context(), "PUSH"); err != nil || info.CachedInfo().State.Msgs != 0 {
		t.Fatalf("refused batches stored messages: %v", err)
	}
}

// A batch retried with the same Idempotency-Key is stored once: each
// item's answer repeats its sequence, marked duplicate, and the user gets
// each message once.
func TestHTTPBatchIdempotencyKey(t *testing.T) {
	n := startNode(t, withAPIKey(testConfig(t)))
	c := n.dial(t, "bi")
	body := `[{"uid":"bi","message":"one"},{"uid":"bi","message":"two"}]`
	key := map[string]string{"Idempotency-Key": "batch-7"}
	s1, r1, _ := n.postBatch(t, body, key)
	s2, r2, _ := n.postBatch(t, body, key)
	if s1 != http.StatusAccepted || s2 != http.StatusAccepted || len(r1) != 2 || len(r2) != 2 {
		t.Fatalf("first %d %+v, retry %d %+v", s1, r1, s2, r2)
	}
	for i := range r1 {
		if r1[i].Duplicate || !r2[i].Duplicate || r1[i].Seq != r2[i].Seq {
			t.Fatalf("item %d: first %+v, retry %+v: want the same seq, the retry duplicate", i, r1[i], r2[i])
		}
	}
	n.postBatch(t, `[{"uid":"bi","message":"three"}]`, nil)
	for _, want := range []string{"one", "two", "three"} {
		if _, got := read(t, c, 5*time.Second); string(got) != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// The HTTP doors take the per-message policy as request headers, and
// refuse a malformed one at once (a NATS publisher's typo is ignored, as
// nobody could be told).
func TestHTTPDoorPolicyHeaders(t *testing.T) {
	n := startNode(t, withAPIKey(testConfig(t)))
	drop := map[string]string{wire.HeaderOffline: "drop"}
	if status, res, _ := n.postBatch(t, `[{"uid":"away","message":"typing"}]`, drop); status != http.StatusAccepted || res[0].Seq == 0 {
		t.Fatalf("batch with Pusher-Offline: %d %+v", status, res)
	}
	n.logs.Wait(t, 10*time.Second, "push.dropped", map[string]any{"uid": "away", "reason": "offline_dropped"})

	for _, h := range []map[string]string{{wire.HeaderTTL: "tomorrow"}, {wire.HeaderOffline: "maybe"}} {
		status, _, msg := n.postBatch(t, `{"uid":"away","message":"x"}`, h)
		if status != http.StatusBadRequest || !strings.Contains(msg, "Pusher-") {
			t.Fatalf("%v: %d %q, want 400 naming the header", h, status, msg)
		}
	}
	// Stored with its TTL: the dead letter keeps it for replay.
	status, _, _ := n.postBatch(t, `{"uid":"away","message":"soon stale"}`, map[string]string{wire.HeaderTTL: "1h"})
	if status != http.StatusAccepted {
		t.Fatalf("single with Pusher-TTL: %d", status)
	}
	n.logs.Wait(t, 10*time.Second, "push.deadlettered", map[string]any{"uid": "away", "reason": "offline"})
	_, js := n.natsClient(t)
	dlq, err := js.Stream(t.Context(), "PUSH_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	m, err := dlq.GetLastMsgForSubject(t.Context(), wire.DLQSubject("away"))
	if err != nil || string(m.Data) != "soon stale" || m.Header.Get(wire.HeaderTTL) != "1h" {
		t.Fatalf("dead letter %v: want %q with %s 1h (%v)", m, "soon stale", wire.HeaderTTL, err)
	}
}
