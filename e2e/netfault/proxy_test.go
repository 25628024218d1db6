package netfault

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// echoServer answers each line with the same line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadBytes('\n')
					if err != nil {
						return
					}
					if _, err := c.Write(line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestSilenceKeepsSocketsOpenAndDropsBytes(t *testing.T) {
	p, err := Listen(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := c.Write([]byte("one\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "one\n" {
		t.Fatalf("before silence: %q %v", line, err)
	}
	if n := len(p.Links()); n != 1 {
		t.Fatalf("%d links", n)
	}
	p.Links()[0].Silence()
	// Writes still succeed (the proxy reads them), nothing comes back, and
	// the connection is neither closed nor reset.
	for range 100 {
		if _, err := c.Write([]byte("lost\n")); err != nil {
			t.Fatalf("write into a silent link: %v", err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = r.ReadString('\n')
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("read on a silent link: %v, want a timeout (no data, no FIN, no RST)", err)
	}
}
