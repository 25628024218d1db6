//go:build e2e

package e2e

// Browser tests of the official client (/pusher.js, pusher.v1) in headless
// Chromium against real pusher processes: the module is imported into a
// page of pusher's origin and driven over CDP. The page's getToken asks
// the test, which mints each token when asked (short-lived ones for the
// refresh test), so the tests also prove the asynchronous getToken path.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/auth"
	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/wire"
)

// labSetup imports the client into the page and starts one PusherClient
// on the page's own /ws, recording into window.lab everything the tests
// look at: tokens asked for (answered by the test through
// lab.tokenWaiters), messages handled (count per seq), states, errors,
// and the frames on the wire (a WebSocket subclass records what the client
// sends and receives, and each open and close).
const labSetup = `(async () => {
  const { PusherClient, VERSION } = await import("/pusher.js");
  const lab = { tokenWaiters: [], tokenRequests: 0, handled: {}, msgs: [], states: [], errors: [],
    sent: [], received: [], opens: 0, closes: [] };
  window.lab = lab;
  class RecordingWebSocket extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      this.addEventListener("open", () => lab.opens++);
      this.addEventListener("message", (e) => lab.received.push(e.data));
      this.addEventListener("close", (e) => lab.closes.push(e.code));
    }
    send(data) {
      lab.sent.push(data);
      super.send(data);
    }
  }
  const client = new PusherClient("/ws", {
    WebSocket: RecordingWebSocket,
    getToken: () => {
      lab.tokenRequests++;
      return new Promise((resolve) => lab.tokenWaiters.push(resolve));
    },
  });
  client.on("state", (s) => lab.states.push(s));
  client.on("error", (e) => lab.errors.push({ code: e.code, fatal: e.fatal, closeCode: e.closeCode ?? null, reason: e.reason }));
  client.on("message", (m) => {
    lab.handled[m.seq] = (lab.handled[m.seq] || 0) + 1;
    lab.msgs.push({ seq: m.seq, text: typeof m.data === "string" ? m.data : null,
      bytes: m.data instanceof Uint8Array ? Array.from(m.data) : null, id: m.id ?? null, ts: m.ts ?? null });
  });
  lab.client = client;
  return VERSION;
})()`

// JavaScript expressions over window.lab.
const (
	jsLabState     = `lab.client.state`
	jsLabConnected = `lab.client.state === "connected"`
	// jsLabAcked is every seq the client acked, in the order sent.
	jsLabAcked = `lab.sent.map((s) => JSON.parse(s)).filter((f) => Array.isArray(f.ack)).flatMap((f) => f.ack)`
	// jsLabSummary says what the page saw, for a failing wait.
	jsLabSummary = `JSON.stringify({ state: lab.client.state, states: lab.states, errors: lab.errors, opens: lab.opens,
		closes: lab.closes, tokenRequests: lab.tokenRequests, handled: Object.keys(lab.handled).length,
		sent: lab.sent.length, received: lab.received.slice(-3) })`
)

// labMsg is one message as the page's handler got it.
type labMsg struct {
	Seq   uint64  `json:"seq"`
	Text  *string `json:"text"`
	Bytes []byte  `json:"-"`
	Raw   []int   `json:"bytes"` // a Uint8Array, as numbers
	ID    *string `json:"id"`
	TS    *string `json:"ts"`
}

type labError struct {
	Code      string `json:"code"`
	Fatal     bool   `json:"fatal"`
	CloseCode *int   `json:"closeCode"`
	Reason    string `json:"reason"`
}

// lab is the client running in a page of pusher p, signed in as uid.
type lab struct {
	t   *testing.T
	b   *browser
	uid string
	ttl time.Duration // of the tokens it is given

	mu     sync.Mutex
	issued []time.Time // exp of each token handed out, in order; guarded by mu
}

