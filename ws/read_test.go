package ws

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestClientFrames: what a client sends is answered as RFC 6455 asks, the
// same whether the poller or a goroutine reads the connection.
func TestClientFrames(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			t.Run("ping gets a pong with its payload", func(t *testing.T) {
				ts := newTestServer(t, setup{GoroutineReaders: mode.goroutines})
				raw := ts.connect(t, "alice")
				pongs := make(chan string, 1)
				raw.SetPongHandler(func(data string) error { pongs <- data; return nil })
				c := pump(raw) // after the handler is set: pump reads, and so runs it
				// One ping at a time: a server may answer only the last of
				// several pings it has not answered yet (RFC 6455 5.5.3).
				rec := newRecorder(t)
				for _, payload := range []string{"one", "", "three"} {
					if err := c.WriteControl(websocket.PingMessage, []byte(payload), time.Now().Add(waitTimeout)); err != nil {
						t.Fatalf("ping: %v", err)
					}
					// Reading runs the pong handler; the server writes in
					// order, so the pong comes before a message routed
					// after it was read.
					waitFor(t, waitTimeout, func() error {
						ts.hub.Route("alice", rec.message([]byte("tick")))
						if _, _, err := readMessage(c); err != nil {
							t.Fatalf("read: %v", err)
						}
						if len(pongs) == 0 {
							return fmt.Errorf("no pong to ping %q yet", payload)
						}
						return nil
					})
					if got := <-pongs; got != payload {
						t.Fatalf("pong %q, want %q", got, payload)
					}
				}
			})
			t.Run("client close is echoed and logged", func(t *testing.T) {
				core, logs := observer.New(zap.InfoLevel)
				ts := newTestServer(t, setup{GoroutineReaders: mode.goroutines, Log: zap.New(core)})
				c := ts.open(t, "alice")
				msg := websocket.FormatCloseMessage(4000, "bye")
				if err := c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(waitTimeout)); err != nil {
					t.Fatalf("close: %v", err)
				}
				_, _, err := readMessage(c)
				wantClose(t, err, 4000, "")
				f := closedLog(t, logs)
				if f["code"] != int64(4000) || f["reason"] != "bye" {
					t.Errorf("ws.closed code %v reason %v, want 4000 bye", f["code"], f["reason"])
				}
				if ts.hub.Online("alice") {
					t.Error("still registered after the close handshake")
				}
			})
			t.Run("protocol violation closes with 1002", func(t *testing.T) {
				ts := newTestServer(t, setup{GoroutineReaders: mode.goroutines})
				c := ts.open(t, "alice")
				// An unmasked text frame: clients must mask.
				if _, err := c.NetConn().Write([]byte{0x81, 0x02, 'h', 'i'}); err != nil {
					t.Fatalf("write: %v", err)
				}
				_, _, err := readMessage(c)
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != websocket.CloseProtocolError {
					t.Fatalf("read got %v, want close %d", err, websocket.CloseProtocolError)
				}
				waitFor(t, waitTimeout, ts.hasConns(0))
			})
			t.Run("hang-up without a close frame", func(t *testing.T) {
				core, logs := observer.New(zap.InfoLevel)
				ts := newTestServer(t, setup{GoroutineReaders: mode.goroutines, Log: zap.New(core)})
				c := ts.open(t, "alice")
				_ = c.NetConn().Close()
				f := closedLog(t, logs)
				if f["code"] != int64(websocket.CloseAbnormalClosure) {
					t.Errorf("ws.closed code %v, want 1006", f["code"])
				}
				if ts.hub.Len() != 0 {
					t.Error("still registered after the hang-up")
				}
			})
		})
	}
}

// TestIdleConnectionsHoldNoGoroutine pins the memory design: where epoll
// watches the sockets, idle connections add no goroutines (see intake).
func TestIdleConnectionsHoldNoGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("no epoll on this platform")
	}
	const n = 200
	ts := newTestServer(t, setup{Log: zap.NewNop()})
	ts.connect(t, "warm-up") // the poller's goroutine
	waitFor(t, waitTimeout, ts.handlersReturned)
	before := runtime.NumGoroutine()
	for i := range n {
		ts.connect(t, "idle-"+strconv.Itoa(i))
	}
	waitFor(t, waitTimeout, func() error {
		if err := ts.hasConns(n + 1)(); err != nil {
			return err
		}
		return ts.handlersReturned()
	})
	// Stragglers of net/http and of the writers that sent nothing may take
	// a moment to exit; a goroutine per connection would never go.
	waitFor(t, waitTimeout, func() error {
		if extra := runtime.NumGoroutine() - before; extra >= n/10 {
			return fmt.Errorf("%d goroutines more than before %d idle connections", extra, n)
		}
		return nil
	})
}

// closedLog waits for the one ws.closed line and returns its fields.
func closedLog(t *testing.T, logs *observer.ObservedLogs) map[string]any {
	t.Helper()
	waitFor(t, waitTimeout, func() error {
		if n := logs.FilterMessage(evClosed).Len(); n != 1 {
			return fmt.Errorf("%d %s lines, want 1", n, evClosed)
		}
		return nil
	})
	return logs.FilterMessage(evClosed).All()[0].ContextMap()
}

// TestConnStaysInItsSizeClass: every idle connection carries one conn;
// it fits the 448-byte allocation class it had before delivery
// confirmation, which is why its times are instants, not time.Time.
func TestConnStaysInItsSizeClass(t *testing.T) {
	if size := unsafe.Sizeof(conn{}); size > 448 {
		t.Fatalf("conn is %d bytes: past the 448-byte size class, so every idle connection costs more", size)
	}
}
