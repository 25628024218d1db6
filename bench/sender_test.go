package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
)

func TestDoorRead(t *testing.T) {
	tests := []struct {
		name          string
		kind          doorKind
		give          string // status and body, "202 {...}"
		n             int
		wantAccepted  int
		wantRejection string
		wantErr       error // errNoBatch, or errAny for any other error
	}{
		{name: "single accepted", kind: doorSingle, give: `202 {"seq":7}`, n: 1, wantAccepted: 1},
		{name: "single without seq", kind: doorSingle, give: `202 {}`, n: 1, wantErr: errAny},
		{name: "single refused", kind: doorSingle, give: `503 {"error":"could not store the message; retry"}`, n: 1, wantErr: errAny},
		{name: "send accepted", kind: doorSend, give: `200 `, n: 1, wantAccepted: 1},
		{name: "send to a uid not connected", kind: doorSend, give: `400 client not found: b1`, n: 1, wantErr: errAny},
		{name: "batch accepted", kind: doorBatch, give: `202 {"results":[{"seq":1},{"seq":2}]}`, n: 2, wantAccepted: 2},
		{name: "batch partly rejected", kind: doorBatch, give: `200 {"results":[{"seq":1},{"error":"bad uid"},{"error":"too large"}]}`, n: 3,
			wantAccepted: 1, wantRejection: "bad uid"},
		{name: "batch form missing", kind: doorBatch, give: `400 {"error":"body must be a JSON object"}`, n: 2, wantErr: errNoBatch},
		{name: "batch too few results", kind: doorBatch, give: `202 {"results":[{"seq":1}]}`, n: 2, wantErr: errAny},
		{name: "batch server error", kind: doorBatch, give: `500 {"error":"boom"}`, n: 2, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var status int
			var body string
			if _, err := fmt.Sscanf(tt.give, "%d", &status); err != nil {
				t.Fatal(err)
			}
			body = tt.give[4:]
			accepted, rejection, err := door{kind: tt.kind}.read(status, []byte(body), tt.n)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("error %v, want none", err)
			case tt.wantErr == errAny && (err == nil || errors.Is(err, errNoBatch)):
				t.Fatalf("error %v, want one other than errNoBatch", err)
			case tt.wantErr == errNoBatch && !errors.Is(err, errNoBatch):
				t.Fatalf("error %v, want errNoBatch", err)
			}
			if accepted != tt.wantAccepted || rejection != tt.wantRejection {
				t.Errorf("accepted %d, rejection %q; want %d, %q", accepted, rejection, tt.wantAccepted, tt.wantRejection)
			}
		})
	}
}

// errAny stands for any error but errNoBatch in TestDoorRead.
var errAny = errors.New("any error")

func TestDoorBodyIsWhatTheServersParse(t *testing.T) {
	uids := []string{"b0", "b1", "b2"}
	data := [][]byte{[]byte("0123abcdT" + "xx"), []byte("4567ef01T" + "yy")}
	var buf bytes.Buffer

	door{kind: doorBatch}.body(&buf, uids, []int{2, 0}, data)
	var batch []pushRequest
	if err := json.Unmarshal(buf.Bytes(), &batch); err != nil {
		t.Fatalf("batch body %s: %v", buf.Bytes(), err)
	}
	want := []pushRequest{{"b2", string(data[0])}, {"b0", string(data[1])}}
	if fmt.Sprint(batch) != fmt.Sprint(want) {
		t.Errorf("batch body decodes to %v, want %v", batch, want)
	}

	buf.Reset()
	door{kind: doorSingle}.body(&buf, uids, []int{1}, data[:1])
	var single pushRequest
	if err := json.Unmarshal(buf.Bytes(), &single); err != nil || single != (pushRequest{"b1", string(data[0])}) {
		t.Errorf("single body %s decodes to %v, %v", buf.Bytes(), single, err)
	}

	buf.Reset()
	door{kind: doorSend}.body(&buf, uids, []int{1}, data[1:])
	form, err := url.ParseQuery(buf.String())
	if err != nil || form.Get("uid") != "b1" || form.Get("message") != string(data[1]) {
		t.Errorf("send body %s parses to %v, %v", buf.Bytes(), form, err)
	}
}

// pushRequest is one message of pusher's POST /v1/push.
type pushRequest struct {
	UID     string `json:"uid"`
	Message string `json:"message"`
}

// TestHTTPPoolCountsABatchServersAnswers runs the pool against a server
// with the batch form (every 10th message refused) and one without it.
func TestHTTPPoolCountsABatchServersAnswers(t *testing.T) {
	const key = "k3y"
	var seq atomic.Uint64
	withBatch := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			return // the warm-up
		}
		if r.Header.Get("Authorization") != "Bearer "+key || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var batch []pushRequest
		if err := json.NewDecoder(r.Body).Decode(&batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var out bytes.Buffer
		out.WriteString(`{"results":[`)
		for i, m := range batch {
			if i > 0 {
				out.WriteByte(',')
			}
			if m.Message[len(m.Message)-1] == '9' {
				out.WriteString(`{"error":"refused"}`)
				continue
			}
			fmt.Fprintf(&out, `{"seq":%d}`, seq.Add(1))
		}
		out.WriteString("]}")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write(out.Bytes())
	}))
	defer withBatch.Close()
	without := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, `{"error":"body must be a JSON object"}`, http.StatusBadRequest)
	}))
	defer without.Close()

	submit := func(p *httpPool, requests, batch int) {
		t.Helper()
		for r := range requests {
			job := httpJob{}
			for j := range batch {
				job.ks = append(job.ks, j)
				job.data = append(job.data, []byte(fmt.Sprintf("m%d", r*batch+j)))
			}
			if err := p.submit(job); err != nil {
				t.Fatal(err)
			}
		}
	}
	uids := uidRange("b", 10)
	p, err := newHTTPPool(context.Background(), door{kind: doorBatch, url: withBatch.URL, warm: withBatch.URL, key: key, batch: 10}, uids, 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	submit(p, 20, 10)
	if err := p.finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.close()
	if a, r, n := p.accepted.Load(), p.rejected.Load(), p.requests.Load(); a != 180 || r != 20 || n != 20 {
		t.Errorf("accepted %d, rejected %d, requests %d; want 180, 20, 20", a, r, n)
	}
	if got := len(p.requestTimes()); got != 20 {
		t.Errorf("%d request times, want 20", got)
	}

	p, err = newHTTPPool(context.Background(), door{kind: doorBatch, url: without.URL, warm: without.URL, key: key, batch: 10}, uids, 4, 4)
	if err != nil {
		t.Fatal(err)
	}
	for r := 0; r < 20 && p.noBatch.Load() == nil; r++ {
		submit(p, 1, 10)
	}
	if err := p.finish(context.Background()); !errors.Is(err, errNoBatch) {
		t.Errorf("finish: %v, want errNoBatch", err)
	}
	p.close()
	if a := p.accepted.Load(); a != 0 {
		t.Errorf("accepted %d from a server without the batch form", a)
	}
}
