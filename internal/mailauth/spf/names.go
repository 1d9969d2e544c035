package spf

import (
	"strings"

	mdns "github.com/miekg/dns"
)

// validName reports whether DNS can carry name (no trailing dot): at
// most 253 octets, labels of 1 to 63 octets (RFC 1035 §2.3.4).
func validName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
	}
	return true
}

// validDomain reports whether domain, the <domain> of check_host(),
// is well formed (§4.3): a name DNS can carry, of more than one label,
// of printable ASCII, neither an address literal nor a name ending in
// a numeric label, such as an IPv4 address.
func validDomain(domain string) bool {
	if !validName(domain) || !strings.Contains(domain, ".") || domain[0] == '[' {
		return false
	}
	for i := 0; i < len(domain); i++ {
		if domain[i] <= ' ' || domain[i] > '~' {
			return false
		}
	}
	return !allDigits(domain[strings.LastIndexByte(domain, '.')+1:])
}

// escapeName turns a name of raw labels into the presentation format
// github.com/miekg/dns expects and gives back: a backslash before the
// characters special in a label, \DDD for bytes that are not printable
// ASCII. A macro-expanded name may hold any of them (§7.3).
func escapeName(name string) string {
	clean := true
	for i := 0; i < len(name) && clean; i++ {
		clean = name[i] > ' ' && name[i] <= '~' && strings.IndexByte(`'@;()"\`, name[i]) < 0
	}
	if clean {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			b.WriteByte(c) // a label separator
		case c == ' ' || strings.IndexByte(`'@;()"\`, c) >= 0:
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < ' ' || c > '~':
			b.WriteByte('\\')
			b.WriteByte('0' + c/100)
			b.WriteByte('0' + c/10%10)
			b.WriteByte('0' + c%10)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// unescape undoes the presentation format of github.com/miekg/dns,
// which escapes '"' and '\' and, as \DDD, bytes that are not printable
// ASCII in the strings of TXT records and in names.
func unescape(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b = append(b, c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); n < 256 {
				b = append(b, byte(n))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// txtString returns the text of a TXT record: its strings joined with
// nothing between them (§3.3).
func txtString(t *mdns.TXT) string {
	if len(t.Txt) == 1 {
		return unescape(t.Txt[0])
	}
	var b strings.Builder
	for _, s := range t.Txt {
		b.WriteString(unescape(s))
	}
	return b.String()
}
