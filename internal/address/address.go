// Package address splits mail addresses into a local part and a domain,
// as the match rules, the expansion of aliases and virtual tables, the
// delivery templates and the delivery agents all see them: one parsed
// form for the whole daemon.
package address

import (
	"fmt"
	"strings"
)

// SubAddressDelimiter separates a user from a tag: user+tag@domain.
const SubAddressDelimiter = "+"

// Address is a mail address split at its last '@'; User may carry a
// +tag, Domain is lowercase and empty for an address without one
// (RCPT TO:<postmaster>).
type Address struct {
	User, Domain string
}

// Parse checks and splits an address given by a client or a table. The
// domain is lowercased and loses a trailing dot.
func Parse(s string) (Address, error) {
	if s == "" || strings.ContainsAny(s, " \t\r\n<>\x00") {
		return Address{}, fmt.Errorf("address: invalid address %q", s)
	}
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return Address{User: s}, nil
	}
	a := Address{User: s[:i], Domain: strings.ToLower(strings.TrimSuffix(s[i+1:], "."))}
	// a domain has no empty label (RFC 5321 §4.1.2): "a@.." is not
	// "a@." made absolute
	if a.User == "" || a.Domain == "" || strings.HasPrefix(a.Domain, ".") || strings.Contains(a.Domain, "..") || strings.HasSuffix(a.Domain, ".") {
		return Address{}, fmt.Errorf("address: invalid address %q", s)
	}
	return a, nil
}

// Split splits an address that was checked when it was received (one
// kept in an envelope) without checking it again; the empty address of
// a bounce stays empty.
func Split(s string) Address {
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		return Address{User: s[:i], Domain: s[i+1:]}
	}
	return Address{User: s}
}

// String returns user@domain, or the user alone when there is no domain.
func (a Address) String() string {
	if a.Domain == "" {
		return a.User
	}
	return a.User + "@" + a.Domain
}

// Base returns the user without its +tag, and the tag.
func (a Address) Base() (user, tag string) {
	u, t, _ := strings.Cut(a.User, SubAddressDelimiter)
	return u, t
}

// InDomain reports whether the domain name is domain or one below it,
// without regard to case: mail.example.org is in example.org,
// badexample.org and .example.org are not.
func InDomain(name, domain string) bool {
	if len(name) == len(domain) {
		return strings.EqualFold(name, domain)
	}
	return len(name) > len(domain)+1 && name[len(name)-len(domain)-1] == '.' &&
		strings.EqualFold(name[len(name)-len(domain):], domain)
}

// IsHostname reports whether s is a host name in ASCII without the
// trailing dot: labels of letters, digits and inner hyphens of at most
// 63 bytes each, at most 253 bytes in all (RFC 5321 §4.1.2 Domain, RFC
// 1035 §2.3.4).
func IsHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
