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
// get (direct on one replica, else from the leader); the stream's last
// sequence is read only after a first hit.
func (d *DLQ) Each(ctx context.Context, uid string, fn func(DeadLetter, error) error) error {
	return d.each(ctx, uid, bound{}, fn)
}

// bound is what a walk may know before it starts, from a listing
// (Holders): the stream's last sequence then, and how many dead letters
// the uid had. Zero values mean unknown.
type bound struct {
	last, count uint64
}

func (d *DLQ) each(ctx context.Context, uid string, b bound, fn func(DeadLetter, error) error) error {
	stream, err := d.open(ctx)
	if err != nil {
		return err
	}
	filter := wire.DLQSubjects
	if uid != "" {
		filter = wire.DLQSubject(uid)
	}
	seen := uint64(0)
	for seq := uint64(1); b.count == 0 || seen < b.count; seen++ {
		raw, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("get dead letter after seq %d: %w", seq, err)
		}
		if b.last == 0 {
			info, err := stream.Info(ctx)
			if err != nil {
				return fmt.Errorf("stream %s info: %w", wire.DLQStreamName, err)
			}
			b.last = info.State.LastSeq
		}
		if raw.Sequence > b.last {
			return nil
		}
		dl, perr := ParseDeadLetter(raw.Subject, raw.Sequence, raw.Header, raw.Data)
		dl.StoredAt = raw.Time
		if err := fn(dl, perr); err != nil {
			return err
		}
		seq = raw.Sequence + 1
	}
	return nil
}

// Holders lists, in one JetStream request (paged by the server for very
// many), the uids that have dead letters now: what a connect storm asks
// once instead of one look-up per returning user. The listing is of the
// moment: a dead letter stored after it is found through the replay
// notice (Router.StoredOffline), as before.
func (d *DLQ) Holders(ctx context.Context) (Holders, error) {
	stream, err := d.open(ctx)
	if err != nil {
		return Holders{}, err
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(wire.DLQSubjects))
	if err != nil {
		return Holders{}, fmt.Errorf("list %s subjects: %w", wire.DLQStreamName, err)
	}
	h := Holders{counts: make(map[string]uint64, len(info.State.Subjects)), last: info.State.LastSeq}
	for subject, n := range info.State.Subjects {
		if uid, err := wire.UIDFromDLQSubject(subject); err == nil {
			h.counts[uid] = n
		}
	}
	return h, nil
}

// Holders is a listing of the users with dead letters.
type Holders struct {
	counts map[string]uint64 // dead letters by uid
	last   uint64            // PUSH_DLQ's last sequence at the listing
}

// Has reports whether uid had dead letters at the listing.
func (h Holders) Has(uid string) bool { return h.counts[uid] > 0 }

// bound is the walk of uid's dead letters as the listing knows it: it
// ends after the count listed, at the last sequence then, saving a
// look-up of each.
func (h Holders) bound(uid string) bound { return bound{last: h.last, count: h.counts[uid]} }

// ReplayFilter picks which dead letters Replay republishes.
type ReplayFilter func(DeadLetter) bool

// OnlyOffline replays dead letters of users who were offline: what a
// user who connects should get.
func OnlyOffline(dl DeadLetter) bool { return dl.Reason == wire.ReasonOffline }

// AllReplayable replays every dead letter that names a valid uid.
func AllReplayable(DeadLetter) bool { return true }

// ReplayResult counts what a Replay did.
type ReplayResult struct {
	Replayed   int // republished to push.<uid> and removed
	Expired    int // past their Pusher-TTL: removed, not republished
	Skipped    int // malformed: left where they are
	BadSubject int // reason bad_subject, naming no user to replay to: left where they are
	// Racing: being republished by another replay at this very moment
	// (two nodes replaying one user in a connect storm): left to it.
	Racing int
}

// errCodeMsgIDInProcess is JetStream's answer to a publish whose
// Nats-Msg-Id another publish is storing right now (nats-server's
// JSStreamDuplicateMessageConflict, 409). A replay's id is the dead
// letter's, so it means another replay has this dead letter in hand.
const errCodeMsgIDInProcess jetstream.ErrorCode = 10158

// racing reports whether a replay's publish failed because another
// replay is storing the same dead letter (a clustered stream answers so
// while its first copy goes through Raft; a single server answers the
// second publish as a duplicate instead).
func racing(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeMsgIDInProcess
}

