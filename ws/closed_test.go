package ws

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/pusher-io/pusher/wire"
)

// TestClosedSaysWhoClosed: ws.closed's by is the side that decided the
// close: the client for its close frame or a broken connection, pusher
// for everything it decides, a protocol violation included.
func TestClosedSaysWhoClosed(t *testing.T) {
	tests := []struct {
		name       string
		give       func(t *testing.T, ts *testServer, c *websocket.Conn)
		wantCode   int
		wantReason string
		wantBy     string
	}{
		{"client close frame", func(t *testing.T, _ *testServer, c *websocket.Conn) {
			if err := c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(waitTimeout)); err != nil {
				t.Fatal(err)
			}
		}, websocket.CloseNormalClosure, "bye", "client"},
		{"client hangs up", func(_ *testing.T, _ *testServer, c *websocket.Conn) { _ = c.NetConn().Close() },
			websocket.CloseAbnormalClosure, closeLostText, "client"},
		{"kick", func(_ *testing.T, ts *testServer, _ *websocket.Conn) {
			ts.hub.Kick("alice", wire.CloseKicked, wire.CloseKickedText)
		},
			wire.CloseKicked, wire.CloseKickedText, "server"},
		{"shutdown", func(_ *testing.T, ts *testServer, _ *websocket.Conn) {
			done := make(chan struct{})
			close(done) // do not wait for the connection here: the log line is the wait
			ts.hub.Shutdown(done, wire.CloseGoingAway, wire.CloseGoingAwayText)
		}, wire.CloseGoingAway, wire.CloseGoingAwayText, "server"},
		{"protocol violation", func(t *testing.T, _ *testServer, c *websocket.Conn) {
			// An unmasked text frame: clients must mask. The client broke
			// the protocol; pusher closes.
			if _, err := c.NetConn().Write([]byte{0x81, 0x02, 'h', 'i'}); err != nil {
				t.Fatal(err)
			}
		}, websocket.CloseProtocolError, "", "server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			ts := newTestServer(t, setup{Log: zap.New(core)})
			c := pump(ts.connect(t, "alice"))
			tt.give(t, ts, c.Conn)
			f := closedLog(t, logs)
			if f["code"] != int64(tt.wantCode) || tt.wantReason != "" && f["reason"] != tt.wantReason || f["by"] != tt.wantBy {
				t.Errorf("ws.closed code %v reason %q by %v, want %d %q by %s", f["code"], f["reason"], f["by"], tt.wantCode, tt.wantReason, tt.wantBy)
			}
			if d, ok := f["duration_ms"].(float64); !ok || d <= 0 {
				t.Errorf("ws.closed duration_ms %v, want a positive float", f["duration_ms"])
			}
		})
	}
}

// A client that stays silent for PongWait (it reads nothing, so it
// answers no ping) is cut by pusher: by server, though no close frame
// is sent.
func TestSilentClientIsCutByServer(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	ts := newTestServer(t, setup{Log: zap.New(core), WS: Config{PingInterval: 50 * time.Millisecond, PongWait: 200 * time.Millisecond}})
	ts.connect(t, "alice") // never read: pings go unanswered
	f := closedLog(t, logs)
	if f["code"] != int64(websocket.CloseAbnormalClosure) || f["reason"] != closeSilentText || f["by"] != "server" {
		t.Errorf("ws.closed code %v reason %q by %v, want 1006 %q by server", f["code"], f["reason"], f["by"], closeSilentText)
	}
}
