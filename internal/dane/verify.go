package dane

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

const (
	// maxChain caps how many presented certificates are considered
	// when building a path to a DANE-TA trust anchor; real chains are
	// far shorter.
	maxChain = 10
	// maxSteps bounds the path search however the presented
	// certificates are ordered or repeated.
	maxSteps = 1000
	// maxShown caps how many records or names an error message lists.
	maxShown = 3
)

// Verify reports whether chain, the certificates the server presented
// in the TLS handshake (leaf first, as in
// tls.ConnectionState.PeerCertificates), is authenticated by records,
// the server's TLSA RRset. Only the records Usable keeps are used, so
// the whole RRset may be passed. It returns nil when the server is
// authenticated and an *Error saying why not otherwise.
//
// A DANE-EE(3) record authenticates the server when it matches the
// leaf certificate; names and validity dates are then ignored (RFC 7672
// §3.1.1). A DANE-TA(2) record names a trust anchor: a CA certificate
// that the server presents (RFC 7672 §3.2.1 requires servers to include
// it), or, for "2 0 0" and "2 1 0" records that carry the full
// certificate or public key, one taken from the record itself. The
// leaf must chain to the trust anchor, each link with a valid signature
// from a CA certificate; the leaf and the intermediates below the trust
// anchor must be valid at now (RFC 7672 §3.1.2), while the trust
// anchor's own validity dates are not checked, as is usual for trust
// anchors. A DANE-TA record does not match the leaf itself.
//
// For DANE-TA the leaf must also be issued to one of names, the
// reference identifiers (RFC 7672 §3.2.2): the TLSA base domain and the
// MX host name as found in the MX record, and whatever other names
// local policy adds. The leaf's DNS subject alternative names are
// compared with them, or its subject common name when it has no DNS
// names at all; a wildcard is honoured only as the whole leftmost
// label and stands for exactly one label (RFC 7672 §3.2.3). Names are
// compared without regard to case or a trailing dot; internationalised
// names must be given in A-label form.
func Verify(records []*dns.TLSA, chain []*x509.Certificate, names []string, now time.Time) error {
	var recs []record
	for _, rr := range records {
		if r, ok := parse(rr); ok {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return noUsable(records)
	}
	if len(chain) == 0 {
		return &Error{KindNoMatch, "the server presented no certificate"}
	}
	for _, c := range chain {
		if c == nil {
			return &Error{KindNoMatch, "the certificate chain has an empty entry"}
		}
	}
	leaf := chain[0]

	// RFC 7672 §3.1.1: DANE-EE matches the leaf alone, with no name,
	// date or signature checks.
	for _, r := range recs {
		if r.usage == UsageDANEEE && r.matches(leaf) {
			return nil
		}
	}
	if err := verifyTA(recs, chain, names, now); err != nil {
		return err // not a nil *Error in a non-nil interface
	}
	return nil
}

// verifyTA authenticates chain with the DANE-TA records of recs.
func verifyTA(recs []record, chain []*x509.Certificate, names []string, now time.Time) *Error {
	if len(chain) > maxChain {
		chain = chain[:maxChain]
	}
	s := search{chain: chain, now: now, isTA: make([]bool, len(chain))}
	var taRecs []record
	for _, r := range recs {
		if r.usage != UsageDANETA {
			continue
		}
		taRecs = append(taRecs, r)
		// The trust anchor is an issuer of the server certificate,
		// not that certificate itself (RFC 6698 §2.1.1).
		for i := 1; i < len(chain); i++ {
			if r.matches(chain[i]) {
				s.isTA[i] = true
				s.anchored = true
			}
		}
		// Full data (RFC 7671 §5.2): the record itself supplies the
		// trust anchor's certificate or public key, so the server need
		// not send it.
		if r.mtype == MatchFull {
			if a := anchorFrom(r); a != nil {
				s.external = append(s.external, a)
				s.anchored = true
			}
		}
	}
	if len(taRecs) == 0 || !s.anchored {
		return noMatch(recs, chain[0])
	}
	s.link()
	onPath := make([]bool, len(chain))
	s.walk(0, onPath, nil)
	if !s.found {
		return &Error{KindNoMatch, fmt.Sprintf("the server certificate does not chain to the DANE-TA trust anchor (%s)", listRecords(taRecs))}
	}
	// RFC 7672 §3.2.2: with DANE-TA the server certificate must be
	// issued to a reference identifier.
	if !namesMatch(chain[0], names) {
		return nameMismatch(chain[0], names)
	}
	if !s.valid {
		return s.expired
	}
	return nil
}

// search finds a path from the leaf (chain[0]) up to a trust anchor.
type search struct {
	chain    []*x509.Certificate
	now      time.Time
	isTA     []bool              // chain[i] matches a DANE-TA record
	external []*x509.Certificate // trust anchors taken from records
	anchored bool                // some trust anchor exists
	issuedBy [][]bool            // chain[j] signed chain[i]
	extIssue [][]bool            // external[k] signed chain[i]
	steps    int                 // walk calls so far
	found    bool                // a path with valid signatures exists
	valid    bool                // such a path is also within its dates
	expired  *Error              // why the first path found is not valid
}

// link works out once which certificate signed which, so that the walk
// need not repeat signature checks.
func (s *search) link() {
	n := len(s.chain)
	s.issuedBy = make([][]bool, n)
	s.extIssue = make([][]bool, n)
	for i, c := range s.chain {
		s.issuedBy[i] = make([]bool, n)
		for j := 1; j < n; j++ {
			if j != i && signedBy(c, s.chain[j]) {
				s.issuedBy[i][j] = true
			}
		}
		s.extIssue[i] = make([]bool, len(s.external))
		for k, a := range s.external {
			s.extIssue[i][k] = signedBy(c, a)
		}
	}
}

// walk extends path, which ends just below chain[i], by chain[i] and
// searches on for a trust anchor. It stops at the first path whose
// certificates are all within their validity dates.
func (s *search) walk(i int, onPath []bool, path []*x509.Certificate) {
	s.steps++
	if s.valid || s.steps > maxSteps {
		return
	}
	if i > 0 && s.isTA[i] {
		s.complete(path)
		return
	}
	onPath[i] = true
	defer func() { onPath[i] = false }()
	path = append(path, s.chain[i])
	for k := range s.external {
		if s.extIssue[i][k] {
			s.complete(path)
			if s.valid {
				return
			}
		}
	}
	for j := range s.chain {
		if !onPath[j] && s.issuedBy[i][j] {
			s.walk(j, onPath, path)
			if s.valid {
				return
			}
		}
	}
}

// complete records a path from the leaf to just below a trust anchor.
// The trust anchor's own validity dates are not checked.
func (s *search) complete(path []*x509.Certificate) {
	s.found = true
	for depth, c := range path {
		if err := checkDates(c, depth, s.now); err != nil {
			if s.expired == nil {
				s.expired = err
			}
			return
		}
	}
	s.valid = true
}

// signedBy reports whether parent issued c: the names chain, parent may
// sign certificates, and the signature verifies with parent's key.
// Trust anchors made from a bare public key have no subject to compare.
func signedBy(c, parent *x509.Certificate) bool {
	if parent.Raw != nil && !bytes.Equal(c.RawIssuer, parent.RawSubject) {
		return false
	}
	return c.CheckSignatureFrom(parent) == nil
}

// anchorFrom returns the trust anchor that a DANE-TA record with full
// association data carries, or nil if the data is not a certificate or
// public key.
func anchorFrom(r record) *x509.Certificate {
	switch r.selector {
	case SelectorCert:
		c, err := x509.ParseCertificate(r.data)
		if err != nil {
			return nil
		}
		return c
	case SelectorSPKI:
		key, err := x509.ParsePKIXPublicKey(r.data)
		if err != nil {
			return nil
		}
		// A bare key carries no constraints: Raw stays nil and the
		// version 0 certificate asserts nothing a CA check could
		// refuse.
		a := &x509.Certificate{PublicKey: key}
		switch key.(type) {
		case *rsa.PublicKey:
			a.PublicKeyAlgorithm = x509.RSA
		case *ecdsa.PublicKey:
			a.PublicKeyAlgorithm = x509.ECDSA
		case ed25519.PublicKey:
			a.PublicKeyAlgorithm = x509.Ed25519
		default:
			return nil
		}
		return a
	}
	return nil
}

// checkDates returns an error if c, found at depth in the path from
// the leaf (depth 0), is not valid at now.
func checkDates(c *x509.Certificate, depth int, now time.Time) *Error {
	what := "certificate " + describe(c)
	if depth > 0 {
		what = "intermediate " + what
	}
	const layout = "2006-01-02 15:04:05 MST"
	switch {
	case now.After(c.NotAfter):
		return &Error{KindExpired, fmt.Sprintf("%s expired on %s", what, c.NotAfter.UTC().Format(layout))}
	case now.Before(c.NotBefore):
		return &Error{KindExpired, fmt.Sprintf("%s is not valid before %s", what, c.NotBefore.UTC().Format(layout))}
	}
	return nil
}

// presented returns the identifiers of leaf that name checks use: its
// DNS subject alternative names, or failing those its subject common
// name (RFC 7672 §3.2.3).
func presented(leaf *x509.Certificate) []string {
	if len(leaf.DNSNames) > 0 {
		return leaf.DNSNames
	}
	if leaf.Subject.CommonName != "" {
		return []string{leaf.Subject.CommonName}
	}
	return nil
}

// namesMatch reports whether leaf is issued to one of names.
func namesMatch(leaf *x509.Certificate, names []string) bool {
	for _, id := range presented(leaf) {
		for _, name := range names {
			if matchName(id, name) {
				return true
			}
		}
	}
	return false
}

// matchName reports whether the presented identifier id matches the
// reference identifier name. A wildcard is accepted only as the entire
// leftmost label of id, followed by at least two labels, and matches
// exactly one non-empty label of name (RFC 7672 §3.2.3).
func matchName(id, name string) bool {
	id, name = normalize(id), normalize(name)
	if id == "" || name == "" || strings.Contains(name, "*") {
		return false
	}
	if rest, ok := strings.CutPrefix(id, "*."); ok {
		if strings.Contains(rest, "*") || !strings.Contains(rest, ".") {
			return false
		}
		label, parent, ok := strings.Cut(name, ".")
		return ok && label != "" && parent == rest
	}
	return !strings.Contains(id, "*") && id == name
}

// normalize lower-cases a DNS name and drops its trailing dot.
func normalize(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// noMatch is the error when no record matches the chain. It shows the
// leaf's own DANE-EE digest, which helps operators spot stale records.
func noMatch(recs []record, leaf *x509.Certificate) *Error {
	msg := "no TLSA record matches the certificate chain (" + listRecords(recs)
	if a, err := Association(leaf, SelectorSPKI, MatchSHA256); err == nil {
		msg += "; the server certificate has " + record{UsageDANEEE, SelectorSPKI, MatchSHA256, a}.String()
	}
	return &Error{KindNoMatch, msg + ")"}
}

// noUsable is the error when no record is usable; it lists the
// parameters of the records, which tell why.
func noUsable(records []*dns.TLSA) *Error {
	var params []string
	for _, rr := range records {
		if rr != nil {
			params = append(params, fmt.Sprintf("%d %d %d", rr.Usage, rr.Selector, rr.MatchingType))
		}
	}
	switch len(params) {
	case 0:
		return &Error{KindNoUsable, "no TLSA records to check the certificate against"}
	case 1:
		return &Error{KindNoUsable, "the TLSA record (" + params[0] + ") is not usable for SMTP"}
	}
	return &Error{KindNoUsable, fmt.Sprintf("none of the %d TLSA records is usable for SMTP (%s)", len(params), shorten(params, ", "))}
}

// nameMismatch is the error when the leaf is not issued to any of names.
func nameMismatch(leaf *x509.Certificate, names []string) *Error {
	var refs []string
	for _, n := range names {
		if n = normalize(n); n != "" {
			refs = append(refs, n)
		}
	}
	ids := presented(leaf)
	have := "a certificate without names"
	switch {
	case len(ids) == 1:
		have = "certificate name " + ids[0]
	case len(ids) > 1:
		have = "certificate names " + shorten(ids, ", ")
	}
	if len(refs) == 0 {
		return &Error{KindNameMismatch, "no reference name to check " + have + " against"}
	}
	verb := " does not match "
	if len(ids) > 1 {
		verb = " do not match "
	}
	return &Error{KindNameMismatch, have + verb + shorten(refs, " or ")}
}

// listRecords formats recs for an error message.
func listRecords(recs []record) string {
	s := make([]string, len(recs))
	for i, r := range recs {
		s[i] = r.String()
	}
	return shorten(s, ", ")
}

// shorten joins the first few items of list with sep and says how many
// more there are.
func shorten(list []string, sep string) string {
	if len(list) <= maxShown {
		return strings.Join(list, sep)
	}
	return fmt.Sprintf("%s and %d more", strings.Join(list[:maxShown], sep), len(list)-maxShown)
}

// describe names c for an error message.
func describe(c *x509.Certificate) string {
	switch {
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case c.Subject.CommonName != "":
		return fmt.Sprintf("%q", c.Subject.CommonName)
	case len(c.RawSubject) > 0 && c.Subject.String() != "":
		return fmt.Sprintf("%q", c.Subject.String())
	}
	return "without a subject name"
}
