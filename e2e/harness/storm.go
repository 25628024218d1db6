package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/wire"
)

// Connect storms: clients that reconnect as the official client does,
// and what their dials cost while every client of a restarted node comes
// back at once.

// stormHandshakeTimeout bounds one dial of a BackoffClients client, as a
// browser's connect timeout would; a storm's slowest handshakes are what
// is measured, so it is generous.
const stormHandshakeTimeout = 15 * time.Second

// stormTokenTTL outlives any run.
const stormTokenTTL = 2 * time.Hour

// stormBuffer is a BackoffClients connection's read and write buffer size:
// test frames are small, and 15,000 connections per load-generating
// process (the benchmark's) should not cost 8 KiB each.
const stormBuffer = 1024

// DialResult is how a connect attempt ended.
type DialResult int

// How a connect attempt ended.
const (
	// DialOK: upgraded.
	DialOK DialResult = iota
	// DialBusy: refused by admission control (503 with Retry-After).
	DialBusy
	// DialFailed: anything else (refused connection, reset, timeout,
	// another status).
	DialFailed
)

// Dial is one connect attempt.
type Dial struct {
	Start  time.Time     // the dial began
	Took   time.Duration // to the upgrade done, or to the failure
	Node   int           // index of the URL dialed
	UID    string
	Result DialResult
	// Backoff is the wait the policy chose after a failed or refused
	// attempt; 0 for DialOK.
	Backoff time.Duration
}

// DialLog keeps every connect attempt of a group of clients, to measure
// the dials of a time window (a storm). Safe for concurrent use.
type DialLog struct {
	mu    sync.Mutex
	dials []Dial // in the order they ended; guarded by mu
}

// Add records a connect attempt.
func (l *DialLog) Add(d Dial) {
	l.mu.Lock()
	l.dials = append(l.dials, d)
	l.mu.Unlock()
}

// DialStats summarises the connect attempts of a window.
type DialStats struct {
	OK, Busy, Failed int
	// P50, P99 and Max are the nearest-rank percentiles of the OK dials'
	// times from the dial's start to the upgrade done; 0 without any.
	P50, P99, Max time.Duration
	// MaxBackoff is the longest wait the policy chose after a failed or
	// refused attempt.
	MaxBackoff time.Duration
}

// String is the stats as FIGURES fields.
func (s DialStats) String() string {
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("dials_ok=%d refused_busy=%d dials_failed=%d connect_p50=%s connect_p99=%s connect_max=%s max_backoff=%s",
		s.OK, s.Busy, s.Failed, ms(s.P50), ms(s.P99), ms(s.Max), ms(s.MaxBackoff))
}

// Between returns the attempts that started in [from, to).
func (l *DialLog) Between(from, to time.Time) []Dial {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Dial
	for _, d := range l.dials {
		if !d.Start.Before(from) && d.Start.Before(to) {
			out = append(out, d)
		}
	}
	return out
}

// Window summarises the attempts that started in [from, to).
func (l *DialLog) Window(from, to time.Time) DialStats {
	var s DialStats
	var took []time.Duration
	for _, d := range l.Between(from, to) {
		switch d.Result {
		case DialOK:
			s.OK++
			took = append(took, d.Took)
		case DialBusy:
			s.Busy++
		default:
			s.Failed++
		}
		s.MaxBackoff = max(s.MaxBackoff, d.Backoff)
	}
	if len(took) > 0 {
		slices.Sort(took)
		s.P50, s.P99, s.Max = Percentile(took, 50), Percentile(took, 99), took[len(took)-1]
	}
	return s
}

// Percentile is the nearest-rank p-th percentile of sorted, which must not
// be empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(p/100*float64(len(sorted))+0.999999) - 1 // ceil(p/100 × n) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// BackoffClientsConfig describes the clients NewBackoffClients runs: one
// per uid, each reconnecting to any node with the official client's
// back-off.
type BackoffClientsConfig struct {
	URLs []string // every node's ws:// URL
	UIDs []string
	// First is the node client i dials first; i mod len(URLs) when nil.
	First func(i int) int
	// LocalIPs, when set, are the loopback source addresses the clients
	// dial from, client i from LocalIPs[i mod len]: one source address has
	// ~28,000 ephemeral ports per destination.
	LocalIPs []net.IP
	// Secret signs each client's token; Secret when empty.
	Secret string
	// Rec gets every frame and each uid's connection state; required.
	Rec *Recorder
	// Clock, when set, gets every frame's arrival.
	Clock *FrameClock
}

