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
	c.mu.Lock()
	pulling := c.pulling
	c.mu.Unlock()
	if !pulling {
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
	// pull from the new one.
	cons, err = EnsureTopology(ictx, c.js, c.cfg.Topology)
	if err != nil {
		c.log.Error(evConsumerErr, zap.Error(err))
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pulling {
		return
	}
	if c.cc != nil {
		c.cc.Stop()
	}
	if err := c.consumeLocked(cons); err != nil {
		c.log.Error(evConsumerErr, zap.Error(err))
		return
	}
	c.consumerOK.Store(true)
	c.log.Warn(evRecreated, zap.String("consumer", wire.DurableName))
}
