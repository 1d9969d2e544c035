package tlsrpt

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"

	"smtpd/internal/policytxt"
)

// Errors of ParseTXT. ErrNoRecord and ErrMultipleRecords both mean that
// the domain is to be treated as not implementing TLSRPT (RFC 8460 §3);
// ErrInvalidRecord wraps what is wrong with the one record found.
var (
	ErrNoRecord        = errors.New("tlsrpt: no v=TLSRPTv1 record")
	ErrMultipleRecords = errors.New("tlsrpt: more than one v=TLSRPTv1 record")
	ErrInvalidRecord   = errors.New("tlsrpt: invalid TLSRPT record")
)

// MaxRUA is the most destinations ParseTXT returns: a record may name
// several and the reporter MAY send to each (RFC 8460 §3), but one
// domain does not get to make the daemon send unbounded mail.
const MaxRUA = 10

// ParseTXT reads the TXT records found at _smtp._tls.DOMAIN (RFC 8460
// §3) and returns where DOMAIN wants its reports. Each string of records
// is one TXT record, its strings already joined without spaces as §3
// requires.
//
// Records that do not start with "v=TLSRPTv1" followed by ";" (after
// optional blanks, as the field-delim of the ABNF allows) are not
// TLSRPT records and are skipped; if none or more than one is left, the
// domain does not take part (ErrNoRecord, ErrMultipleRecords).
//
// The record needs exactly one rua field; other fields are extensions,
// checked against the tlsrpt-extension syntax and otherwise ignored.
// Field names are case-sensitive as the ABNF's %s strings are. A few
// deviations from the ABNF are tolerated: blanks around "=" and empty
// fields (";;").
//
// rua is a comma-separated list of URIs, in which commas and "!" must
// be percent-encoded. Every URI must be well-formed; mailto: and https:
// ones are kept, others ignored, and at least one must remain. A
// mailto: URI (RFC 6068) comes back as one "mailto:" + addr-spec per
// address, percent-decoded, ready for RCPT TO (addresses from a to=
// header field of the URI included, other header fields ignored); an
// https: URI comes back as written. Duplicates are dropped and at most
// MaxRUA are returned, in the order of the record.
func ParseTXT(records []string) (rua []string, err error) {
	var found []string
	for _, r := range records {
		if rest, ok := versionPrefix(r); ok {
			found = append(found, rest)
		}
	}
	switch len(found) {
	case 0:
		return nil, ErrNoRecord
	case 1:
	default:
		return nil, fmt.Errorf("%w (%d)", ErrMultipleRecords, len(found))
	}
	rua, err = parseFields(found[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	return rua, nil
}

// versionPrefix tells whether txt starts with tlsrpt-version and a
// field-delim, and returns the fields after the ";".
func versionPrefix(txt string) (string, bool) {
	rest, ok := strings.CutPrefix(txt, "v=TLSRPTv1")
	if !ok {
		return "", false
	}
	return strings.CutPrefix(strings.TrimLeft(rest, " \t"), ";")
}

// parseFields parses what follows the version: tlsrpt-field, separated
// by field-delim.
func parseFields(s string) ([]string, error) {
	var rua []string
	seen := false
	for f := range strings.SplitSeq(s, ";") {
		f = strings.Trim(f, " \t")
		if f == "" {
			continue
		}
		name, value, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("field %q has no \"=\"", clip(f))
		}
		name, value = strings.TrimRight(name, " \t"), strings.TrimLeft(value, " \t")
		if name != "rua" {
			if !policytxt.ValidName(name) || !policytxt.ValidValue(value) {
				return nil, fmt.Errorf("malformed field %q", clip(f))
			}
			continue
		}
		if seen {
			return nil, errors.New("more than one rua field")
		}
		seen = true
		var err error
		if rua, err = parseRUA(value); err != nil {
			return nil, err
		}
	}
	if !seen {
		return nil, errors.New("no rua field")
	}
	if len(rua) == 0 {
		return nil, errors.New("rua names no mailto: or https: URI")
	}
	return rua, nil
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func isAlnum(c byte) bool { return isAlpha(c) || '0' <= c && c <= '9' }

// parseRUA parses the value of tlsrpt-rua: tlsrpt-uri *(*WSP ","
// *WSP tlsrpt-uri).
func parseRUA(value string) ([]string, error) {
	var rua []string
	add := func(u string) {
		for _, have := range rua {
			if have == u {
				return
			}
		}
		if len(rua) < MaxRUA {
			rua = append(rua, u)
		}
	}
	for u := range strings.SplitSeq(value, ",") {
		u = strings.Trim(u, " \t")
		if u == "" {
			return nil, errors.New("empty URI in rua")
		}
		if err := checkURIChars(u); err != nil {
			return nil, fmt.Errorf("rua URI %q: %w", clip(u), err)
		}
		scheme, rest, ok := strings.Cut(u, ":")
		if !ok || !validScheme(scheme) {
			return nil, fmt.Errorf("rua URI %q has no scheme", clip(u))
		}
		switch strings.ToLower(scheme) {
		case "mailto":
			addrs, err := parseMailto(rest)
			if err != nil {
				return nil, fmt.Errorf("rua URI %q: %w", clip(u), err)
			}
			for _, a := range addrs {
				add("mailto:" + a)
			}
		case "https":
			if err := checkHTTPS(u); err != nil {
				return nil, fmt.Errorf("rua URI %q: %w", clip(u), err)
			}
			add(u)
		}
	}
	return rua, nil
}

// checkURIChars checks that u holds only what RFC 3986 allows in a
// URI, with "%" followed by two hex digits, and no "!" (RFC 8460 §3:
// commas and exclamation points MUST be encoded).
func checkURIChars(u string) error {
	for i := 0; i < len(u); i++ {
		c := u[i]
		switch {
		case c == '!':
			return errors.New(`unencoded "!"`)
		case c == '%':
			if i+2 >= len(u) || !isHex(u[i+1]) || !isHex(u[i+2]) {
				return errors.New("malformed percent-encoding")
			}
		case isAlnum(c) || strings.IndexByte("-._~:/?#[]@$&'()*+,;=", c) >= 0:
		default:
			return fmt.Errorf("character %q not allowed in a URI", c)
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// validScheme checks scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
// (RFC 3986 §3.1).
func validScheme(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// parseMailto returns the addresses of a mailto: URI without its
// scheme (RFC 6068 §2: mailtoURI = "mailto:" [ to ] [ hfields ], with to
// a percent-encoded list of addr-spec and an hfield to= adding more).
func parseMailto(rest string) ([]string, error) {
	to, hfields, _ := strings.Cut(rest, "?")
	if i := strings.IndexByte(to, '#'); i >= 0 {
		return nil, errors.New("fragment in a mailto: URI")
	}
	lists := []string{to}
	if hfields != "" {
		for hf := range strings.SplitSeq(hfields, "&") {
			name, value, ok := strings.Cut(hf, "=")
			if !ok {
				return nil, fmt.Errorf("malformed header field %q", clip(hf))
			}
			if strings.EqualFold(name, "to") {
				lists = append(lists, value)
			}
		}
	}
	var addrs []string
	for _, l := range lists {
		dec, err := url.PathUnescape(l)
		if err != nil {
			return nil, fmt.Errorf("decoding %q: %w", clip(l), err)
		}
		if dec == "" {
			continue
		}
		for a := range strings.SplitSeq(dec, ",") {
			addr, err := addrSpec(strings.TrimSpace(a))
			if err != nil {
				return nil, err
			}
			addrs = append(addrs, addr)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("no address")
	}
	return addrs, nil
}

// addrSpec checks that s is a bare addr-spec (RFC 5322 §3.4.1) and
// returns it as net/mail writes it.
func addrSpec(s string) (string, error) {
	if s == "" || strings.ContainsAny(s, "<>\r\n") {
		return "", fmt.Errorf("%q is not an addr-spec", clip(s))
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("%q is not an addr-spec: %w", clip(s), err)
	}
	if a.Name != "" {
		return "", fmt.Errorf("%q is not an addr-spec", clip(s))
	}
	return a.Address, nil
}

// checkHTTPS checks that u is an absolute https URI with a host.
func checkHTTPS(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("parsing: %w", err)
	}
	if p.Opaque != "" || p.Hostname() == "" {
		return errors.New("no host")
	}
	return nil
}

// clip shortens s for an error message: a record is the domain's text,
// not ours to repeat at any length.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
