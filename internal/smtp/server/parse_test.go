package server

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestSplitCommand(t *testing.T) {
	for _, tc := range []struct{ line, verb, arg string }{
		{"EHLO example.org", "EHLO", "example.org"},
		{"ehlo  example.org  ", "EHLO", "example.org"},
		{"MAIL FROM:<a@b> SIZE=1", "MAIL", "FROM:<a@b> SIZE=1"},
		{"QUIT", "QUIT", ""},
		{"rset ", "RSET", ""},
		{"", "", ""},
		{"X\tY", "X\tY", ""},
	} {
		verb, arg := splitCommand(tc.line)
		if verb != tc.verb || arg != tc.arg {
			t.Errorf("splitCommand(%q) = %q, %q; want %q, %q", tc.line, verb, arg, tc.verb, tc.arg)
		}
	}
}

func TestValidLine(t *testing.T) {
	for line, want := range map[string]bool{
		"MAIL FROM:<a@b>":     true,
		"NOOP\tx":             true,
		"MAIL FROM:<ä@b>":     true,
		"MAIL FROM:<a\x00@b>": false,
		"RCPT TO:<a@b>\rX":    false,
		"NOOP \x7f":           false,
		"NOOP \x1b[31m":       false,
	} {
		if got := validLine(line); got != want {
			t.Errorf("validLine(%q) = %v", line, got)
		}
	}
}

func TestParsePath(t *testing.T) {
	long := strings.Repeat("a", 64)
	label := strings.Repeat("b", 63)
	domain255 := label + "." + label + "." + label + "." + strings.Repeat("c", 61) // 255 octets
	for _, tc := range []struct {
		in      string
		utf8    bool
		mailbox string
		rest    string
		err     error
	}{
		{in: "<a@example.org>", mailbox: "a@example.org"},
		{in: " <a@example.org>", mailbox: "a@example.org"},
		{in: "<a@example.org> SIZE=10", mailbox: "a@example.org", rest: " SIZE=10"},
		{in: "<>", mailbox: ""},
		{in: "<Postmaster>", mailbox: "Postmaster"},
		{in: "<POSTMASTER>", mailbox: "POSTMASTER"},
		{in: "<user>", mailbox: "user"},
		{in: "<first.last+tag@example.org>", mailbox: "first.last+tag@example.org"},
		{in: "<!#$%&'*+-/=?^_`{|}~@example.org>", mailbox: "!#$%&'*+-/=?^_`{|}~@example.org"},
		{in: "<@a.example,@b.example:user@d.example>", mailbox: "user@d.example"},
		{in: "<@a.example:user@d.example>", mailbox: "user@d.example"},
		{in: `<"john.doe"@example.org>`, mailbox: "john.doe@example.org"},
		{in: "<a@[192.0.2.1]>", mailbox: "a@[192.0.2.1]"},
		{in: "<a@[IPv6:2001:db8::1]>", mailbox: "a@[IPv6:2001:db8::1]"},
		{in: "<a@xn--bcher-kva.example>", mailbox: "a@xn--bcher-kva.example"},
		{in: "<" + long + "@example.org>", mailbox: long + "@example.org"},
		{in: "<a@" + domain255 + ">", err: errAddrTooLong},
		{in: "<δοκιμή@παράδειγμα.δοκιμή>", utf8: true, mailbox: "δοκιμή@παράδειγμα.δοκιμή"},
		{in: "<δοκιμή@example.org>", err: errAddrNonASCII},
		{in: "<a@bücher.example>", err: errAddrNonASCII},
		{in: "<a@b\xff>", utf8: true, err: errAddrSyntax},

		{in: "a@example.org", err: errAddrSyntax},
		{in: "<a@example.org", err: errAddrSyntax},
		{in: "<a@example.org>x", err: errAddrSyntax},
		{in: "<a@example.org> (comment)", mailbox: "a@example.org", rest: " (comment)"},
		{in: "<(comment)a@example.org>", err: errAddrSyntax},
		{in: "<a(comment)@example.org>", err: errAddrSyntax},
		{in: "Alice <a@example.org>", err: errAddrSyntax},
		{in: `<"john doe"@example.org>`, err: errAddrSyntax},
		{in: `<"a@elsewhere.example"@example.org>`, mailbox: `"a@elsewhere.example"@example.org`},
		{in: `<"a@b@c"@example.org>`, mailbox: `"a@b@c"@example.org`},
		{in: `<"a@"@example.org>`, err: errAddrSyntax},
		{in: `<"@b"@example.org>`, err: errAddrSyntax},
		{in: `<"a@b c"@example.org>`, err: errAddrSyntax},
		{in: `<"a\"b"@example.org>`, err: errAddrSyntax},
		{in: `<"a,b"@example.org>`, err: errAddrSyntax},
		{in: `<"">`, err: errAddrSyntax},
		{in: `<">`, err: errAddrSyntax},
		{in: "<a..b@example.org>", err: errAddrSyntax},
		{in: "<.a@example.org>", err: errAddrSyntax},
		{in: "<a.@example.org>", err: errAddrSyntax},
		{in: "<a b@example.org>", err: errAddrSyntax},
		{in: "<@example.org>", err: errAddrSyntax},
		{in: "<a@>", err: errAddrSyntax},
		{in: "<a@example.org.>", err: errAddrSyntax},
		{in: "<a@-example.org>", err: errAddrSyntax},
		{in: "<a@example-.org>", err: errAddrSyntax},
		{in: "<a@exa_mple.org>", err: errAddrSyntax},
		{in: "<a@example..org>", err: errAddrSyntax},
		{in: "<a@[300.0.0.1]>", err: errAddrSyntax},
		{in: "<a@[IPv6:192.0.2.1]>", err: errAddrSyntax},
		{in: "<a@[tag:content]>", err: errAddrSyntax},
		{in: "<a@[192.0.2.1>", err: errAddrSyntax},
		{in: "<@a.example:>", err: errAddrSyntax},
		{in: "<@a.example user@d.example>", err: errAddrSyntax},
		{in: "<@a..example:user@d.example>", err: errAddrSyntax},
		{in: "<a" + long + "@example.org>", err: errAddrTooLong},
		{in: "<a@" + label + "x.example>", err: errAddrSyntax},
		{in: "<" + long + "@" + strings.Repeat("d.", 95) + "org>", err: errAddrTooLong},
	} {
		mailbox, rest, err := parsePath(tc.in, tc.utf8)
		if err != tc.err || err == nil && (mailbox != tc.mailbox || rest != tc.rest) {
			t.Errorf("parsePath(%q) = %q, %q, %v; want %q, %q, %v", tc.in, mailbox, rest, err, tc.mailbox, tc.rest, tc.err)
		}
	}
}

