// Package wire names what pusher shares with the backends and browsers
// around it: NATS subjects, stream and consumer names, dead-letter headers
// and reasons, the uid rule and the WebSocket close codes. They are the
// external contract (README), so every package that speaks it imports
// them from here instead of from each other.
package wire

import (
	"fmt"
	"strings"
)

// JetStream names; they never change at run time.
const (
	StreamName    = "PUSH"
	DLQStreamName = "PUSH_DLQ"
	DurableName   = "pusher"
)

const (
	pushPrefix     = "push."
	dlqPrefix      = "dlq.push."
	kickPrefix     = "pusher.kick."
	replayPrefix   = "pusher.replay."
	deliverPrefix  = "pusher.deliver."
	presencePrefix = "pusher.presence."
	onlinePrefix   = "pusher.online."
)

// Subject filters.
const (
	// PushSubjects is what stream PUSH binds: every subject under push.,
	// so that a malformed one (push.a.b) is stored and dead-lettered as
	// bad_subject instead of vanishing unstored.
	PushSubjects = pushPrefix + ">"
	// DLQSubjects is what stream PUSH_DLQ binds.
	DLQSubjects = dlqPrefix + "*"
	// KickSubjects is where kick requests arrive (core NATS).
	KickSubjects = kickPrefix + "*"
	// ReplaySubjects is where nodes announce a stored offline dead letter
	// (core NATS), so the node holding the uid replays it.
	ReplaySubjects = replayPrefix + "*"
	// DeliverSubjects is where delivery requests between nodes travel
	// (core NATS); a node subscribes DeliverSubject(uid) per local uid.
	DeliverSubjects = deliverPrefix + "*"
	// PresenceSubjects is where nodes publish presence events (core
	// NATS): subscribe to it to hear of every connect and disconnect.
	PresenceSubjects = presencePrefix + "*"
)

// BadSubjectUID is the DLQ token of dead letters whose subject named no
// valid uid; the original subject is kept in Pusher-Original-Subject and
// their reason is bad_subject, so no connect ever replays them.
const BadSubjectUID = "_bad_subject"

// PushSubject is the subject backends publish uid's messages on.
func PushSubject(uid string) string { return pushPrefix + uid }

// DLQSubject is the subject uid's dead letters are stored under.
func DLQSubject(uid string) string { return dlqPrefix + uid }

// KickSubject closes uid's connections on every node.
func KickSubject(uid string) string { return kickPrefix + uid }

// ReplaySubject announces a stored offline dead letter of uid.
func ReplaySubject(uid string) string { return replayPrefix + uid }

// DeliverSubject is what a node holding uid listens on.
func DeliverSubject(uid string) string { return deliverPrefix + uid }

// PresenceSubject carries uid's presence events.
func PresenceSubject(uid string) string { return presencePrefix + uid }

// OnlineSubject is where every node holding uid answers "is uid online?"
// requests; no responders means offline.
func OnlineSubject(uid string) string { return onlinePrefix + uid }

// UIDFromSubject returns the uid of a push.<uid> subject, or an error
// wrapping ErrBadUID when the subject names no valid uid.
func UIDFromSubject(subject string) (string, error) { return uidAfter(pushPrefix, subject) }

// UIDFromDLQSubject is UIDFromSubject for dlq.push.<uid>.
func UIDFromDLQSubject(subject string) (string, error) { return uidAfter(dlqPrefix, subject) }

// UIDFromKickSubject is UIDFromSubject for pusher.kick.<uid>.
func UIDFromKickSubject(subject string) (string, error) { return uidAfter(kickPrefix, subject) }

// UIDFromReplaySubject is UIDFromSubject for pusher.replay.<uid>.
func UIDFromReplaySubject(subject string) (string, error) { return uidAfter(replayPrefix, subject) }

// UIDFromDeliverSubject is UIDFromSubject for pusher.deliver.<uid>.
func UIDFromDeliverSubject(subject string) (string, error) { return uidAfter(deliverPrefix, subject) }

// UIDFromOnlineSubject is UIDFromSubject for pusher.online.<uid>.
func UIDFromOnlineSubject(subject string) (string, error) { return uidAfter(onlinePrefix, subject) }

func uidAfter(prefix, subject string) (string, error) {
	uid, ok := strings.CutPrefix(subject, prefix)
	if !ok {
		return "", fmt.Errorf("subject not under %q: %w", prefix, ErrBadUID)
	}
	if err := ValidUID(uid); err != nil {
		return "", fmt.Errorf("subject uid: %w", err)
	}
	return uid, nil
}
