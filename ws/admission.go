package ws

import (
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/wire"
)

// Admission control: a node that cannot keep up with a connect storm
// (every client of a restarted node reconnecting at once) refuses the
// excess at once and cheaply, before verifying a token, instead of
// letting handshakes queue until clients time out and retry on top of
// the queue.
//
// A client that can read the refusal gets 503 with Retry-After. A
// browser cannot: the WebSocket API hides a failed handshake's status. So
// a client that asked for pusher.v1 (the official client, in a browser)
// gets the upgrade and at once the close 1013 (RFC 6455: try again later)
// with the delay in the reason, which it honours.

// busyRetryAfter is what a refused client is asked to wait; clients add
// their own jitter on top, so the retries spread out.
const busyRetryAfter = 2 * time.Second

// admit counts r as a handshake in progress and reports whether it may
// go on; if not, it has answered r. A caller that was admitted must call
// h.handshakes.Add(-1) when its handshake is done.
func (h *Handler) admit(w http.ResponseWriter, r *http.Request) bool {
	n := h.handshakes.Add(1)
	if h.cfg.MaxHandshakes <= 0 || n <= int64(h.cfg.MaxHandshakes) {
		return true
	}
	h.handshakes.Add(-1)
	h.met.connects.WithLabelValues(resultBusy).Inc()
	h.refuseForNow(w, r, "too many connections being set up", "busy")
	return false
}

// refuseForNow turns a handshake away for a while: 503 with Retry-After
// and why in the JSON error, or, for a pusher.v1 client, the upgrade and
// at once close 1013 with short and the wait in its reason ("busy; retry
// after 2s"). It serves the handshake cap, a node at its connection
// limit and a node shutting down, where a retry later, perhaps on
// another node, will do; without the wait a client counts the refusal as
// a failed dial and backs off towards its 20 s ceiling.
func (h *Handler) refuseForNow(w http.ResponseWriter, r *http.Request, why, short string) {
	secs := strconv.Itoa(int(busyRetryAfter / time.Second))
	if !asksFor(r, Subprotocol) {
		w.Header().Set("Retry-After", secs)
		writeError(w, http.StatusServiceUnavailable, why+"; retry after "+secs+"s")
		return
	}
	up := websocket.Upgrader{
		Subprotocols: []string{Subprotocol},
		CheckOrigin:  func(*http.Request) bool { return true }, // it is told to go away, nothing more
	}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	msg := websocket.FormatCloseMessage(wire.CloseTryAgain, short+"; retry after "+secs+"s")
	if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		h.log.Debug(evRefused, zap.String("reason", short), zap.Error(err))
	}
	_ = c.Close()
}

// asksFor reports whether r's upgrade lists the subprotocol p.
func asksFor(r *http.Request, p string) bool {
	for _, s := range websocket.Subprotocols(r) {
		if s == p {
			return true
		}
	}
	return false
}
