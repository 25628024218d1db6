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
	// floorIdle is how long the floor phase first measures pusher doing
	// nothing (its connections open), so the floor's share of idle cost
	// is known.
	floorIdle = 3 * time.Second
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

// phaseFloor is the lowrate phase's JetStream floor: the same fixed rate
// and duration as the latency phase, paced the same way, into a stream of
// its own with an acking consumer in the bench and no WebSocket. Pusher's
// process CPU per message over it (the embedded NATS runs there) is what
// JetStream alone costs at that rate, next to pusher's own CPU per
// message at that rate from the latency phase just before, on the same
// process with the same connections open.
func (b *bench) phaseFloor(ctx context.Context) error {
	rate := b.cfg.rate
	n := int(int64(rate) * int64(b.cfg.latencyDur) / int64(time.Second))
	r, err := b.openRig(ctx, floorStream, floorSubjects, n, 65536)
	if err != nil {
		return err
	}
	defer r.close(b)
	tmpl := newPayload(b.cfg.payload)
	i0, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, floorIdle); err != nil {
		return err
	}
	c0, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	idle := (c0.pusher - i0.pusher).Seconds() / wallOf(i0, c0, b.ticks) // cores
	start := time.Now().Add(20 * time.Millisecond).UnixNano()
	lags, err := pace(ctx, n, rate, start, func(i int, intended int64) error {
		data := slices.Clone(tmpl)
		encodePayload(data, intended, uint64(i), tagFloor)
		return r.publish(i, data, b.cfg.stall)
	})
	if err != nil {
		return err
	}
	if err := r.waitAcked(ctx, b.cfg.stall); err != nil {
		return err
	}
	c1, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	wall := time.Duration(time.Now().UnixNano() - start)
	if err := r.check(b.cfg.stall); err != nil {
		return err
	}
	slices.Sort(lags)
	at := comma(float64(rate), 0) + " msgs/s"
	floor := us(c1.pusher-c0.pusher) / float64(n)
	b.res.add(metric{Name: "lowrate_jetstream_floor_cpu_us_per_msg", Label: "lowrate: JetStream floor at " + at + ", pusher process CPU per message",
		Value: floor, Unit: "µs", prec: 2,
		Extra: fmt.Sprintf("stream %s, async publish + acking pull consumer in the bench, no WebSocket; %.1f%% of a core, of which pusher idle %.1f%% (%.2f µs/msg); publisher late p99 %.3f ms",
			floorStream, 100*(c1.pusher-c0.pusher).Seconds()/wall.Seconds(), 100*idle, 1e6*idle/float64(rate), ms(pct(lags, 0.99)))})
	if own, ok := b.res.get("latency_cpu_us_per_msg"); ok && floor > 0 {
		b.res.add(metric{Name: "lowrate_pusher_above_floor_us_per_msg", Label: "lowrate: pusher above the JetStream floor at " + at + ", CPU per message",
			Value: own - floor, Unit: "µs", prec: 2, Extra: fmt.Sprintf("pusher %.2f − floor %.2f µs (latency phase − this one)", own, floor)})
		b.res.add(metric{Name: "lowrate_pusher_to_floor_ratio", Label: "lowrate: pusher / JetStream floor, CPU per message at " + at,
			Value: own / floor, Unit: "ratio", prec: 2, Extra: fmt.Sprintf("%.2f / %.2f µs", own, floor)})
	}
	b.machineRow("lowrate_floor_machine_cpu_busy_pct", "JetStream floor", c0, c1)
	b.logf("jetstream floor: %d msgs at %d/s: %.2f µs pusher CPU/msg", n, rate, floor)
	return nil
}
