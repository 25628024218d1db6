package consumer

import (
	"fmt"
	"strings"

	"github.com/pusher-io/pusher/hub"
)

// Subjects and names of the JetStream topology; they are the external
// contract (DESIGN.md) and never change at run time.
const (
	StreamName    = "PUSH"
	DLQStreamName = "PUSH_DLQ"
	DurableName   = "pusher"

	pushPrefix = "push."
	dlqPrefix  = "dlq.push."
	kickPrefix = "pusher.kick."
	// replayPrefix announces a stored offline dead letter (core NATS).
	replayPrefix   = "pusher.replay."
	replaySubjects = replayPrefix + "*"

	// PushSubjects and DLQSubjects are the streams' subject filters.
	PushSubjects = pushPrefix + "*"
	DLQSubjects  = dlqPrefix + "*"
	// KickSubjects is the core NATS subject kick requests arrive on.
	KickSubjects = kickPrefix + "*"

	// badSubjectUID is the DLQ token for dead letters whose subject named no
	// valid uid; the original subject is kept in Pusher-Original-Subject.
	// Their reason is bad_subject, so they are never replayed on connect,
	// whoever holds this uid.
	badSubjectUID = "_bad_subject"
)

// PushSubject is the subject backends publish uid's messages on.
func PushSubject(uid string) string { return pushPrefix + uid }

// DLQSubject is the subject uid's dead letters are stored under.
func DLQSubject(uid string) string { return dlqPrefix + uid }

// KickSubject is the core NATS subject that closes uid's connections.
func KickSubject(uid string) string { return kickPrefix + uid }

func replaySubject(uid string) string { return replayPrefix + uid }

// UIDFromSubject returns the uid of a push.<uid> subject, or an error
// wrapping hub.ErrBadUID when the subject is not one.
func UIDFromSubject(subject string) (string, error) {
	return uidAfter(pushPrefix, subject)
}

// uidFromDLQSubject is UIDFromSubject for dlq.push.<uid>.
func uidFromDLQSubject(subject string) (string, error) {
	return uidAfter(dlqPrefix, subject)
}

func uidAfter(prefix, subject string) (string, error) {
	uid, ok := strings.CutPrefix(subject, prefix)
	if !ok {
		return "", fmt.Errorf("subject not under %q: %w", prefix, hub.ErrBadUID)
	}
	if err := hub.ValidUID(uid); err != nil {
		return "", fmt.Errorf("subject uid: %w", err)
	}
	return uid, nil
}
