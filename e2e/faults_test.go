//go:build e2e

package e2e

// Fault-tolerance tests: pusher killed (SIGKILL) or stopped (SIGTERM)
// mid-stream and restarted on the same data, killed in the middle of
// dead-letter replays, stopped with a client that stopped reading, its
// external NATS restarted under it, a client that never reads, a flood of
// hostile connects, a half-sent handshake, PUSH_DLQ recreated, a user
// connecting while NATS is down. Each run publishes with retries until
// JetStream acks and then accounts for every acked message: received by a
// client, or stored in PUSH_DLQ (and not stranded there as an offline dead
// letter of a connected user). Nothing may be lost. The helpers live in
// the harness package.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/pusher-io/pusher/e2e/harness"
	"github.com/pusher-io/pusher/wire"
)

// restartUnderLoad runs a pusher process with embedded NATS, 200 users
// each with a reconnecting client, and publishes 20,000 messages at full
// speed; once a third is acked it calls stop on the process, starts it
// again on the same ports and data dir, and accounts for every message.
func restartUnderLoad(t *testing.T, name string, extra map[string]string, stop func(t *testing.T, p *harness.Pusher)) *harness.Recorder {
	const (
		users    = 200
		messages = 20000
	)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), Env: faultEnv(extra)})
	natsURL := p.NATSURL()

	uids := uidRange("u", users)
	rec := harness.NewRecorder()
	harness.StartClients(t, p.HTTPAddr(), uids, nil, rec)
	rec.WaitOnline(t, users, 30*time.Second)

	pub := harness.StartPublisher(t, natsURL, harness.TextMsgs(messages, uids), 120*time.Second)
	pub.WaitAcked(t, messages/3, 60*time.Second)
	t.Logf("%d of %d acked when the fault hits", pub.Acked(), messages)
	stop(t, p)

	rec.MarkRestart(time.Now(), true)
	p2 := harness.StartPusher(t, p.Config())
	acked := pub.Wait(t)
	harness.Account(t, name, natsURL, acked, rec, 90*time.Second)
	harness.WaitSettled(t, natsURL, []string{p2.HTTPAddr()}, 30*time.Second)
	if err := p2.Proc().Alive(); err != nil {
		t.Fatalf("restarted pusher: %v", err)
	}
	return rec
}

// routings are the two ways a pulled message reaches its connections:
// straight through the local hub (the embedded default), or as a request on
// pusher.deliver.<uid> through NATS (the scale-out router).
var routings = []string{"local", "cluster"}

func TestCrashSIGKILLLosesNothing(t *testing.T) {
	for _, routing := range routings {
		t.Run("routing="+routing, func(t *testing.T) {
			restartUnderLoad(t, "crash-sigkill/"+routing, map[string]string{"PUSHER_ROUTING": routing},
				func(t *testing.T, p *harness.Pusher) { p.Proc().KillT(t) })
		})
	}
}

func TestGracefulRestartLosesNothing(t *testing.T) {
	const shutdownTimeout = 10 * time.Second
	for _, routing := range routings {
		t.Run("routing="+routing, func(t *testing.T) {
			env := map[string]string{"PUSHER_ROUTING": routing, "PUSHER_SHUTDOWN_TIMEOUT": shutdownTimeout.String()}
			rec := restartUnderLoad(t, "graceful-sigterm/"+routing, env, func(t *testing.T, p *harness.Pusher) {
				took := stopGracefully(t, p, shutdownTimeout)
				for _, l := range p.Log().Find(harness.EventShutdownStep, nil) {
					t.Errorf("shutdown step cut short with only healthy clients: %v %v", l["step"], l["error"])
				}
				t.Logf("graceful stop took %s", took.Round(time.Millisecond))
			})
			if rec.CloseCount(websocket.CloseGoingAway) == 0 {
				t.Errorf("no client saw close code 1001; close codes seen: %v", rec.CloseCodes())
			}
		})
	}
}

