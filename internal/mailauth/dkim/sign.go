package dkim

import (
	"bufio"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// Canonicalization names (RFC 6376 §3.4).
const (
	Simple  = "simple"
	Relaxed = "relaxed"
)

// DefaultHeaders returns the fields signed by default, each in every
// instance the message has: those RFC 6376 §5.4.1 recommends, with
// Sender, Message-ID and the MIME fields that decide how the body reads,
// and List-Unsubscribe-Post, which RFC 8058 §4 requires to be signed.
// Absent fields are not listed, so that a mailing list adding its
// List-* fields does not break the signature; see Signer.Oversign.
func DefaultHeaders() []string {
	return []string{
		"From", "Sender", "Reply-To", "Subject", "Date", "Message-ID",
		"To", "Cc", "In-Reply-To", "References",
		"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
		"Content-ID", "Content-Description",
		"Resent-Date", "Resent-From", "Resent-Sender", "Resent-To",
		"Resent-Cc", "Resent-Message-ID",
		"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post",
		"List-Subscribe", "List-Post", "List-Owner", "List-Archive",
	}
}

// Signer signs messages for one domain with one key. Domain, Selector
// and Key are required; the other fields have safe zero values.
type Signer struct {
	// Domain is the signing domain, d= (RFC 6376 §3.5); the key is
	// published at Selector._domainkey.Domain.
	Domain string
	// Selector is s=, which picks one of the domain's keys (§3.1).
	Selector string
	// Key is an *rsa.PrivateKey of at least 1024 bits or an
	// ed25519.PrivateKey, as LoadKey returns; it decides the algorithm,
	// rsa-sha256 or ed25519-sha256.
	Key crypto.Signer
	// Identifier is the optional i= (§3.5), an address or "@domain" in
	// Domain or one of its subdomains.
	Identifier string

	// Headers are the fields to sign, each in every instance the message
	// has (§5.4.2). Nil means DefaultHeaders. From is always signed:
	// a list without it is an error (§5.4).
	Headers []string
	// Oversign are fields listed in h= once more than the message has
	// them, so that nobody can add one without breaking the signature
	// (§8.15; also "signing absent fields", §5.4). Nil means From only,
	// so that a second From cannot be slipped in; an empty non-nil slice
	// over-signs nothing.
	Oversign []string

	// HeaderCanon and BodyCanon are "simple" or "relaxed" (§3.4); empty
	// means relaxed, which survives the re-folding and white-space
	// changes that relays make.
	HeaderCanon, BodyCanon string
}

// Sign reads a message from r and returns the DKIM-Signature field to
// prepend to it, name, value and the final CRLF included. The message
// is streamed: only its header is kept in memory. It never adds l=,
// which would leave part of the body unsigned (§8.2).
func (s *Signer) Sign(r io.Reader) (field string, err error) {
	return SignAll(r, s)
}

// SignAll reads a message once and signs it with every signer, for
// instance with an rsa-sha256 and an ed25519-sha256 key, as in the
// example of RFC 8463 Appendix A.3, since verifiers that do not know
// Ed25519 ignore its signature. It returns the fields to prepend, in
// the order of signers, concatenated.
func SignAll(r io.Reader, signers ...*Signer) (fields string, err error) {
	if len(signers) == 0 {
		return "", errors.New("dkim: no signer")
	}
	br := bufio.NewReaderSize(r, 32<<10)
	h, err := readHeader(br)
	if err != nil {
		return "", err
	}
	if h.count("From") == 0 {
		return "", ErrNoFrom
	}

	ws := make([]*msgdkim.Signer, 0, len(signers))
	defer func() {
		// a go-msgauth signer is a goroutine behind a pipe: always close
		for _, w := range ws {
			w.Close()
		}
	}()
	writers := make([]io.Writer, 0, len(signers))
	for _, s := range signers {
		opts, err := s.options(h)
		if err != nil {
			return "", err
		}
		w, err := msgdkim.NewSigner(opts)
		if err != nil {
			return "", fmt.Errorf("dkim: %s: %w", s.Domain, err)
		}
		ws = append(ws, w)
		writers = append(writers, w)
	}

	mw := io.MultiWriter(writers...)
	if _, err := mw.Write(h.raw); err != nil {
		return "", fmt.Errorf("dkim: signing: %w", err)
	}
	if _, err := io.Copy(mw, br); err != nil {
		return "", fmt.Errorf("dkim: signing: %w", err)
	}
	var b strings.Builder
	for i, w := range ws {
		if err := w.Close(); err != nil {
			return "", fmt.Errorf("dkim: signing for %s: %w", signers[i].Domain, err)
		}
		b.WriteString(w.Signature())
	}
	return b.String(), nil
}

// options checks the signer and returns the go-msgauth options for the
// message with header h.
func (s *Signer) options(h *header) (*msgdkim.SignOptions, error) {
	if s == nil {
		return nil, errors.New("dkim: nil signer")
	}
	if !validDomain(s.Domain) {
		return nil, fmt.Errorf("dkim: invalid signing domain %q", s.Domain)
	}
	if !validDomain(s.Selector) {
		return nil, fmt.Errorf("dkim: invalid selector %q", s.Selector)
	}
	if err := checkKey(s.Key); err != nil {
		return nil, err
	}
	if s.Identifier != "" {
		// RFC 6376 §3.5: the domain part of i= is d= or a subdomain of it
		at := strings.LastIndexByte(s.Identifier, '@')
		dom := strings.ToLower(s.Identifier[at+1:])
		d := strings.ToLower(s.Domain)
		if at < 0 || strings.ContainsAny(s.Identifier, "; \t\r\n") ||
			dom != d && !strings.HasSuffix(dom, "."+d) {
			return nil, fmt.Errorf("dkim: identifier %q is not in domain %s", s.Identifier, s.Domain)
		}
	}
	hc, err := canon(s.HeaderCanon)
	if err != nil {
		return nil, err
	}
	bc, err := canon(s.BodyCanon)
	if err != nil {
		return nil, err
	}
	keys, err := s.headerKeys(h)
	if err != nil {
		return nil, err
	}
	return &msgdkim.SignOptions{
		Domain:                 s.Domain,
		Selector:               s.Selector,
		Identifier:             s.Identifier,
		Signer:                 s.Key,
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: hc,
		BodyCanonicalization:   bc,
		HeaderKeys:             keys,
	}, nil
}

// canon checks a canonicalization name; empty means relaxed.
func canon(c string) (msgdkim.Canonicalization, error) {
	switch strings.ToLower(c) {
	case "", Relaxed:
		return msgdkim.CanonicalizationRelaxed, nil
	case Simple:
		return msgdkim.CanonicalizationSimple, nil
	}
	return "", fmt.Errorf("dkim: unknown canonicalization %q", c)
}

// headerKeys returns h= for the message with header h: every field of
// Headers as many times as the message has it, and those of Oversign
// once more (RFC 6376 §5.4.2: the verifier takes instances from the
// bottom up, and a name listed beyond them signs their absence, so a
// field added anywhere breaks the signature).
func (s *Signer) headerKeys(h *header) ([]string, error) {
	names := s.Headers
	if names == nil {
		names = DefaultHeaders()
	}
	over := s.Oversign
	if over == nil {
		over = []string{"From"}
	}
	var (
		keys  []string
		index = map[string]int{} // lower-case name → position in order
		order []string
		extra []bool
	)
	add := func(n string, oversign bool) error {
		if !validFieldName(n) {
			return fmt.Errorf("dkim: invalid header field name %q", n)
		}
		k := strings.ToLower(n)
		i, ok := index[k]
		if !ok {
			// listing a name twice would sign one instance twice
			i = len(order)
			index[k] = i
			order = append(order, n)
			extra = append(extra, false)
		}
		extra[i] = extra[i] || oversign
		return nil
	}
	for _, n := range names {
		if err := add(n, false); err != nil {
			return nil, err
		}
	}
	if _, ok := index["from"]; !ok {
		return nil, errors.New("dkim: Headers must include From (RFC 6376 §5.4)")
	}
	for _, n := range over {
		if err := add(n, true); err != nil {
			return nil, err
		}
	}
	for i, n := range order {
		c := h.count(n)
		if extra[i] {
			c++
		}
		for range c {
			keys = append(keys, n)
		}
	}
	return keys, nil
}

// validFieldName reports whether s is a field name (RFC 5322 §3.6.8:
// printable ASCII but the colon).
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == ':' || c == ';' {
			return false
		}
	}
	return true
}
