package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
)

// Reply bodies of a delivery request.
var (
	replyOK      = []byte("ok")      // at least one local connection has it
	replyFail    = []byte("fail")    // every local write failed
	replyOffline = []byte("offline") // the uid left this node meanwhile
)

// Errors the Node reports for a message, besides hub.ErrOffline.
var (
	// ErrTimeout: another node holding the uid did not answer in time, or
	// the NATS connection dropped while it was asked; the consumer retries.
	ErrTimeout = fmt.Errorf("cluster: %w", hub.ErrTimeout)
	// ErrRemoteFailed: a node holding the uid could not write.
	ErrRemoteFailed = errors.New("delivery failed on the node holding the uid")
)

// Route implements consumer.Router. It always reports m's outcome through
// m.Reporter, exactly once.
//
// Without Routing it delivers to this node's connections, and an absent
// uid is reported offline at once. With Routing it delivers to this node's
// connections directly and asks the other nodes holding uid through NATS
// (the connection does not echo, so this node never asks itself). Any
// success acks; the message fails only when every part did: offline when
// no node holds the uid, else the failure.
func (n *Node) Route(uid string, m *hub.Message) {
	if !n.cfg.Routing {
		if n.hub.Route(uid, m) == 0 {
			m.Reporter.Report(m, hub.ErrOffline)
		}
		return
	}
	r := &routed{n: n, m: m, deadline: time.Now().Add(n.cfg.Timeout)}
	r.local = hub.Message{Data: m.Data, Binary: m.Binary, Seq: m.Seq, ID: m.ID, Published: m.Published, Reporter: r}
	n.mu.Lock()
	n.nextID++
	r.id = n.nextID
	n.pending[r.id] = r
	n.mu.Unlock()

	if n.hub.Route(uid, &r.local) == 0 {
		r.Report(&r.local, hub.ErrOffline)
	}
	req := &nats.Msg{Subject: wire.DeliverSubject(uid), Reply: n.prefix + strconv.FormatUint(r.id, 36), Data: m.Data, Header: originHeader(m)}
	if err := n.nc.PublishMsg(req); err != nil {
		n.remoteDone(r.id, fmt.Errorf("send delivery request: %w", err), false)
	}
}

// routed is one message on its way to every node holding its uid: this
// node's connections (local) and, through NATS, the others' (remote).
type routed struct {
	// Static after Route set them.
	n        *Node
	m        *hub.Message // the consumer's; told the outcome once
	local    hub.Message  // m's payload, to this node's connections
	id       uint64
	deadline time.Time

	// Guarded by n.mu.
	localDone  bool
	localErr   error // hub.ErrOffline: no local connection
	remoteDone bool
	remoteErr  error     // nil with remoteDone: no other node holds the uid
	stallUntil time.Time // set by the first non-ok reply
	failed     error     // the first "fail" reply's error, if any
}

// Report is the local part's outcome (hub.Reporter).
func (r *routed) Report(_ *hub.Message, err error) {
	n := r.n
	n.mu.Lock()
	if n.pending[r.id] != r {
		n.mu.Unlock()
		return // settled already
	}
	r.localDone, r.localErr = true, err
	done, out := r.outcomeLocked()
	if done {
		delete(n.pending, r.id)
	}
	n.mu.Unlock()
	if done {
		r.m.Reporter.Report(r.m, out)
	}
}

// outcomeLocked says whether the message is settled, and how: any success
// settles it at once; otherwise both parts must be done. n.mu is held.
func (r *routed) outcomeLocked() (bool, error) {
	if r.localDone && r.localErr == nil {
		return true, nil
	}
	if !r.localDone || !r.remoteDone {
		return false, nil
	}
	switch {
	case r.localErr != hub.ErrOffline:
		return true, r.localErr
	case r.remoteErr != nil:
		return true, r.remoteErr
	}
	return true, hub.ErrOffline
}