// TestCrashDuringReplayLosesNothing: half the users are away while their
// messages arrive, so those are dead-lettered; they come back mid-stream,
// which replays their dead letters while more are being written, and
// pusher is SIGKILLed in the middle of that. Dead letters whose replay was
// published but not yet deleted, and originals whose dead letter was
// stored but not yet terminated, must come out as duplicates, never as
// losses, and none may stay stranded in PUSH_DLQ.
func TestCrashDuringReplayLosesNothing(t *testing.T) {
	const (
		half     = 50
		messages = 10000
	)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), Env: faultEnv(nil)})
	natsURL := p.NATSURL()

	here, away := uidRange("here", half), uidRange("away", half)
	rec := harness.NewRecorder()
	harness.StartClients(t, p.HTTPAddr(), here, nil, rec)
	rec.WaitOnline(t, half, 30*time.Second)

	msgs := harness.TextMsgs(messages, append(append([]string(nil), here...), away...))
	awayIDs := map[string]struct{}{}
	for i, m := range msgs {
		if i%(2*half) >= half {
			awayIDs[m.ID] = struct{}{}
		}
	}
	pub := harness.StartPublisher(t, natsURL, msgs, 120*time.Second)
	pub.WaitAcked(t, messages/3, 60*time.Second)
	harness.StartClients(t, p.HTTPAddr(), away, nil, rec)
	harness.WaitFor(t, 30*time.Second, "replays reaching returning users", func() error {
		if rec.CountOf(awayIDs) == 0 {
			return errors.New("none of the away users' messages received")
		}
		return nil
	})
	p.Proc().KillT(t)
	t.Logf("killed during replays: %d of %d acked, %d of the away users' %d received",
		pub.Acked(), messages, rec.CountOf(awayIDs), len(awayIDs))

	rec.MarkRestart(time.Now(), true)
	p2 := harness.StartPusher(t, p.Config())
	acked := pub.Wait(t)
	f := harness.Account(t, "crash-during-replay", natsURL, acked, rec, 90*time.Second)
	if f.DLQ > 0 {
		t.Errorf("%d messages still in PUSH_DLQ although every user is connected", f.DLQ)
	}
	harness.WaitSettled(t, natsURL, []string{p2.HTTPAddr()}, 30*time.Second)
	if err := p2.Proc().Alive(); err != nil {
		t.Fatalf("restarted pusher: %v", err)
	}
}

// TestGracefulStopWithStuckClient: a client that stopped reading keeps its
// connection's writer blocked for up to the 10s write deadline. SIGTERM
// must still exit 0 within a shorter PUSHER_SHUTDOWN_TIMEOUT, and nothing
// may be lost: what the kernel took for the stuck client is read at the
// end, the rest is redelivered or dead-lettered and replayed.
func TestGracefulStopWithStuckClient(t *testing.T) {
	const (
		shutdownTimeout = 4 * time.Second
		users           = 10
		rounds          = 100
		stuckPerRound   = 15 // 1,500 × 16 KiB: far more than the socket buffers hold
		stuckUID        = "stuck"
	)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), Env: faultEnv(map[string]string{
		"PUSHER_SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
		"PUSHER_SEND_QUEUE":       "256", // absorbs bursts: only a blocked writer overflows it
	})})
	natsURL := p.NATSURL()

	uids := uidRange("w", users)
	rec := harness.NewRecorder()
	harness.StartClients(t, p.HTTPAddr(), uids, nil, rec)
	rec.WaitOnline(t, users, 30*time.Second)
	stuck := harness.DialWS(t, p.HTTPAddr(), stuckUID)

	var msgs []harness.Msg
	for r := range rounds {
		for _, uid := range uids {
			id := fmt.Sprintf("%s-%d", uid, r)
			msgs = append(msgs, harness.Msg{ID: id, Subject: wire.PushSubject(uid), Data: []byte(id)})
		}
		for k := range stuckPerRound {
			msgs = append(msgs, harness.BigMsg(fmt.Sprintf("stuck-%d", r*stuckPerRound+k), stuckUID))
		}
	}
	pub := harness.StartPublisher(t, natsURL, msgs, 120*time.Second)
	// The stuck connection's queue overflowed: its writer sits in a write
	// to a full socket.
	p.Log().Wait(t, 30*time.Second, "push.retry", map[string]any{"uid": stuckUID, "reason": wire.ReasonQueueFull})

	took := stopGracefully(t, p, shutdownTimeout)
	for _, l := range p.Log().Find(harness.EventShutdownStep, nil) {
		t.Logf("shutdown step cut short (expected with a stuck client): %v %v", l["step"], l["error"])
	}
	t.Logf("graceful stop with a stuck client took %s", took.Round(time.Millisecond))

	rec.MarkRestart(time.Now(), true)
	p2 := harness.StartPusher(t, p.Config())
	acked := pub.Wait(t)
	err := harness.ReadUntilError(stuck, rec, 5*time.Second)
	t.Logf("stuck client's connection ended with: %v", err)
	harness.StartClients(t, p2.HTTPAddr(), []string{stuckUID}, nil, rec)
	harness.Account(t, "graceful-stuck-client", natsURL, acked, rec, 90*time.Second)
	harness.WaitSettled(t, natsURL, []string{p2.HTTPAddr()}, 30*time.Second)
}

