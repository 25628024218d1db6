package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Defaults applied by NewJWKS to zero JWKSConfig fields.
const (
	// DefaultJWKSRefresh is how often the JWKS document is fetched in the
	// background: providers announce a new key well ahead of signing with
	// it, and an unknown kid is fetched for anyway.
	DefaultJWKSRefresh = 10 * time.Minute
	// DefaultJWKSUnknownKID is the least time between two fetches caused
	// by tokens with a kid not in the key set, so junk tokens cannot make
	// pusher hammer the provider.
	DefaultJWKSUnknownKID = 15 * time.Second
	// DefaultJWKSTimeout bounds one fetch: connecting, the response and
	// reading the document.
	DefaultJWKSTimeout = 10 * time.Second
	// DefaultJWKSMaxBytes is the largest JWKS document read (1 MiB);
	// providers' documents are a few KiB.
	DefaultJWKSMaxBytes = 1 << 20
)

// errJWKSClosed answers Refresh after Close.
var errJWKSClosed = errors.New("JWKS closed")

// maxJWKSRedirects bounds the redirects one fetch follows.
const maxJWKSRedirects = 3

// Log events of the key set.
const (
	evJWKSRefreshed = "auth.jwks_refreshed"
	evJWKSFailed    = "auth.jwks_failed"
	evJWKSPlainHTTP = "auth.jwks_plain_http"
)

// Why a fetch happened, in the events' reason field.
const (
	reasonStart      = "start"
	reasonInterval   = "interval"
	reasonUnknownKID = "unknown_kid"
)

// JWKSConfig tunes a JWKS. Zero values mean the documented default.
type JWKSConfig struct {
	// URL is the identity provider's JWKS document. It must be https://,
	// or http:// (logged as a warning) for tests and providers on a
	// trusted network. Redirects are followed (at most 3), never from
	// https to http.
	URL string
	// RefreshInterval is how often the document is fetched in the
	// background; default DefaultJWKSRefresh (10m). After a failure the
	// next try comes sooner: UnknownKIDInterval, doubling up to this.
	RefreshInterval time.Duration
	// UnknownKIDInterval is the least time between two fetches caused by
	// a token whose kid is not in the key set; default
	// DefaultJWKSUnknownKID (15s).
	UnknownKIDInterval time.Duration
	// Timeout bounds one fetch; default DefaultJWKSTimeout (10s).
	Timeout time.Duration
	// MaxBytes is the largest document read; a larger one fails the fetch
	// without being read further. Default DefaultJWKSMaxBytes (1 MiB).
	MaxBytes int64
	// Now is the clock of the unknown-kid rate limit; default time.Now.
	Now func() time.Time
}

// JWKSStats counts a JWKS's fetches, for metrics.
type JWKSStats struct {
	// Succeeded and Failed count finished fetches by outcome.
	Succeeded, Failed uint64
	// Keys is the number of usable keys in the set in use.
	Keys int
}

// JWKS is the verification keys of an identity provider's JWKS document,
// fetched over HTTP and cached. A Verifier configured with it reads the
// cached set without locks; a token whose kid is not in it makes the
// Verifier ask for one rate-limited fetch (see Verifier.Verify).
//
// Fetches: Refresh (at start), the background refresher (every
// RefreshInterval once Start was called), and unknown kids (at most one
// per UnknownKIDInterval). At most one fetch runs at a time; whoever
// needs one while one runs waits for that one. A fetch runs on the
// goroutine that started it, under a context that Close cancels and
// Timeout bounds. A failed fetch keeps the last good key set.
//
// Lifecycle: NewJWKS (configuration only, no I/O), Refresh, Start, then
// Close, which stops the refresher and cancels any fetch. Lookups keep
// working from the cache after Close.
type JWKS struct {
	// Static after NewJWKS.
	cfg    JWKSConfig
	logURL string // scheme://host/path: no credentials, no query
	client *http.Client
	log    *zap.Logger
	ctx    context.Context // the JWKS's life: ended by Close
	cancel context.CancelFunc
	nudges chan string // unknown kids for the refresher; VerifyCached's non-blocking path

	keys              atomic.Pointer[keySet] // the last good set; nil until a fetch succeeded
	succeeded, failed atomic.Uint64

	mu          sync.Mutex
	flight      *flight   // guarded by mu: the fetch running, nil when none
	lastUnknown time.Time // guarded by mu: when the last unknown-kid fetch started
	started     bool      // guarded by mu: Start ran (or Close did, so Start must not)

	wg sync.WaitGroup // the refresher, waited for by Close
}

