// Package mtasts implements the sending side of SMTP MTA Strict
// Transport Security (MTA-STS, RFC 8461): a recipient domain announces
// in a TXT record at _mta-sts.DOMAIN that it has a policy, and serves
// the policy over HTTPS at https://mta-sts.DOMAIN/.well-known/mta-sts.txt.
// The policy names the MX hosts that may receive the domain's mail and
// says whether a sender must refuse to deliver over a connection that
// is not TLS with a certificate valid for one of them (mode enforce),
// should only report such a delivery (testing), or has no policy (none).
//
// The package holds the parsers of the record (ParseTXT, §3.1) and of
// the policy (ParsePolicy, §3.2), MX matching (Policy.Match, §4.1), the
// HTTPS fetch (Fetcher, §3.3), a persistent policy cache in a directory
// (Cache, §5.1) and the discovery that ties them together (Resolver,
// §5.1, §10.2). It resolves no names itself: the caller passes the TXT
// lookup and, for the fetch, a dialer, since the process that fetches
// runs chrooted and resolves through another one.
//
// Domains and MX host names are handled in ASCII (A-labels), as DNS
// carries them.
package mtasts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"smtpd/internal/address"
	"smtpd/internal/policytxt"
)

// Mode is a policy's mode (RFC 8461 §5): what a sender does with an MX
// host that the policy does not list or that fails TLS validation.
type Mode string

// The modes of RFC 8461 §3.2 and §5.
const (
	// ModeEnforce: mail is delivered only to a listed MX host over TLS
	// with a valid certificate.
	ModeEnforce Mode = "enforce"
	// ModeTesting: failures are reported (TLS-RPT, RFC 8460) but mail is
	// delivered as without a policy.
	ModeTesting Mode = "testing"
	// ModeNone: the domain has no active policy; a sender treats it as
	// without one. Published to retire a policy (RFC 8461 §8.3).
	ModeNone Mode = "none"
)

func (m Mode) valid() bool {
	return m == ModeEnforce || m == ModeTesting || m == ModeNone
}

// MaxMaxAge is the largest max_age a policy may give, a year (RFC 8461
// §3.2).
const MaxMaxAge = 31557600 * time.Second

// Policy is an MTA-STS policy (RFC 8461 §3.2), with what discovery
// knows of it.
type Policy struct {
	Mode Mode
	// MX are the MX host patterns, as the policy writes them: a host
	// name, or "*." and a host name for any host one label below it.
	MX []string
	// MaxAge is how long the policy may be used after it was fetched.
	MaxAge time.Duration
	// ID is the id of the TXT record the policy was fetched for (RFC
	// 8461 §3.1), empty when that is not known.
	ID string
	// Fetched is when the policy was fetched over HTTPS.
	Fetched time.Time
}

// ErrPolicySyntax marks a policy that does not parse: the fetch found no
// valid policy (RFC 8461 §3.2; TLS-RPT result type sts-policy-invalid).
var ErrPolicySyntax = errors.New("invalid MTA-STS policy")

// ParsePolicy parses a policy file as RFC 8461 §3.2 defines it: lines
// "key: value", ended by CRLF or LF. The fields version (which must be
// STSv1), mode and max_age are required, mx (repeatable) is unless mode
// is none. Blank lines and the white space around keys and values are
// tolerated, fields with other valid names are ignored, and of a field
// other than mx given twice only the first counts (§3.2). Errors wrap
// ErrPolicySyntax and name the line.
func ParsePolicy(body []byte) (*Policy, error) {
	p := &Policy{}
	seen := map[string]bool{}
	rest := string(body)
	for n := 1; rest != ""; n++ {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		line = strings.TrimSuffix(line, "\r")
		if trimWSP(line) == "" {
			continue
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: not a key: value pair", ErrPolicySyntax, n)
		}
		key, value = trimWSP(key), trimWSP(value)
		if !policytxt.ValidName(key) {
			return nil, fmt.Errorf("%w: line %d: invalid field name %q", ErrPolicySyntax, n, key)
		}
		if seen[key] && key != "mx" {
			continue
		}
		seen[key] = true
		if err := p.setField(key, value); err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrPolicySyntax, n, err)
		}
	}
	for _, k := range []string{"version", "mode", "max_age"} {
		if !seen[k] {
			return nil, fmt.Errorf("%w: no %s field", ErrPolicySyntax, k)
		}
	}
	if len(p.MX) == 0 && p.Mode != ModeNone {
		return nil, fmt.Errorf("%w: no mx field in mode %s", ErrPolicySyntax, p.Mode)
	}
	return p, nil
}