// readyzIs returns a condition: p's /readyz answers want.
func readyzIs(p *harness.Pusher, want int) func() error {
	return func() error {
		status, body, err := harness.HTTPGet(context.Background(), "http://"+p.HTTPAddr()+"/readyz")
		if err == nil && status != want {
			err = fmt.Errorf("/readyz %d %s", status, body)
		}
		return err
	}
}

func TestExternalNATSRestart(t *testing.T) {
	const (
		users    = 50
		messages = 5000
	)
	ns := harness.StartCluster(t, harness.ClusterConfig{Bin: bins.NATSServerBin(t), Size: 1})
	natsURL := ns.URL(0)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), NATSURL: natsURL, Env: faultEnv(nil)})
	if err := readyzIs(p, http.StatusOK)(); err != nil {
		t.Fatalf("before the fault: %v, want 200", err)
	}

	uids := uidRange("x", users)
	rec := harness.NewRecorder()
	harness.StartClients(t, p.HTTPAddr(), uids, nil, rec)
	rec.WaitOnline(t, users, 30*time.Second)

	pub := harness.StartPublisher(t, natsURL, harness.TextMsgs(messages, uids), 120*time.Second)
	pub.WaitAcked(t, messages/3, 60*time.Second)
	t.Logf("%d of %d acked when nats-server is killed", pub.Acked(), messages)
	ns.KillT(t, 0)
	harness.WaitFor(t, 10*time.Second, "/readyz 503 while NATS is down", readyzIs(p, http.StatusServiceUnavailable))

	rec.MarkRestart(time.Now(), false)
	ns.RestartT(t, 0)
	harness.WaitFor(t, 30*time.Second, "/readyz 200 after NATS is back", readyzIs(p, http.StatusOK))
	p.Log().Wait(t, 10*time.Second, harness.EventNATSUp, nil)

	acked := pub.Wait(t)
	harness.Account(t, "external-nats-restart", natsURL, acked, rec, 90*time.Second)
	// With an external NATS, routing defaults to cluster: requests whose
	// reply was lost in the outage settle after the 15s delivery timeout.
	harness.WaitSettled(t, natsURL, []string{p.HTTPAddr()}, 30*time.Second)
	if err := p.Proc().Alive(); err != nil {
		t.Fatal(err)
	}
}

