// Package dmarc evaluates DMARC (RFC 7489) for a received message: it
// discovers the policy of the RFC5322.From domain through our own DNS
// resolver, so that temporary and permanent failures are told apart,
// parses it with github.com/emersion/go-msgauth/dmarc, checks SPF and
// DKIM identifier alignment against the organizational domain of the
// public suffix list, and applies "p", "sp" and "pct" to decide the
// disposition.
//
// The package does not authenticate anything itself: the caller passes
// the results of SPF and DKIM in an Input, and the domain of the
// RFC5322.From field, which FromDomain extracts.
package dmarc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	msgdmarc "github.com/emersion/go-msgauth/dmarc"

	"smtpd/internal/dns"
)

// Status is the DMARC result of a message, as Authentication-Results
// reports it (RFC 7489 §11.2).
type Status string

// The DMARC results of RFC 7489 §11.2.
const (
	// None: the author domain publishes no usable policy (§6.6.3).
	None Status = "none"
	// Pass: an identifier aligned with the author domain passed (§4.2).
	Pass Status = "pass"
	// Fail: no aligned identifier passed.
	Fail Status = "fail"
	// TempError: the policy could not be fetched for a transient DNS
	// failure; a later attempt may succeed.
	TempError Status = "temperror"
	// PermError: the author domain or the policy record is unusable,
	// such as a syntactically incorrect record (§11.2).
	PermError Status = "permerror"
)

// Disposition is what the receiver should do with the message after
// DMARC, the "disposition" of aggregate reports (RFC 7489 Appendix C).
type Disposition string

// Dispositions, in increasing severity.
const (
	DispositionNone       Disposition = "none"
	DispositionQuarantine Disposition = "quarantine"
	DispositionReject     Disposition = "reject"
)

// ErrInvalidRecord marks a DMARC record that cannot be used: an invalid
// "p" or "sp" tag without a valid "rua" tag to fall back on (RFC 7489
// §6.6.3 step 6). The result is then permerror.
var ErrInvalidRecord = errors.New("dmarc: invalid policy record")

// Resolver looks up TXT records. *dns.Resolver is one. An error for
// which dns.IsPermanent is true (NXDOMAIN) counts as no record; any
// other error is temporary and makes the result temperror.
type Resolver interface {
	TXT(ctx context.Context, name string) ([]string, error)
}

var _ Resolver = (*dns.Resolver)(nil)

// AuthResult is the result of one SPF or DKIM check, as the caller got
// it from its SPF or DKIM verifier.
type AuthResult struct {
	// Result is the verifier's result ("pass", "fail", "softfail",
	// "neutral", "none", "temperror", "permerror"...). Only "pass",
	// compared without regard to case, counts towards DMARC.
	Result string
	// Domain is the authenticated domain: the SPF identity (see
	// SPFIdentity) or the DKIM signature's d= tag.
	Domain string
}

// Input is what DMARC evaluates.
type Input struct {
	// FromDomain is the domain of the RFC5322.From address, as returned
	// by FromDomain.
	FromDomain string
	// SPF is the result of SPF for the MAIL FROM identity: RFC 7489
	// §4.1 and §3.1.2 use the RFC5321.MailFrom domain, and RFC 7208
	// §2.4 makes that identity postmaster@<HELO domain> when the
	// reverse-path is null. So Domain is SPFIdentity(mailFrom, helo),
	// and Result is the SPF result of that identity, never the result
	// of a separate HELO check on a non-null sender.
	SPF AuthResult
	// DKIM has one entry per DKIM-Signature verified: its result and
	// its d= (RFC 7489 §3.1.1).
	DKIM []AuthResult
}

// SPFIdentity returns the domain whose SPF result DMARC uses (RFC 7489
// §3.1.2, §4.1): the domain of the RFC5321.MailFrom address, or the
// HELO domain when the reverse-path is null (mailFrom == ""), since
// RFC 7208 §2.4 defines the MAIL FROM identity of a null reverse-path
// as postmaster@<HELO domain>.
func SPFIdentity(mailFrom, helo string) string {
	if mailFrom == "" {
		return helo
	}
	if i := strings.LastIndexByte(mailFrom, '@'); i >= 0 {
		return mailFrom[i+1:]
	}
	return mailFrom
}

// Alignment is one authenticated identifier and how it relates to the
// author domain, as aggregate reports list them ("auth_results").
type Alignment struct {
	// Domain is the identifier's domain, normalized (lowercase
	// A-labels), or as given when it is not a valid domain name.
	Domain string
	// Result is the SPF or DKIM result, as given.
	Result string
	// Aligned tells whether Domain is aligned with the author domain
	// in the record's mode (RFC 7489 §3.1), whatever Result is.
	Aligned bool
}

