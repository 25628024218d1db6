package cluster

import (
	"context"
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
	if n.hub.Route(uid, &r.m) == 0 {
		// The uid left between the request's routing and now: say so at
		// once, so the requester need not wait out its timeout.
		_ = msg.Respond(replyOffline)
	}
}
