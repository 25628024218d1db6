package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ClusterName is the NATS cluster the nodes form.
const ClusterName = "pusher"

// formTimeout bounds the wait for a cluster (or a restarted node) to form.
const formTimeout = 60 * time.Second

// ClusterConfig describes a NATS cluster of nats-server processes with
// JetStream on file storage.
type ClusterConfig struct {
	Bin  string // nats-server binary (BuildNATSServer)
	Size int    // nodes, named nats-1...; 3 when 0; 1 is a standalone server, no routes
	// Dir holds each node's store dir (and log file); required.
	Dir string
	// Prefix goes before the store dirs' and log files' names, to keep
	// several clusters in one Dir apart ("c2-").
	Prefix string
	// LogFiles sends each node's output to Dir/<Prefix>nats-<i>.log
	// instead of memory (Proc.Stderr).
	LogFiles bool
	// Args are more nats-server flags for every node.
	Args []string
}

// Cluster is a running NATS cluster on loopback ports chosen up front
// (client, route and monitoring, per node), so a node can be killed and
// started again as itself: same ports, same store dir. Its methods are for
// one goroutine, the test's or the benchmark's.
type Cluster struct {
	cfg     ClusterConfig
	client  []string // host:port for clients, per node
	route   []string // host:port of the route listener, per node
	monitor []string // host:port of the HTTP monitoring endpoint, per node
	procs   []*Proc  // nil until launched
}

// NewCluster starts every node and waits until the cluster has formed:
// each node routes to every other, knows the JetStream meta leader, and
// answers a JetStream request from a client connected to it alone. On an
// error it kills what it started.
func NewCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if cfg.Size == 0 {
		cfg.Size = 3
	}
	addrs, err := ReserveAddrs(3 * cfg.Size)
	if err != nil {
		return nil, err
	}
	n := cfg.Size
	c := &Cluster{cfg: cfg, client: addrs[:n], route: addrs[n : 2*n], monitor: addrs[2*n:], procs: make([]*Proc, n)}
	for i := range n {
		if err := c.launch(i); err != nil {
			c.KillAll()
			return nil, err
		}
	}
	if err := c.WaitFormed(ctx, formTimeout); err != nil {
		c.KillAll()
		return nil, err
	}
	return c, nil
}

// StartCluster is NewCluster for tests, in t.TempDir() unless cfg.Dir is
// set; every node is killed in t.Cleanup.
func StartCluster(t testing.TB, cfg ClusterConfig) *Cluster {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	c, err := NewCluster(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.KillAll)
	return c
}

// Size is the number of nodes.
func (c *Cluster) Size() int { return c.cfg.Size }

// Name is node i's server name.
func (c *Cluster) Name(i int) string { return "nats-" + strconv.Itoa(i+1) }

// Proc is node i's current process.
func (c *Cluster) Proc(i int) *Proc { return c.procs[i] }

// StoreDir is node i's JetStream store dir.
func (c *Cluster) StoreDir(i int) string {
	return filepath.Join(c.cfg.Dir, c.cfg.Prefix+c.Name(i)+"-store")
}

// LogPath is node i's log file with LogFiles, else "".
func (c *Cluster) LogPath(i int) string {
	if !c.cfg.LogFiles {
		return ""
	}
	return filepath.Join(c.cfg.Dir, c.cfg.Prefix+c.Name(i)+".log")
}

// ClientAddr is node i's client host:port.
func (c *Cluster) ClientAddr(i int) string { return c.client[i] }

// URL is node i's client URL.
func (c *Cluster) URL(i int) string { return "nats://" + c.client[i] }

// URLs lists every node's client URL, comma-separated, starting with node
// first.
func (c *Cluster) URLs(first int) string {
	var out []string
	for k := range c.cfg.Size {
		out = append(out, c.URL((first+k)%c.cfg.Size))
	}
	return strings.Join(out, ",")
}

// LiveURLs lists the client URLs of the nodes that run.
func (c *Cluster) LiveURLs() string {
	var out []string
	for i := range c.cfg.Size {
		if c.Alive(i) {
			out = append(out, c.URL(i))
		}
	}
	return strings.Join(out, ",")
}

// Alive reports whether node i runs.
func (c *Cluster) Alive(i int) bool { return c.procs[i] != nil && !c.procs[i].Exited() }

