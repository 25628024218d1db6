package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/pusher-io/pusher/auth"
)

// Secret is the JWT_SECRET of the pushers the harness starts unless their
// config names another; Token signs with it.
const Secret = "test-secret-0123456789abcdef0123456789"

// readyTimeout bounds a pusher's start: its own consumer start may take
// up to 60s on a cluster that is still electing leaders.
const readyTimeout = 60 * time.Second

// Pusher log events the tests and the benchmark look for (README, "Logs").
const (
	EventReady         = "pusher.ready"
	EventStopped       = "pusher.stopped"
	EventShutdownStep  = "pusher.shutdown_incomplete"
	EventNATSDown      = "nats.disconnected"
	EventNATSUp        = "nats.reconnected"
	EventConsumerError = "consumer.error"
)

// PusherConfig describes one pusher process. The addresses left empty are
// reserved up front (ReserveAddrs); Config returns them filled in, so a
// restart comes back on the same ones.
type PusherConfig struct {
	Bin  string // the pusher binary (BuildPusher)
	Name string // for messages; "pusher" when empty
	// HTTPAddr is PUSHER_HTTP_ADDR.
	HTTPAddr string
	// NATSURL is PUSHER_NATS_URL: external NATS, comma-separated URLs.
	// Empty: the embedded server, listening on NATSListen.
	NATSURL    string
	NATSListen string // PUSHER_NATS_LISTEN
	DataDir    string // PUSHER_DATA_DIR; required
	Secret     string // JWT_SECRET; Secret when empty
	Replicas   int    // PUSHER_REPLICAS, when not 0
	Routing    string // PUSHER_ROUTING, when not empty
	// Env sets any other variable, by its README name
	// ("PUSHER_BACKOFF": "100ms"); it wins over the fields above.
	Env map[string]string
	// LogPath, when set, receives the output instead of Log (ProcConfig).
	LogPath string
}

// Pusher is one pusher process started by the harness. It is ready when
// its /readyz answers 200: connected to NATS, consumer pulling, listening.
type Pusher struct {
	cfg  PusherConfig
	proc *Proc
}

// LaunchPusher starts a pusher without waiting for it (WaitReady).
func LaunchPusher(cfg PusherConfig) (*Pusher, error) {
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("pusher %s: no data dir", cfg.Name)
	}
	if cfg.Name == "" {
		cfg.Name = "pusher"
	}
	if cfg.Secret == "" {
		cfg.Secret = Secret
	}
	var need []*string
	if cfg.HTTPAddr == "" {
		need = append(need, &cfg.HTTPAddr)
	}
	if cfg.NATSURL == "" && cfg.NATSListen == "" {
		need = append(need, &cfg.NATSListen)
	}
	addrs, err := ReserveAddrs(len(need))
	if err != nil {
		return nil, err
	}
	for i, a := range need {
		*a = addrs[i]
	}
	proc, err := NewProc(ProcConfig{Name: cfg.Name, Bin: cfg.Bin, Args: []string{"serve"}, Env: cfg.env(), LogPath: cfg.LogPath})
	if err != nil {
		return nil, err
	}
	return &Pusher{cfg: cfg, proc: proc}, nil
}

// env is the process's environment on top of CleanEnv.
func (c PusherConfig) env() map[string]string {
	env := map[string]string{
		"JWT_SECRET":       c.Secret,
		"PUSHER_HTTP_ADDR": c.HTTPAddr,
		"PUSHER_DATA_DIR":  c.DataDir,
	}
	if c.NATSURL != "" {
		env["PUSHER_NATS_URL"] = c.NATSURL
	}
	if c.NATSListen != "" {
		env["PUSHER_NATS_LISTEN"] = c.NATSListen
	}
	if c.Replicas != 0 {
		env["PUSHER_REPLICAS"] = strconv.Itoa(c.Replicas)
	}
	if c.Routing != "" {
		env["PUSHER_ROUTING"] = c.Routing
	}
	for k, v := range c.Env {
		env[k] = v
	}
	return env
}

// NewPusher starts a pusher and waits until it is ready; on an error the
// process is killed.
func NewPusher(ctx context.Context, cfg PusherConfig) (*Pusher, error) {
	p, err := LaunchPusher(cfg)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, readyTimeout); err != nil {
		_ = p.proc.Kill()
		return nil, err
	}
	return p, nil
}

// StartPusher is NewPusher for tests, with its data in t.TempDir() unless
// cfg.DataDir is set; the process is killed in t.Cleanup.
func StartPusher(t testing.TB, cfg PusherConfig) *Pusher {
	t.Helper()
	p := LaunchPusherT(t, cfg)
	p.WaitReadyT(t)
	return p
}

// LaunchPusherT is LaunchPusher for tests, like StartPusher.
func LaunchPusherT(t testing.TB, cfg PusherConfig) *Pusher {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	p, err := LaunchPusher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.proc.Kill() })
	return p
}

// WaitReady waits until /readyz answers 200; a process that exits first
// ends the wait at once.
func (p *Pusher) WaitReady(ctx context.Context, timeout time.Duration) error {
	return Poll(ctx, timeout, p.cfg.Name+" ready", func() error {
		if err := p.proc.Alive(); err != nil {
			return Abort(err)
		}
		status, body, err := HTTPGet(ctx, "http://"+p.cfg.HTTPAddr+"/readyz")
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("/readyz %d %s", status, body)
		}
		return nil
	})
}

// WaitReadyT is WaitReady for tests.
func (p *Pusher) WaitReadyT(t testing.TB) {
	t.Helper()
	if err := p.WaitReady(context.Background(), readyTimeout); err != nil {
		t.Fatal(err)
	}
}

// Config is the pusher's config with its addresses filled in.
func (p *Pusher) Config() PusherConfig { return p.cfg }

// Name is the pusher's name.
func (p *Pusher) Name() string { return p.cfg.Name }

// Proc is the pusher's process.
func (p *Pusher) Proc() *Proc { return p.proc }

// Log is the pusher's log (nil with LogPath).
func (p *Pusher) Log() *Log { return p.proc.Log() }

// HTTPAddr is where the pusher serves HTTP and WebSocket.
func (p *Pusher) HTTPAddr() string { return p.cfg.HTTPAddr }

// NATSURL is the NATS the pusher uses: its external NATS, or its embedded
// server.
func (p *Pusher) NATSURL() string {
	if p.cfg.NATSURL != "" {
		return p.cfg.NATSURL
	}
	return "nats://" + p.cfg.NATSListen
}

// Metrics scrapes the pusher's /metrics.
func (p *Pusher) Metrics(ctx context.Context) (Metrics, error) { return Scrape(ctx, p.cfg.HTTPAddr) }

// Token signs a JWT for uid with Secret.
func Token(t testing.TB, uid string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.Sign([]byte(Secret), uid, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// HTTPGet fetches url without keep-alive (so no idle connection outlives
// the call on either side) and returns the status and body.
func HTTPGet(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
