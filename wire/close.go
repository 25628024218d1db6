package wire

// WebSocket close codes pusher sends, each with the reason text that goes
// with it. 4001 and 4003 tell a client not to reconnect with the same
// token.
const (
	CloseGoingAway     = 1001 // RFC 6455: the server is shutting down
	CloseGoingAwayText = "server shutting down"
	// CloseGoingAwayRetryText is a lone node's: no other node can take
	// its users, so they should come back once it has restarted rather
	// than back off towards their ceiling while it is away (the official
	// client waits what the reason says plus up to as much again).
	CloseGoingAwayRetryText = "server shutting down; retry after 2s"

	CloseKicked     = 4001 // pusher kick / pusher.kick.<uid> (logout)
	CloseKickedText = "kicked"

	CloseSlowClient     = 4002 // the send queue overflowed; reconnect
	CloseSlowClientText = "slow client"

	CloseTokenExpired     = 4003 // the token's exp passed; get a new one
	CloseTokenExpiredText = "token expired"

	CloseUnresponsive     = 4004 // frames went unconfirmed for the confirm timeout
	CloseUnresponsiveText = "unresponsive"

	// CloseTryAgain is RFC 6455's "try again later": a refused handshake
	// for pusher.v1 clients (browsers cannot read a 503), with the wait in
	// the reason ("busy; retry after 2s").
	CloseTryAgain = 1013
)

// Subprotocol is the WebSocket subprotocol of pusher's own client
// protocol (README: pusher.v1): a client that asks for it gets every
// message as a JSON envelope and confirms each with an ack. Other clients
// get raw frames.
const Subprotocol = "pusher.v1"
