package main

// Senders put the benchmark's messages on their way: JetStream async
// publishes into push.<uid> (pusher's door, the way a backend publishes),
// or HTTP requests from a pool of keep-alive connections (the original
// demo's /send, its only door; pusher's POST /v1/push in the http phase).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// httpRequestTimeout bounds one HTTP publish request, so a stuck
	// server ends a phase instead of hanging it.
	httpRequestTimeout = 30 * time.Second
	// httpMaxAnswer caps how much of an answer is read.
	httpMaxAnswer = 1 << 20
)

// sender starts messages to uids (by index) without waiting for each
// outcome: at most a bounded number are in flight, beyond which send
// blocks. One goroutine calls send; finish waits for every outcome.
type sender interface {
	// send starts data to uid k.
	send(k int, data []byte) error
	// failed is the first failure so far, nil if none; any goroutine may
	// call it at any time.
	failed() error
	// finish waits until every message sent has its outcome (at most for
	// the stall timeout) and returns failed(); send must not be called
	// after it.
	finish(ctx context.Context) error
	// close releases the sender, finished or not; idempotent.
	close()
}

// newSender is the publisher for the server under test: JetStream async
// publishes into push.<uid> for pusher, at most maxPending unacknowledged;
// HTTP /send from --http-publishers keep-alive connections for the demo,
// at most maxPending queued.
func (b *bench) newSender(ctx context.Context, name string, maxPending int, uids []string) (sender, error) {
	if b.demo != nil {
		p, err := newHTTPPool(ctx, b.demoDoor(), uids, b.cfg.httpPublishers, maxPending)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	return newJSSender(b.natsURL(), name, maxPending, uids, b.cfg.stall)
}

var (
	_ sender = (*jsSender)(nil)
	_ sender = (*httpPool)(nil)
)

// jsSender publishes asynchronously into push.<uid>.
type jsSender struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	subjects []string
	stall    time.Duration
	errs     atomic.Int64 // asynchronous publish errors
}

func newJSSender(url, name string, maxPending int, uids []string, stall time.Duration) (*jsSender, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.DontRandomize())
	if err != nil {
		return nil, fmt.Errorf("connect NATS: %w", err)
	}
	s := &jsSender{nc: nc, stall: stall}
	s.js, err = jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { s.errs.Add(1) }))
	if err != nil {
		nc.Close()
		return nil, err
	}
	s.subjects = make([]string, len(uids))
	for i, u := range uids {
		s.subjects[i] = "push." + u
	}
	return s, nil
}

func (s *jsSender) send(k int, data []byte) error {
	if _, err := s.js.PublishAsync(s.subjects[k], data, jetstream.WithStallWait(s.stall)); err != nil {
		return fmt.Errorf("publish to %s: %w", s.subjects[k], err)
	}
	return nil
}

func (s *jsSender) failed() error {
	if n := s.errs.Load(); n > 0 {
		return fmt.Errorf("%d asynchronous publish errors", n)
	}
	return nil
}

func (s *jsSender) finish(ctx context.Context) error {
	t := time.NewTimer(s.stall)
	defer t.Stop()
	select {
	case <-s.js.PublishAsyncComplete():
	case <-t.C:
		return fmt.Errorf("%d publish acks still pending after %s", s.js.PublishAsyncPending(), s.stall)
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.failed()
}

func (s *jsSender) close() { s.nc.Close() }

// doorKind is the form of an HTTP publishing endpoint.
type doorKind string

const (
	doorSingle doorKind = "single" // pusher POST /v1/push {"uid","message"} -> 202 {"seq":N}
	doorBatch  doorKind = "batch"  // pusher POST /v1/push [{"uid","message"},...] -> {"results":[{"seq":N}|{"error":"..."},...]}
	doorSend   doorKind = "send"   // the demo's /send, a form POST uid=&message= -> 200, empty
)

// door is one HTTP publishing endpoint: where requests go, how one is
// built and how its answer is read.
type door struct {
	kind  doorKind
	url   string
	warm  string // a cheap GET on the same server, to open each connection before the phase
	key   string // bearer API key; "" sends none
	batch int    // messages per request
}

// errNoBatch marks a batch door that answered 400 to an array: the
// server does not have the batch form.
var errNoBatch = errors.New("the batch form is not available")

// body writes the request body for the messages data to uids ks.
func (d door) body(buf *bytes.Buffer, uids []string, ks []int, data [][]byte) {
	// Payloads and uids are plain ASCII without quotes, backslashes or
	// form metacharacters, so they go in verbatim.
	switch d.kind {
	case doorSend:
		buf.WriteString("uid=")
		buf.WriteString(uids[ks[0]])
		buf.WriteString("&message=")
		buf.Write(data[0])
		return
	case doorBatch:
		buf.WriteByte('[')
	}
	for i, k := range ks {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`{"uid":"`)
		buf.WriteString(uids[k])
		buf.WriteString(`","message":"`)
		buf.Write(data[i])
		buf.WriteString(`"}`)
	}
	if d.kind == doorBatch {
		buf.WriteByte(']')
	}
}

