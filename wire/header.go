package wire

// Headers pusher sets on dead letters and replays.
const (
	HeaderReason          = "Pusher-Reason"
	HeaderOriginalSubject = "Pusher-Original-Subject"
	HeaderOriginalSeq     = "Pusher-Original-Seq"
	HeaderDeliveries      = "Pusher-Deliveries"
	HeaderFailedAt        = "Pusher-Failed-At"
	// HeaderReplayOf marks a replayed message with the dead letter's
	// sequence in PUSH_DLQ, so a message can be followed through replay.
	HeaderReplayOf = "Pusher-Replay-Of"
	// HeaderPublishedAt (RFC 3339) and HeaderMsgID keep a message's
	// original JetStream publish time and the publisher's Nats-Msg-Id
	// through dead-lettering and replay; with HeaderOriginalSeq on the
	// replayed message, a pusher.v1 client sees the message as it was
	// first published (same seq, id and ts) and de-duplicates it.
	HeaderPublishedAt = "Pusher-Published-At"
	HeaderMsgID       = "Pusher-Msg-Id"
)

// Reasons a message is dead-lettered: the value of Pusher-Reason, and the
// reason label of pusher_messages_total{outcome="deadlettered"}.
const (
	ReasonOffline    = "offline"
	ReasonMaxDeliver = "max_deliver"
	ReasonBadSubject = "bad_subject"
)

// Reasons a delivery is retried: the reason of push.retry and of
// pusher_messages_total{outcome="retried"}.
const (
	ReasonWriteFailed      = "write_failed"
	ReasonQueueFull        = "queue_full"
	ReasonTimeout          = "timeout"
	ReasonUnconfirmed      = "unconfirmed"
	ReasonDeadLetterFailed = "deadletter_failed"
)