// Replay republishes uid's dead letters that keep accepts (every uid's when
// uid is empty) to push.<uid>, and deletes each from PUSH_DLQ only after
// JetStream acked its republish, so a crash in between duplicates rather
// than loses. A dead letter past its Pusher-TTL is deleted instead, and
// passed to onExpired (if not nil) for the log. Malformed and bad_subject
// dead letters stay where they are, and keep is not asked about them.
// progress, when not nil, is called after each replayed message.
func (d *DLQ) Replay(ctx context.Context, uid string, keep ReplayFilter, progress func(replayed int), onExpired func(DeadLetter)) (ReplayResult, error) {
	return d.replay(ctx, uid, bound{}, keep, progress, onExpired)
}

// ReplayListed is Replay for a uid of a listing: the listing bounds the
// walk, which saves a round trip or two per user in a connect storm.
func (d *DLQ) ReplayListed(ctx context.Context, h Holders, uid string, keep ReplayFilter, onExpired func(DeadLetter)) (ReplayResult, error) {
	return d.replay(ctx, uid, h.bound(uid), keep, nil, onExpired)
}

func (d *DLQ) replay(ctx context.Context, uid string, b bound, keep ReplayFilter, progress func(replayed int), onExpired func(DeadLetter)) (ReplayResult, error) {
	var res ReplayResult
	stream, err := d.open(ctx)
	if err != nil {
		return res, err
	}
	err = d.each(ctx, uid, b, func(dl DeadLetter, perr error) error {
		if perr != nil {
			res.Skipped++
			return nil
		}
		if dl.Reason == wire.ReasonBadSubject {
			res.BadSubject++
			return nil
		}
		if !keep(dl) {
			return nil
		}
		if dl.Expired(time.Now()) {
			if err := deleteMsg(ctx, stream, dl.Seq); err != nil {
				return err
			}
			res.Expired++
			if onExpired != nil {
				onExpired(dl)
			}
			return nil
		}
		if _, err := d.js.PublishMsg(ctx, replayMsg(dl)); err != nil {
			if racing(err) {
				res.Racing++ // the other replay stores and deletes it
				return nil
			}
			return fmt.Errorf("republish dead letter %d: %w", dl.Seq, err)
		}
		if err := deleteMsg(ctx, stream, dl.Seq); err != nil {
			return err
		}
		res.Replayed++
		if progress != nil {
			progress(res.Replayed)
		}
		return nil
	})
	return res, err
}

// Get returns the dead letter stored at seq in PUSH_DLQ. A malformed one
// comes filled as far as it could be, with ParseDeadLetter's error
// (ErrMalformedDeadLetter); none at seq is an error wrapping
// jetstream.ErrMsgNotFound.
func (d *DLQ) Get(ctx context.Context, seq uint64) (DeadLetter, error) {
	stream, err := d.open(ctx)
	if err != nil {
		return DeadLetter{}, err
	}
	raw, err := stream.GetMsg(ctx, seq)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("get dead letter %d: %w", seq, err)
	}
	dl, err := ParseDeadLetter(raw.Subject, raw.Sequence, raw.Header, raw.Data)
	dl.StoredAt = raw.Time
	return dl, err
}

// Delete removes the dead letter stored at seq from PUSH_DLQ, for good;
// one already gone (replayed or deleted meanwhile) is no error.
func (d *DLQ) Delete(ctx context.Context, seq uint64) error {
	stream, err := d.open(ctx)
	if err != nil {
		return err
	}
	return deleteMsg(ctx, stream, seq)
}

// replayMsg is dl republished to its user: the publisher's headers, and
// what the message was when first published, so a pusher.v1 client sees
// the same seq, id and ts and can de-duplicate.
func replayMsg(dl DeadLetter) *nats.Msg {
	h := dl.Header
	h.Set(wire.HeaderReplayOf, strconv.FormatUint(dl.Seq, 10))
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
	return &nats.Msg{Subject: wire.PushSubject(dl.UID), Header: h, Data: dl.Data}
}

// deleteMsg deletes a dead letter; one deleted first (by a concurrent
// replay, or an earlier delete) is gone all the same. The server answers
// that with a failed deletion whose API error nats.go flattens into text,
// so whether it is gone is asked of the stream instead.
func deleteMsg(ctx context.Context, stream jetstream.Stream, seq uint64) error {
	err := stream.DeleteMsg(ctx, seq)
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if _, gerr := stream.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return fmt.Errorf("delete dead letter %d: %w", seq, err)
}
