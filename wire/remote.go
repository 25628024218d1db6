package wire

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// TrustedProxies are the proxies (load balancers, TLS terminators) whose
// word on who their client is pusher takes: PUSHER_TRUSTED_PROXIES. The
// zero value trusts none, so the client is the TCP peer. Safe for
// concurrent use; it is not changed after parsing.
type TrustedProxies struct {
	prefixes []netip.Prefix
}

// ParseTrustedProxies reads a comma-separated list of IP addresses and
// CIDR prefixes ("10.0.0.0/8, 192.168.1.7, fd00::/8"); empty trusts none.
func ParseTrustedProxies(list string) (TrustedProxies, error) {
	var t TrustedProxies
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(s, "/") {
			pp, err := netip.ParsePrefix(s)
			if err != nil {
				return TrustedProxies{}, fmt.Errorf("trusted proxy %q: %w", s, err)
			}
			p = pp.Masked()
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return TrustedProxies{}, fmt.Errorf("trusted proxy %q: want an IP address or a CIDR prefix", s)
			}
			a = a.Unmap()
			p = netip.PrefixFrom(a, a.BitLen())
		}
		t.prefixes = append(t.prefixes, p)
	}
	return t, nil
}

// trusts reports whether a is a trusted proxy.
func (t TrustedProxies) trusts(a netip.Addr) bool {
	for _, p := range t.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientAddr is the IP address of the client behind a request from
// remoteAddr (http.Request.RemoteAddr, host:port) with headers h, for the
// logs' remote:
//
//   - remoteAddr's IP when that peer is not a trusted proxy: the
//     forwarding headers are then anyone's to forge, and are ignored.
//   - From a trusted proxy, the rightmost address in X-Forwarded-For that
//     is not a trusted proxy; without X-Forwarded-For, the same among the
//     for= of Forwarded (RFC 7239). Each proxy appends the peer it saw, so
//     the hops right of the first untrusted one are vouched for, and what
//     is left of it may be forged. X-Forwarded-For goes first because
//     nearly every proxy sets it; a proxy that sets only Forwarded passes
//     a client's X-Forwarded-For through, so it should strip it.
//   - When that hop is no IP address (Forwarded's "unknown" or an
//     obfuscated name, or garbage), the nearest address vouched for: the
//     last trusted proxy. When every hop is trusted, the leftmost.
//
// The result has no port. remoteAddr is returned as is when it is not
// host:port with an IP (net/http's always is).
func (t TrustedProxies) ClientAddr(remoteAddr string, h http.Header) string {
	peer, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	addr := peer.Addr().Unmap().WithZone("")
	if !t.trusts(addr) {
		return addr.String()
	}
	if xff := h.Values("X-Forwarded-For"); len(xff) > 0 {
		return t.walk(addr, strings.Join(xff, ","), hostAddr).String()
	}
	if fwd := h.Values("Forwarded"); len(fwd) > 0 {
		return t.walk(addr, strings.Join(fwd, ","), forwardedHop).String()
	}
	return addr.String()
}

// walk goes through list's comma-separated hops from the right, starting
// after last, a trusted proxy, and returns the first one not trusted; the
// last trusted one when a hop is not an address (hop says false) or none
// is left. Empty elements are skipped. Splitting at every comma, even
// inside a quoted Forwarded value, is deliberate: a forged, unterminated
// quote left of a proxy's element cannot swallow that element.
func (t TrustedProxies) walk(last netip.Addr, list string, hop func(string) (netip.Addr, bool)) netip.Addr {
	for list != "" {
		elem := list
		if i := strings.LastIndexByte(list, ','); i >= 0 {
			elem, list = list[i+1:], list[:i]
		} else {
			list = ""
		}
		elem = strings.TrimSpace(elem)
		if elem == "" {
			continue
		}
		a, ok := hop(elem)
		if !ok {
			return last
		}
		if !t.trusts(a) {
			return a
		}
		last = a
	}
	return last
}

// forwardedHop reads the for= of one Forwarded element ("for=192.0.2.60;
// proto=https", `for="[2001:db8::1]:4711"`).
func forwardedHop(elem string) (netip.Addr, bool) {
	for elem != "" {
		pair := elem
		if i := strings.IndexByte(elem, ';'); i >= 0 {
			pair, elem = elem[:i], elem[i+1:]
		} else {
			elem = ""
		}
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "for") {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return hostAddr(v)
	}
	return netip.Addr{}, false
}

// hostAddr reads an IP address, alone, with a port, or an IPv6 one in
// brackets.
func hostAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil && a.Is6() {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}