func TestSlowClientDoesNotHurtOthers(t *testing.T) {
	const (
		healthyUsers = 50
		perHealthy   = 200
		slowMessages = 2000
		slowUID      = "slow"
	)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), Env: map[string]string{
		"PUSHER_SEND_QUEUE":    "64",
		"PUSHER_MAX_DELIVER":   "3",
		"PUSHER_BACKOFF":       "50ms",
		"PUSHER_LOG_DELIVERED": "false",
		// The slow user, closed as slow over and over, ends up with about
		// 2,000 dead letters; the default cap of 1,000 a user would
		// discard half of them, by design, and this test counts every
		// message.
		"PUSHER_DLQ_MAX_PER_UID": "0",
	}})
	healthy := uidRange("h", healthyUsers)
	rec := harness.NewRecorder()
	harness.StartClients(t, p.HTTPAddr(), healthy, nil, rec)
	rec.WaitOnline(t, healthyUsers, 30*time.Second)
	slow := harness.DialWS(t, p.HTTPAddr(), slowUID) // never read until the end

	// Interleaved: per round one message to every healthy user and ten to
	// the slow one.
	var msgs []harness.Msg
	isSlow := map[string]bool{}
	for r := range perHealthy {
		for _, uid := range healthy {
			msgs = append(msgs, harness.BigMsg(fmt.Sprintf("%s-%d", uid, r), uid))
		}
		for k := range slowMessages / perHealthy {
			id := fmt.Sprintf("s-%d", r*slowMessages/perHealthy+k)
			isSlow[id] = true
			msgs = append(msgs, harness.BigMsg(id, slowUID))
		}
	}
	pub := harness.StartPublisher(t, p.NATSURL(), msgs, 120*time.Second)
	acked := pub.Wait(t)
	pub.Close()
	healthyAcked, slowAcked := map[string]struct{}{}, map[string]struct{}{}
	for id := range acked {
		if isSlow[id] {
			slowAcked[id] = struct{}{}
		} else {
			healthyAcked[id] = struct{}{}
		}
	}

	// Healthy users get everything, straight away: none of it may have
	// been dead-lettered because of the slow one.
	f := harness.Account(t, "slow-client/healthy", p.NATSURL(), healthyAcked, rec, 90*time.Second)
	if f.Received != len(healthyAcked) {
		t.Errorf("healthy users received %d of %d messages (%d dead-lettered)", f.Received, len(healthyAcked), f.DLQ)
	}
	if n := rec.CloseCount(wire.CloseSlowClient); n > 0 {
		t.Errorf("a healthy client was closed as slow (4002) %d times", n)
	}

	// The slow client is cut with 4002. It never reads, so the close frame
	// may never reach it; the server's ws.closed line names the code.
	p.Log().Wait(t, 30*time.Second, "ws.closed", map[string]any{"uid": slowUID, "code": wire.CloseSlowClient})
	if n := harness.ScrapeT(t, p.HTTPAddr()).Sum("pusher_messages_total", "outcome", "retried", "reason", wire.ReasonQueueFull); n <= 0 {
		t.Errorf(`pusher_messages_total{outcome="retried",reason="queue_full"} = %v, want > 0`, n)
	}

	// What the kernel accepted for the slow client before the cut counts as
	// delivered (README: "succeeded means the kernel accepted the frame"):
	// read it now, then reconnect with a reading client for the rest.
	slowRec := harness.NewRecorder()
	endErr := harness.ReadUntilError(slow, slowRec, 5*time.Second)
	// A client that never reads has full socket buffers: the server's
	// close frame cannot reach it, so it may see 1006 after the frames the
	// kernel held. Any other code is wrong.
	var ce *websocket.CloseError
	if errors.As(endErr, &ce) && ce.Code != wire.CloseSlowClient && ce.Code != websocket.CloseAbnormalClosure {
		t.Errorf("slow client's connection closed with %d %q, want 4002 (or 1006 when the close frame could not be written)", ce.Code, ce.Text)
	}
	t.Logf("slow client read %d frames after the cut; its connection ended with: %v", slowRec.Frames(), endErr)
	harness.StartClients(t, p.HTTPAddr(), []string{slowUID}, nil, slowRec)
	harness.Account(t, "slow-client/slow-uid", p.NATSURL(), slowAcked, slowRec, 90*time.Second)
	harness.WaitSettled(t, p.NATSURL(), []string{p.HTTPAddr()}, 30*time.Second)
}

