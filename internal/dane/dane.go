// Package dane authenticates an SMTP server's TLS certificate chain
// against the server's TLSA records, as DANE for SMTP specifies
// (RFC 7672, which builds on RFC 6698 and the updates of RFC 7671).
//
// The package does the certificate half of DANE and nothing else. It
// makes no DNS queries and cannot tell whether a record is authentic:
// the caller looks up the MX, address and TLSA records through a
// DNSSEC-validating resolver and passes in only TLSA records from an
// RRset that validated as secure. How a client acts on each DNSSEC
// outcome is laid down in RFC 7672 §2.1 and §2.2; in short:
//
//   - Every answer is secure (validated), insecure (provably unsigned),
//     bogus (signed but failing validation) or indeterminate (the lookup
//     failed: timeout, SERVFAIL). A bogus or indeterminate answer is
//     never read as "no DANE": that would let an attacker downgrade the
//     connection. The MX host is skipped and, when none is left, the
//     message is deferred (§2.1.1, §2.2).
//   - DANE is meant for MX hosts taken from a secure MX RRset; a client
//     may also use it for the hosts of an insecure MX RRset, say those
//     of a signed hosting provider (§2.2.1).
//   - TLSA records are looked up only when the MX host is in a signed
//     zone: its address records are secure, or reached through a CNAME
//     chain whose first link is secure. When the whole chain is secure
//     the TLSA base domain is the fully expanded name; otherwise, and
//     when the expanded name has no TLSA records, it is the MX host
//     name (§2.2.2, §2.2.3). The records are at TLSAName(base, 25).
//   - A secure but empty TLSA answer (NXDOMAIN or NODATA), or an
//     insecure one, means no DANE for the host: opportunistic TLS.
//   - A secure TLSA RRset with at least one record that Usable keeps
//     makes STARTTLS mandatory and the server must pass Verify. If the
//     server offers no STARTTLS, the handshake fails or Verify returns
//     an error, the client must not fall back to cleartext or to
//     unauthenticated TLS: it tries the next MX host or defers (§2.2).
//   - A secure TLSA RRset without a usable record still obliges the
//     client to use STARTTLS, but the server cannot be authenticated,
//     so delivery uses mandatory unauthenticated TLS (§2.2, §3.1.3).
//
// With DANE the client sends the TLSA base domain as SNI (§8.1) and
// does not check the certificate against the web PKI: it sets
// InsecureSkipVerify and calls Verify from the tls.Config's
// VerifyConnection hook with ConnectionState.PeerCertificates.
//
// The errors of Verify carry a Kind so that callers can fill in TLS
// reporting (RFC 8460 §4.3) with Kind.ResultType.
package dane

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/miekg/dns"

	"smtpd/internal/tlsrpt"
)

// Certificate usages, selectors and matching types of TLSA records
// (RFC 6698 §2.1; the names are those of RFC 7218).
const (
	UsagePKIXTA uint8 = 0 // PKIX-TA: CA constraint, unusable for SMTP
	UsagePKIXEE uint8 = 1 // PKIX-EE: service certificate constraint, unusable for SMTP
	UsageDANETA uint8 = 2 // DANE-TA: trust anchor assertion
	UsageDANEEE uint8 = 3 // DANE-EE: domain-issued certificate

	SelectorCert uint8 = 0 // the full certificate, DER encoded
	SelectorSPKI uint8 = 1 // the SubjectPublicKeyInfo, DER encoded

	MatchFull   uint8 = 0 // the selected data itself
	MatchSHA256 uint8 = 1 // SHA2-256 digest of the selected data
	MatchSHA512 uint8 = 2 // SHA2-512 digest of the selected data
)

// Kind classifies a failed DANE authentication.
type Kind int

// The kinds of failure. Each maps to a TLS-RPT result type, see
// Kind.ResultType.
const (
	// KindNoUsable: no TLSA record is usable for SMTP (RFC 7672 §3.1.3).
	KindNoUsable Kind = iota + 1
	// KindNoMatch: no usable record matches the chain the server
	// presented, or the chain does not lead to a matching trust anchor.
	KindNoMatch
	// KindNameMismatch: the chain leads to a DANE-TA trust anchor but
	// the server certificate is not for any reference name (RFC 7672
	// §3.2.2, §3.2.3).
	KindNameMismatch
	// KindExpired: the chain leads to a DANE-TA trust anchor but the
	// server certificate or an intermediate is outside its validity
	// period (RFC 7672 §3.1.2).
	KindExpired
)

