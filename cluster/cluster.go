// Package cluster routes pulled messages to whichever pusher nodes hold the
// uid, using NATS subject interest as the presence registry: a node
// subscribes pusher.deliver.<uid> while the uid has a local connection, and
// the node that pulled a message asks that subject to deliver it.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
)

const deliverPrefix = "pusher.deliver."

// DeliverSubject is the core NATS subject a node holding uid listens on.
func DeliverSubject(uid string) string { return deliverPrefix + uid }

// Reply bodies of a delivery request.
var (
	replyOK   = []byte("ok")   // written to at least one local connection
	replyFail = []byte("fail") // every local write failed
)

// Errors a Router reports for a message, besides hub.ErrOffline.
var (
	// ErrTimeout: no node answered in time; the consumer retries.
	ErrTimeout = fmt.Errorf("cluster: %w", hub.ErrTimeout)
	// ErrRemoteFailed: a node holding the uid could not write.
	ErrRemoteFailed = errors.New("delivery failed on the node holding the uid")
)

// Config tunes a Node. Zero values mean the documented default.
type Config struct {
	// Timeout bounds a delivery request; default 15s, above the
	// WebSocket write deadline (10s), so a slow write is not retried while
	// it is still going.
	Timeout time.Duration
	// Workers handle delivery requests for local uids; default 4.
	Workers int
	// Buffer is the shared request channel's length; default 65536.
	Buffer int
}

// Node is this process's part of the cluster: it answers delivery
// requests for its local uids and routes pulled messages to any node. It
// implements consumer.Router.
type Node struct {
	nc  *nats.Conn
	hub *hub.Hub
	log *zap.Logger
	cfg Config

	// Requests this node sent, by id, awaiting a reply. Guarded by mu.
	mu      sync.Mutex
	pending map[uint64]pendingReq
	nextID  uint64
	prefix  string // reply subject prefix; ids follow
	inbox   *nats.Subscription

	// Presence: one subscription per local uid, all feeding requests.
	// Guarded by subsMu.
	subsMu   sync.Mutex
	subs     map[string]*nats.Subscription
	requests chan *nats.Msg

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type pendingReq struct {
	m        *hub.Message
	deadline time.Time
}

// New returns a Node over nc and the local hub h; it does nothing until
// Start. Build the hub with Config.OnPresence set to the Node's
// OnPresence (main wires it with a closure, as the hub exists first).
func New(nc *nats.Conn, h *hub.Hub, log *zap.Logger, cfg Config) (*Node, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.Workers == 0 {
		cfg.Workers = 4
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = 65536
	}
	if cfg.Timeout < 0 || cfg.Workers < 1 || cfg.Buffer < 1 {
		return nil, fmt.Errorf("cluster config: timeout %s, workers %d, buffer %d must be positive", cfg.Timeout, cfg.Workers, cfg.Buffer)
	}
	return &Node{
		nc:       nc,
		hub:      h,
		log:      log.Named("cluster"),
		cfg:      cfg,
		pending:  make(map[uint64]pendingReq),
		subs:     make(map[string]*nats.Subscription),
		requests: make(chan *nats.Msg, cfg.Buffer),
	}, nil
}

// Start subscribes the reply inbox and starts the request workers and the
// timeout sweeper. Close stops them.
func (n *Node) Start() error {
	n.prefix = n.nc.NewInbox() + "."
	inbox, err := n.nc.Subscribe(n.prefix+"*", n.onReply)
	if err != nil {
		return fmt.Errorf("subscribe delivery replies: %w", err)
	}
	n.inbox = inbox
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	for range n.cfg.Workers {
		n.wg.Add(1)
		go func() { defer n.wg.Done(); n.serveRequests(ctx) }()
	}
	status := n.nc.StatusChanged(nats.RECONNECTING)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.nc.RemoveStatusListener(status)
		n.sweep(ctx, status)
	}()
	return nil
}

// Close unsubscribes everything, fails what still awaits a reply (the
// consumer retries it) and stops the goroutines. Idempotent.
func (n *Node) Close() {
	if n.inbox != nil {
		_ = n.inbox.Unsubscribe()
	}
	n.subsMu.Lock()
	for uid, s := range n.subs {
		_ = s.Unsubscribe()
		delete(n.subs, uid)
	}
	n.subsMu.Unlock()
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
	n.mu.Lock()
	left := n.pending
	n.pending = make(map[uint64]pendingReq)
	n.mu.Unlock()
	for _, p := range left {
		p.m.Reporter.Report(p.m, ErrTimeout)
	}
}

