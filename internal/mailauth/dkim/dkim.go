// Package dkim signs and verifies DomainKeys Identified Mail signatures
// (RFC 6376) with rsa-sha256 and ed25519-sha256 (RFC 8463), on top of
// github.com/emersion/go-msgauth/dkim.
//
// Both directions stream the message: only the header is kept in
// memory, bounded by MaxHeaderBytes; the body goes through the hashes.
// What this package adds to go-msgauth: key loading and the DNS record
// to publish, a signer with safe defaults (relaxed/relaxed, the fields
// of RFC 6376 §5.4.1 that are present, From over-signed, no l=), one
// pass for several signatures, and verification results classified
// with the names of RFC 8601 §2.7.1, DNS errors included.
package dkim

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxHeaderBytes bounds the message header that signing and
// verification keep in memory. RFC 5322 lines are at most 998
// characters; a header beyond this size is not mail worth signing.
const MaxHeaderBytes = 1 << 20

// Errors a caller may want to tell apart.
var (
	// ErrKeyTooSmall is an RSA key of fewer than 1024 bits, which
	// signers must not use (RFC 8301 §3.2).
	ErrKeyTooSmall = errors.New("dkim: RSA key smaller than 1024 bits")
	// ErrUnsupportedKey is a key that is neither RSA nor Ed25519.
	ErrUnsupportedKey = errors.New("dkim: unsupported key type")
	// ErrHeaderTooLarge is a message header larger than MaxHeaderBytes.
	ErrHeaderTooLarge = errors.New("dkim: message header too large")
	// ErrNoFrom is a message without a From field, which a signature
	// must cover (RFC 6376 §5.4).
	ErrNoFrom = errors.New("dkim: message has no From field")
)

// header is a message header as read: the raw bytes, made to end with
// an empty line, and the fields with their folding kept.
type header struct {
	raw    []byte
	fields []string
	counts map[string]int // fields by lower-case name, made by count
}

// readHeader reads the header of the message from br, up to and
// including the empty line that ends it (RFC 5322 §2.1). A message
// that ends inside its header is given the missing line ends, so that
// go-msgauth, which requires the empty line, sees a header and an
// empty body. Lines end at LF, as go-msgauth's textproto reader does,
// so that both agree on which fields there are.
func readHeader(br *bufio.Reader) (*header, error) {
	h := &header{}
	start := 0 // where the current line starts in raw
	for {
		frag, err := br.ReadSlice('\n')
		h.raw = append(h.raw, frag...)
		if len(h.raw) > MaxHeaderBytes {
			return nil, ErrHeaderTooLarge
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("dkim: reading header: %w", err)
		}
		line := string(h.raw[start:])
		if line == "\r\n" || line == "\n" {
			return h, nil
		}
		if line != "" {
			if (line[0] == ' ' || line[0] == '\t') && len(h.fields) > 0 {
				h.fields[len(h.fields)-1] += line
			} else {
				h.fields = append(h.fields, line)
			}
		}
		if err != nil { // EOF inside the header
			if line != "" && !strings.HasSuffix(line, "\n") {
				h.raw = append(h.raw, "\r\n"...)
			}
			h.raw = append(h.raw, "\r\n"...)
			return h, nil
		}
		start = len(h.raw)
	}
}

// fieldName returns the name of a header field and its value, cut at
// the first colon and trimmed as go-msgauth does.
func fieldName(field string) (name, value string) {
	name, value, _ = strings.Cut(field, ":")
	return strings.TrimSpace(name), value
}

// count returns how many fields of the header are named name, in any
// case.
func (h *header) count(name string) int {
	if h.counts == nil {
		h.counts = map[string]int{}
		for _, f := range h.fields {
			k, _ := fieldName(f)
			h.counts[strings.ToLower(k)]++
		}
	}
	return h.counts[strings.ToLower(name)]
}

// isWSP reports whether c is white space inside a tag-list: WSP, or the
// CR and LF of folding white space (RFC 6376 §2.8).
func isWSP(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// trimWSP removes folding white space around s.
func trimWSP(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return r < 0x80 && isWSP(byte(r)) })
}

// stripWSP removes all folding white space from s, as values such as
// b=, bh= and h= are read (RFC 6376 §3.5).
func stripWSP(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x80 && isWSP(byte(r)) {
			return -1
		}
		return r
	}, s)
}

// parseTags parses a tag-list (RFC 6376 §3.2):
//
//	tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
//	tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
//	tag-name  =  ALPHA *ALNUMPUNC
//	tag-value =  [ tval *( 1*(WSP / FWS) tval ) ]
//	tval      =  1*VALCHAR ; %x21-3A / %x3C-7E
//
// Values are returned with surrounding white space trimmed. Octets
// above 0x7F are allowed in values, for the UTF-8 of RFC 8616. A
// duplicate tag makes the whole list invalid (§3.2). On error the tags
// parsed so far are returned with it.
func parseTags(s string) (map[string]string, error) {
	tags := map[string]string{}
	specs := strings.Split(s, ";")
	for i, spec := range specs {
		if trimWSP(spec) == "" {
			if i == len(specs)-1 && i > 0 {
				break // the optional trailing ";"
			}
			return tags, errors.New("empty tag-spec")
		}
		name, value, ok := strings.Cut(spec, "=")
		if !ok {
			return tags, fmt.Errorf("tag-spec %q without '='", trimWSP(spec))
		}
		name = trimWSP(name)
		if !validTagName(name) {
			return tags, fmt.Errorf("invalid tag name %q", name)
		}
		value = trimWSP(value)
		for j := 0; j < len(value); j++ {
			c := value[j]
			if c < 0x21 && !isWSP(c) || c == 0x7f {
				return tags, fmt.Errorf("invalid character %q in tag %s", c, name)
			}
		}
		if _, dup := tags[name]; dup {
			return tags, fmt.Errorf("duplicate tag %s", name)
		}
		tags[name] = value
	}
	return tags, nil
}

// validTagName reports whether s is ALPHA *( ALPHA / DIGIT / "_" ).
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

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// validDomain reports whether s is a DNS name made of LDH labels, with
// underscores allowed as in "_domainkey" (RFC 6376 §3.5 d= and s=,
// §3.6.2.1): 1 to 63 octets a label, 253 in all, no trailing dot.
func validDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}
