// Package natsserver runs the in-process nats-server with JetStream that makes
// pusher work with zero setup; it exists because this concern fits none of the
// product packages, and production deployments replace it with PUSHER_NATS_URL.
package natsserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config tunes the embedded server. Zero values mean the documented default.
type Config struct {
	// Listen is host:port for NATS clients; default 127.0.0.1:4222. Port 0
	// or -1 picks a free port (tests). A non-loopback host is refused:
	// the embedded server has no authentication.
	Listen string
	// StoreDir is JetStream's file storage directory; required. It is
	// created if missing and locked while the server runs: a second pusher
	// on the same directory fails at once, naming the first.
	StoreDir string
	// ReadyTimeout bounds the wait for the server to accept clients; default 10s.
	ReadyTimeout time.Duration
}

// Server is a running embedded nats-server.
type Server struct {
	ns   *server.Server
	lock *os.File // holds the store directory; nil where flock is not available
}

// Start starts the server and waits until it accepts connections. log may be
// nil to silence the server. The caller must call Shutdown.
func Start(cfg Config, log *zap.Logger) (*Server, error) {
	opts, err := serverOptions(cfg, log == nil)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	lock, err := lockDir(cfg.StoreDir)
	if err != nil {
		return nil, err
	}
	s := &Server{lock: lock}
	if err := s.start(opts, cfg.ReadyTimeout, log); err != nil {
		s.unlock()
		return nil, err
	}
	return s, nil
}

// serverOptions checks cfg and turns it into nats-server options.
func serverOptions(cfg Config, quiet bool) (*server.Options, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded nats: store dir is required")
	}
	listen := cfg.Listen
	if listen == "" {
		listen = "127.0.0.1:4222"
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("embedded nats listen %q: host must be a loopback address", listen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats listen %q: bad port: %w", listen, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return &server.Options{
		ServerName: "pusher-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      quiet,
	}, nil
}

func (s *Server) start(opts *server.Options, ready time.Duration, log *zap.Logger) error {
	addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
	if opts.Port > 0 {
		// nats-server only logs a failed listen and then never becomes
		// ready; try the port first, so a busy one fails at once and says
		// why. (A race with another process binding it in between ends in
		// the not-ready error below.)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("embedded nats: %w", err)
		}
		_ = ln.Close()
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("embedded nats: %w", err)
	}
	if log != nil {
		ns.SetLoggerV2(zapLogger{log}, false, false, false)
	}
	ns.Start()
	if ready <= 0 {
		ready = 10 * time.Second
	}
	if !ns.ReadyForConnections(ready) {
		ns.Shutdown()
		return fmt.Errorf("embedded nats on %s: not ready after %s", addr, ready)
	}
	s.ns = ns
	return nil
}

// ClientURL is the nats:// URL clients use to reach the server.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Shutdown stops the server, waits for it and lets go of the store
// directory; safe to call more than once.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	s.unlock()
}

func (s *Server) unlock() {
	if s.lock != nil {
		_ = s.lock.Close() // closing the descriptor drops the flock
		s.lock = nil
	}
}

// zapLogger adapts zap to nats-server's logger. Every line becomes the
// stable event "nats.server" at the server's own level (a notice is info,
// a fatal error is error, debug and trace are debug), with the server's
// text in "detail"; what the server puts in front of a connection's lines
// becomes fields (see serverLine). Server lines are rare (start, stop,
// trouble), so formatting them is fine.
type zapLogger struct{ l *zap.Logger }

const eventServer = "nats.server"

func (z zapLogger) log(level zapcore.Level, format string, v []any) {
	if ce := z.l.Check(level, eventServer); ce != nil {
		ce.Write(serverLine(fmt.Sprintf(format, v...))...)
	}
}

func (z zapLogger) Noticef(format string, v ...any) { z.log(zapcore.InfoLevel, format, v) }
func (z zapLogger) Warnf(format string, v ...any)   { z.log(zapcore.WarnLevel, format, v) }
func (z zapLogger) Fatalf(format string, v ...any)  { z.log(zapcore.ErrorLevel, format, v) }
func (z zapLogger) Errorf(format string, v ...any)  { z.log(zapcore.ErrorLevel, format, v) }
func (z zapLogger) Debugf(format string, v ...any)  { z.log(zapcore.DebugLevel, format, v) }
func (z zapLogger) Tracef(format string, v ...any)  { z.log(zapcore.DebugLevel, format, v) }

// serverLine splits a nats-server line into fields. A connection's lines
// start with what the server knows of it, " - "-separated:
//
//	127.0.0.1:52866 - cid:5 - "v1.55.0:go:pusher" - Client parser ERROR, ...
//	JETSTREAM - ...
//
// nats_peer is the connection's remote address, nats_conn the server's id
// for it (cid:5 for a client, rid, gid, lid for a route, gateway or leaf
// node; SYSTEM, JETSTREAM or ACCOUNT for the server's internal clients),
// nats_client the client's version, language and name once it connected,
// nats_account its account and user when the server has one; the rest
// is detail. A line without that prefix is all detail.
func serverLine(line string) []zap.Field {
	for _, internal := range []string{"SYSTEM", "JETSTREAM", "ACCOUNT"} {
		if rest, ok := strings.CutPrefix(line, internal+" - "); ok {
			return []zap.Field{zap.String("nats_conn", internal), zap.String("detail", rest)}
		}
	}
	peer, rest, ok := strings.Cut(line, " - ")
	if !ok || strings.ContainsRune(peer, ' ') {
		return []zap.Field{zap.String("detail", line)}
	}
	id, rest, ok := strings.Cut(rest, " - ")
	if !ok || !isConnID(id) {
		return []zap.Field{zap.String("detail", line)}
	}
	fields := []zap.Field{zap.String("nats_peer", peer), zap.String("nats_conn", id)}
	for _, key := range []string{"nats_client", "nats_account"} {
		quoted, err := strconv.QuotedPrefix(rest)
		if err != nil {
			break
		}
		after, ok := strings.CutPrefix(rest[len(quoted):], " - ")
		if !ok {
			break
		}
		s, _ := strconv.Unquote(quoted) // QuotedPrefix checked it
		fields, rest = append(fields, zap.String(key, s)), after
	}
	return append(fields, zap.String("detail", rest))
}

// isConnID reports whether s is how nats-server names a connection: a
// kind (cid, wid, mid, mid_ws, rid, gid, lid, lid_ws), a colon, a number.
func isConnID(s string) bool {
	kind, n, ok := strings.Cut(s, ":")
	if !ok || n == "" {
		return false
	}
	switch kind {
	case "cid", "wid", "mid", "mid_ws", "rid", "gid", "lid", "lid_ws":
	default:
		return false
	}
	for _, r := range n {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