// setField sets the field key of p from value. Keys it does not know
// are extensions, ignored.
func (p *Policy) setField(key, value string) error {
	switch key {
	case "version":
		if value != "STSv1" {
			return fmt.Errorf("version %q, want STSv1", value)
		}
	case "mode":
		m := Mode(value)
		if !m.valid() {
			return fmt.Errorf("mode %q, want enforce, testing or none", value)
		}
		p.Mode = m
	case "max_age":
		d, err := parseMaxAge(value)
		if err != nil {
			return err
		}
		p.MaxAge = d
	case "mx":
		mx := strings.TrimSuffix(value, ".")
		if !validMXPattern(mx) {
			return fmt.Errorf("mx %q is not a host name or *. and a host name", value)
		}
		p.MX = append(p.MX, mx)
	}
	return nil
}

// parseMaxAge parses max_age: 1 to 10 digits (RFC 8461 §3.2), a number
// of seconds no larger than MaxMaxAge.
func parseMaxAge(v string) (time.Duration, error) {
	if v == "" || len(v) > 10 || strings.Trim(v, "0123456789") != "" {
		return 0, fmt.Errorf("max_age %q is not 1 to 10 digits", v)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("max_age %q: %w", v, err)
	}
	d := time.Duration(n) * time.Second
	if d > MaxMaxAge {
		return 0, fmt.Errorf("max_age %d is over the maximum of %d", n, int64(MaxMaxAge/time.Second))
	}
	return d, nil
}

// Strings returns the policy's lines in canonical form, version, mode,
// the mx lines in order, max_age: the array TLS-RPT reports carry as
// policy-string (RFC 8460 §4.4). Extension fields, which ParsePolicy
// drops, are not among them.
func (p *Policy) Strings() []string {
	lines := make([]string, 0, 3+len(p.MX))
	lines = append(lines, "version: STSv1", "mode: "+string(p.Mode))
	for _, mx := range p.MX {
		lines = append(lines, "mx: "+mx)
	}
	return append(lines, "max_age: "+strconv.FormatInt(int64(p.MaxAge/time.Second), 10))
}

// String returns the policy as a policy file, the lines of Strings each
// ended by CRLF. ParsePolicy gives the same policy back.
func (p *Policy) String() string {
	return strings.Join(p.Strings(), "\r\n") + "\r\n"
}

// Expires returns when the policy stops being valid: max_age after it
// was fetched (RFC 8461 §3.2, §5.1).
func (p *Policy) Expires() time.Time {
	return p.Fetched.Add(p.MaxAge)
}

// expired reports whether p is no longer valid at now.
func (p *Policy) expired(now time.Time) bool {
	return !now.Before(p.Expires())
}

// Match reports whether mxHost is one of the policy's MX hosts (RFC 8461
// §4.1): equal ignoring case and a trailing dot, or, for a pattern
// "*.example.com", one label followed by example.com. The wildcard
// stands for exactly one label: it matches mail.example.com, not
// example.com nor a.b.example.com.
func (p *Policy) Match(mxHost string) bool {
	host := strings.TrimSuffix(mxHost, ".")
	if host == "" {
		return false
	}
	for _, pat := range p.MX {
		pat = strings.TrimSuffix(pat, ".")
		if parent, ok := strings.CutPrefix(pat, "*."); ok {
			label, rest, found := strings.Cut(host, ".")
			if found && label != "" && strings.EqualFold(rest, parent) {
				return true
			}
		} else if strings.EqualFold(pat, host) {
			return true
		}
	}
	return false
}

// clone returns a copy of p that shares nothing with it.
func (p *Policy) clone() *Policy {
	c := *p
	c.MX = append([]string(nil), p.MX...)
	return &c
}

// trimWSP removes the spaces and tabs (WSP) around s.
func trimWSP(s string) string {
	return strings.Trim(s, " \t")
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// validMXPattern reports whether s is a host name, possibly after "*."
// (sts-policy-mx-value of RFC 8461 §3.2).
func validMXPattern(s string) bool {
	return address.IsHostname(strings.TrimPrefix(s, "*."))
}

// normalizeDomain returns domain lower-cased and without its trailing
// dot, or an error if it is not a host name.
func normalizeDomain(domain string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	if !address.IsHostname(d) {
		return "", fmt.Errorf("invalid domain %q", domain)
	}
	return d, nil
}
