package server_test

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPipeline pushes b.N 128-byte messages through the whole server
// in this process (JetStream publish, pull, route, WebSocket write, ack)
// to 100 connections, closed loop with a window, and reports msgs/s. The
// client shares the process, so use it for profiles and relative changes;
// `go run ./bench` measures the server alone.
func BenchmarkPipeline(b *testing.B) {
	n := startNode(b, testConfig(b))
	_, js := n.natsClient(b)
	const conns, window = 100, 2000
	var received atomic.Int64
	var wg sync.WaitGroup
	clients := make([]*client, conns)
	for i := range conns {
		clients[i] = n.dial(b, "bench"+strconv.Itoa(i))
		wg.Add(1)
		go func(c *client) {
			defer wg.Done()
			for {
				if _, _, err := c.Next(time.Minute); err != nil {
					return
				}
				received.Add(1)
			}
		}(clients[i])
	}
	payload := make([]byte, 128)
	subjects := make([]string, conns)
	for i := range subjects {
		subjects[i] = "push.bench" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for int64(i)-received.Load() >= window {
			time.Sleep(50 * time.Microsecond)
		}
		if _, err := js.PublishAsync(subjects[i%conns], payload); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for received.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("received %d of %d", received.Load(), b.N)
		}
		time.Sleep(100 * time.Microsecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	b.StopTimer()
	for _, c := range clients {
		c.Close()
	}
	wg.Wait()
}
