// Package cluster carries everything that travels between pusher nodes over
// core NATS: delivery requests to whichever nodes hold a uid (NATS subject
// interest is the presence registry), kicks, replay notices, and replay
// after a reconnect. One node is a cluster of one: the same Node serves it,
// delivering to local connections only.
package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
	"github.com/pusher-io/pusher/wire"
)

// Replayer republishes a user's offline dead letters; consumer.Replayer
// implements it. TriggerReplay must not block.
type Replayer interface {
	TriggerReplay(uid string)
}

// Config tunes a Node. Zero values mean the documented default.
type Config struct {
	// Routing delivers each message to every node holding its uid,
	// through NATS; without it a node delivers to its own connections
	// only (one node, or an embedded NATS that no other node shares).
	Routing bool
	// Timeout bounds a delivery request to other nodes; default 25s: a
	// node answers once its client confirmed the message, so this covers
	// the WebSocket write deadline (10s) and the confirm timeout (10s),
	// and a slow delivery is not retried while it is still going.
	Timeout time.Duration
	// Stall is how long the other nodes still have to answer once one
	// node answered that it failed or no longer holds the uid; default
	// 1s. NATS does not say how many nodes a request reached, so this is
	// the usual way to gather several replies: a success within it wins
	// (the message is acked, not nacked into a duplicate).
	Stall time.Duration
	// Workers serve delivery requests for local uids; default 4.
	Workers int
	// Buffer is the shared delivery-request channel's length; default 65536.
	Buffer int
	// Name is this node's name in answers to "is uid online?" requests.
	Name string
}

func (c Config) withDefaults() (Config, error) {
	if c.Timeout == 0 {
		c.Timeout = 25 * time.Second
	}
	if c.Stall == 0 {
		c.Stall = time.Second
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.Buffer == 0 {
		c.Buffer = 65536
	}
	if c.Timeout < 0 || c.Stall < 0 || c.Workers < 1 || c.Buffer < 1 {
		return c, fmt.Errorf("cluster config: timeout %s, stall %s, workers %d, buffer %d must be positive",
			c.Timeout, c.Stall, c.Workers, c.Buffer)
	}
	return c, nil
}

// Log event names.
const (
	evKicked          = "ws.kicked"
	evKickRefused     = "ws.kick_refused"
	evSubscribeFailed = "cluster.subscribe_failed"
	evNoticeFailed    = "dlq.replay_notice_failed"
)

// Node is this process's part of the cluster. It implements
// consumer.Router, and hub.Config.OnPresence is its OnPresence.
//
// Lifecycle: New, Start, Close. Start subscribes; Close unsubscribes,
// stops the goroutines Start began, and fails what still awaits a reply.
type Node struct {
	// Static after New.
	nc  *nats.Conn
	hub *hub.Hub
	rep Replayer
	log *zap.Logger
	cfg Config

	// Requests this node sent to others, by id. Guarded by mu, which also
	// guards every routed's outcome fields.
	mu      sync.Mutex
	pending map[uint64]*routed
	nextID  uint64
	prefix  string // reply subject prefix; ids follow; set by Start

	// Presence: per local uid, a subscription to pusher.online.<uid> and,
	// with Routing, one to pusher.deliver.<uid>, all feeding requests (a
	// channel, not a callback each: nats.go gives every callback
	// subscription a goroutine). Guarded by subsMu.
	subsMu   sync.Mutex
	subs     map[string]uidSubs
	requests chan *nats.Msg

	// leaving is set by Leave: departing uids keep their delivery
	// subscriptions until Close.
	leaving atomic.Bool

	own    []*nats.Subscription // kicks, replay notices, reply inbox
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Node over nc and the local hub h; rep replays for users
// who come back. It does nothing until Start. With Routing, nc must have
// been connected with nats.NoEcho: the node delivers to its own
// connections directly and asks only the other nodes through NATS.
//
// Build the hub with Config.OnPresence set to the Node's OnPresence (the
// hub exists first, so the caller wires it with a closure).
func New(nc *nats.Conn, h *hub.Hub, rep Replayer, log *zap.Logger, cfg Config) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.Routing && !nc.Opts.NoEcho {
		return nil, fmt.Errorf("cluster routing needs a NATS connection made with nats.NoEcho")
	}
	return &Node{
		nc:       nc,
		hub:      h,
		rep:      rep,
		log:      log.Named("cluster"),
		cfg:      cfg,
		pending:  make(map[uint64]*routed),
		subs:     make(map[string]uidSubs),
		requests: make(chan *nats.Msg, cfg.Buffer),
	}, nil
}

// Start subscribes to kicks and, with Routing, to replay notices and
// delivery replies, and starts the request workers and the timeout
// sweeper. On error it undoes what it did.
func (n *Node) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	if err := n.subscribe(wire.KickSubjects, n.onKick); err != nil {
		n.Close()
		return err
	}
	for range n.cfg.Workers {
		n.goLoop(func() { n.serveRequests(ctx) })
	}
	if !n.cfg.Routing {
		return nil
	}
	n.prefix = n.nc.NewInbox() + "."
	if err := n.subscribe(n.prefix+"*", n.onReply); err != nil {
		n.Close()
		return err
	}
	if err := n.subscribe(wire.ReplaySubjects, n.onReplayNotice); err != nil {
		n.Close()
		return err
	}
	status := n.nc.StatusChanged(nats.RECONNECTING, nats.CONNECTED)
	n.goLoop(func() {
		defer n.nc.RemoveStatusListener(status)
		n.sweep(ctx, status)
	})
	return nil
}

func (n *Node) subscribe(subject string, cb nats.MsgHandler) error {
	s, err := n.nc.Subscribe(subject, cb)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	n.own = append(n.own, s)
	return nil
}

