package ws

import (
	"errors"
	"fmt"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/pusher-io/pusher/ws/internal/intake"
)

// conn hears its client through the Handler's intake.Poller.
var _ intake.Conn = (*conn)(nil)

// Heard implements intake.Conn: whatever the client sent, it is alive, so
// the silence limit (PongWait) starts again.
func (c *conn) Heard() {
	c.mu.Lock()
	c.heard = c.h.now()
	c.mu.Unlock()
}

// Pinged implements intake.Conn: the writer answers with a pong carrying
// payload. Of several pings not answered yet, only the latest is.
func (c *conn) Pinged(payload []byte) {
	c.mu.Lock()
	c.pong = &payload
	c.startWriterLocked()
	c.mu.Unlock()
}

// Ponged implements intake.Conn: in ConfirmPong mode a pong echoing the
// ping that is out confirms every message written before that ping. Any
// other pong only says the client is alive (Heard).
func (c *conn) Ponged(payload []byte) {
	id, ok := pongID(payload)
	if !ok || c.confirmMode() != ConfirmPong {
		return
	}
	c.mu.Lock()
	done, at, ok := c.confirm.ponged(id)
	if ok {
		c.startWriterLocked() // a ping for what was written meanwhile
	}
	c.mu.Unlock()
	if !ok {
		return
	}
	if len(done) > 0 {
		latency := c.h.now().sub(at).Seconds()
		for i, m := range done {
			m.Finish(nil)
			c.h.met.confirmLatency.Observe(latency)
			done[i] = nil
		}
	}
	c.mu.Lock()
	c.confirm.reuse(done)
	c.mu.Unlock()
}

// ClientClosed implements intake.Conn: the answer echoes the client's
// code, as RFC 6455 5.5.1 asks, unless our close frame went first.
func (c *conn) ClientClosed(code int, reason string) {
	echo := []byte{}
	if code != websocket.CloseNoStatusReceived {
		echo = websocket.FormatCloseMessage(code, "")
	}
	c.answer(code, reason, echo, byClient)
}

// Violated implements intake.Conn: the answer is a close frame with code
// and reason. The client broke the protocol, but pusher closes: byServer.
func (c *conn) Violated(code int, reason string) {
	c.answer(code, reason, websocket.FormatCloseMessage(code, reason), byServer)
}

// Gone implements intake.Conn: the client hung up or the socket failed.
func (c *conn) Gone(err error) {
	var pe *intake.PanicError
	if errors.As(err, &pe) {
		c.h.log.Error(evPanic, zap.String("uid", c.uid), zap.Uint64("conn", c.id), zap.String("panic", fmt.Sprint(pe.Value)), zap.ByteString("stack", pe.Stack))
		c.end(websocket.CloseAbnormalClosure, closePanicText, byServer)
		return
	}
	c.end(websocket.CloseAbnormalClosure, closeLostText, byClient)
}

// answer acts on the client's last word, its close frame or a protocol
// error (code, reason, by whom the close is decided): open → answering,
// with msg as our close frame; closing → answering, with ours as queued;
// closeSent → dead, as the close handshake is complete.
func (c *conn) answer(code int, reason string, msg []byte, by closer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.noteEndLocked(code, reason, by)
	switch c.state {
	case stateOpen:
		c.queueCloseLocked(stateAnswering, msg)
	case stateClosing:
		c.state = stateAnswering
	case stateCloseSent:
		c.endLocked(code, reason, by)
	}
}
