package ws

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// The Autobahn streams read by gorilla's reader, the reference for
// pusher's: same bytes, same answers, but where listed (abGorillaDiffers).

// sameAs compares two results as a client can: replies, close code, the
// end of the stream (not the close reason, which is free text).
func (r abResult) sameAs(o abResult) bool {
	if len(r.events) != len(o.events) || r.code != o.code || r.bad != o.bad || errors.Is(r.end, io.EOF) != errors.Is(o.end, io.EOF) {
		return false
	}
	for i := range r.events {
		if r.events[i] != o.events[i] {
			return false
		}
	}
	return true
}

// abGorilla is the reference: the same echo endpoint on gorilla's reader
// (ReadMessage, its default ping and close handlers, SetReadLimit), with
// the UTF-8 check of text messages gorilla leaves to the application
// (1007), as gorilla's own examples/autobahn server does.
type abGorilla struct {
	srv      *httptest.Server
	handlers sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func newABGorilla(tb testing.TB, limit int64) *abGorilla {
	tb.Helper()
	s := &abGorilla{}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// httptest's Close does not wait for hijacked connections.
		s.handlers.Add(1)
		defer s.handlers.Done()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			tb.Errorf("upgrade: %v", err)
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c.NetConn())
		s.mu.Unlock()
		c.SetReadLimit(limit)
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				break
			}
			if mt == websocket.TextMessage && !utf8.Valid(p) {
				_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInvalidFramePayloadData, ""), time.Now().Add(waitTimeout))
				break
			}
			if err := c.WriteMessage(mt, p); err != nil {
				break
			}
		}
		// As abEcho ends: FIN, then read until the client closed.
		if tcp, ok := c.NetConn().(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
		}
		_ = c.NetConn().SetReadDeadline(time.Now().Add(waitTimeout))
		_, _ = io.Copy(io.Discard, c.NetConn())
		_ = c.NetConn().Close()
	}))
	tb.Cleanup(func() {
		s.srv.Close()
		s.mu.Lock()
		for _, nc := range s.conns {
			_ = nc.SetDeadline(time.Now())
		}
		s.mu.Unlock()
		abWait(tb, "gorilla's handlers", &s.handlers)
	})
	return s
}

func (s *abGorilla) addr() string { return s.srv.Listener.Addr().String() }

// abGorillaDiffers lists the cases where gorilla's reader answers
// differently from pusher's, and why pusher's answer is the right one.
var abGorillaDiffers = map[string]string{
	"7.3.2": "a close frame with a 1-byte payload: pusher fails the connection (1002, as RFC 6455 5.5.1 " +
		"and Autobahn ask); gorilla takes it for a close without status (1005) and answers with an empty close",
}

// TestAutobahnMatchesGorilla sends each case's bytes to pusher's reader
// and to gorilla's, and compares what comes back: replies, the close code,
// the end of the stream. Close reasons are free text and not compared.
// The round trips of 9.7 and 9.8 are left out: their messages are those
// of group 1, a thousand times over.
func TestAutobahnMatchesGorilla(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{abLimit, abRaisedLimit} {
		pusher := newABPusher(t, int64(limit), false)
		gorilla := newABGorilla(t, int64(limit))
		for _, c := range abCases() {
			if limit == abRaisedLimit && !c.raised() || c.roundTrips() {
				continue
			}
			t.Run(c.name(limit), func(t *testing.T) {
				t.Parallel()
				p, g := runCase(t, pusher, c), runCase(t, gorilla, c)
				why, listed := abGorillaDiffers[c.id]
				switch same := p.sameAs(g); {
				case !same && !listed:
					t.Errorf("pusher and gorilla differ:\npusher:  %v\ngorilla: %v", p, g)
				case same && listed:
					t.Errorf("listed as a difference (%s), but both answer %v", why, p)
				case !same:
					t.Logf("known difference: %s\npusher:  %v\ngorilla: %v", why, p, g)
				}
			})
		}
	}
}
