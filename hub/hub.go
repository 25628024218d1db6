// Package hub is the node-local registry of live connections by uid, sharded so
// that traffic for different uids never contends on one lock.
package hub

import (
	"errors"
	"sync"
)

// Errors returned by Add. They map to HTTP statuses at the WebSocket door.
var (
	// ErrNodeFull means the node already holds Config.MaxConns connections.
	ErrNodeFull = errors.New("connection limit reached")
	// ErrUIDFull means the uid already holds Config.MaxConnsPerUID connections.
	ErrUIDFull = errors.New("connection limit for uid reached")
	// ErrClosed means Shutdown has begun; no connection is accepted any more.
	ErrClosed = errors.New("hub closed")
)

// Conn is one live connection as the hub sees it; ws implements it.
//
// Neither method may block or call back into the Hub: Route calls Enqueue
// while it holds a shard's read lock.
type Conn interface {
	// Enqueue hands m to the connection's writer without blocking and
	// reports whether it was queued. A connection that returns true must
	// call m.Finish exactly once, even if it closes before writing.
	Enqueue(m *Message) bool
	// Close asks the connection to close with a WebSocket close code and
	// reason. It returns at once and is safe to call more than once.
	Close(code int, reason string)
}

// Config tunes a Hub. Zero values mean the documented default.
type Config struct {
	// MaxConns caps connections on this node; 0 means unlimited.
	MaxConns int
	// MaxConnsPerUID caps connections of one uid on this node; 0 means unlimited.
	MaxConnsPerUID int
	// OnPresence, if set, is called after a uid gained its first or lost
	// its last connection on this node, outside any hub lock. Calls for
	// one uid may arrive out of order; callers reconcile with Online.
	// The cluster route uses it to hold one subscription per present uid.
	OnPresence func(uid string)
}

// shardCount is a power of two so a shard is picked with a mask. 256 shards
// keep the chance that two busy uids share a lock small on any core count
// pusher runs on, at a cost of a few KiB.
const shardCount = 256

// Hub maps uid to that uid's live connections on this node. It is safe for
// concurrent use. There is no hub goroutine: callers do the work under a
// shard lock that is never held across I/O or a blocking send.
type Hub struct {
	cfg    Config
	shards [shardCount]shard

	// lifeMu guards count and closed; it is taken per connect and
	// disconnect only, never per message.
	lifeMu sync.Mutex
	count  int
	closed bool
	// drained is closed when closed is set and count reaches zero.
	drained chan struct{}
}

// shard is one slice of the uid map. mu guards conns; Route takes it for
// reading, Add and Remove for writing. A uid's slice is mutated in place
// under the write lock, so readers never see a partial update.
type shard struct {
	mu    sync.RWMutex
	conns map[string][]Conn
	_     [40]byte // keep neighbouring shards' locks off one cache line
}

// New returns an empty Hub.
func New(cfg Config) (*Hub, error) {
	if cfg.MaxConns < 0 || cfg.MaxConnsPerUID < 0 {
		return nil, errors.New("hub: negative connection limit")
	}
	h := &Hub{cfg: cfg, drained: make(chan struct{})}
	for i := range h.shards {
		h.shards[i].conns = make(map[string][]Conn)
	}
	return h, nil
}

// shardFor hashes uid with FNV-1a; inlined so lookups do not allocate.
func (h *Hub) shardFor(uid string) *shard {
	const (
		offset = 2166136261
		prime  = 16777619
	)
	var x uint32 = offset
	for i := 0; i < len(uid); i++ {
		x ^= uint32(uid[i])
		x *= prime
	}
	return &h.shards[x&(shardCount-1)]
}

// Add registers c under uid. It fails with ErrNodeFull, ErrUIDFull or
// ErrClosed; on success the caller must call Remove exactly once.
//
// added, if not nil, is called with uid's connection count on this node
// after the add, under the lock that orders uid's adds and removes: calls
// for one uid (with Remove's removed) come in the order of the changes,
// so presence events built from them never say "gone" after a later
// "here". It must not block or call back into the Hub.
func (h *Hub) Add(uid string, c Conn, added func(conns int)) error {
	h.lifeMu.Lock()
	if h.closed {
		h.lifeMu.Unlock()
		return ErrClosed
	}
	if h.cfg.MaxConns > 0 && h.count >= h.cfg.MaxConns {
		h.lifeMu.Unlock()
		return ErrNodeFull
	}
	h.count++ // reserve the slot before unlocking; given back below on failure
	h.lifeMu.Unlock()

	s := h.shardFor(uid)
	s.mu.Lock()
	list := s.conns[uid]
	if h.cfg.MaxConnsPerUID > 0 && len(list) >= h.cfg.MaxConnsPerUID {
		s.mu.Unlock()
		h.release()
		return ErrUIDFull
	}
	s.conns[uid] = append(list, c)
	if added != nil {
		added(len(list) + 1)
	}
	s.mu.Unlock()
	if len(list) == 0 && h.cfg.OnPresence != nil {
		h.cfg.OnPresence(uid)
	}
	return nil
}

