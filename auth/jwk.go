package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// maxRSABits bounds the RSA keys taken from a JWKS document: a provider
// (or whoever answers in its place) must not make every verification
// arbitrarily slow. 8192 bits is twice what any provider publishes.
const maxRSABits = 8192

// maxLoggedKIDBytes caps a kid quoted in logs and errors: kids come from
// outside (the document, a token's header).
const maxLoggedKIDBytes = 64

// errNoUsableKeys is a JWKS document without a single key this package
// can use; the key set in use is kept (see JWKS).
var errNoUsableKeys = errors.New("no usable signing key")

// jwk is one usable verification key of a JWKS document.
type jwk struct {
	alg string           // the one algorithm it verifies: RS256, ES256 or EdDSA
	key crypto.PublicKey // *rsa.PublicKey, *ecdsa.PublicKey (P-256) or ed25519.PublicKey
}

// keySet is the usable keys of one JWKS document. It is immutable once
// parsed, so readers share it without locks.
type keySet struct {
	byKID map[string][]jwk // a kid may name keys of several algorithms
	kids  []string         // sorted, for logs
}

// lookup returns the key named kid for alg, or nil.
func (s *keySet) lookup(kid, alg string) crypto.PublicKey {
	if s == nil {
		return nil
	}
	for _, k := range s.byKID[kid] {
		if k.alg == alg {
			return k.key
		}
	}
	return nil
}

// has reports whether any key is named kid.
func (s *keySet) has(kid string) bool { return s != nil && len(s.byKID[kid]) > 0 }

// len is the number of usable keys.
func (s *keySet) len() int {
	if s == nil {
		return 0
	}
	n := 0
	for _, ks := range s.byKID {
		n += len(ks)
	}
	return n
}

// parseJWKS reads a JWKS document (RFC 7517 section 5) and returns its
// usable keys, and one "kid: reason" line for each key it ignored. A key
// is usable when it has a kid, is meant for signatures (use "sig" or
// absent; key_ops, if present, includes "verify"), carries no private
// material, and is an RSA key of 2048 to 8192 bits, a P-256 EC key or an
// Ed25519 OKP key whose alg, if set, is the one algorithm pinned to its
// type (RS256, ES256, EdDSA). Anything else (symmetric "oct" keys, other
// curves and algorithms, malformed members) is ignored, never fatal.
// Member names match exactly, as RFC 7517 defines them. The document
// itself must be a JSON object with a "keys" array, or it is an error.
func parseJWKS(data []byte) (*keySet, []string, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("parse JWKS: %w", err)
	}
	rawKeys, ok := doc["keys"]
	if !ok {
		return nil, nil, errors.New("parse JWKS: no \"keys\" member")
	}
	var keys []json.RawMessage
	if err := json.Unmarshal(rawKeys, &keys); err != nil {
		return nil, nil, fmt.Errorf("parse JWKS: \"keys\" is not an array: %w", err)
	}
	set := &keySet{byKID: make(map[string][]jwk, len(keys))}
	var ignored []string
	for i, raw := range keys {
		kid, k, err := parseJWK(raw)
		if err != nil {
			name := fmt.Sprintf("#%d", i)
			if kid != "" {
				name = quoteKID(kid)
			}
			ignored = append(ignored, name+": "+err.Error())
			continue
		}
		if set.lookup(kid, k.alg) != nil {
			ignored = append(ignored, quoteKID(kid)+": duplicate kid for "+k.alg)
			continue
		}
		if !set.has(kid) {
			set.kids = append(set.kids, kid)
		}
		set.byKID[kid] = append(set.byKID[kid], k)
	}
	slices.Sort(set.kids)
	return set, ignored, nil
}

