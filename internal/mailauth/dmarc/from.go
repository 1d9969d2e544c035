package dmarc

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"slices"
	"strings"
)

// ErrNoAuthorDomain marks a message without a single RFC5322.From
// domain to evaluate (RFC 7489 §6.6.1). errors.Is finds it in every
// *AuthorError.
var ErrNoAuthorDomain = errors.New("dmarc: no single author domain")

// AuthorError is why a message has no single author domain: no From
// field, several, one that does not parse or has no address, an
// address whose domain is not a domain name, or addresses in several
// domains. It is permanent. DMARC cannot evaluate such a message; the
// caller rejects it or treats it by local policy (§6.6.1: "the
// handling of those that are forbidden under [MAIL] or that contain no
// meaningful domains is outside the scope of this document").
type AuthorError struct {
	// Reason says what is wrong, in a few words.
	Reason string
	// Domains are the domains found when the From field has addresses
	// in several of them. §6.6.1 lets a receiver evaluate each ("apply
	// the most strict policy selected among the checks that fail"):
	// the caller may Check each domain.
	Domains []string
	// Err is the underlying error, if any.
	Err error
}

func (e *AuthorError) Error() string {
	s := ErrNoAuthorDomain.Error() + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrNoAuthorDomain and Err, for errors.Is and As.
func (e *AuthorError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrNoAuthorDomain}
	}
	return []error{ErrNoAuthorDomain, e.Err}
}

// FromDomain returns the author domain of a message with header h, as
// RFC 7489 §6.6.1 asks: "exactly one RFC5322.From domain (a single
// From: field with a single domain in it)", normalized to lowercase
// A-labels. Field names are compared without regard to case.
//
// It returns an *AuthorError, wrapping ErrNoAuthorDomain, for no From
// field or several, a field that does not parse or holds no address
// (such as the empty group "undisclosed-recipients:;"), or addresses
// in different domains. Several addresses in one domain give that
// domain. A group with mailboxes, which RFC 5322 §3.6.2 does not allow
// in From, is read like a list of its mailboxes: the domain shown to
// the reader is still evaluated, so the syntax cannot be used to get
// around a policy. Encoded words (RFC 2047) are allowed in display
// names, in any charset: they are not decoded for the domain.
func FromDomain(h mail.Header) (string, error) {
	var fields []string
	for k, vs := range h {
		if strings.EqualFold(k, "From") {
			fields = append(fields, vs...)
		}
	}
	switch {
	case len(fields) == 0:
		return "", &AuthorError{Reason: "no From field"}
	case len(fields) > 1:
		return "", &AuthorError{Reason: fmt.Sprintf("%d From fields", len(fields))}
	}
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		// the display name does not matter: accept any charset
		CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
	}}
	addrs, err := p.ParseList(fields[0])
	if err != nil {
		return "", &AuthorError{Reason: "unparsable From field", Err: err}
	}
	if len(addrs) == 0 {
		return "", &AuthorError{Reason: "no address in From field"}
	}
	var domains []string
	for _, a := range addrs {
		at := strings.LastIndexByte(a.Address, '@')
		if at < 0 {
			return "", &AuthorError{Reason: fmt.Sprintf("address %q without domain", a.Address)}
		}
		d, err := normalizeDomain(a.Address[at+1:])
		if err != nil {
			return "", &AuthorError{Reason: "invalid domain in From field", Err: err}
		}
		if !slices.Contains(domains, d) {
			domains = append(domains, d)
		}
	}
	if len(domains) > 1 {
		return "", &AuthorError{Reason: fmt.Sprintf("From field has addresses in %d domains", len(domains)), Domains: domains}
	}
	return domains[0], nil
}
