package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/wire"
)

// Topology is the JetStream layout pusher creates or updates at start.
// Zero values mean the documented default.
type Topology struct {
	// Replicas for both streams and the consumer; default 1 (3 on a cluster).
	Replicas int
	// Retention is PUSH's MaxAge; default 24h.
	Retention time.Duration
	// DLQRetention is PUSH_DLQ's MaxAge; default 168h.
	DLQRetention time.Duration
	// AckWait is how long a delivery may stay unacked before JetStream
	// redelivers it; default 30s. It must exceed the WebSocket write
	// deadline plus queueing, or slow writes are redelivered while still in
	// flight. pusher does its own back-off with NakWithDelay rather than a
	// consumer BackOff list, which would silently shrink AckWait to its
	// first step.
	AckWait time.Duration
	// MaxAckPending caps unacked deliveries; default 65536, so acking after
	// the write never stalls throughput.
	MaxAckPending int
	// DLQMaxPerUID is how many dead letters PUSH_DLQ keeps per uid, the
	// oldest discarded first (MaxMsgsPerSubject), so a week away cannot
	// flood a reconnect; default DefaultDLQMaxPerUID, negative unlimited.
	DLQMaxPerUID int
}

// DefaultDLQMaxPerUID is Topology.DLQMaxPerUID's default.
const DefaultDLQMaxPerUID = 1000

const duplicateWindow = 2 * time.Minute

func (t Topology) withDefaults() (Topology, error) {
	if t.Replicas == 0 {
		t.Replicas = 1
	}
	if t.Retention == 0 {
		t.Retention = 24 * time.Hour
	}
	if t.DLQRetention == 0 {
		t.DLQRetention = 168 * time.Hour
	}
	if t.AckWait == 0 {
		t.AckWait = 30 * time.Second
	}
	if t.MaxAckPending == 0 {
		t.MaxAckPending = 65536
	}
	switch {
	case t.DLQMaxPerUID == 0:
		t.DLQMaxPerUID = DefaultDLQMaxPerUID
	case t.DLQMaxPerUID < 0:
		t.DLQMaxPerUID = -1 // JetStream's "unlimited"
	}
	switch {
	case t.Replicas < 1 || t.Replicas > 5:
		return t, fmt.Errorf("replicas %d: want 1 to 5", t.Replicas)
	case t.Retention < duplicateWindow || t.DLQRetention < duplicateWindow:
		return t, fmt.Errorf("retention must be at least the %s duplicate window", duplicateWindow)
	case t.AckWait < time.Second:
		return t, fmt.Errorf("ack wait %s: want at least 1s", t.AckWait)
	case t.MaxAckPending < 1:
		return t, fmt.Errorf("max ack pending %d: want at least 1", t.MaxAckPending)
	}
	return t, nil
}

// EnsureTopology creates or updates streams PUSH and PUSH_DLQ and the
// durable pull consumer "pusher", and returns the consumer. It is
// idempotent; every node calls it at start and again when the consumer
// disappears under it.
func EnsureTopology(ctx context.Context, js jetstream.JetStream, t Topology) (jetstream.Consumer, error) {
	t, err := t.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	streams := []jetstream.StreamConfig{{
		Name:        wire.StreamName,
		Description: "pusher: messages for users, subject push.<uid>",
		Subjects:    []string{wire.PushSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      t.Retention,
		Duplicates:  duplicateWindow,
		Replicas:    t.Replicas,
	}, {
		Name:        wire.DLQStreamName,
		Description: "pusher: dead letters, subject dlq.push.<uid>, headers Pusher-*",
		Subjects:    []string{wire.DLQSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      t.DLQRetention,
		// One subject per uid: the cap is per user.
		MaxMsgsPerSubject: int64(t.DLQMaxPerUID),
		Duplicates:        duplicateWindow,
		Replicas:          t.Replicas,
		// Replay-on-connect looks up a uid's dead letters on every
		// connect, and a direct get is the cheaper read. But replicas
		// answer direct gets too, the nearest first, and a replica may not
		// hold yet what the leader acked (a write needs a quorum, not
		// every replica): a connect that raced a dead-lettering elsewhere
		// then found nothing although the replay notice had come and gone,
		// and the dead letter waited for the user's next connect (seen in
		// a rolling restart on a loaded machine). Replicated, the reads go
		// to the leader, which has every dead letter it acked.
		AllowDirect: t.Replicas == 1,
	}}
	for _, cfg := range streams {
		if err := ensureStream(ctx, js, cfg); err != nil {
			return nil, err
		}
	}
	want := jetstream.ConsumerConfig{
		Durable:       wire.DurableName,
		Description:   "pusher: delivers push.<uid> to WebSocket connections",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       t.AckWait,
		MaxDeliver:    -1, // pusher counts deliveries itself and dead-letters; see Config.MaxDeliver
		MaxAckPending: t.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      t.Replicas,
	}
	return ensureConsumer(ctx, js, want)
}

// ensureStream creates the stream, or updates it when a setting pusher
// owns differs, and otherwise leaves it alone. Several nodes start at
// once: reading first and writing only on a difference keeps them from
// racing create against update (which, on a fresh R3 cluster, can leave
// both requests unanswered), and a create that loses to another node's
// counts as success.
func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil
		}
	case err == nil:
		have := s.CachedInfo().Config
		if slices.Equal(have.Subjects, want.Subjects) && have.MaxAge == want.MaxAge &&
			have.Duplicates == want.Duplicates && have.Replicas == want.Replicas &&
			have.AllowDirect == want.AllowDirect && have.Storage == want.Storage &&
			normPerSubject(have.MaxMsgsPerSubject) == normPerSubject(want.MaxMsgsPerSubject) {
			return nil
		}
		_, err = js.UpdateStream(ctx, want)
	}
	if err != nil {
		return fmt.Errorf("create or update stream %s: %w", want.Name, err)
	}
	return nil
}

// normPerSubject folds the server's spellings of "no limit" (0 and -1).
func normPerSubject(n int64) int64 { return max(n, 0) }

// ensureConsumer is ensureStream for the durable consumer.
func ensureConsumer(ctx context.Context, js jetstream.JetStream, want jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := js.Consumer(ctx, wire.StreamName, want.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cons, err = js.CreateConsumer(ctx, wire.StreamName, want)
		if errors.Is(err, jetstream.ErrConsumerExists) || errors.Is(err, jetstream.ErrConsumerNameAlreadyInUse) {
			cons, err = js.Consumer(ctx, wire.StreamName, want.Durable)
		}
	case err == nil:
		have := cons.CachedInfo().Config
		if have.AckWait != want.AckWait || have.MaxDeliver != want.MaxDeliver ||
			have.MaxAckPending != want.MaxAckPending || have.Replicas != want.Replicas {
			cons, err = js.UpdateConsumer(ctx, wire.StreamName, want)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create or update consumer %s: %w", want.Durable, err)
	}
	return cons, nil
}

// isGone reports whether err means the stream or consumer no longer exists,
// so the topology must be created again.
func isGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}
