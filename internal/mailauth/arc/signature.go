package arc

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// signature is a parsed ARC-Message-Signature or ARC-Seal: the DKIM
// signature tags (RFC 6376 §3.5) that RFC 8617 §4.1.2 and §4.1.3 keep.
type signature struct {
	alg              string
	b                []byte
	domain, selector string

	// AMS only
	bh      []byte
	hc, bc  dkim.Canonicalization
	headers []string // h=, lowercased
	limit   int64    // l=, or -1
	noC     bool     // no c=: simple/simple, else relaxed/relaxed
}

// parseCommon parses the tags an AMS and an AS share: a=, b=, d=, s=
// are required, t= is optional but must be a number.
func parseCommon(tags tagList) (*signature, error) {
	sig := &signature{limit: -1}
	var missing []string
	req := func(name string) string {
		v, ok := tags.get(name)
		if !ok {
			missing = append(missing, name+"=")
		}
		return v
	}
	sig.alg = req("a")
	b := req("b")
	sig.domain = unfold(req("d"))
	sig.selector = unfold(req("s"))
	if missing != nil {
		return nil, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	if sig.alg != algRSA && sig.alg != algEd25519 {
		return nil, fmt.Errorf("unsupported algorithm a=%s", sig.alg)
	}
	var err error
	if sig.b, err = decodeBase64(b); err != nil {
		return nil, fmt.Errorf("b=: %w", err)
	}
	if !validDomain(sig.domain) {
		return nil, fmt.Errorf("invalid domain d=%s", sig.domain)
	}
	if !validDomain(sig.selector) {
		return nil, fmt.Errorf("invalid selector s=%s", sig.selector)
	}
	if t, ok := tags.get("t"); ok {
		if _, err := parseNumber(t); err != nil {
			return nil, fmt.Errorf("t=: %w", err)
		}
	}
	return sig, nil
}

// parseAMS parses the tags of an ARC-Message-Signature: those of a
// DKIM-Signature (RFC 8617 §4.1.2), less v= (ignored) and i= (the
// instance). An h= naming ARC-Seal makes it invalid, as the seal
// cannot be signed by what it seals.
func parseAMS(tags tagList, now time.Time) (*signature, error) {
	sig, err := parseCommon(tags)
	if err != nil {
		return nil, err
	}
	bh, ok := tags.get("bh")
	if !ok {
		return nil, errors.New("missing bh=")
	}
	if sig.bh, err = decodeBase64(bh); err != nil {
		return nil, fmt.Errorf("bh=: %w", err)
	}
	if c, ok := tags.get("c"); ok {
		if sig.hc, sig.bc, err = parseCanon(unfold(c)); err != nil {
			return nil, fmt.Errorf("c=: %w", err)
		}
	} else {
		// RFC 6376 §3.5 makes simple/simple the default, and RFC 8617
		// §4.1.2 gives the AMS the semantics of a DKIM-Signature; the
		// first ARC draft (draft-ietf-dmarc-arc-protocol-01 §5.1.2) had
		// the AMS use relaxed header canonicalization only, as dkimpy
		// still assumes. The verifier tries both.
		sig.hc, sig.bc, sig.noC = simple, simple, true
	}
	h, ok := tags.get("h")
	if !ok {
		return nil, errors.New("missing h=")
	}
	if strings.TrimSpace(unfold(h)) != "" {
		for _, name := range colonList(h) {
			name = strings.ToLower(name)
			if strings.ContainsAny(name, " \t\r\n") {
				return nil, fmt.Errorf("invalid h=%s", h)
			}
			// an empty name ("from::to") names no field and so signs
			// nothing, like the name of a field the message lacks
			// (RFC 6376 §5.4.2); dkimpy and the ARC suite take it so
			if name == "arc-seal" {
				return nil, errors.New("h= signs ARC-Seal")
			}
			sig.headers = append(sig.headers, name)
		}
	}
	if l, ok := tags.get("l"); ok {
		if sig.limit, err = parseNumber(l); err != nil {
			return nil, fmt.Errorf("l=: %w", err)
		}
	}
	if q, ok := tags.get("q"); ok && q != "dns/txt" {
		return nil, fmt.Errorf("unknown query method q=%s", q)
	}
	if x, ok := tags.get("x"); ok {
		exp, err := parseNumber(x)
		if err != nil {
			return nil, fmt.Errorf("x=: %w", err)
		}
		if now.Unix() > exp {
			return nil, fmt.Errorf("expired at x=%d", exp)
		}
	}
	return sig, nil
}

// bodyCanons returns the body canonicalizations to try: that of c=, or
// without c= simple then relaxed, paired with the same header ones.
func (sig *signature) bodyCanons() []dkim.Canonicalization {
	if sig.noC {
		return []dkim.Canonicalization{simple, relaxed}
	}
	return []dkim.Canonicalization{sig.bc}
}

// parseAS parses the tags of an ARC-Seal (RFC 8617 §4.1.3): no h= is
// allowed, and there is no body hash; cv= was read with the structure.
func parseAS(tags tagList) (*signature, error) {
	if _, ok := tags.get("h"); ok {
		return nil, errors.New("ARC-Seal with h=")
	}
	if _, ok := tags.get("cv"); !ok {
		return nil, errors.New("missing cv=")
	}
	return parseCommon(tags)
}

func decodeBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(stripFWS(s))
	if err == nil && len(b) == 0 {
		err = errors.New("empty")
	}
	return b, err
}

