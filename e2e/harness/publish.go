package harness

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/wire"
)

// Msg is one message a Publisher must get acked.
type Msg struct {
	ID      string // Nats-Msg-Id and payload key (MsgKey)
	Subject string
	Data    []byte
}

// TextMsgs builds n messages "m-<i>" spread over uids round-robin.
func TextMsgs(n int, uids []string) []Msg {
	out := make([]Msg, n)
	for i := range out {
		id := "m-" + strconv.Itoa(i)
		out[i] = Msg{ID: id, Subject: wire.PushSubject(uids[i%len(uids)]), Data: []byte(id)}
	}
	return out
}

// BigMsg is a 16 KiB payload for uid carrying id.
func BigMsg(id, uid string) Msg {
	const size = 16 << 10
	data := make([]byte, size)
	n := copy(data, id+"|")
	for i := n; i < size; i++ {
		data[i] = 'a' + byte(i%26)
	}
	return Msg{ID: id, Subject: wire.PushSubject(uid), Data: data}
}

// quietErrors drops nats.go's asynchronous errors: write errors while a
// server is killed are expected here, and the default handler prints each.
func quietErrors(*nats.Conn, *nats.Subscription, error) {}

// Connect connects to url (a comma-separated list may name a cluster's
// nodes), retrying and reconnecting for ever, so a connection made while a
// node is down still comes up; closed in t.Cleanup.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true), nats.ErrorHandler(quietErrors))
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Publish publishes one message through JetStream and returns its sequence.
func Publish(t testing.TB, js jetstream.JetStream, subject string, data []byte) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, subject, data)
	if err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

// StreamMsgs counts the messages of stream under subject filter (exact, or
// ending in a wildcard).
func StreamMsgs(t testing.TB, js jetstream.JetStream, stream, filter string) uint64 {
	t.Helper()
	n, err := streamMsgs(js, stream, filter)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func streamMsgs(js jetstream.JetStream, stream, filter string) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, fmt.Errorf("stream %s info: %w", stream, err)
	}
	var n uint64
	for subj, c := range info.State.Subjects {
		if filter == "" || strings.HasSuffix(filter, "*") || subj == filter {
			n += c
		}
	}
	return n, nil
}

// WaitStreamMsgs waits until stream holds want messages under filter.
func WaitStreamMsgs(t testing.TB, timeout time.Duration, js jetstream.JetStream, stream, filter string, want uint64) {
	t.Helper()
	WaitFor(t, timeout, fmt.Sprintf("%d messages in %s under %s", want, stream, filter), StreamHolds(js, stream, filter, want))
}

// StreamHolds is a WaitFor condition: stream holds want messages under
// filter.
func StreamHolds(js jetstream.JetStream, stream, filter string, want uint64) func() error {
	return func() error {
		n, err := streamMsgs(js, stream, filter)
		if err == nil && n != want {
			err = fmt.Errorf("%d there", n)
		}
		return err
	}
}

// Publisher publishes messages asynchronously with Nats-Msg-Id set and
// republishes each until JetStream acks it (errors, ack timeouts, NATS
// down), so retries de-duplicate. It survives server restarts. Its two
// goroutines end when every message is acked, at its deadline, or at
// Close.
type Publisher struct {
	msgs     []Msg
	nc       *nats.Conn
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	allAcked chan struct{}
	acked    atomic.Int64
	retries  atomic.Int64

	mu       sync.Mutex
	ackedIDs map[string]struct{} // guarded by mu
}

// StartPublisher connects to url and starts publishing msgs; it gives up
// after timeout. It is closed in t.Cleanup.
func StartPublisher(t testing.TB, url string, msgs []Msg, timeout time.Duration) *Publisher {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.Name("fault-test-publisher"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(64<<20),
		nats.ErrorHandler(quietErrors),
	)
	if err != nil {
		t.Fatalf("publisher connect: %v", err)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(512),
		jetstream.WithPublishAsyncTimeout(3*time.Second),
	)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	p := &Publisher{
		msgs: msgs, nc: nc, cancel: cancel,
		allAcked: make(chan struct{}),
		ackedIDs: make(map[string]struct{}, len(msgs)),
	}
	// Every index is in exactly one place (todo, being published, futs,
	// being awaited), so neither channel send ever blocks.
	todo := make(chan int, len(msgs))
	for i := range msgs {
		todo <- i
	}
	futs := make(chan inflight, len(msgs))
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.publish(ctx, js, todo, futs) }()
	go func() { defer p.wg.Done(); p.await(ctx, todo, futs) }()
	t.Cleanup(p.Close)
	return p
}

// inflight is a published message awaiting its ack.
type inflight struct {
	i   int
	fut jetstream.PubAckFuture
}

