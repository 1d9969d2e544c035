package mtasts

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseTXT(t *testing.T) {
	tests := []struct {
		name    string
		records []string
		id      string
		err     error // nil: valid
	}{
		{"minimal", []string{"v=STSv1; id=20160831085700Z"}, "20160831085700Z", nil},
		{"trailing delimiter", []string{"v=STSv1; id=abc;"}, "abc", nil},
		{"trailing delimiter and space", []string{"v=STSv1;id=abc ; "}, "abc", nil},
		{"no space", []string{"v=STSv1;id=1"}, "1", nil},
		{"tabs", []string{"v=STSv1\t;\tid=1"}, "1", nil},
		{"space before first delimiter", []string{"v=STSv1 ; id=1"}, "1", nil},
		{"id of 32", []string{"v=STSv1; id=" + strings.Repeat("a", 32)}, strings.Repeat("a", 32), nil},
		{"extension", []string{"v=STSv1; id=1; foo_bar.x-y=some!value"}, "1", nil},
		{"extension before id", []string{"v=STSv1; ext=1; id=2"}, "2", nil},
		{"other records ignored", []string{"v=spf1 -all", "v=STSv1; id=x1", "hello"}, "x1", nil},
		{"first id counts", []string{"v=STSv1; id=a; id=b"}, "a", nil},
		{"duplicate invalid id ignored", []string{"v=STSv1; id=a; id=-"}, "a", nil},

		{"none", nil, "", ErrNoRecord},
		{"no sts record", []string{"v=spf1 -all", "google-site-verification=x"}, "", ErrNoRecord},
		{"other version", []string{"v=STSv2; id=1"}, "", ErrNoRecord},
		{"version with suffix", []string{"v=STSv10; id=1"}, "", ErrNoRecord},
		{"lower-case version", []string{"v=stsv1; id=1"}, "", ErrNoRecord},
		{"v not first", []string{"id=1; v=STSv1"}, "", ErrNoRecord},
		{"two records", []string{"v=STSv1; id=1", "v=STSv1; id=2"}, "", ErrMultipleRecords},
		{"two records, one invalid", []string{"v=STSv1; id=1", "v=STSv1"}, "", ErrMultipleRecords},
		{"no id", []string{"v=STSv1"}, "", ErrRecordSyntax},
		{"only delimiter", []string{"v=STSv1;"}, "", ErrRecordSyntax},
		{"no id, extension", []string{"v=STSv1; foo=bar"}, "", ErrRecordSyntax},
		{"empty id", []string{"v=STSv1; id="}, "", ErrRecordSyntax},
		{"id of 33", []string{"v=STSv1; id=" + strings.Repeat("a", 33)}, "", ErrRecordSyntax},
		{"id with punctuation", []string{"v=STSv1; id=2016-08-31"}, "", ErrRecordSyntax},
		{"id with space", []string{"v=STSv1; id=1 2"}, "", ErrRecordSyntax},
		{"space around =", []string{"v=STSv1; id = 1"}, "", ErrRecordSyntax},
		{"upper-case ID", []string{"v=STSv1; ID=1"}, "", ErrRecordSyntax},
		{"empty field", []string{"v=STSv1; ; id=1"}, "", ErrRecordSyntax},
		{"two trailing delimiters", []string{"v=STSv1; id=1;;"}, "", ErrRecordSyntax},
		{"field without value", []string{"v=STSv1; id=1; foo"}, "", ErrRecordSyntax},
		{"invalid field name", []string{"v=STSv1; id=1; _foo=1"}, "", ErrRecordSyntax},
		{"long field name", []string{"v=STSv1; id=1; " + strings.Repeat("a", 33) + "=1"}, "", ErrRecordSyntax},
		{"empty extension value", []string{"v=STSv1; id=1; foo="}, "", ErrRecordSyntax},
		{"= in extension value", []string{"v=STSv1; id=1; foo=a=b"}, "", ErrRecordSyntax},
		{"non-ASCII extension value", []string{"v=STSv1; id=1; foo=é"}, "", ErrRecordSyntax},
		{"garbage after version", []string{"v=STSv1 x; id=1"}, "", ErrRecordSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ParseTXT(tt.records)
			if tt.err == nil {
				if err != nil || id != tt.id {
					t.Fatalf("ParseTXT(%q) = %q, %v, want %q", tt.records, id, err, tt.id)
				}
				return
			}
			if !errors.Is(err, tt.err) || id != "" {
				t.Fatalf("ParseTXT(%q) = %q, %v, want error %v", tt.records, id, err, tt.err)
			}
		})
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		policy *Policy // nil: invalid
	}{
		{"RFC example", "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
			&Policy{Mode: ModeEnforce, MX: []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, MaxAge: 604800 * time.Second}},
		{"LF", "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n",
			&Policy{Mode: ModeTesting, MX: []string{"mx.example.com"}, MaxAge: 86400 * time.Second}},
		{"no final newline", "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400",
			&Policy{Mode: ModeTesting, MX: []string{"mx.example.com"}, MaxAge: 86400 * time.Second}},
		{"mixed line ends, any order", "max_age: 1\r\nmx: a.example\nmode: enforce\r\nversion: STSv1",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: time.Second}},
		{"white space trimmed", "version:STSv1\n  mode :\tenforce  \nmx:   a.example\t\nmax_age:  60 \n\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: 60 * time.Second}},
		{"blank lines", "\nversion: STSv1\n\r\n \nmode: none\n\nmax_age: 0\n\n",
			&Policy{Mode: ModeNone, MaxAge: 0}},
		{"mode none without mx", "version: STSv1\nmode: none\nmax_age: 86400\n",
			&Policy{Mode: ModeNone, MaxAge: 86400 * time.Second}},
		{"mode none with mx", "version: STSv1\nmode: none\nmx: a.example\nmax_age: 86400\n",
			&Policy{Mode: ModeNone, MX: []string{"a.example"}, MaxAge: 86400 * time.Second}},
		{"unknown fields ignored", "version: STSv1\nmode: enforce\nfoo: bar baz\nMode: whatever\nx_1.y-z: ünïcode\nmx: a.example\nmax_age: 5\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: 5 * time.Second}},
		{"first of a repeated field counts", "version: STSv1\nmode: testing\nmode: enforce\nmode: bogus\nmax_age: 5\nmax_age: x\nversion: STSv2\nmx: a.example\n",
			&Policy{Mode: ModeTesting, MX: []string{"a.example"}, MaxAge: 5 * time.Second}},
		{"max_age maximum", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557600\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: 31557600 * time.Second}},
		{"max_age leading zeros", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 0000000042\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: 42 * time.Second}},
		{"mx trailing dot", "version: STSv1\nmode: enforce\nmx: a.example.\nmax_age: 1\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: time.Second}},
		{"mx case kept", "version: STSv1\nmode: enforce\nmx: MX1.Example.COM\nmax_age: 1\n",
			&Policy{Mode: ModeEnforce, MX: []string{"MX1.Example.COM"}, MaxAge: time.Second}},
		{"value with colon", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nurl: https://x\n",
			&Policy{Mode: ModeEnforce, MX: []string{"a.example"}, MaxAge: time.Second}},

		{"empty", "", nil},
		{"no version", "mode: enforce\nmx: a.example\nmax_age: 1\n", nil},
		{"no mode", "version: STSv1\nmx: a.example\nmax_age: 1\n", nil},
		{"no max_age", "version: STSv1\nmode: enforce\nmx: a.example\n", nil},
		{"no mx in enforce", "version: STSv1\nmode: enforce\nmax_age: 1\n", nil},
		{"no mx in testing", "version: STSv1\nmode: testing\nmax_age: 1\n", nil},
		{"other version", "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", nil},
		{"lower-case version", "version: stsv1\nmode: enforce\nmx: a.example\nmax_age: 1\n", nil},
		{"unknown mode", "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", nil},
		{"upper-case mode", "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 1\n", nil},
		{"max_age too large", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", nil},
		{"max_age of 11 digits", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 00000000001\n", nil},
		{"max_age negative", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", nil},
		{"max_age signed", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: +1\n", nil},
		{"max_age empty", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age:\n", nil},
		{"max_age unit", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1d\n", nil},
		{"mx empty", "version: STSv1\nmode: enforce\nmx:\nmax_age: 1\n", nil},
		{"mx wildcard inside", "version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n", nil},
		{"mx double wildcard", "version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n", nil},
		{"mx bare wildcard", "version: STSv1\nmode: enforce\nmx: *\nmax_age: 1\n", nil},
		{"mx with space", "version: STSv1\nmode: enforce\nmx: a.example b.example\nmax_age: 1\n", nil},
		{"mx with port", "version: STSv1\nmode: enforce\nmx: a.example:25\nmax_age: 1\n", nil},
		{"mx empty label", "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 1\n", nil},
		{"mx hyphen at label end", "version: STSv1\nmode: enforce\nmx: a-.example\nmax_age: 1\n", nil},
		{"mx label too long", "version: STSv1\nmode: enforce\nmx: " + strings.Repeat("a", 64) + ".example\nmax_age: 1\n", nil},
		{"mx U-label", "version: STSv1\nmode: enforce\nmx: bücher.example\nmax_age: 1\n", nil},
		{"a bad mx among good", "version: STSv1\nmode: enforce\nmx: a.example\nmx: b_c.example\nmax_age: 1\n", nil},
		{"line without colon", "version: STSv1\nmode: enforce\nmx a.example\nmx: a.example\nmax_age: 1\n", nil},
		{"invalid field name", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\nbad key: 1\n", nil},
		{"empty field name", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n: 1\n", nil},
		{"TXT syntax", "v=STSv1; id=1", nil},
		{"HTML", "<html><body>Not found</body></html>\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tt.body))
			if tt.policy == nil {
				if err == nil || !errors.Is(err, ErrPolicySyntax) {
					t.Fatalf("ParsePolicy(%q) = %+v, %v, want ErrPolicySyntax", tt.body, p, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePolicy(%q): %v", tt.body, err)
			}
			if !samePolicy(p, tt.policy) {
				t.Fatalf("ParsePolicy(%q) = %+v, want %+v", tt.body, p, tt.policy)
			}
		})
	}
}

func TestParsePolicyErrorNamesLine(t *testing.T) {
	_, err := ParsePolicy([]byte("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: soon\n"))
	if err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), "soon") {
		t.Fatalf("error %v, want it to name line 4 and its value", err)
	}
}

// samePolicy compares the parsed fields of policies.
func samePolicy(a, b *Policy) bool {
	return a.Mode == b.Mode && a.MaxAge == b.MaxAge && slices.Equal(a.MX, b.MX)
}

func TestPolicyStrings(t *testing.T) {
	p := &Policy{Mode: ModeEnforce, MX: []string{"mail.example.com", "*.example.net"}, MaxAge: 604800 * time.Second}
	want := []string{"version: STSv1", "mode: enforce", "mx: mail.example.com", "mx: *.example.net", "max_age: 604800"}
	if got := p.Strings(); !slices.Equal(got, want) {
		t.Errorf("Strings() = %q, want %q", got, want)
	}
	s := p.String()
	if s != strings.Join(want, "\r\n")+"\r\n" {
		t.Errorf("String() = %q", s)
	}
	back, err := ParsePolicy([]byte(s))
	if err != nil || !samePolicy(back, p) {
		t.Errorf("ParsePolicy(String()) = %+v, %v", back, err)
	}
	none := &Policy{Mode: ModeNone, MaxAge: 86400 * time.Second}
	if got := none.Strings(); !slices.Equal(got, []string{"version: STSv1", "mode: none", "max_age: 86400"}) {
		t.Errorf("Strings() of mode none = %q", got)
	}
}

func TestMatch(t *testing.T) {
	p := &Policy{Mode: ModeEnforce, MX: []string{"mail.example.com", "*.example.net", "MX.Example.ORG.", "*.Wild.Example"}}
	tests := []struct {
		host string
		want bool
	}{
		{"mail.example.com", true},
		{"MAIL.Example.Com", true},
		{"mail.example.com.", true},
		{"mx.example.org", true},
		{"mx.example.org.", true},
		{"example.com", false},
		{"other.example.com", false},
		{"mail.example.com.evil", false},
		{"xmail.example.com", false},
		{"a.mail.example.com", false},
		{"mx1.example.net", true},
		{"MX1.EXAMPLE.NET.", true},
		{"example.net", false},
		{"a.b.example.net", false},
		{".example.net", false},
		{"example.net.", false},
		{"mxexample.net", false},
		{"x.wild.example", true},
		{"wild.example", false},
		{"", false},
		{".", false},
		{"*.example.net", true}, // a literal "*" label is still one label
	}
	for _, tt := range tests {
		if got := p.Match(tt.host); got != tt.want {
			t.Errorf("Match(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
	if (&Policy{Mode: ModeEnforce}).Match("mail.example.com") {
		t.Error("a policy without mx matches a host")
	}
}

func TestExpires(t *testing.T) {
	fetched := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &Policy{Fetched: fetched, MaxAge: time.Hour}
	if !p.Expires().Equal(fetched.Add(time.Hour)) {
		t.Fatalf("Expires() = %v", p.Expires())
	}
	if p.expired(fetched.Add(59*time.Minute)) || !p.expired(fetched.Add(time.Hour)) {
		t.Fatal("expired() is wrong around max_age")
	}
}