// Remove unregisters c from uid. Once it returns, Route will not hand c
// another message, so the caller may drain c's queue knowing it stays empty.
// removed, if not nil, is called as Add's added is, if c was registered.
func (h *Hub) Remove(uid string, c Conn, removed func(conns int)) {
	s := h.shardFor(uid)
	s.mu.Lock()
	list := s.conns[uid]
	found := false
	for i := range list {
		if list[i] == c {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
			list = list[:last]
			found = true
			break
		}
	}
	gone := len(list) == 0
	if gone {
		delete(s.conns, uid)
	} else {
		s.conns[uid] = list
	}
	if found && removed != nil {
		removed(len(list))
	}
	s.mu.Unlock()
	if found {
		h.release()
		if gone && h.cfg.OnPresence != nil {
			h.cfg.OnPresence(uid)
		}
	}
}

// release gives back one connection slot and signals Shutdown's waiter
// when the last one goes.
func (h *Hub) release() {
	h.lifeMu.Lock()
	h.count--
	if h.closed && h.count == 0 {
		close(h.drained)
	}
	h.lifeMu.Unlock()
}

// Route hands m to every live connection of uid and returns how many
// connections uid has here. When it returns 0, m is untouched and its
// Reporter is never called: uid is offline on this node. Otherwise m's
// Reporter is called exactly once, possibly before Route returns: with nil
// as soon as one connection wrote m, or with the last error when every
// connection failed (including a full queue, reported as ErrQueueFull).
//
// Route never blocks and does not allocate.
func (h *Hub) Route(uid string, m *Message) int {
	m.pending.Store(1) // Route's own hold, so no early zero while enqueueing
	m.reported.Store(false)
	m.err.Store(nil)
	s := h.shardFor(uid)
	s.mu.RLock()
	n := fanOut(s.conns[uid], m)
	s.mu.RUnlock()
	if n == 0 {
		return 0
	}
	m.release()
	return n
}

// fanOut enqueues m on every connection in list; the caller holds the
// lock that guards list.
func fanOut(list []Conn, m *Message) int {
	for _, c := range list {
		m.pending.Add(1)
		if !c.Enqueue(m) {
			m.fail(ErrQueueFull)
		}
	}
	return len(list)
}

// Online reports whether uid has at least one live connection on this node.
func (h *Hub) Online(uid string) bool { return h.Count(uid) > 0 }

// Count returns how many live connections uid has on this node.
func (h *Hub) Count(uid string) int {
	s := h.shardFor(uid)
	s.mu.RLock()
	n := len(s.conns[uid])
	s.mu.RUnlock()
	return n
}

// Kick closes every connection of uid with code and reason and returns how
// many it asked to close. It does not wait for them to go.
func (h *Hub) Kick(uid string, code int, reason string) int {
	s := h.shardFor(uid)
	s.mu.RLock()
	list := append([]Conn(nil), s.conns[uid]...)
	s.mu.RUnlock()
	for _, c := range list {
		c.Close(code, reason)
	}
	return len(list)
}

// EachUID calls fn for every uid with a live connection on this node, one
// shard at a time, outside the shard's lock.
func (h *Hub) EachUID(fn func(uid string)) {
	var uids []string
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for uid := range s.conns {
			uids = append(uids, uid)
		}
		s.mu.RUnlock()
		for _, uid := range uids {
			fn(uid)
		}
		uids = uids[:0]
	}
}

// Len returns the number of live connections on this node (counting one
// being added at that instant). Metrics call it per scrape.
func (h *Hub) Len() int {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	return h.count
}

// Shutdown refuses new connections, asks every live one to close with code
// and reason, and waits until all have been removed or done is closed. It
// returns false when done closed first. Calling it again only waits.
func (h *Hub) Shutdown(done <-chan struct{}, code int, reason string) bool {
	h.lifeMu.Lock()
	if !h.closed {
		h.closed = true
		if h.count == 0 {
			close(h.drained)
		}
	}
	h.lifeMu.Unlock()

	var all []Conn
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for _, list := range s.conns {
			all = append(all, list...)
		}
		s.mu.RUnlock()
	}
	for _, c := range all {
		c.Close(code, reason)
	}
	select {
	case <-h.drained:
		return true
	case <-done:
		return false
	}
}