// startLab opens pusher p's page in a fresh Chromium and starts the client
// there; tokens for uid live ttl.
func startLab(t *testing.T, p *harness.Pusher, uid string, ttl time.Duration) *lab {
	t.Helper()
	b := startBrowser(t)
	b.navigate("http://" + p.HTTPAddr() + "/") // no token: the page itself stays idle
	v, err := b.evalAwait(labSetup)
	if err != nil {
		t.Fatalf("start the client in the page: %v; console: %q", err, b.console)
	}
	var version string
	if err := json.Unmarshal(v, &version); err != nil || version == "" {
		t.Fatalf("client VERSION %s: %v", v, err)
	}
	return &lab{t: t, b: b, uid: uid, ttl: ttl}
}

// evalAwait is eval for an expression whose value is a promise: it waits
// for it to settle and returns its value.
func (b *browser) evalAwait(js string) (json.RawMessage, error) { return b.evaluate(js, true) }

// serveTokens answers the page's pending getToken calls, each with a
// token minted now.
func (l *lab) serveTokens() error {
	var n int
	if err := l.evalInto(`lab.tokenWaiters.length`, &n); err != nil {
		return err
	}
	for range n {
		now := time.Now()
		tok, err := auth.Sign([]byte(harness.Secret), l.uid, l.ttl, now)
		if err != nil {
			return err
		}
		lit, _ := json.Marshal(tok)
		if _, err := l.b.eval(`lab.tokenWaiters.shift()(` + string(lit) + `)`); err != nil {
			return err
		}
		l.mu.Lock()
		l.issued = append(l.issued, now.Add(l.ttl).Truncate(time.Second)) // exp is in whole seconds
		l.mu.Unlock()
	}
	return nil
}

// tokensIssued returns the exp of each token handed out so far.
func (l *lab) tokensIssued() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.issued)
}

func (l *lab) evalInto(js string, v any) error {
	raw, err := l.b.eval(js)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

// get evaluates js into v for the test.
func (l *lab) get(js string, v any) {
	l.t.Helper()
	if err := l.evalInto(js, v); err != nil {
		l.t.Fatal(err)
	}
}

// cond is a wait condition: js yields true. Each poll first answers the
// page's token requests, so the client is never stuck waiting on the test.
func (l *lab) cond(js string) func() error {
	return l.b.condition(js, jsLabSummary, l.serveTokens)
}

func (l *lab) waitTrue(timeout time.Duration, what, js string) {
	l.t.Helper()
	harness.WaitFor(l.t, timeout, what, l.cond(js))
}

func (l *lab) staysTrue(d time.Duration, what, js string) {
	l.t.Helper()
	harness.Holds(l.t, d, what, l.cond(js))
}

func (l *lab) msgs() []labMsg {
	l.t.Helper()
	var out []labMsg
	l.get(`lab.msgs`, &out)
	for i := range out {
		if out[i].Raw != nil {
			out[i].Bytes = make([]byte, len(out[i].Raw))
			for j, n := range out[i].Raw {
				out[i].Bytes[j] = byte(n)
			}
		}
	}
	return out
}

func (l *lab) errors() []labError {
	l.t.Helper()
	var out []labError
	l.get(`lab.errors`, &out)
	return out
}

// jsHandled is an expression: the handler got seq.
func jsHandled(seq uint64) string {
	return fmt.Sprintf(`lab.handled[%d] === 1`, seq)
}

// jsAcked is an expression: the client acked seq.
func jsAcked(seq uint64) string {
	return fmt.Sprintf(`(%s).includes(%d)`, jsLabAcked, seq)
}

// TestClientDeliversAndAcks: a text and a binary message reach the
// handler (a string, and a Uint8Array with the same bytes), with their
// seq, id and publish time; the client acks each, and the acks settle
// them in JetStream: the consumer has nothing pending or unacked.
func TestClientDeliversAndAcks(t *testing.T) {
	chromiumPath(t)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t)})
	_, js := harness.Connect(t, p.NATSURL())
	const uid = "lab-deliver"
	l := startLab(t, p, uid, time.Hour)
	l.waitTrue(15*time.Second, "client connected", jsLabConnected)
	var once bool
	l.get(`lab.opens === 1 && lab.tokenRequests === 1`, &once)
	if !once {
		t.Fatal("want one open after one token request")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, wire.PushSubject(uid), []byte("Hello from NATS"), jetstream.WithMsgID("order-7"))
	if err != nil {
		t.Fatal(err)
	}
	textSeq := ack.Sequence
	binary := []byte{0xff, 0x00, 0x80, 0x01, 0xfe}
	binSeq := harness.Publish(t, js, wire.PushSubject(uid), binary)
	for _, seq := range []uint64{textSeq, binSeq} {
		l.waitTrue(10*time.Second, "seq "+strconv.FormatUint(seq, 10)+" handled and acked", jsHandled(seq)+` && `+jsAcked(seq))
	}
	got := map[uint64]labMsg{}
	for _, m := range l.msgs() {
		got[m.Seq] = m
	}
	if m := got[textSeq]; m.Text == nil || *m.Text != "Hello from NATS" || m.Bytes != nil || m.ID == nil || *m.ID != "order-7" {
		t.Errorf("text message %+v, want the string %q with id order-7", m, "Hello from NATS")
	}
	if m := got[binSeq]; m.ID != nil {
		t.Errorf("binary message has id %q, published without one", *m.ID)
	}
	// bytes is set only for a Uint8Array (labSetup).
	if m := got[binSeq]; m.Text != nil || !slices.Equal(m.Bytes, binary) {
		t.Errorf("binary message %+v, want a Uint8Array of % x", m, binary)
	}
	for seq, m := range got {
		if m.TS == nil {
			t.Errorf("seq %d has no ts", seq)
		} else if _, err := time.Parse(time.RFC3339Nano, *m.TS); err != nil {
			t.Errorf("seq %d ts %q: %v", seq, *m.TS, err)
		}
	}
	harness.WaitSettled(t, p.NATSURL(), []string{p.HTTPAddr()}, 15*time.Second)
	if errs := l.errors(); len(errs) != 0 {
		t.Errorf("client errors: %+v", errs)
	}
}

