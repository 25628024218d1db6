package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/wire"
)

// Limits of a batch: a backend that has many messages at once sends them
// in one request, and JetStream stores them with one round trip's wait
// instead of one per message; the limits keep one request from holding
// the door (and the async publisher's window) for long.
const (
	// maxBatch is the most messages in one batch (413 beyond).
	maxBatch = 1000
	// maxBatchBody is the largest batch body in bytes (413 beyond).
	maxBatchBody = 8 << 20
	// maxAsyncPending is the door's window of messages published and not
	// yet confirmed by JetStream, over all requests: 32 callers sending
	// batches of 100 fit; beyond it a publish waits (up to the publish
	// timeout) for room, which slows callers down instead of failing them.
	maxAsyncPending = 8192
)

// result is one message's answer: its JetStream sequence (and whether
// JetStream had it already, by Idempotency-Key), or why it was not stored.
type result struct {
	Seq       uint64 `json:"seq,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	Error     string `json:"error,omitempty"`
}

// pushBatch serves a POST /v1/push whose body is a JSON array of
// {"uid", "message"} objects. Every valid message is published at once
// (async), then the answers are awaited together, so a batch of 100 costs
// about one JetStream round trip. The answer is {"results": [...]}, one
// result per item in order; its status is 202 when every message was
// stored, 207 when some were, 503 when none was and JetStream was the
// reason, 400 when every item was refused. With an Idempotency-Key, item
// i is published with the message id KEY/i, so a batch retried with the
// same key stores each message once.
func (h *Handler) pushBatch(w http.ResponseWriter, r *http.Request, body []byte, policy nats.Header) {
	var items []json.RawMessage
	if err := json.Unmarshal(body, &items); err != nil {
		h.fail(w, r, http.StatusBadRequest, "", errBadBody.Error(), nil)
		return
	}
	switch {
	case len(items) == 0:
		h.fail(w, r, http.StatusBadRequest, "", "batch is empty", nil)
		return
	case len(items) > maxBatch:
		h.fail(w, r, http.StatusRequestEntityTooLarge, "", fmt.Sprintf("batch of %d messages; at most %d", len(items), maxBatch), nil)
		return
	}
	results := make([]result, len(items))
	uids := make([]string, len(items))
	futures := make([]jetstream.PubAckFuture, len(items))
	key := r.Header.Get("Idempotency-Key")
	for i, item := range items {
		req, status, err := h.checkItem(item)
		if err != nil {
			results[i].Error = err.Error()
			h.logFailure(r, status, "", results[i].Error, nil, zap.Int("item", i))
			continue
		}
		id := ""
		if key != "" {
			id = key + "/" + strconv.Itoa(i)
		}
		uids[i] = req.UID
		futures[i], err = h.js.PublishMsgAsync(newMsg(req.UID, req.Message, policy, id), h.stall)
		if err != nil {
			results[i].Error = errStore
			h.logFailure(r, http.StatusServiceUnavailable, req.UID, errStore, err, zap.Int("item", i))
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PublishTimeout)
	defer cancel()
	stored, storeFailed := h.await(ctx, r, futures, uids, results)
	status := http.StatusAccepted
	switch {
	case stored == len(items):
	case stored > 0:
		status = http.StatusMultiStatus
	case storeFailed:
		status = http.StatusServiceUnavailable
	default:
		status = http.StatusBadRequest
	}
	writeJSON(w, status, struct {
		Results []result `json:"results"`
	}{results})
}

// checkItem decodes and checks one item of a batch, or says why it is
// refused and with which status a single request would have been.
func (h *Handler) checkItem(item json.RawMessage) (pushRequest, int, error) {
	req, err := parsePush(item)
	switch {
	case errors.Is(err, errBadBody):
		return req, http.StatusBadRequest, errBadItem
	case err != nil:
		return req, http.StatusBadRequest, err
	}
	if err := wire.ValidUID(req.UID); err != nil {
		return req, http.StatusBadRequest, err
	}
	if len(req.Message) > h.cfg.MaxPayload {
		return req, http.StatusRequestEntityTooLarge, fmt.Errorf("message larger than %d bytes", h.cfg.MaxPayload)
	}
	return req, 0, nil
}

// await collects the answers of the published messages (non-nil
// futures) into results and logs each; it says how many were stored and
// whether any failed for JetStream's sake.
func (h *Handler) await(ctx context.Context, r *http.Request, futures []jetstream.PubAckFuture, uids []string, results []result) (stored int, storeFailed bool) {
	for i, f := range futures {
		if f == nil {
			storeFailed = storeFailed || results[i].Error == errStore
			continue
		}
		var err error
		select {
		case ack := <-f.Ok():
			results[i] = result{Seq: ack.Sequence, Duplicate: ack.Duplicate}
			h.published(r, uids[i], ack)
			stored++
			continue
		case err = <-f.Err():
		case <-ctx.Done():
			err = ctx.Err()
		}
		results[i].Error = errStore
		storeFailed = true
		h.logFailure(r, http.StatusServiceUnavailable, uids[i], errStore, err, zap.Int("item", i))
	}
	return stored, storeFailed
}

// bodies recycles request body buffers: a busy door reads thousands of
// bodies a second, and each would otherwise grow a new one from 512
// bytes. A buffer that grew past 1 MiB is let go, so one huge batch does
// not pin its memory.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuffer() *bytes.Buffer { return bodies.Get().(*bytes.Buffer) }

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > 1<<20 {
		return
	}
	b.Reset()
	bodies.Put(b)
}