// launch starts node i's process, without waiting.
func (c *Cluster) launch(i int) error {
	host, port, err := net.SplitHostPort(c.client[i])
	if err != nil {
		return err
	}
	_, mport, err := net.SplitHostPort(c.monitor[i])
	if err != nil {
		return err
	}
	args := []string{"-js", "-sd", c.StoreDir(i), "-a", host, "-p", port, "-m", mport, "-n", c.Name(i)}
	if c.cfg.Size > 1 {
		var routes []string
		for j, r := range c.route {
			if j != i {
				routes = append(routes, "nats://"+r)
			}
		}
		args = append(args, "--cluster_name", ClusterName, "--cluster", "nats://"+c.route[i], "--routes", strings.Join(routes, ","))
	}
	p, err := NewProc(ProcConfig{Name: c.Name(i), Bin: c.cfg.Bin, Args: append(args, c.cfg.Args...), LogPath: c.LogPath(i)})
	if err != nil {
		return err
	}
	c.procs[i] = p
	return nil
}

// WaitFormed waits until every running node has formed (see NewCluster).
func (c *Cluster) WaitFormed(ctx context.Context, timeout time.Duration) error {
	for i := range c.cfg.Size {
		if !c.Alive(i) {
			continue
		}
		err := Poll(ctx, timeout, "NATS cluster formed at "+c.Name(i), func() error {
			if err := c.procs[i].Alive(); err != nil {
				return Abort(err)
			}
			return c.Formed(ctx, i)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Formed returns nil when node i has routes to every other running node,
// knows the JetStream meta leader and answers a JetStream request from a
// client connected to it alone; otherwise what is missing.
func (c *Cluster) Formed(ctx context.Context, i int) error {
	if c.cfg.Size > 1 {
		var routez struct {
			Routes []struct {
				RemoteName string `json:"remote_name"`
			} `json:"routes"`
		}
		if err := c.MonitorJSON(ctx, i, "/routez", &routez); err != nil {
			return err
		}
		peers := map[string]bool{}
		for _, r := range routez.Routes {
			peers[r.RemoteName] = true
		}
		for j := range c.cfg.Size {
			if j != i && c.Alive(j) && !peers[c.Name(j)] {
				return errors.New("no route to " + c.Name(j))
			}
		}
		var jsz struct {
			Meta struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		if err := c.MonitorJSON(ctx, i, "/jsz", &jsz); err != nil {
			return err
		}
		if jsz.Meta.Leader == "" {
			return errors.New("no JetStream meta leader")
		}
	}
	return jetStreamAnswers(ctx, c.URL(i))
}

// jetStreamAnswers returns nil when a client connected to url alone gets
// an answer to a JetStream account info request.
func jetStreamAnswers(ctx context.Context, url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("JetStream account info: %w", err)
	}
	return nil
}

// MonitorJSON GETs path from node i's monitoring endpoint into v.
func (c *Cluster) MonitorJSON(ctx context.Context, i int, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.monitor[i]+path, nil)
	if err != nil {
		return err
	}
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s GET %s: %s", c.Name(i), path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("%s GET %s: %w", c.Name(i), path, err)
	}
	return nil
}

// Kill SIGKILLs node i and waits until it is reaped.
func (c *Cluster) Kill(i int) error {
	if err := c.procs[i].Alive(); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	return c.procs[i].Kill()
}

// KillT is Kill for tests.
func (c *Cluster) KillT(t testing.TB, i int) {
	t.Helper()
	if err := c.Kill(i); err != nil {
		t.Fatal(err)
	}
}

// Restart starts node i again on its ports and store dir and waits until
// the cluster has formed again.
func (c *Cluster) Restart(ctx context.Context, i int) error {
	if c.Alive(i) {
		return fmt.Errorf("restart %s: still runs", c.Name(i))
	}
	if err := c.launch(i); err != nil {
		return err
	}
	return c.WaitFormed(ctx, formTimeout)
}

// RestartT is Restart for tests.
func (c *Cluster) RestartT(t testing.TB, i int) {
	t.Helper()
	if err := c.Restart(context.Background(), i); err != nil {
		t.Fatal(err)
	}
}

// KillAll kills every node that runs; for cleanups and error paths.
func (c *Cluster) KillAll() {
	for _, p := range c.procs {
		if p != nil {
			_ = p.Kill()
		}
	}
}

// ConnNames counts node i's client connections by name ("pusher", ...).
func (c *Cluster) ConnNames(ctx context.Context, i int) (map[string]int, error) {
	var connz struct {
		Conns []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := c.MonitorJSON(ctx, i, "/connz?limit=100000", &connz); err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, cn := range connz.Conns {
		out[cn.Name]++
	}
	return out, nil
}