func TestValidHelo(t *testing.T) {
	for name, want := range map[string]bool{
		"mx.example.org":        true,
		"localhost":             true,
		"my_pc":                 true,
		"[192.0.2.1]":           true,
		"[IPv6:2001:db8::1]":    true,
		"mx.example.org.":       false,
		"two words":             false,
		"[192.0.2.1":            false,
		"bücher.example":        false,
		"":                      false,
		strings.Repeat("a", 64): false,
	} {
		if got := validHelo(name); got != want {
			t.Errorf("validHelo(%q) = %v", name, got)
		}
	}
}

func TestParseParams(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []param
		err  error
	}{
		{in: "", want: nil},
		{in: " SIZE=100 BODY=8BITMIME", want: []param{{"SIZE", "100", true}, {"BODY", "8BITMIME", true}}},
		{in: "  smtputf8  ", want: []param{{"SMTPUTF8", "", false}}},
		{in: " X-FOO=bar", want: []param{{"X-FOO", "bar", true}}},
		{in: " ENVID=ä", want: []param{{"ENVID", "ä", true}}},
		{in: " SIZE=", err: errParamSyntax},
		{in: " =x", err: errParamSyntax},
		{in: " -X=1", err: errParamSyntax},
		{in: " SIZE=1=2", err: errParamSyntax},
		{in: " SIZE=1 size=2", err: errParamSyntax},
		{in: " KEY=\xff", err: errParamSyntax},
		{in: " (comment)", err: errParamSyntax},
	} {
		got, err := parseParams(tc.in)
		if err != tc.err || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseParams(%q) = %v, %v; want %v, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseMailParams(t *testing.T) {
	all := mailOptions{binaryMIME: true, requireTLS: true, authenticated: true}
	for _, tc := range []struct {
		in   string
		o    mailOptions
		want MailParams
		err  error
	}{
		{in: "SIZE=0", want: MailParams{}},
		{in: "SIZE=1048576", want: MailParams{Size: 1 << 20}},
		{in: "SIZE=9223372036854775807", want: MailParams{Size: math.MaxInt64}},
		{in: "SIZE=99999999999999999999", want: MailParams{Size: math.MaxInt64}},
		{in: "SIZE=-1", err: errParamSyntax},
		{in: "SIZE=1k", err: errParamSyntax},
		{in: "SIZE", err: errParamSyntax},
		{in: "BODY=7bit", want: MailParams{Body: Body7Bit}},
		{in: "BODY=8BITMIME", want: MailParams{Body: Body8BitMIME}},
		{in: "BODY=BINARYMIME", o: all, want: MailParams{Body: BodyBinaryMIME}},
		{in: "BODY=BINARYMIME", err: errParamUnknown},
		{in: "BODY=9BIT", err: errParamSyntax},
		{in: "SMTPUTF8", want: MailParams{SMTPUTF8: true}},
		{in: "SMTPUTF8=yes", err: errParamSyntax},
		{in: "REQUIRETLS", o: all, want: MailParams{RequireTLS: true}},
		{in: "REQUIRETLS", err: errParamUnknown},
		{in: "REQUIRETLS=1", o: all, err: errParamSyntax},
		{in: "RET=hdrs", want: MailParams{Ret: "HDRS"}},
		{in: "RET=FULL", want: MailParams{Ret: "FULL"}},
		{in: "RET=ALL", err: errParamSyntax},
		{in: "ENVID=QQ+2BA", want: MailParams{EnvID: "QQ+A"}},
		{in: "ENVID=a+2b", err: errParamSyntax},
		{in: "ENVID=a+2", err: errParamSyntax},
		{in: "ENVID=a+0D+0A", err: errParamSyntax},
		{in: "ENVID=ä", err: errParamSyntax},
		{in: "ENVID=" + strings.Repeat("x", 101), err: errParamSyntax},
		{in: "AUTH=<>", o: all, want: MailParams{}},
		{in: "AUTH=alice+40example.org", o: all, want: MailParams{Auth: "alice@example.org"}},
		{in: "AUTH=alice+40example.org", want: MailParams{}},
		{in: "AUTH=a+ZZ", o: all, err: errParamSyntax},
		{in: "MT-PRIORITY=3", err: errParamUnknown},
		{in: "BY=120;R", err: errParamUnknown},
		{in: "SIZE=10 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=x", want: MailParams{Size: 10, Body: Body8BitMIME, SMTPUTF8: true, Ret: "FULL", EnvID: "x"}},
	} {
		params, err := parseParams(" " + tc.in)
		if err != nil {
			t.Fatalf("parseParams(%q): %v", tc.in, err)
		}
		got, err := parseMailParams(params, tc.o)
		if err != tc.err || err == nil && got != tc.want {
			t.Errorf("parseMailParams(%q) = %+v, %v; want %+v, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseRcptParams(t *testing.T) {
	for _, tc := range []struct {
		in   string
		utf8 bool
		want RcptParams
		err  error
	}{
		{in: "NOTIFY=NEVER", want: RcptParams{Notify: []string{"NEVER"}}},
		{in: "NOTIFY=success,failure,DELAY", want: RcptParams{Notify: []string{"SUCCESS", "FAILURE", "DELAY"}}},
		{in: "NOTIFY=NEVER,SUCCESS", err: errParamSyntax},
		{in: "NOTIFY=SUCCESS,SUCCESS", err: errParamSyntax},
		{in: "NOTIFY=SOMETIMES", err: errParamSyntax},
		{in: "NOTIFY=SUCCESS,", err: errParamSyntax},
		{in: "ORCPT=rfc822;bob+40example.org", want: RcptParams{ORcptType: "rfc822", ORcpt: "bob@example.org"}},
		{in: "ORCPT=RFC822;a+2Bb@example.org", want: RcptParams{ORcptType: "RFC822", ORcpt: "a+b@example.org"}},
		{in: `ORCPT=utf-8;d\x{E9}j\x{E0}@example.org`, want: RcptParams{ORcptType: "utf-8", ORcpt: "déjà@example.org"}},
		{in: "ORCPT=utf-8;déjà@example.org", utf8: true, want: RcptParams{ORcptType: "utf-8", ORcpt: "déjà@example.org"}},
		{in: "ORCPT=utf-8;déjà@example.org", err: errParamSyntax},
		{in: `ORCPT=utf-8;a\x{D800}@example.org`, err: errParamSyntax},
		{in: `ORCPT=utf-8;a\x{0A}@example.org`, err: errParamSyntax},
		{in: `ORCPT=utf-8;a\x{}@example.org`, err: errParamSyntax},
		{in: `ORCPT=utf-8;a\x{1234567}@example.org`, err: errParamSyntax},
		{in: "ORCPT=utf-8;a+2B@example.org", err: errParamSyntax},
		{in: "ORCPT=rfc822", err: errParamSyntax},
		{in: "ORCPT=;a@b", err: errParamSyntax},
		{in: "ORCPT=rfc822;", err: errParamSyntax},
		{in: "ORCPT=rfc 822;a@b", err: errParamSyntax},
		{in: "ORCPT=rfc822;a+0Db", err: errParamSyntax},
		{in: "ORCPT=rfc822;" + strings.Repeat("a", 500), err: errParamSyntax},
		{in: "X-FOO=1", err: errParamUnknown},
	} {
		params, err := parseParams(" " + tc.in)
		if err != nil {
			if tc.err == errParamSyntax {
				continue
			}
			t.Fatalf("parseParams(%q): %v", tc.in, err)
		}
		got, err := parseRcptParams(params, tc.utf8)
		if err != tc.err || err == nil && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseRcptParams(%q) = %+v, %v; want %+v, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestDecodeXtext(t *testing.T) {
	for in, want := range map[string]string{
		"abc":         "abc",
		"a+2Bb":       "a+b",
		"+3D":         "=",
		"+41+42":      "AB",
		"!~":          "!~",
		"a+20b":       "a b",
		"":            "\x00fail",
		"a+":          "\x00fail",
		"a+4":         "\x00fail",
		"a+4g":        "\x00fail",
		"a+4a":        "\x00fail",
		"a=b":         "\x00fail",
		"a b":         "\x00fail",
		"a+00":        "\x00fail",
		"a+7F":        "\x00fail",
		"caf\xc3\xa9": "\x00fail",
	} {
		got, ok := decodeXtext(in)
		if want == "\x00fail" {
			if ok {
				t.Errorf("decodeXtext(%q) = %q, want failure", in, got)
			}
			continue
		}
		if !ok || got != want {
			t.Errorf("decodeXtext(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestParseBDAT(t *testing.T) {
	for _, tc := range []struct {
		in       string
		size     int64
		last, ok bool
	}{
		{"100", 100, false, true},
		{"0 LAST", 0, true, true},
		{"100 last", 100, true, true},
		{"100  LAST ", 100, true, true},
		{"99999999999999999999 LAST", math.MaxInt64, true, true},
		{"", 0, false, false},
		{"-1", 0, false, false},
		{"10 FIRST", 0, false, false},
		{"10 LAST X", 0, false, false},
		{"LAST", 0, false, false},
	} {
		size, last, ok := parseBDAT(tc.in)
		if size != tc.size || last != tc.last || ok != tc.ok {
			t.Errorf("parseBDAT(%q) = %d, %v, %v", tc.in, size, last, ok)
		}
	}
}

func TestReplyNormalize(t *testing.T) {
	for _, tc := range []struct {
		in, want Reply
	}{
		{Reply{Code: 550, Text: "no"}, Reply{Code: 550, Enhanced: EnhancedCode{5, 0, 0}, Text: "no"}},
		{Reply{Code: 550, Enhanced: EnhancedCode{4, 7, 1}}, Reply{Code: 550, Enhanced: EnhancedCode{5, 0, 0}}},
		{Reply{Code: 451, Enhanced: EnhancedCode{4, 7, 1}}, Reply{Code: 451, Enhanced: EnhancedCode{4, 7, 1}}},
		{Reply{Code: 421}, Reply{Code: 421, Enhanced: EnhancedCode{4, 0, 0}, Disconnect: true}},
		{Reply{Code: 354}, Reply{Code: 451, Enhanced: EnhancedCode{4, 3, 0}, Text: "Temporary server failure, try again later"}},
		{Reply{Code: 99}, Reply{Code: 451, Enhanced: EnhancedCode{4, 3, 0}, Text: "Temporary server failure, try again later"}},
		{Reply{Code: 250, Text: "ok", Disconnect: true}, Reply{Code: 250, Enhanced: EnhancedCode{2, 0, 0}, Text: "ok", Disconnect: true}},
	} {
		if got := tc.in.normalize(); *got != tc.want {
			t.Errorf("%+v.normalize() = %+v, want %+v", tc.in, *got, tc.want)
		}
	}
}
