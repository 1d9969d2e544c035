package spf

import (
	"fmt"
	"strconv"
	"strings"
)

// macroString is a parsed macro-string (RFC 7208 §7.1): literal text
// and macro-expands, in order.
type macroString []macroPart

// macroPart is a run of literal text (letter 0) or one %{...} expand.
type macroPart struct {
	literal string
	// escape marks a literal that came from "%%", "%_" or "%-": it is
	// a macro-expand for the grammar of domain-end.
	escape bool

	letter  byte // lowercase macro letter, 0 for a literal
	upper   bool // the letter was uppercase: URL-escape the value (§7.3)
	digits  int  // keep this many right-hand parts, 0 for all
	reverse bool
	delims  string // split on these, "." when empty
}

// maxDigits bounds the DIGIT transformer: more parts than this cannot
// exist in a value short enough to matter, and a bound keeps the
// number from overflowing.
const maxDigits = 1 << 10

// parseMacroString parses s as a macro-string, or as an explain-string
// when exp is set: there SP is allowed too, as are the letters c, r and
// t, which §7.1 allows only in explanation text.
func parseMacroString(s string, exp bool) (macroString, error) {
	var ms macroString
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			ms = append(ms, macroPart{literal: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+1 == len(s) {
				return nil, fmt.Errorf("%w: %q: %% at the end", ErrSyntax, s)
			}
			i++
			switch s[i] {
			case '%', '_', '-':
				flush()
				ms = append(ms, macroPart{literal: escapeValue(s[i]), escape: true})
			case '{':
				end := strings.IndexByte(s[i:], '}')
				if end < 0 {
					return nil, fmt.Errorf("%w: %q: unterminated macro", ErrSyntax, s)
				}
				p, err := parseExpand(s[i+1:i+end], exp)
				if err != nil {
					return nil, fmt.Errorf("%w: %q: %v", ErrSyntax, s, err)
				}
				flush()
				ms = append(ms, p)
				i += end
			default:
				return nil, fmt.Errorf("%w: %q: %%%c is no macro", ErrSyntax, s, s[i])
			}
		case c > ' ' && c <= '~', c == ' ' && exp:
			// macro-literal = %x21-24 / %x26-7E; '%' was handled above
			lit.WriteByte(c)
		default:
			return nil, fmt.Errorf("%w: %q: character %q not allowed", ErrSyntax, s, c)
		}
	}
	flush()
	return ms, nil
}

// escapeValue is the expansion of "%%", "%_" and "%-" (§7.1).
func escapeValue(c byte) string {
	switch c {
	case '%':
		return "%"
	case '_':
		return " "
	}
	return "%20"
}

// parseExpand parses the inside of "%{...}":
// macro-letter transformers *delimiter, transformers = *DIGIT [ "r" ].
func parseExpand(s string, exp bool) (macroPart, error) {
	if s == "" {
		return macroPart{}, fmt.Errorf("empty macro")
	}
	var p macroPart
	c := s[0]
	lower := c | 0x20
	switch {
	case strings.IndexByte("slodiphv", lower) >= 0:
	case strings.IndexByte("crt", lower) >= 0:
		if !exp {
			return p, fmt.Errorf("macro %%{%c} is only allowed in explanations", c)
		}
	default:
		return p, fmt.Errorf("unknown macro letter %q", c)
	}
	p.letter, p.upper = lower, c != lower
	i := 1
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		p.digits = min(p.digits*10+int(s[i]-'0'), maxDigits)
	}
	if i > 1 && p.digits == 0 {
		// §7.3: "If a DIGIT is specified, the value MUST be nonzero."
		return p, fmt.Errorf("macro %%{%s} keeps zero parts", s)
	}
	if i < len(s) && (s[i] == 'r' || s[i] == 'R') {
		p.reverse = true
		i++
	}
	for j := i; j < len(s); j++ {
		if strings.IndexByte(".-+,/_=", s[j]) < 0 {
			return p, fmt.Errorf("bad delimiter %q in macro", s[j])
		}
	}
	p.delims = s[i:]
	return p, nil
}