// TestClientSurvivesRestart: pusher is stopped (SIGTERM) while messages
// stream to the client and started again on the same ports and data. The
// client reconnects by itself; every message JetStream acked to the
// publisher is handed to the page's handler, none twice, and JetStream is
// left with nothing pending or unacked.
func TestClientSurvivesRestart(t *testing.T) {
	chromiumPath(t)
	const (
		uid      = "lab-restart"
		messages = 600 // one every 10 ms: the stream lasts 6 s
	)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), Env: map[string]string{
		"PUSHER_BACKOFF":       "100ms,200ms",
		"PUSHER_LOG_DELIVERED": "false",
	}})
	l := startLab(t, p, uid, time.Hour)
	l.waitTrue(15*time.Second, "client connected", jsLabConnected)

	pub := streamPublish(t, p.NATSURL(), harness.TextMsgs(messages, []string{uid}), 10*time.Millisecond, 120*time.Second)
	l.waitTrue(30*time.Second, "a third of the messages handled", fmt.Sprintf(`Object.keys(lab.handled).length >= %d`, messages/3))
	var atStop, afterStop int
	l.get(`Object.keys(lab.handled).length`, &atStop)
	published := pub.acked.Load()
	stopping := time.Now()
	if err := p.Proc().Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	l.get(`Object.keys(lab.handled).length`, &afterStop)
	t.Logf("SIGTERM with %d of %d published and %d handled; stopped in %s, %d handled by then",
		published, messages, atStop, time.Since(stopping).Round(time.Millisecond), afterStop)
	if published >= messages {
		t.Fatalf("all %d messages published before the stop: the stream was not under way", messages)
	}
	p2 := harness.StartPusher(t, p.Config())
	acked := pub.wait()
	if len(acked) != messages {
		t.Fatalf("%d of %d messages acked by JetStream", len(acked), messages)
	}
	l.waitTrue(60*time.Second, "every acked message handled after the restart",
		fmt.Sprintf(`new Set(lab.msgs.map((m) => m.text)).size >= %d && lab.client.state === "connected"`, messages))

	// Handled once per seq: the client's promise.
	var twice []string
	l.get(`Object.entries(lab.handled).filter(([, n]) => n !== 1).map(([seq, n]) => seq + "x" + n)`, &twice)
	if len(twice) > 0 {
		t.Errorf("seqs handed to the handler more than once: %v", twice)
	}
	// Every acked id arrived; one id under two seqs would be a duplicate
	// publish (the publisher retries), which the client cannot know.
	byText := map[string][]uint64{}
	for _, m := range l.msgs() {
		if m.Text != nil {
			byText[*m.Text] = append(byText[*m.Text], m.Seq)
		}
	}
	var lost []string
	for id := range acked {
		if len(byText[id]) == 0 {
			lost = append(lost, id)
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Errorf("%d acked messages never handled, e.g. %v", len(lost), lost[:min(10, len(lost))])
	}
	for id, seqs := range byText {
		if len(seqs) > 1 {
			t.Logf("%s stored twice by JetStream (seqs %v): a publish retry, handled once per seq", id, seqs)
		}
	}
	// It saw the restart, and came back by itself.
	var closes []int
	l.get(`lab.closes`, &closes)
	if !slices.Contains(closes, 1001) {
		t.Errorf("close codes %v, want 1001 (server shutting down) among them", closes)
	}
	var opens, acks int
	l.get(`lab.opens`, &opens)
	l.get(`(`+jsLabAcked+`).length`, &acks)
	if opens < 2 {
		t.Errorf("%d opens, want a reconnect", opens)
	}
	handled := len(l.msgs())
	t.Logf("%d handled, %d of them after the restart; %d acks sent (a redelivery of a handled message is acked again), %d opens, close codes %v",
		handled, handled-afterStop, acks, opens, closes)
	if handled == afterStop {
		t.Errorf("nothing handled after the restart")
	}
	for _, e := range l.errors() {
		if e.Fatal || (e.Code != "closed" && e.Code != "connect_failed") {
			t.Errorf("client error %+v: only closes and failed connects expected during a restart", e)
		}
	}
	harness.WaitSettled(t, p2.NATSURL(), []string{p2.HTTPAddr()}, 30*time.Second)
}

