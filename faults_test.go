package main

// Fault-tolerance tests: pusher killed (SIGKILL) or stopped (SIGTERM)
// mid-stream and restarted on the same data, killed in the middle of
// dead-letter replays, stopped with a client that stopped reading, its
// external NATS restarted under it, a client that never reads, a flood of
// hostile connects, a half-sent handshake, PUSH_DLQ recreated, a user
// connecting while NATS is down. Each run publishes with retries until
// JetStream acks and then accounts for every acked message: received by a
// client, or stored in PUSH_DLQ (and not stranded there as an offline dead
// letter of a connected user). Nothing may be lost. The helpers live in
// proc_test.go.

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

	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/wire"
)

func uidRange(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

// restartUnderLoad runs a subprocess pusher with embedded NATS, 200 users
// each with a reconnecting client, and publishes 20,000 messages at full
// speed; once a third is acked it calls stop on the process, starts it
// again on the same ports and data dir, and accounts for every message.
func restartUnderLoad(t *testing.T, name string, extra map[string]string, stop func(t *testing.T, p *proc)) *recorder {
	const (
		users    = 200
		messages = 20000
	)
	bin := buildPusher(t)
	addrs := freeAddrs(t, 2)
	env := pusherEnv(addrs[0], addrs[1], t.TempDir(), extra)
	natsURL := "nats://" + addrs[1]
	p := startPusherProc(t, bin, env)

	uids := uidRange("u", users)
	rec := newRecorder()
	startClients(t, addrs[0], uids, nil, rec)
	waitFor(t, 30*time.Second, "every client connected", func() bool { return rec.onlineCount() == users })

	pub := startPublisher(t, natsURL, textMsgs(messages, uids), 120*time.Second)
	pub.waitAcked(t, messages/3, 60*time.Second)
	t.Logf("%d of %d acked when the fault hits", pub.acked.Load(), messages)
	stop(t, p)

	rec.markRestart(time.Now(), true)
	p2 := startPusherProc(t, bin, env)
	acked := pub.wait(t)
	account(t, name, natsURL, acked, rec, 90*time.Second)
	waitSettled(t, natsURL, addrs[0])
	if p2.exited() {
		t.Fatalf("restarted pusher exited: %v\n%s", p2.state, p2.stderr)
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
				func(t *testing.T, p *proc) { p.kill(t) })
		})
	}
}

