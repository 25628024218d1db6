package main

// Client mode ("bench client ..."): a child process the orchestrator starts
// several times. It holds a share of the WebSocket connections, reads every
// frame, and talks to the orchestrator over stdin (commands, one a line) and
// stdout (answers and periodic counts, one a line):
//
//	dial N PREFIX FIRST PARALLEL  open N connections for uids PREFIX+FIRST...,
//	                              at most PARALLEL handshakes in flight; uid
//	                              PREFIX+K goes to --url's (K mod n)th URL
//	                              -> ok dial OK FAILED START_NS END_NS FIRST_ERROR
//	phase KIND SIZE               start counting a phase (idle, throughput,
//	                              latency, http) of SIZE messages -> ok phase
//	report                        -> lat SEQ:NS SEQ:NS ... (latency phase), then
//	                              ok rep UNIQUE DUP BAD LAST_RECV_NS SAMPLES DROPPED FIRST_DROP
//	close                         close every connection with 1000 -> ok closed N
//	storm N PREFIX FIRST          start N reconnecting clients for uids
//	                              PREFIX+FIRST... (harness.BackoffClients: the
//	                              official client's back-off, over every --url,
//	                              from the --src addresses) -> ok storm
//	sstat                         -> ok sstat ONLINE N FULL_AT_NS FRAMES DUPS
//	                              (FULL_AT_NS: when all N were last online, 0
//	                              while some are not)
//	sdials FROM_NS TO_NS          the storm clients' connect attempts that
//	                              started in [FROM, TO) -> d START:TOOK:RESULT:BACKOFF:UID
//	                              ... (several a line), then ok sdials COUNT
//	sids                          every payload id the storm clients received
//	                              -> r ID ID ... (several a line), ok sids COUNT
//	quit                          close and exit
//
// With --token-query the token goes in the URL (?token=), as the original
// demo wants it, instead of an Authorization header.
//
// While a throughput, latency or http phase runs, "c UNIQUE" is written every
// countInterval when the count changed. Errors answer "err TEXT".

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/wire"
)

const (
	// countInterval is how often a client reports its cumulative count,
	// which is what the closed-loop publisher's window is computed from.
	countInterval = 5 * time.Millisecond
	// latencyChunk is how many latency samples go on one "lat" line.
	latencyChunk = 2000
	// clientBuffer is the WebSocket read and write buffer size: frames are
	// ~130 bytes, and 15,000 idle connections should not cost the load
	// generator 8 KiB each.
	clientBuffer = 1024
	// handshakeTimeout bounds one WebSocket dial.
	handshakeTimeout = 15 * time.Second
	// tokenTTL outlives any run.
	tokenTTL = 2 * time.Hour
	// closeWait bounds the wait for readers after close frames were sent.
	closeWait = 5 * time.Second
)

// phaseState counts one phase's frames. A new one replaces it at each
// "phase" command, so readers never see a reset half-way.
type phaseState struct {
	tag  byte // expected payload tag; 0 in the idle phase
	size uint64
	seen []atomic.Uint64 // bitmap of sequence numbers received

	unique, dup, bad atomic.Int64
	lastRecv         atomic.Int64 // unix ns of the latest receipt

	mu      sync.Mutex
	samples []int64  // latency phase: receive − intended, ns
	seqs    []uint64 // latency phase: each sample's sequence number
}

func newPhaseState(kind string, size uint64) (*phaseState, error) {
	st := &phaseState{size: size}
	switch kind {
	case "idle":
	case "throughput":
		st.tag = tagThroughput
	case "http":
		st.tag = tagHTTP
	case "latency":
		st.tag = tagLatency
		st.samples = make([]int64, 0, size)
		st.seqs = make([]uint64, 0, size)
	default:
		return nil, fmt.Errorf("unknown phase %q", kind)
	}
	st.seen = make([]atomic.Uint64, (size+63)/64)
	return st, nil
}

// record accounts for one frame received at nowNs.
func (st *phaseState) record(frame []byte, nowNs int64) {
	intended, seq, tag, ok := decodePayload(frame)
	if !ok || tag != st.tag || seq >= st.size {
		st.bad.Add(1)
		return
	}
	bit := uint64(1) << (seq % 64)
	if st.seen[seq/64].Or(bit)&bit != 0 {
		st.dup.Add(1)
		return
	}
	for {
		last := st.lastRecv.Load()
		if nowNs <= last || st.lastRecv.CompareAndSwap(last, nowNs) {
			break
		}
	}
	if st.tag == tagLatency {
		st.mu.Lock()
		st.samples = append(st.samples, nowNs-intended)
		st.seqs = append(st.seqs, seq)
		st.mu.Unlock()
	}
	st.unique.Add(1)
}