func (n *Node) goLoop(f func()) {
	n.wg.Add(1)
	go func() { defer n.wg.Done(); f() }()
}

// Close unsubscribes everything, stops the goroutines and fails what
// still awaits a reply from another node (the consumer retries it). Call
// it after the local connections are gone, so no local write is still
// pending. Idempotent.
func (n *Node) Close() {
	for _, s := range n.own {
		_ = s.Unsubscribe()
	}
	n.own = nil
	n.subsMu.Lock()
	for uid, s := range n.subs {
		s.unsubscribe()
		delete(n.subs, uid)
	}
	n.subsMu.Unlock()
	if n.cancel != nil {
		n.cancel()
	}
	n.wg.Wait()
	n.refuseQueued()
	n.failAll(ErrTimeout)
}

// refuseQueued answers the delivery requests that arrived but were not
// served before the workers stopped with a failure, so their senders retry
// now (the user is likely reconnecting to another node) instead of waiting
// out their timeout: in a rolling restart that wait held the next node's
// shutdown for its whole drain budget. Online questions get no answer, as
// from a node that left.
func (n *Node) refuseQueued() {
	for {
		select {
		case msg := <-n.requests:
			if _, err := wire.UIDFromDeliverSubject(msg.Subject); err == nil {
				_ = msg.Respond(replyFail)
			}
		default:
			return
		}
	}
}

// Online reports whether uid has a connection on this node.
func (n *Node) Online(uid string) bool { return n.hub.Online(uid) }

// StoredOffline implements consumer.Router: an offline dead letter of uid
// is stored, so whichever node holds uid now replays it (this one
// directly, the others on the notice).
func (n *Node) StoredOffline(uid string) {
	if n.hub.Online(uid) {
		n.rep.TriggerReplay(uid)
	}
	if !n.cfg.Routing {
		return
	}
	if err := n.nc.Publish(wire.ReplaySubject(uid), nil); err != nil {
		n.log.Warn(evNoticeFailed, zap.String("uid", uid), zap.Error(err))
	}
}

// onReplayNotice handles pusher.replay.<uid>: another node stored an
// offline dead letter for uid; if uid is connected here, replay it.
func (n *Node) onReplayNotice(m *nats.Msg) {
	uid, err := wire.UIDFromReplaySubject(m.Subject)
	if err == nil && n.hub.Online(uid) {
		n.rep.TriggerReplay(uid)
	}
}

// onKick closes uid's local connections with 4001 (every node subscribes,
// so a kick reaches all of them) and answers a request with how many it
// closed and its name (wire.KickAnswer), 0 included.
func (n *Node) onKick(m *nats.Msg) {
	uid, err := wire.UIDFromKickSubject(m.Subject)
	if err != nil {
		n.log.Warn(evKickRefused, zap.String("subject", m.Subject), zap.Error(err))
		return
	}
	closed := n.hub.Kick(uid, wire.CloseKicked, wire.CloseKickedText)
	n.log.Info(evKicked, zap.String("uid", uid), zap.Int("conns", closed))
	if m.Reply != "" {
		body, _ := json.Marshal(wire.KickAnswer{Closed: closed, Node: n.cfg.Name})
		_ = m.Respond(body)
	}
}

// OnPresence keeps uid's subscriptions (pusher.online.<uid>, and with
// Routing pusher.deliver.<uid>) while uid has a local connection; it is
// hub.Config.OnPresence. It reconciles with the hub's current truth, so
// calls that race or arrive out of order still converge. It never waits
// on NATS: a subscription reaches the server with the connection's next
// flush; a message that finds no interest in between is dead-lettered
// offline and replayed to the user through StoredOffline, and an online
// query in between finds the user offline, as it was a moment before.
func (n *Node) OnPresence(uid string) {
	n.subsMu.Lock()
	defer n.subsMu.Unlock()
	online, subs := n.hub.Online(uid), n.subs[uid]
	switch {
	case online && subs.online == nil:
		var err error
		if subs.online, err = n.nc.ChanSubscribe(wire.OnlineSubject(uid), n.requests); err == nil && n.cfg.Routing && subs.deliver == nil {
			subs.deliver, err = n.nc.ChanSubscribe(wire.DeliverSubject(uid), n.requests)
		}
		if err != nil {
			subs.unsubscribe()
			n.log.Error(evSubscribeFailed, zap.String("uid", uid), zap.Error(err))
			return
		}
		n.subs[uid] = subs
	case !online && subs.online != nil && subs.deliver != nil && n.leaving.Load():
		// Leaving: keep answering delivery requests until Close (Leave).
		_ = subs.online.Unsubscribe()
		subs.online = nil
		n.subs[uid] = subs
	case !online && subs.online != nil:
		subs.unsubscribe()
		delete(n.subs, uid)
	}
}

// Leave tells the node it is shutting down. From now on a uid whose
// connections close keeps its delivery subscription until Close: in a
// NATS cluster an unsubscription takes a moment to reach the other
// servers, and a delivery request published meanwhile is routed to this
// node's server, finds no subscription and is dropped without a "no
// responders", its sender waiting out its whole timeout (25 s; in a
// rolling restart that held tens of messages and the next node's drain).
// Kept, the subscription answers it "offline" at once. And the requests
// this node sent get leavingPatience for an answer: one still lost that
// way elsewhere would otherwise hold this node's drain for half its
// budget; retried, another node delivers it (a duplicate if the first
// answer was only slow). Call it before the drain.
func (n *Node) Leave() { n.leaving.Store(true) }

// uidSubs are one local uid's subscriptions.
type uidSubs struct {
	online, deliver *nats.Subscription // deliver: with Routing only
}

func (s uidSubs) unsubscribe() {
	for _, sub := range []*nats.Subscription{s.online, s.deliver} {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}
}
