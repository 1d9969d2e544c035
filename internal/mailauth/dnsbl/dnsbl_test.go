package dnsbl

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"smtpd/internal/dns"
	"smtpd/internal/dns/dnstest"
)

// Resolver is satisfied by the daemon's resolver.
var _ Resolver = (*dns.Resolver)(nil)

// newDNS starts a test DNS server with records and returns a resolver
// asking it.
func newDNS(t *testing.T, records ...string) (*dnstest.Server, *dns.Resolver) {
	t.Helper()
	srv, err := dnstest.Start(records...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	r, err := dns.New([]string{srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	r.Timeout = 500 * time.Millisecond
	return srv, r
}

func TestQueryName(t *testing.T) {
	for _, tc := range []struct{ ip, zone, want string }{
		// the examples of RFC 5782 §2.1 and §2.4
		{"192.0.2.99", "bad.example.com", "99.2.0.192.bad.example.com"},
		{"2001:db8:1:2:3:4:567:89ab", "ugly.example.com", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com"},
		{"::ffff:192.0.2.1", "bl.test.", "1.2.0.192.bl.test"},
		{"2001:db8::1", "bl.test", "1.0.0.0." + strings.Repeat("0.", 20) + "8.b.d.0.1.0.0.2.bl.test"},
	} {
		if got := QueryName(netip.MustParseAddr(tc.ip), tc.zone); got != tc.want {
			t.Errorf("QueryName(%s, %s) = %s\nwant %s", tc.ip, tc.zone, got, tc.want)
		}
	}
}

func TestParseRange(t *testing.T) {
	for _, tc := range []struct{ in, lo, hi string }{
		{"127.0.0.2", "127.0.0.2", "127.0.0.2"},
		{"127.0.0.2-127.0.0.11", "127.0.0.2", "127.0.0.11"},
		{" 127.0.0.2 - 127.0.0.11 ", "127.0.0.2", "127.0.0.11"},
		{"127.0.1.0/24", "127.0.1.0", "127.0.1.255"},
		{"127.0.1.7/24", "127.0.1.0", "127.0.1.255"},
		{"127.0.0.0/8", "127.0.0.0", "127.255.255.255"},
		{"127.0.0.4/32", "127.0.0.4", "127.0.0.4"},
	} {
		r, err := ParseRange(tc.in)
		if err != nil || r.Lo.String() != tc.lo || r.Hi.String() != tc.hi {
			t.Errorf("ParseRange(%q) = %v, %v; want %s-%s", tc.in, r, err, tc.lo, tc.hi)
		}
	}
	for _, bad := range []string{"", "127.0.0", "127.0.0.11-127.0.0.2", "::1", "::1-::2", "127.0.0.0/33", "x/8", "127.0.0.1-"} {
		if r, err := ParseRange(bad); err == nil {
			t.Errorf("ParseRange(%q) = %v, want an error", bad, r)
		}
	}
}

func codes(t *testing.T, specs ...string) []Range {
	var out []Range
	for _, s := range specs {
		r, err := ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestCheck(t *testing.T) {
	v6name := "1.0.0.0." + strings.Repeat("0.", 20) + "8.b.d.0.1.0.0.2.bl.test."
	srv, r := newDNS(t,
		// 192.0.2.1: listed, with a text
		"1.2.0.192.bl.test. 300 IN A 127.0.0.2",
		`1.2.0.192.bl.test. 300 IN TXT "Listed, see https://bl.test/q/192.0.2.1"`,
		// 192.0.2.2: listed twice, with a text in two records, one
		// hostile
		"2.2.0.192.bl.test. 300 IN A 127.0.0.10",
		"2.2.0.192.bl.test. 300 IN A 127.0.0.4",
		"2.2.0.192.bl.test. 300 IN A 127.0.0.4",
		`2.2.0.192.bl.test. 300 IN TXT "second text"`,
		`2.2.0.192.bl.test. 300 IN TXT "spam\013\010250 OK\009and \"more\"\000 caf\195\169"`,
		// 192.0.2.3: a code outside 127.0.0.2-127.0.0.11
		"3.2.0.192.bl.test. 300 IN A 127.0.1.1",
		// 192.0.2.4: Spamhaus's "query through a public resolver"
		"4.2.0.192.bl.test. 300 IN A 127.255.255.254",
		// 192.0.2.5: a resolver that answers for names that do not
		// exist
		"5.2.0.192.bl.test. 300 IN A 203.0.113.5",
		// 192.0.2.7: a name without an A record (NODATA)
		`7.2.0.192.bl.test. 300 IN TXT "no A record"`,
		// 192.0.2.8: listed, without a text
		"8.2.0.192.bl.test. 300 IN A 127.0.0.3",
		// 192.0.2.9: a long text
		"9.2.0.192.bl.test. 300 IN A 127.0.0.2",
		`9.2.0.192.bl.test. 300 IN TXT "`+strings.Repeat("long ", 100)+`"`,
		// 2001:db8::1: listed by nibbles
		v6name+" 300 IN A 127.0.0.2",
		v6name+` 300 IN TXT "IPv6 listed"`,
		// the allow list trusts 192.0.2.1 and 192.0.2.3
		"1.2.0.192.wl.test. 300 IN A 127.0.10.2",
		"3.2.0.192.wl.test. 300 IN A 127.0.10.3",
	)
	srv.ServFail("6.2.0.192.bl.test")
	ctx := context.Background()
	spamhaus := List{Zone: "bl.test", Codes: codes(t, "127.0.0.2-127.0.0.11")}
	anyCode := List{Zone: "bl.test."}
	allow := List{Zone: "wl.test", Allow: true}

	type want struct {
		blocked bool
		allowed bool
		code    string
		text    string
		err     string // a substring of the error, "" for none
	}
	for _, tc := range []struct {
		ip    string
		lists []List
		want  want
	}{
		{"192.0.2.1", []List{spamhaus}, want{blocked: true, code: "127.0.0.2", text: "Listed, see https://bl.test/q/192.0.2.1"}},
		{"::ffff:192.0.2.1", []List{spamhaus}, want{blocked: true, code: "127.0.0.2", text: "Listed, see https://bl.test/q/192.0.2.1"}},
		{"192.0.2.1", []List{spamhaus, allow}, want{allowed: true}},
		{"192.0.2.1", []List{allow, spamhaus}, want{allowed: true}},
		{"192.0.2.2", []List{spamhaus}, want{blocked: true, code: "127.0.0.4", text: `second text; spam 250 OK and "more"? caf??`}},
		{"192.0.2.3", []List{spamhaus}, want{}},
		{"192.0.2.3", []List{anyCode}, want{blocked: true, code: "127.0.1.1", text: ""}},
		{"192.0.2.3", []List{anyCode, allow}, want{allowed: true}},
		{"192.0.2.4", []List{spamhaus}, want{err: "127.255.255.254: query refused"}},
		{"192.0.2.4", []List{anyCode}, want{err: "127.255.255.254: query refused"}},
		{"192.0.2.5", []List{anyCode}, want{}},
		{"192.0.2.6", []List{spamhaus}, want{err: "SERVFAIL"}},
		{"192.0.2.7", []List{anyCode}, want{}},
		{"192.0.2.8", []List{spamhaus}, want{blocked: true, code: "127.0.0.3"}},
		{"192.0.2.9", []List{spamhaus}, want{blocked: true, code: "127.0.0.2", text: strings.TrimSpace(strings.Repeat("long ", 40))}},
		{"192.0.2.99", []List{spamhaus, allow}, want{}},
		{"2001:db8::1", []List{spamhaus}, want{blocked: true, code: "127.0.0.2", text: "IPv6 listed"}},
		{"2001:db8::2", []List{spamhaus}, want{}},
		// one list failing leaves the others' answers
		{"192.0.2.1", []List{{Zone: "other.test"}, spamhaus, {Zone: ""}}, want{blocked: true, code: "127.0.0.2", text: "Listed, see https://bl.test/q/192.0.2.1", err: "invalid zone"}},
		{"192.0.2.6", []List{spamhaus, allow}, want{err: "SERVFAIL"}},
	} {
		res, err := Check(ctx, r, netip.MustParseAddr(tc.ip), tc.lists)
		name := tc.ip + " " + tc.lists[0].Zone
		if tc.want.err == "" && err != nil || tc.want.err != "" && (err == nil || !strings.Contains(err.Error(), tc.want.err)) {
			t.Errorf("%s: error %v, want %q", name, err, tc.want.err)
		}
		if (err == nil) != (len(res.Errors) == 0) {
			t.Errorf("%s: error %v but Result.Errors %v", name, err, res.Errors)
		}
		m, blocked := res.Blocked()
		_, allowed := res.Allowed()
		if blocked != tc.want.blocked || allowed != tc.want.allowed {
			t.Errorf("%s: blocked %v allowed %v, want %v %v (%+v)", name, blocked, allowed, tc.want.blocked, tc.want.allowed, res)
			continue
		}
		if blocked && (m.Code.String() != tc.want.code || m.Text != tc.want.text) {
			t.Errorf("%s: code %s text %q, want %s %q", name, m.Code, m.Text, tc.want.code, tc.want.text)
		}
	}

	// all the codes that count are kept, sorted, once each
	res, _ := Check(ctx, r, netip.MustParseAddr("192.0.2.2"), []List{spamhaus})
	if len(res.Matches) != 1 || len(res.Matches[0].Codes) != 2 || res.Matches[0].Codes[1].String() != "127.0.0.10" {
		t.Errorf("codes: %+v", res.Matches)
	}
	// the reply text falls back to naming the list
	res, _ = Check(ctx, r, netip.MustParseAddr("192.0.2.8"), []List{spamhaus})
	if m, _ := res.Blocked(); m.Message(netip.MustParseAddr("192.0.2.8")) != "192.0.2.8 is listed by bl.test" {
		t.Errorf("message: %q", m.Message(netip.MustParseAddr("192.0.2.8")))
	}
	// errors are ListErrors, the list's errors ErrListError
	_, err := Check(ctx, r, netip.MustParseAddr("192.0.2.4"), []List{spamhaus})
	var le *ListError
	if !errors.As(err, &le) || le.Zone != "bl.test" || !errors.Is(err, ErrListError) || !strings.HasPrefix(le.Error(), "dnsbl: bl.test: ") {
		t.Errorf("list error: %v", err)
	}
	if _, err := Check(ctx, r, netip.Addr{}, []List{spamhaus}); err == nil {
		t.Error("no error for an invalid address")
	}
	if res, err := Check(ctx, r, netip.MustParseAddr("192.0.2.1"), nil); err != nil || len(res.Matches) != 0 {
		t.Errorf("no lists: %+v %v", res, err)
	}
}

// TestCheckTimeout asks a list through a server that does not answer:
// a temporary error, not a listing and not a pass.
func TestCheckTimeout(t *testing.T) {
	r, err := dns.New([]string{"127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	r.Timeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := Check(ctx, r, netip.MustParseAddr("192.0.2.1"), []List{{Zone: "bl.test"}, {Zone: "wl.test", Allow: true}})
	if err == nil || len(res.Errors) != 2 || dns.IsPermanent(err) {
		t.Errorf("dead server: %+v %v", res, err)
	}
	if _, ok := res.Blocked(); ok {
		t.Error("blocked by a list that did not answer")
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "",
		"  plain text  ":            "plain text",
		"a\r\n550 injected":         "a 550 injected",
		"tab\tand  spaces":          "tab and spaces",
		"nul\x00del\x7f":            "nul?del?",
		"é":                         "??",
		strings.Repeat("x", 300):    strings.Repeat("x", MaxTextLen),
		strings.Repeat("x ", 300):   strings.TrimSpace(strings.Repeat("x ", MaxTextLen/2)),
		"%s and $ stay as they are": "%s and $ stay as they are",
	} {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFCrDNS(t *testing.T) {
	var many []string
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"} {
		many = append(many, "20.2.0.192.in-addr.arpa. 300 IN PTR "+n+".many.test.")
		many = append(many, n+".many.test. 300 IN A 192.0.2.99")
	}
	many = append(many, "k.many.test. 300 IN A 192.0.2.20") // the 11th name
	srv, r := newDNS(t, append(many,
		"10.2.0.192.in-addr.arpa. 300 IN PTR Mail.Good.Test.",
		"mail.good.test. 300 IN A 192.0.2.10",
		"11.2.0.192.in-addr.arpa. 300 IN PTR a.two.test.",
		"11.2.0.192.in-addr.arpa. 300 IN PTR b.two.test.",
		"a.two.test. 300 IN A 192.0.2.99",
		"b.two.test. 300 IN A 192.0.2.98",
		"b.two.test. 300 IN A 192.0.2.11",
		"12.2.0.192.in-addr.arpa. 300 IN PTR liar.test.",
		"liar.test. 300 IN A 192.0.2.99",
		"14.2.0.192.in-addr.arpa. 300 IN PTR broken.test.",
		"16.2.0.192.in-addr.arpa. 300 IN PTR 192.0.2.16.",
		"17.2.0.192.in-addr.arpa. 300 IN PTR alias.test.",
		"alias.test. 300 IN CNAME real.test.",
		"real.test. 300 IN A 192.0.2.17",
		"18.2.0.192.in-addr.arpa. 300 IN PTR gone.test.",
		"18.2.0.192.in-addr.arpa. 300 IN PTR broken.test.",
		"19.2.0.192.in-addr.arpa. 300 IN TXT \"no PTR\"",
		"0.1.0.0."+strings.Repeat("0.", 20)+"8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR v6.test.",
		"v6.test. 300 IN AAAA 2001:db8::10",
		"v6.test. 300 IN A 192.0.2.99",
		"1.1.0.0."+strings.Repeat("0.", 20)+"8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR v4only.test.",
		"v4only.test. 300 IN A 192.0.2.99",
	)...)
	srv.ServFail("broken.test")
	srv.ServFail("15.2.0.192.in-addr.arpa")
	ctx := context.Background()
	for _, tc := range []struct {
		ip, name, result string
	}{
		{"192.0.2.10", "mail.good.test", Pass},
		{"::ffff:192.0.2.10", "mail.good.test", Pass},
		{"192.0.2.11", "b.two.test", Pass},
		{"192.0.2.12", "liar.test", Fail},
		{"192.0.2.13", "", PermError}, // NXDOMAIN
		{"192.0.2.19", "", PermError}, // no PTR record
		{"192.0.2.14", "broken.test", TempError},
		{"192.0.2.15", "", TempError},
		{"192.0.2.16", "192.0.2.16", Fail}, // a name that spells an address
		{"192.0.2.17", "alias.test", Pass},
		{"192.0.2.18", "gone.test", TempError}, // gone: NXDOMAIN, broken: might pass
		{"192.0.2.20", "a.many.test", Fail},    // the 11th name is not tried
		{"2001:db8::10", "v6.test", Pass},
		{"2001:db8::11", "v4only.test", Fail},
	} {
		name, result, err := FCrDNS(ctx, r, netip.MustParseAddr(tc.ip))
		if name != tc.name || result != tc.result {
			t.Errorf("FCrDNS(%s) = %q %s %v, want %q %s", tc.ip, name, result, err, tc.name, tc.result)
		}
		if (err != nil) != (result == TempError || result == PermError) {
			t.Errorf("FCrDNS(%s): %s with error %v", tc.ip, result, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "dnsbl: iprev") {
			t.Errorf("FCrDNS(%s): error %q", tc.ip, err)
		}
	}
	if n := srv.Queries("k.many.test", "A"); n != 0 {
		t.Errorf("the 11th name was resolved %d times", n)
	}
	if _, result, err := FCrDNS(ctx, r, netip.Addr{}); result != PermError || err == nil {
		t.Errorf("invalid address: %s %v", result, err)
	}
}

// FuzzText checks that whatever a list publishes, the text that reaches
// a reply is one short line of printable ASCII.
func FuzzText(f *testing.F) {
	f.Add(`Listed, see https://example.test/q/192.0.2.1`)
	f.Add("spam\r\n250 OK\tand \"more\"\x00 caf\xc3\xa9\\")
	f.Fuzz(func(t *testing.T, s string) {
		out := Sanitize(s)
		if len(out) > MaxTextLen {
			t.Errorf("%d bytes", len(out))
		}
		for i := 0; i < len(out); i++ {
			if out[i] < ' ' || out[i] > '~' {
				t.Fatalf("Sanitize(%q) = %q: byte %#x", s, out, out[i])
			}
		}
		if strings.HasPrefix(out, " ") || strings.HasSuffix(out, " ") || strings.Contains(out, "  ") {
			t.Errorf("Sanitize(%q) = %q: spaces", s, out)
		}
	})
}
