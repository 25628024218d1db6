package server

import (
	"log"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// net/http's own error lines are the event http.error, its text the detail.
func TestHTTPErrorLogHasAnEventName(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	l := log.New(httpErrorLog{zap.New(core)}, "", 0)
	l.Printf("http: TLS handshake error from %s: %v", "192.0.2.1:5555", "EOF")
	all := logs.All()
	if len(all) != 1 || all[0].Message != evHTTPError || all[0].Level != zapcore.WarnLevel ||
		all[0].ContextMap()["detail"] != "http: TLS handshake error from 192.0.2.1:5555: EOF" {
		t.Fatalf("logged %v, want one warn %s with net/http's text as detail", all, evHTTPError)
	}
}