// publish sends each index from todo, retrying a refused publish.
func (p *Publisher) publish(ctx context.Context, js jetstream.JetStream, todo <-chan int, futs chan<- inflight) {
	for {
		var i int
		select {
		case <-ctx.Done():
			return
		case <-p.allAcked:
			return
		case i = <-todo:
		}
		m := p.msgs[i]
		for {
			fut, err := js.PublishAsync(m.Subject, m.Data, jetstream.WithMsgID(m.ID))
			if err == nil {
				futs <- inflight{i, fut}
				break
			}
			p.retries.Add(1)
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				select { // not stalled: do not spin
				case <-ctx.Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
}

// await takes acks in publish order and sends failed ones back to todo.
func (p *Publisher) await(ctx context.Context, todo chan<- int, futs <-chan inflight) {
	for {
		var f inflight
		select {
		case <-ctx.Done():
			return
		case f = <-futs:
		}
		select {
		case <-f.fut.Ok():
			p.mu.Lock()
			p.ackedIDs[p.msgs[f.i].ID] = struct{}{}
			n := len(p.ackedIDs)
			p.mu.Unlock()
			p.acked.Store(int64(n))
			if n == len(p.msgs) {
				close(p.allAcked)
				return
			}
		case err := <-f.fut.Err():
			_ = err // whatever it was, republish: Nats-Msg-Id keeps one copy
			p.retries.Add(1)
			todo <- f.i
		case <-ctx.Done():
			return
		}
	}
}

// Close stops publishing and closes the connection; idempotent.
func (p *Publisher) Close() {
	p.cancel()
	p.wg.Wait()
	p.nc.Close()
}

// Msgs are the messages to publish.
func (p *Publisher) Msgs() []Msg { return p.msgs }

// Acked is how many messages JetStream acked so far.
func (p *Publisher) Acked() int64 { return p.acked.Load() }

// Retries is how many publishes were repeated.
func (p *Publisher) Retries() int64 { return p.retries.Load() }

// Wait blocks until every message is acked or the publisher gives up, and
// returns the acked ids; it fails t if some were never acked.
func (p *Publisher) Wait(t testing.TB) map[string]struct{} {
	t.Helper()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ackedIDs) != len(p.msgs) {
		t.Errorf("publisher: %d of %d messages acked before its deadline (%d retries)", len(p.ackedIDs), len(p.msgs), p.retries.Load())
	}
	out := make(map[string]struct{}, len(p.ackedIDs))
	for k := range p.ackedIDs {
		out[k] = struct{}{}
	}
	return out
}

// WaitAcked waits until at least n messages are acked.
func (p *Publisher) WaitAcked(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, fmt.Sprintf("%d publishes acked", n), func() error {
		return atLeast(p.Acked(), n, "acked")
	})
}

func atLeast(got, want int64, what string) error {
	if got < want {
		return fmt.Errorf("%d %s", got, what)
	}
	return nil
}

// Publishers publish one message list round-robin over one Publisher per
// NATS node, each connected to its node first (it fails over to the
// servers the cluster advertises).
type Publishers []*Publisher

// StartPublishers starts one Publisher per node of c with its share of msgs.
func StartPublishers(t testing.TB, c *Cluster, msgs []Msg, timeout time.Duration) Publishers {
	t.Helper()
	shares := make([][]Msg, c.Size())
	for i, m := range msgs {
		shares[i%c.Size()] = append(shares[i%c.Size()], m)
	}
	ps := make(Publishers, c.Size())
	for i := range c.Size() {
		ps[i] = StartPublisher(t, c.URL(i), shares[i], timeout)
	}
	return ps
}

// Acked is the publishers' acked total.
func (ps Publishers) Acked() int64 {
	var n int64
	for _, p := range ps {
		n += p.Acked()
	}
	return n
}

// Retries is the publishers' retries total.
func (ps Publishers) Retries() int64 {
	var n int64
	for _, p := range ps {
		n += p.Retries()
	}
	return n
}

// WaitAcked waits until at least n messages are acked over all publishers.
func (ps Publishers) WaitAcked(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, fmt.Sprintf("%d publishes acked", n), func() error {
		return atLeast(ps.Acked(), n, "acked")
	})
}

// Wait waits for every publisher and returns the union of acked ids.
func (ps Publishers) Wait(t testing.TB) map[string]struct{} {
	t.Helper()
	out := map[string]struct{}{}
	for _, p := range ps {
		for id := range p.Wait(t) {
			out[id] = struct{}{}
		}
	}
	return out
}

// Close closes every publisher.
func (ps Publishers) Close() {
	for _, p := range ps {
		p.Close()
	}
}
