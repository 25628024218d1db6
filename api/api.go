// Package api is the HTTP door for backends that cannot speak NATS: it
// validates a push request and publishes it into push.<uid> through
// JetStream, the same path `nats pub` takes.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/wire"
)

// Config tunes the door. Zero values mean the documented default.
type Config struct {
	// APIKey is the bearer key callers must present; required.
	APIKey string
	// MaxPayload caps a message in bytes; default the NATS server's max
	// payload less room for headers, so a refused message is refused here
	// with 413 rather than by NATS with a 500.
	MaxPayload int
	// PublishTimeout bounds the JetStream publish; default 5s.
	PublishTimeout time.Duration
	// TrustedProxies tell the caller's address behind them, for the
	// logs' remote; zero: the TCP peer.
	TrustedProxies wire.TrustedProxies
}

// Log events: one line per request, published or not.
const (
	evPublished     = "http.published"
	evPublishFailed = "http.publish_failed"
)

// headerRoom is what NATS needs besides the payload for a publish.
const headerRoom = 1024

// Handler serves POST /v1/push and the demo's /send.
type Handler struct {
	js    jetstream.JetStream
	log   *zap.Logger
	cfg   Config
	key   []byte
	keyID string // KeyID(key): names the key in the logs, never the key
	// stall lets a batch's publish wait up to the publish timeout for room
	// in the async window (the default is 200 ms, then an error), so a
	// flood of batches is slowed down rather than failed.
	stall jetstream.PublishOpt
}

// New returns the door publishing on nc, through a JetStream context of
// its own: its async window (maxAsyncPending) and ack timeout are the
// door's, apart from the consumer's dead-letter publishes.
func New(nc *nats.Conn, log *zap.Logger, cfg Config) (*Handler, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("api: an API key is required")
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = int(nc.MaxPayload()) - headerRoom
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if cfg.MaxPayload <= 0 || cfg.PublishTimeout < 0 {
		return nil, fmt.Errorf("api: max payload %d and publish timeout %s must be positive", cfg.MaxPayload, cfg.PublishTimeout)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout), jetstream.WithPublishAsyncMaxPending(maxAsyncPending))
	if err != nil {
		return nil, fmt.Errorf("api: jetstream: %w", err)
	}
	return &Handler{js: js, stall: jetstream.WithStallWait(cfg.PublishTimeout), log: log.Named("api"), cfg: cfg, key: []byte(cfg.APIKey), keyID: KeyID(cfg.APIKey)}, nil
}

// KeyID names an API key in the logs without revealing it: the first 8
// hex digits of its SHA-256. It tells keys apart (after a rotation, say);
// it cannot be turned back into the key.
func KeyID(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:4])
}

// pushRequest is the body of POST /v1/push, or one item of a batch.
type pushRequest struct {
	UID     string `json:"uid"`
	Message string `json:"message"`
}

// Push serves POST /v1/push: a JSON object {"uid": "...", "message": "..."},
// or a JSON array of them (a batch, see pushBatch).
func (h *Handler) Push(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(w, r) {
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		h.fail(w, r, http.StatusUnsupportedMediaType, "", "content type must be application/json", nil)
		return
	}
	policy, err := requestPolicy(r.Header)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "", err.Error(), nil)
		return
	}
	buf := getBuffer()
	defer putBuffer(buf)
	// A batch may be up to maxBatchBody; a single message's JSON escaping
	// can grow it up to six times. The limit cuts a huge body off while
	// it is read; the single body's own limit is checked once it is known
	// not to be a batch.
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max(maxBatchBody, h.singleBody()))); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.fail(w, r, http.StatusRequestEntityTooLarge, "", fmt.Sprintf("body larger than %d bytes", tooBig.Limit), nil)
			return
		}
		h.fail(w, r, http.StatusBadRequest, "", "cannot read body", err)
		return
	}
	body := buf.Bytes()
	if isArray(body) {
		h.pushBatch(w, r, body, policy)
		return
	}
	if int64(len(body)) > h.singleBody() {
		h.fail(w, r, http.StatusRequestEntityTooLarge, "", "message too large", nil)
		return
	}
	req, err := parsePush(body)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "", err.Error(), nil)
		return
	}
	h.publish(w, r, req.UID, req.Message, policy)
}