// parseNumber parses the digits of t=, x= (1*12DIGIT) and l=
// (1*76DIGIT, RFC 6376 §3.5), up to 18 of them: no body is longer.
func parseNumber(s string) (int64, error) {
	s = unfold(s)
	if s == "" || len(s) > 18 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a number: %q", s)
	}
	return strconv.ParseInt(s, 10, 64)
}

// validDomain checks the syntax of d= and s= (RFC 6376 §3.5: a
// domain-name, sub-domains separated by dots), allowing the underscore
// that selectors use in practice and the U-labels of RFC 8616.
func validDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' && c < 0x80 {
				return false
			}
		}
	}
	return true
}

// removeB returns the header field raw with the value of its b= tag
// deleted, the whitespace around it included (RFC 6376 §3.7: the
// signature field is hashed "with the value of the b= tag ... deleted
// (i.e., treated as the empty string)").
func removeB(raw string) string {
	colon := strings.IndexByte(raw, ':')
	if colon < 0 {
		return raw
	}
	var out strings.Builder
	out.WriteString(raw[:colon+1])
	specs := strings.Split(raw[colon+1:], ";")
	for i, spec := range specs {
		if i > 0 {
			out.WriteByte(';')
		}
		name, _, ok := strings.Cut(spec, "=")
		if ok && trimFWS(name) == "b" {
			spec = spec[:len(name)+1]
		}
		out.WriteString(spec)
	}
	return out.String()
}

// headerHash returns the hash of the header fields a signature covers
// (RFC 6376 §3.7, §5.4.2): each name of names picks the last field of
// that name not yet picked, a name with none left contributes nothing;
// then comes the signature field itself, its b= value deleted, without
// its final CRLF.
func headerHash(c dkim.Canonicalization, fields []field, names []string, sigField string) []byte {
	h := sha256.New()
	used := map[string]int{} // per name, the index below which to look
	for _, name := range names {
		end, ok := used[name]
		if !ok {
			end = len(fields)
		}
		i := end - 1
		for ; i >= 0; i-- {
			if fields[i].is(name) {
				h.Write([]byte(canonHeader(c, fields[i].raw)))
				break
			}
		}
		used[name] = max(i, 0)
	}
	writeSigField(h, c, sigField)
	return h.Sum(nil)
}

// sealHash returns the hash an ARC-Seal signs (RFC 8617 §5.1.1): the
// fields of the sets, in increasing instance order and, within a set,
// AAR, AMS, AS, canonicalized "relaxed" (§4.1.3), then the seal itself
// as in headerHash.
func sealHash(setFields []string, sealField string) []byte {
	h := sha256.New()
	for _, raw := range setFields {
		h.Write([]byte(canonHeader(relaxed, raw)))
	}
	writeSigField(h, relaxed, sealField)
	return h.Sum(nil)
}

func writeSigField(h hash.Hash, c dkim.Canonicalization, raw string) {
	s := canonHeader(c, removeB(raw))
	h.Write([]byte(strings.TrimRight(s, "\r\n")))
}
