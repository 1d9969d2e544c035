package dmarc

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	msgdmarc "github.com/emersion/go-msgauth/dmarc"

	"smtpd/internal/dns"
)

// discovery is what policy discovery found: count DMARC records at
// _dmarc.domain, and the text of the first.
type discovery struct {
	domain string
	count  int
	txt    string
}

// discover looks for the DMARC record of the author domain from, whose
// organizational domain is org (RFC 7489 §6.6.3):
//
//  1. query _dmarc.<from>;
//  2. discard the TXT records that do not start with v=DMARC1;
//  3. if none is left, query _dmarc.<org>, if different;
//  4. discard likewise;
//  5. several records or none: no policy applies.
//
// A name that does not exist counts as no record. Any other DNS error
// stops discovery and is returned: the caller reports temperror rather
// than none, since the domain may well have a policy (§6.6.3: "any
// indication that there is no such record as opposed to a transient
// DNS error").
func (c *Checker) discover(ctx context.Context, from, org string) (discovery, error) {
	d, err := c.lookup(ctx, from)
	if err != nil || d.count > 0 || org == from {
		return d, err
	}
	return c.lookup(ctx, org)
}

// lookup counts the DMARC records at _dmarc.<domain>.
func (c *Checker) lookup(ctx context.Context, domain string) (discovery, error) {
	name := "_dmarc." + domain
	txts, err := c.Resolver.TXT(ctx, name)
	if err != nil {
		if dns.IsPermanent(err) {
			return discovery{}, nil
		}
		return discovery{}, fmt.Errorf("dmarc: looking up %s: %w", name, err)
	}
	d := discovery{}
	for _, txt := range txts {
		if _, ok := versionTag(txt); !ok {
			continue
		}
		if d.count == 0 {
			d.txt = txt
		}
		d.count++
	}
	if d.count > 0 {
		d.domain = domain
	}
	return d, nil
}

// versionTag tells whether txt starts with the version tag of DMARC
// (RFC 7489 §6.4: dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52
// %x43 %x31, so "v" in any case and "DMARC1" exactly) and returns what
// follows it. "v=DMARC10" and "v=DMARC1p=none" are not DMARC records.
func versionTag(txt string) (rest string, ok bool) {
	if txt == "" || (txt[0] != 'v' && txt[0] != 'V') {
		return "", false
	}
	s := strings.TrimLeft(txt[1:], " \t")
	s, ok = strings.CutPrefix(s, "=")
	if !ok {
		return "", false
	}
	s, ok = strings.CutPrefix(strings.TrimLeft(s, " \t"), "DMARC1")
	if !ok {
		return "", false
	}
	s = strings.TrimLeft(s, " \t")
	if s != "" && s[0] != ';' {
		return "", false
	}
	return s, true
}

// isOptionalTag tells whether k is one of the tags of RFC 7489 §6.3
// other than v, p and sp: those with a default, or without which the
// record still works.
func isOptionalTag(k string) bool {
	switch k {
	case "adkim", "aspf", "fo", "pct", "rf", "ri", "rua", "ruf":
		return true
	}
	return false
}

// parseRecord parses a DMARC record with msgdmarc.Parse, after the
// leniency RFC 7489 asks of receivers:
//
//   - §6.3: "Syntax errors in the remainder of the record SHOULD be
//     discarded in favor of default values (if any) or ignored
//     outright": an optional tag with an invalid value, or a part
//     without "=", is dropped (an invalid "pct" means 100, an invalid
//     "adkim" relaxed); unknown tags are ignored.
//   - §6.6.3 step 6: with an invalid or missing "p", or an invalid "sp",
//     the record reads as "p=none" if its "rua" has a valid URI
//     (fallback is then true); otherwise it is unusable, an error.
//
// The order of the tags is not checked: §6.3 requires "p" second of the
// publisher, and msgdmarc.Parse does not mind, nor do we.
func parseRecord(txt string) (rec *msgdmarc.Record, fallback bool, err error) {
	rest, ok := versionTag(txt)
	if !ok {
		return nil, false, fmt.Errorf("dmarc: not a DMARC1 record")
	}
	var policy, kept []string
	ruaValid := false
	for part := range strings.SplitSeq(rest, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		tag := k + "=" + v
		switch {
		case k == "p" || k == "sp":
			policy = append(policy, tag)
		case isOptionalTag(k):
			if _, err := msgdmarc.Parse("v=DMARC1; p=none; " + tag); err != nil {
				continue
			}
			kept = append(kept, tag)
			if k == "rua" && validURIList(v) {
				ruaValid = true
			}
		}
	}
	rec, err = msgdmarc.Parse(strings.Join(append(append([]string{"v=DMARC1"}, policy...), kept...), "; "))
	if err == nil {
		return rec, false, nil
	}
	if !ruaValid {
		return nil, false, err
	}
	rec, err = msgdmarc.Parse(strings.Join(append([]string{"v=DMARC1", "p=none"}, kept...), "; "))
	if err != nil {
		return nil, false, err
	}
	return rec, true, nil
}

// validURIList tells whether a "rua" value has at least one valid
// reporting URI (RFC 7489 §6.4: dmarc-uri = URI [ "!" 1*DIGIT [ "k" /
// "m" / "g" / "t" ] ]): an absolute URI, with a scheme.
func validURIList(v string) bool {
	for u := range strings.SplitSeq(v, ",") {
		u = strings.TrimSpace(u)
		if i := strings.LastIndexByte(u, '!'); i >= 0 {
			u = u[:i]
		}
		if p, err := url.Parse(u); err == nil && p.Scheme != "" && p.Opaque+p.Host+p.Path != "" {
			return true
		}
	}
	return false
}