// hostileKind is one kind of bad connection attempt of TestHostileConnectBurst.
type hostileKind struct {
	name   string
	want   int    // HTTP status
	result string // pusher_connects_total label
}

var hostileKinds = []hostileKind{
	{"garbage token", http.StatusUnauthorized, "unauthorized"},
	{"bad origin", http.StatusForbidden, "forbidden"},
	{"no upgrade", http.StatusBadRequest, "bad_request"},
	{"token over 8 KiB", http.StatusUnauthorized, "unauthorized"},
	{"no token", http.StatusUnauthorized, "unauthorized"},
}

// hostileAttempt makes one attempt of hostileKinds[k] at httpAddr and
// returns the status it got (101 for a connection that was accepted).
func hostileAttempt(httpAddr string, k int, validTok, hugeTok string) (int, error) {
	h := http.Header{}
	switch k {
	case 0:
		h.Set("Authorization", "Bearer not.a.jwt")
	case 1:
		h.Set("Authorization", "Bearer "+validTok)
		h.Set("Origin", "https://evil.example")
	case 2:
		status, _, err := harness.HTTPGet(context.Background(), "http://"+httpAddr+"/ws")
		return status, err
	case 3:
		h.Set("Authorization", "Bearer "+hugeTok)
	case 4:
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial("ws://"+httpAddr+"/ws", h)
	if c != nil {
		_ = c.Close()
		return http.StatusSwitchingProtocols, nil
	}
	if resp == nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// stallConns opens n connections to httpAddr that send half a request
// line and then nothing; they are closed by the returned func (and in
// t.Cleanup).
func stallConns(t *testing.T, httpAddr string, n int) func() {
	var stalls []net.Conn
	closeAll := func() {
		for _, c := range stalls {
			_ = c.Close()
		}
		stalls = nil
	}
	t.Cleanup(closeAll)
	for range n {
		c, err := net.Dial("tcp", httpAddr)
		if err != nil {
			t.Fatalf("stall conn: %v", err)
		}
		stalls = append(stalls, c)
		if _, err := c.Write([]byte("GET /w")); err != nil {
			t.Fatalf("stall write: %v", err)
		}
	}
	return closeAll
}

func TestHostileConnectBurst(t *testing.T) {
	const (
		goodUsers  = 20
		perGood    = 100
		workers    = 50
		perWorker  = 60 // 3,000 bad requests
		stallCount = 300
		origin     = "https://good.example"
	)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), Env: map[string]string{
		"PUSHER_ALLOWED_ORIGINS": origin,
		"PUSHER_LOG_DELIVERED":   "false",
	}})
	good := uidRange("g", goodUsers)
	rec := harness.NewRecorder()
	harness.StartClients(t, p.HTTPAddr(), good, http.Header{"Origin": {origin}}, rec)
	rec.WaitOnline(t, goodUsers, 30*time.Second)
	baseline := harness.ScrapeT(t, p.HTTPAddr()).Sum("go_goroutines")
	closeStalls := stallConns(t, p.HTTPAddr(), stallCount)

	var msgs []harness.Msg
	for i := range perGood * goodUsers {
		id := "g-" + strconv.Itoa(i)
		msgs = append(msgs, harness.Msg{ID: id, Subject: wire.PushSubject(good[i%goodUsers]), Data: []byte(id)})
	}
	pub := harness.StartPublisher(t, p.NATSURL(), msgs, 60*time.Second)

	sent := hostileBurst(t, p.HTTPAddr(), workers, perWorker)

	acked := pub.Wait(t)
	pub.Close()
	f := harness.Account(t, "hostile-burst", p.NATSURL(), acked, rec, 60*time.Second)
	if f.Received != len(acked) {
		t.Errorf("good clients received %d of %d messages", f.Received, len(acked))
	}
	if n := rec.Dials(); n != goodUsers {
		t.Errorf("good clients connected %d times, want %d: the burst cut some of them off", n, goodUsers)
	}
	wantByResult := map[string]int64{"ok": int64(rec.Dials())}
	for k, kd := range hostileKinds {
		wantByResult[kd.result] += sent[k]
	}
	m := harness.ScrapeT(t, p.HTTPAddr())
	for result, want := range wantByResult {
		if got := m.Sum("pusher_connects_total", "result", result); got != float64(want) {
			t.Errorf("pusher_connects_total{result=%q} = %v, want %d", result, got, want)
		}
	}

	closeStalls()
	checkGoroutinesBack(t, p, baseline)
	if got := harness.ScrapeT(t, p.HTTPAddr()).Sum("pusher_connections"); got != goodUsers {
		t.Errorf("pusher_connections = %v, want %d", got, goodUsers)
	}
	harness.WaitSettled(t, p.NATSURL(), []string{p.HTTPAddr()}, 30*time.Second)
}