// onReply settles the remote part from a reply. A reply for a message
// already settled is ignored (it was acked, or retried).
func (n *Node) onReply(msg *nats.Msg) {
	id, err := strconv.ParseUint(strings.TrimPrefix(msg.Subject, n.prefix), 36, 64)
	if err != nil {
		return
	}
	switch {
	case len(msg.Data) == 0 && msg.Header.Get("Status") == "503":
		// No node but this one holds the uid: NATS answered at once.
		n.remoteDone(id, nil, false)
	case string(msg.Data) == string(replyOK):
		n.remoteDone(id, nil, true)
	case string(msg.Data) == string(replyOffline):
		n.stall(id, nil)
	default:
		n.stall(id, fmt.Errorf("%w: %s", ErrRemoteFailed, msg.Data))
	}
}

// remoteDone settles the remote part of message id: ok means another node
// has it; otherwise err is why it failed (nil: nobody else holds the uid).
func (n *Node) remoteDone(id uint64, err error, ok bool) {
	n.mu.Lock()
	r := n.pending[id]
	if r == nil {
		n.mu.Unlock()
		return
	}
	var done bool
	var out error
	if ok {
		done = true
	} else {
		if err == nil {
			err = r.failed
		}
		r.remoteDone, r.remoteErr = true, err
		done, out = r.outcomeLocked()
	}
	if done {
		delete(n.pending, id)
	}
	n.mu.Unlock()
	if done {
		r.m.Reporter.Report(r.m, out)
	}
}

// stall records a node's answer that it failed (err) or no longer holds
// the uid (nil), and gives the other nodes Config.Stall more to answer.
func (n *Node) stall(id uint64, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.pending[id]
	if r == nil {
		return
	}
	if err != nil && r.failed == nil {
		r.failed = err
	}
	if r.stallUntil.IsZero() {
		r.stallUntil = time.Now().Add(n.cfg.Stall)
	}
}

// sweep ends the remote part of requests whose deadline or stall passed,
// a few times per Stall, and of every pending request when the NATS
// connection drops: replies to requests sent over the lost connection
// will not come, and waiting out the timeout would only hold their
// messages back. After a reconnect, every local user is replayed: a
// replay notice sent while this node was cut off was not heard.
func (n *Node) sweep(ctx context.Context, status <-chan nats.Status) {
	t := time.NewTicker(max(min(n.cfg.Timeout/8, n.cfg.Stall/4), 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n.expire(now)
		case s := <-status:
			if s == nats.RECONNECTING {
				n.failAll(ErrTimeout)
			} else {
				n.hub.EachUID(n.rep.TriggerReplay)
			}
		}
	}
}

// leavingPatience is how long a leaving node (Leave) waits for another
// node's answer before it counts the request lost and retries the
// message, instead of the full Config.Timeout: a node holding the uid
// answers within milliseconds unless its client is slow to confirm, and
// waiting longer only holds the shutdown's drain.
const leavingPatience = 2 * time.Second

// expire ends the remote part of every request whose stall or deadline
// passed by now, or, once the node is leaving, that has waited
// leavingPatience.
func (n *Node) expire(now time.Time) {
	var ids []uint64
	var errs []error
	leaving := n.leaving.Load()
	n.mu.Lock()
	for id, r := range n.pending {
		switch {
		case !r.stallUntil.IsZero() && now.After(r.stallUntil):
			ids, errs = append(ids, id), append(errs, r.failed)
		case now.After(r.deadline):
			ids, errs = append(ids, id), append(errs, ErrTimeout)
		case leaving && now.After(r.deadline.Add(leavingPatience-n.cfg.Timeout)):
			ids, errs = append(ids, id), append(errs, ErrTimeout)
		}
	}
	n.mu.Unlock()
	for i, id := range ids {
		n.remoteDone(id, errs[i], false)
	}
}

// failAll ends the remote part of every pending request with err.
func (n *Node) failAll(err error) {
	n.mu.Lock()
	ids := make([]uint64, 0, len(n.pending))
	for id := range n.pending {
		ids = append(ids, id)
	}
	n.mu.Unlock()
	for _, id := range ids {
		n.remoteDone(id, err, false)
	}
}