type client struct {
	id     int
	urls   []string
	srcs   []net.IP
	secret []byte
	v1     bool // speak pusher.v1: unwrap each envelope and ack it
	// tokenQuery puts the token in the URL's query (?token=) instead of
	// an Authorization header: the original demo reads it only there.
	tokenQuery bool

	outMu sync.Mutex
	out   *bufio.Writer

	cur     atomic.Pointer[phaseState]
	mu      sync.Mutex // guards conns
	conns   []*websocket.Conn
	readers sync.WaitGroup
	closing atomic.Bool

	dropped   atomic.Int64 // connections the server ended
	firstDrop atomic.Pointer[string]

	// The storm clients (storm command), at most one group; the
	// commands run one at a time, on the stdin loop's goroutine.
	storm    *harness.BackoffClients
	stormRec *harness.Recorder
	stormN   int // clients in storm
}

// runClient is client mode's main; it returns the exit code.
func runClient(args []string, stdin io.Reader, stdout io.Writer) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	id := fs.Int("id", 0, "client number")
	url := fs.String("url", "", "ws:// URL of pusher's /ws; comma-separated for several nodes")
	src := fs.String("src", "127.0.0.1", "comma-separated local source addresses")
	protocol := fs.String("protocol", "", `"v1" to speak pusher.v1 (envelopes, an ack per message); "" for raw frames`)
	tokenQuery := fs.Bool("token-query", false, "send the token as ?token= in the URL instead of an Authorization header (the original demo)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	secret := os.Getenv("BENCH_JWT_SECRET")
	if *url == "" || secret == "" {
		fmt.Fprintln(os.Stderr, "bench client: --url and BENCH_JWT_SECRET are required")
		return 2
	}
	if *protocol != "" && *protocol != "v1" {
		fmt.Fprintf(os.Stderr, "bench client: --protocol %q: want v1 or nothing\n", *protocol)
		return 2
	}
	c := &client{id: *id, urls: strings.Split(*url, ","), secret: []byte(secret), v1: *protocol == "v1", tokenQuery: *tokenQuery, out: bufio.NewWriterSize(stdout, 64<<10)}
	for _, s := range strings.Split(*src, ",") {
		ip := net.ParseIP(strings.TrimSpace(s))
		if ip == nil {
			fmt.Fprintf(os.Stderr, "bench client: bad source address %q\n", s)
			return 2
		}
		c.srcs = append(c.srcs, ip)
	}
	idle, _ := newPhaseState("idle", 0)
	c.cur.Store(idle)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reportDone := make(chan struct{})
	go func() { defer close(reportDone); c.reportCounts(ctx) }()
	defer func() { cancel(); <-reportDone }()

	in := bufio.NewScanner(stdin)
	for in.Scan() {
		line := strings.Fields(in.Text())
		if len(line) == 0 {
			continue
		}
		if line[0] == "quit" {
			break
		}
		reply, data := c.command(ctx, line)
		c.write(append(data, reply)...)
	}
	c.closeAll()
	return 0
}

func (c *client) write(lines ...string) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	for _, l := range lines {
		_, _ = c.out.WriteString(l)
		_ = c.out.WriteByte('\n')
	}
	_ = c.out.Flush()
}

// reportCounts writes the phase's unique count every countInterval while
// it changes.
func (c *client) reportCounts(ctx context.Context) {
	t := time.NewTicker(countInterval)
	defer t.Stop()
	var last int64 = -1
	var lastSt *phaseState
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := c.cur.Load()
		if st.tag == 0 {
			continue
		}
		n := st.unique.Load()
		if n != last || st != lastSt {
			c.write("c " + strconv.FormatInt(n, 10))
			last, lastSt = n, st
		}
	}
}

// command runs one command and returns its final reply line and any data
// lines before it.
func (c *client) command(ctx context.Context, f []string) (string, []string) {
	errf := func(format string, a ...any) (string, []string) {
		return "err " + strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", " "), nil
	}
	switch f[0] {
	case "dial":
		if len(f) != 5 {
			return errf("usage: dial N PREFIX FIRST PARALLEL")
		}
		n, err1 := strconv.Atoi(f[1])
		first, err2 := strconv.Atoi(f[3])
		par, err3 := strconv.Atoi(f[4])
		if err := errors.Join(err1, err2, err3); err != nil || n < 0 || par < 1 {
			return errf("dial: bad arguments %q", f[1:])
		}
		return c.dial(ctx, n, f[2], first, par)
	case "phase":
		if len(f) != 3 {
			return errf("usage: phase KIND SIZE")
		}
		size, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			return errf("phase: bad size %q", f[2])
		}
		st, err := newPhaseState(f[1], size)
		if err != nil {
			return errf("phase: %v", err)
		}
		c.cur.Store(st)
		return "ok phase", nil
	case "report":
		return c.report()
	case "close":
		return fmt.Sprintf("ok closed %d", c.closeAll()), nil
	case "storm", "sstat", "sdials", "sids":
		return c.stormCommand(f)
	}
	return errf("unknown command %q", f[0])
}