// Route implements consumer.Router: it asks every node holding uid,
// through NATS, to deliver m. It always returns 1: the outcome is known
// only from the reply, and m's Reporter gets it: nil on a success reply,
// hub.ErrOffline on "no responders", an error on failure or timeout.
func (n *Node) Route(uid string, m *hub.Message) int {
	n.mu.Lock()
	n.nextID++
	id := n.nextID
	n.pending[id] = pendingReq{m: m, deadline: time.Now().Add(n.cfg.Timeout)}
	n.mu.Unlock()
	req := &nats.Msg{Subject: DeliverSubject(uid), Reply: n.prefix + strconv.FormatUint(id, 36), Data: m.Data}
	if err := n.nc.PublishMsg(req); err != nil {
		if p, ok := n.take(id); ok {
			p.m.Reporter.Report(p.m, fmt.Errorf("send delivery request: %w", err))
		}
	}
	return 1
}

// Online reports whether uid has a connection on this node.
func (n *Node) Online(uid string) bool { return n.hub.Online(uid) }

func (n *Node) take(id uint64) (pendingReq, bool) {
	n.mu.Lock()
	p, ok := n.pending[id]
	delete(n.pending, id)
	n.mu.Unlock()
	return p, ok
}

// onReply settles a request from its reply; a late reply for a request
// that already timed out is ignored (the message was retried).
func (n *Node) onReply(msg *nats.Msg) {
	id, err := strconv.ParseUint(strings.TrimPrefix(msg.Subject, n.prefix), 36, 64)
	if err != nil {
		return
	}
	p, ok := n.take(id)
	if !ok {
		return
	}
	switch {
	case len(msg.Data) == 0 && msg.Header.Get("Status") == "503":
		p.m.Reporter.Report(p.m, hub.ErrOffline)
	case string(msg.Data) == string(replyOK):
		p.m.Reporter.Report(p.m, nil)
	default:
		p.m.Reporter.Report(p.m, fmt.Errorf("%w: %s", ErrRemoteFailed, msg.Data))
	}
}

// sweep fails requests whose deadline passed, a few times per timeout,
// and every pending request when the NATS connection drops: replies to
// requests sent over the lost connection will not come, and waiting out
// the timeout would only hold their messages back.
func (n *Node) sweep(ctx context.Context, reconnecting <-chan nats.Status) {
	t := time.NewTicker(max(n.cfg.Timeout/8, 10*time.Millisecond))
	defer t.Stop()
	var expired []pendingReq
	for {
		var cutoff time.Time
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			cutoff = now
		case <-reconnecting:
			cutoff = time.Now().Add(n.cfg.Timeout + time.Second) // all of them
		}
		{
			n.mu.Lock()
			for id, p := range n.pending {
				if cutoff.After(p.deadline) {
					expired = append(expired, p)
					delete(n.pending, id)
				}
			}
			n.mu.Unlock()
			for i, p := range expired {
				p.m.Reporter.Report(p.m, ErrTimeout)
				expired[i] = pendingReq{}
			}
			expired = expired[:0]
		}
	}
}

// OnPresence keeps exactly one subscription to pusher.deliver.<uid> while
// uid has a local connection; it is hub.Config.OnPresence. It reconciles
// with the hub's current truth, so calls that race or arrive out of order
// still converge. A new subscription is flushed before OnPresence returns,
// so the NATS server knows the interest before the client's upgrade
// completes (hub.Add runs before it).
func (n *Node) OnPresence(uid string) {
	n.subsMu.Lock()
	online, sub := n.hub.Online(uid), n.subs[uid]
	subscribed := false
	switch {
	case online && sub == nil:
		s, err := n.nc.ChanSubscribe(DeliverSubject(uid), n.requests)
		if err != nil {
			n.subsMu.Unlock()
			n.log.Error("cluster.subscribe_failed", zap.String("uid", uid), zap.Error(err))
			return
		}
		n.subs[uid] = s
		subscribed = true
	case !online && sub != nil:
		_ = sub.Unsubscribe()
		delete(n.subs, uid)
	}
	n.subsMu.Unlock()
	if subscribed {
		if err := n.nc.FlushTimeout(presenceFlushTimeout); err != nil {
			n.log.Warn("cluster.flush_failed", zap.String("uid", uid), zap.Error(err))
		}
	}
}

// presenceFlushTimeout bounds the wait for the server to confirm a new
// presence subscription; past it the connection proceeds anyway.
const presenceFlushTimeout = 2 * time.Second

// serveRequests delivers requests for local uids to their connections.
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
	uid := strings.TrimPrefix(msg.Subject, deliverPrefix)
	r := &remote{msg: msg}
	r.m = hub.Message{Data: msg.Data, Binary: !utf8.Valid(msg.Data), Reporter: r}
	// A uid that left meanwhile gets no answer from here: another node may
	// hold it, and if none does the requester times out and retries.
	n.hub.Route(uid, &r.m)
}
