package server

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Limits of RFC 5321 §4.5.3.1 on what a client may send in a path.
const (
	// maxLocalPart is the longest local part (§4.5.3.1.1).
	maxLocalPart = 64
	// maxDomain is the longest domain (§4.5.3.1.2).
	maxDomain = 255
	// maxPath is the longest path, angle brackets included
	// (§4.5.3.1.3).
	maxPath = 256
	// maxLabel is the longest label of a domain (RFC 1035 §2.3.4).
	maxLabel = 63
	// maxEnvID is the longest ENVID value (RFC 3461 §4.4).
	maxEnvID = 100
	// maxORcpt is the longest ORCPT value (RFC 3461 §4.2).
	maxORcpt = 500
)

// Errors of the command parser; the session turns each into its reply.
var (
	errAddrSyntax   = errors.New("address syntax error")
	errAddrTooLong  = errors.New("address too long")
	errAddrNonASCII = errors.New("non-ASCII address without SMTPUTF8")
	errParamSyntax  = errors.New("malformed parameter")
	errParamUnknown = errors.New("unknown parameter")
)

// splitCommand splits a command line into its verb, upper-cased, and
// its argument, without the spaces around it.
func splitCommand(line string) (verb, arg string) {
	verb, arg, _ = strings.Cut(line, " ")
	return strings.ToUpper(verb), strings.Trim(arg, " ")
}

// validLine reports whether a command line is free of control
// characters: a NUL, a CR or another control character inside a command
// is never legitimate, and letting one through invites injection into
// whatever the argument is written to (logs, envelopes, headers).
func validLine(line string) bool {
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// cutPrefixFold is strings.CutPrefix, ignoring ASCII case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// parsePath parses the path at the start of s ("<...>"), as MAIL FROM
// and RCPT TO carry it, and returns the mailbox and what follows it.
// The null path "<>" gives "". Like OpenSMTPD, it accepts a space
// before the path and a mailbox without a domain, and refuses a path
// without angle brackets and one with comments. A source route is
// accepted and ignored (RFC 5321 Appendix C). Non-ASCII text is allowed
// only with utf8 (RFC 6531 §3.3).
//
// Quoted local parts (RFC 5321 §4.1.2 Quoted-string) are refused when
// they hold spaces, backslashes or specials, as OpenSMTPD refuses them,
// save "@": dot-atoms joined by "@" stay acceptable, since a quoted
// address inside a local part ("user@elsewhere"@gateway) is how mail
// was routed through gateways, and the daemon has always taken it as a
// local part of its own. Such a local part is returned quoted as given;
// one whose content is a plain dot-atom is returned unquoted, since both
// forms name the same mailbox (RFC 5322 §3.4.1).
func parsePath(s string, utf8ok bool) (mailbox, rest string, err error) {
	s = strings.TrimLeft(s, " ")
	if !strings.HasPrefix(s, "<") {
		return "", "", errAddrSyntax
	}
	end := strings.IndexByte(s, '>')
	if end < 0 {
		return "", "", errAddrSyntax
	}
	path, rest := s[1:end], s[end+1:]
	if rest != "" && rest[0] != ' ' {
		return "", "", errAddrSyntax
	}
	if !isASCII(path) {
		if !utf8ok {
			return "", "", errAddrNonASCII
		}
		if !utf8.ValidString(path) {
			return "", "", errAddrSyntax
		}
	}
	if end+1 > maxPath {
		return "", "", errAddrTooLong
	}
	if path == "" {
		return "", rest, nil
	}
	if path[0] == '@' {
		route, mbox, ok := strings.Cut(path, ":")
		if !ok || !validRoute(route) {
			return "", "", errAddrSyntax
		}
		path = mbox
	}
	local, domain := path, ""
	if at := strings.LastIndexByte(path, '@'); at >= 0 {
		local, domain = path[:at], path[at+1:]
		if len(domain) > maxDomain {
			return "", "", errAddrTooLong
		}
		if !validDomain(domain, utf8ok, false) {
			return "", "", errAddrSyntax
		}
	}
	if len(local) > maxLocalPart {
		return "", "", errAddrTooLong
	}
	if strings.HasPrefix(local, `"`) {
		if len(local) < 2 || !strings.HasSuffix(local, `"`) {
			return "", "", errAddrSyntax
		}
		content := local[1 : len(local)-1]
		for _, part := range strings.Split(content, "@") {
			if !validDotString(part) {
				return "", "", errAddrSyntax
			}
		}
		if !strings.Contains(content, "@") {
			local = content
		}
	} else if !validDotString(local) {
		return "", "", errAddrSyntax
	}
	if domain == "" {
		return local, rest, nil
	}
	return local + "@" + domain, rest, nil
}

// validRoute checks a source route: "@" domain *( "," "@" domain )
// (RFC 5321 §4.1.2, A-d-l).
func validRoute(route string) bool {
	for _, hop := range strings.Split(route, ",") {
		d, ok := strings.CutPrefix(hop, "@")
		if !ok || !validDomain(d, false, false) {
			return false
		}
	}
	return true
}

// validDotString checks a local part: atoms of atext joined by single
// dots (RFC 5321 §4.1.2 Dot-string). Non-ASCII UTF-8 counts as atext
// (RFC 6531 §3.3); the caller has checked it was allowed.
func validDotString(s string) bool {
	if s == "" {
		return false
	}
	for _, atom := range strings.Split(s, ".") {
		if atom == "" {
			return false
		}
		for i := 0; i < len(atom); i++ {
			if !isAtext(atom[i]) {
				return false
			}
		}
	}
	return true
}

// isAtext reports whether c may appear in an atom (RFC 5322 §3.2.3).
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// validDomain checks a domain or an address literal (RFC 5321 §4.1.2,
// §4.1.3). Labels are letters, digits and hyphens, not starting or
// ending with a hyphen; with utf8, U-labels may also hold non-ASCII
// characters (RFC 6531 §3.3). A trailing dot is refused, as OpenSMTPD
// refuses it. underscore allows "_", which some clients put in their
// HELO names.
func validDomain(d string, utf8ok, underscore bool) bool {
	if d == "" || len(d) > maxDomain {
		return false
	}
	if d[0] == '[' {
		return validAddressLiteral(d)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > maxLabel || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			switch c := label[i]; {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
			case c == '_' && underscore:
			case c >= 0x80 && utf8ok:
			default:
				return false
			}
		}
	}
	return true
}

