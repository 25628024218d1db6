package wire

import (
	"net/http"
	"net/netip"
	"testing"
)

const testProxies = "10.0.0.0/8, 192.168.1.7, fd00::/8"

var clientAddrTests = []struct {
	name      string
	trusted   string
	give      string // RemoteAddr
	xff, fwd  string // X-Forwarded-For, Forwarded; "" for none
	want      string
	extraXFFs []string // more X-Forwarded-For lines after xff
}{
	{name: "no proxies trusted: the peer, headers ignored", give: "203.0.113.9:5555", xff: "1.1.1.1", want: "203.0.113.9"},
	{name: "untrusted peer: headers ignored", trusted: testProxies, give: "203.0.113.9:5555", xff: "1.1.1.1", fwd: "for=2.2.2.2", want: "203.0.113.9"},
	{name: "trusted peer without headers", trusted: testProxies, give: "10.1.2.3:80", want: "10.1.2.3"},
	{name: "one proxy", trusted: testProxies, give: "10.1.2.3:80", xff: "198.51.100.4", want: "198.51.100.4"},
	{name: "forged left part ignored", trusted: testProxies, give: "10.1.2.3:80", xff: "6.6.6.6, 198.51.100.4", want: "198.51.100.4"},
	{name: "proxies chained", trusted: testProxies, give: "10.1.2.3:80", xff: "6.6.6.6, 198.51.100.4, 192.168.1.7, 10.9.9.9", want: "198.51.100.4"},
	{name: "every hop trusted: the leftmost", trusted: testProxies, give: "10.1.2.3:80", xff: "10.0.0.1, 10.0.0.2", want: "10.0.0.1"},
	{name: "several header lines", trusted: testProxies, give: "10.1.2.3:80", xff: "6.6.6.6", extraXFFs: []string{"198.51.100.4"}, want: "198.51.100.4"},
	{name: "hop with a port", trusted: testProxies, give: "10.1.2.3:80", xff: "198.51.100.4:4711", want: "198.51.100.4"},
	{name: "IPv6 hop in brackets", trusted: testProxies, give: "[fd00::1]:80", xff: "[2001:db8::7]", want: "2001:db8::7"},
	{name: "IPv4-mapped peer", trusted: testProxies, give: "[::ffff:10.1.2.3]:80", xff: "198.51.100.4", want: "198.51.100.4"},
	{name: "garbage hop: the last proxy", trusted: testProxies, give: "10.1.2.3:80", xff: "198.51.100.4, not-an-ip, 10.0.0.5", want: "10.0.0.5"},
	{name: "empty elements skipped", trusted: testProxies, give: "10.1.2.3:80", xff: "198.51.100.4,, ", want: "198.51.100.4"},
	{name: "X-Forwarded-For before Forwarded", trusted: testProxies, give: "10.1.2.3:80", xff: "198.51.100.4", fwd: "for=6.6.6.6", want: "198.51.100.4"},
	{name: "Forwarded", trusted: testProxies, give: "10.1.2.3:80", fwd: "for=6.6.6.6, for=198.51.100.4;proto=https", want: "198.51.100.4"},
	{name: "Forwarded quoted IPv6 with port", trusted: testProxies, give: "10.1.2.3:80", fwd: `For="[2001:db8:cafe::17]:4711"`, want: "2001:db8:cafe::17"},
	{name: "Forwarded through two proxies", trusted: testProxies, give: "10.1.2.3:80", fwd: "for=198.51.100.4;by=10.0.0.9, for=10.0.0.9", want: "198.51.100.4"},
	{name: "Forwarded unknown: the last proxy", trusted: testProxies, give: "10.1.2.3:80", fwd: "for=unknown", want: "10.1.2.3"},
	{name: "Forwarded obfuscated: the last proxy", trusted: testProxies, give: "10.1.2.3:80", fwd: "for=_hidden, for=10.0.0.9", want: "10.0.0.9"},
	{name: "Forwarded without for", trusted: testProxies, give: "10.1.2.3:80", fwd: "proto=https", want: "10.1.2.3"},
	{name: "forged open quote cannot swallow the proxy's element", trusted: testProxies, give: "10.1.2.3:80", fwd: `for="6.6.6.6, for=198.51.100.4`, want: "198.51.100.4"},
	{name: "not host:port: as is", trusted: testProxies, give: "pipe", xff: "1.1.1.1", want: "pipe"},
}

func TestClientAddr(t *testing.T) {
	for _, tt := range clientAddrTests {
		t.Run(tt.name, func(t *testing.T) {
			tp, err := ParseTrustedProxies(tt.trusted)
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			if tt.xff != "" {
				h.Add("X-Forwarded-For", tt.xff)
			}
			for _, v := range tt.extraXFFs {
				h.Add("X-Forwarded-For", v)
			}
			if tt.fwd != "" {
				h.Add("Forwarded", tt.fwd)
			}
			if got := tp.ClientAddr(tt.give, h); got != tt.want {
				t.Fatalf("ClientAddr(%q, %v) = %q, want %q", tt.give, h, got, tt.want)
			}
		})
	}
}

func TestParseTrustedProxies(t *testing.T) {
	tests := []struct {
		give string
		ok   bool
	}{
		{"", true},
		{" 10.0.0.0/8 ,, 192.168.1.7, fd00::/8, ::1 ", true},
		{"10.0.0.1/8", true}, // masked to 10.0.0.0/8
		{"10.0.0.0/33", false},
		{"example.com", false},
		{"10.0.0.1:80", false},
		{"fe80::1%eth0", false},
	}
	for _, tt := range tests {
		if _, err := ParseTrustedProxies(tt.give); (err == nil) != tt.ok {
			t.Errorf("ParseTrustedProxies(%q): %v, want ok=%v", tt.give, err, tt.ok)
		}
	}
}

// FuzzClientAddr: no input panics; an untrusted peer's headers are never
// believed; from an IP peer the answer is always an IP address.
func FuzzClientAddr(f *testing.F) {
	for _, tt := range clientAddrTests {
		f.Add(tt.trusted, tt.give, tt.xff, tt.fwd)
	}
	f.Fuzz(func(t *testing.T, trusted, remote, xff, fwd string) {
		tp, err := ParseTrustedProxies(trusted)
		if err != nil {
			return
		}
		h := http.Header{}
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		if fwd != "" {
			h.Set("Forwarded", fwd)
		}
		got := tp.ClientAddr(remote, h)
		peer, err := netip.ParseAddrPort(remote)
		if err != nil {
			if got != remote {
				t.Fatalf("ClientAddr(%q) = %q, want it as is", remote, got)
			}
			return
		}
		addr := peer.Addr().Unmap().WithZone("")
		if !tp.trusts(addr) && got != addr.String() {
			t.Fatalf("untrusted peer %s: ClientAddr = %q, believed the headers %v", addr, got, h)
		}
		if _, err := netip.ParseAddr(got); err != nil {
			t.Fatalf("ClientAddr(%q, %v) = %q, not an IP address", remote, h, got)
		}
	})
}