func (d door) contentType() string {
	if d.kind == doorSend {
		return "application/x-www-form-urlencoded"
	}
	return "application/json"
}

// read takes the answer to a request of n messages apart: how many were
// accepted, and the first rejection's text. A request that failed as a
// whole is an error (errNoBatch for a 400 to a batch).
func (d door) read(status int, body []byte, n int) (accepted int, rejection string, err error) {
	bad := func() error {
		return fmt.Errorf("HTTP %d %s", status, bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	switch d.kind {
	case doorSend:
		if status != http.StatusOK {
			return 0, "", bad()
		}
		return 1, "", nil
	case doorSingle:
		var a struct {
			Seq uint64 `json:"seq"`
		}
		if status != http.StatusAccepted || json.Unmarshal(body, &a) != nil || a.Seq == 0 {
			return 0, "", bad()
		}
		return 1, "", nil
	}
	var a struct {
		Results []struct {
			Seq   uint64 `json:"seq"`
			Error string `json:"error"`
		} `json:"results"`
	}
	jsonErr := json.Unmarshal(body, &a)
	switch {
	case status == http.StatusBadRequest && (jsonErr != nil || a.Results == nil):
		return 0, "", fmt.Errorf("%w: %w", errNoBatch, bad())
	case status < 200 || status > 299 || jsonErr != nil:
		return 0, "", bad()
	case len(a.Results) != n:
		return 0, "", fmt.Errorf("%d results for %d messages: %w", len(a.Results), n, bad())
	}
	for _, r := range a.Results {
		switch {
		case r.Error == "" && r.Seq > 0:
			accepted++
		case rejection == "":
			rejection = r.Error
			if rejection == "" {
				rejection = "a result with neither seq nor error"
			}
		}
	}
	return accepted, rejection, nil
}

// httpJob is one request's messages.
type httpJob struct {
	ks   []int    // uid indexes
	data [][]byte // payloads
}

// httpPool sends requests to a door from workers goroutines, each with
// its own keep-alive connection, taking jobs from a queue.
type httpPool struct {
	door door
	uids []string

	ctx    context.Context
	cancel context.CancelFunc
	jobs   chan httpJob
	wg     sync.WaitGroup
	once   sync.Once // closes jobs

	requests  atomic.Int64 // answered, whatever the answer
	accepted  atomic.Int64 // messages
	rejected  atomic.Int64 // messages refused one by one in a batch
	failedN   atomic.Int64 // messages in requests that failed as a whole
	first     atomic.Pointer[string]
	firstRej  atomic.Pointer[string]
	noBatch   atomic.Pointer[error]
	durations [][]int64 // per worker: each request's duration, ns; read after the workers ended
}

// newHTTPPool starts workers, each of which first opens its connection
// with a GET of d.warm, and returns once they all have.
func newHTTPPool(ctx context.Context, d door, uids []string, workers, queue int) (*httpPool, error) {
	p := &httpPool{door: d, uids: uids, jobs: make(chan httpJob, queue), durations: make([][]int64, workers)}
	p.ctx, p.cancel = context.WithCancel(ctx)
	warmed := make(chan error, workers)
	for i := range workers {
		p.wg.Add(1)
		go p.work(i, warmed)
	}
	var errs []error
	for range workers {
		errs = append(errs, <-warmed)
	}
	if err := errors.Join(errs...); err != nil {
		p.close()
		return nil, fmt.Errorf("open %d connections to %s: %w", workers, d.warm, err)
	}
	return p, nil
}

// work sends the jobs' requests over one keep-alive connection, opened
// by a GET of the door's warm URL, whose outcome goes to warmed.
func (p *httpPool) work(i int, warmed chan<- error) {
	defer p.wg.Done()
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
	defer tr.CloseIdleConnections() // no idle connection outlives the phase on the server
	cl := &http.Client{Transport: tr, Timeout: httpRequestTimeout}
	warmed <- p.get(cl, p.door.warm)
	var buf bytes.Buffer
	for job := range p.jobs {
		if p.ctx.Err() != nil || p.noBatch.Load() != nil {
			continue // drain
		}
		buf.Reset()
		p.door.body(&buf, p.uids, job.ks, job.data)
		req, err := http.NewRequestWithContext(p.ctx, http.MethodPost, p.door.url, bytes.NewReader(buf.Bytes()))
		if err != nil {
			p.fail(len(job.ks), err)
			continue
		}
		req.Header.Set("Content-Type", p.door.contentType())
		if p.door.key != "" {
			req.Header.Set("Authorization", "Bearer "+p.door.key)
		}
		t0 := time.Now()
		resp, err := cl.Do(req)
		if err != nil {
			p.fail(len(job.ks), err)
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, httpMaxAnswer))
		_ = resp.Body.Close()
		p.durations[i] = append(p.durations[i], int64(time.Since(t0)))
		p.requests.Add(1)
		if err != nil {
			p.fail(len(job.ks), fmt.Errorf("read answer: %w", err))
			continue
		}
		n, rejection, err := p.door.read(resp.StatusCode, body, len(job.ks))
		if errors.Is(err, errNoBatch) {
			p.noBatch.CompareAndSwap(nil, &err)
			continue
		}
		if err != nil {
			p.fail(len(job.ks), err)
			continue
		}
		p.accepted.Add(int64(n))
		if r := len(job.ks) - n; r > 0 {
			p.rejected.Add(int64(r))
			p.firstRej.CompareAndSwap(nil, &rejection)
		}
	}
}

// get fetches url and reads the answer, which must be 200.
func (p *httpPool) get(cl *http.Client, url string) error {
	req, err := http.NewRequestWithContext(p.ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, httpMaxAnswer))
	_ = resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return err
}

