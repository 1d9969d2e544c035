package logging

import (
	"crypto/tls"
	"strconv"
	"strings"
	"time"
)

// Event logs, at info level, one of the lines of OpenSMTPD's event
// format (OpenSMTPD 6.4 and later): a session or delivery id of 16 hex
// digits, the process ("smtp", "mta", "mda"), the event, then its
// fields, as in
//
//	1c0e5c2c4b1bd6a1 smtp connected address=192.0.2.1 host=192.0.2.1
//
// The process name that comes before the other lines is left out, so
// that the line reads "smtpd[PID]: 1c0e5c2c4b1bd6a1 smtp ..." in syslog,
// as OpenSMTPD's do, for the tools that parse those (fail2ban filters,
// log summaries). The caller escapes the values with Quote, Token and
// Clean.
func (l *Logger) Event(format string, args ...any) { l.writeAs("", levelInfo, format, args) }

// Duration formats a delay as OpenSMTPD's delay= fields do: days,
// hours, minutes and seconds, each only when not zero ("1d2h3s"), "0s"
// for none; fractions of a second are dropped.
func Duration(d time.Duration) string {
	t := int64(d / time.Second)
	if t == 0 {
		return "0s"
	}
	var b strings.Builder
	if t < 0 {
		b.WriteByte('-')
		t = -t
	}
	for _, u := range []struct {
		n    int64
		unit byte
	}{{t / 86400, 'd'}, {t / 3600 % 24, 'h'}, {t / 60 % 60, 'm'}, {t % 60, 's'}} {
		if u.n != 0 {
			b.WriteString(strconv.FormatInt(u.n, 10))
			b.WriteByte(u.unit)
		}
	}
	return b.String()
}

// AddrText writes a client or server address as OpenSMTPD does: an
// IPv4 address as it is, an IPv6 address in brackets.
func AddrText(ip string) string {
	if strings.Contains(ip, ":") && !strings.HasPrefix(ip, "[") {
		return "[" + ip + "]"
	}
	return ip
}

// TLSText describes a TLS session as OpenSMTPD's "tls ciphers=" fields
// do, version:cipher:bits, with the names OpenSSL and LibreSSL give:
// "TLSv1.3:TLS_AES_256_GCM_SHA384:256",
// "TLSv1.2:ECDHE-RSA-AES128-GCM-SHA256:128".
func TLSText(st tls.ConnectionState) string {
	iana := tls.CipherSuiteName(st.CipherSuite)
	name, ok := opensslNames[st.CipherSuite]
	if !ok {
		name = iana
	}
	return TLSVersion(st.Version) + ":" + name + ":" + strconv.Itoa(cipherBits(iana))
}

// TLSVersion names a TLS version as OpenSSL and the log parsers that
// read OpenSMTPD's and Postfix's lines do: TLSv1.3.
func TLSVersion(v uint16) string {
	return strings.Replace(tls.VersionName(v), "TLS ", "TLSv", 1)
}

// cipherBits is the strength of a cipher suite's symmetric cipher, as
// OpenSSL counts it, read from its IANA name; 0 if unknown.
func cipherBits(iana string) int {
	switch {
	case strings.Contains(iana, "AES_128"), strings.Contains(iana, "RC4_128"):
		return 128
	case strings.Contains(iana, "AES_256"), strings.Contains(iana, "CHACHA20"):
		return 256
	case strings.Contains(iana, "3DES"):
		return 112
	}
	return 0
}

// opensslNames are the OpenSSL names of the TLS 1.2 cipher suites Go
// implements; TLS 1.3 suites have the same name in both.
var opensslNames = map[uint16]string{
	tls.TLS_RSA_WITH_RC4_128_SHA:                      "RC4-SHA",
	tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA:                 "DES-CBC3-SHA",
	tls.TLS_RSA_WITH_AES_128_CBC_SHA:                  "AES128-SHA",
	tls.TLS_RSA_WITH_AES_256_CBC_SHA:                  "AES256-SHA",
	tls.TLS_RSA_WITH_AES_128_CBC_SHA256:               "AES128-SHA256",
	tls.TLS_RSA_WITH_AES_128_GCM_SHA256:               "AES128-GCM-SHA256",
	tls.TLS_RSA_WITH_AES_256_GCM_SHA384:               "AES256-GCM-SHA384",
	tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA:              "ECDHE-ECDSA-RC4-SHA",
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA:          "ECDHE-ECDSA-AES128-SHA",
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA:          "ECDHE-ECDSA-AES256-SHA",
	tls.TLS_ECDHE_RSA_WITH_RC4_128_SHA:                "ECDHE-RSA-RC4-SHA",
	tls.TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA:           "ECDHE-RSA-DES-CBC3-SHA",
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA:            "ECDHE-RSA-AES128-SHA",
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA:            "ECDHE-RSA-AES256-SHA",
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256:       "ECDHE-ECDSA-AES128-SHA256",
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256:         "ECDHE-RSA-AES128-SHA256",
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256:         "ECDHE-RSA-AES128-GCM-SHA256",
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:       "ECDHE-ECDSA-AES128-GCM-SHA256",
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:         "ECDHE-RSA-AES256-GCM-SHA384",
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384:       "ECDHE-ECDSA-AES256-GCM-SHA384",
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:   "ECDHE-RSA-CHACHA20-POLY1305",
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256: "ECDHE-ECDSA-CHACHA20-POLY1305",
}

// Quote escapes a value that goes between double quotes (command="...",
// stat="..."), as OpenSMTPD's strnvis(VIS_SAFE|VIS_CSTYLE) does, and
// also the double quote, so that the value cannot end the field early:
// a backslash and a double quote are preceded by a backslash, tab, CR
// and LF are \t, \r and \n, other control characters and the octets of
// non-ASCII text are \ooo.
func Quote(s string) string {
	return escape(s, func(c byte) bool { return c < ' ' || c >= 0x7f || c == '"' })
}

// Token escapes a value that stands alone, without quotes (user=...):
// Quote's escapes, and also a space, so that the value stays one word,
// as strnvis(VIS_WHITE|VIS_SAFE) does.
func Token(s string) string {
	return escape(s, func(c byte) bool { return c <= ' ' || c >= 0x7f })
}

// Clean escapes the control characters of a value that may have
// spaces and text in any language (an address in from=<...>, the last
// field of a line): they become \t, \r, \n or \ooo, and a backslash is
// doubled, so that a value is always one line, never a forged one.
func Clean(s string) string {
	return escape(s, func(c byte) bool { return c < ' ' || c == 0x7f })
}

// escape writes s with the octets special says are special, and the
// backslash, escaped.
func escape(s string, special func(byte) bool) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' || special(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			b.WriteString(`\\`)
		case !special(c):
			b.WriteByte(c)
		case c == '"':
			b.WriteString(`\"`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte('\\')
			b.WriteByte('0' + c>>6)
			b.WriteByte('0' + c>>3&7)
			b.WriteByte('0' + c&7)
		}
	}
	return b.String()
}
