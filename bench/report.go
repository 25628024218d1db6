package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// anchorsNote is the reference figures measured elsewhere with the same
// method, printed under the table.
const anchorsNote = "anchors (same method, measured elsewhere): original demo 17.5 KiB/conn, ~25 µs CPU/msg, 30.8k msgs/s, p99 1.7 ms; " +
	"Centrifugo 47.6 KiB/conn, ~36 µs CPU/msg, 24.4k msgs/s, p99 2.9 ms; JetStream alone ~3.7 µs/msg."

// metric is one measured number: a table row and a JSON line.
type metric struct {
	Name   string  `json:"metric"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Target float64 `json:"target,omitempty"`
	Op     string  `json:"target_op,omitempty"` // "<=" or ">="; empty: no target
	Meets  *bool   `json:"meets_target,omitempty"`
	Extra  string  `json:"detail,omitempty"`
	// NA marks a figure that could not be measured (the server lacks
	// the feature); Value is 0 and no target is judged.
	NA bool `json:"not_available,omitempty"`

	Label      string `json:"-"`
	AnchorText string `json:"-"`
	prec       int
	hidden     bool // JSON only
}

type results struct {
	// variant, when set, marks every metric added as measured with that
	// variant of pusher's configuration (for example "write" for
	// PUSHER_DELIVERY_CONFIRM=write): its name gets the suffix, its label
	// the tag, and the targets, which are the default's, are dropped.
	variant      string
	metrics      []metric
	logs         []string // per-pusher log summaries
	demoLogs     []string // the demo's log summary
	natsLogs     []string // cluster mode: per-nats-server log summaries
	natsProblems []string // cluster mode: distinct nats-server warnings and errors, with counts
}

func (r *results) add(m metric) {
	if r.variant != "" {
		m.Name += "_" + r.variant
		if m.Label != "" {
			m.Label = "[" + r.variant + "] " + strings.TrimLeft(m.Label, " ")
		}
		m.Op, m.Target, m.AnchorText = "", 0, ""
	}
	if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
		m.Value = 0
	}
	scale := math.Pow(10, float64(m.prec+2))
	m.Value = math.Round(m.Value*scale) / scale
	if m.Op != "" && !m.NA {
		ok := m.Value <= m.Target
		if m.Op == ">=" {
			ok = m.Value >= m.Target
		}
		m.Meets = &ok
	}
	r.metrics = append(r.metrics, m)
}

func (r *results) get(name string) (float64, bool) {
	for _, m := range r.metrics {
		if m.Name == name {
			return m.Value, !m.NA
		}
	}
	return 0, false
}

// table writes the human table. Without any target or anchor (cluster
// mode) it has only the metric, measured and detail columns.
func (r *results) table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	targets := false
	for _, m := range r.metrics {
		targets = targets || (!m.hidden && (m.Op != "" || m.AnchorText != ""))
	}
	if !targets {
		fmt.Fprintln(tw, "metric\tmeasured\tdetail")
		fmt.Fprintln(tw, "------\t--------\t------")
	} else {
		fmt.Fprintln(tw, "metric\tmeasured\ttarget\t\tanchors (demo; Centrifugo)\tdetail")
		fmt.Fprintln(tw, "------\t--------\t------\t\t--------------------------\t------")
	}
	for _, m := range r.metrics {
		if m.hidden {
			continue
		}
		value := comma(m.Value, m.prec) + " " + m.Unit
		if m.NA {
			value = "not available"
		}
		if !targets {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Label, value, m.Extra)
			continue
		}
		target, verdict := "", ""
		if m.Op != "" {
			op := map[string]string{"<=": "≤", ">=": "≥"}[m.Op]
			prec := 0
			if m.Target != math.Trunc(m.Target) {
				prec = 2
			}
			target = op + " " + comma(m.Target, prec) + " " + m.Unit
			switch {
			case m.Meets == nil:
				verdict = "n/a"
			case *m.Meets:
				verdict = "ok"
			default:
				verdict = "MISS"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Label, value, target, verdict, m.AnchorText, m.Extra)
	}
	_ = tw.Flush()
}

// summary is the last JSON line.
type summary struct {
	Metric   string         `json:"metric"`
	Machine  machine        `json:"machine"`
	Command  string         `json:"command"`
	Elapsed  float64        `json:"elapsed_s"`
	Config   map[string]any `json:"config"`
	Anchors  string         `json:"anchors,omitempty"`
	PusherLg []string       `json:"pusher_logs,omitempty"`
	DemoLogs []string       `json:"demo_logs,omitempty"`
	NATSLogs []string       `json:"nats_logs,omitempty"`
	NATSWarn []string       `json:"nats_log_problems,omitempty"`
	Notes    []string       `json:"notes,omitempty"`
	Time     string         `json:"time"`
}

// print writes the table, the notes and the JSON lines to stdout (and the
// JSON lines to --json-out).
func (b *bench) print() error {
	m := describeMachine()
	w := b.stdout
	c := b.cfg
	anchors := anchorsNote
	if c.cluster {
		anchors = ""
		fmt.Fprintf(w, "\npusher cluster benchmark — %s, %d cores, %s RAM, %s, kernel %s\n", m.Model, m.NProc, m.MemTotal, m.GoVersion, m.Kernel)
		fmt.Fprintf(w, "command: %s   (3 nats-servers, the pushers and the load generator share the same %d cores)\n\n", b.command, m.NProc)
	} else {
		fmt.Fprintf(w, "\npusher end-to-end benchmark — %s, %d cores, %s RAM, %s, kernel %s\n", m.Model, m.NProc, m.MemTotal, m.GoVersion, m.Kernel)
		fmt.Fprintf(w, "command: %s   (load generator and pusher share the same %d cores)\n", b.command, m.NProc)
		if b.demoInfo != "" {
			fmt.Fprintf(w, "demo: %s (%s); rows tagged [demo]\n", b.cfg.demoBin, b.demoInfo)
		}
		fmt.Fprintf(w, "load average (1, 5, 15 min): %s at the start, %s at the end\n\n", b.loadStart, loadAvg())
	}
	if c.storm != "" {
		anchors = ""
	}
	b.res.table(w)
	if anchors != "" {
		fmt.Fprintf(w, "\n%s\n", anchors)
	} else {
		fmt.Fprintln(w)
	}
	for _, l := range b.res.logs {
		fmt.Fprintf(w, "pusher log: %s\n", l)
	}
	for _, l := range b.res.demoLogs {
		fmt.Fprintf(w, "demo log: %s\n", l)
	}
	for _, l := range b.res.natsLogs {
		fmt.Fprintf(w, "nats-server log: %s\n", l)
	}
	for _, l := range b.res.natsProblems {
		fmt.Fprintf(w, "nats-server logged: %s\n", l)
	}
	if len(b.notes) == 0 {
		fmt.Fprintln(w, "notes: none (no loss, duplicates, retries, dead letters, dropped connections or pusher warnings)")
	}
	for _, n := range b.notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintln(w)

	var lines []string
	for _, mt := range b.res.metrics {
		j, err := json.Marshal(mt)
		if err != nil {
			return err
		}
		lines = append(lines, string(j))
	}
	config := map[string]any{
		"quick": c.quick, "messages": c.messages, "window": c.window, "conns": c.conns, "payload_bytes": c.payload,
		"rate": c.rate, "latency_duration_s": c.latencyDur.Seconds(), "idle_conns": c.idleConns,
		"client_processes": c.clients, "source_addresses": c.clients * srcsPerClient, "dial_parallel": c.dialParallel,
		"http_messages": c.httpMessages, "http_publishers": c.httpPublishers, "http_batch": c.httpBatch,
		"demo": b.demoInfo, "load_avg_start": b.loadStart, "load_avg_end": loadAvg(),
	}
	if c.storm != "" {
		config = map[string]any{
			"mode": "storm", "storm": string(c.storm), "quick": c.quick, "storm_clients_per_node": c.stormClients, "storm_rate": c.stormRate,
			"client_processes": c.clients, "source_addresses": c.clients * srcsPerClient, "nats_server": b.natsVersion,
			"load_avg_start": b.loadStart, "load_avg_end": loadAvg(),
		}
	}
	if c.cluster {
		config = map[string]any{
			"mode": "cluster", "quick": c.quick, "messages": c.messages, "window": c.window, "conns": c.conns, "payload_bytes": c.payload,
			"nats_servers": natsClusterSize, "replicas": natsClusterSize, "routing": "cluster",
			"idle_conns_per_node": c.idlePerNode, "burst_messages": c.burstMsgs, "burst_uids": c.burstUIDs,
			"gc_wait_s": c.gcWait.Seconds(), "client_processes": c.clients, "source_addresses": c.clients * srcsPerClient,
			"dial_parallel": c.dialParallel, "nats_server": b.natsVersion,
		}
	}
	s := summary{
		Metric: "summary", Machine: m, Command: b.command, Elapsed: math.Round(time.Since(b.started).Seconds()*10) / 10,
		Config: config, Anchors: anchors, PusherLg: b.res.logs, DemoLogs: b.res.demoLogs, NATSLogs: b.res.natsLogs, NATSWarn: b.res.natsProblems, Notes: b.notes,
		Time: time.Now().UTC().Format(time.RFC3339),
	}
	j, err := json.Marshal(s)
	if err != nil {
		return err
	}
	lines = append(lines, string(j))
	out := strings.Join(lines, "\n") + "\n"
	fmt.Fprint(w, out)
	if c.jsonOut != "" {
		if err := os.WriteFile(c.jsonOut, []byte(out), 0o644); err != nil {
			return fmt.Errorf("--json-out: %w", err)
		}
	}
	return nil
}

// loadAvg is the machine's 1, 5 and 15-minute load averages, from
// /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// comma formats v with prec decimals and thousands separators.
func comma(v float64, prec int) string {
	s := strconv.FormatFloat(v, 'f', prec, 64)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	intPart, frac, hasFrac := strings.Cut(s, ".")
	var b strings.Builder
	for i, d := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(d)
	}
	if hasFrac {
		b.WriteString("." + frac)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