// singleBody caps the body of a single-message POST /v1/push: the
// largest message, JSON-escaped at worst (six bytes for one), and room
// for the rest of the object.
func (h *Handler) singleBody() int64 { return int64(h.cfg.MaxPayload)*6 + 1024 }

// isArray reports whether a JSON body is an array: its first byte other
// than JSON white space is '['.
func isArray(body []byte) bool {
	body = bytes.TrimLeft(body, " \t\r\n")
	return len(body) > 0 && body[0] == '['
}

// The answers to a body that is not a push request.
var (
	errBadBody   = errors.New(`body must be a JSON object {"uid": string, "message": string}, or an array of them`)
	errNoMessage = errors.New(`message is required (an empty string is a valid message)`)
	errBadItem   = errors.New(`item must be a JSON object {"uid": string, "message": string}`)
)

// parsePush decodes a POST /v1/push body: exactly one JSON object with
// string fields uid and message and nothing else; message must be there,
// possibly empty. uid is checked later.
func parsePush(body []byte) (pushRequest, error) {
	var req struct {
		UID     string  `json:"uid"`
		Message *string `json:"message"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || dec.More() {
		return pushRequest{}, errBadBody
	}
	if req.Message == nil {
		return pushRequest{}, errNoMessage
	}
	return pushRequest{UID: req.UID, Message: *req.Message}, nil
}

// Send serves the demo's /send?uid=&message= (GET, or a form POST).
func (h *Handler) Send(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(w, r) {
		return
	}
	policy, err := requestPolicy(r.Header)
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "", err.Error(), nil)
		return
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, int64(h.cfg.MaxPayload)*3+1024)
	}
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.fail(w, r, http.StatusRequestEntityTooLarge, "", "message too large", nil)
			return
		}
		h.fail(w, r, http.StatusBadRequest, "", "malformed form or query", err)
		return
	}
	if _, ok := r.Form["message"]; !ok {
		h.fail(w, r, http.StatusBadRequest, "", "message is required", nil)
		return
	}
	h.publish(w, r, r.Form.Get("uid"), r.Form.Get("message"), policy)
}

// publish stores message for uid in JetStream, answers 202 with its
// sequence, and logs http.published.
func (h *Handler) publish(w http.ResponseWriter, r *http.Request, uid, message string, policy nats.Header) {
	if err := wire.ValidUID(uid); err != nil {
		// Not logged: a uid that is no uid may be anything, of any size.
		h.fail(w, r, http.StatusBadRequest, "", err.Error(), nil)
		return
	}
	if len(message) > h.cfg.MaxPayload {
		h.fail(w, r, http.StatusRequestEntityTooLarge, uid, fmt.Sprintf("message larger than %d bytes", h.cfg.MaxPayload), nil)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.PublishTimeout)
	defer cancel()
	msg := newMsg(uid, message, policy, r.Header.Get("Idempotency-Key"))
	ack, err := h.js.PublishMsg(ctx, msg)
	if err != nil {
		h.fail(w, r, http.StatusServiceUnavailable, uid, errStore, err)
		return
	}
	h.published(r, uid, ack)
	writeJSON(w, http.StatusAccepted, result{Seq: ack.Sequence, Duplicate: ack.Duplicate})
}

// errStore answers a message JetStream did not confirm in time: it may
// or may not be stored, so a retry should carry an Idempotency-Key.
const errStore = "could not store the message; retry"

// newMsg is the JetStream message for uid: the publisher's policy
// headers (shared, never changed) and the idempotency key as Nats-Msg-Id,
// so a retried request is stored once.
func newMsg(uid, message string, policy nats.Header, msgID string) *nats.Msg {
	m := &nats.Msg{Subject: wire.PushSubject(uid), Data: []byte(message), Header: policy}
	if msgID != "" {
		m.Header = make(nats.Header, len(policy)+1)
		maps.Copy(m.Header, policy)
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	return m
}

// published logs http.published for one stored message.
func (h *Handler) published(r *http.Request, uid string, ack *jetstream.PubAck) {
	if ce := h.log.Check(zap.InfoLevel, evPublished); ce != nil {
		ce.Write(zap.String("uid", uid), zap.Uint64("seq", ack.Sequence), zap.Bool("duplicate", ack.Duplicate),
			h.remote(r), zap.String("key_id", h.keyID))
	}
}

// requestPolicy turns a request's Pusher-TTL and Pusher-Offline headers
// into the message's NATS headers, nil when there are none. Unlike a
// NATS publisher, an HTTP caller can be told at once that a value is
// malformed, so it is refused (400) rather than ignored.
func requestPolicy(h http.Header) (nats.Header, error) {
	ttl, offline := h.Get(wire.HeaderTTL), h.Get(wire.HeaderOffline)
	if ttl == "" && offline == "" {
		return nil, nil
	}
	if _, err := wire.ParsePolicy(h.Get); err != nil {
		return nil, err
	}
	out := nats.Header{}
	if ttl != "" {
		out.Set(wire.HeaderTTL, ttl)
	}
	if offline != "" {
		out.Set(wire.HeaderOffline, offline)
	}
	return out, nil
}

// authorized checks the bearer API key in constant time and answers 401
// itself when it is wrong. That line has no key_id: a wrong key may be a
// near miss of the right one, or another secret pasted by mistake, and
// even a digest of it does not belong in the logs.
func (h *Handler) authorized(w http.ResponseWriter, r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok && subtle.ConstantTimeCompare([]byte(got), h.key) == 1 {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="pusher"`)
	const msg = "missing or wrong API key"
	writeError(w, http.StatusUnauthorized, msg)
	h.log.Info(evPublishFailed, zap.Int("status", http.StatusUnauthorized), zap.String("reason", msg), h.remote(r))
	return false
}