func (p *httpPool) fail(n int, err error) {
	p.failedN.Add(int64(n))
	msg := err.Error()
	p.first.CompareAndSwap(nil, &msg)
}

// submit queues one request, blocking while the queue is full.
func (p *httpPool) submit(job httpJob) error {
	select {
	case p.jobs <- job:
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}

func (p *httpPool) send(k int, data []byte) error {
	return p.submit(httpJob{ks: []int{k}, data: [][]byte{data}})
}

func (p *httpPool) failed() error {
	if e := p.noBatch.Load(); e != nil {
		return *e
	}
	if msg := p.first.Load(); msg != nil {
		return fmt.Errorf("%d messages in failed requests to %s; first: %s", p.failedN.Load(), p.door.url, *msg)
	}
	return nil
}

// finish closes the queue and waits for the workers, at most until ctx
// ends (requests are bounded by httpRequestTimeout), then returns
// failed(); the http phase reads the counters instead.
func (p *httpPool) finish(ctx context.Context) error {
	p.once.Do(func() { close(p.jobs) })
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.cancel()
		<-done // requests end with p.ctx
		return ctx.Err()
	}
	return p.failed()
}

func (p *httpPool) close() {
	p.cancel()
	p.once.Do(func() { close(p.jobs) })
	p.wg.Wait()
}

// requestTimes is every answered request's duration, sorted; only after
// finish.
func (p *httpPool) requestTimes() []int64 {
	var all []int64
	for _, d := range p.durations {
		all = append(all, d...)
	}
	slices.Sort(all)
	return all
}