func TestGracefulRestartLosesNothing(t *testing.T) {
	const shutdownTimeout = 10 * time.Second
	for _, routing := range routings {
		t.Run("routing="+routing, func(t *testing.T) {
			env := map[string]string{"PUSHER_ROUTING": routing, "PUSHER_SHUTDOWN_TIMEOUT": shutdownTimeout.String()}
			rec := restartUnderLoad(t, "graceful-sigterm/"+routing, env, func(t *testing.T, p *proc) {
				took := stopGracefully(t, p, shutdownTimeout)
				for _, l := range p.logs.find(evShutdownStep, nil) {
					t.Errorf("shutdown step cut short with only healthy clients: %v %v", l["step"], l["error"])
				}
				t.Logf("graceful stop took %s", took.Round(time.Millisecond))
			})
			if rec.closeCount(websocket.CloseGoingAway) == 0 {
				t.Errorf("no client saw close code 1001; close codes seen: %v", rec.closeCodesSeen())
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
	bin := buildPusher(t)
	addrs := freeAddrs(t, 2)
	env := pusherEnv(addrs[0], addrs[1], t.TempDir(), nil)
	natsURL := "nats://" + addrs[1]
	p := startPusherProc(t, bin, env)

	here, away := uidRange("here", half), uidRange("away", half)
	rec := newRecorder()
	startClients(t, addrs[0], here, nil, rec)
	waitFor(t, 30*time.Second, "present users connected", func() bool { return rec.onlineCount() == half })

	msgs := textMsgs(messages, append(append([]string(nil), here...), away...))
	awayIDs := map[string]struct{}{}
	for i, m := range msgs {
		if i%(2*half) >= half {
			awayIDs[m.id] = struct{}{}
		}
	}
	pub := startPublisher(t, natsURL, msgs, 120*time.Second)
	pub.waitAcked(t, messages/3, 60*time.Second)
	startClients(t, addrs[0], away, nil, rec)
	waitFor(t, 30*time.Second, "replays reaching returning users", func() bool { return rec.anyOf(awayIDs) })
	p.kill(t)
	t.Logf("killed during replays: %d of %d acked, %d of the away users' %d received",
		pub.acked.Load(), messages, rec.countOf(awayIDs), len(awayIDs))

	rec.markRestart(time.Now(), true)
	p2 := startPusherProc(t, bin, env)
	acked := pub.wait(t)
	f := account(t, "crash-during-replay", natsURL, acked, rec, 90*time.Second)
	if f.dlq > 0 {
		t.Errorf("%d messages still in PUSH_DLQ although every user is connected", f.dlq)
	}
	waitSettled(t, natsURL, addrs[0])
	if p2.exited() {
		t.Fatalf("restarted pusher exited: %v\n%s", p2.state, p2.stderr)
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
	bin := buildPusher(t)
	addrs := freeAddrs(t, 2)
	env := pusherEnv(addrs[0], addrs[1], t.TempDir(), map[string]string{
		"PUSHER_SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
		"PUSHER_SEND_QUEUE":       "256", // absorbs bursts: only a blocked writer overflows it
	})
	natsURL := "nats://" + addrs[1]
	p := startPusherProc(t, bin, env)

	uids := uidRange("w", users)
	rec := newRecorder()
	startClients(t, addrs[0], uids, nil, rec)
	waitFor(t, 30*time.Second, "clients connected", func() bool { return rec.onlineCount() == users })
	stuck := dialWS(t, addrs[0], stuckUID)

	var msgs []pubMsg
	for r := range rounds {
		for _, uid := range uids {
			id := fmt.Sprintf("%s-%d", uid, r)
			msgs = append(msgs, pubMsg{id: id, subject: wire.PushSubject(uid), data: []byte(id)})
		}
		for k := range stuckPerRound {
			msgs = append(msgs, bigMsg(fmt.Sprintf("stuck-%d", r*stuckPerRound+k), stuckUID))
		}
	}
	pub := startPublisher(t, natsURL, msgs, 120*time.Second)
	// The stuck connection's queue overflowed: its writer sits in a write
	// to a full socket.
	p.logs.wait(t, 30*time.Second, "push.retry", map[string]any{"uid": stuckUID, "reason": "queue_full"})

	took := stopGracefully(t, p, shutdownTimeout)
	for _, l := range p.logs.find(evShutdownStep, nil) {
		t.Logf("shutdown step cut short (expected with a stuck client): %v %v", l["step"], l["error"])
	}
	t.Logf("graceful stop with a stuck client took %s", took.Round(time.Millisecond))

	rec.markRestart(time.Now(), true)
	startPusherProc(t, bin, env)
	acked := pub.wait(t)
	err := readUntilError(stuck, rec, 5*time.Second)
	t.Logf("stuck client's connection ended with: %v", err)
	startClients(t, addrs[0], []string{stuckUID}, nil, rec)
	account(t, "graceful-stuck-client", natsURL, acked, rec, 90*time.Second)
	waitSettled(t, natsURL, addrs[0])
}

func TestExternalNATSRestart(t *testing.T) {
	const (
		users    = 50
		messages = 5000
	)
	pusherBin := buildPusher(t)
	natsBin := buildNATSServer(t)
	addrs := freeAddrs(t, 2)
	natsURL := "nats://" + addrs[1]
	store := t.TempDir()
	ns := startNATSServerProc(t, natsBin, addrs[1], store)
	p := startPusherProc(t, pusherBin, pusherEnv(addrs[0], "127.0.0.1:-1", t.TempDir(),
		map[string]string{"PUSHER_NATS_URL": natsURL}))
	readyz := "http://" + addrs[0] + "/readyz"
	readyStatus := func() int {
		status, _, _ := httpGet(readyz)
		return status
	}
	if s := readyStatus(); s != http.StatusOK {
		t.Fatalf("/readyz %d before the fault, want 200", s)
	}

	uids := uidRange("x", users)
	rec := newRecorder()
	startClients(t, addrs[0], uids, nil, rec)
	waitFor(t, 30*time.Second, "every client connected", func() bool { return rec.onlineCount() == users })

	pub := startPublisher(t, natsURL, textMsgs(messages, uids), 120*time.Second)
	pub.waitAcked(t, messages/3, 60*time.Second)
	t.Logf("%d of %d acked when nats-server is killed", pub.acked.Load(), messages)
	ns.kill(t)
	waitFor(t, 10*time.Second, "/readyz 503 while NATS is down", func() bool {
		return readyStatus() == http.StatusServiceUnavailable
	})

	rec.markRestart(time.Now(), false)
	startNATSServerProc(t, natsBin, addrs[1], store)
	waitFor(t, 30*time.Second, "/readyz 200 after NATS is back", func() bool { return readyStatus() == http.StatusOK })
	p.logs.wait(t, 10*time.Second, evNATSUp, nil)

	acked := pub.wait(t)
	account(t, "external-nats-restart", natsURL, acked, rec, 90*time.Second)
	// With an external NATS, routing defaults to cluster: requests whose
	// reply was lost in the outage settle after the 15s delivery timeout.
	waitSettled(t, natsURL, addrs[0])
	if p.exited() {
		t.Fatalf("pusher exited: %v\n%s", p.state, p.stderr)
	}
}

// bigMsg is a 16 KiB payload carrying id.
func bigMsg(id, uid string) pubMsg {
	const size = 16 << 10
	data := make([]byte, size)
	n := copy(data, id+"|")
	for i := n; i < size; i++ {
		data[i] = 'a' + byte(i%26)
	}
	return pubMsg{id: id, subject: wire.PushSubject(uid), data: data}
}

func TestSlowClientDoesNotHurtOthers(t *testing.T) {
	const (
		healthyUsers = 50
		perHealthy   = 200
		slowMessages = 2000
		slowUID      = "slow"
	)
	p := startPusher(t, map[string]string{
		"PUSHER_SEND_QUEUE":    "64",
		"PUSHER_MAX_DELIVER":   "3",
		"PUSHER_BACKOFF":       "50ms",
		"PUSHER_LOG_DELIVERED": "false",
	})
	healthy := uidRange("h", healthyUsers)
	rec := newRecorder()
	startClients(t, p.httpAddr, healthy, nil, rec)
	waitFor(t, 30*time.Second, "healthy clients connected", func() bool { return rec.onlineCount() == healthyUsers })
	slow := p.dial(t, slowUID) // never read until the end

	// Interleaved: per round one message to every healthy user and ten to
	// the slow one.
	var msgs []pubMsg
	isSlow := map[string]bool{}
	for r := range perHealthy {
		for _, uid := range healthy {
			msgs = append(msgs, bigMsg(fmt.Sprintf("%s-%d", uid, r), uid))
		}
		for k := range slowMessages / perHealthy {
			id := fmt.Sprintf("s-%d", r*slowMessages/perHealthy+k)
			isSlow[id] = true
			msgs = append(msgs, bigMsg(id, slowUID))
		}
	}
	pub := startPublisher(t, p.natsURL, msgs, 120*time.Second)
	acked := pub.wait(t)
	pub.close()
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
	f := account(t, "slow-client/healthy", p.natsURL, healthyAcked, rec, 90*time.Second)
	if f.received != len(healthyAcked) {
		t.Errorf("healthy users received %d of %d messages (%d dead-lettered)", f.received, len(healthyAcked), f.dlq)
	}
	if rec.closeCount(wire.CloseSlowClient) > 0 {
		t.Errorf("a healthy client was closed as slow (4002) %d times", rec.closeCount(wire.CloseSlowClient))
	}

	// The slow client is cut with 4002. It never reads, so the close frame
	// may never reach it; the server's ws.closed line names the code.
	p.logs.wait(t, 30*time.Second, "ws.closed", map[string]any{"uid": slowUID, "code": wire.CloseSlowClient})
	if n := metric(t, p.httpAddr, `pusher_messages_total{outcome="retried",reason="queue_full"}`); n <= 0 {
		t.Errorf(`pusher_messages_total{outcome="retried",reason="queue_full"} = %v, want > 0`, n)
	}

	// What the kernel accepted for the slow client before the cut counts as
	// delivered (README: "succeeded means the kernel accepted the frame"):
	// read it now, then reconnect with a reading client for the rest.
	slowRec := newRecorder()
	endErr := readUntilError(slow, slowRec, 5*time.Second)
	// A client that never reads has full socket buffers: the server's
	// close frame cannot reach it, so it may see 1006 after the frames the
	// kernel held. Any other code is wrong.
	var ce *websocket.CloseError
	if errors.As(endErr, &ce) && ce.Code != wire.CloseSlowClient && ce.Code != websocket.CloseAbnormalClosure {
		t.Errorf("slow client's connection closed with %d %q, want 4002 (or 1006 when the close frame could not be written)", ce.Code, ce.Text)
	}
	t.Logf("slow client read %d frames after the cut; its connection ended with: %v", slowRec.frameCount(), endErr)
	startClients(t, p.httpAddr, []string{slowUID}, nil, slowRec)
	account(t, "slow-client/slow-uid", p.natsURL, slowAcked, slowRec, 90*time.Second)
	waitSettled(t, p.natsURL, p.httpAddr)
}

// readUntilError reads c's frames into rec until an error, each read
// bounded by idle, and returns the error.
func readUntilError(c *websocket.Conn, rec *recorder, idle time.Duration) error {
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		_, data, err := c.ReadMessage()
		if err != nil {
			return err
		}
		rec.add(data, time.Time{})
	}
}

func TestHostileConnectBurst(t *testing.T) {
	const (
		goodUsers  = 20
		perGood    = 100
		workers    = 50
		perWorker  = 60 // 3,000 bad requests
		stallConns = 300
		origin     = "https://good.example"
	)
	p := startPusher(t, map[string]string{
		"PUSHER_ALLOWED_ORIGINS": origin,
		"PUSHER_LOG_DELIVERED":   "false",
	})
	good := uidRange("g", goodUsers)
	rec := newRecorder()
	startClients(t, p.httpAddr, good, http.Header{"Origin": {origin}}, rec)
	waitFor(t, 30*time.Second, "good clients connected", func() bool { return rec.onlineCount() == goodUsers })
	baseline := metric(t, p.httpAddr, "go_goroutines")

	// Half-sent request lines that then stall.
	var stalls []net.Conn
	closeStalls := func() {
		for _, c := range stalls {
			_ = c.Close()
		}
		stalls = nil
	}
	t.Cleanup(closeStalls)
	for range stallConns {
		c, err := net.Dial("tcp", p.httpAddr)
		if err != nil {
			t.Fatalf("stall conn: %v", err)
		}
		stalls = append(stalls, c)
		if _, err := c.Write([]byte("GET /w")); err != nil {
			t.Fatalf("stall write: %v", err)
		}
	}

	type kind struct {
		name   string
		want   int
		result string // pusher_connects_total label
	}
	kinds := []kind{
		{"garbage token", http.StatusUnauthorized, "unauthorized"},
		{"bad origin", http.StatusForbidden, "forbidden"},
		{"no upgrade", http.StatusBadRequest, "bad_request"},
		{"token over 8 KiB", http.StatusUnauthorized, "unauthorized"},
		{"no token", http.StatusUnauthorized, "unauthorized"},
	}
	validTok := token(t, "intruder", time.Hour)
	hugeTok := strings.Repeat("a", 9<<10)
	wsURL := "ws://" + p.httpAddr + "/ws"
	attempt := func(k int) (int, error) {
		h := http.Header{}
		switch k {
		case 0:
			h.Set("Authorization", "Bearer not.a.jwt")
		case 1:
			h.Set("Authorization", "Bearer "+validTok)
			h.Set("Origin", "https://evil.example")
		case 2:
			status, _, err := httpGet("http://" + p.httpAddr + "/ws")
			return status, err
		case 3:
			h.Set("Authorization", "Bearer "+hugeTok)
		case 4:
		}
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
		c, resp, err := d.Dial(wsURL, h)
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

	var msgs []pubMsg
	for i := range perGood * goodUsers {
		id := "g-" + strconv.Itoa(i)
		msgs = append(msgs, pubMsg{id: id, subject: wire.PushSubject(good[i%goodUsers]), data: []byte(id)})
	}
	pub := startPublisher(t, p.natsURL, msgs, 60*time.Second)

	var (
		wg       sync.WaitGroup
		sent     [5]atomic.Int64
		wrong    atomic.Int64
		firstBad sync.Once
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				k := (w*perWorker + i) % len(kinds)
				sent[k].Add(1)
				got, err := attempt(k)
				if got != kinds[k].want {
					wrong.Add(1)
					firstBad.Do(func() {
						t.Errorf("%s: got status %d (%v), want %d", kinds[k].name, got, err, kinds[k].want)
					})
				}
			}
		}()
	}
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d of %d bad requests got the wrong answer", n, workers*perWorker)
	}

	acked := pub.wait(t)
	pub.close()
	f := account(t, "hostile-burst", p.natsURL, acked, rec, 60*time.Second)
	if f.received != len(acked) {
		t.Errorf("good clients received %d of %d messages", f.received, len(acked))
	}

	if n := rec.dialCount(); n != goodUsers {
		t.Errorf("good clients connected %d times, want %d: the burst cut some of them off", n, goodUsers)
	}
	wantByResult := map[string]int64{"ok": int64(rec.dialCount())}
	for k, kd := range kinds {
		wantByResult[kd.result] += sent[k].Load()
	}
	for result, want := range wantByResult {
		series := fmt.Sprintf(`pusher_connects_total{result=%q}`, result)
		if got := metric(t, p.httpAddr, series); got != float64(want) {
			t.Errorf("%s = %v, want %d", series, got, want)
		}
	}

	closeStalls()
	var now float64
	deadline := time.Now().Add(20 * time.Second)
	for {
		now = metric(t, p.httpAddr, "go_goroutines")
		if now <= baseline+20 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("go_goroutines %v, baseline %v: the bad connections left goroutines behind", now, baseline)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("go_goroutines baseline %v, after the burst %v", baseline, now)
	if got := metric(t, p.httpAddr, "pusher_connections"); got != goodUsers {
		t.Errorf("pusher_connections = %v, want %d", got, goodUsers)
	}
	waitSettled(t, p.natsURL, p.httpAddr)
}

func TestSlowlorisHandshakeIsCut(t *testing.T) {
	const (
		timeout = 2 * time.Second
		limit   = timeout + 2*time.Second // margin for a loaded machine
	)
	p := startPusher(t, map[string]string{"PUSHER_HANDSHAKE_TIMEOUT": timeout.String()})
	c, err := net.Dial("tcp", p.httpAddr)
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

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// A dead letter's replay carries Nats-Msg-Id "pusher-replay-<DLQ seq>".
// When PUSH_DLQ is deleted and created again (an operator clearing it, a
// rebuilt NATS), its sequences start at 1 again, and a new dead letter's
// replay within PUSH's 2-minute duplicate window is taken by JetStream for
// the earlier one: acked as a duplicate, not stored, and the dead letter is
// then deleted. The message is gone.
func TestReplayAfterDLQRecreatedLosesNothing(t *testing.T) {
	p := startPusher(t, map[string]string{"PUSHER_LOG_DELIVERED": "false"})
	_, js := p.natsClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const uid = "returning"

	// 1. Away: "first" is dead-lettered (PUSH_DLQ seq 1) and replayed on connect.
	publish(t, js, wire.PushSubject(uid), []byte("first"))
	p.logs.wait(t, 10*time.Second, "push.deadlettered", map[string]any{"uid": uid, "reason": "offline"})
	c := p.dial(t, uid)
	if _, got := read(t, c, 5*time.Second); string(got) != "first" {
		t.Fatalf("first visit got %q", got)
	}
	_ = c.Close()
	p.logs.wait(t, 10*time.Second, "ws.closed", map[string]any{"uid": uid})
	waitFor(t, 10*time.Second, "DLQ empty", func() bool {
		return streamMsgs(t, js, wire.DLQStreamName, wire.DLQSubject(uid)) == 0
	})

	// 2. PUSH_DLQ is deleted and created again, as a restart of pusher
	// would create it.
	if err := js.DeleteStream(ctx, wire.DLQStreamName); err != nil {
		t.Fatal(err)
	}
	if _, err := consumer.EnsureTopology(ctx, js, consumer.Topology{}); err != nil {
		t.Fatal(err)
	}

	// 3. Away again: "second" is dead-lettered, as PUSH_DLQ seq 1 again.
	publish(t, js, wire.PushSubject(uid), []byte("second"))
	waitFor(t, 10*time.Second, "second dead letter", func() bool {
		return streamMsgs(t, js, wire.DLQStreamName, wire.DLQSubject(uid)) == 1
	})

	// 4. Back: "second" must arrive.
	c2 := p.dial(t, uid)
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, got, err := c2.ReadMessage()
	if err == nil && string(got) == "second" {
		return
	}
	dlqLeft := streamMsgs(t, js, wire.DLQStreamName, wire.DLQSubject(uid))
	// "first", its replay, "second": a fourth (the replay of "second") was
	// never stored.
	inPush := streamMsgs(t, js, wire.StreamName, wire.PushSubject(uid))
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
	pusherBin := buildPusher(t)
	natsBin := buildNATSServer(t)
	addrs := freeAddrs(t, 2)
	natsURL := "nats://" + addrs[1]
	store := t.TempDir()
	ns := startNATSServerProc(t, natsBin, addrs[1], store)
	p := startPusherProc(t, pusherBin, pusherEnv(addrs[0], "127.0.0.1:-1", t.TempDir(),
		map[string]string{"PUSHER_NATS_URL": natsURL}))

	pub := startPublisher(t, natsURL, textMsgs(messages, []string{uid}), 30*time.Second)
	acked := pub.wait(t)
	pub.close()
	nc, js := natsJS(t, natsURL)
	waitFor(t, 10*time.Second, "the messages dead-lettered", func() bool {
		return streamMsgs(t, js, wire.DLQStreamName, wire.DLQSubject(uid)) == messages
	})
	nc.Close()

	// SIGTERM, not SIGKILL: nats-server then keeps the consumer's acks
	// (the originals' terminations), so nothing is redelivered past the
	// dead letters.
	ns.signal(t, syscall.SIGTERM)
	ns.waitExit(t, 10*time.Second)
	waitFor(t, 10*time.Second, "/readyz 503 while NATS is down", func() bool {
		status, _, _ := httpGet("http://" + addrs[0] + "/readyz")
		return status == http.StatusServiceUnavailable
	})
	rec := newRecorder()
	startClients(t, addrs[0], []string{uid}, nil, rec)
	// Bounded wait: the outage has to outlast the replay this connect set off.
	p.logs.wait(t, 30*time.Second, "dlq.replay_failed", map[string]any{"uid": uid})
	startNATSServerProc(t, natsBin, addrs[1], store)
	p.logs.wait(t, 10*time.Second, evNATSUp, nil)

	deadline := time.Now().Add(10 * time.Second)
	for len(rec.missing(acked)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if missing := rec.missing(acked); len(missing) > 0 {
		_, js := natsJS(t, natsURL)
		left := streamMsgs(t, js, wire.DLQStreamName, wire.DLQSubject(uid))
		if left == uint64(len(missing)) && rec.onlineCount() == 1 && rec.dialCount() == 1 {
			t.Fatalf("a replay that failed while NATS was down was never retried: %d offline dead letters stay in PUSH_DLQ while %s is connected", left, uid)
		}
		t.Fatalf("%d of %d dead letters not replayed 10s after NATS came back; PUSH_DLQ holds %d for %s", len(missing), messages, left, uid)
	}
	account(t, "replay-during-outage", natsURL, acked, rec, 10*time.Second)
}

// stopGracefully sends SIGTERM and checks the contract: exit 0 within
// PUSHER_SHUTDOWN_TIMEOUT (budget) and the pusher.stopped line. It returns
// how long the stop took.
func stopGracefully(t *testing.T, p *proc, budget time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	p.signal(t, syscall.SIGTERM)
	// The budget plus process exit; a hang is caught by waitExit.
	code := p.waitExit(t, budget+5*time.Second)
	took := time.Since(start)
	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0\nstderr:\n%s", code, p.stderr)
	}
	if took > budget+time.Second {
		t.Errorf("graceful stop took %s, PUSHER_SHUTDOWN_TIMEOUT is %s", took, budget)
	}
	// Logs are flushed at exit and the exited process's stdout is fully
	// copied, so the line is there or never will be.
	if len(p.logs.find(evStopped, nil)) == 0 {
		t.Errorf("no %s log line after SIGTERM\nstdout tail:\n%s", evStopped, tail(p.logs.String(), 20))
	}
	return took
}
