package ws

import (
	"io"
	"runtime"
	"testing"

	"go.uber.org/zap"

	"github.com/pusher-io/pusher/hub"
)

// chanReporter hands each report to a channel sized for every message in
// flight, so Report never blocks the write pump.
type chanReporter chan error

func (r chanReporter) Report(_ *hub.Message, err error) { r <- err }

// BenchmarkWrite measures hub.Route plus the WebSocket write of a 128-byte
// text message to one real connection over loopback, with a client
// goroutine draining frames. Each op waits for its report(s), so nothing is
// in flight when the timer stops.
//
// In pong mode an op also waits for the client's pong (gorilla's client
// answers pings as it reads), so it measures a delivery as pusher counts
// it; write mode is the kernel's acceptance.
func BenchmarkWrite(b *testing.B) {
	for _, bm := range []struct {
		name    string
		batch   int // messages routed per op before waiting for their reports
		confirm Confirm
	}{
		{name: "pong/batch=1", batch: 1, confirm: ConfirmPong},
		{name: "pong/batch=64", batch: 64, confirm: ConfirmPong},
		{name: "write/batch=1", batch: 1, confirm: ConfirmWrite},
		{name: "write/batch=64", batch: 64, confirm: ConfirmWrite},
	} {
		b.Run(bm.name, func(b *testing.B) {
			ts := newTestServer(b, setup{Log: zap.NewNop(), WS: Config{SendQueue: bm.batch, Confirm: bm.confirm}})
			c := ts.connect(b, "bench")
			drained := make(chan error, 1)
			go func() {
				for {
					_, r, err := c.NextReader()
					if err == nil {
						_, err = io.Copy(io.Discard, r)
					}
					if err != nil {
						drained <- err
						return
					}
				}
			}()
			// Runs before the server's cleanup (last in, first out).
			b.Cleanup(func() {
				_ = c.Close()
				<-drained
			})

			rep := make(chanReporter, bm.batch)
			msgs := make([]*hub.Message, bm.batch)
			payload := make([]byte, 128)
			for i := range payload {
				payload[i] = 'a' + byte(i%26)
			}
			for i := range msgs {
				msgs[i] = &hub.Message{Data: payload, Reporter: rep}
			}
			b.SetBytes(int64(len(payload) * bm.batch))
			b.ReportAllocs()
			for b.Loop() {
				for _, m := range msgs {
					if n := ts.hub.Route("bench", m); n != 1 {
						b.Fatalf("Route = %d, want 1", n)
					}
				}
				for range msgs {
					if err := <-rep; err != nil {
						b.Fatalf("write reported %v", err)
					}
				}
				// A message may be reused once no connection holds it.
				for _, m := range msgs {
					for m.Pending() != 0 {
						runtime.Gosched()
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*bm.batch), "ns/msg")
		})
	}
}
