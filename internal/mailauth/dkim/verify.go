package dkim

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/authres"
	msgdkim "github.com/emersion/go-msgauth/dkim"

	"smtpd/internal/dns"
)

// MaxSignatures bounds the signatures verified in one message, as RFC
// 6376 §6.1 allows against denial of service: each costs a DNS query
// and a public-key operation, and a sender can add any number.
// Signatures beyond it get StatusPolicy.
const MaxSignatures = 5

// Resolver looks up the key records. *dns.Resolver satisfies it: its
// TXT joins the strings of each record (RFC 6376 §3.6.2.2) and reports
// a name that does not exist as an error wrapping dns.ErrNoSuchDomain,
// which is a permanent "no key" (§6.1.2). Any other error is taken as
// temporary.
type Resolver interface {
	TXT(ctx context.Context, name string) ([]string, error)
}

// Status is a DKIM result, named as in RFC 8601 §2.7.1.
type Status string

// The results of RFC 8601 §2.7.1.
const (
	// StatusNone is for a message without signatures; Verify returns
	// no Result then, and the caller records "dkim=none".
	StatusNone Status = "none"
	// StatusPass is a signature that verified.
	StatusPass Status = "pass"
	// StatusFail is a signature that did not verify: the body hash or
	// the signature over the header differ (RFC 6376 §6.1.3).
	StatusFail Status = "fail"
	// StatusPolicy is a signature not acceptable here although perhaps
	// valid: one with l= (a partly signed body, §8.2), or one beyond
	// MaxSignatures, which was not verified.
	StatusPolicy Status = "policy"
	// StatusNeutral is a signature with syntax errors (RFC 8601
	// §2.7.1): a malformed tag-list, a missing required tag, v≠1.
	StatusNeutral Status = "neutral"
	// StatusTempError is a key that could not be fetched now, for a DNS
	// failure or a timeout (RFC 6376 §6.1.2 TEMPFAIL).
	StatusTempError Status = "temperror"
	// StatusPermError is a signature that cannot verify whatever the
	// retry: no key record, a revoked or malformed key, a key or hash
	// that does not match a=, From not signed, expired (§6.1 PERMFAIL).
	StatusPermError Status = "permerror"
)

// Result is the outcome for one DKIM-Signature field.
type Result struct {
	// Domain is d=, the signing domain (SDID).
	Domain string
	// Selector is s=.
	Selector string
	// Identifier is i=, the AUID, or "@" and Domain when i= is absent
	// (RFC 6376 §3.5).
	Identifier string
	// Algorithm is a=, such as "rsa-sha256" or "ed25519-sha256".
	Algorithm string
	// Status is the result.
	Status Status
	// Reason says why the signature did not pass; empty on pass.
	Reason string
}

// Verify checks every DKIM-Signature field of the message read from r,
// the first MaxSignatures of them against their keys, and returns one
// Result for each, in the order of the header. A message without
// signatures gives no Result and no error. The error is for failures
// to read the message, or a header larger than MaxHeaderBytes: then
// nothing was verified.
//
// Keys are looked up with res under ctx; the lookups of several
// signatures run in parallel.
func Verify(ctx context.Context, r io.Reader, res Resolver) ([]Result, error) {
	br := bufio.NewReaderSize(r, 32<<10)
	h, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	var sigs []sigInfo
	for _, f := range h.fields {
		if name, value := fieldName(f); strings.EqualFold(name, "DKIM-Signature") {
			sigs = append(sigs, parseSignature(value))
		}
	}
	if len(sigs) == 0 {
		return nil, nil
	}

	opts := &msgdkim.VerifyOptions{
		LookupTXT:        lookupTXT(ctx, res),
		MaxVerifications: MaxSignatures,
	}
	verifs, err := msgdkim.VerifyWithOptions(io.MultiReader(bytes.NewReader(h.raw), br), opts)
	if err != nil && !errors.Is(err, msgdkim.ErrTooManySignatures) {
		return nil, fmt.Errorf("dkim: verifying: %w", err)
	}
	if len(verifs) != min(len(sigs), MaxSignatures) {
		// both sides read the same header; if they disagree, say so
		// rather than attach results to the wrong signatures
		return nil, fmt.Errorf("dkim: %d signatures found but %d verified", len(sigs), len(verifs))
	}

	out := make([]Result, len(sigs))
	for i, sig := range sigs {
		r := Result{
			Domain:     sig.domain,
			Selector:   sig.selector,
			Identifier: sig.identifier,
			Algorithm:  sig.algorithm,
		}
		if i >= len(verifs) {
			r.Status = StatusPolicy
			r.Reason = fmt.Sprintf("not verified: more than %d signatures", MaxSignatures)
			out[i] = r
			continue
		}
		v := verifs[i]
		if r.Domain == "" {
			r.Domain = v.Domain
		}
		if r.Identifier == "" {
			r.Identifier = v.Identifier
		}
		r.Status, r.Reason = classify(v.Err, sig)
		out[i] = r
	}
	return out, nil
}