// hostileBurst makes workers × perWorker bad connection attempts at
// httpAddr at once, the kinds in turn, fails t for each kind of wrong
// answer, and returns how many attempts of each kind it made.
func hostileBurst(t *testing.T, httpAddr string, workers, perWorker int) []int64 {
	validTok, hugeTok := harness.Token(t, "intruder", time.Hour), strings.Repeat("a", 9<<10)
	var (
		wg       sync.WaitGroup
		sent     = make([]atomic.Int64, len(hostileKinds))
		wrong    atomic.Int64
		firstBad sync.Once
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				k := (w*perWorker + i) % len(hostileKinds)
				sent[k].Add(1)
				got, err := hostileAttempt(httpAddr, k, validTok, hugeTok)
				if got != hostileKinds[k].want {
					wrong.Add(1)
					firstBad.Do(func() {
						t.Errorf("%s: got status %d (%v), want %d", hostileKinds[k].name, got, err, hostileKinds[k].want)
					})
				}
			}
		}()
	}
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d of %d bad requests got the wrong answer", n, workers*perWorker)
	}
	out := make([]int64, len(sent))
	for k := range sent {
		out[k] = sent[k].Load()
	}
	return out
}

// checkGoroutinesBack fails t unless p's go_goroutines comes back to
// within 20 of baseline: the bad connections left nothing behind.
func checkGoroutinesBack(t *testing.T, p *harness.Pusher, baseline float64) {
	t.Helper()
	var now float64
	err := harness.Poll(context.Background(), 20*time.Second, "go_goroutines back near its baseline", func() error {
		m, err := p.Metrics(context.Background())
		if err != nil {
			return err
		}
		if now = m.Sum("go_goroutines"); now > baseline+20 {
			return fmt.Errorf("go_goroutines %v, baseline %v", now, baseline)
		}
		return nil
	})
	if err != nil {
		t.Errorf("the bad connections left goroutines behind: %v", err)
	}
	t.Logf("go_goroutines baseline %v, after the burst %v", baseline, now)
}