// BackoffClients is a group of WebSocket clients that reconnect as the
// official client does (web/client/pusher.js): after a connection ends or
// a dial fails, each waits out Backoff (full jitter from 500 ms doubling to
// 20 s, at least 100 ms, reset once a connection stayed open 10 s; a 503
// with Retry-After or a close 1013 is waited out plus up to as much again)
// and dials the next node, as a round-robin load balancer would send it:
// the clients of one node step through the others 1 or 2 nodes at a time,
// alternately, so those of a node that goes away spread over the others.
// pusher.js has one URL (the load balancer's) and the same policy. Every
// attempt goes to Dials. One goroutine per client, stopped and waited for
// by Stop.
type BackoffClients struct {
	Clients
	dials *DialLog
	n     int

	mu     sync.Mutex
	online int       // clients connected now; guarded by mu
	fullAt time.Time // when online last reached n; guarded by mu
}

// NewBackoffClients starts cfg's clients at once. The caller stops them
// (Stop).
func NewBackoffClients(cfg BackoffClientsConfig) (*BackoffClients, error) {
	if cfg.Rec == nil || len(cfg.URLs) == 0 {
		return nil, errors.New("backoff clients: no recorder or no URLs")
	}
	secret := cfg.Secret
	if secret == "" {
		secret = Secret
	}
	headers := make([]http.Header, len(cfg.UIDs))
	for i, uid := range cfg.UIDs {
		tok, err := auth.Sign([]byte(secret), uid, stormTokenTTL, time.Now())
		if err != nil {
			return nil, fmt.Errorf("token for %s: %w", uid, err)
		}
		headers[i] = http.Header{"Authorization": {"Bearer " + tok}}
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &BackoffClients{Clients: Clients{cancel: cancel}, dials: &DialLog{}, n: len(cfg.UIDs)}
	for i, uid := range cfg.UIDs {
		first := i % len(cfg.URLs)
		if cfg.First != nil {
			first = cfg.First(i)
		}
		nd := &net.Dialer{}
		if len(cfg.LocalIPs) > 0 {
			nd.LocalAddr = &net.TCPAddr{IP: cfg.LocalIPs[i%len(cfg.LocalIPs)]}
		}
		c := &backoffClient{
			g: g, cfg: &cfg, uid: uid, header: headers[i],
			node: first, step: 1 + (i/len(cfg.URLs))%max(len(cfg.URLs)-1, 1),
			dialer: websocket.Dialer{HandshakeTimeout: stormHandshakeTimeout, NetDialContext: nd.DialContext,
				ReadBufferSize: stormBuffer, WriteBufferSize: stormBuffer},
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			c.run(ctx)
		}()
	}
	return g, nil
}

// StartBackoffClients is NewBackoffClients for tests: stopped in
// t.Cleanup.
func StartBackoffClients(t testing.TB, cfg BackoffClientsConfig) *BackoffClients {
	t.Helper()
	g, err := NewBackoffClients(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	return g
}

// Dials is every connect attempt of the group's clients.
func (g *BackoffClients) Dials() *DialLog { return g.dials }

// Online is how many of the clients are connected now.
func (g *BackoffClients) Online() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.online
}

// AllOnline returns nil, and the moment the last client connected, once
// every client is connected; otherwise how many are.
func (g *BackoffClients) AllOnline() (time.Time, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.online < g.n {
		return time.Time{}, fmt.Errorf("%d of %d clients connected", g.online, g.n)
	}
	return g.fullAt, nil
}

// WaitAllOnline waits up to timeout until every client is connected, and
// returns when the last one connected.
func (g *BackoffClients) WaitAllOnline(ctx context.Context, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := Poll(ctx, timeout, "every client connected", func() error {
		var err error
		at, err = g.AllOnline()
		return err
	})
	return at, err
}

// setOnline counts a client connecting or disconnecting.
func (g *BackoffClients) setOnline(on bool) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if !on {
		g.online--
		return
	}
	g.online++
	if g.online == g.n {
		g.fullAt = now
	}
}