// classify maps the go-msgauth outcome of one signature to RFC 8601
// (§2.7.1) and a reason.
func classify(err error, sig sigInfo) (Status, string) {
	if err == nil {
		return StatusPass, ""
	}
	reason := strings.TrimPrefix(err.Error(), "dkim: ")
	switch {
	case msgdkim.IsTempFail(err):
		return StatusTempError, reason
	case msgdkim.IsPermFail(err):
		if sig.syntaxErr != nil {
			return StatusNeutral, "malformed signature: " + sig.syntaxErr.Error()
		}
		return StatusPermError, reason
	case sig.hasLength:
		// go-msgauth refuses l= as a failure; it is a local policy
		// that a partly signed body is not acceptable (RFC 6376 §8.2)
		return StatusPolicy, "body length tag l= not accepted"
	case strings.HasPrefix(reason, "signature did not verify"):
		// the rest is the crypto package's word for it
		return StatusFail, "signature did not verify"
	default:
		return StatusFail, reason
	}
}

// sigInfo is what Verify reads itself from a DKIM-Signature field, to
// name the signature in results and classify syntax errors.
type sigInfo struct {
	domain, selector, identifier, algorithm string
	hasLength                               bool
	syntaxErr                               error
}

// parseSignature reads the tags of a DKIM-Signature field value (RFC
// 6376 §3.5) far enough to name the signature, and notes the syntax
// errors a verifier must not go past.
func parseSignature(value string) sigInfo {
	tags, err := parseTags(value)
	var s sigInfo
	s.domain = stripWSP(tags["d"])
	s.selector = stripWSP(tags["s"])
	s.algorithm = stripWSP(tags["a"])
	s.identifier = stripWSP(tags["i"])
	if _, ok := tags["i"]; !ok && s.domain != "" {
		s.identifier = "@" + s.domain
	}
	_, s.hasLength = tags["l"]
	if err != nil {
		s.syntaxErr = err
		return s
	}
	for _, t := range [...]string{"v", "a", "b", "bh", "d", "h", "s"} { // §3.5
		if _, ok := tags[t]; !ok {
			s.syntaxErr = fmt.Errorf("missing required tag %s=", t)
			return s
		}
	}
	if v := stripWSP(tags["v"]); v != "1" {
		s.syntaxErr = fmt.Errorf("version v=%s, not 1", v)
		return s
	}
	if k, h, ok := strings.Cut(s.algorithm, "-"); !ok || k == "" || h == "" {
		s.syntaxErr = fmt.Errorf("malformed algorithm a=%s", s.algorithm)
	}
	return s
}

// lookupTXT adapts res to go-msgauth, which takes an error as
// temporary only if it is a net.Error whose Temporary method says so,
// and any other error as permanent: a name that does not exist or is
// not a valid DNS name is a permanent "no key", anything else (server
// failure, timeout, cancelled context) temporary (RFC 6376 §6.1.2).
func lookupTXT(ctx context.Context, res Resolver) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		if !validDomain(name) {
			return nil, fmt.Errorf("invalid key record name %q", name)
		}
		txts, err := res.TXT(ctx, name)
		switch {
		case err == nil:
			return txts, nil
		case errors.Is(err, dns.ErrNoSuchDomain):
			return nil, err
		default:
			return nil, tempError{err}
		}
	}
}

// tempError marks a lookup failure as temporary for go-msgauth.
type tempError struct{ err error }

func (e tempError) Error() string   { return e.err.Error() }
func (e tempError) Unwrap() error   { return e.err }
func (e tempError) Timeout() bool   { return false }
func (e tempError) Temporary() bool { return true }

// AuthRes returns the result as an Authentication-Results entry (RFC
// 8601 §2.7.1: dkim= with header.d and header.i), for authres.Format.
// Values from the message are cleaned of characters that would break
// the quoting of authres, which escapes only '"', or the header.
func (r Result) AuthRes() authres.Result {
	return &authres.DKIMResult{
		Value:      authres.ResultValue(r.Status),
		Reason:     clean(r.Reason, 256),
		Domain:     clean(r.Domain, 253),
		Identifier: clean(r.Identifier, 320),
	}
}

// clean keeps printable ASCII and non-ASCII text of s, with '"' and
// '\\' made "'" and ';' made ',' (authres.Parse splits at any ';'),
// and at most max bytes of it.
func clean(s string, max int) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= max {
			break
		}
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\'')
		case c == ';':
			b.WriteByte(',')
		case c == '\t':
			b.WriteByte(' ')
		case c < 0x20 || c == 0x7f || c == 0xfffd || c >= 0x80 && c < 0xa0:
			// control characters and invalid UTF-8 are dropped
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}
