package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	rawStream     = "BENCH_RAW"
	rawSubjects   = "bench.raw."
	floorStream   = "BENCH_FLOOR"
	floorSubjects = "bench.floor."
	rawConsumer   = "bench"
	// rawPullMax is the raw consumer's PullMaxMessages: generous, so the
	// pull protocol is not what limits the ceiling.
	rawPullMax = 10000
	// rawMaxAckPending matches pusher's default for its consumer.
	rawMaxAckPending = 65536
	// floorIdleSample is how long the floor first measures pusher doing
	// nothing (its connections open), so the floor's share of idle cost
	// is known.
	floorIdleSample = 3 * time.Second
)

// jsRig is JetStream without pusher: a file stream of the bench's own on
// pusher's embedded server, an async publisher, and a durable pull
// consumer in this process that acks every message. Each runs on its own
// connection. The embedded server runs in pusher's process, so pusher's
// CPU over a rig's phase is JetStream's cost.
type jsRig struct {
	stream   string
	subjects []string // prefix0 .. prefix(conns-1)
	want     int64    // messages the phase publishes

	pubNC, subNC *nats.Conn
	js           jetstream.JetStream // the publisher's
	cc           jetstream.ConsumeContext

	acked, ackErrs, pubErrs atomic.Int64
	allAcked                chan struct{} // receives once, at want acks
}

// openRig creates stream (subjects prefix + uid index, one per
// connection of the other phases) and its acking consumer, for want
// messages with at most maxPending published and unacknowledged.
func (b *bench) openRig(ctx context.Context, stream, prefix string, want, maxPending int) (*jsRig, error) {
	r := &jsRig{stream: stream, want: int64(want), allAcked: make(chan struct{}, 1)}
	var err error
	if r.pubNC, err = nats.Connect(b.pusher.NATSURL(), nats.Name("bench-"+stream+"-publisher")); err != nil {
		return nil, fmt.Errorf("connect NATS: %w", err)
	}
	if r.subNC, err = nats.Connect(b.pusher.NATSURL(), nats.Name("bench-"+stream+"-consumer")); err != nil {
		r.pubNC.Close()
		return nil, fmt.Errorf("connect NATS: %w", err)
	}
	if err := r.open(ctx, prefix, maxPending, b.cfg.conns); err != nil {
		r.close(b)
		return nil, err
	}
	return r, nil
}

func (r *jsRig) open(ctx context.Context, prefix string, maxPending, conns int) error {
	var err error
	r.js, err = jetstream.New(r.pubNC,
		jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { r.pubErrs.Add(1) }))
	if err != nil {
		return err
	}
	jsSub, err := jetstream.New(r.subNC)
	if err != nil {
		return err
	}
	setup, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := r.js.CreateStream(setup, jetstream.StreamConfig{
		Name: r.stream, Subjects: []string{prefix + ">"},
		Storage: jetstream.FileStorage, Retention: jetstream.LimitsPolicy, MaxAge: time.Hour,
	}); err != nil {
		return fmt.Errorf("create stream %s: %w", r.stream, err)
	}
	cons, err := jsSub.CreateOrUpdateConsumer(setup, r.stream, jetstream.ConsumerConfig{
		Durable: rawConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxAckPending: rawMaxAckPending, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("create consumer on %s: %w", r.stream, err)
	}
	r.cc, err = cons.Consume(func(msg jetstream.Msg) {
		if err := msg.Ack(); err != nil {
			r.ackErrs.Add(1)
		}
		if r.acked.Add(1) == r.want {
			r.allAcked <- struct{}{}
		}
	}, jetstream.PullMaxMessages(rawPullMax))
	if err != nil {
		return fmt.Errorf("consume %s: %w", r.stream, err)
	}
	r.subjects = make([]string, conns)
	for i := range r.subjects {
		r.subjects[i] = prefix + strconv.Itoa(i)
	}
	return nil
}

// publish sends data to the subject of index i, asynchronously.
func (r *jsRig) publish(i int, data []byte, stall time.Duration) error {
	if _, err := r.js.PublishAsync(r.subjects[i%len(r.subjects)], data, jetstream.WithStallWait(stall)); err != nil {
		return fmt.Errorf("publish message %d: %w", i, err)
	}
	return nil
}

// waitAcked waits until the consumer acked every message and its acks
// reached the server.
func (r *jsRig) waitAcked(ctx context.Context, stall time.Duration) error {
	err := waitUntil(ctx, r.allAcked, stall, r.acked.Load, func() bool { return r.acked.Load() >= r.want }, "acks")
	if err != nil {
		return fmt.Errorf("%w (of %d messages)", err, r.want)
	}
	if err := r.subNC.FlushTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("flush acks: %w", err)
	}
	return nil
}

// check waits for the publisher's last acks and reports any error.
func (r *jsRig) check(stall time.Duration) error {
	select {
	case <-r.js.PublishAsyncComplete():
	case <-time.After(stall):
		return errors.New("publish acks still pending after the consumer acked everything")
	}
	if r.pubErrs.Load()+r.ackErrs.Load() > 0 {
		return fmt.Errorf("%d publish errors, %d ack errors", r.pubErrs.Load(), r.ackErrs.Load())
	}
	return nil
}

// close stops the consumer, deletes the stream (noting a failure) and
// closes both connections.
func (r *jsRig) close(b *bench) {
	if r.cc != nil {
		r.cc.Stop()
	}
	if r.js != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.js.DeleteStream(dctx, r.stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			b.notes = append(b.notes, fmt.Sprintf("delete stream %s: %v", r.stream, err))
		}
	}
	r.subNC.Close()
	r.pubNC.Close()
}

