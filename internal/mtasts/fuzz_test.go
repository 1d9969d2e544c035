package mtasts

import (
	"strings"
	"testing"
)

func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
		"version: STSv1\nmode: none\nmax_age: 0\n",
		"version: STSv1\nmode: testing\nmx: a.example.\nfoo: bar\nmode: enforce\nmax_age: 31557600",
		"version:STSv1\n\n  mode :\ttesting \nmx:A.EXAMPLE\nmax_age: 0000000001\n",
		"mode: enforce\nmx: *\nmax_age: 99999999999\n",
		"",
		"\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParsePolicy(body)
		if err != nil {
			return
		}
		if !p.Mode.valid() || p.MaxAge < 0 || p.MaxAge > MaxMaxAge || (len(p.MX) == 0 && p.Mode != ModeNone) {
			t.Fatalf("ParsePolicy(%q) = %+v: out of range", body, p)
		}
		s := p.String()
		back, err := ParsePolicy([]byte(s))
		if err != nil {
			t.Fatalf("ParsePolicy(%q) = %+v, whose String %q does not parse: %v", body, p, s, err)
		}
		if !samePolicy(back, p) || back.String() != s {
			t.Fatalf("ParsePolicy(%q) = %+v, reparsed %+v", body, p, back)
		}
		for _, mx := range p.MX {
			if !p.Match(strings.Replace(mx, "*", "x", 1)) {
				t.Fatalf("policy %+v does not match its own mx %q", p, mx)
			}
		}
	})
}

func FuzzParseTXT(f *testing.F) {
	for _, s := range []string{
		"v=STSv1; id=20160831085700Z;",
		"v=STSv1;id=1",
		"v=STSv1 ; id=abc ; ext=x; ",
		"v=STSv1",
		"v=STSv1; id=1;;",
		"v=spf1 -all",
		"v=STSv1; id=a; id=b",
	} {
		f.Add(s, "")
		f.Add(s, "v=spf1 -all")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		id, err := ParseTXT([]string{a, b})
		if err != nil {
			if id != "" {
				t.Fatalf("ParseTXT(%q, %q) = %q with error %v", a, b, id, err)
			}
			return
		}
		if !validID(id) {
			t.Fatalf("ParseTXT(%q, %q) = invalid id %q", a, b, id)
		}
		if back, err := ParseTXT([]string{"v=STSv1; id=" + id}); err != nil || back != id {
			t.Fatalf("id %q does not reparse: %q, %v", id, back, err)
		}
	})
}
