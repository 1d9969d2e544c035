package arc

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"smtpd/internal/dns"
)

// The signing algorithms (RFC 6376 §3.3, RFC 8463 §3). rsa-sha1 is not
// among them: RFC 8301 §3.1 forbids it for signing and verifying.
const (
	algRSA     = "rsa-sha256"
	algEd25519 = "ed25519-sha256"
)

// minRSABits and maxRSABits bound the RSA keys verified. RFC 8301 §3.2:
// "Verifiers MUST be able to validate signatures with keys ranging from
// 1024 bits to 4096 bits"; smaller keys are refused, and larger ones
// than 8192 bits too, which would only cost us time.
const (
	minRSABits = 1024
	maxRSABits = 8192
)

// publicKey is a key from a DKIM key record (RFC 6376 §3.6.1).
type publicKey struct {
	rsa *rsa.PublicKey
	ed  ed25519.PublicKey
}

// verify checks sig, made with algorithm alg, over the SHA-256 digest
// (RFC 6376 §3.3; RFC 8463 §3 signs the digest with PureEdDSA).
func (k *publicKey) verify(alg string, digest, sig []byte) error {
	switch {
	case alg == algRSA && k.rsa != nil:
		return rsa.VerifyPKCS1v15(k.rsa, crypto.SHA256, digest, sig)
	case alg == algEd25519 && k.ed != nil:
		if !ed25519.Verify(k.ed, digest, sig) {
			return errors.New("ed25519: verification error")
		}
		return nil
	}
	return fmt.Errorf("key type does not fit a=%s", alg)
}

// keyLookup fetches and parses keys, each once per validation.
type keyLookup struct {
	r     Resolver
	cache map[string]keyAnswer
}

type keyAnswer struct {
	key *publicKey
	err error
}

// get returns the key of selector at domain, from the TXT record at
// selector._domainkey.domain (RFC 6376 §3.6.2.1). A name that does not
// exist, a record that is not a usable key, or several records (§3.6.2.2
// leaves their meaning undefined) are permanent failures; any other DNS
// error is temporary and wraps ErrTemporary.
func (kl *keyLookup) get(ctx context.Context, selector, domain string) (*publicKey, error) {
	name := selector + "._domainkey." + domain
	if a, ok := kl.cache[name]; ok {
		return a.key, a.err
	}
	var key *publicKey
	txts, err := kl.r.TXT(ctx, name)
	switch {
	case errors.Is(err, dns.ErrNoSuchDomain):
		err = fmt.Errorf("no key at %s: %w", name, err)
	case err != nil:
		err = fmt.Errorf("%w: key %s: %w", ErrTemporary, name, err)
	case len(txts) == 0:
		err = fmt.Errorf("no key at %s", name)
	case len(txts) > 1:
		err = fmt.Errorf("%d TXT records at %s", len(txts), name)
	default:
		if key, err = parseKeyRecord(txts[0]); err != nil {
			err = fmt.Errorf("key %s: %w", name, err)
		}
	}
	kl.cache[name] = keyAnswer{key, err}
	return key, err
}

// parseKeyRecord parses a DKIM key record (RFC 6376 §3.6.1): a tag-list
// with v=DKIM1 if any, the hash algorithms h= if any (sha256 must be
// among them), the key type k= (rsa by default, or ed25519 per RFC 8463),
// the service types s= (email or *) and the key p=, empty when revoked.
func parseKeyRecord(txt string) (*publicKey, error) {
	tags, err := parseTagList(txt)
	if err != nil {
		return nil, err
	}
	if v, ok := tags.get("v"); ok && v != "DKIM1" {
		return nil, fmt.Errorf("unknown key record version %q", v)
	}
	if h, ok := tags.get("h"); ok && !slices.Contains(colonList(h), "sha256") {
		return nil, fmt.Errorf("key not for sha256 (h=%s)", h)
	}
	if s, ok := tags.get("s"); ok {
		services := colonList(s)
		if !slices.Contains(services, "*") && !slices.Contains(services, "email") {
			return nil, fmt.Errorf("key not for email (s=%s)", s)
		}
	}
	p, ok := tags.get("p")
	if !ok {
		return nil, errors.New("no p= tag")
	}
	p = stripFWS(p)
	if p == "" {
		return nil, errors.New("key revoked")
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("p=: %w", err)
	}
	switch k, _ := tags.get("k"); k {
	case "", "rsa":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			// RFC 6376 §3.6.1 names RSAPublicKey but its examples use
			// SubjectPublicKeyInfo (erratum 3017): accept both
			if pk1, err1 := x509.ParsePKCS1PublicKey(der); err1 == nil {
				pub, err = pk1, nil
			}
		}
		if err != nil {
			return nil, fmt.Errorf("p=: %w", err)
		}
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("p= holds a %T, not an RSA key", pub)
		}
		if bits := rk.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return nil, fmt.Errorf("RSA key of %d bits, not %d to %d", bits, minRSABits, maxRSABits)
		}
		return &publicKey{rsa: rk}, nil
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("ed25519 key of %d bytes", len(der))
		}
		return &publicKey{ed: ed25519.PublicKey(der)}, nil
	default:
		return nil, fmt.Errorf("unknown key type k=%s", k)
	}
}

// colonList splits a colon-separated list, trimming FWS from its items.
func colonList(s string) []string {
	items := strings.Split(s, ":")
	for i, it := range items {
		items[i] = trimFWS(it)
	}
	return items
}