// streamer publishes a stream of messages (streamPublish).
type streamer struct {
	acked atomic.Int64
	done  chan struct{}
	ids   map[string]struct{} // acked ids; the goroutine's until done is closed
}

// streamPublish publishes msgs from a goroutine, one every interval, each
// retried until JetStream acks it (Nats-Msg-Id makes a retry idempotent),
// so the stream goes on through a pusher (and its embedded NATS) being
// stopped and started. It gives up after timeout; t.Cleanup stops it and
// waits for it.
func streamPublish(t *testing.T, natsURL string, msgs []harness.Msg, interval, timeout time.Duration) *streamer {
	t.Helper()
	_, js := harness.Connect(t, natsURL)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	s := &streamer{done: make(chan struct{}), ids: make(map[string]struct{}, len(msgs))}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for _, m := range msgs {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for {
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, m.Subject, m.Data, jetstream.WithMsgID(m.ID))
				pcancel()
				if err == nil {
					s.ids[m.ID] = struct{}{}
					s.acked.Add(1)
					break
				}
				select { // NATS is down: try again shortly
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

// wait waits until every message was published, or the stream gave up,
// and returns the ids JetStream acked.
func (s *streamer) wait() map[string]struct{} {
	<-s.done
	return s.ids
}

// TestClientRefreshesToken: with tokens that live 8 s (refreshed 4 s
// before they expire), the client refreshes in band: 2 s past the first
// token's expiry the connection it opened first is still the only one,
// pusher answered every refresh, and it still delivers.
func TestClientRefreshesToken(t *testing.T) {
	chromiumPath(t)
	const (
		uid = "lab-refresh"
		ttl = 8 * time.Second
	)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t)})
	_, js := harness.Connect(t, p.NATSURL())
	l := startLab(t, p, uid, ttl)
	l.waitTrue(15*time.Second, "client connected", jsLabConnected)
	firstExp := l.tokensIssued()[0]

	up := l.cond(`lab.opens === 1 && lab.closes.length === 0 && ` + jsLabConnected)
	harness.WaitFor(t, time.Until(firstExp)+10*time.Second, "2 s past the first token's expiry on the first connection", func() error {
		if err := up(); err != nil {
			return harness.Abort(err) // dropped: the refresh failed
		}
		if left := time.Until(firstExp.Add(2 * time.Second)); left > 0 {
			return fmt.Errorf("%s to go", left.Round(time.Millisecond))
		}
		return nil
	})
	seq := harness.Publish(t, js, wire.PushSubject(uid), []byte("after the first expiry"))
	l.waitTrue(10*time.Second, "message after the first expiry handled and acked", jsHandled(seq)+` && `+jsAcked(seq))

	var refreshes, refreshed int
	l.get(`lab.sent.filter((f) => typeof JSON.parse(f).refresh === "string").length`, &refreshes)
	l.get(`lab.received.filter((f) => JSON.parse(f).type === "refreshed").length`, &refreshed)
	if refreshes < 2 || refreshed != refreshes {
		t.Errorf("%d refresh frames sent, %d answered refreshed; want 2 or more, all answered", refreshes, refreshed)
	}
	if n := len(l.tokensIssued()); n != refreshes+1 {
		t.Errorf("%d tokens handed out for %d refreshes", n, refreshes)
	}
	var one bool
	l.get(`lab.opens === 1 && lab.closes.length === 0 && `+jsLabConnected, &one)
	if !one {
		summary, _ := l.b.eval(jsLabSummary)
		t.Errorf("the connection did not stay up through the refreshes: %s", summary)
	}
	if errs := l.errors(); len(errs) != 0 {
		t.Errorf("client errors: %+v", errs)
	}
	if n := len(p.Log().Find("ws.connected", map[string]any{"uid": uid})); n != 1 {
		t.Errorf("%d ws.connected lines for %s, want 1", n, uid)
	}
}

