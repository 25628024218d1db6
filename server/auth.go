package server

import (
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/pusher-io/pusher/auth"
)

// verifier builds the token verifier from the configured keys, falling
// back to the public development secret only where that is safe: with
// the embedded NATS, which means one developer's machine.
func (s *Server) verifier() (*auth.Verifier, error) {
	cfg := s.cfg.Auth
	if len(cfg.HMACSecret) == 0 && len(cfg.PublicKeyPEM) == 0 {
		if !s.cfg.embedded() {
			return nil, configErr(errors.New("set JWT_SECRET or PUSHER_JWT_PUBLIC_KEY to verify client tokens"))
		}
		cfg.HMACSecret = []byte(auth.DevSecret)
		s.log.Warn(evDevSecret, zap.String("detail",
			"JWT_SECRET is not set: tokens are verified with the public development secret; anyone can mint them. Set JWT_SECRET or PUSHER_JWT_PUBLIC_KEY before exposing pusher."))
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		return nil, configErr(fmt.Errorf("JWT verifier: %w", err))
	}
	return v, nil
}
