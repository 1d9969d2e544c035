package dmarc

import (
	"errors"
	"fmt"
	"strings"

	msgdmarc "github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// normalizeDomain returns domain as DMARC compares and looks it up:
// lowercase, without a final dot, U-labels converted to A-labels (RFC
// 7489 §6.6.1, after RFC 5890 §2.3). It refuses what is not a
// domain name: an address literal such as "[192.0.2.1]", an IPv4
// address, empty or long labels, characters other than letters,
// digits, "-" and "_".
func normalizeDomain(domain string) (string, error) {
	d := strings.TrimSuffix(domain, ".")
	if d == "" {
		return "", errors.New("empty domain")
	}
	for i := range len(d) {
		if d[i] >= 0x80 {
			a, err := idna.Lookup.ToASCII(d)
			if err != nil {
				return "", fmt.Errorf("domain %q: %w", domain, err)
			}
			d = a
			break
		}
	}
	d = strings.ToLower(d)
	if len(d) > 253 {
		return "", fmt.Errorf("domain %q longer than 253 octets", domain)
	}
	digits := true
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("domain %q has an empty or long label", domain)
		}
		digits = true
		for i := range len(label) {
			switch c := label[i]; {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c == '-', c == '_':
				digits = false
			default:
				return "", fmt.Errorf("domain %q has a character not allowed in a host name", domain)
			}
		}
	}
	if digits {
		// an all-numeric top label: an IPv4 address, not a domain
		return "", fmt.Errorf("domain %q is an address", domain)
	}
	return d, nil
}

// OrganizationalDomain returns the organizational domain of domain
// (RFC 7489 §3.2): the public suffix that matches most labels of
// domain, plus one label. The public suffix list is that of
// golang.org/x/net/publicsuffix, ICANN and private sections, with "*"
// as the default rule, so "a.b.example.co.uk" gives "example.co.uk"
// and "mail.example.test" gives "example.test". A domain that is
// itself a public suffix ("co.uk") is its own organizational domain:
// §3.2 then has no label to add, and such a domain is not exempt from
// DMARC (§6.6.1). domain should be normalized: lowercase A-labels.
func OrganizationalDomain(domain string) string {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	if err != nil {
		return domain
	}
	return org
}

// aligned tells whether the authenticated domain id is aligned with
// the author domain from (RFC 7489 §3.1.1, §3.1.2): in strict mode the
// two must be equal, in relaxed mode (the default) they must have the
// same organizational domain. Both are normalized.
func aligned(mode msgdmarc.AlignmentMode, from, id string) bool {
	if from == id {
		return true
	}
	if mode == msgdmarc.AlignmentStrict {
		return false
	}
	return OrganizationalDomain(from) == OrganizationalDomain(id)
}
