// Package spf evaluates Sender Policy Framework records (RFC 7208):
// check_host() of §4 with every mechanism and modifier, macros (§7),
// the processing limits of §4.6.4, the HELO and MAIL FROM identities
// (§2.3, §2.4) and the explanation of a fail (§6.2), and formats the
// Received-SPF header field (§9.1). It passes the whole RFC 7208 test
// suite of openspf.org (testdata/rfc7208-tests.yml).
//
// DNS goes through a Resolver, which *smtpd/internal/dns.Resolver
// satisfies. A Checker has no mutable state: one can serve every
// message of a process at once.
package spf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// Result is the result of check_host() (RFC 7208 §2.6).
type Result string

// The results of check_host() (§2.6, §8).
const (
	None      Result = "none"      // no record, or no domain to check
	Neutral   Result = "neutral"   // the domain states nothing about the client
	Pass      Result = "pass"      // the client is authorized
	Fail      Result = "fail"      // the client is not authorized
	SoftFail  Result = "softfail"  // probably not authorized
	TempError Result = "temperror" // a transient, generally DNS, error
	PermError Result = "permerror" // the record cannot be interpreted
)

// Identities, as the identity key of Received-SPF names them (§9.1).
const (
	IdentityMailFrom = "mailfrom"
	IdentityHelo     = "helo"
)

// Limits of §4.6.4.
const (
	// MaxLookups is how many terms that query DNS (include, a, mx,
	// ptr, exists and redirect) one evaluation may use, includes and
	// redirects followed.
	MaxLookups = 10
	// MaxVoidLookups is how many of those may find nothing (NXDOMAIN
	// or no answer).
	MaxVoidLookups = 2
	// MaxNames is how many names one mx mechanism may look up (more is
	// a permerror) and one ptr mechanism or %{p} macro does (the rest
	// are ignored).
	MaxNames = 10
)

// DefaultTimeout bounds one evaluation when Checker.Timeout is zero:
// §4.6.4 asks for a limit that allows at least 20 seconds.
const DefaultTimeout = 20 * time.Second

// DefaultExplanation is the explanation of a fail whose record gives
// none (§6.2).
const DefaultExplanation = "the domain's SPF record does not authorize the client to send its mail"

// Errors that explain a permerror. Temperrors wrap the DNS error.
var (
	// ErrSyntax is a record, or a macro in it, that does not parse.
	ErrSyntax = errors.New("syntax error")
	// ErrMultipleRecords is a domain with more than one SPF record
	// (§4.5).
	ErrMultipleRecords = errors.New("more than one SPF record")
	// ErrNoRecord is an include or redirect whose target has no SPF
	// record (§5.2, §6.1).
	ErrNoRecord = errors.New("no SPF record")
	// ErrTooManyLookups is an evaluation past MaxLookups (§4.6.4).
	ErrTooManyLookups = errors.New("too many DNS lookups")
	// ErrTooManyVoidLookups is an evaluation past MaxVoidLookups.
	ErrTooManyVoidLookups = errors.New("too many void DNS lookups")
	// ErrTooManyMX is an mx mechanism with more than MaxNames MX
	// records.
	ErrTooManyMX = errors.New("too many MX records")
)

// Resolver is the DNS that SPF needs, as *smtpd/internal/dns.Resolver
// provides it. Records returns the records of type qtype for name, a
// name in the presentation format of github.com/miekg/dns (special
// characters escaped), CNAMEs followed: none and no error when the
// name has no such records, an error wrapping
// smtpd/internal/dns.ErrNoSuchDomain for NXDOMAIN, any other error
// for a temporary failure.
type Resolver interface {
	Records(ctx context.Context, name string, qtype uint16) ([]mdns.RR, error)
}

// Checker evaluates SPF policies. Its fields are configuration; the
// zero value with a Resolver works.
type Checker struct {
	// Resolver answers the DNS queries.
	Resolver Resolver
	// Hostname is the name of the receiving host, for the %{r} macro
	// of explanations; "unknown" when empty (§7.3).
	Hostname string
	// Timeout bounds one evaluation, DNS included; then the result is
	// temperror (§4.6.4). Zero means DefaultTimeout.
	Timeout time.Duration
	// Now gives the time of the %{t} macro; time.Now when nil.
	Now func() time.Time
	// DefaultExplanation replaces the package's DefaultExplanation
	// when not empty. It is used as it is, without macro expansion.
	DefaultExplanation string
}

// CheckHost is check_host() of RFC 7208 §4: the result for a message
// from ip about domain, with sender the MAIL FROM address (or
// postmaster@ the HELO domain) and helo the HELO/EHLO argument. The
// explanation is set for Fail: the text of the record's exp= modifier
// (§6.2) or the default explanation. err says why for TempError and
// PermError, and is nil otherwise.
func (c *Checker) CheckHost(ctx context.Context, ip netip.Addr, domain, sender, helo string) (Result, string, error) {
	if c.Resolver == nil {
		return TempError, "", errors.New("spf: no resolver")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	e := newEval(c, ip, sender, helo)
	res, x, err := e.checkHost(ctx, domain, 0)
	if err != nil {
		return res, "", fmt.Errorf("spf: %s: %w", domain, err)
	}
	if res != Fail {
		return res, "", nil
	}
	return res, e.explain(ctx, x), nil
}

// Outcome is the result of checking one identity of a message.
type Outcome struct {
	Result Result
	// Identity is IdentityMailFrom or IdentityHelo.
	Identity string
	// Sender is the <sender> of check_host(): the MAIL FROM address,
	// or postmaster@ the HELO domain.
	Sender string
	// Domain is the <domain> checked.
	Domain string
	// Explanation is set for Fail, to be given in the SMTP reply as
	// coming from the sender's domain (§8.4). It is printable ASCII.
	Explanation string
	// Err says why for TempError and PermError.
	Err error
}

// CheckMail checks the MAIL FROM identity (§2.4) of a message from ip
// that said helo: the domain of mailFrom, or when mailFrom is empty
// (the null reverse-path, <>) the HELO domain as postmaster@helo,
// reported with the identity "helo" since that is the domain checked.
// A mailFrom without a local-part (@example.com) is checked as
// postmaster@example.com (§4.3).
func (c *Checker) CheckMail(ctx context.Context, ip netip.Addr, mailFrom, helo string) Outcome {
	if mailFrom == "" {
		return c.CheckHelo(ctx, ip, helo)
	}
	at := strings.LastIndexByte(mailFrom, '@')
	domain := ""
	if at >= 0 {
		domain = mailFrom[at+1:]
	}
	return c.check(ctx, ip, domain, mailFrom, helo, IdentityMailFrom)
}

// CheckHelo checks the HELO identity (§2.3): the HELO/EHLO domain, with
// postmaster@helo as sender. An address literal ([192.0.2.1]) or a
// name of one label gives None (§4.3).
func (c *Checker) CheckHelo(ctx context.Context, ip netip.Addr, helo string) Outcome {
	return c.check(ctx, ip, helo, "postmaster@"+helo, helo, IdentityHelo)
}

func (c *Checker) check(ctx context.Context, ip netip.Addr, domain, sender, helo, identity string) Outcome {
	res, expl, err := c.CheckHost(ctx, ip, domain, sender, helo)
	return Outcome{Result: res, Identity: identity, Sender: sender, Domain: domain, Explanation: expl, Err: err}
}
