package harness

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/wire"
)

// Paced publishing bounds.
const (
	// pacedWorkers publish concurrently, each one message at a time
	// until it is acked: enough for a few hundred messages a second at
	// tens of milliseconds per acked publish on a loaded machine.
	pacedWorkers = 32
	// pacedTick is how often the pacer hands out the messages that are due.
	pacedTick = 5 * time.Millisecond
	// pacedQueue is how many due messages may wait for a worker; a pacer
	// further ahead (NATS away) waits, and catches up when it is back.
	pacedQueue = 1024
	// pacedPublishTimeout bounds one publish; then it is sent again
	// (Nats-Msg-Id de-duplicates).
	pacedPublishTimeout = 5 * time.Second
	// pacedRetryDelay is the pause after a failed publish.
	pacedRetryDelay = 50 * time.Millisecond
)

// PacedPublisher publishes at a steady rate until stopped, as backends do
// while operators restart nodes: message i, id prefix+i (its Nats-Msg-Id
// and payload), goes to push.<uids[i mod len]>, and is published again
// until JetStream acks it. Messages come due at rate a second from the
// start; when publishing falls behind (NATS away), the due ones are
// published as soon as it can, as a backend's queue would. It has one NATS
// connection per URL, each reconnecting for ever, and its goroutines
// end at Stop or Close.
type PacedPublisher struct {
	uids   []string
	prefix string
	rate   float64
	conns  []*nats.Conn
	cancel context.CancelFunc // ends every goroutine (Close)
	stop   chan struct{}      // closed by Stop: no new message is due
	once   sync.Once          // closes stop
	wg     sync.WaitGroup     // the pacer and the workers

	due     atomic.Int64 // messages handed to the workers
	retries atomic.Int64

	mu    sync.Mutex
	acked map[string]struct{} // guarded by mu
}

// NewPacedPublisher connects to each of urls (a NATS node's URL, or a
// comma-separated list) and starts publishing rate messages a second to
// uids. The caller ends it (Stop, then Close).
func NewPacedPublisher(urls []string, uids []string, prefix string, rate float64) (*PacedPublisher, error) {
	if len(urls) == 0 || len(uids) == 0 || rate <= 0 {
		return nil, fmt.Errorf("paced publisher: %d urls, %d uids, rate %v", len(urls), len(uids), rate)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &PacedPublisher{uids: uids, prefix: prefix, rate: rate, cancel: cancel,
		stop: make(chan struct{}), acked: map[string]struct{}{}}
	var jss []jetstream.JetStream
	for _, url := range urls {
		nc, err := nats.Connect(url,
			nats.Name("paced-publisher"),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(100*time.Millisecond),
			nats.RetryOnFailedConnect(true),
			nats.ErrorHandler(quietErrors),
		)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("paced publisher connect %s: %w", url, err)
		}
		p.conns = append(p.conns, nc)
		js, err := jetstream.New(nc)
		if err != nil {
			p.Close()
			return nil, err
		}
		jss = append(jss, js)
	}
	jobs := make(chan int, pacedQueue)
	p.wg.Add(1 + pacedWorkers)
	go func() { defer p.wg.Done(); p.pace(ctx, jobs) }()
	for w := range pacedWorkers {
		js := jss[w%len(jss)]
		go func() { defer p.wg.Done(); p.work(ctx, js, jobs) }()
	}
	return p, nil
}

// StartPacedPublisher is NewPacedPublisher for tests; closed in t.Cleanup.
func StartPacedPublisher(t testing.TB, urls []string, uids []string, prefix string, rate float64) *PacedPublisher {
	t.Helper()
	p, err := NewPacedPublisher(urls, uids, prefix, rate)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// pace hands out message indexes as they come due, until Stop, then
// closes jobs.
func (p *PacedPublisher) pace(ctx context.Context, jobs chan<- int) {
	defer close(jobs)
	start := time.Now()
	tick := time.NewTicker(pacedTick)
	defer tick.Stop()
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.stop:
			return
		case now := <-tick.C:
			for due := int(now.Sub(start).Seconds() * p.rate); next < due; next++ {
				select {
				case jobs <- next:
					p.due.Add(1)
				case <-ctx.Done():
					return
				case <-p.stop:
					return
				}
			}
		}
	}
}

// work publishes each message from jobs until it is acked, until jobs is
// closed and drained or ctx ends.
func (p *PacedPublisher) work(ctx context.Context, js jetstream.JetStream, jobs <-chan int) {
	for i := range jobs {
		id := p.prefix + strconv.Itoa(i)
		subject := wire.PushSubject(p.uids[i%len(p.uids)])
		for {
			pctx, cancel := context.WithTimeout(ctx, pacedPublishTimeout)
			_, err := js.Publish(pctx, subject, []byte(id), jetstream.WithMsgID(id))
			cancel()
			if err == nil {
				p.mu.Lock()
				p.acked[id] = struct{}{}
				p.mu.Unlock()
				break
			}
			if ctx.Err() != nil {
				return
			}
			p.retries.Add(1)
			t := time.NewTimer(pacedRetryDelay)
			select { // not a wait for a condition: a failed publish is not repeated in a tight loop
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// Stop ends the pacing and waits up to timeout until every message that
// came due is acked. It returns the acked ids, and an error if some were
// not acked in time (their workers are ended).
func (p *PacedPublisher) Stop(timeout time.Duration) (map[string]struct{}, error) {
	p.once.Do(func() { close(p.stop) })
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var err error
	select {
	case <-done:
	case <-t.C:
		p.cancel()
		<-done
		err = fmt.Errorf("paced publisher: %d of %d due messages acked %s after the stop (%d retries)",
			p.Acked(), p.due.Load(), timeout, p.retries.Load())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]struct{}, len(p.acked))
	for id := range p.acked {
		out[id] = struct{}{}
	}
	if err == nil && int64(len(out)) != p.due.Load() {
		err = errors.New("paced publisher: a worker ended before its message was acked")
	}
	return out, err
}

// StopT is Stop for tests: it fails t, without stopping it, when some
// messages were not acked.
func (p *PacedPublisher) StopT(t testing.TB, timeout time.Duration) map[string]struct{} {
	t.Helper()
	acked, err := p.Stop(timeout)
	if err != nil {
		t.Error(err)
	}
	return acked
}

// Close ends every goroutine at once and closes the connections;
// idempotent.
func (p *PacedPublisher) Close() {
	p.once.Do(func() { close(p.stop) })
	p.cancel()
	p.wg.Wait()
	for _, nc := range p.conns {
		nc.Close()
	}
}

// WaitAckedT waits until at least n messages are acked, and fails t after
// timeout.
func (p *PacedPublisher) WaitAckedT(t testing.TB, n int64, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, fmt.Sprintf("%d paced publishes acked", n), func() error {
		return atLeast(p.Acked(), n, "acked")
	})
}

// Due is how many messages came due so far (handed to the workers).
func (p *PacedPublisher) Due() int64 { return p.due.Load() }

// Acked is how many messages JetStream acked so far.
func (p *PacedPublisher) Acked() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int64(len(p.acked))
}

// Retries is how many publishes were repeated.
func (p *PacedPublisher) Retries() int64 { return p.retries.Load() }

// Rate is the messages a second the publisher was started with.
func (p *PacedPublisher) Rate() float64 { return p.rate }