// validAddressLiteral checks "[192.0.2.1]" and "[IPv6:2001:db8::1]"
// (RFC 5321 §4.1.3). General address literals are refused, as
// OpenSMTPD refuses them: no mail system uses them.
func validAddressLiteral(d string) bool {
	inner, ok := strings.CutSuffix(d[1:], "]")
	if !ok {
		return false
	}
	if v6, ok := cutPrefixFold(inner, "IPv6:"); ok {
		a, err := netip.ParseAddr(v6)
		return err == nil && a.Is6() && a.Zone() == ""
	}
	a, err := netip.ParseAddr(inner)
	return err == nil && a.Is4()
}

// validHelo checks the argument of HELO and EHLO: a domain or an
// address literal, as OpenSMTPD checks it (RFC 5321 §4.1.1.1).
func validHelo(name string) bool {
	return validDomain(name, false, true)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// param is one ESMTP parameter of MAIL or RCPT.
type param struct {
	key, value string
	hasValue   bool
}

// parseParams splits the parameters after a path (RFC 5321 §4.1.2
// Mail-parameters): keywords of letters, digits and hyphens, values of
// printable characters other than "=" (with UTF-8 allowed, RFC 6531
// §3.3; each parameter checks its own value). Keywords are upper-cased;
// one given twice is an error.
func parseParams(s string) ([]param, error) {
	var params []param
	for _, f := range strings.Split(s, " ") {
		if f == "" {
			continue
		}
		key, value, hasValue := strings.Cut(f, "=")
		if !validKeyword(key) || hasValue && !validParamValue(value) {
			return nil, errParamSyntax
		}
		key = strings.ToUpper(key)
		for _, p := range params {
			if p.key == key {
				return nil, errParamSyntax
			}
		}
		params = append(params, param{key: key, value: value, hasValue: hasValue})
	}
	return params, nil
}

func validKeyword(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return false
		}
	}
	return true
}

func validParamValue(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < '!' || c == '=' || c == 0x7f {
			return false
		}
	}
	return utf8.ValidString(v)
}

