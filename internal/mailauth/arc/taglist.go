package arc

import (
	"errors"
	"fmt"
	"strings"
)

// tag is one tag-spec of a tag-list (RFC 6376 §3.2).
type tag struct {
	name, value string
}

// tagList is a parsed tag-list, in the order of the field.
type tagList []tag

// get returns the value of the tag name, which is case-sensitive
// (RFC 6376 §3.2: "Tags MUST be interpreted in a case-sensitive manner").
func (l tagList) get(name string) (string, bool) {
	for _, t := range l {
		if t.name == name {
			return t.value, true
		}
	}
	return "", false
}

var errEmptyTagList = errors.New("empty tag-list")

// parseTagList parses s as an RFC 6376 §3.2 tag-list:
//
//	tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
//	tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
//	tag-name  =  ALPHA *ALNUMPUNC
//	tag-value =  [ tval *( 1*(WSP / FWS) tval ) ]
//	tval      =  1*VALCHAR ; %x21-3A / %x3C-7E
//
// Whitespace around names and values is not part of them; whitespace
// inside a value is kept. A name given twice invalidates the whole list
// (§3.2), as does an empty tag-spec (";;"). Octets above 0x7e are taken
// as VALCHAR, for the UTF-8 values of RFC 8616.
func parseTagList(s string) (tagList, error) {
	specs := strings.Split(s, ";")
	if trimFWS(specs[len(specs)-1]) == "" {
		specs = specs[:len(specs)-1] // the optional trailing ";"
	}
	if len(specs) == 0 {
		return nil, errEmptyTagList
	}
	l := make(tagList, 0, len(specs))
	for _, spec := range specs {
		name, value, ok := strings.Cut(spec, "=")
		if !ok {
			return nil, fmt.Errorf("tag-spec %q has no %q", trimFWS(spec), "=")
		}
		name, value = trimFWS(name), trimFWS(value)
		if !validTagName(name) {
			return nil, fmt.Errorf("invalid tag name %q", name)
		}
		if !validTagValue(value) {
			return nil, fmt.Errorf("invalid value of tag %q", name)
		}
		if _, dup := l.get(name); dup {
			return nil, fmt.Errorf("tag %q given twice", name)
		}
		l = append(l, tag{name, value})
	}
	return l, nil
}

// trimFWS removes folding whitespace (RFC 5322 §3.2.2) from both ends.
func trimFWS(s string) string { return strings.Trim(s, " \t\r\n") }

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func validTagName(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlpha(c) && !isDigit(c) && c != '_' {
			return false
		}
	}
	return true
}

// validTagValue checks tag-value: VALCHARs, with whitespace only between
// them (the ends are already trimmed). CR and LF count as whitespace,
// not only as the CRLF of FWS: in a header field every line break is
// FWS already, and key records in DNS are seen with bare line breaks in
// their base64 (the ARC suite's has).
func validTagValue(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case isWSP(c), c == '\r', c == '\n', c >= 0x21 && c != ';' && c != 0x7f:
		default:
			return false
		}
	}
	return true
}

// stripFWS removes all whitespace, for values such as b=, bh= and p=
// where "whitespace is ignored" (RFC 6376 §3.5, §3.6.1).
func stripFWS(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}