// The lowrate phase's JetStream floor: the fixed rate of the latency
// phase, paced the same way, into a stream of its own with an acking
// consumer in the bench and no WebSocket, on the same pusher process with
// the same connections open. Pusher's process CPU per message over it
// (the embedded NATS runs there) is what JetStream alone costs at that
// rate, next to pusher's own CPU per message at that rate from the
// latency phase. At a low rate both depend on how busy the machine is, so
// the floor runs in two halves of half the latency phase's duration,
// just before it and just after it: together they see the machine as
// the latency phase did, and the two halves show how much it moved.

// floorHalf is what one half of the floor measured.
type floorHalf struct {
	n      int
	cpu    time.Duration // pusher's, over the paced publishing
	wall   time.Duration
	lagP99 int64 // how late the pacer was, ns
}

// phaseFloorBefore runs the floor's first half, after a short idle
// sample of pusher with its connections open.
func (b *bench) phaseFloorBefore(ctx context.Context) error {
	i0, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, floorIdleSample); err != nil {
		return err
	}
	i1, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	b.floorIdle = (i1.pusher - i0.pusher).Seconds() / wallOf(i0, i1, b.ticks)
	h, err := b.floorRun(ctx, "before")
	b.floorBefore = &h
	return err
}

// phaseFloorAfter runs the second half and reports the floor, and pusher
// above it.
func (b *bench) phaseFloorAfter(ctx context.Context) error {
	a, err := b.floorRun(ctx, "after")
	if err != nil {
		return err
	}
	bf := b.floorBefore
	if bf == nil {
		return errors.New("the floor's first half did not run")
	}
	rate := b.cfg.rate
	n := bf.n + a.n
	per := func(h floorHalf) float64 { return us(h.cpu) / float64(h.n) }
	floor := us(bf.cpu+a.cpu) / float64(n)
	at := comma(float64(rate), 0) + " msgs/s"
	b.res.add(metric{Name: "lowrate_jetstream_floor_cpu_us_per_msg", Label: "lowrate: JetStream floor at " + at + ", pusher process CPU per message",
		Value: floor, Unit: "µs", prec: 2,
		Extra: fmt.Sprintf("stream %s, acking pull consumer in the bench, no WebSocket; %.2f µs before the latency phase, %.2f after; %.1f%% of a core, pusher idle %.1f%%; publisher late p99 %.3f ms",
			floorStream, per(*bf), per(a), 100*(bf.cpu+a.cpu).Seconds()/(bf.wall+a.wall).Seconds(), 100*b.floorIdle, ms(max(bf.lagP99, a.lagP99)))})
	b.res.add(metric{Name: "lowrate_jetstream_floor_before_cpu_us_per_msg", Value: per(*bf), Unit: "µs", hidden: true})
	b.res.add(metric{Name: "lowrate_jetstream_floor_after_cpu_us_per_msg", Value: per(a), Unit: "µs", hidden: true})
	b.res.add(metric{Name: "lowrate_pusher_idle_cpu_pct", Value: 100 * b.floorIdle, Unit: "% of a core", hidden: true})
	if own, ok := b.res.get("latency_cpu_us_per_msg"); ok && floor > 0 {
		b.res.add(metric{Name: "lowrate_pusher_above_floor_us_per_msg", Label: "lowrate: pusher above the JetStream floor at " + at + ", CPU per message",
			Value: own - floor, Unit: "µs", prec: 2, Extra: fmt.Sprintf("pusher %.2f (latency phase) − floor %.2f µs", own, floor)})
		b.res.add(metric{Name: "lowrate_pusher_to_floor_ratio", Label: "lowrate: pusher / JetStream floor, CPU per message at " + at,
			Value: own / floor, Unit: "ratio", prec: 2, Extra: fmt.Sprintf("%.2f / %.2f µs", own, floor)})
	}
	b.logf("jetstream floor: %d msgs at %d/s: %.2f µs pusher CPU/msg (before %.2f, after %.2f)", n, rate, floor, per(*bf), per(a))
	return nil
}

// floorRun publishes half the latency phase's messages at its rate into
// the floor's stream and measures pusher's CPU over them.
func (b *bench) floorRun(ctx context.Context, half string) (floorHalf, error) {
	rate := b.cfg.rate
	h := floorHalf{n: max(1, int(int64(rate)*int64(b.cfg.latencyDur)/int64(time.Second)/2))}
	r, err := b.openRig(ctx, floorStream, floorSubjects, h.n, 65536)
	if err != nil {
		return h, err
	}
	defer r.close(b)
	tmpl := newPayload(b.cfg.payload)
	c0, err := b.cpuSnapshot()
	if err != nil {
		return h, err
	}
	start := time.Now().Add(20 * time.Millisecond).UnixNano()
	lags, err := pace(ctx, h.n, rate, start, func(i int, intended int64) error {
		data := slices.Clone(tmpl)
		encodePayload(data, intended, uint64(i), tagFloor)
		return r.publish(i, data, b.cfg.stall)
	})
	if err != nil {
		return h, err
	}
	if err := r.waitAcked(ctx, b.cfg.stall); err != nil {
		return h, err
	}
	c1, err := b.cpuSnapshot()
	if err != nil {
		return h, err
	}
	h.wall = time.Duration(time.Now().UnixNano() - start)
	if err := r.check(b.cfg.stall); err != nil {
		return h, err
	}
	h.cpu = c1.pusher - c0.pusher
	slices.Sort(lags)
	h.lagP99 = pct(lags, 0.99)
	b.machineRow("lowrate_floor_"+half+"_machine_cpu_busy_pct", "JetStream floor ("+half+" latency)", c0, c1)
	return h, nil
}
