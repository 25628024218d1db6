package wire

// PresenceEvent is the JSON a node publishes on PresenceSubject(uid) on
// every connect and disconnect.
type PresenceEvent struct {
	UID   string `json:"uid"`
	Event string `json:"event"` // EventConnected or EventDisconnected
	Conn  uint64 `json:"conn"`  // the connection's id on its node
	Node  string `json:"node"`
	// Conns is uid's connection count on this node after the event: 0 on
	// a disconnect means uid is gone from this node (other nodes may
	// still hold it; ask OnlineSubject).
	Conns int    `json:"conns"`
	TS    string `json:"ts"`             // RFC 3339, UTC, milliseconds
	Code  int    `json:"code,omitempty"` // disconnects: the close code
}

// PresenceEvent.Event values.
const (
	EventConnected    = "connected"
	EventDisconnected = "disconnected"
)

// OnlineAnswer is what each node holding uid answers on OnlineSubject.
type OnlineAnswer struct {
	UID   string `json:"uid"`
	Node  string `json:"node"`
	Conns int    `json:"conns"`
}

// KickAnswer is what each node answers a request on KickSubject(uid):
// how many of uid's connections it closed (0 when it held none).
type KickAnswer struct {
	Closed int    `json:"closed"`
	Node   string `json:"node"`
}
