package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/wire"
)

// DLQ reads and replays dead letters. It is what `pusher dlq` and
// replay-on-connect share; safe for concurrent use.
type DLQ struct {
	js jetstream.JetStream

	// stream is PUSH_DLQ's handle, looked up on first use: every connect
	// walks it. Lookups by sequence address the stream by name, so the
	// handle outlives a recreation of the stream.
	stream atomic.Pointer[jetstream.Stream]
}

// NewDLQ returns a DLQ over js.
func NewDLQ(js jetstream.JetStream) *DLQ { return &DLQ{js: js} }

// open returns the PUSH_DLQ handle, looking it up on first use. No lock is
// held across the lookup: walks that start together before the first
// lookup finished each look it up, and one of the handles is kept.
func (d *DLQ) open(ctx context.Context) (jetstream.Stream, error) {
	if s := d.stream.Load(); s != nil {
		return *s, nil
	}
	s, err := d.js.Stream(ctx, wire.DLQStreamName)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", wire.DLQStreamName, err)
	}
	d.stream.CompareAndSwap(nil, &s)
	return s, nil
}

// Each calls fn for every dead letter of uid in stored order, or of every
// uid when uid is empty. Malformed dead letters are passed with the parse
// error so callers can show them; fn returning an error stops the walk.
//
// The walk ends at the last dead letter stored when it began: a replay to
// a user who is still away dead-letters its messages again, and walking
// on into those would replay them forever.
//
// A walk that finds nothing (the usual replay-on-connect) costs one
// direct get; the stream's last sequence is read only after a first hit.
func (d *DLQ) Each(ctx context.Context, uid string, fn func(DeadLetter, error) error) error {
	stream, err := d.open(ctx)
	if err != nil {
		return err
	}
	filter := wire.DLQSubjects
	if uid != "" {
		filter = wire.DLQSubject(uid)
	}
	var last uint64 // 0: not read yet
	for seq := uint64(1); ; {
		raw, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("get dead letter after seq %d: %w", seq, err)
		}
		if last == 0 {
			info, err := stream.Info(ctx)
			if err != nil {
				return fmt.Errorf("stream %s info: %w", wire.DLQStreamName, err)
			}
			last = info.State.LastSeq
		}
		if raw.Sequence > last {
			return nil
		}
		dl, perr := ParseDeadLetter(raw.Subject, raw.Sequence, raw.Header, raw.Data)
		dl.StoredAt = raw.Time
		if err := fn(dl, perr); err != nil {
			return err
		}
		seq = raw.Sequence + 1
	}
}

// ReplayFilter picks which dead letters Replay republishes.
type ReplayFilter func(DeadLetter) bool

// OnlyOffline replays dead letters of users who were offline: what a
// user who connects should get.
func OnlyOffline(dl DeadLetter) bool { return dl.Reason == wire.ReasonOffline }

// AllReplayable replays every dead letter that names a valid uid.
func AllReplayable(DeadLetter) bool { return true }

// Replay republishes uid's dead letters that keep accepts (every uid's when
// uid is empty) to push.<uid>, and deletes each from PUSH_DLQ only after
// JetStream acked its republish, so a crash in between duplicates rather
// than loses. Malformed dead letters stay where they are. progress, when
// not nil, is called after each replayed message. It returns how many were
// replayed and how many were skipped as malformed.
func (d *DLQ) Replay(ctx context.Context, uid string, keep ReplayFilter, progress func(replayed int)) (replayed, skipped int, err error) {
	stream, err := d.open(ctx)
	if err != nil {
		return 0, 0, err
	}
	err = d.Each(ctx, uid, func(dl DeadLetter, perr error) error {
		if perr != nil {
			skipped++
			return nil
		}
		if !keep(dl) || dl.Reason == wire.ReasonBadSubject {
			return nil
		}
		h := dl.Header
		h.Set(wire.HeaderReplayOf, strconv.FormatUint(dl.Seq, 10))
		// What the message was when first published, so a pusher.v1
		// client sees the same seq, id and ts and can de-duplicate.
		h.Set(wire.HeaderOriginalSeq, strconv.FormatUint(dl.OriginalSeq, 10))
		if !dl.PublishedAt.IsZero() {
			h.Set(wire.HeaderPublishedAt, dl.PublishedAt.UTC().Format(time.RFC3339Nano))
		}
		if dl.MsgID != "" {
			h.Set(wire.HeaderMsgID, dl.MsgID)
		}
		// Concurrent replays of one dead letter (two connects at once)
		// publish the same id; JetStream keeps one. The storage time makes
		// the id unique even if PUSH_DLQ is recreated and its sequences
		// start again, which would otherwise drop a new dead letter as a
		// duplicate of an old one.
		h.Set(jetstream.MsgIDHeader, "pusher-replay-"+strconv.FormatUint(dl.Seq, 10)+"-"+strconv.FormatInt(dl.StoredAt.UnixNano(), 10))
		msg := &nats.Msg{Subject: wire.PushSubject(dl.UID), Header: h, Data: dl.Data}
		if _, err := d.js.PublishMsg(ctx, msg); err != nil {
			return fmt.Errorf("republish dead letter %d: %w", dl.Seq, err)
		}
		if err := stream.DeleteMsg(ctx, dl.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && !isAlreadyDeleted(err) {
			return fmt.Errorf("delete dead letter %d: %w", dl.Seq, err)
		}
		replayed++
		if progress != nil {
			progress(replayed)
		}
		return nil
	})
	return replayed, skipped, err
}

// isAlreadyDeleted matches the server's answer when a concurrent replay
// deleted the message first.
func isAlreadyDeleted(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound
}
