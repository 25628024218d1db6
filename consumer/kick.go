package consumer

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/wire"
)

// Kicker closes a uid's connections; *hub.Hub implements it.
type Kicker interface {
	Kick(uid string, code int, reason string) int
}

// Close code and reason for a kick (logout), part of the contract.
const (
	KickCode   = 4001
	KickReason = "kicked"
)

// SubscribeKicks listens on core NATS pusher.kick.<uid> and closes that
// uid's local connections. Every node subscribes, so a kick reaches all.
// The caller owns the subscription and unsubscribes (or drains) it.
func SubscribeKicks(nc *nats.Conn, k Kicker, log *zap.Logger) (*nats.Subscription, error) {
	log = log.Named("kick")
	sub, err := nc.Subscribe(wire.KickSubjects, func(m *nats.Msg) {
		uid, err := wire.UIDFromKickSubject(m.Subject)
		if err != nil {
			log.Warn("ws.kick_refused", zap.String("subject", m.Subject), zap.Error(err))
			return
		}
		n := k.Kick(uid, KickCode, KickReason)
		log.Info("ws.kicked", zap.String("uid", uid), zap.Int("conns", n))
		if m.Reply != "" {
			_ = m.Respond([]byte(fmt.Sprintf(`{"closed":%d}`, n)))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", wire.KickSubjects, err)
	}
	return sub, nil
}
