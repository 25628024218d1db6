package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/wire"
	"github.com/pusher-io/pusher/ws"
)

// pusher.v1 through a whole node: JetStream sequence, Nats-Msg-Id and
// publish time in the envelope; the client's ack, and only it, settles
// the message in JetStream; an unacked message is retried, dead-lettered
// and replayed with its origin intact.

// v1Envelope is a pusher.v1 message as the browser client reads it.
type v1Envelope struct {
	Seq  uint64 `json:"seq"`
	Data string `json:"data"`
	ID   string `json:"id"`
	TS   string `json:"ts"`
}

// dialV1 connects uid to n with pusher.v1.
func (n *node) dialV1(t testing.TB, uid string) *client {
	t.Helper()
	c := harness.DialWS(t, n.Addr().String(), uid, ws.Subprotocol)
	if c.Subprotocol() != ws.Subprotocol {
		t.Fatalf("subprotocol %q, want %q", c.Subprotocol(), ws.Subprotocol)
	}
	return harness.NewPump(c)
}

// readEnvelope reads one pusher.v1 message.
func readEnvelope(t testing.TB, c *client, timeout time.Duration) v1Envelope {
	t.Helper()
	typ, b := read(t, c, timeout)
	var e v1Envelope
	if err := json.Unmarshal(b, &e); typ != websocket.TextMessage || err != nil {
		t.Fatalf("frame %d %q: want a JSON envelope (%v)", typ, b, err)
	}
	return e
}

// sendAck acks seq.
func sendAck(t testing.TB, c *client, seq uint64) {
	t.Helper()
	if err := c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"ack":[%d]}`, seq)); err != nil {
		t.Fatalf("ack %d: %v", seq, err)
	}
}

// publishWithID publishes data for uid with a Nats-Msg-Id.
func publishWithID(t testing.TB, js jetstream.JetStream, uid, id, data string) (seq uint64, at time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m := nats.NewMsg(wire.PushSubject(uid))
	m.Data = []byte(data)
	m.Header.Set(jetstream.MsgIDHeader, id)
	at = time.Now()
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return ack.Sequence, at
}

// ackPending is a waitFor condition: PUSH's consumer has delivered
// everything and awaits want acks.
func ackPending(js jetstream.JetStream, want int) func() error {
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := js.Consumer(ctx, wire.StreamName, wire.DurableName)
		if err != nil {
			return err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != want {
			return fmt.Errorf("pending %d, ack pending %d; want 0, %d", info.NumPending, info.NumAckPending, want)
		}
		return nil
	}
}

// wantOrigin asserts e is the message published as seq, id, data at at.
func wantOrigin(t testing.TB, e v1Envelope, seq uint64, id, data string, at time.Time) {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, e.TS)
	if err != nil {
		t.Fatalf("ts %q: %v", e.TS, err)
	}
	if e.Seq != seq || e.ID != id || e.Data != data || ts.Sub(at).Abs() > 5*time.Second {
		t.Fatalf("envelope %+v, want seq %d id %q data %q ts near %s", e, seq, id, data, at.UTC().Format(time.RFC3339Nano))
	}
}

func TestV1AckSettlesInJetStream(t *testing.T) {
	cfg := testConfig(t)
	cfg.ConfirmTimeout = time.Minute
	n := startNode(t, cfg)
	_, js := n.natsClient(t)
	c := n.dialV1(t, "v1user")
	seq, at := publishWithID(t, js, "v1user", "order-1", "Hello")
	e := readEnvelope(t, c, 10*time.Second)
	wantOrigin(t, e, seq, "order-1", "Hello", at)
	// The client's WebSocket has answered pings meanwhile; until the
	// application acks, JetStream still awaits the ack.
	waitFor(t, 10*time.Second, "message awaiting its ack", ackPending(js, 1))
	waitFor(t, 10*time.Second, "one message in flight", n.inflight(1))
	sendAck(t, c, e.Seq)
	waitFor(t, 10*time.Second, "acked in JetStream", ackPending(js, 0))
	waitFor(t, 10*time.Second, "nothing in flight", n.inflight(0))
	n.logs.Wait(t, 10*time.Second, "push.delivered", map[string]any{"uid": "v1user", "seq": float64(seq)})
}

// TestV1UnackedIsRetriedDeadLetteredAndReplayedWithItsOrigin: a client that
// reads but never acks is closed with 4004; the message is retried, finds
// the user offline and is dead-lettered; when the user comes back it is
// replayed under its first sequence, id and time, and the ack settles it.
func TestV1UnackedIsRetriedDeadLetteredAndReplayedWithItsOrigin(t *testing.T) {
	n := startNode(t, confirmConfig(t, ws.ConfirmPong))
	_, js := n.natsClient(t)
	forgetful := n.dialV1(t, "v1replay")
	seq, at := publishWithID(t, js, "v1replay", "order-2", "again")
	wantOrigin(t, readEnvelope(t, forgetful, 10*time.Second), seq, "order-2", "again", at)
	_, _, err := forgetful.Next(10 * time.Second)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != wire.CloseUnresponsive {
		t.Fatalf("unacked client ended with %v, want close %d", err, wire.CloseUnresponsive)
	}
	waitFor(t, 15*time.Second, "dead-lettered", wantMsgs(js, wire.DLQStreamName, "dlq.push.v1replay", 1))

	back := n.dialV1(t, "v1replay")
	e := readEnvelope(t, back, 10*time.Second)
	wantOrigin(t, e, seq, "order-2", "again", at)
	sendAck(t, back, e.Seq)
	waitFor(t, 10*time.Second, "DLQ empty", wantMsgs(js, wire.DLQStreamName, "dlq.push.v1replay", 0))
	waitFor(t, 10*time.Second, "everything acked", ackPending(js, 0))
	waitFor(t, 10*time.Second, "nothing in flight", n.inflight(0))
}

// TestClusterV1AckCrossesNodes: the user is on b; whichever node pulls the
// message, the envelope carries its PUSH sequence and the ack on b settles
// it.
func TestClusterV1AckCrossesNodes(t *testing.T) {
	a, b := twoNodes(t)
	_, js := a.natsClient(t)
	c := b.dialV1(t, "v1far")
	for i := range 6 {
		id := fmt.Sprintf("far-%d", i)
		seq, at := publishWithID(t, js, "v1far", id, id)
		e := readEnvelope(t, c, 15*time.Second)
		wantOrigin(t, e, seq, id, id, at)
		waitFor(t, 10*time.Second, "awaiting the ack", ackPending(js, 1))
		sendAck(t, c, e.Seq)
		waitFor(t, 10*time.Second, "acked", ackPending(js, 0))
	}
	for _, n := range []*node{a, b} {
		if l := n.logs.Find("push.retry", nil); len(l) > 0 {
			t.Errorf("retries: %v", l)
		}
	}
}
