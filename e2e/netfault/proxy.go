// Package netfault is a TCP proxy for tests whose link can go silent in
// both directions while both of its sockets stay open: what a client sees
// when its network vanishes without a FIN or RST (a phone switching from
// Wi-Fi to mobile data, a laptop going to sleep). Each side's writes still
// succeed into its kernel buffers; nothing reaches the other side.
package netfault

import (
	"fmt"
	"net"
	"sync"
)

// Proxy accepts connections on its own loopback address and relays each
// to the target. Every relayed connection is a Link.
type Proxy struct {
	target string
	ln     net.Listener

	mu     sync.Mutex
	links  []*Link
	closed bool
	wg     sync.WaitGroup // the accept loop and every relay goroutine
}

// Listen starts a proxy to target on 127.0.0.1 and a free port. Close
// stops it and every link.
func Listen(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is where clients connect to reach the target through the proxy.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Links returns the connections relayed so far, oldest first.
func (p *Proxy) Links() []*Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Link(nil), p.links...)
}

// Close stops accepting, cuts every link (closing both sockets) and waits
// for the proxy's goroutines. Idempotent.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	links := p.links
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, l := range links {
		l.Cut()
	}
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = client.Close()
			continue
		}
		l := &Link{client: client, server: server}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			l.Cut()
			return
		}
		p.links = append(p.links, l)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); l.relay(client, server) }()
		go func() { defer p.wg.Done(); l.relay(server, client) }()
	}
}

// Link is one relayed connection.
type Link struct {
	client, server net.Conn

	mu     sync.Mutex
	silent bool
}

// Silence stops relaying in both directions. Both sockets stay open and
// keep being read, so each side's writes are accepted by its kernel and
// then dropped here, as on a network that vanished: no FIN, no RST.
func (l *Link) Silence() {
	l.mu.Lock()
	l.silent = true
	l.mu.Unlock()
}

// Cut closes both sockets (a clean end, unlike Silence).
func (l *Link) Cut() {
	_ = l.client.Close()
	_ = l.server.Close()
}

// relay copies from src to dst while the link is not silent; while it is,
// it reads and discards, so src's writes keep succeeding. When src ends,
// dst is closed too, unless the link is silent: then the other side never
// learns, as when a network vanished.
func (l *Link) relay(src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !l.isSilent() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if !l.isSilent() {
				_ = dst.Close()
			}
			return
		}
	}
}

func (l *Link) isSilent() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.silent
}