// TestClientStopsWhenKicked: pusher.kick.<uid> closes the connection with
// 4001; the client reports a fatal "kicked", is disconnected, and neither
// asks for a token nor connects again.
func TestClientStopsWhenKicked(t *testing.T) {
	chromiumPath(t)
	const uid = "lab-kick"
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t)})
	nc, _ := harness.Connect(t, p.NATSURL())
	l := startLab(t, p, uid, time.Hour)
	l.waitTrue(15*time.Second, "client connected", jsLabConnected)

	if err := nc.Publish("pusher.kick."+uid, nil); err != nil {
		t.Fatal(err)
	}
	l.waitTrue(10*time.Second, "fatal kicked error, disconnected",
		`lab.errors.some((e) => e.code === "kicked" && e.fatal && e.closeCode === 4001) && `+jsLabState+` === "disconnected"`)
	p.Log().Wait(t, 10*time.Second, "ws.closed", map[string]any{"uid": uid})
	l.staysTrue(3*time.Second, "no token asked for and no socket opened after the kick",
		`lab.tokenRequests === 1 && lab.opens === 1 && `+jsLabState+` === "disconnected"`)
	v, err := l.b.evalAwait(`lab.client.ready().then(() => "resolved", (e) => e.code)`)
	if err != nil {
		t.Fatal(err)
	}
	if string(v) != `"kicked"` {
		t.Errorf("ready() after the kick: %s, want a rejection with code kicked", v)
	}
	var states string
	l.get(`lab.states.join(",")`, &states)
	if states != "connecting,connected,disconnected" {
		t.Errorf("states %s", states)
	}
	if n := len(p.Log().Find("ws.connected", map[string]any{"uid": uid})); n != 1 {
		t.Errorf("%d ws.connected lines for %s, want 1", n, uid)
	}
}