func (c *client) report() (string, []string) {
	st := c.cur.Load()
	st.mu.Lock()
	samples := append([]int64(nil), st.samples...)
	seqs := append([]uint64(nil), st.seqs...)
	st.mu.Unlock()
	var data []string
	var sb strings.Builder
	for i := 0; i < len(samples); i += latencyChunk {
		sb.Reset()
		sb.WriteString("lat")
		for j := i; j < min(i+latencyChunk, len(samples)); j++ {
			sb.WriteByte(' ')
			sb.WriteString(strconv.FormatUint(seqs[j], 10))
			sb.WriteByte(':')
			sb.WriteString(strconv.FormatInt(samples[j], 10))
		}
		data = append(data, sb.String())
	}
	firstDrop := "-"
	if p := c.firstDrop.Load(); p != nil {
		firstDrop = strconv.Quote(*p)
	}
	return fmt.Sprintf("ok rep %d %d %d %d %d %d %s", st.unique.Load(), st.dup.Load(), st.bad.Load(),
		st.lastRecv.Load(), len(samples), c.dropped.Load(), firstDrop), data
}

// dial opens n connections, tokens minted before the clock starts.
func (c *client) dial(ctx context.Context, n int, prefix string, first, parallel int) (string, []string) {
	tokens := make([]string, n)
	now := time.Now()
	for i := range tokens {
		tok, err := auth.Sign(c.secret, prefix+strconv.Itoa(first+i), tokenTTL, now)
		if err != nil {
			return "err " + err.Error(), nil
		}
		tokens[i] = tok
	}
	dialers := make([]*websocket.Dialer, len(c.srcs))
	for i, ip := range c.srcs {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: handshakeTimeout}
		dialers[i] = &websocket.Dialer{
			NetDialContext:   nd.DialContext,
			HandshakeTimeout: handshakeTimeout,
			ReadBufferSize:   clientBuffer,
			WriteBufferSize:  clientBuffer,
		}
		if c.v1 {
			dialers[i].Subprotocols = []string{wire.Subprotocol}
		}
	}
	c.closing.Store(false)
	var next, failed atomic.Int64
	var firstErr atomic.Pointer[string]
	var wg sync.WaitGroup
	start := time.Now()
	for range min(parallel, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				u, h := c.urls[(first+i)%len(c.urls)], http.Header{"Authorization": {"Bearer " + tokens[i]}}
				if c.tokenQuery {
					u, h = u+"?token="+tokens[i], nil
				}
				conn, resp, err := dialers[i%len(dialers)].DialContext(ctx, u, h)
				if resp != nil && resp.Body != nil {
					_ = resp.Body.Close()
				}
				if err != nil {
					failed.Add(1)
					msg := err.Error()
					if resp != nil {
						msg += " (HTTP " + resp.Status + ")"
					}
					firstErr.CompareAndSwap(nil, &msg)
					continue
				}
				c.mu.Lock()
				c.conns = append(c.conns, conn)
				c.mu.Unlock()
				c.readers.Add(1)
				go c.read(conn)
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	errText := "-"
	if p := firstErr.Load(); p != nil {
		errText = strconv.Quote(*p)
	}
	return fmt.Sprintf("ok dial %d %d %d %d %s", int64(n)-failed.Load(), failed.Load(),
		start.UnixNano(), end.UnixNano(), errText), nil
}

// read reads frames until the connection ends, accounting each to the
// current phase.
func (c *client) read(conn *websocket.Conn) {
	defer c.readers.Done()
	defer func() { _ = conn.Close() }()
	var buf [512]byte
	var ack []byte
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			if !c.closing.Load() {
				c.dropped.Add(1)
				msg := err.Error()
				c.firstDrop.CompareAndSwap(nil, &msg)
			}
			return
		}
		n := 0
		for {
			m, err := r.Read(buf[n:])
			n += m
			if err == io.EOF {
				break
			}
			if err != nil {
				break // NextReader reports it
			}
			if n == len(buf) {
				_, _ = io.Copy(io.Discard, r)
				break
			}
		}
		frame := buf[:n]
		if c.v1 {
			seq, payload, ok := unwrapEnvelope(frame)
			if !ok {
				c.cur.Load().bad.Add(1)
				continue
			}
			frame = payload
			// Ack at once, as the browser client does after its handler.
			ack = append(strconv.AppendUint(append(ack[:0], `{"ack":[`...), seq, 10), "]}"...)
			if err := conn.WriteMessage(websocket.TextMessage, ack); err != nil {
				continue // the next read reports the end
			}
		}
		c.cur.Load().record(frame, time.Now().UnixNano())
	}
}