// Body types of the BODY parameter (RFC 6152, RFC 3030).
const (
	Body7Bit       = "7BIT"
	Body8BitMIME   = "8BITMIME"
	BodyBinaryMIME = "BINARYMIME"
)

// MailParams are the ESMTP parameters of MAIL FROM, parsed and checked.
type MailParams struct {
	// Size is the declared message size (RFC 1870), 0 if none was
	// declared; a size too large for an int64 is math.MaxInt64.
	Size int64
	// Body is Body7Bit, Body8BitMIME, BodyBinaryMIME, or "" if not
	// given (RFC 6152, RFC 3030).
	Body string
	// SMTPUTF8 is set when the transaction may carry UTF-8 addresses
	// and header fields (RFC 6531).
	SMTPUTF8 bool
	// RequireTLS asks that the message be relayed over TLS only (RFC
	// 8689).
	RequireTLS bool
	// Ret is FULL or HDRS, what a DSN returns of the message (RFC 3461
	// §4.3), or "".
	Ret string
	// EnvID is the envelope identifier, xtext-decoded (RFC 3461 §4.4).
	EnvID string
	// Auth is the AUTH parameter, xtext-decoded (RFC 4954 §5): the
	// mailbox that submitted the message first. It is kept only in an
	// authenticated session; "<>" gives "".
	Auth string
}

// mailOptions says what parseMailParams may accept.
type mailOptions struct {
	binaryMIME, requireTLS, authenticated bool
}

// parseMailParams checks the parameters of MAIL FROM. Unknown ones give
// errParamUnknown (555, RFC 5321 §4.1.1.11), malformed ones
// errParamSyntax (501).
func parseMailParams(params []param, o mailOptions) (MailParams, error) {
	var m MailParams
	for _, p := range params {
		switch p.key {
		case "SIZE":
			n, ok := parseSize(p.value)
			if !ok {
				return m, errParamSyntax
			}
			m.Size = n
		case "BODY":
			switch v := strings.ToUpper(p.value); v {
			case Body7Bit, Body8BitMIME:
				m.Body = v
			case BodyBinaryMIME:
				if !o.binaryMIME {
					return m, errParamUnknown
				}
				m.Body = v
			default:
				return m, errParamSyntax
			}
		case "SMTPUTF8":
			// RFC 6531 §3.4: the parameter has no value
			if p.hasValue {
				return m, errParamSyntax
			}
			m.SMTPUTF8 = true
		case "REQUIRETLS":
			// RFC 8689: no value; offered only under TLS
			if !o.requireTLS {
				return m, errParamUnknown
			}
			if p.hasValue {
				return m, errParamSyntax
			}
			m.RequireTLS = true
		case "RET":
			switch v := strings.ToUpper(p.value); v {
			case "FULL", "HDRS":
				m.Ret = v
			default:
				return m, errParamSyntax
			}
		case "ENVID":
			v, ok := decodeXtext(p.value)
			if !ok || len(p.value) > maxEnvID {
				return m, errParamSyntax
			}
			m.EnvID = v
		case "AUTH":
			v, ok := decodeXtext(p.value)
			if !ok {
				return m, errParamSyntax
			}
			if o.authenticated && v != "<>" {
				m.Auth = v
			}
		default:
			return m, errParamUnknown
		}
	}
	return m, nil
}

// parseSize parses the value of SIZE: any string of digits, however
// long; one past the range of int64 is math.MaxInt64, which is over any
// limit (RFC 1870 §6).
func parseSize(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (math.MaxInt64-int64(c-'0'))/10 {
			n = math.MaxInt64
			continue
		}
		if n != math.MaxInt64 {
			n = n*10 + int64(c-'0')
		}
	}
	return n, true
}

// RcptParams are the ESMTP parameters of RCPT TO, parsed and checked.
type RcptParams struct {
	// Notify is nil, or NEVER alone, or some of SUCCESS, FAILURE and
	// DELAY (RFC 3461 §4.1), upper-cased.
	Notify []string
	// ORcptType is the address type of ORCPT, as given (RFC 3461
	// §4.2), such as rfc822 or utf-8; "" if there is no ORCPT.
	ORcptType string
	// ORcpt is the original recipient, decoded from xtext, or from
	// utf-8-addr-xtext for the utf-8 type (RFC 6533 §3).
	ORcpt string
}

