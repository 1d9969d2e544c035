package dmarc

import (
	"errors"
	"net/mail"
	"slices"
	"strings"
	"testing"
)

// readHeader parses the header of a message the way the daemon's
// callers would, with net/mail.
func readHeader(t testing.TB, header string) mail.Header {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(header + "\r\n"))
	if err != nil {
		t.Fatalf("ReadMessage(%q): %v", header, err)
	}
	return m.Header
}

func TestFromDomain(t *testing.T) {
	tests := []struct {
		name    string
		header  string // CRLF-separated fields
		want    string // "" for an error
		domains []string
	}{
		{"one address", "From: user@example.com\r\nTo: x@y.example\r\n", "example.com", nil},
		{"display name and angle", "From: \"Some One\" <user@Mail.Example.COM>\r\n", "mail.example.com", nil},
		{"folded field", "From: Some\r\n One <user@example.com>\r\n", "example.com", nil},
		{"lowercase field name", "from: user@example.com\r\n", "example.com", nil},
		{"comment", "From: user@example.com (the user)\r\n", "example.com", nil},
		{"no From field", "Sender: user@example.com\r\nTo: x@y.example\r\n", "", nil},
		{"two From fields", "From: a@example.com\r\nFrom: b@example.com\r\n", "", nil},
		{"two From fields, different case", "From: a@example.com\r\nFROM: a@example.com\r\n", "", nil},
		{"empty From field", "From: \r\n", "", nil},
		{"unparsable", "From: not an address\r\n", "", nil},
		{"no domain", "From: user\r\n", "", nil},
		{"empty group", "From: undisclosed-recipients:;\r\n", "", nil},
		{"group with one mailbox", "From: Team: a@example.com;\r\n", "example.com", nil},
		{"group with mailboxes in two domains", "From: Team: a@example.com, b@example.org;\r\n", "", []string{"example.com", "example.org"}},
		{"two addresses, one domain", "From: a@example.com, B <b@EXAMPLE.com>\r\n", "example.com", nil},
		{"two addresses, two domains", "From: a@example.com, b@example.net\r\n", "", []string{"example.com", "example.net"}},
		{"encoded word in display name", "From: =?utf-8?q?J=C3=B6rg?= <jorg@example.com>\r\n", "example.com", nil},
		{"encoded word, unknown charset", "From: =?x-unknown?q?abc?= <jorg@example.com>\r\n", "example.com", nil},
		{"encoded word hiding an address", "From: =?utf-8?q?ceo=40bank.example?= <x@attacker.example>\r\n", "attacker.example", nil},
		{"encoded word with raw @", "From: =?utf-8?q?ceo@bank.example?= <x@attacker.example>\r\n", "", nil},
		{"base64 encoded word", "From: =?UTF-8?B?w6l0w6k=?= <a@example.org>\r\n", "example.org", nil},
		{"quoted display name with address", "From: \"ceo@bank.example\" <x@attacker.example>\r\n", "attacker.example", nil},
		{"U-label domain", "From: jörg@bücher.example\r\n", "xn--bcher-kva.example", nil},
		{"domain literal", "From: user@[192.0.2.1]\r\n", "", nil},
		{"IPv4 as domain", "From: user@192.0.2.1\r\n", "", nil},
		{"quoted local part with @", "From: \"a@b\"@example.com\r\n", "example.com", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromDomain(readHeader(t, tt.header))
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Errorf("FromDomain = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("FromDomain = %q, want an error", got)
			}
			if !errors.Is(err, ErrNoAuthorDomain) {
				t.Errorf("error %v does not wrap ErrNoAuthorDomain", err)
			}
			var ae *AuthorError
			if !errors.As(err, &ae) {
				t.Fatalf("error %T is not *AuthorError", err)
			}
			if !strings.Contains(err.Error(), "no single author domain") {
				t.Errorf("error %q", err)
			}
			if !slices.Equal(ae.Domains, tt.domains) {
				t.Errorf("Domains = %q, want %q", ae.Domains, tt.domains)
			}
		})
	}
}

// TestFromDomainMap: a mail.Header built by hand, with keys that are
// not canonical, is read too.
func TestFromDomainMap(t *testing.T) {
	if d, err := FromDomain(mail.Header{"from": {"a@example.com"}}); err != nil || d != "example.com" {
		t.Errorf("got %q, %v", d, err)
	}
	if _, err := FromDomain(mail.Header{"From": {"a@example.com"}, "from": {"b@example.com"}}); !errors.Is(err, ErrNoAuthorDomain) {
		t.Errorf("two keys: %v", err)
	}
	if _, err := FromDomain(nil); !errors.Is(err, ErrNoAuthorDomain) {
		t.Errorf("nil header: %v", err)
	}
}

// FuzzFromDomain checks that FromDomain never panics, and returns
// either a normalized domain that Check accepts or an *AuthorError.
func FuzzFromDomain(f *testing.F) {
	for _, s := range []string{
		"user@example.com",
		"\"Some One\" <user@Mail.Example.COM>",
		"undisclosed-recipients:;",
		"Team: a@example.com, b@example.org;",
		"a@example.com, b@example.net",
		"=?utf-8?q?J=C3=B6rg?= <jorg@example.com>",
		"=?x-unknown?b?////?= <a@b.example>",
		"jörg@bücher.example",
		"user@[192.0.2.1]",
		"\"a@b\"@example.com (comment)",
		"a@xn--.example",
		"a@" + strings.Repeat("a.", 130) + "com",
		"",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, value string, asMessage bool) {
		h := mail.Header{"From": {value}}
		if asMessage {
			m, err := mail.ReadMessage(strings.NewReader("From: " + value + "\r\n\r\n"))
			if err != nil {
				return
			}
			h = m.Header
		}
		d, err := FromDomain(h)
		if err != nil {
			var ae *AuthorError
			if !errors.As(err, &ae) || !errors.Is(err, ErrNoAuthorDomain) {
				t.Fatalf("FromDomain(%q): error %v is not an *AuthorError", value, err)
			}
			return
		}
		n, nerr := normalizeDomain(d)
		if nerr != nil || n != d {
			t.Fatalf("FromDomain(%q) = %q, not normalized (%q, %v)", value, d, n, nerr)
		}
		if OrganizationalDomain(d) == "" {
			t.Fatalf("FromDomain(%q) = %q without organizational domain", value, d)
		}
	})
}
