package server

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"go.uber.org/zap"
)

// pprofServer serves the runtime profiles on their own loopback listener,
// away from the public mux.
type pprofServer struct {
	srv  *http.Server
	done chan struct{}
}

func listenPprof(addr string, log *zap.Logger) (*pprofServer, error) {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
		return nil, configErr(fmt.Errorf("pprof address %q: want a loopback host:port", addr))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	p := &pprofServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, done: make(chan struct{})}
	go func() { defer close(p.done); _ = p.srv.Serve(ln) }()
	log.Info("pprof.listening", zap.String("addr", ln.Addr().String()))
	return p, nil
}

// close stops serving and waits for the serving goroutine.
func (p *pprofServer) close() {
	_ = p.srv.Close()
	<-p.done
}
