package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pusher-io/pusher/e2e/harness"
)

const (
	// dupGrace is how long to keep listening after the last expected
	// message, so duplicates are counted.
	dupGrace = 300 * time.Millisecond
	// dialTimeout bounds one client's share of a connection phase.
	dialTimeout = 5 * time.Minute
	// settleWindow and settleMax: RSS is settled when it moved less than
	// 1% over settleWindow, or after settleMax.
	settleWindow = 2 * time.Second
	settleMax    = 30 * time.Second
)

// phaseRaw measures the JetStream ceiling on pusher's embedded server:
// async publish of the same payloads into a file stream, and a durable pull
// consumer acking each message, no WebSocket.
func (b *bench) phaseRaw(ctx context.Context) error {
	m := b.cfg.messages
	r, err := b.openRig(ctx, rawStream, rawSubjects, m, b.cfg.window)
	if err != nil {
		return err
	}
	defer r.close(b)
	tmpl := newPayload(b.cfg.payload)
	c0, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	t0 := time.Now()
	for i := range m {
		data := slices.Clone(tmpl)
		encodePayload(data, time.Now().UnixNano(), uint64(i), tagRaw)
		if err := r.publish(i, data, b.cfg.stall); err != nil {
			return err
		}
		if i%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if err := r.waitAcked(ctx, b.cfg.stall); err != nil {
		return err
	}
	elapsed := time.Since(t0)
	c1, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	if err := r.check(b.cfg.stall); err != nil {
		return err
	}
	rate := float64(m) / elapsed.Seconds()
	b.res.add(metric{Name: "jetstream_ceiling_msgs_per_s", Label: "JetStream ceiling (async pub + pull consumer ack)", Value: rate, Unit: "msgs/s", prec: 0})
	b.res.add(metric{Name: "jetstream_server_cpu_us_per_msg", Label: "JetStream server CPU per message", Value: us(c1.pusher-c0.pusher) / float64(m), Unit: "µs",
		prec: 2, AnchorText: "JetStream alone ~3.7"})
	b.machineRow("jetstream_machine_cpu_busy_pct", "JetStream ceiling", c0, c1)
	b.logf("jetstream ceiling: %d msgs in %s = %.0f msgs/s", m, elapsed.Round(time.Millisecond), rate)
	return nil
}

// cpuSnap is the CPU of everything on the machine at one moment.
type cpuSnap struct {
	pusher, clients, self time.Duration // pusher: every pusher process, or the demo
	demo                  bool          // pusher is the demo's CPU
	nats                  time.Duration // cluster mode: every nats-server
	perPusher, perNATS    []time.Duration
	busy, irq, total      float64 // machine jiffies
}

// wallOf is the wall time between two snapshots, from the machine's jiffies.
func wallOf(c0, c1 cpuSnap, ticks float64) float64 {
	return (c1.total - c0.total) / ticks / float64(runtime.NumCPU())
}

// cores describes where the machine's CPU went between two snapshots, in
// cores, and returns the "other" share: busy time no benchmark process was
// charged for (other processes on the machine, kernel threads).
func cores(c0, c1 cpuSnap, ticks float64) (string, float64) {
	wall := wallOf(c0, c1, ticks)
	busy := (c1.busy - c0.busy) / ticks / wall
	p, c, s := (c1.pusher-c0.pusher).Seconds()/wall, (c1.clients-c0.clients).Seconds()/wall, (c1.self-c0.self).Seconds()/wall
	n := (c1.nats - c0.nats).Seconds() / wall
	other := max(busy-p-n-c-s, 0)
	natsPart := ""
	if len(c1.perNATS) > 0 {
		natsPart = fmt.Sprintf(", nats-servers %.2f", n)
	}
	who := "pusher"
	switch {
	case c1.demo:
		who = "demo"
	case len(c1.perPusher) > 1:
		who = "pushers"
	}
	return fmt.Sprintf("cores busy %.2f of %d: %s %.2f%s, clients %.2f, publisher %.2f, other %.2f (irq %.2f)",
		busy, runtime.NumCPU(), who, p, natsPart, c, s, other, (c1.irq-c0.irq)/ticks/wall), other
}

// interferenceLimit is the "other" CPU, in cores, above which a phase's
// numbers are flagged as disturbed by something else on the machine.
const interferenceLimit = 0.10

// machineRow adds the machine-CPU row for a phase and notes interference.
func (b *bench) machineRow(name, phase string, c0, c1 cpuSnap) {
	detail, other := cores(c0, c1, b.ticks)
	b.res.add(metric{Name: name, Label: "  machine CPU busy during " + phase, Value: 100 * (c1.busy - c0.busy) / (c1.total - c0.total),
		Unit: "%", prec: 0, Extra: detail})
	if other > interferenceLimit {
		if v := b.res.variant; v != "" {
			phase += " [" + v + "]"
		}
		b.notes = append(b.notes, fmt.Sprintf("%s phase: other processes used %.2f cores of the machine; its numbers are disturbed", phase, other))
	}
}

func (b *bench) cpuSnapshot() (cpuSnap, error) {
	var s cpuSnap
	var err error
	for _, p := range b.livePushers() {
		d, err := procCPU(p.pid, b.ticks)
		if err != nil {
			return s, err
		}
		s.pusher += d
		s.perPusher = append(s.perPusher, d)
	}
	if b.demo != nil {
		if s.pusher, err = procCPU(b.demo.pid, b.ticks); err != nil {
			return s, err
		}
		s.demo = true
	}
	for _, n := range b.nats {
		d, err := procCPU(n.pid, b.ticks)
		if err != nil {
			return s, err
		}
		s.nats += d
		s.perNATS = append(s.perNATS, d)
	}
	for _, c := range b.clients {
		d, err := procCPU(c.pid, b.ticks)
		if err != nil {
			return s, err
		}
		s.clients += d
	}
	if s.self, err = procCPU(os.Getpid(), b.ticks); err != nil {
		return s, err
	}
	s.busy, s.irq, s.total, err = machineCPU()
	return s, err
}

// received sums the clients' latest counts for the current phase.
func (b *bench) received() int64 {
	var n int64
	for _, c := range b.clients {
		n += c.count.Load()
	}
	return n
}

// startMessages begins a phase of size messages (beginPhase) and takes
// what its figures are measured from: the server's counters and log
// mark, then the CPU, last, so nothing of the set-up is counted.
func (b *bench) startMessages(ctx context.Context, kind string, size int) (serverMark, cpuSnap, error) {
	if err := b.beginPhase(ctx, kind, size); err != nil {
		return serverMark{}, cpuSnap{}, err
	}
	mark, err := b.markServer(ctx)
	if err != nil {
		return serverMark{}, cpuSnap{}, err
	}
	c0, err := b.cpuSnapshot()
	return mark, c0, err
}

// beginPhase tells every client to count a new phase of size messages.
func (b *bench) beginPhase(ctx context.Context, kind string, size int) error {
	return onAll(b.clients, func(_ int, c *clientProc) error {
		_, _, err := c.request(ctx, fmt.Sprintf("phase %s %d", kind, size), clientRequestTimeout)
		c.count.Store(0)
		return err
	})
}

// collect gathers every client's report for the phase.
func (b *bench) collect(ctx context.Context) (phaseReport, error) {
	reps := make([]phaseReport, len(b.clients))
	err := onAll(b.clients, func(i int, c *clientProc) error {
		var err error
		reps[i], err = c.report(ctx)
		return err
	})
	var sum phaseReport
	for _, r := range reps {
		sum.unique += r.unique
		sum.dup += r.dup
		sum.bad += r.bad
		sum.dropped += r.dropped
		sum.lastRecvNs = max(sum.lastRecvNs, r.lastRecvNs)
		sum.samples = append(sum.samples, r.samples...)
		sum.seqs = append(sum.seqs, r.seqs...)
		if sum.firstDrop == "" {
			sum.firstDrop = r.firstDrop
		}
	}
	return sum, err
}

// dialAll spreads total connections for uids prefix0..prefixN-1 over the
// clients and returns the connect rate.
func (b *bench) dialAll(ctx context.Context, total int, prefix string) (float64, error) {
	n := len(b.clients)
	res := make([]dialResult, n)
	err := onAll(b.clients, func(i int, c *clientProc) error {
		share := total / n
		first := i*share + min(i, total%n)
		if i < total%n {
			share++
		}
		r, err := c.dial(ctx, share, prefix, first, b.cfg.dialParallel, dialTimeout)
		res[i] = r
		if err == nil && r.failed > 0 {
			err = fmt.Errorf("client %d: %d of %d connections failed; first error: %s", i, r.failed, share, r.firstErr)
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	start, end := res[0].start, res[0].end
	for _, r := range res[1:] {
		if r.start.Before(start) {
			start = r.start
		}
		if r.end.After(end) {
			end = r.end
		}
	}
	return float64(total) / end.Sub(start).Seconds(), nil
}

// waitConnections waits until pusher_connections equals want, summed
// over every pusher process, and in cluster mode until each node holds
// its share (uid k is on node k mod n).
func (b *bench) waitConnections(ctx context.Context, want int) error {
	if b.demo != nil {
		return harness.Poll(ctx, 30*time.Second, fmt.Sprintf("the demo holding %d connections", want), func() error {
			n, _, err := b.demo.metrics(ctx)
			if err != nil {
				return harness.Abort(err)
			}
			if n != want {
				return fmt.Errorf("connections = %d", n)
			}
			return nil
		})
	}
	ps := b.livePushers()
	return harness.Poll(ctx, 30*time.Second, fmt.Sprintf("%d connections in all", want), func() error {
		ok := true
		var got []string
		for i, p := range ps {
			m, err := p.Metrics(ctx)
			if err != nil {
				return harness.Abort(err)
			}
			n := int(m.Sum("pusher_connections"))
			got = append(got, strconv.Itoa(n))
			ok = ok && n == shareOf(want, len(ps), i)
		}
		if !ok {
			return fmt.Errorf("pusher_connections = %s", strings.Join(got, "/"))
		}
		return nil
	})
}

// shareOf is how many of the indexes 0..total-1 are i mod n.
func shareOf(total, n, i int) int {
	s := total / n
	if i < total%n {
		s++
	}
	return s
}

// scrape is every pusher process's metrics together (Sum adds over them).
func (b *bench) scrape(ctx context.Context) (harness.Metrics, error) {
	each, err := b.scrapeEach(ctx)
	return harness.Merge(each...), err
}

// scrapeEach scrapes every pusher process.
func (b *bench) scrapeEach(ctx context.Context) ([]harness.Metrics, error) {
	var out []harness.Metrics
	for _, p := range b.livePushers() {
		m, err := p.Metrics(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// phaseThroughput: closed-loop throughput over b.cfg.conns connections.
func (b *bench) phaseThroughput(ctx context.Context) error {
	m, w := b.cfg.messages, int64(b.cfg.window)
	if _, err := b.dialAll(ctx, b.cfg.conns, "b"); err != nil {
		return err
	}
	if err := b.waitConnections(ctx, b.cfg.conns); err != nil {
		return err
	}
	r, err := b.closedLoop(ctx, "throughput", m, uidRange("b", b.cfg.conns))
	if err != nil {
		return err
	}
	c0, c1, rep := r.c0, r.c1, r.rep
	rate := r.rate

	b.res.add(metric{Name: "throughput_msgs_per_s", Label: fmt.Sprintf("throughput, %s conns, %d B, closed loop (window %d)%s", comma(float64(b.cfg.conns), 0), b.cfg.payload, w, b.publisherText()),
		Value: rate, Unit: "msgs/s", prec: 0, Op: ">=", Target: 90000, AnchorText: "demo 30.8k; Centrifugo 24.4k"})
	if ceil, ok := b.res.get("jetstream_ceiling_msgs_per_s"); ok && b.demo == nil {
		b.res.add(metric{Name: "throughput_ratio_to_jetstream", Label: "throughput / JetStream ceiling", Value: rate / ceil, Unit: "ratio", prec: 2})
	}
	b.res.add(metric{Name: "server_cpu_us_per_msg", Label: "server CPU per delivered message (" + b.serverText() + ")",
		Value: us(c1.pusher-c0.pusher) / float64(m), Unit: "µs", prec: 2, Op: "<=", Target: 10, AnchorText: "demo ~25; Centrifugo ~36"})
	b.res.add(metric{Name: "throughput_lost", Label: "throughput phase: lost / duplicate messages", Value: float64(int64(m) - rep.unique), Unit: "msgs", prec: 0,
		Extra: fmt.Sprintf("%d dup", rep.dup)})
	b.res.add(metric{Name: "throughput_duplicates", Value: float64(rep.dup), Unit: "msgs", hidden: true})
	b.machineRow("throughput_machine_cpu_busy_pct", "throughput", c0, c1)
	b.logf("throughput: %d msgs in %s = %.0f msgs/s, %.2f µs server CPU/msg", m, r.elapsed.Round(time.Millisecond), rate, us(c1.pusher-c0.pusher)/float64(m))
	return nil
}

// serverText names what the server CPU rows measure.
func (b *bench) serverText() string {
	if b.demo != nil {
		return "the demo process"
	}
	return "pusher + embedded NATS"
}

// publisherText describes the demo's publisher for a label; pusher's is
// JetStream, as always.
func (b *bench) publisherText() string {
	if b.demo != nil {
		return fmt.Sprintf(", publisher HTTP /send over %d connections", b.cfg.httpPublishers)
	}
	return ""
}

// uidRange is prefix0 .. prefix(n-1).
func uidRange(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// loopResult is what closedLoop measured.
type loopResult struct {
	rate       float64
	elapsed    time.Duration
	c0, c1     cpuSnap
	rep        phaseReport
	met0, met1 []harness.Metrics // each pusher's metrics before and after
}

// closedLoop publishes m messages round-robin to uids (newSender: through
// JetStream for pusher, HTTP /send for the demo), with at most --window
// between publish and receipt (counted from the clients' reports), and
// checks that every message arrived exactly once and that the server
// counted exactly m deliveries and nothing else. The uids' connections
// must be open. Throughput is m over (latest receipt − first publish).
func (b *bench) closedLoop(ctx context.Context, phase string, m int, uids []string) (loopResult, error) {
	var r loopResult
	w := int64(b.cfg.window)
	s, err := b.newSender(ctx, "bench-publisher", b.cfg.window+4096, uids)
	if err != nil {
		return r, err
	}
	defer s.close()
	mark, c0, err := b.startMessages(ctx, "throughput", m)
	if err != nil {
		return r, err
	}
	r.met0, r.c0 = mark.met, c0
	tmpl := newPayload(b.cfg.payload)
	t0 := time.Now()
	for i := range m {
		if int64(i)-b.received() >= w {
			err := waitUntil(ctx, b.progress, b.cfg.stall, b.received,
				func() bool { return int64(i)-b.received() < w }, "receipts")
			if err != nil {
				return r, fmt.Errorf("%w (published %d of %d; window %d)%s", err, i, m, w, b.stallHint(ctx, mark, s))
			}
		}
		data := slices.Clone(tmpl)
		encodePayload(data, time.Now().UnixNano(), uint64(i), tagThroughput)
		if err := s.send(i%len(uids), data); err != nil {
			return r, fmt.Errorf("message %d: %w", i, err)
		}
		if i%1024 == 0 {
			if err := s.failed(); err != nil {
				return r, err
			}
		}
	}
	err = waitUntil(ctx, b.progress, b.cfg.stall, b.received, func() bool { return b.received() >= int64(m) }, "receipts")
	if err != nil {
		return r, fmt.Errorf("%w (all %d published)%s", err, m, b.stallHint(ctx, mark, s))
	}
	if r.c1, err = b.cpuSnapshot(); err != nil {
		return r, err
	}
	if err := sleepCtx(ctx, dupGrace); err != nil {
		return r, err
	}
	if r.rep, err = b.collect(ctx); err != nil {
		return r, err
	}
	if err := s.finish(ctx); err != nil {
		return r, err
	}
	r.elapsed = time.Unix(0, r.rep.lastRecvNs).Sub(t0)
	r.rate = float64(m) / r.elapsed.Seconds()
	b.checkDelivery(phase, m, r.rep)
	mark, err = b.checkServer(ctx, phase, mark, m)
	r.met1 = mark.met
	return r, err
}

// serverMark is where the server's own accounting stood before a phase:
// each pusher's metrics, or the size of the demo's log.
type serverMark struct {
	met     []harness.Metrics
	demoLog int64
}

func (b *bench) markServer(ctx context.Context) (serverMark, error) {
	if b.demo != nil {
		n, err := b.demo.logSize()
		return serverMark{demoLog: n}, err
	}
	met, err := b.scrapeEach(ctx)
	return serverMark{met: met}, err
}

// checkServer notes where the server's own accounting since mark
// disagrees with want messages delivered and nothing else, and returns
// the new mark.
func (b *bench) checkServer(ctx context.Context, phase string, mark serverMark, want int) (serverMark, error) {
	if b.demo != nil {
		n, err := b.demo.logSize()
		if err != nil {
			return serverMark{}, err
		}
		return serverMark{demoLog: n}, b.checkDemo(phase, mark.demoLog, want)
	}
	met, err := b.scrapeEach(ctx)
	if err != nil {
		return serverMark{}, err
	}
	b.checkOutcomes(phase, harness.Merge(mark.met...), harness.Merge(met...), want)
	return serverMark{met: met}, nil
}

// stallHint describes the publisher's failures and the server's state for
// a stall error.
func (b *bench) stallHint(ctx context.Context, mark serverMark, s sender) string {
	h := ""
	if err := s.failed(); err != nil {
		h = "; publisher: " + err.Error()
	}
	if b.demo != nil {
		return h + b.demoHint(ctx)
	}
	return h + b.pusherHint(ctx, harness.Merge(mark.met...))
}

// natsURL is where the publisher connects: the embedded server, or the
// cluster's servers in order (nats-1 first).
func (b *bench) natsURL() string {
	if b.pusher != nil {
		return b.pusher.NATSURL()
	}
	return b.natsURLs(0)
}

// pusherHint describes pusher's counters for a stall error.
func (b *bench) pusherHint(ctx context.Context, before harness.Metrics) string {
	for _, p := range b.livePushers() {
		if err := p.Proc().Alive(); err != nil {
			return "; " + err.Error()
		}
	}
	for _, n := range b.nats {
		if err := n.alive(); err != nil {
			return "; " + err.Error()
		}
	}
	for _, c := range b.clients {
		select {
		case <-c.exited:
			return fmt.Sprintf("; client %d exited: %s", c.id, c.stderr)
		default:
		}
	}
	m, err := b.scrape(ctx)
	if err != nil {
		return "; " + err.Error()
	}
	return fmt.Sprintf("; pusher: delivered +%.0f, retried +%.0f, deadlettered +%.0f, inflight %.0f, connections %.0f",
		m.Sum("pusher_messages_total", "outcome", "delivered")-before.Sum("pusher_messages_total", "outcome", "delivered"),
		m.Sum("pusher_messages_total", "outcome", "retried")-before.Sum("pusher_messages_total", "outcome", "retried"),
		m.Sum("pusher_messages_total", "outcome", "deadlettered")-before.Sum("pusher_messages_total", "outcome", "deadlettered"),
		m.Sum("pusher_inflight_messages"), m.Sum("pusher_connections"))
}

// checkDelivery notes anything but exactly-once delivery.
func (b *bench) checkDelivery(phase string, want int, rep phaseReport) {
	if lost := int64(want) - rep.unique; lost != 0 || rep.dup != 0 || rep.bad != 0 {
		b.notes = append(b.notes, fmt.Sprintf("%s phase: %d lost, %d duplicates, %d unparseable frames of %d", phase, lost, rep.dup, rep.bad, want))
	}
	if rep.dropped != 0 {
		b.notes = append(b.notes, fmt.Sprintf("%s phase: pusher ended %d connections; first: %s", phase, rep.dropped, rep.firstDrop))
	}
}

// checkOutcomes notes pusher counters that disagree with a clean run.
func (b *bench) checkOutcomes(phase string, m0, m1 harness.Metrics, want int) {
	d := func(outcome string) float64 {
		return m1.Sum("pusher_messages_total", "outcome", outcome) - m0.Sum("pusher_messages_total", "outcome", outcome)
	}
	if got := d("delivered"); int(got) != want {
		b.notes = append(b.notes, fmt.Sprintf("%s phase: pusher_messages_total{outcome=delivered} grew by %.0f, want %d", phase, got, want))
	}
	if r, dl := d("retried"), d("deadlettered"); r != 0 || dl != 0 {
		b.notes = append(b.notes, fmt.Sprintf("%s phase: pusher retried %.0f and dead-lettered %.0f messages", phase, r, dl))
	}
}

// phaseLatency: open-loop publishing at a fixed rate over the same
// connections; latency is receipt minus the intended send time in the
// payload, so a late publisher cannot hide latency.
func (b *bench) phaseLatency(ctx context.Context) error {
	rate := b.cfg.rate
	n := int(int64(rate) * int64(b.cfg.latencyDur) / int64(time.Second))
	s, err := b.newSender(ctx, "bench-paced-publisher", 65536, uidRange("b", b.cfg.conns))
	if err != nil {
		return err
	}
	defer s.close()
	mark, c0, err := b.startMessages(ctx, "latency", n)
	if err != nil {
		return err
	}
	tmpl := newPayload(b.cfg.payload)
	start := time.Now().Add(20 * time.Millisecond).UnixNano()
	lags, err := pace(ctx, n, rate, start, func(i int, intended int64) error {
		data := slices.Clone(tmpl)
		encodePayload(data, intended, uint64(i), tagLatency)
		if err := s.send(i%b.cfg.conns, data); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		if i%1024 == 0 {
			return s.failed()
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = waitUntil(ctx, b.progress, b.cfg.stall, b.received, func() bool { return b.received() >= int64(n) }, "receipts")
	if err != nil {
		return fmt.Errorf("%w (all %d published)%s", err, n, b.stallHint(ctx, mark, s))
	}
	c1, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	wall := time.Duration(time.Now().UnixNano() - start)
	if err := sleepCtx(ctx, dupGrace); err != nil {
		return err
	}
	rep, err := b.collect(ctx)
	if err != nil {
		return err
	}
	if err := s.finish(ctx); err != nil {
		return err
	}
	b.checkDelivery("latency", n, rep)
	mark1, err := b.checkServer(ctx, "latency", mark, n)
	if err != nil {
		return err
	}
	if len(rep.samples) == 0 {
		return errors.New("no latency samples")
	}
	// Service latency: receipt minus the actual publish time, which
	// leaves out the pacer's own lateness (a load-generator artifact on a
	// busy machine); diagnostic only.
	if b.cfg.dumpLatency != "" {
		if err := dumpLatency(b.cfg.dumpLatency, rep, lags, rate); err != nil {
			return err
		}
	}
	service := make([]int64, len(rep.samples))
	for i, v := range rep.samples {
		service[i] = v - lags[rep.seqs[i]]
	}
	slices.Sort(service)
	slices.Sort(rep.samples)
	slices.Sort(lags)
	lbl := fmt.Sprintf("latency at %s msgs/s, %s conns", comma(float64(rate), 0), comma(float64(b.cfg.conns), 0))
	b.res.add(metric{Name: "latency_p50_ms", Label: lbl + ", p50", Value: ms(pct(rep.samples, 0.50)), Unit: "ms", prec: 3})
	b.res.add(metric{Name: "latency_p99_ms", Label: lbl + ", p99", Value: ms(pct(rep.samples, 0.99)), Unit: "ms", prec: 3,
		Op: "<=", Target: 2, AnchorText: "demo 1.7; Centrifugo 2.9"})
	b.res.add(metric{Name: "latency_p999_ms", Label: lbl + ", p99.9", Value: ms(pct(rep.samples, 0.999)), Unit: "ms", prec: 3})
	b.res.add(metric{Name: "latency_max_ms", Label: lbl + ", max", Value: ms(rep.samples[len(rep.samples)-1]), Unit: "ms", prec: 3})
	b.res.add(metric{Name: "latency_publisher_lag_p99_ms", Label: "  publisher late vs intended send time, p99", Value: ms(pct(lags, 0.99)), Unit: "ms", prec: 3,
		Extra: fmt.Sprintf("p50 %.3f ms, max %.3f ms", ms(pct(lags, 0.5)), ms(lags[len(lags)-1]))})
	b.res.add(metric{Name: "latency_from_actual_publish_p99_ms", Label: "  latency from actual publish time, p99", Value: ms(pct(service, 0.99)), Unit: "ms", prec: 3,
		Extra: fmt.Sprintf("p50 %.3f ms, p99.9 %.3f ms, max %.3f ms", ms(pct(service, 0.5)), ms(pct(service, 0.999)), ms(service[len(service)-1]))})
	b.res.add(metric{Name: "latency_lost", Label: "latency phase: lost / duplicate messages", Value: float64(int64(n) - rep.unique), Unit: "msgs", prec: 0,
		Extra: fmt.Sprintf("%d dup", rep.dup)})
	b.res.add(metric{Name: "latency_duplicates", Value: float64(rep.dup), Unit: "msgs", hidden: true})
	b.res.add(metric{Name: "latency_server_cpu_pct", Label: fmt.Sprintf("server CPU at %s msgs/s (%s)", comma(float64(rate), 0), b.serverText()),
		Value: 100 * (c1.pusher - c0.pusher).Seconds() / wall.Seconds(), Unit: "% of a core", prec: 1,
		Extra: fmt.Sprintf("%.2f µs/msg", us(c1.pusher-c0.pusher)/float64(n))})
	b.res.add(metric{Name: "latency_cpu_us_per_msg", Value: us(c1.pusher-c0.pusher) / float64(n), Unit: "µs", hidden: true})
	if b.demo == nil {
		b.confirmRows(harness.Merge(mark.met...), harness.Merge(mark1.met...))
	}
	b.machineRow("latency_machine_cpu_busy_pct", "latency", c0, c1)
	b.logf("latency: %d msgs at %d/s: p50 %.3f ms, p99 %.3f ms, max %.3f ms", n, rate,
		ms(pct(rep.samples, 0.5)), ms(pct(rep.samples, 0.99)), ms(rep.samples[len(rep.samples)-1]))
	return nil
}

// pace calls publish for i in 0..n-1 at its intended time start +
// i/rate (unix ns), and returns how late each call was. It sleeps with
// nanosleep on a thread of its own: the Go timer's ~1 ms granularity
// would publish in bursts of five. It stops at publish's first error.
func pace(ctx context.Context, n, rate int, start int64, publish func(i int, intended int64) error) ([]int64, error) {
	lags := make([]int64, n)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for i := range n {
			intended := start + int64(i)*int64(time.Second)/int64(rate)
			if d := intended - time.Now().UnixNano(); d > 0 {
				ts := syscall.NsecToTimespec(d)
				_ = syscall.Nanosleep(&ts, nil)
			}
			lags[i] = time.Now().UnixNano() - intended
			if err := publish(i, intended); err != nil {
				done <- err
				return
			}
			if i%1024 == 0 && ctx.Err() != nil {
				done <- ctx.Err()
				return
			}
		}
		done <- nil
	}()
	return lags, <-done
}

// phaseConnections: memory per idle authenticated connection and connect
// rate, on a freshly started pusher so the throughput phases' garbage and
// retained heap cannot hide (or inflate) the growth.
func (b *bench) phaseConnections(ctx context.Context) error {
	if err := onAll(b.clients, func(_ int, c *clientProc) error {
		_, _, err := c.request(ctx, "close", clientRequestTimeout)
		return err
	}); err != nil {
		return err
	}
	if err := b.waitConnections(ctx, 0); err != nil {
		return err
	}
	if err := b.restartPusher(ctx); err != nil {
		return err
	}
	n := b.cfg.idleConns
	rss0, err := b.settleRSS(ctx, b.pusher.name, b.pusher.pid)
	if err != nil {
		return err
	}
	m0, err := b.pusher.Metrics(ctx)
	if err != nil {
		return err
	}
	if err := b.beginPhase(ctx, "idle", 0); err != nil {
		return err
	}
	c0, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	rate, err := b.dialAll(ctx, n, "idle")
	if err != nil {
		return err
	}
	c1, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	if err := b.waitConnections(ctx, n); err != nil {
		return err
	}
	maxFDs := 0
	for _, c := range b.clients {
		fds, err := procFDs(c.pid)
		if err != nil {
			return err
		}
		maxFDs = max(maxFDs, fds)
	}
	rssPre, err := b.settleRSS(ctx, b.pusher.name, b.pusher.pid)
	if err != nil {
		return err
	}
	mPre, err := b.pusher.Metrics(ctx)
	if err != nil {
		return err
	}
	rss1, gcSeen := rssPre, false
	if b.cfg.gcWait > 0 {
		// An idle Go process does not collect: the handshakes' garbage
		// stays in RSS until the next GC, which the runtime forces every
		// two minutes. Wait for it, then for RSS to settle again.
		b.logf("connections: RSS %.1f MiB; waiting up to %s for pusher's next GC", float64(rssPre)/(1<<20), b.cfg.gcWait)
		if gcSeen, err = b.waitGC(ctx, b.pusher, mPre.Sum("go_gc_duration_seconds_count"), b.cfg.gcWait); err != nil {
			return err
		}
		if !gcSeen {
			b.notes = append(b.notes, fmt.Sprintf("connection phase: pusher ran no GC within %s of the last connect; RSS includes handshake garbage", b.cfg.gcWait))
		}
		if rss1, err = b.settleRSS(ctx, b.pusher.name, b.pusher.pid); err != nil {
			return err
		}
	}
	m1, err := b.pusher.Metrics(ctx)
	if err != nil {
		return err
	}
	pusherFDs, _ := procFDs(b.pusher.pid)
	rep, err := b.collect(ctx)
	if err != nil {
		return err
	}
	if rep.dropped != 0 {
		b.notes = append(b.notes, fmt.Sprintf("connection phase: pusher ended %d idle connections; first: %s", rep.dropped, rep.firstDrop))
	}
	heap := func(m harness.Metrics) float64 { return m.Sum("go_memstats_heap_inuse_bytes") }
	stack := func(m harness.Metrics) float64 { return m.Sum("go_memstats_stack_inuse_bytes") }
	lbl := fmt.Sprintf("at %s idle conns", comma(float64(n), 0))
	b.res.add(metric{Name: "rss_kib_per_idle_conn", Label: "pusher RSS per idle connection, " + lbl, Value: float64(rss1-rss0) / float64(n) / 1024, Unit: "KiB", prec: 2,
		Op: "<=", Target: 8, AnchorText: "demo 17.5; Centrifugo 47.6",
		Extra: fmt.Sprintf("RSS %.1f -> %.1f MiB%s", float64(rss0)/(1<<20), float64(rss1)/(1<<20), map[bool]string{true: ", after a GC", false: ", no GC seen"}[gcSeen])})
	b.res.add(metric{Name: "rss_kib_per_idle_conn_before_gc", Label: "  the same, settled before pusher's next GC", Value: float64(rssPre-rss0) / float64(n) / 1024, Unit: "KiB", prec: 2,
		Extra: fmt.Sprintf("heap %.2f KiB + stacks %.2f KiB in use", (heap(mPre)-heap(m0))/float64(n)/1024, (stack(mPre)-stack(m0))/float64(n)/1024)})
	b.res.add(metric{Name: "heap_stack_kib_per_idle_conn", Label: "  Go heap+stack in use per idle connection",
		Value: (heap(m1) + stack(m1) - heap(m0) - stack(m0)) / float64(n) / 1024, Unit: "KiB", prec: 2,
		Extra: fmt.Sprintf("heap %.2f KiB + stacks %.2f KiB", (heap(m1)-heap(m0))/float64(n)/1024, (stack(m1)-stack(m0))/float64(n)/1024)})
	b.res.add(metric{Name: "goroutines_per_idle_conn", Label: "  goroutines per idle connection", Value: (m1.Sum("go_goroutines") - m0.Sum("go_goroutines")) / float64(n), Unit: "goroutines", prec: 2})
	b.res.add(metric{Name: "connect_rate_per_s", Label: fmt.Sprintf("connect rate (%d processes x %d in flight)", len(b.clients), b.cfg.dialParallel), Value: rate, Unit: "conns/s", prec: 0})
	b.res.add(metric{Name: "server_cpu_us_per_connect", Label: "  server CPU per connect", Value: us(c1.pusher-c0.pusher) / float64(n), Unit: "µs", prec: 1})
	b.machineRow("connect_machine_cpu_busy_pct", "connects", c0, c1)
	b.res.add(metric{Name: "client_max_open_fds", Label: "client process open fds, max", Value: float64(maxFDs), Unit: "fds", prec: 0, Op: "<=", Target: fdLimit,
		Extra: fmt.Sprintf("pusher %d", pusherFDs)})
	b.logf("connections: %d idle: %.2f KiB RSS each, %.0f conns/s", n, float64(rss1-rss0)/float64(n)/1024, rate)
	return onAll(b.clients, func(_ int, c *clientProc) error {
		_, _, err := c.request(ctx, "close", clientRequestTimeout)
		return err
	})
}

// waitGC waits, scraping at most once a second, until pusher's GC count
// exceeds since, for at most limit; it reports whether it did.
func (b *bench) waitGC(ctx context.Context, p *pusherProc, since float64, limit time.Duration) (bool, error) {
	var scrapeErr error
	err := harness.PollEvery(ctx, limit, time.Second, p.name+"'s next GC", func() error {
		m, err := p.Metrics(ctx)
		if err != nil {
			scrapeErr = err
			return harness.Abort(err)
		}
		if n := m.Sum("go_gc_duration_seconds_count"); n <= since {
			return fmt.Errorf("%.0f GCs so far", n)
		}
		return nil
	})
	switch {
	case err == nil:
		return true, nil
	case scrapeErr != nil:
		return false, scrapeErr
	case ctx.Err() != nil:
		return false, ctx.Err()
	}
	return false, nil
}

// settleRSS waits until the process's RSS moved less than 1% over
// settleWindow (at most settleMax) and returns it.
func (b *bench) settleRSS(ctx context.Context, name string, pid int) (int64, error) {
	deadline := time.Now().Add(settleMax)
	prev, err := procRSS(pid)
	if err != nil {
		return 0, err
	}
	for {
		if err := sleepCtx(ctx, settleWindow); err != nil {
			return 0, err
		}
		cur, err := procRSS(pid)
		if err != nil {
			return 0, err
		}
		diff := cur - prev
		if diff < 0 {
			diff = -diff
		}
		if diff*100 < prev || time.Now().After(deadline) {
			b.logf("%s RSS settled at %.1f MiB", name, float64(cur)/(1<<20))
			return cur, nil
		}
		prev = cur
	}
}

// waitUntil blocks until done holds, waking on wake and every 5 ms; it
// fails when level has not changed for stall.
func waitUntil(ctx context.Context, wake <-chan struct{}, stall time.Duration, level func() int64, done func() bool, what string) error {
	last, lastChange := level(), time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-wake:
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		if l := level(); l != last {
			last, lastChange = l, time.Now()
		} else if time.Since(lastChange) > stall {
			return fmt.Errorf("%s stalled at %d for %s", what, l, stall)
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pct is the nearest-rank percentile of sorted samples.
func pct(sorted []int64, q float64) int64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(ns int64) float64        { return float64(ns) / 1e6 }
func us(d time.Duration) float64 { return float64(d) / 1e3 }

// dumpLatency writes one line per latency sample, in sequence order:
// seq, intended send time since the phase start, latency, publisher lag
// (all ms).
func dumpLatency(path string, rep phaseReport, lags []int64, rate int) error {
	idx := make([]int, len(rep.seqs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return int(rep.seqs[a] - rep.seqs[b]) })
	var sb strings.Builder
	sb.WriteString("seq\tintended_ms\tlatency_ms\tpublisher_lag_ms\n")
	for _, i := range idx {
		seq := rep.seqs[i]
		fmt.Fprintf(&sb, "%d\t%.3f\t%.3f\t%.3f\n", seq, float64(seq)*1e3/float64(rate), ms(rep.samples[i]), ms(lags[seq]))
	}
	return os.WriteFile(path, []byte(sb.String()), 0o644)
}

// confirmRows reports, from pusher's pusher_confirm_latency_seconds
// histogram over the latency phase, how long the clients took to confirm
// what was written to them (the pong's round trip and any wait for the
// ping ahead of it); nothing where writes are not confirmed.
func (b *bench) confirmRows(m0, m1 harness.Metrics) {
	const name = "pusher_confirm_latency_seconds"
	count := m1.Sum(name+"_count") - m0.Sum(name+"_count")
	if count == 0 {
		return
	}
	mean := (m1.Sum(name+"_sum") - m0.Sum(name+"_sum")) / count
	p50, p99 := histQuantile(m0, m1, name, 0.5), histQuantile(m0, m1, name, 0.99)
	b.res.add(metric{Name: "confirm_latency_p99_ms", Label: "  confirm latency (write to pong), p99", Value: 1000 * p99, Unit: "ms", prec: 3,
		Extra: fmt.Sprintf("p50 %.3f ms, mean %.3f ms, %s confirmations; bucket bounds, from pusher's histogram", 1000*p50, 1000*mean, comma(count, 0))})
}

// histQuantile is the upper bound of the histogram bucket holding the q
// quantile of what was observed between m0 and m1.
func histQuantile(m0, m1 harness.Metrics, name string, q float64) float64 {
	type bucket struct{ le, n float64 }
	var bs []bucket
	for _, s := range m1 {
		if s.Name != name+"_bucket" {
			continue
		}
		le, err := strconv.ParseFloat(s.Labels["le"], 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{le, s.Value - m0.Sum(name+"_bucket", "le", s.Labels["le"])})
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	if len(bs) == 0 {
		return 0
	}
	total := bs[len(bs)-1].n
	for _, b := range bs {
		if b.n >= q*total {
			return b.le
		}
	}
	return bs[len(bs)-1].le
}
