package main

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// phaseHTTP is the HTTP door: --http-publishers concurrent publishers,
// each over one keep-alive connection, send --http-messages messages as
// fast as the answers come back, to the uids whose connections the
// throughput phase opened (so every message is delivered, as in
// production). Against pusher: POST /v1/push one message a request, then
// --http-batch messages a request (reported as not available when pusher
// answers an array with 400); against the demo: /send.
func (b *bench) phaseHTTP(ctx context.Context) error {
	if b.demo != nil {
		return b.httpDoor(ctx, b.demoDoor())
	}
	base := "http://" + b.pusher.HTTPAddr()
	single := door{kind: doorSingle, url: base + "/v1/push", warm: base + "/healthz", key: b.apiKey, batch: 1}
	if err := b.httpDoor(ctx, single); err != nil {
		return err
	}
	batch := single
	batch.kind, batch.batch = doorBatch, b.cfg.httpBatch
	return b.httpDoor(ctx, batch)
}

// demoDoor is the demo's /send; its /metrics warms the connections.
func (b *bench) demoDoor() door {
	base := "http://" + b.demo.addr
	return door{kind: doorSend, url: base + "/send", warm: base + "/metrics", batch: 1}
}

// httpDoor runs one door of the http phase and reports it under
// http_single_* (pusher's single form and the demo's /send, as the demo
// variant) or http_batch_*.
func (b *bench) httpDoor(ctx context.Context, d door) error {
	uids := uidRange("b", b.cfg.conns)
	reqs := (b.cfg.httpMessages + d.batch - 1) / d.batch
	m := reqs * d.batch
	key, what := "http_single", "POST /v1/push, one message a request"
	switch d.kind {
	case doorBatch:
		key, what = "http_batch", fmt.Sprintf("POST /v1/push, %d messages a request", d.batch)
	case doorSend:
		what = "/send, one message a request"
	}
	phase := "http " + key[len("http_"):]
	pool, err := newHTTPPool(ctx, d, uids, b.cfg.httpPublishers, b.cfg.httpPublishers)
	if err != nil {
		return err
	}
	defer pool.close()
	mark, c0, err := b.startMessages(ctx, "http", m)
	if err != nil {
		return err
	}
	tmpl := newPayload(b.cfg.payload)
	t0 := time.Now()
	for r := 0; r < reqs && pool.noBatch.Load() == nil; r++ {
		job := httpJob{ks: make([]int, d.batch), data: make([][]byte, d.batch)}
		now := time.Now().UnixNano()
		for j := range d.batch {
			seq := r*d.batch + j
			job.ks[j] = seq % len(uids)
			job.data[j] = slices.Clone(tmpl)
			encodePayload(job.data[j], now, uint64(seq), tagHTTP)
		}
		if err := pool.submit(job); err != nil {
			return err
		}
	}
	if err := pool.finish(ctx); err != nil && ctx.Err() != nil {
		return err
	}
	answered := time.Since(t0)
	if e := pool.noBatch.Load(); e != nil {
		b.res.add(metric{Name: key + "_msgs_per_s", Label: "http: " + what, Unit: "msgs/s", NA: true, Extra: (*e).Error()})
		b.res.add(metric{Name: "http_batch_to_single_msgs_ratio", Label: fmt.Sprintf("http: batch of %d / single, messages per second", d.batch),
			Unit: "ratio", NA: true, Op: ">=", Target: 5})
		b.notes = append(b.notes, fmt.Sprintf("%s phase: not available: %v", phase, *e))
		b.logf("http %s: not available: %v", d.kind, *e)
		return nil
	}
	accepted := pool.accepted.Load()
	if accepted == 0 {
		if err := pool.failed(); err != nil {
			return fmt.Errorf("no message accepted of %d: %w", m, err)
		}
		return fmt.Errorf("no message accepted of %d; first rejection: %s", m, *pool.firstRej.Load())
	}
	err = waitUntil(ctx, b.progress, b.cfg.stall, b.received, func() bool { return b.received() >= accepted }, "receipts")
	if err != nil {
		return fmt.Errorf("%w (%d accepted)%s", err, accepted, b.stallHint(ctx, mark, pool))
	}
	c1, err := b.cpuSnapshot()
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, dupGrace); err != nil {
		return err
	}
	rep, err := b.collect(ctx)
	if err != nil {
		return err
	}
	if _, err := b.checkServer(ctx, phase, mark, int(accepted)); err != nil {
		return err
	}
	if lost := accepted - rep.unique; lost != 0 || rep.dup != 0 || rep.bad != 0 {
		b.notes = append(b.notes, fmt.Sprintf("%s phase: %d accepted, %d received, %d duplicates, %d unparseable frames", phase, accepted, rep.unique, rep.dup, rep.bad))
	}
	if rep.dropped != 0 {
		b.notes = append(b.notes, fmt.Sprintf("%s phase: the server ended %d connections; first: %s", phase, rep.dropped, rep.firstDrop))
	}
	if f := pool.failedN.Load() + pool.rejected.Load(); f > 0 {
		msg := fmt.Sprintf("%s phase: %d of %d messages not accepted", phase, f, m)
		if err := pool.failed(); err != nil {
			msg += "; " + err.Error()
		}
		if r := pool.firstRej.Load(); r != nil {
			msg += fmt.Sprintf("; %d rejected in a batch, first: %s", pool.rejected.Load(), *r)
		}
		b.notes = append(b.notes, msg)
	}

	// Messages over the time to the last receipt (or the last answer, if
	// later): what was published and delivered per second.
	elapsed := max(time.Unix(0, rep.lastRecvNs).Sub(t0), answered)
	rate := float64(accepted) / elapsed.Seconds()
	durs := pool.requestTimes()
	perMsg := us(c1.pusher-c0.pusher) / float64(accepted)
	label := fmt.Sprintf("http: %s, %d publishers", what, b.cfg.httpPublishers)
	b.res.add(metric{Name: key + "_msgs_per_s", Label: label, Value: rate, Unit: "msgs/s", prec: 0,
		Extra: fmt.Sprintf("%s req/s; request p50 %.2f ms, p99 %.2f ms; %s msgs answered in %s, delivered in %s",
			comma(float64(pool.requests.Load())/elapsed.Seconds(), 0), ms(pct(durs, 0.5)), ms(pct(durs, 0.99)),
			comma(float64(accepted), 0), answered.Round(time.Millisecond), elapsed.Round(time.Millisecond))})
	b.res.add(metric{Name: key + "_req_per_s", Value: float64(pool.requests.Load()) / elapsed.Seconds(), Unit: "req/s", hidden: true})
	b.res.add(metric{Name: key + "_request_p99_ms", Value: ms(pct(durs, 0.99)), Unit: "ms", hidden: true})
	b.res.add(metric{Name: key + "_cpu_us_per_msg", Label: "  server CPU per message (" + b.serverText() + ")", Value: perMsg, Unit: "µs", prec: 2})
	b.res.add(metric{Name: key + "_lost", Label: "  lost / duplicate messages", Value: float64(accepted - rep.unique), Unit: "msgs", prec: 0,
		Extra: fmt.Sprintf("%d dup; %d not accepted", rep.dup, pool.failedN.Load()+pool.rejected.Load())})
	b.machineRow(key+"_machine_cpu_busy_pct", phase, c0, c1)
	if d.kind == doorBatch {
		if single, ok := b.res.get("http_single_msgs_per_s"); ok && single > 0 {
			b.res.add(metric{Name: "http_batch_to_single_msgs_ratio", Label: fmt.Sprintf("http: batch of %d / single, messages per second", d.batch),
				Value: rate / single, Unit: "ratio", prec: 2, Op: ">=", Target: 5, Extra: fmt.Sprintf("%s / %s msgs/s", comma(rate, 0), comma(single, 0))})
		}
	}
	b.logf("http %s: %d msgs in %s = %.0f msgs/s, %.2f µs server CPU/msg, request p99 %.2f ms", d.kind, accepted,
		elapsed.Round(time.Millisecond), rate, perMsg, ms(pct(durs, 0.99)))
	return nil
}
