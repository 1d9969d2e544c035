package arc

import (
	"bufio"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrChainFailed is returned by Seal for a chain that failed validation
// when the Sealer is not to seal failed chains, and always for a chain
// whose latest ARC-Seal already says cv=fail (RFC 8617 §5.1 step 2).
var ErrChainFailed = errors.New("arc: the chain failed validation")

// ErrChainFull is returned by Seal for a chain of MaxInstance sets.
var ErrChainFull = fmt.Errorf("arc: the chain has %d sets already", MaxInstance)

// DefaultHeaders returns the fields an ARC-Message-Signature signs when
// the Sealer names none: those RFC 6376 §5.4.1 recommends, and the
// DKIM-Signature fields RFC 8617 §4.1.2 asks for. Each is signed as
// many times as the message has it; From always.
func DefaultHeaders() []string {
	return []string{
		"From", "Reply-To", "Subject", "Date", "To", "Cc",
		"Resent-Date", "Resent-From", "Resent-To", "Resent-Cc",
		"In-Reply-To", "References", "Message-ID", "MIME-Version",
		"Content-Type", "Content-Transfer-Encoding",
		"List-Id", "List-Help", "List-Unsubscribe", "List-Subscribe",
		"List-Post", "List-Owner", "List-Archive", "DKIM-Signature",
	}
}

// Sealer adds ARC Sets to messages (RFC 8617 §5.1). Domain, Selector
// and Signer are required. It is safe for concurrent use.
type Sealer struct {
	// Domain and Selector name the key: its public half is published
	// at Selector._domainkey.Domain.
	Domain, Selector string
	// Signer is the private key, an *rsa.PrivateKey (rsa-sha256) or an
	// ed25519.PrivateKey (ed25519-sha256, RFC 8463), or any
	// crypto.Signer whose public key is one of those.
	Signer crypto.Signer
	// Headers lists the fields the ARC-Message-Signature signs; nil
	// means DefaultHeaders(), each signed as many times as it occurs.
	// Given, it is used as it is (name a field twice to sign two
	// occurrences, or one more than occur to forbid additions).
	// ARC header fields and Authentication-Results cannot be named
	// (RFC 8617 §4.1.2).
	Headers []string
	// SealFailed makes Seal add a set with cv=fail to a message whose
	// chain failed, its seal covering that set alone (RFC 8617
	// §5.1.2). By default Seal refuses with ErrChainFailed: such a set
	// only records the break, a validator stops at it anyway (§5.2 step
	// 2) and the chain can never be extended again (§5.1.3).
	SealFailed bool
	// MaxHeaderBytes bounds the header held; 0 means
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// Now returns the time of t=; nil means time.Now.
	Now func() time.Time

	// sortTags writes the tags in alphabetical order, as the signer of
	// the ValiMail test suite did, instead of i= first (RFC 8617
	// §4.1.2, §4.1.3 ABNF) and b= last; for tests.
	sortTags bool
}

// Set is an ARC Set made by Seal: three complete header fields, each
// "Name: value" folded and ending in CRLF.
type Set struct {
	Instance int
	AAR      string
	AMS      string
	AS       string
}

// String returns the set as it is prepended to the message, in the
// order RFC 8617 shows (Appendix B): ARC-Seal, ARC-Message-Signature,
// ARC-Authentication-Results.
func (s *Set) String() string { return s.AS + s.AMS + s.AAR }

// Seal reads msg and returns the ARC Set of the next instance. authServID
// is our authentication service identifier and results the
// authentication results we computed (an Authentication-Results value
// after the authserv-id, such as "spf=pass smtp.mailfrom=example.net;
// arc=pass", where the arc result is chain.AuthResult()); chain is the
// result of validating msg. All changes to the message must be made
// before sealing (§5.1 step 1). A chain that could not be judged
// (StatusTempError) is not sealed: the error wraps ErrTemporary.
func (s *Sealer) Seal(msg io.Reader, authServID, results string, chain *Result) (*Set, error) {
	alg, err := s.check()
	if err != nil {
		return nil, err
	}
	payload, err := aarPayload(authServID, results)
	if err != nil {
		return nil, err
	}
	if chain == nil {
		return nil, errors.New("arc: Seal without a chain validation result")
	}
	fields, body, err := readHeader(bufio.NewReader(msg), maxHeader(s.MaxHeaderBytes))
	if err != nil {
		return nil, fmt.Errorf("arc: reading the header: %w", err)
	}
	ch := parseChain(fields)
	if ch.latestCVFail(fields) {
		return nil, fmt.Errorf("%w: its latest ARC-Seal says cv=fail", ErrChainFailed)
	}
	cv := chain.Status
	switch {
	case cv == StatusTempError:
		return nil, fmt.Errorf("%w: the chain could not be judged: %s", ErrTemporary, chain.Reason)
	case cv == StatusFail && !s.SealFailed:
		return nil, fmt.Errorf("%w: %s", ErrChainFailed, chain.Reason)
	case cv == StatusNone && ch.present, cv == StatusPass && (ch.err != nil || ch.n != chain.Instance):
		return nil, fmt.Errorf("arc: cv=%s does not describe the message's chain", cv)
	case cv != StatusNone && cv != StatusPass && cv != StatusFail:
		return nil, fmt.Errorf("arc: unknown chain validation status %q", cv)
	}
	inst := ch.n + 1 // §5.1 step 3
	if inst > MaxInstance {
		return nil, ErrChainFull
	}
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	t := strconv.FormatInt(now().Unix(), 10)

	// §5.1 step 4.1: the ARC-Authentication-Results
	aar := fold(nameAAR + ": i=" + strconv.Itoa(inst) + "; " + payload + "\r\n")

	// §5.1 step 4.2: the ARC-Message-Signature, relaxed/relaxed
	bh := newBodyHash(bodyKey{relaxed, -1})
	if _, err := io.Copy(bh.canon, body); err != nil {
		return nil, fmt.Errorf("arc: reading the body: %w", err)
	}
	if err := bh.canon.Close(); err != nil {
		return nil, fmt.Errorf("arc: hashing the body: %w", err)
	}
	names := s.signedHeaders(fields)
	amsTags := []tag{
		{"i", strconv.Itoa(inst)}, {"a", alg}, {"c", "relaxed/relaxed"},
		{"d", s.Domain}, {"s", s.Selector}, {"t", t},
		{"h", foldList(names)},
		{"bh", base64.StdEncoding.EncodeToString(bh.sum())}, {"b", ""},
	}
	ams, err := s.sign(nameAMS, amsTags, func(f string) []byte {
		return headerHash(relaxed, fields, lower(names), f)
	})
	if err != nil {
		return nil, err
	}

	// §5.1 step 4.3: the ARC-Seal, over sets 1..inst in order (§5.1.1),
	// or over the new set alone for a failed chain (§5.1.2)
	var sealed []string
	if cv != StatusFail {
		for _, set := range ch.sets {
			sealed = append(sealed, fields[set.aar].raw, fields[set.ams].raw, fields[set.as].raw)
		}
	}
	sealed = append(sealed, aar, ams)
	asTags := []tag{
		{"i", strconv.Itoa(inst)}, {"a", alg}, {"cv", string(cv)},
		{"d", s.Domain}, {"s", s.Selector}, {"t", t}, {"b", ""},
	}
	as, err := s.sign(nameAS, asTags, func(f string) []byte { return sealHash(sealed, f) })
	if err != nil {
		return nil, err
	}
	return &Set{Instance: inst, AAR: aar, AMS: ams, AS: as}, nil
}

// latestCVFail reports whether the highest-instance ARC-Seal of a chain
// whose structure may be broken says cv=fail.
func (ch *chain) latestCVFail(fields []field) bool {
	for _, f := range fields {
		if !f.is(nameAS) {
			continue
		}
		tags, err := parseTagList(f.value())
		if err != nil {
			continue
		}
		if i, err := parseInstance(tagValue(tags, "i")); err == nil && i == ch.n && unfold(tagValue(tags, "cv")) == string(StatusFail) {
			return true
		}
	}
	return false
}

// check validates the Sealer's configuration and returns its algorithm.
func (s *Sealer) check() (string, error) {
	if !validDomain(s.Domain) || !validDomain(s.Selector) {
		return "", fmt.Errorf("arc: invalid domain %q or selector %q", s.Domain, s.Selector)
	}
	if s.Signer == nil {
		return "", errors.New("arc: Sealer without Signer")
	}
	for _, h := range s.Headers {
		switch l := strings.ToLower(h); {
		case !isFieldStart([]byte(h + ":")):
			return "", fmt.Errorf("arc: invalid header name %q", h)
		case l == "authentication-results", strings.HasPrefix(l, "arc-"):
			return "", fmt.Errorf("arc: %s cannot be signed (RFC 8617 §4.1.2)", h)
		}
	}
	switch pub := s.Signer.Public().(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < minRSABits {
			return "", fmt.Errorf("arc: RSA key of %d bits, fewer than %d", pub.N.BitLen(), minRSABits)
		}
		return algRSA, nil
	case ed25519.PublicKey:
		return algEd25519, nil
	default:
		return "", fmt.Errorf("arc: unsupported key type %T", pub)
	}
}

// signedHeaders returns the h= list: s.Headers, or each of
// DefaultHeaders() as many times as the message has it.
func (s *Sealer) signedHeaders(fields []field) []string {
	if s.Headers != nil {
		return s.Headers
	}
	var names []string
	for _, name := range DefaultHeaders() {
		n := 0
		for _, f := range fields {
			if f.is(name) {
				n++
			}
		}
		if name == "From" {
			n = max(n, 1) // RFC 6376 §5.4: From MUST be signed
		}
		for range n {
			names = append(names, strings.ToLower(name))
		}
	}
	return names
}

// sign makes the header field name from tags, the last of which, b=,
// is empty: hash gives the digest of the field as it stands with b=
// empty, the signature then fills b= in. The field is folded before it
// is hashed, and the signature folded into b= only, which the verifier
// deletes: relaxed canonicalization sees the same text.
func (s *Sealer) sign(name string, tags []tag, hash func(field string) []byte) (string, error) {
	if s.sortTags {
		tags = slices.Clone(tags)
		slices.SortFunc(tags, func(a, b tag) int { return strings.Compare(a.name, b.name) })
	}
	parts := make([]string, len(tags))
	for i, t := range tags {
		parts[i] = t.name + "=" + t.value
	}
	unsigned := fold(name + ": " + strings.Join(parts, "; ") + "\r\n")
	digest := hash(unsigned)
	opts := crypto.SignerOpts(crypto.SHA256)
	if _, ok := s.Signer.Public().(ed25519.PublicKey); ok {
		opts = crypto.Hash(0) // RFC 8463 §3: PureEdDSA over the SHA-256 digest
	}
	sig, err := s.Signer.Sign(rand.Reader, digest, opts)
	if err != nil {
		return "", fmt.Errorf("arc: signing %s: %w", name, err)
	}
	// put the signature after "b=", folded at 72 characters
	b64 := base64.StdEncoding.EncodeToString(sig)
	i := strings.Index(unsigned, " b=") + len(" b=") // fold keeps the space before b=
	var out strings.Builder
	out.WriteString(unsigned[:i])
	for len(b64) > 0 {
		n := min(len(b64), 72)
		out.WriteString("\r\n\t" + b64[:n])
		b64 = b64[n:]
	}
	out.WriteString(unsigned[i:])
	return out.String(), nil
}

// aarPayload checks and joins the authserv-id and the results into the
// authres-payload of an ARC-Authentication-Results (RFC 8617 §4.1.1,
// RFC 8601 §2.2); no results is "none".
func aarPayload(authServID, results string) (string, error) {
	if authServID == "" || strings.ContainsAny(authServID, "; \t\r\n()\"") {
		return "", fmt.Errorf("arc: invalid authserv-id %q", authServID)
	}
	results = trimFWS(results)
	if results == "" {
		results = "none"
	}
	for i := 0; i < len(results); i++ {
		switch c := results[i]; {
		case c == '\r' && i+2 < len(results) && results[i+1] == '\n' && isWSP(results[i+2]):
			i++ // folding
		case c == '\r', c == '\n', c == 0:
			return "", errors.New("arc: results hold a CR, LF or NUL outside folding")
		}
	}
	// each result starts with method=value (RFC 8601 §2.2 resinfo);
	// what follows is not checked: the payload's syntax does not affect
	// the validity of the chain
	for _, r := range strings.Split(unfold(results), ";") {
		r = trimFWS(r)
		method, _, ok := strings.Cut(r, "=")
		if r != "" && r != "none" && (!ok || method == "" || strings.ContainsAny(trimFWS(method), " \t()")) {
			return "", fmt.Errorf("arc: results: %q is not method=value", r)
		}
	}
	return authServID + "; " + results, nil
}

// fold folds a header field (name through CRLF) at spaces so that lines
// keep under 78 characters where they can (RFC 5322 §2.1.1); folds that
// are already there stay. Breaking before an existing space leaves the
// relaxed canonical form unchanged.
func fold(f string) string {
	f = strings.TrimSuffix(f, "\r\n")
	var out strings.Builder
	for _, line := range strings.Split(f, "\r\n") {
		if out.Len() > 0 {
			out.WriteString("\r\n")
		}
		for len(line) > 78 {
			cut := strings.LastIndexAny(line[:78], " \t")
			if cut <= 0 {
				cut = strings.IndexAny(line, " \t")
				if cut <= 0 {
					break
				}
			}
			out.WriteString(line[:cut] + "\r\n")
			line = line[cut:]
		}
		out.WriteString(line)
	}
	out.WriteString("\r\n")
	return out.String()
}

// foldList joins the names of h= with colons, folding after a colon
// now and then: a long list has no spaces where fold could break it,
// and RFC 6376 §3.5 allows FWS around the colons of h=.
func foldList(names []string) string {
	var b strings.Builder
	line := 0
	for i, n := range names {
		if i > 0 {
			b.WriteByte(':')
			if line+len(n) > 60 {
				b.WriteString("\r\n\t")
				line = 0
			}
		}
		b.WriteString(n)
		line += len(n) + 1
	}
	return b.String()
}

func lower(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToLower(n)
	}
	return out
}