// parseJWK reads one key of the document: its kid (as far as it could be
// read, for naming it), and the key or why it is ignored.
func parseJWK(raw json.RawMessage) (string, jwk, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", jwk{}, errors.New("not a JSON object")
	}
	str := func(name string) (string, error) {
		v, ok := m[name]
		if !ok {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", fmt.Errorf("member %q is not a string", name)
		}
		return s, nil
	}
	kid, err := str("kid")
	if err != nil {
		return "", jwk{}, err
	}
	if kid == "" {
		return "", jwk{}, errors.New("no kid")
	}
	use, err := str("use")
	if err != nil {
		return kid, jwk{}, err
	}
	if use != "" && use != "sig" {
		return kid, jwk{}, fmt.Errorf("use %q is not sig", use)
	}
	if ops, ok := m["key_ops"]; ok {
		var list []string
		if err := json.Unmarshal(ops, &list); err != nil {
			return kid, jwk{}, errors.New("member \"key_ops\" is not an array of strings")
		}
		if !slices.Contains(list, "verify") {
			return kid, jwk{}, errors.New("key_ops lacks verify")
		}
	}
	for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
		if _, ok := m[private]; ok {
			return kid, jwk{}, fmt.Errorf("holds private or symmetric key material (%q)", private)
		}
	}
	alg, err := str("alg")
	if err != nil {
		return kid, jwk{}, err
	}
	kty, err := str("kty")
	if err != nil {
		return kid, jwk{}, err
	}
	var k jwk
	switch kty {
	case "RSA":
		k, err = parseRSAJWK(str)
	case "EC":
		k, err = parseECJWK(str)
	case "OKP":
		k, err = parseOKPJWK(str)
	default:
		return kid, jwk{}, fmt.Errorf("kty %q is not supported", kty)
	}
	if err != nil {
		return kid, jwk{}, err
	}
	if alg != "" && alg != k.alg {
		return kid, jwk{}, fmt.Errorf("alg %q is not %s, the one algorithm allowed for kty %s", alg, k.alg, kty)
	}
	return kid, k, nil
}

func parseRSAJWK(str func(string) (string, error)) (jwk, error) {
	n, err := b64Member(str, "n")
	if err != nil {
		return jwk{}, err
	}
	e, err := b64Member(str, "e")
	if err != nil {
		return jwk{}, err
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n)}
	switch bits := pub.N.BitLen(); {
	case bits < minRSABits:
		return jwk{}, fmt.Errorf("RSA key has %d bits, need at least %d", bits, minRSABits)
	case bits > maxRSABits:
		return jwk{}, fmt.Errorf("RSA key has %d bits, at most %d are accepted", bits, maxRSABits)
	}
	// Exponents are small in practice (65537); anything over 31 bits,
	// even or below 3 is a broken key.
	ev := new(big.Int).SetBytes(e)
	if ev.BitLen() > 31 || ev.Int64() < 3 || ev.Bit(0) == 0 {
		return jwk{}, errors.New("RSA exponent is out of range")
	}
	pub.E = int(ev.Int64())
	return jwk{alg: jwt.SigningMethodRS256.Alg(), key: pub}, nil
}

func parseECJWK(str func(string) (string, error)) (jwk, error) {
	crv, err := str("crv")
	if err != nil {
		return jwk{}, err
	}
	if crv != "P-256" {
		return jwk{}, fmt.Errorf("EC curve %q is not P-256", crv)
	}
	x, err := b64Member(str, "x")
	if err != nil {
		return jwk{}, err
	}
	y, err := b64Member(str, "y")
	if err != nil {
		return jwk{}, err
	}
	// RFC 7518 section 6.2.1.2: each coordinate is the full 32 bytes.
	if len(x) != 32 || len(y) != 32 {
		return jwk{}, errors.New("P-256 coordinates are not 32 bytes each")
	}
	point := append(append([]byte{4}, x...), y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return jwk{}, errors.New("EC point is not on P-256")
	}
	return jwk{alg: jwt.SigningMethodES256.Alg(), key: pub}, nil
}

func parseOKPJWK(str func(string) (string, error)) (jwk, error) {
	crv, err := str("crv")
	if err != nil {
		return jwk{}, err
	}
	if crv != "Ed25519" {
		return jwk{}, fmt.Errorf("OKP curve %q is not Ed25519", crv)
	}
	x, err := b64Member(str, "x")
	if err != nil {
		return jwk{}, err
	}
	if len(x) != ed25519.PublicKeySize {
		return jwk{}, errors.New("Ed25519 key is not 32 bytes")
	}
	return jwk{alg: jwt.SigningMethodEdDSA.Alg(), key: ed25519.PublicKey(x)}, nil
}

// b64Member decodes a required base64url member (RFC 7518: unpadded;
// padding is tolerated).
func b64Member(str func(string) (string, error), name string) ([]byte, error) {
	s, err := str(name)
	if err != nil {
		return nil, err
	}
	if s == "" {
		return nil, fmt.Errorf("member %q is missing", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("member %q is not base64url", name)
	}
	return b, nil
}

// quoteKID quotes a kid from outside for a log line or error, cut to
// maxLoggedKIDBytes.
func quoteKID(kid string) string {
	if len(kid) > maxLoggedKIDBytes {
		return fmt.Sprintf("%q…", kid[:maxLoggedKIDBytes])
	}
	return fmt.Sprintf("%q", kid)
}
