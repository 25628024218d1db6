package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// minRSABits is the smallest RSA modulus accepted (NIST SP 800-131A, RFC 7518 §3.3).
const minRSABits = 2048

// Config tunes a Verifier. Zero values mean the documented default; at least
// one of HMACSecret, PublicKeyPEM and JWKS must be set. With several set,
// each verifies only its own algorithm family: HS256 tokens only the secret;
// RS256, ES256 and EdDSA tokens the JWKS key their kid names (for the token's
// alg), else the PEM key if it is of that algorithm. A JWKS key is only ever
// chosen by kid, so a token without kid is for the PEM key.
type Config struct {
	// HMACSecret enables HS256 when non-empty. NewVerifier copies it.
	HMACSecret []byte
	// PublicKeyPEM enables exactly one of RS256 (RSA key of at least 2048
	// bits), ES256 (P-256 ECDSA key) or EdDSA (Ed25519 key), chosen by the
	// key's type. The first PEM block is used and must be a "PUBLIC KEY"
	// (PKIX), an "RSA PUBLIC KEY" (PKCS #1) or a "CERTIFICATE" (only its
	// public key is used; its validity and chain are not checked).
	PublicKeyPEM []byte
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// Audience, when set, must be one of the token's aud values.
	Audience string
	// UIDClaim names the claim holding the uid; default DefaultUIDClaim
	// ("uid"). When that claim is absent or an empty string, "sub" is used.
	UIDClaim string
	// Leeway is the clock skew allowed on exp, nbf and iat; default
	// DefaultLeeway (5s). Negative is an error.
	Leeway time.Duration
	// MaxTokenBytes is the longest token accepted; default
	// DefaultMaxTokenBytes (8192). Negative is an error.
	MaxTokenBytes int
	// Now is the clock; default time.Now. Tests inject a fixed clock.
	Now func() time.Time
	// JWKS, when set, supplies RS256, ES256 and EdDSA keys chosen by the
	// token's kid. The Verifier only reads it (and asks it for
	// rate-limited refetches); whoever built it starts and closes it.
	JWKS *JWKS
}

// Verifier verifies JWTs against the keys, algorithms and claim rules of one
// Config. It is immutable after NewVerifier (the JWKS's key set changes
// underneath it) and safe for concurrent use.
type Verifier struct {
	secret   []byte           // HS256 key; nil when HS256 is disabled
	pubKey   crypto.PublicKey // nil when no public key is configured
	jwks     *JWKS            // nil when no JWKS is configured
	uidClaim string
	maxBytes int
	parser   *jwt.Parser // read-only after NewVerifier, so shared by all callers
}

// Claims is what a verified token says about its holder.
type Claims struct {
	// UID is the user id from the configured uid claim or, failing that, sub.
	// It is non-empty; its syntax is not checked here.
	UID string
	// ExpiresAt is the token's exp, or the zero time when it has none.
	ExpiresAt time.Time
}