// ResultType returns the TLS-RPT result type (RFC 8460 §4.3) that
// reports a failure of kind k.
func (k Kind) ResultType() tlsrpt.ResultType {
	switch k {
	case KindNoUsable:
		return tlsrpt.ResultTLSAInvalid
	case KindNameMismatch:
		return tlsrpt.ResultCertificateHostMismatch
	case KindExpired:
		return tlsrpt.ResultCertificateExpired
	default:
		return tlsrpt.ResultValidationFailure
	}
}

// Error is a failed DANE authentication.
type Error struct {
	Kind Kind
	// Msg says what failed in words fit for a log line.
	Msg string
}

// Error returns e.Msg.
func (e *Error) Error() string { return e.Msg }

// record is a usable TLSA record with its association data decoded.
type record struct {
	usage, selector, mtype uint8
	data                   []byte
}

// String formats r in presentation form, with the data shortened.
func (r record) String() string {
	h := hex.EncodeToString(r.data)
	if len(h) > 8 {
		h = h[:8] + "…"
	}
	return fmt.Sprintf("%d %d %d %s", r.usage, r.selector, r.mtype, h)
}

// matches reports whether r's association data is that of c.
func (r record) matches(c *x509.Certificate) bool {
	a, err := Association(c, r.selector, r.mtype)
	return err == nil && bytes.Equal(a, r.data)
}

// parse decodes rr and reports whether an SMTP client may use it.
func parse(rr *dns.TLSA) (record, bool) {
	if rr == nil {
		return record{}, false
	}
	// RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) depend on a set of
	// public CAs that SMTP clients cannot be expected to share, so
	// clients treat them as unusable.
	if rr.Usage != UsageDANETA && rr.Usage != UsageDANEEE {
		return record{}, false
	}
	// RFC 6698 §2.1.2 and §2.1.3 define no other selectors or matching
	// types; records with values a client does not support are
	// unusable (RFC 7672 §3.1.3).
	if rr.Selector != SelectorCert && rr.Selector != SelectorSPKI {
		return record{}, false
	}
	data, err := hex.DecodeString(rr.Certificate)
	if err != nil {
		return record{}, false
	}
	// Malformed association data (bad hex, a digest of the wrong
	// length) can never match and makes the record unusable too.
	switch rr.MatchingType {
	case MatchFull:
		if len(data) == 0 {
			return record{}, false
		}
	case MatchSHA256:
		if len(data) != sha256.Size {
			return record{}, false
		}
	case MatchSHA512:
		if len(data) != sha512.Size {
			return record{}, false
		}
	default:
		return record{}, false
	}
	return record{rr.Usage, rr.Selector, rr.MatchingType, data}, true
}

// Usable returns the records of rrs that an SMTP client may use, in
// their order (RFC 7672 §3.1.3): those with usage DANE-TA(2) or
// DANE-EE(3), selector Cert(0) or SPKI(1), matching type Full(0),
// SHA2-256(1) or SHA2-512(2), and association data that is valid hex
// of the length its matching type calls for. An RRset is usable when
// the result is not empty.
func Usable(rrs []*dns.TLSA) []*dns.TLSA {
	var out []*dns.TLSA
	for _, rr := range rrs {
		if _, ok := parse(rr); ok {
			out = append(out, rr)
		}
	}
	return out
}

// Association returns the certificate association data of cert for
// the selector and matching type (RFC 6698 §2.1.2, §2.1.3): the DER
// certificate or SubjectPublicKeyInfo, as is or as its SHA2-256 or
// SHA2-512 digest. Printed in hex after "3 1 1 " it is the DANE-EE
// TLSA record of the certificate.
func Association(cert *x509.Certificate, selector, matchingType uint8) ([]byte, error) {
	if cert == nil {
		return nil, errors.New("dane: no certificate")
	}
	var b []byte
	switch selector {
	case SelectorCert:
		b = cert.Raw
	case SelectorSPKI:
		b = cert.RawSubjectPublicKeyInfo
	default:
		return nil, fmt.Errorf("dane: unknown TLSA selector %d", selector)
	}
	if len(b) == 0 {
		return nil, errors.New("dane: certificate has no DER encoding")
	}
	switch matchingType {
	case MatchFull:
		return bytes.Clone(b), nil
	case MatchSHA256:
		sum := sha256.Sum256(b)
		return sum[:], nil
	case MatchSHA512:
		sum := sha512.Sum512(b)
		return sum[:], nil
	}
	return nil, fmt.Errorf("dane: unknown TLSA matching type %d", matchingType)
}

// TLSAName returns the owner name of the TLSA records of a TCP service
// on host and port (RFC 6698 §3), for example "_25._tcp.mx.example.org."
// for port 25 of mx.example.org. For SMTP, host is the TLSA base domain
// (RFC 7672 §2.2.3).
func TLSAName(host string, port int) string {
	return "_" + strconv.Itoa(port) + "._tcp." + dns.Fqdn(host)
}
