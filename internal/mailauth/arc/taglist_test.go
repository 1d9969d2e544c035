package arc

import (
	"strings"
	"testing"
)

func TestParseTagList(t *testing.T) {
	valid := map[string]tagList{
		"a=1":                       {{"a", "1"}},
		"a=1;":                      {{"a", "1"}},
		" a = 1 ; b=2 ;\r\n\t":      {{"a", "1"}, {"b", "2"}},
		"a=;b=x y":                  {{"a", ""}, {"b", "x y"}},
		"a=x\r\n y":                 {{"a", "x\r\n y"}},
		"p=MIGf\nMA0G":              {{"p", "MIGf\nMA0G"}},
		"A=1; a=2":                  {{"A", "1"}, {"a", "2"}}, // names are case-sensitive
		"x_1=é":                     {{"x_1", "é"}},
		"h=from : to;\r\n b=abc==;": {{"h", "from : to"}, {"b", "abc=="}},
	}
	for in, want := range valid {
		got, err := parseTagList(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if len(got) != len(want) {
			t.Errorf("%q: %v, want %v", in, got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%q: %v, want %v", in, got, want)
			}
		}
	}
	invalid := []string{
		"", ";", " ; ", "a=1;;b=2", "a", "=1", "1a=2", "_a=1", "a b=1",
		"a=1; a=2", "a=\x00", "a=x\x7f", "a-b=1",
	}
	for _, in := range invalid {
		if l, err := parseTagList(in); err == nil {
			t.Errorf("%q: parsed as %v", in, l)
		}
	}
}

// FuzzTagList checks that the parser does not panic and that what it
// accepts keeps its invariants: valid unique names, values that
// round-trip through formatting.
func FuzzTagList(f *testing.F) {
	for _, s := range []string{
		"a=rsa-sha256; b=abc; bh=def; c=relaxed/relaxed; d=example.org; h=from:to; i=1; s=sel; t=12345",
		"i=1; cv=none; a=rsa-sha256; d=example.org; s=sel; b=x",
		"v=DKIM1; k=rsa; p=MIGf MA0G",
		" a = 1 ;\r\n\tb=2;", "a=1;;", "a", "=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := parseTagList(s)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		parts := make([]string, len(l))
		for i, tg := range l {
			if !validTagName(tg.name) || seen[tg.name] {
				t.Fatalf("%q: bad or repeated name %q", s, tg.name)
			}
			seen[tg.name] = true
			if strings.ContainsRune(tg.value, ';') || tg.value != trimFWS(tg.value) {
				t.Fatalf("%q: bad value %q", s, tg.value)
			}
			parts[i] = tg.name + "=" + tg.value
		}
		again, err := parseTagList(strings.Join(parts, "; "))
		if err != nil || len(again) != len(l) {
			t.Fatalf("%q: reformatted list does not parse back: %v", s, err)
		}
		for i := range l {
			if again[i] != l[i] {
				t.Fatalf("%q: %v became %v", s, l[i], again[i])
			}
		}
	})
}