// NewVerifier validates cfg, applies defaults and returns a Verifier. It fails
// when no key is given, the PEM does not hold a supported public key (RSA
// under 2048 bits, ECDSA on a curve other than P-256 and other key types are
// refused), or Leeway or MaxTokenBytes is negative.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("new verifier: negative leeway %s", cfg.Leeway)
	}
	if cfg.MaxTokenBytes < 0 {
		return nil, fmt.Errorf("new verifier: negative max token bytes %d", cfg.MaxTokenBytes)
	}
	if len(cfg.HMACSecret) == 0 && len(cfg.PublicKeyPEM) == 0 && cfg.JWKS == nil {
		return nil, errors.New("new verifier: neither an HMAC secret nor a public key nor a JWKS is configured")
	}
	v := &Verifier{
		uidClaim: cfg.UIDClaim,
		maxBytes: cfg.MaxTokenBytes,
		jwks:     cfg.JWKS,
	}
	if v.uidClaim == "" {
		v.uidClaim = DefaultUIDClaim
	}
	if v.maxBytes == 0 {
		v.maxBytes = DefaultMaxTokenBytes
	}
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}

	var methods []string
	if len(cfg.HMACSecret) > 0 {
		v.secret = append([]byte(nil), cfg.HMACSecret...)
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if len(cfg.PublicKeyPEM) > 0 {
		key, alg, err := parsePublicKey(cfg.PublicKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("new verifier: %w", err)
		}
		v.pubKey = key
		methods = append(methods, alg)
	}
	if cfg.JWKS != nil {
		for _, alg := range []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg()} {
			if !slices.Contains(methods, alg) {
				methods = append(methods, alg)
			}
		}
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(now),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// MaxTokenBytes returns the longest token Verify accepts, for passing to
// TokenFromRequest.
func (v *Verifier) MaxTokenBytes() int { return v.maxBytes }

// Verify checks token's signature, algorithm and claims and returns its uid
// and expiry. Errors wrap exactly one of ErrNoToken (empty token),
// ErrTokenTooLarge, ErrInvalidToken, ErrExpired, ErrNotYetValid or
// ErrMissingUID, with the jwt library's error as detail; a token failing
// several claim checks is ErrInvalidToken unless all failures are about time.
// A token whose kid the JWKS does not know is ErrUnknownKey (an
// ErrInvalidToken).
//
// Verify may block: for an RS256, ES256 or EdDSA token whose kid the JWKS
// does not know, it joins the JWKS fetch running, or starts one on the
// calling goroutine if no unknown-kid fetch started in the last
// JWKSConfig.UnknownKIDInterval, and waits for it: at most
// JWKSConfig.Timeout (10s by default). Otherwise it never blocks or does
// I/O. Call it from a request's goroutine; where blocking is not allowed (a
// loop serving many connections), use VerifyCached.
func (v *Verifier) Verify(token string) (Claims, error) { return v.verify(token, true) }

// VerifyCached is Verify without any fetch or wait: it never blocks. For a
// token whose kid the cached JWKS key set does not know it returns
// ErrUnknownKey at once and hands the kid to the JWKS's background
// refresher for a rate-limited refetch, so that a later call may succeed.
func (v *Verifier) VerifyCached(token string) (Claims, error) { return v.verify(token, false) }

func (v *Verifier) verify(token string, fetch bool) (Claims, error) {
	if token == "" {
		return Claims{}, ErrNoToken
	}
	if len(token) > v.maxBytes {
		return Claims{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTokenTooLarge, len(token), v.maxBytes)
	}
	// unknown is the kid the JWKS did not know, set by the keyfunc.
	var unknown string
	keyFunc := func(t *jwt.Token) (any, error) { return v.key(t, &unknown) }
	mc := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(token, mc, keyFunc)
	if err != nil && unknown != "" && keyFailed(err) {
		if !fetch {
			v.jwks.nudge(unknown)
		} else if v.jwks.refetch(unknown) {
			unknown = ""
			mc = jwt.MapClaims{}
			_, err = v.parser.ParseWithClaims(token, mc, keyFunc)
		}
	}
	if err != nil {
		s := sentinelFor(err)
		if s == ErrInvalidToken && unknown != "" && keyFailed(err) {
			s = ErrUnknownKey
		}
		return Claims{}, fmt.Errorf("%w: %w", s, err)
	}
	uid, err := v.uid(mc)
	if err != nil {
		return Claims{}, err
	}
	c := Claims{UID: uid}
	// The validator already read exp successfully, so this cannot fail.
	if exp, _ := mc.GetExpirationTime(); exp != nil {
		c.ExpiresAt = exp.Time
	}
	return c, nil
}

// keyFailed reports whether a parse failed for want of a key or on the
// signature, the failures a fresher key set could cure.
func keyFailed(err error) bool {
	return errors.Is(err, jwt.ErrTokenUnverifiable) || errors.Is(err, jwt.ErrTokenSignatureInvalid)
}

// errWrongKeyFamily is returned by the keyfunc when the token's algorithm is
// allowed but belongs to the other configured key family.
var errWrongKeyFamily = errors.New("signing method does not match the configured key")

// key is the jwt.Keyfunc. WithValidMethods already pinned the algorithm
// names; this also checks the method's type, so a key is only ever handed to
// the implementation of its own family (never a public key to HMAC). For an
// asymmetric token with a kid it tries the JWKS first (the key of that kid
// and of exactly the token's alg), recording in *unknown a kid the JWKS does
// not name for that alg; then the PEM key.
func (v *Verifier) key(t *jwt.Token, unknown *string) (any, error) {
	alg := t.Method.Alg()
	var want func(crypto.PublicKey) bool
	switch t.Method.(type) {
	case *jwt.SigningMethodHMAC:
		if v.secret != nil && alg == jwt.SigningMethodHS256.Alg() {
			return v.secret, nil
		}
		return nil, errWrongKeyFamily
	case *jwt.SigningMethodRSA:
		if alg != jwt.SigningMethodRS256.Alg() {
			return nil, errWrongKeyFamily
		}
		want = func(k crypto.PublicKey) bool { _, ok := k.(*rsa.PublicKey); return ok }
	case *jwt.SigningMethodECDSA:
		if alg != jwt.SigningMethodES256.Alg() {
			return nil, errWrongKeyFamily
		}
		want = func(k crypto.PublicKey) bool { _, ok := k.(*ecdsa.PublicKey); return ok }
	case *jwt.SigningMethodEd25519:
		if alg != jwt.SigningMethodEdDSA.Alg() {
			return nil, errWrongKeyFamily
		}
		want = func(k crypto.PublicKey) bool { _, ok := k.(ed25519.PublicKey); return ok }
	default:
		return nil, errWrongKeyFamily
	}
	if v.jwks != nil {
		if kid, _ := t.Header["kid"].(string); kid != "" {
			// The key set pins each key to one alg, of its own type.
			if k := v.jwks.lookup(kid, alg); k != nil && want(k) {
				return k, nil
			}
			*unknown = kid
		}
	}
	if v.pubKey != nil && want(v.pubKey) {
		return v.pubKey, nil
	}
	if *unknown != "" {
		return nil, fmt.Errorf("no JWKS key with kid %s for %s", quoteKID(*unknown), alg)
	}
	return nil, errWrongKeyFamily
}

// uid returns the configured uid claim, or sub when that claim is absent or
// empty. A present uid claim that is not a string is refused, not skipped.
func (v *Verifier) uid(mc jwt.MapClaims) (string, error) {
	if raw, ok := mc[v.uidClaim]; ok {
		s, ok := raw.(string)
		if !ok {
			return "", fmt.Errorf("%w: claim %q is not a string", ErrMissingUID, v.uidClaim)
		}
		if s != "" {
			return s, nil
		}
	}
	if raw, ok := mc["sub"]; ok {
		s, ok := raw.(string)
		if !ok {
			return "", fmt.Errorf("%w: claim \"sub\" is not a string", ErrMissingUID)
		}
		if s != "" {
			return s, nil
		}
	}
	return "", fmt.Errorf("%w: neither %q nor \"sub\" is set", ErrMissingUID, v.uidClaim)
}

// sentinelFor maps a jwt parse error to this package's sentinel. Claim
// failures other than time (issuer, audience, malformed claim types) take
// precedence over expiry, so an expired token with a wrong issuer is reported
// as invalid rather than merely expired.
func sentinelFor(err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenInvalidIssuer),
		errors.Is(err, jwt.ErrTokenInvalidAudience),
		errors.Is(err, jwt.ErrTokenRequiredClaimMissing),
		errors.Is(err, jwt.ErrInvalidType),
		!errors.Is(err, jwt.ErrTokenInvalidClaims):
		return ErrInvalidToken
	case errors.Is(err, jwt.ErrTokenExpired):
		return ErrExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return ErrNotYetValid
	default:
		return ErrInvalidToken
	}
}

// parsePublicKey decodes the first PEM block of data and returns its public
// key and the one algorithm that key enables.
func parsePublicKey(data []byte) (crypto.PublicKey, string, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("public key: no PEM block found")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		cert, err = x509.ParseCertificate(block.Bytes)
		if err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, "", fmt.Errorf("public key: PEM block type %q is not a public key or certificate", block.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("public key: parse %s: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < minRSABits {
			return nil, "", fmt.Errorf("public key: RSA key has %d bits, need at least %d", bits, minRSABits)
		}
		return k, jwt.SigningMethodRS256.Alg(), nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, "", fmt.Errorf("public key: ECDSA curve %s is not P-256", k.Curve.Params().Name)
		}
		return k, jwt.SigningMethodES256.Alg(), nil
	case ed25519.PublicKey:
		return k, jwt.SigningMethodEdDSA.Alg(), nil
	default:
		return nil, "", fmt.Errorf("public key: unsupported key type %T", key)
	}
}