// flight is one fetch, shared by everyone who needs it while it runs.
type flight struct {
	ctx    context.Context
	cancel context.CancelFunc
	reason string
	done   chan struct{} // closed when the fetch finished
	err    error         // the fetch's result; written before done is closed
}

// NewJWKS validates cfg and applies defaults. It does no I/O and starts
// nothing: call Refresh for the first key set and Start for the
// background refresher, and Close when done.
func NewJWKS(cfg JWKSConfig, log *zap.Logger) (*JWKS, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// Not url.Error itself: it would repeat the URL, password and all.
		return nil, fmt.Errorf("JWKS URL: %w", errors.Unwrap(err))
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("JWKS URL %q: want https://host/path (or http:// on a trusted network)", (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String())
	}
	switch {
	case cfg.RefreshInterval < 0, cfg.UnknownKIDInterval < 0, cfg.Timeout < 0:
		return nil, errors.New("JWKS: negative interval or timeout")
	case cfg.MaxBytes < 0:
		return nil, errors.New("JWKS: negative max bytes")
	}
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = DefaultJWKSRefresh
	}
	if cfg.UnknownKIDInterval == 0 {
		cfg.UnknownKIDInterval = DefaultJWKSUnknownKID
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultJWKSTimeout
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultJWKSMaxBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// A fetch every few minutes needs no kept-alive connection, and none
	// should outlive Close.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	j := &JWKS{
		cfg:    cfg,
		logURL: (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String(),
		client: &http.Client{Transport: tr, CheckRedirect: checkJWKSRedirect},
		log:    log.Named("auth"),
		nudges: make(chan string, 1),
	}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	if u.Scheme == "http" {
		j.log.Warn(evJWKSPlainHTTP, zap.String("url", j.logURL), zap.String("detail",
			"the JWKS is fetched over plain HTTP: whoever can answer in the provider's place can mint tokens; use https:// outside a trusted network"))
	}
	return j, nil
}

func checkJWKSRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxJWKSRedirects {
		return fmt.Errorf("more than %d redirects", maxJWKSRedirects)
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return errors.New("redirect from https to plain http")
	}
	return nil
}

