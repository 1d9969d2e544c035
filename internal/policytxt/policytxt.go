// Package policytxt holds the field syntax that the TXT records of
// MTA-STS (RFC 8461 §3.1), TLS-RPT (RFC 8460 §3), and the MTA-STS
// policy file's extension keys (RFC 8461 §3.2) share: "name=value"
// fields whose extension names and values the two RFCs define alike.
package policytxt

// ValidName reports whether s is a field name: a letter or digit, then
// up to 31 letters, digits, '_', '-' or '.' (sts-ext-name of RFC 8461
// §3.1, tlsrpt-ext-name of RFC 8460 §3).
func ValidName(s string) bool {
	if s == "" || len(s) > 32 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// ValidValue reports whether s is the value of an extension field:
// printable ASCII other than space, '=' and ';' (sts-ext-value,
// tlsrpt-ext-value: 1*(%x21-3A / %x3C / %x3E-7E)).
func ValidValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '=' || c == ';' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