func TestSlowlorisHandshakeIsCut(t *testing.T) {
	const (
		timeout = 2 * time.Second
		limit   = timeout + 2*time.Second // margin for a loaded machine
	)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), Env: map[string]string{
		"PUSHER_HANDSHAKE_TIMEOUT": timeout.String(),
	}})
	c, err := net.Dial("tcp", p.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n")); err != nil {
		t.Fatal(err)
	}
	// Bounded wait: the timeout is the behaviour under test.
	_ = c.SetReadDeadline(start.Add(limit))
	got, err := io.ReadAll(c)
	took := time.Since(start)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("half-sent handshake still open after %s (PUSHER_HANDSHAKE_TIMEOUT=%s)", limit, timeout)
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v", err)
	}
	if len(got) > 0 {
		t.Errorf("half-sent handshake got an answer %q, want the connection closed", got)
	}
	if took < timeout/2 {
		t.Errorf("half-sent handshake cut after %s, before PUSHER_HANDSHAKE_TIMEOUT=%s", took, timeout)
	}
	t.Logf("half-sent handshake cut after %s (PUSHER_HANDSHAKE_TIMEOUT=%s)", took.Round(time.Millisecond), timeout)
}

// A dead letter's replay carries Nats-Msg-Id "pusher-replay-<DLQ seq>".
// When PUSH_DLQ is deleted and created again (an operator clearing it, a
// rebuilt NATS), its sequences start at 1 again, and a new dead letter's
// replay within PUSH's 2-minute duplicate window is taken by JetStream for
// the earlier one: acked as a duplicate, not stored, and the dead letter is
// then deleted. The message is gone.
func TestReplayAfterDLQRecreatedLosesNothing(t *testing.T) {
	const uid = "returning"
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), Env: map[string]string{"PUSHER_LOG_DELIVERED": "false"}})
	nc, js := harness.Connect(t, p.NATSURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// 1. Away: "first" is dead-lettered (PUSH_DLQ seq 1) and replayed on connect.
	harness.Publish(t, js, wire.PushSubject(uid), []byte("first"))
	p.Log().Wait(t, 10*time.Second, "push.deadlettered", map[string]any{"uid": uid, "reason": wire.ReasonOffline})
	c := harness.DialWS(t, p.HTTPAddr(), uid)
	if _, got := harness.Read(t, c, 5*time.Second); string(got) != "first" {
		t.Fatalf("first visit got %q", got)
	}
	// Keep reading, as a browser does, until the replay is confirmed (the
	// pong to the ping after it) and acked: a client that leaves before
	// that gets the message again, which is not what this test is about.
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	harness.WaitSettled(t, p.NATSURL(), []string{p.HTTPAddr()}, 10*time.Second)
	_ = c.Close()
	p.Log().Wait(t, 10*time.Second, "ws.closed", map[string]any{"uid": uid})
	harness.WaitStreamMsgs(t, 10*time.Second, js, wire.DLQStreamName, wire.DLQSubject(uid), 0)

	// 2. PUSH_DLQ is deleted, and a restart of pusher creates it again.
	if err := js.DeleteStream(ctx, wire.DLQStreamName); err != nil {
		t.Fatal(err)
	}
	if err := p.Proc().Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	p = harness.StartPusher(t, p.Config())
	harness.WaitFor(t, 10*time.Second, "the test's NATS connection back", func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("NATS connection %v", nc.Status())
		}
		return nil
	})

	// 3. Away again: "second" is dead-lettered, as PUSH_DLQ seq 1 again.
	harness.Publish(t, js, wire.PushSubject(uid), []byte("second"))
	harness.WaitStreamMsgs(t, 10*time.Second, js, wire.DLQStreamName, wire.DLQSubject(uid), 1)

	// 4. Back: "second" must arrive.
	c2 := harness.DialWS(t, p.HTTPAddr(), uid)
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, got, err := c2.ReadMessage()
	if err == nil && string(got) == "second" {
		return
	}
	dlqLeft := harness.StreamMsgs(t, js, wire.DLQStreamName, wire.DLQSubject(uid))
	// "first", its replay, "second": a fourth (the replay of "second") was
	// never stored.
	inPush := harness.StreamMsgs(t, js, wire.StreamName, wire.PushSubject(uid))
	if dlqLeft == 0 && inPush == 3 {
		t.Fatalf("replay Nats-Msg-Id collided after PUSH_DLQ was recreated: JetStream de-duplicated the replay of "+
			"\"second\" as the earlier one's, the dead letter was deleted, and the message is lost (read %q, %v; PUSH has %d for %s, PUSH_DLQ 0)",
			got, err, inPush, uid)
	}
	t.Fatalf("second visit: got %q, %v; PUSH_DLQ has %d for %s, PUSH %d", got, err, dlqLeft, uid, inPush)
}

