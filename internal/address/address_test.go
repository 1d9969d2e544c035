package address

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	valid := map[string]Address{
		"user@example.org":      {"user", "example.org"},
		"User+Tag@Example.ORG.": {"User+Tag", "example.org"},
		"postmaster":            {"postmaster", ""},
		"a@b@c":                 {"a@b", "c"},
	}
	for s, want := range valid {
		if got, err := Parse(s); err != nil || got != want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "@x", "a@", "a@.", "0@..", "a@.b", "a b@c", "<a@b>", "a@b\x00"} {
		if a, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", s, a)
		}
	}
}

func TestSplitAndBase(t *testing.T) {
	a := Split("Bob+lists@Example.org")
	if a != (Address{"Bob+lists", "Example.org"}) {
		t.Fatalf("Split: %+v", a)
	}
	if u, tag := a.Base(); u != "Bob" || tag != "lists" {
		t.Errorf("Base: %q %q", u, tag)
	}
	if Split("") != (Address{}) || Split("").String() != "" {
		t.Error("the empty sender does not stay empty")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"user@example.org", "User+Tag@Example.ORG.", "postmaster", "@x", "a@", "a@b@c", "\"q u\"@x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(s)
		if err != nil {
			return
		}
		if a.User == "" || strings.ContainsAny(a.String(), " \t\r\n<>\x00") {
			t.Fatalf("%q parsed as %+v", s, a)
		}
		again, err := Parse(a.String())
		if err != nil || again != a {
			t.Fatalf("%q: %+v does not survive a round trip: %+v, %v", s, a, again, err)
		}
	})
}

func TestInDomain(t *testing.T) {
	for _, c := range []struct {
		name, domain string
		want         bool
	}{
		{"example.org", "example.org", true},
		{"Example.ORG", "example.org", true},
		{"mail.example.org", "example.org", true},
		{"a.b.Example.org", "example.org", true},
		{"badexample.org", "example.org", false},
		{".example.org", "example.org", false},
		{"example.org", "mail.example.org", false},
		{"org", "example.org", false},
	} {
		if got := InDomain(c.name, c.domain); got != c.want {
			t.Errorf("InDomain(%q, %q) = %v, want %v", c.name, c.domain, got, c.want)
		}
	}
}

func TestIsHostname(t *testing.T) {
	long := strings.Repeat("a", 63)
	for s, want := range map[string]bool{
		"mx.example.org": true, "Example-1.ORG": true, "localhost": true, long + ".org": true,
		"": false, "example.org.": false, ".example.org": false, "a..b": false,
		"-a.org": false, "a-.org": false, "a_b.org": false, "a b.org": false,
		long + "a.org": false, strings.Repeat("a.", 127) + "ab": false,
	} {
		if got := IsHostname(s); got != want {
			t.Errorf("IsHostname(%q) = %v, want %v", s, got, want)
		}
	}
}
