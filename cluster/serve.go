package cluster

import (
	"context"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
)

// serveRequests delivers other nodes' requests for local uids to their
// connections.
func (n *Node) serveRequests(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-n.requests:
			n.serve(msg)
		}
	}
}

// remote is a delivery request being written to local connections; it
// replies to the requester with the outcome.
type remote struct {
	msg *nats.Msg
	m   hub.Message
}

// Report implements hub.Reporter.
func (r *remote) Report(_ *hub.Message, err error) {
	body := replyOK
	if err != nil {
		body = replyFail
	}
	_ = r.msg.Respond(body)
}

func (n *Node) serve(msg *nats.Msg) {
	uid, err := wire.UIDFromDeliverSubject(msg.Subject)
	if err != nil {
		return // we never subscribe to such a subject
	}
	r := &remote{msg: msg}
	r.m = hub.Message{Data: msg.Data, Binary: !utf8.Valid(msg.Data), Reporter: r}
	r.m.Seq, r.m.Published, r.m.ID = originOf(msg.Header)
	if n.hub.Route(uid, &r.m) == 0 {
		// The uid left between the request's routing and now: say so at
		// once, so the requester need not wait out its timeout.
		_ = msg.Respond(replyOffline)
	}
}

// originHeader carries what a pusher.v1 client is told of m besides its
// payload (seq, publish time, Nats-Msg-Id) to the node that writes it.
func originHeader(m *hub.Message) nats.Header {
	h := nats.Header{
		wire.HeaderOriginalSeq: {strconv.FormatUint(m.Seq, 10)},
		wire.HeaderPublishedAt: {m.Published.UTC().Format(time.RFC3339Nano)},
	}
	if m.ID != "" {
		h[wire.HeaderMsgID] = []string{m.ID}
	}
	return h
}

// originOf reads originHeader; a missing or malformed value is zero.
func originOf(h nats.Header) (seq uint64, published time.Time, id string) {
	seq, _ = strconv.ParseUint(h.Get(wire.HeaderOriginalSeq), 10, 64)
	published, _ = time.Parse(time.RFC3339Nano, h.Get(wire.HeaderPublishedAt))
	return seq, published, h.Get(wire.HeaderMsgID)
}