// Result is the outcome of a DMARC evaluation, with what aggregate
// reports need (RFC 7489 §7.2, Appendix C: policy_published,
// policy_evaluated, identifiers, auth_results).
type Result struct {
	// Result is the DMARC result.
	Result Status
	// Disposition is the action the policy asks for after "pct"
	// sampling (RFC 7489 §6.6.4). It is DispositionNone unless Result
	// is Fail.
	Disposition Disposition
	// Policy is the policy requested for the author domain: the
	// record's "p", or its "sp" when the record is the organizational
	// domain's and the author domain a subdomain of it (§6.3, §6.6.3).
	// Empty when no record applies.
	Policy msgdmarc.Policy
	// SampledOut tells that "pct" excluded the message from Policy, so
	// the next lower policy was applied (§6.6.4); aggregate reports give
	// the reason "sampled_out".
	SampledOut bool
	// Record is the policy published, nil when none applies. After an
	// invalid "p" or "sp" with a valid "rua", it is the record read as
	// "p=none" (§6.6.3 step 6).
	Record *msgdmarc.Record
	// Fallback tells that Record stands for a record with an invalid
	// "p" or "sp" tag, read as "p=none" (§6.6.3 step 6).
	Fallback bool

	// FromDomain is the author domain (RFC5322.From), normalized.
	FromDomain string
	// OrgDomain is the organizational domain of FromDomain (§3.2).
	OrgDomain string
	// PolicyDomain is the domain whose _dmarc record was used: either
	// FromDomain or OrgDomain (§6.6.3). Empty when none was found.
	PolicyDomain string

	// SPF is the SPF identifier and its alignment.
	SPF Alignment
	// DKIM has the DKIM identifiers and their alignment, in the order
	// of Input.DKIM.
	DKIM []Alignment
	// SPFAligned tells that SPF passed for an aligned domain (§3.1.2).
	SPFAligned bool
	// DKIMAligned tells that a DKIM signature with an aligned d=
	// passed (§3.1.1).
	DKIMAligned bool

	// Comment explains a none, temperror or permerror result in a few
	// words, for logs and Authentication-Results comments.
	Comment string
}

// Checker evaluates DMARC. Resolver must be set; the zero value of the
// other fields is ready to use.
type Checker struct {
	// Resolver looks up the _dmarc TXT records.
	Resolver Resolver
	// Rand returns a number in [0, 1) for "pct" sampling (RFC 7489
	// §6.6.4); math/rand/v2.Float64 when nil. It is called at most once
	// per Check, so that one message gets one decision; tests set it to
	// make the decision deterministic.
	Rand func() float64
}

// Check evaluates DMARC for one message. It always returns a Result;
// the error is non-nil exactly when the result is TempError (a
// temporary DNS error, wrapped) or PermError (an invalid author domain,
// wrapping ErrNoAuthorDomain, or an unusable record, wrapping
// ErrInvalidRecord).
func (c *Checker) Check(ctx context.Context, in Input) (*Result, error) {
	res := &Result{Result: None, Disposition: DispositionNone, FromDomain: in.FromDomain}
	from, err := normalizeDomain(in.FromDomain)
	if err != nil {
		// RFC 7489 §6.6.1: a From domain that is not a domain name
		// cannot be evaluated.
		res.Result, res.Comment = PermError, "invalid author domain"
		return res, &AuthorError{Reason: "invalid author domain", Err: err}
	}
	res.FromDomain = from
	res.OrgDomain = OrganizationalDomain(from)

	d, err := c.discover(ctx, from, res.OrgDomain)
	res.PolicyDomain = d.domain
	switch {
	case err != nil:
		res.Result, res.Comment = TempError, "policy lookup failed"
		return res, err
	case d.count == 0:
		res.Comment = "no policy record"
		return res, nil
	case d.count > 1:
		// §6.6.3 step 5: several records, none applies.
		res.Comment = fmt.Sprintf("%d policy records at _dmarc.%s", d.count, d.domain)
		return res, nil
	}
	rec, fallback, err := parseRecord(d.txt)
	if err != nil {
		res.Result, res.Comment = PermError, "invalid policy record"
		return res, fmt.Errorf("%w at _dmarc.%s: %w", ErrInvalidRecord, d.domain, err)
	}
	res.Record, res.Fallback = rec, fallback

	// §6.3 "sp", §6.6.3 step 3: a record found at the organizational
	// domain for a subdomain author applies its "sp", or its "p" when
	// there is no "sp".
	res.Policy = rec.Policy
	if d.domain != from && rec.SubdomainPolicy != "" {
		res.Policy = rec.SubdomainPolicy
	}

	// §3.1, §4.2: DMARC passes if SPF or DKIM passes for an aligned
	// identifier.
	res.SPF = c.align(rec.SPFAlignment, from, in.SPF)
	res.SPFAligned = res.SPF.Aligned && isPass(in.SPF.Result)
	for _, a := range in.DKIM {
		al := c.align(rec.DKIMAlignment, from, a)
		res.DKIM = append(res.DKIM, al)
		if al.Aligned && isPass(a.Result) {
			res.DKIMAligned = true
		}
	}
	if res.SPFAligned || res.DKIMAligned {
		res.Result = Pass
		return res, nil
	}
	res.Result = Fail
	res.Disposition, res.SampledOut = c.sample(res.Policy, rec.Percent)
	return res, nil
}

// align normalizes an identifier and tells whether it is aligned with
// the author domain from in mode (RFC 7489 §3.1.1, §3.1.2).
func (c *Checker) align(mode msgdmarc.AlignmentMode, from string, a AuthResult) Alignment {
	d, err := normalizeDomain(a.Domain)
	if err != nil {
		return Alignment{Domain: a.Domain, Result: a.Result}
	}
	return Alignment{Domain: d, Result: a.Result, Aligned: aligned(mode, from, d)}
}

// sample applies "pct" to policy (RFC 7489 §6.6.4): a message outside
// the percentage gets the next lower policy, quarantine for reject and
// none for quarantine.
func (c *Checker) sample(policy msgdmarc.Policy, percent *int) (Disposition, bool) {
	disp := Disposition(policy)
	if disp != DispositionQuarantine && disp != DispositionReject {
		return DispositionNone, false
	}
	pct := 100
	if percent != nil {
		pct = *percent
	}
	var in bool
	switch {
	case pct >= 100:
		in = true
	case pct <= 0:
		in = false
	default:
		rnd := c.Rand
		if rnd == nil {
			rnd = rand.Float64
		}
		in = rnd()*100 < float64(pct)
	}
	if in {
		return disp, false
	}
	if disp == DispositionReject {
		return DispositionQuarantine, true
	}
	return DispositionNone, true
}

func isPass(result string) bool {
	return strings.EqualFold(strings.TrimSpace(result), "pass")
}