// String returns the macro-string as it can be written in a record.
func (ms macroString) String() string {
	var b strings.Builder
	for _, p := range ms {
		switch {
		case p.letter != 0:
			b.WriteString("%{")
			l := p.letter
			if p.upper {
				l -= 'a' - 'A'
			}
			b.WriteByte(l)
			if p.digits > 0 {
				b.WriteString(strconv.Itoa(p.digits))
			}
			if p.reverse {
				b.WriteByte('r')
			}
			b.WriteString(p.delims)
			b.WriteByte('}')
		case p.escape:
			for _, c := range []byte("%_-") {
				if escapeValue(c) == p.literal {
					b.WriteByte('%')
					b.WriteByte(c)
				}
			}
		default:
			b.WriteString(p.literal)
		}
	}
	return b.String()
}

// domainSpec is a parsed domain-spec (RFC 7208 §7.1):
// macro-string domain-end, domain-end = ( "." toplabel [ "." ] ) /
// macro-expand.
type domainSpec struct {
	ms macroString
}

// parseDomainSpec parses s as a domain-spec. The syntax is checked
// before expansion, never after (§7.1: "It is not correct to check
// syntax after macro expansion", as the suite puts it).
func parseDomainSpec(s string) (domainSpec, error) {
	if s == "" {
		return domainSpec{}, fmt.Errorf("%w: empty domain-spec", ErrSyntax)
	}
	ms, err := parseMacroString(s, false)
	if err != nil {
		return domainSpec{}, err
	}
	last := ms[len(ms)-1]
	if last.letter != 0 || last.escape {
		return domainSpec{ms}, nil // ends in a macro-expand
	}
	t := strings.TrimSuffix(last.literal, ".")
	dot := strings.LastIndexByte(t, '.')
	if dot < 0 || !isToplabel(t[dot+1:]) {
		return domainSpec{}, fmt.Errorf("%w: %q does not end in a valid top label or a macro", ErrSyntax, s)
	}
	return domainSpec{ms}, nil
}

func (d domainSpec) String() string { return d.ms.String() }

// isToplabel reports whether s is a toplabel of RFC 7208 §7.1:
// ( *alphanum ALPHA *alphanum ) /
// ( 1*alphanum "-" *( alphanum / "-" ) alphanum ).
func isToplabel(s string) bool {
	if s == "" {
		return false
	}
	alpha, dash := false, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			alpha = true
		case c >= '0' && c <= '9':
		case c == '-':
			dash = true
		default:
			return false
		}
	}
	if dash {
		return s[0] != '-' && s[len(s)-1] != '-'
	}
	return alpha
}

// transform applies a macro's transformers to value (§7.3): split on
// the delimiters, reverse if asked, keep the right-hand parts asked
// for, join with dots, and URL-escape for an uppercase letter.
func (p macroPart) transform(value string) string {
	if p.delims != "" || p.reverse || p.digits > 0 {
		delims := p.delims
		if delims == "" {
			delims = "."
		}
		var parts []string
		start := 0
		for i := 0; i < len(value); i++ {
			if strings.IndexByte(delims, value[i]) >= 0 {
				parts = append(parts, value[start:i])
				start = i + 1
			}
		}
		parts = append(parts, value[start:])
		if p.reverse {
			for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
				parts[i], parts[j] = parts[j], parts[i]
			}
		}
		if p.digits > 0 && p.digits < len(parts) {
			parts = parts[len(parts)-p.digits:]
		}
		value = strings.Join(parts, ".")
	}
	if p.upper {
		value = urlEscape(value)
	}
	return value
}

// urlEscape escapes every byte outside the unreserved set of RFC 3986
// (ALPHA / DIGIT / "-" / "." / "_" / "~"), as §7.3 asks of uppercase
// macros.
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}
