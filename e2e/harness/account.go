package harness

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pusher-io/pusher/consumer"
	"github.com/pusher-io/pusher/wire"
)

// DeadLetter is what the accounting needs of one dead letter.
type DeadLetter struct {
	UID, Reason string
}

// DLQ returns the dead letters in PUSH_DLQ by payload id (MsgKey).
func DLQ(ctx context.Context, js jetstream.JetStream) (map[string]DeadLetter, error) {
	out := map[string]DeadLetter{}
	err := consumer.NewDLQ(js).Each(ctx, "", func(dl consumer.DeadLetter, _ error) error {
		out[MsgKey(dl.Data)] = DeadLetter{UID: dl.UID, Reason: dl.Reason}
		return nil
	})
	return out, err
}

// ScanDLQ is DLQ in short tries: a JetStream request sent while a leader is
// being elected gets no answer, and one long try would wait out the whole
// election.
func ScanDLQ(js jetstream.JetStream) (map[string]DeadLetter, error) {
	var err error
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var dlq map[string]DeadLetter
		dlq, err = DLQ(ctx, js)
		cancel()
		if err == nil {
			return dlq, nil
		}
	}
	return nil, fmt.Errorf("read %s: %w", wire.DLQStreamName, err)
}

// Figures is the outcome of one run's accounting.
type Figures struct {
	Published, Received, DLQ, Lost, Duplicates int
	// Stranded are dead letters with reason offline of users who are
	// connected: replay-on-connect should have delivered them.
	Stranded int
}

// Account waits (up to timeout) until every acked id was received by a
// client of rec or sits in PUSH_DLQ (and not as an offline dead letter of
// a user who is connected, which replay-on-connect must deliver), then
// logs one FIGURES line and fails t if any acked message is lost or
// stranded. NATS is reached at natsURL (comma-separated for a cluster).
func Account(t testing.TB, name, natsURL string, acked map[string]struct{}, rec *Recorder, timeout time.Duration) Figures {
	t.Helper()
	nc, js := Connect(t, natsURL)
	defer nc.Close()
	// settled: a dead letter that is not waiting for a replay.
	settled := func(dl DeadLetter, ok bool) bool {
		return ok && (dl.Reason != wire.ReasonOffline || !rec.IsOnline(dl.UID))
	}
	// Wait, scanning PUSH_DLQ at most once a second; a timeout is reported
	// below, by what is lost.
	var lastScan time.Time
	_ = Poll(context.Background(), timeout, "every acked message accounted for", func() error {
		missing := rec.Missing(acked)
		if len(missing) == 0 || time.Since(lastScan) < time.Second {
			return unaccounted(len(missing))
		}
		lastScan = time.Now()
		dlq, err := ScanDLQ(js)
		if err != nil {
			return err
		}
		n := 0
		for _, id := range missing {
			if dl, ok := dlq[id]; !settled(dl, ok) {
				n++
			}
		}
		return unaccounted(n)
	})
	dlq, err := ScanDLQ(js)
	if err != nil {
		t.Fatal(err)
	}
	f := Figures{Published: len(acked)}
	var lost, stranded []string
	for _, id := range rec.Missing(acked) {
		dl, ok := dlq[id]
		switch {
		case !ok:
			lost = append(lost, id)
		case !settled(dl, ok):
			stranded = append(stranded, id)
			f.DLQ++
		default:
			f.DLQ++
		}
	}
	f.Lost, f.Stranded = len(lost), len(stranded)
	f.Received = f.Published - f.Lost - f.DLQ
	f.Duplicates = rec.Duplicates()
	t.Logf("FIGURES %s: published=%d received=%d dlq=%d lost=%d duplicates=%d recovery=%s",
		name, f.Published, f.Received, f.DLQ, f.Lost, f.Duplicates, rec.Recovery())
	reportIDs(t, lost, "acked messages neither received nor in PUSH_DLQ after "+timeout.String())
	reportIDs(t, stranded, "offline dead letters of connected users not replayed after "+timeout.String())
	return f
}

// unaccounted is nil for 0, else an error saying how many.
func unaccounted(n int) error {
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%d neither received nor settled in PUSH_DLQ", n)
}

// reportIDs fails t with how many ids there are and a few of them.
func reportIDs(t testing.TB, ids []string, what string) {
	t.Helper()
	if len(ids) == 0 {
		return
	}
	sort.Strings(ids)
	t.Errorf("%d %s, e.g. %v", len(ids), what, ids[:min(10, len(ids))])
}

// WaitSettled waits until consumer pusher has nothing pending or awaiting
// ack and no pusher at httpAddrs holds a message in flight: every delivery
// was acked, nacked to completion or dead-lettered. It fails t (without
// stopping it) after timeout, and logs how the figures went down when
// settling took more than 5s.
func WaitSettled(t testing.TB, natsURL string, httpAddrs []string, timeout time.Duration) {
	t.Helper()
	nc, js := Connect(t, natsURL)
	defer nc.Close()
	start := time.Now()
	var timeline []string
	last := ""
	err := Poll(context.Background(), timeout, "consumer "+wire.DurableName+" settled", func() error {
		state, err := settleState(js, httpAddrs)
		if state != last && state != "" {
			timeline = append(timeline, fmt.Sprintf("+%s %s", time.Since(start).Round(100*time.Millisecond), state))
			last = state
		}
		return err
	})
	if err != nil {
		t.Error(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Logf("settling took %s: %s", took.Round(time.Millisecond), strings.Join(timeline, "; "))
	}
}

// settleState describes the consumer's and the pushers' open deliveries,
// with a nil error once there are none.
func settleState(js jetstream.JetStream, httpAddrs []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, wire.StreamName, wire.DurableName)
	if err != nil {
		return "", err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return "", err
	}
	inflight := map[string]float64{}
	total := 0.0
	for _, a := range httpAddrs {
		m, err := Scrape(ctx, a)
		if err != nil {
			return "", err
		}
		inflight[a] = m.Sum("pusher_inflight_messages")
		total += inflight[a]
	}
	state := fmt.Sprintf("pending=%d ack_pending=%d inflight=%v", info.NumPending, info.NumAckPending, total)
	if info.NumPending != 0 || info.NumAckPending != 0 || total != 0 {
		return state, fmt.Errorf("consumer num_pending=%d num_ack_pending=%d redelivered=%d; pusher_inflight_messages=%v",
			info.NumPending, info.NumAckPending, info.NumRedelivered, inflight)
	}
	return state, nil
}