// backoffClient is one client of a BackoffClients; run is its goroutine
// and owns every field.
type backoffClient struct {
	g          *BackoffClients
	cfg        *BackoffClientsConfig
	uid        string
	header     http.Header
	node, step int // the node dialed next; step must be coprime with len(URLs)
	dialer     websocket.Dialer
	backoff    Backoff
}

// run connects, and waits out the back-off after each attempt, until ctx
// ends.
func (c *backoffClient) run(ctx context.Context) {
	for ctx.Err() == nil {
		wait := c.connect(ctx)
		if ctx.Err() != nil {
			return
		}
		t := time.NewTimer(wait)
		select { // the policy's back-off, not a wait for a condition
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// connect makes one connect attempt and, if it upgrades, reads frames
// until the connection ends. It returns the back-off before the next.
func (c *backoffClient) connect(ctx context.Context) time.Duration {
	node := c.node
	c.node = (c.node + c.step) % len(c.cfg.URLs)
	start := time.Now()
	conn, resp, err := c.dialer.DialContext(ctx, c.cfg.URLs[node], c.header)
	d := Dial{Start: start, Took: time.Since(start), Node: node, UID: c.uid}
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		asked := RetryAfter(resp)
		d.Result = DialFailed
		if asked > 0 {
			d.Result = DialBusy
		}
		d.Backoff = c.backoff.Next(asked)
		c.g.dials.Add(d)
		return d.Backoff
	}
	c.g.dials.Add(d)
	openedAt := time.Now()
	c.g.setOnline(true)
	err = readFrames(ctx, conn, c.uid, c.cfg.Rec, c.cfg.Clock)
	c.g.setOnline(false)
	c.backoff.Ended(time.Since(openedAt))
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return c.backoff.Next(CloseRetryAfter(ce.Code, ce.Text))
	}
	return c.backoff.Next(0)
}

// DLQStored is PUSH_DLQ's last sequence: how many dead letters it ever
// stored (a replay deletes them, which does not lower it), so the
// difference over a storm is how many piled up in it.
func DLQStored(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	info, err := dlqInfo(ctx, js)
	if err != nil {
		return 0, err
	}
	return info.State.LastSeq, nil
}

// OfflineDeadLetters counts PUSH_DLQ's dead letters with reason offline:
// what replay-on-connect owes users when they return. An empty stream
// costs one request; otherwise each dead letter is read.
func OfflineDeadLetters(ctx context.Context, js jetstream.JetStream) (int, error) {
	info, err := dlqInfo(ctx, js)
	if err != nil || info.State.Msgs == 0 {
		return 0, err
	}
	n := 0
	err = consumer.NewDLQ(js).Each(ctx, "", func(dl consumer.DeadLetter, _ error) error {
		if dl.Reason == wire.ReasonOffline {
			n++
		}
		return nil
	})
	return n, err
}

func dlqInfo(ctx context.Context, js jetstream.JetStream) (*jetstream.StreamInfo, error) {
	s, err := js.Stream(ctx, wire.DLQStreamName)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", wire.DLQStreamName, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s info: %w", wire.DLQStreamName, err)
	}
	return info, nil
}

// AfterReady looks at a storm's dials (in the order they ended, as
// DialLog.Between returns them) from the moment the node was ready: how
// many failed (not refused as busy), and the longest a client took from
// its first dial then to its connection — the server's share of the
// return, without the back-off a client was still waiting out when the
// node became ready.
func AfterReady(storm []Dial, ready time.Time) (failed int, longest time.Duration) {
	firstDial := map[string]time.Time{}
	for _, d := range storm { // in the order they ended: a client's in its order
		if d.Start.Before(ready) {
			continue
		}
		if _, ok := firstDial[d.UID]; !ok {
			firstDial[d.UID] = d.Start
		}
		switch d.Result {
		case DialFailed:
			failed++
		case DialOK:
			longest = max(longest, d.Start.Add(d.Took).Sub(firstDial[d.UID]))
		}
	}
	return failed, longest
}