// A user who connects while NATS is down cannot have their dead letters
// replayed at that moment. Once NATS is back they must still get them,
// without having to reconnect.
func TestReplayOnConnectDuringNATSOutage(t *testing.T) {
	const (
		uid      = "away"
		messages = 20
	)
	ns := harness.StartCluster(t, harness.ClusterConfig{Bin: bins.NATSServerBin(t), Size: 1})
	natsURL := ns.URL(0)
	p := harness.StartPusher(t, harness.PusherConfig{Bin: bins.PusherBin(t), NATSURL: natsURL, Env: faultEnv(nil)})

	pub := harness.StartPublisher(t, natsURL, harness.TextMsgs(messages, []string{uid}), 30*time.Second)
	acked := pub.Wait(t)
	pub.Close()
	nc, js := harness.Connect(t, natsURL)
	harness.WaitStreamMsgs(t, 10*time.Second, js, wire.DLQStreamName, wire.DLQSubject(uid), messages)
	nc.Close()

	// SIGTERM, not SIGKILL: nats-server then keeps the consumer's acks
	// (the originals' terminations), so nothing is redelivered past the
	// dead letters.
	if err := ns.Proc(0).Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Proc(0).Wait(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, 10*time.Second, "/readyz 503 while NATS is down", readyzIs(p, http.StatusServiceUnavailable))
	rec := harness.NewRecorder()
	harness.StartClients(t, p.HTTPAddr(), []string{uid}, nil, rec)
	// Bounded wait: the outage has to outlast the replay this connect set off.
	p.Log().Wait(t, 30*time.Second, "dlq.replay_failed", map[string]any{"uid": uid})
	ns.RestartT(t, 0)
	p.Log().Wait(t, 10*time.Second, harness.EventNATSUp, nil)

	if err := rec.AwaitReceived(acked, 10*time.Second); err != nil {
		_, js := harness.Connect(t, natsURL)
		missing := rec.Missing(acked)
		left := harness.StreamMsgs(t, js, wire.DLQStreamName, wire.DLQSubject(uid))
		if left == uint64(len(missing)) && rec.OnlineCount() == 1 && rec.Dials() == 1 {
			t.Fatalf("a replay that failed while NATS was down was never retried: %d offline dead letters stay in PUSH_DLQ while %s is connected", left, uid)
		}
		t.Fatalf("%d of %d dead letters not replayed 10s after NATS came back; PUSH_DLQ holds %d for %s", len(missing), messages, left, uid)
	}
	harness.Account(t, "replay-during-outage", natsURL, acked, rec, 10*time.Second)
}

// stopGracefully sends SIGTERM and checks the contract: exit 0 within
// PUSHER_SHUTDOWN_TIMEOUT (budget) and the pusher.stopped line. It returns
// how long the stop took.
func stopGracefully(t *testing.T, p *harness.Pusher, budget time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := p.Proc().Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The budget plus process exit; a hang fails here.
	code, err := p.Proc().Wait(budget + 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0\nstderr:\n%s", code, p.Proc().Stderr())
	}
	if took > budget+time.Second {
		t.Errorf("graceful stop took %s, PUSHER_SHUTDOWN_TIMEOUT is %s", took, budget)
	}
	// Logs are flushed at exit and the exited process's stdout is fully
	// copied, so the line is there or never will be.
	if len(p.Log().Find(harness.EventStopped, nil)) == 0 {
		t.Errorf("no %s log line after SIGTERM\nstdout tail:\n%s", harness.EventStopped, harness.Tail(p.Log().String(), 20))
	}
	return took
}
