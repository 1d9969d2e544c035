package arc

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// The example of RFC 6376 §3.4.6.
const (
	rfc6376Header = "A: X\r\n" + "B : Y\t\r\n\tZ  \r\n"
	rfc6376Body   = " C \r\n" + "D \t E\r\n" + "\r\n" + "\r\n"
)

func TestCanonHeaderRFC6376(t *testing.T) {
	fields := []string{"A: X\r\n", "B : Y\t\r\n\tZ  \r\n"}
	var rel, sim strings.Builder
	for _, f := range fields {
		rel.WriteString(canonHeader(relaxed, f))
		sim.WriteString(canonHeader(simple, f))
	}
	if got, want := rel.String(), "a:X\r\nb:Y Z\r\n"; got != want {
		t.Errorf("relaxed: %q, want %q", got, want)
	}
	if got := sim.String(); got != rfc6376Header {
		t.Errorf("simple: %q, want %q", got, rfc6376Header)
	}
}

func canonBody(c dkim.Canonicalization, chunks ...string) string {
	var out bytes.Buffer
	bc := newBodyCanon(c, &out)
	for _, ch := range chunks {
		bc.Write([]byte(ch))
	}
	bc.Close()
	return out.String()
}

func TestCanonBody(t *testing.T) {
	for _, tc := range []struct {
		name          string
		in            string
		simple, relax string
	}{
		{"RFC 6376 §3.4.6", rfc6376Body, " C \r\nD \t E\r\n", " C\r\nD E\r\n"},
		{"empty", "", "\r\n", ""},
		{"only empty lines", "\r\n\r\n\r\n", "\r\n", ""},
		{"only whitespace", "  \r\n\t\r\n", "  \r\n\t\r\n", ""},
		{"no final CRLF", "a  b", "a  b\r\n", "a b\r\n"},
		{"bare LF", "a\nb\n\n", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"lone CR", "a\rb\r\n", "a\rb\r\n", "a\rb\r\n"},
		{"CR at the end", "a\r", "a\r\r\n", "a\r\r\n"},
		{"inner empty lines", "a\r\n\r\n \r\nb\r\n\r\n", "a\r\n\r\n \r\nb\r\n", "a\r\n\r\n\r\nb\r\n"},
		{"leading WSP", "\t\tx\r\n", "\t\tx\r\n", " x\r\n"},
	} {
		if got := canonBody(simple, tc.in); got != tc.simple {
			t.Errorf("%s: simple %q, want %q", tc.name, got, tc.simple)
		}
		if got := canonBody(relaxed, tc.in); got != tc.relax {
			t.Errorf("%s: relaxed %q, want %q", tc.name, got, tc.relax)
		}
		// the same, one byte at a time: nothing depends on how writes split
		chunks := strings.Split(tc.in, "")
		if got := canonBody(simple, chunks...); got != tc.simple {
			t.Errorf("%s, bytewise: simple %q, want %q", tc.name, got, tc.simple)
		}
		if got := canonBody(relaxed, chunks...); got != tc.relax {
			t.Errorf("%s, bytewise: relaxed %q, want %q", tc.name, got, tc.relax)
		}
	}
}

// The hashes of the empty body (RFC 6376 §3.4.3, §3.4.4), which every
// DKIM implementation shares.
func TestEmptyBodyHashes(t *testing.T) {
	for c, want := range map[dkim.Canonicalization]string{
		simple:  "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=",
		relaxed: "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
	} {
		bh := newBodyHash(bodyKey{c, -1})
		bh.canon.Close()
		if got := base64.StdEncoding.EncodeToString(bh.sum()); got != want {
			t.Errorf("%s: %s, want %s", c, got, want)
		}
	}
}

func TestBodyLimit(t *testing.T) {
	bh := newBodyHash(bodyKey{simple, 6})
	bh.canon.Write([]byte("abc\r\ndef\r\n"))
	bh.canon.Close()
	want := sha256.Sum256([]byte("abc\r\nd"))
	if !bytes.Equal(bh.sum(), want[:]) {
		t.Error("l=6 did not hash the first 6 canonical bytes")
	}
}

func TestParseCanon(t *testing.T) {
	for in, want := range map[string][2]dkim.Canonicalization{
		"relaxed/relaxed": {relaxed, relaxed},
		"relaxed":         {relaxed, simple},
		"simple/relaxed":  {simple, relaxed},
	} {
		h, b, err := parseCanon(in)
		if err != nil || h != want[0] || b != want[1] {
			t.Errorf("%q: %s/%s, %v", in, h, b, err)
		}
	}
	for _, in := range []string{"", "/", "relaxed/", "Relaxed/simple", "pancake/waffle", "relaxed/relaxed/relaxed"} {
		if _, _, err := parseCanon(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestRemoveB(t *testing.T) {
	for in, want := range map[string]string{
		"X: a=1; b=abc; bh=def\r\n":        "X: a=1; b=; bh=def\r\n",
		"X: a=1;\r\n b=ab\r\n  c ;t=2\r\n": "X: a=1;\r\n b=;t=2\r\n",
		"X: bh=x; b = q\r\n":               "X: bh=x; b =",
		"X: ab=x; b=\r\n":                  "X: ab=x; b=",
	} {
		if got := removeB(in); got != want {
			t.Errorf("removeB(%q) = %q, want %q", in, got, want)
		}
	}
}
