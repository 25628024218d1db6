package natsserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pipePair is a bufferedPipe and the bare far end of its net.Pipe, as the
// server holds it.
func pipePair(t *testing.T) (*bufferedPipe, net.Conn) {
	t.Helper()
	far, near := net.Pipe()
	p := newBufferedPipe(near)
	t.Cleanup(func() { _ = p.Close(); _ = far.Close() })
	return p, far
}

// TestBufferedPipeCarriesBytesBothWays: streams of random sizes arrive
// whole and in order, each way, with both sides writing at once.
func TestBufferedPipeCarriesBytesBothWays(t *testing.T) {
	p, far := pipePair(t)
	rng := rand.New(rand.NewPCG(1, 2))
	stream := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	toFar, toNear := stream(3<<20), stream(3<<20)
	writeAll := func(w io.Writer, data []byte, seed uint64) error {
		r := rand.New(rand.NewPCG(seed, seed))
		for len(data) > 0 {
			n := min(len(data), 1+r.IntN(70<<10))
			if _, err := w.Write(data[:n]); err != nil {
				return err
			}
			data = data[n:]
		}
		return nil
	}
	errs := make(chan error, 2)
	go func() { errs <- writeAll(p, toFar, 3) }()
	go func() { errs <- writeAll(far, toNear, 4) }()
	gotFar, gotNear := make([]byte, len(toFar)), make([]byte, len(toNear))
	readErr := make(chan error, 1)
	go func() { _, err := io.ReadFull(far, gotFar); readErr <- err }()
	if _, err := io.ReadFull(p, gotNear); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(gotFar, toFar) || !bytes.Equal(gotNear, toNear) {
		t.Fatal("bytes changed on the way")
	}
}

// TestBufferedPipeDoesNotWaitForTheOtherSide: a write returns while the
// far side reads nothing (up to the queue), and the far side's write
// returns while this side reads nothing: the reason the pipe is buffered.
func TestBufferedPipeDoesNotWaitForTheOtherSide(t *testing.T) {
	p, far := pipePair(t)
	done := make(chan error, 1)
	go func() { _, err := p.Write(make([]byte, 256<<10)); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a write waited for the far side to read")
	}
	go func() { _, err := far.Write(make([]byte, 256<<10)); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the far side's write waited for this side to read")
	}
}

// TestBufferedPipeDeadlines: a read with nothing to read and a write into
// a full queue give up at their deadlines, and the pipe still works.
func TestBufferedPipeDeadlines(t *testing.T) {
	p, far := pipePair(t)
	_ = p.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := p.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	_ = p.SetReadDeadline(time.Time{})
	// Nobody reads the far side: the pump's write hangs, the queue fills.
	_ = p.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	var err error
	for i := 0; i < 2*pipeChunks+2 && err == nil; i++ {
		_, err = p.Write(make([]byte, pipeChunk))
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write into a full queue: %v, want the deadline", err)
	}
	go func() { _, _ = io.Copy(io.Discard, far) }()
	_ = p.SetWriteDeadline(time.Time{})
	if _, err := p.Write([]byte("again")); err != nil {
		t.Fatalf("write after the far side drains: %v", err)
	}
}

// TestBufferedPipeEnds: after Close, reads and writes fail and the pumps
// are gone (goleak); when the far side closes, queued bytes are still
// read, then EOF.
func TestBufferedPipeEnds(t *testing.T) {
	p, far := pipePair(t)
	if _, err := far.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	_ = far.Close()
	got, err := io.ReadAll(p)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v; want the last words, then EOF", got, err)
	}
	q, _ := pipePair(t)
	_ = q.Close()
	if _, err := q.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after Close succeeded")
	}
	if _, err := q.Write([]byte("x")); err == nil {
		t.Fatal("write after Close succeeded")
	}
}

// TestInProcessClient: nats.go over the buffered in-process connection
// publishes, subscribes and uses JetStream against the real server, and
// notices when the server goes away.
func TestInProcessClient(t *testing.T) {
	srv, err := Start(Config{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.MaxReconnects(0),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		srv.Shutdown()
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync("hello")
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 200<<10) // several chunks
	if err := nc.Publish("hello", payload); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || !bytes.Equal(m.Data, payload) {
		t.Fatalf("round trip: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if _, err := js.Publish(ctx, "s.x", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	srv.Shutdown()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not notice the server going away")
	}
}
