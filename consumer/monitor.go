package consumer

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/pusher-io/pusher/wire"
)

// monitor polls the durable consumer's state for metrics and readiness,
// and recreates the topology when the consumer or either stream was
// deleted under us: a consumer deleted without this would leave pusher
// silently idle, and a deleted PUSH_DLQ would make every dead letter fail.
func (c *Consumer) monitor(ctx context.Context) {
	t := time.NewTicker(c.cfg.MonitorInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.recreate:
		}
		c.check(ctx)
	}
}

func (c *Consumer) check(ctx context.Context) {
	if !c.pulling.Load() {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, c.cfg.MonitorInterval)
	defer cancel()
	_, dlqErr := c.js.Stream(ictx, wire.DLQStreamName)
	if isGone(dlqErr) {
		c.consumerOK.Store(false) // rebuild below, PUSH_DLQ included
	}
	cons, err := c.js.Consumer(ictx, wire.StreamName, wire.DurableName)
	if err == nil {
		info := cons.CachedInfo()
		c.pending.Store(info.NumPending)
		c.ackPending.Store(int64(info.NumAckPending))
		if c.consumerOK.Load() {
			return
		}
	} else if !isGone(err) {
		c.log.Warn(evConsumerErr, zap.Error(err))
		return
	}
	// Gone, or pulling stopped after a delete notice: build it again and
	// pull from the new one (consume swaps it in without holding c.mu
	// across the round trips).
	cons, err = EnsureTopology(ictx, c.js, c.cfg.Topology)
	if err != nil {
		c.log.Error(evConsumerErr, zap.Error(err))
		return
	}
	if err := c.consume(cons); err != nil {
		c.log.Error(evConsumerErr, zap.Error(err))
		return
	}
	c.consumerOK.Store(true)
	c.log.Warn(evRecreated, zap.String("consumer", wire.DurableName))
}