// fail answers status with msg (a JSON error) and logs
// http.publish_failed: the status, msg as reason, uid when it is known to
// be valid, the caller's remote and key_id, and err when there is a
// detail the caller is not told. The caller's mistakes are info; the
// door's own trouble (5xx) is a warning.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, uid, msg string, err error) {
	writeError(w, status, msg)
	h.logFailure(r, status, uid, msg, err)
}

// logFailure logs http.publish_failed for a request or one item of a
// batch (extra says which).
func (h *Handler) logFailure(r *http.Request, status int, uid, msg string, err error, extra ...zap.Field) {
	level := zap.InfoLevel
	if status >= http.StatusInternalServerError {
		level = zap.WarnLevel
	}
	ce := h.log.Check(level, evPublishFailed)
	if ce == nil {
		return
	}
	fields := append([]zap.Field{zap.Int("status", status), zap.String("reason", msg), h.remote(r), zap.String("key_id", h.keyID)}, extra...)
	if uid != "" {
		fields = append(fields, zap.String("uid", uid))
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	ce.Write(fields...)
}

// remote is the log field naming the caller's address: the TCP peer, or
// what trusted proxies say of the client behind them.
func (h *Handler) remote(r *http.Request) zap.Field {
	return zap.String("remote", h.cfg.TrustedProxies.ClientAddr(r.RemoteAddr, r.Header))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Error string `json:"error"`
	}{msg})
}

// writeJSON answers with status and v as JSON, not HTML-escaped: the body
// is read by programs, and "<" in an error is "<", not "\u003c".
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// MethodNotAllowed answers 405 with the Allow header set to allow and a
// JSON error, for a door's path asked with another method.
func MethodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+allow)
	}
}