// parseRcptParams checks the parameters of RCPT TO.
func parseRcptParams(params []param, utf8ok bool) (RcptParams, error) {
	var r RcptParams
	for _, p := range params {
		switch p.key {
		case "NOTIFY":
			n, ok := parseNotify(p.value)
			if !ok {
				return r, errParamSyntax
			}
			r.Notify = n
		case "ORCPT":
			typ, addr, ok := parseORcpt(p.value, utf8ok)
			if !ok {
				return r, errParamSyntax
			}
			r.ORcptType, r.ORcpt = typ, addr
		default:
			return r, errParamUnknown
		}
	}
	return r, nil
}

// parseNotify checks NOTIFY: NEVER, or a list of SUCCESS, FAILURE and
// DELAY, each at most once (RFC 3461 §4.1).
func parseNotify(v string) ([]string, bool) {
	var list []string
	for _, n := range strings.Split(strings.ToUpper(v), ",") {
		switch n {
		case "NEVER", "SUCCESS", "FAILURE", "DELAY":
		default:
			return nil, false
		}
		for _, seen := range list {
			if seen == n {
				return nil, false
			}
		}
		list = append(list, n)
	}
	if len(list) > 1 {
		for _, n := range list {
			if n == "NEVER" {
				return nil, false
			}
		}
	}
	return list, true
}

// parseORcpt checks ORCPT: addr-type ";" xtext (RFC 3461 §4.2), where
// the utf-8 type has its own encoding (RFC 6533 §3).
func parseORcpt(v string, utf8ok bool) (typ, addr string, ok bool) {
	typ, enc, found := strings.Cut(v, ";")
	if !found || typ == "" || enc == "" || len(v) > maxORcpt || !validAtom(typ) {
		return "", "", false
	}
	if strings.EqualFold(typ, "utf-8") {
		addr, ok = decodeUTF8AddrXtext(enc, utf8ok)
	} else {
		addr, ok = decodeXtext(enc)
	}
	return typ, addr, ok
}

func validAtom(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isAtext(s[i]) || s[i] >= 0x80 {
			return false
		}
	}
	return s != ""
}

// decodeXtext decodes xtext (RFC 3461 §4): printable ASCII except "+"
// and "=", and "+" followed by two upper-case hex digits. The decoded
// text must be free of control characters: it ends up in envelopes and
// DSNs.
func decodeXtext(s string) (string, bool) {
	if s == "" {
		return "", false
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) {
				return "", false
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", false
			}
			c = hi<<4 | lo
			if c < ' ' || c == 0x7f {
				return "", false
			}
			i += 2
		case c < '!' || c > '~' || c == '=':
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

// unhex decodes an upper-case hex digit, as xtext requires.
func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// decodeUTF8AddrXtext decodes utf-8-addr-xtext, and with utf8ok also
// utf-8-addr-unitext (RFC 6533 §3): "\x{HEX}" stands for a character,
// and "+", "=", "\", spaces and controls must be so escaped.
func decodeUTF8AddrXtext(s string, utf8ok bool) (string, bool) {
	if !utf8.ValidString(s) {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			rest, ok := strings.CutPrefix(s[i+1:], "x{")
			end := strings.IndexByte(rest, '}')
			if !ok || end < 1 || end > 6 {
				return "", false
			}
			var r rune
			for j := 0; j < end; j++ {
				d, ok := unhex(rest[j])
				if !ok {
					return "", false
				}
				r = r<<4 | rune(d)
			}
			if !utf8.ValidRune(r) || r < ' ' || r == 0x7f {
				return "", false
			}
			b.WriteRune(r)
			i += 2 + end + 1
		case c >= 0x80 && utf8ok:
			b.WriteByte(c)
		case c < '!' || c > '~' || c == '+' || c == '=':
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// parseBDAT parses the argument of BDAT: a size of digits, then LAST
// or nothing (RFC 3030 §2). A size too large for int64 is
// math.MaxInt64.
func parseBDAT(arg string) (size int64, last, ok bool) {
	sz, rest, _ := strings.Cut(arg, " ")
	size, ok = parseSize(sz)
	if !ok {
		return 0, false, false
	}
	switch rest = strings.Trim(rest, " "); {
	case rest == "":
		return size, false, true
	case strings.EqualFold(rest, "LAST"):
		return size, true, true
	}
	return 0, false, false
}
