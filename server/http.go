package server

import (
	"encoding/json"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/api"
	"github.com/pusher-io/pusher/web"
)

// buildHTTP routes every endpoint of the contract onto one http.Server.
func (s *Server) buildHTTP(reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("GET /ws", s.ws)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	// The browser client is part of the protocol, not of the test page:
	// served with or without the page.
	mux.Handle("/pusher.js", web.ClientHandler())
	if !s.cfg.UIOff {
		mux.Handle("/", web.Handler())
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if err := s.routeDoors(mux); err != nil {
		return err
	}
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10, // a token is at most 8 KiB
		ErrorLog:          log.New(httpErrorLog{s.log.Named("http")}, "", 0),
	}
	return nil
}

// evHTTPError is net/http's own trouble: a TLS handshake or accept
// error, a panic in a handler.
const evHTTPError = "http.error"

// httpErrorLog is the http.Server's ErrorLog: each of its lines becomes
// the event http.error with net/http's text in detail, so that msg stays
// a stable event name.
type httpErrorLog struct{ l *zap.Logger }

func (w httpErrorLog) Write(p []byte) (int, error) {
	w.l.Warn(evHTTPError, zap.String("detail", strings.TrimSpace(string(p))))
	return len(p), nil
}

// routeDoors mounts the HTTP publishing doors, or, with no API key, a 404
// that says how to enable them.
func (s *Server) routeDoors(mux *http.ServeMux) error {
	if s.cfg.APIKey == "" {
		disabled := func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "HTTP publishing is disabled: set PUSHER_API_KEY"})
		}
		mux.HandleFunc("/v1/push", disabled)
		mux.HandleFunc("/send", disabled)
		return nil
	}
	door, err := api.New(s.nats.main, s.log, api.Config{APIKey: s.cfg.APIKey, TrustedProxies: s.cfg.TrustedProxies})
	if err != nil {
		return configErr(err)
	}
	mux.HandleFunc("POST /v1/push", door.Push)
	mux.HandleFunc("GET /send", door.Send)
	mux.HandleFunc("POST /send", door.Send)
	// Other methods: 405 with Allow, in JSON like every other answer of
	// the doors (the mux's own 405 is text).
	mux.Handle("/v1/push", api.MethodNotAllowed("POST"))
	mux.Handle("/send", api.MethodNotAllowed("GET, HEAD, POST"))
	return nil
}

// readyz is 200 while NATS is connected and the consumer pulls. It reads
// flags only, so it never waits behind a NATS round trip.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	natsOK, consOK := s.nats.main.IsConnected(), s.cons.Ready()
	status := http.StatusOK
	if !natsOK || !consOK {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, map[string]bool{"ready": status == http.StatusOK, "nats": natsOK, "consumer": consOK})
}

// writeJSON answers with status and v as a JSON body, not HTML-escaped.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}