// unwrapEnvelope takes seq and the payload out of a pusher.v1 envelope,
// {"seq":N,"data":"<payload>",...}; benchmark payloads are plain ASCII,
// so the JSON string holds them verbatim.
func unwrapEnvelope(b []byte) (seq uint64, payload []byte, ok bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"seq":`))
	if !ok {
		return 0, nil, false
	}
	i := bytes.IndexByte(rest, ',')
	if i < 0 {
		return 0, nil, false
	}
	seq, err := strconv.ParseUint(string(rest[:i]), 10, 64)
	if err != nil {
		return 0, nil, false
	}
	rest, ok = bytes.CutPrefix(rest[i:], []byte(`,"data":"`))
	if !ok {
		return 0, nil, false
	}
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return 0, nil, false
	}
	return seq, rest[:j], true
}

// closeAll sends a 1000 close frame on every connection, waits for the
// readers (bounded), and returns how many connections there were.
func (c *client) closeAll() int {
	if c.storm != nil {
		c.storm.Stop()
		c.storm = nil
	}
	c.closing.Store(true)
	c.mu.Lock()
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	var wg sync.WaitGroup
	work := make(chan *websocket.Conn)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for conn := range work {
				_ = conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			}
		}()
	}
	for _, conn := range conns {
		work <- conn
	}
	close(work)
	wg.Wait()
	done := make(chan struct{})
	go func() { c.readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(closeWait):
		for _, conn := range conns {
			_ = conn.Close()
		}
		<-done
	}
	return len(conns)
}

// stormChunk is how many dials or ids go on one sdials or sids line.
const stormChunk = 1000

// stormCommand runs the storm commands: the reconnecting clients are the
// harness's (the e2e storm tests'), run here because one process cannot
// hold the storm's sockets; the orchestrator merges what each process saw.
func (c *client) stormCommand(f []string) (string, []string) {
	errf := func(format string, a ...any) (string, []string) {
		return "err " + strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", " "), nil
	}
	switch f[0] {
	case "storm":
		if len(f) != 4 {
			return errf("usage: storm N PREFIX FIRST")
		}
		n, err1 := strconv.Atoi(f[1])
		first, err2 := strconv.Atoi(f[3])
		if err := errors.Join(err1, err2); err != nil || n < 1 || c.storm != nil {
			return errf("storm: bad arguments %q, or clients already running", f[1:])
		}
		uids := make([]string, n)
		for i := range uids {
			uids[i] = f[2] + strconv.Itoa(first+i)
		}
		c.stormRec = harness.NewRecorder()
		g, err := harness.NewBackoffClients(harness.BackoffClientsConfig{
			URLs: c.urls, UIDs: uids, LocalIPs: c.srcs, Secret: string(c.secret), Rec: c.stormRec,
		})
		if err != nil {
			return errf("storm: %v", err)
		}
		c.storm, c.stormN = g, n
		return "ok storm", nil
	}
	if c.storm == nil {
		return errf("%s: no storm clients", f[0])
	}
	switch f[0] {
	case "sstat":
		var full int64
		if at, err := c.storm.AllOnline(); err == nil {
			full = at.UnixNano()
		}
		return fmt.Sprintf("ok sstat %d %d %d %d %d", c.storm.Online(), c.stormN, full,
			c.stormRec.Frames(), c.stormRec.Duplicates()), nil
	case "sdials":
		if len(f) != 3 {
			return errf("usage: sdials FROM_NS TO_NS")
		}
		from, err1 := strconv.ParseInt(f[1], 10, 64)
		to, err2 := strconv.ParseInt(f[2], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return errf("sdials: bad arguments %q", f[1:])
		}
		dials := c.storm.Dials().Between(time.Unix(0, from), time.Unix(0, to))
		var data []string
		var sb strings.Builder
		for i, d := range dials {
			if i%stormChunk == 0 {
				if sb.Len() > 0 {
					data = append(data, sb.String())
				}
				sb.Reset()
				sb.WriteString("d")
			}
			fmt.Fprintf(&sb, " %d:%d:%d:%d:%s", d.Start.UnixNano(), d.Took.Nanoseconds(), d.Result, d.Backoff.Nanoseconds(), d.UID)
		}
		if sb.Len() > 0 {
			data = append(data, sb.String())
		}
		return fmt.Sprintf("ok sdials %d", len(dials)), data
	default: // sids
		ids := c.stormRec.IDs()
		var data []string
		for i := 0; i < len(ids); i += stormChunk {
			data = append(data, "r "+strings.Join(ids[i:min(i+stormChunk, len(ids))], " "))
		}
		return fmt.Sprintf("ok sids %d", len(ids)), data
	}
}
