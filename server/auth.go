package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/auth"
)

// evJWKSFailed is auth's event for a failed JWKS fetch; the node logs it
// for the first fetch, whose failure auth leaves to its caller.
const evJWKSFailed = "auth.jwks_failed"

// checkKeys refuses, before anything is built, a node that would verify
// client tokens with the public development secret on an external NATS
// (shared by other machines, so not one developer's).
func (s *Server) checkKeys() error {
	if len(s.cfg.Auth.HMACSecret) == 0 && len(s.cfg.Auth.PublicKeyPEM) == 0 && s.cfg.JWKS.URL == "" && !s.cfg.embedded() {
		return configErr(errors.New("set JWT_SECRET, PUSHER_JWT_PUBLIC_KEY or PUSHER_JWKS_URL to verify client tokens"))
	}
	return nil
}

// verifier builds the token verifier from the configured keys, falling
// back to the public development secret only where that is safe: with
// the embedded NATS, which means one developer's machine (checkKeys). A
// JWKS counts as a key; it is built here, without I/O, and fetched by
// startJWKS.
func (s *Server) verifier() (*auth.Verifier, error) {
	cfg := s.cfg.Auth
	if s.cfg.JWKS.URL != "" {
		j, err := auth.NewJWKS(s.cfg.JWKS, s.log)
		if err != nil {
			return nil, configErr(err)
		}
		s.jwks, cfg.JWKS = j, j
	}
	if len(cfg.HMACSecret) == 0 && len(cfg.PublicKeyPEM) == 0 && cfg.JWKS == nil {
		cfg.HMACSecret = []byte(auth.DevSecret)
		s.log.Warn(evDevSecret, zap.String("detail",
			"JWT_SECRET is not set: tokens are verified with the public development secret; anyone can mint them. Set JWT_SECRET, PUSHER_JWT_PUBLIC_KEY or PUSHER_JWKS_URL before exposing pusher."))
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		return nil, configErr(fmt.Errorf("JWT verifier: %w", err))
	}
	return v, nil
}

// startJWKS fetches the JWKS once and starts its background refresher.
// With no other key configured, a failed first fetch fails the start: a
// node that answers every client 401 would look healthy while telling
// clients their tokens are bad. Beside other keys it starts anyway,
// and the refresher keeps trying.
func (s *Server) startJWKS(ctx context.Context) error {
	if s.jwks == nil {
		return nil
	}
	if err := s.jwks.Refresh(ctx); err != nil {
		if len(s.cfg.Auth.HMACSecret) == 0 && len(s.cfg.Auth.PublicKeyPEM) == 0 {
			return fmt.Errorf("JWKS %s: first fetch (no other key is configured): %w", redactURL(s.cfg.JWKS.URL), err)
		}
		s.log.Warn(evJWKSFailed, zap.String("reason", "start"), zap.Error(err), zap.String("detail",
			"verifying with the other configured keys until the JWKS is fetched; retrying in the background"))
	}
	s.jwks.Start()
	return nil
}

// registerJWKSMetrics adds the JWKS's fetch counters and key count, read
// at scrape time; nothing without a JWKS.
func registerJWKSMetrics(reg prometheus.Registerer, j *auth.JWKS) error {
	if j == nil {
		return nil
	}
	const refreshes = "pusher_jwks_refresh_total"
	const refreshesHelp = "JWKS fetches by result: ok (the key set was replaced) or error (the last good set stays in use)."
	cs := []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: refreshes, Help: refreshesHelp, ConstLabels: prometheus.Labels{"result": "ok"}},
			func() float64 { return float64(j.Stats().Succeeded) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: refreshes, Help: refreshesHelp, ConstLabels: prometheus.Labels{"result": "error"}},
			func() float64 { return float64(j.Stats().Failed) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pusher_jwks_keys", Help: "Usable signing keys in the JWKS key set in use."},
			func() float64 { return float64(j.Stats().Keys) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