// Refresh fetches the document now, or waits for the fetch already
// running, and returns its error. It blocks for at most Timeout; ctx
// ending cancels the fetch if this call started it, or stops the wait.
// A failure is not logged: the caller decides what it means.
func (j *JWKS) Refresh(ctx context.Context) error {
	fl, leader := j.begin(reasonStart)
	if fl == nil {
		return errJWKSClosed
	}
	if leader {
		stop := context.AfterFunc(ctx, fl.cancel)
		j.run(fl)
		stop()
		return fl.err
	}
	select {
	case <-fl.done:
		return fl.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start starts the background refresher: every RefreshInterval (sooner
// after a failure, or while no key set was ever fetched), and for the
// unknown kids VerifyCached hands it. Close stops it. Start after Close,
// or a second Start, does nothing.
func (j *JWKS) Start() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.started {
		return
	}
	j.started = true
	j.wg.Go(j.refresher)
}

// Close stops the refresher and waits for it, and cancels any fetch
// running; the cached keys stay in use. Idempotent.
func (j *JWKS) Close() {
	j.mu.Lock()
	j.started = true // a later Start must not start anything
	j.mu.Unlock()
	j.cancel()
	j.wg.Wait()
	j.client.CloseIdleConnections()
}

// Stats returns the fetch counters and the size of the key set in use.
func (j *JWKS) Stats() JWKSStats {
	return JWKSStats{Succeeded: j.succeeded.Load(), Failed: j.failed.Load(), Keys: j.keys.Load().len()}
}

// lookup returns the cached key named kid for alg, or nil. It never
// blocks.
func (j *JWKS) lookup(kid, alg string) crypto.PublicKey { return j.keys.Load().lookup(kid, alg) }

// refetch makes one rate-limited attempt to learn kid: it joins the fetch
// running, or starts one on this goroutine unless an unknown-kid fetch
// started less than UnknownKIDInterval ago. It reports whether the key
// set now names kid, and blocks for at most Timeout.
func (j *JWKS) refetch(kid string) bool {
	if j.keys.Load().has(kid) { // a fetch since the caller looked brought it
		return true
	}
	switch fl, leader := j.begin(reasonUnknownKID); {
	case fl == nil:
		return false
	case leader:
		j.run(fl)
	default:
		<-fl.done // bounded: the fetch's context has Timeout
	}
	return j.keys.Load().has(kid)
}

// nudge hands kid to the refresher for a rate-limited refetch, without
// blocking; if the refresher is busy or not running, nothing happens.
func (j *JWKS) nudge(kid string) {
	select {
	case j.nudges <- kid:
	default:
	}
}

// begin returns the fetch running (leader false), or registers a new one
// for reason that the caller must run (leader true). An unknown-kid fetch
// is refused (nil) when the last one started less than
// UnknownKIDInterval ago; any fetch is refused after Close.
func (j *JWKS) begin(reason string) (fl *flight, leader bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.flight != nil {
		return j.flight, false
	}
	if j.ctx.Err() != nil {
		return nil, false
	}
	if reason == reasonUnknownKID {
		now := j.cfg.Now()
		if !j.lastUnknown.IsZero() && now.Sub(j.lastUnknown) < j.cfg.UnknownKIDInterval {
			return nil, false
		}
		j.lastUnknown = now
	}
	ctx, cancel := context.WithTimeout(j.ctx, j.cfg.Timeout)
	j.flight = &flight{ctx: ctx, cancel: cancel, reason: reason, done: make(chan struct{})}
	return j.flight, true
}

// run fetches for fl, installs a good key set, logs the outcome and
// releases fl's waiters. A failure at start is left to Refresh's caller.
func (j *JWKS) run(fl *flight) {
	defer fl.cancel()
	set, ignored, err := j.fetch(fl.ctx)
	if err == nil && set.len() == 0 {
		err = errNoUsableKeys
	}
	if err != nil {
		j.failed.Add(1)
		if len(ignored) > 0 {
			err = fmt.Errorf("%w (ignored: %v)", err, ignored)
		}
		if fl.reason != reasonStart && j.ctx.Err() == nil { // not Close cutting it short
			j.log.Warn(evJWKSFailed, zap.String("reason", fl.reason), zap.String("url", j.logURL),
				zap.Int("keys", j.keys.Load().len()), zap.Error(err))
		}
	} else {
		j.keys.Store(set)
		j.succeeded.Add(1)
		j.log.Info(evJWKSRefreshed, zap.String("reason", fl.reason), zap.Int("keys", set.len()),
			zap.Strings("kids", set.kids), zap.Strings("ignored", ignored))
	}
	j.mu.Lock()
	fl.err = err
	j.flight = nil
	j.mu.Unlock()
	close(fl.done)
}

// fetch GETs and parses the document under ctx.
func (j *JWKS) fetch(ctx context.Context) (*keySet, []string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.cfg.URL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("fetch JWKS: status %d", resp.StatusCode)
	}
	if resp.ContentLength > j.cfg.MaxBytes {
		return nil, nil, fmt.Errorf("fetch JWKS: document of %d bytes exceeds the limit of %d", resp.ContentLength, j.cfg.MaxBytes)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, j.cfg.MaxBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("fetch JWKS: read: %w", err)
	}
	if int64(len(body)) > j.cfg.MaxBytes {
		return nil, nil, fmt.Errorf("fetch JWKS: document exceeds the limit of %d bytes", j.cfg.MaxBytes)
	}
	return parseJWKS(body)
}

// refresher fetches every RefreshInterval, sooner after failures, and
// for the kids nudge hands it, until Close.
func (j *JWKS) refresher() {
	fails := 0
	if j.keys.Load() == nil {
		fails = 1 // the first fetch failed: keep trying soon
	}
	t := time.NewTimer(j.nextRefresh(fails))
	defer t.Stop()
	for {
		select {
		case <-j.ctx.Done():
			return
		case kid := <-j.nudges:
			j.refetch(kid)
			continue
		case <-t.C:
		}
		fl, leader := j.begin(reasonInterval)
		if leader {
			j.run(fl)
		} else {
			<-fl.done
		}
		if fl.err != nil {
			fails++
		} else {
			fails = 0
		}
		t.Reset(j.nextRefresh(fails))
	}
}

// nextRefresh is the wait before the next background fetch after fails
// failures in a row: UnknownKIDInterval doubling up to RefreshInterval.
func (j *JWKS) nextRefresh(fails int) time.Duration {
	if fails == 0 {
		return j.cfg.RefreshInterval
	}
	d := j.cfg.UnknownKIDInterval << min(fails-1, 16)
	return min(d, j.cfg.RefreshInterval)
}
