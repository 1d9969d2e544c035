package spf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var bg = context.Background()

// TestMacroExpansion checks the examples of RFC 7208 §7.4 and the
// letters they leave out.
func TestMacroExpansion(t *testing.T) {
	r := newFakeDNS(t,
		"3.2.0.192.in-addr.arpa. PTR mx.example.org.",
		"mx.example.org. A 192.0.2.3",
		"1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR nomatch.example.org.",
	)
	c := &Checker{Resolver: r, Hostname: "mx.receiver.example", Now: func() time.Time { return time.Unix(1700000000, 0) }}
	v4 := netip.MustParseAddr("192.0.2.3")
	v6 := netip.MustParseAddr("2001:db8::cb01")
	const sender = "strong-bad@email.example.com"
	for _, tt := range []struct {
		ip   netip.Addr
		in   string
		exp  bool // explain-string: c, r, t and SP allowed
		want string
	}{
		{v4, "%{s}", false, "strong-bad@email.example.com"},
		{v4, "%{o}", false, "email.example.com"},
		{v4, "%{d}", false, "email.example.com"},
		{v4, "%{d4}", false, "email.example.com"},
		{v4, "%{d3}", false, "email.example.com"},
		{v4, "%{d2}", false, "example.com"},
		{v4, "%{d1}", false, "com"},
		{v4, "%{dr}", false, "com.example.email"},
		{v4, "%{d2r}", false, "example.email"},
		{v4, "%{l}", false, "strong-bad"},
		{v4, "%{l-}", false, "strong.bad"},
		{v4, "%{lr}", false, "strong-bad"},
		{v4, "%{lr-}", false, "bad.strong"},
		{v4, "%{l1r-}", false, "strong"},
		{v4, "%{ir}.%{v}._spf.%{d2}", false, "3.2.0.192.in-addr._spf.example.com"},
		{v4, "%{lr-}.lp._spf.%{d2}", false, "bad.strong.lp._spf.example.com"},
		{v4, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", false, "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
		{v4, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", false, "3.2.0.192.in-addr.strong.lp._spf.example.com"},
		{v4, "%{d2}.trusted-domains.example.net", false, "example.com.trusted-domains.example.net"},
		{v6, "%{ir}.%{v}._spf.%{d2}", false, "1.0.B.C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.ip6._spf.example.com"},
		// beyond §7.4
		{v4, "%{p}", false, "mx.example.org"},
		{v6, "%{p}", false, "unknown"}, // its PTR does not validate
		{v4, "%{h}", false, "helo.example.net"},
		{v4, "%{c} %{r} %{t}", true, "192.0.2.3 mx.receiver.example 1700000000"},
		{v6, "%{c}", true, "2001:db8::cb01"},
		{v4, "%%%_%-", false, "% %20"},
		{v4, "%{L}", false, "strong-bad"},
		{v4, "%{S}", false, "strong-bad%40email.example.com"},
		{v4, "%{d1000}", false, "email.example.com"},
		{v4, "%{d2r+-}", false, "email.example.com"}, // no dot among the delimiters
		{v4, "%{d2r.-}", false, "example.email"},
		{v4, "%{o=}", false, "email.example.com"},
	} {
		ms, err := parseMacroString(tt.in, tt.exp)
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		e := newEval(c, tt.ip, sender, "helo.example.net")
		if got := e.expand(bg, ms, "email.example.com"); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.in, got, tt.want)
		}
		if got := ms.String(); got != tt.in {
			t.Errorf("%s prints back as %q", tt.in, got)
		}
	}
}

func TestMacroSyntax(t *testing.T) {
	for _, s := range []string{
		"%", "foo%", "%x", "%(ir)", "%{", "%{}", "%{d", "%{a}", "%{d0}", "%{dr2}",
		"%{d2x}", "%{c}", "%{r}", "%{t}", "a b", "\x00", "caf\xc3\xa9", "%{d}\t",
	} {
		if _, err := parseMacroString(s, false); !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: err %v, want a syntax error", s, err)
		}
	}
	for _, s := range []string{"%{c}", "%{R}", "%{t}", "a b  c", "This is %{i}."} {
		if _, err := parseMacroString(s, true); err != nil {
			t.Errorf("%q in explanation: %v", s, err)
		}
	}
}

func TestDomainSpec(t *testing.T) {
	for s, ok := range map[string]bool{
		"example.com":      true,
		"example.com.":     true,
		"%{d}":             true,
		"_spf.%{d2}":       true,
		"%{d}.":            false,
		"foo.xn--zckzah":   true,
		"foo.1-2":          true,
		"foo.123":          false,
		"foo.-com":         false,
		"foo.com-":         false,
		"museum":           false,
		"museum.":          false,
		"":                 false,
		"foo:bar/baz.com":  true,
		"example.com:8080": false,
		"a..b.com":         true, // syntax allows it; the lookup finds nothing
		"%%":               true, // a macro-expand ends it
		"foo.com..":        false,
		".com":             true,
	} {
		_, err := parseDomainSpec(s)
		if (err == nil) != ok {
			t.Errorf("%q: err %v, want ok %v", s, err, ok)
		}
	}
}

func TestParseRecord(t *testing.T) {
	valid := map[string]string{ // record: canonical form
		"v=spf1":                        "v=spf1",
		"V=SPF1 -ALL":                   "v=spf1 -all",
		"v=spf1  +a   mx ":              "v=spf1 a mx",
		"v=spf1 a/24//64 mx:%{d}/0 ptr": "v=spf1 a/24//64 mx:%{d}/0 ptr",
		"v=spf1 a:example.com/32//128":  "v=spf1 a:example.com",
		"v=spf1 ip4:192.0.2.0/24 ip6:2001:DB8::/32 ~all":               "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all",
		"v=spf1 ip6:::FFFF:1.2.3.4":                                    "v=spf1 ip6:::ffff:1.2.3.4",
		"v=spf1 include:_spf.example.com ?exists:%{ir}.bl.example.com": "v=spf1 include:_spf.example.com ?exists:%{ir}.bl.example.com",
		"v=spf1 Redirect=_spf.example.com EXP=x.example.com":           "v=spf1 redirect=_spf.example.com exp=x.example.com",
		"v=spf1 moo.cow-far_out=man:dog/cat default=+ x=":              "v=spf1 moo.cow-far_out=man:dog/cat default=+ x=",
		"v=spf1 a:foo:bar/baz.example.com":                             "v=spf1 a:foo:bar/baz.example.com",
	}
	for in, want := range valid {
		r, err := parseRecord(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if got := r.String(); got != want {
			t.Errorf("%q prints as %q, want %q", in, got, want)
		}
	}
	for _, in := range []string{
		"v=spf10", "v=spf1\t-all", "spf1 -all",
		"v=spf1 -all.", "v=spf1 -all:foo", "v=spf1 -all/8", "v=spf1 moo",
		"v=spf1 moo.cow/far_out=man", "v=spf1 1up=foo", "v=spf1 =all", "v=spf1 redirect:x.example.com",
		"v=spf1 include", "v=spf1 include:", "v=spf1 include:x.example.com/24", "v=spf1 exists",
		"v=spf1 exists:x.example.com/24", "v=spf1 ptr/0", "v=spf1 ptr:",
		"v=spf1 a/33", "v=spf1 a//129", "v=spf1 a/24/64", "v=spf1 a/032", "v=spf1 a:", "v=spf1 a:museum",
		"v=spf1 mx:abc.123", "v=spf1 ip4", "v=spf1 ip4:1.2.3", "v=spf1 ip4:1.2.3.4/33", "v=spf1 ip4:1.2.3.4/032",
		"v=spf1 ip4:1.2.3.4//32", "v=spf1 ip4:1.2.3.4:8080", "v=spf1 ip4:::1", "v=spf1 ip6:1.2.3.4",
		"v=spf1 ip6::CAFE::BABE", "v=spf1 ip6:::1/129", "v=spf1 ip6:fe80::1%eth0",
		"v=spf1 exp=", "v=spf1 exp=-all", "v=spf1 redirect=", "v=spf1 exp=a.example.com exp=b.example.com",
		"v=spf1 redirect=a.example.com redirect=a.example.com", "v=spf1 foo=%abc", "v=spf1 exp=%{r}.example.com",
		"v=spf1 a:ctrl.example.com\rptr", "v=spf1 ip4:192.0.2.5\n", "v=spf1 a:\xef\xbb\xbfx.example.net",
	} {
		if r, err := parseRecord(in); err == nil {
			t.Errorf("%q parsed as %q", in, r)
		}
	}
}

// check runs CheckHost for sender's domain from 192.0.2.1.
func check(t *testing.T, r Resolver, sender string) (Result, string, error) {
	t.Helper()
	c := &Checker{Resolver: r, DefaultExplanation: "DEFAULT"}
	return c.CheckHost(bg, netip.MustParseAddr("192.0.2.1"), sender[strings.LastIndexByte(sender, '@')+1:], sender, "helo.example.net")
}

func TestVoidLookups(t *testing.T) {
	for _, tt := range []struct {
		record string
		want   Result
	}{
		{"v=spf1 a:nx1.example a:nx2.example ?all", Neutral},
		{"v=spf1 a:nx1.example a:nx2.example a:nx3.example ?all", PermError},
		{"v=spf1 a:nodata.example mx:nodata.example exists:nx.example ?all", PermError},
		{"v=spf1 ptr:x.example a:nx1.example exists:nx.example ?all", PermError}, // 192.0.2.1 has no PTR
		{"v=spf1 a:nx1.example a:nx2.example a:ok.example ?all", Pass},
		{"v=spf1 a:a..b.example a:nx1.example a:nx2.example ?all", PermError}, // a name DNS cannot carry is void
		// the lookups of the exp= of a fail count against nothing
		{"v=spf1 a:nx1.example a:nx2.example -all exp=nx3.example", Fail},
		// the address lookups of MX hosts are not terms: they do not count
		{"v=spf1 mx:mx.example a:nx1.example a:nx2.example ?all", Neutral},
	} {
		r := newFakeDNS(t,
			`example.com. TXT "`+tt.record+`"`,
			"nodata.example. AAAA ::1",
			"ok.example. A 192.0.2.1",
			"mx.example. MX 10 nx-a.example.",
			"mx.example. MX 20 nx-b.example.",
			"mx.example. MX 30 nx-c.example.",
		)
		res, expl, err := check(t, r, "user@example.com")
		if res != tt.want {
			t.Errorf("%s: %s (%v), want %s", tt.record, res, err, tt.want)
		}
		if res == PermError && !errors.Is(err, ErrTooManyVoidLookups) {
			t.Errorf("%s: error %v, want ErrTooManyVoidLookups", tt.record, err)
		}
		if res == Fail && expl != "DEFAULT" {
			t.Errorf("%s: explanation %q", tt.record, expl)
		}
	}
}

func TestLookupLimit(t *testing.T) {
	chain := func(n int) []string { // l0 includes l1 ... includes l<n>, which passes
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf(`l%d.example. TXT "v=spf1 include:l%d.example -all"`, i, i+1))
		}
		return append(out, fmt.Sprintf(`l%d.example. TXT "v=spf1 +all"`, n))
	}
	for _, tt := range []struct {
		name    string
		zone    []string
		want    Result
		maxQ    int // at most this many queries
		wantErr error
	}{
		{"self-redirect", []string{`l0.example. TXT "v=spf1 ip4:198.51.100.1 redirect=l0.example"`}, PermError, 11, ErrTooManyLookups},
		{"redirect-loop", []string{
			`l0.example. TXT "v=spf1 redirect=l1.example"`,
			`l1.example. TXT "v=spf1 redirect=l0.example"`}, PermError, 11, ErrTooManyLookups},
		{"self-include", []string{`l0.example. TXT "v=spf1 include:l0.example -all"`}, PermError, 11, ErrTooManyLookups},
		{"include-loop", []string{
			`l0.example. TXT "v=spf1 include:l1.example -all"`,
			`l1.example. TXT "v=spf1 include:l0.example -all"`}, PermError, 11, ErrTooManyLookups},
		{"10 nested includes", chain(10), Pass, 11, nil},
		{"11 nested includes", chain(11), PermError, 11, ErrTooManyLookups},
		{"10 terms with a redirect", []string{
			`l0.example. TXT "v=spf1 a a a a a a a a a redirect=l1.example"`,
			`l1.example. TXT "v=spf1 ip4:192.0.2.1"`,
			`l0.example. A 198.51.100.1`}, Pass, 20, nil},
		{"11 terms with a redirect", []string{
			`l0.example. TXT "v=spf1 a a a a a a a a a redirect=l1.example"`,
			`l1.example. TXT "v=spf1 a ip4:192.0.2.1"`,
			`l0.example. A 198.51.100.1`,
			`l1.example. A 198.51.100.1`}, PermError, 20, ErrTooManyLookups},
		{"ip4 and all do not count", []string{
			`l0.example. TXT "v=spf1 ` + strings.Repeat("ip4:198.51.100.1 ", 20) + `a a a a a a a a a a ip4:192.0.2.1 -all"`,
			`l0.example. A 198.51.100.1`}, Pass, 20, nil},
		{"counted when evaluated, not when parsed", []string{
			`l0.example. TXT "v=spf1 ip4:192.0.2.1 ` + strings.Repeat("a ", 15) + `-all"`}, Pass, 1, nil},
		{"11 MX", append([]string{`l0.example. TXT "v=spf1 mx -all"`},
			strings.Split(strings.TrimSuffix(strings.Repeat("l0.example. MX 10 mx.example.\n", 11), "\n"), "\n")...),
			PermError, 2, ErrTooManyMX},
	} {
		r := newFakeDNS(t, tt.zone...)
		res, _, err := check(t, r, "user@l0.example")
		if res != tt.want || !errors.Is(err, tt.wantErr) && tt.wantErr != nil {
			t.Errorf("%s: %s (%v), want %s (%v)", tt.name, res, err, tt.want, tt.wantErr)
		}
		if n := r.count(); n > tt.maxQ {
			t.Errorf("%s: %d queries, want at most %d", tt.name, n, tt.maxQ)
		}
	}
}

func TestPTRLimit(t *testing.T) {
	// the 11th PTR name would match: it is ignored (§4.6.4)
	zone := []string{`example.com. TXT "v=spf1 ptr:good.example ?all"`}
	for i := range 10 {
		zone = append(zone, fmt.Sprintf("1.2.0.192.in-addr.arpa. PTR h%d.bad.example.", i))
	}
	zone = append(zone, "1.2.0.192.in-addr.arpa. PTR h.good.example.", "h.good.example. A 192.0.2.1")
	r := newFakeDNS(t, zone...)
	if res, _, err := check(t, r, "a@example.com"); res != Neutral {
		t.Errorf("got %s (%v), want neutral", res, err)
	}
	// with ten, the tenth counts
	r = newFakeDNS(t, append(zone[:1], zone[2:]...)...)
	if res, _, err := check(t, r, "a@example.com"); res != Pass {
		t.Errorf("got %s (%v), want pass", res, err)
	}
}

func TestResults(t *testing.T) {
	r := newFakeDNS(t,
		`pass.example. TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`fail.example. TXT "v=spf1 -all exp=why.example"`,
		`why.example. TXT "%{i} is not one of %{d}'s senders"`,
		`soft.example. TXT "v=spf1 ~all"`,
		`neutral.example. TXT "v=spf1 ?all"`,
		`none.example. TXT "some other text"`,
		`two.example. TXT "v=spf1 -all"`,
		`two.example. TXT "v=spf1 +all"`,
		`temp.example. TXT "v=spf1 a:broken.example -all"`,
		`inc.example. TXT "v=spf1 include:broken.example -all"`,
		`incnone.example. TXT "v=spf1 include:none.example -all"`,
		`redir.example. TXT "v=spf1 redirect=fail.example"`,
		`split.example. TXT "v=spf1 " "ip4:192.0.2.1" " -all"`,
	)
	r.fail["broken.example"] = true
	for _, tt := range []struct {
		domain string
		want   Result
		expl   string
	}{
		{"pass.example", Pass, ""},
		{"fail.example", Fail, "192.0.2.1 is not one of fail.example's senders"},
		{"redir.example", Fail, "192.0.2.1 is not one of fail.example's senders"},
		{"soft.example", SoftFail, ""},
		{"neutral.example", Neutral, ""},
		{"none.example", None, ""},
		{"nxdomain.example", None, ""},
		{"single-label", None, ""},
		{"[192.0.2.1]", None, ""},
		{"192.0.2.1", None, ""},
		{"two.example", PermError, ""},
		{"temp.example", TempError, ""},
		{"broken.example", TempError, ""},
		{"inc.example", TempError, ""},
		{"incnone.example", PermError, ""},
		{"split.example", Pass, ""},
	} {
		res, expl, err := check(t, r, "user@"+tt.domain)
		if res != tt.want || expl != tt.expl {
			t.Errorf("%s: %s %q (%v), want %s %q", tt.domain, res, expl, err, tt.want, tt.expl)
		}
		if (err != nil) != (res == TempError || res == PermError) {
			t.Errorf("%s: result %s with error %v", tt.domain, res, err)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "spf: ") {
			t.Errorf("%s: error %q", tt.domain, err)
		}
	}
	if _, _, err := check(t, r, "user@two.example"); !errors.Is(err, ErrMultipleRecords) {
		t.Errorf("two records: %v", err)
	}
}

func TestTimeout(t *testing.T) {
	r := newFakeDNS(t)
	r.block = true
	c := &Checker{Resolver: r, Timeout: 20 * time.Millisecond}
	start := time.Now()
	res, _, err := c.CheckHost(bg, netip.MustParseAddr("192.0.2.1"), "example.com", "a@example.com", "h.example")
	if res != TempError || err == nil {
		t.Errorf("got %s (%v), want temperror", res, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestCheckMailAndHelo(t *testing.T) {
	r := newFakeDNS(t,
		`example.com. TXT "v=spf1 -all exp=why.example.com"`,
		`why.example.com. TXT "%{l} at %{o} via %{h}"`,
		`helo.example.net. TXT "v=spf1 ip4:192.0.2.1 -all"`,
	)
	c := &Checker{Resolver: r}
	ip := netip.MustParseAddr("::ffff:192.0.2.1") // IPv4-mapped counts as IPv4 (§5)
	o := c.CheckMail(bg, ip, "@example.com", "helo.example.net")
	want := Outcome{Result: Fail, Identity: IdentityMailFrom, Sender: "@example.com", Domain: "example.com",
		Explanation: "postmaster at example.com via helo.example.net"}
	if o != want {
		t.Errorf("CheckMail(@example.com) = %+v, want %+v", o, want)
	}
	o = c.CheckMail(bg, ip, "", "helo.example.net")
	want = Outcome{Result: Pass, Identity: IdentityHelo, Sender: "postmaster@helo.example.net", Domain: "helo.example.net"}
	if o != want {
		t.Errorf("CheckMail(<>) = %+v, want %+v", o, want)
	}
	if o := c.CheckHelo(bg, ip, "[192.0.2.1]"); o.Result != None {
		t.Errorf("CheckHelo(literal) = %+v", o)
	}
	if o := c.CheckMail(bg, ip, "no-at-sign", "helo.example.net"); o.Result != None {
		t.Errorf("CheckMail(no-at-sign) = %+v", o)
	}
	if o := (&Checker{}).CheckMail(bg, ip, "a@example.com", "h"); o.Result != TempError || o.Err == nil {
		t.Errorf("no resolver: %+v", o)
	}
}

func TestExplanationSafe(t *testing.T) {
	r := newFakeDNS(t,
		`example.com. TXT "v=spf1 -all exp=why.example.com"`,
		`why.example.com. TXT "sender %{l} refused"`,
	)
	c := &Checker{Resolver: r}
	o := c.CheckMail(bg, netip.MustParseAddr("192.0.2.1"), "a\r\n250 ok\x00@example.com", "h.example")
	if o.Explanation != "sender a??250 ok? refused" {
		t.Errorf("explanation %q", o.Explanation)
	}
}

func TestReceivedSPF(t *testing.T) {
	got := ReceivedSPF(Pass, HeaderFields{
		Receiver:     "mybox.example.org",
		ClientIP:     netip.MustParseAddr("192.0.2.1"),
		EnvelopeFrom: "myname@example.com",
		Helo:         "foo.example.com",
		Identity:     IdentityMailFrom,
	})
	// as in RFC 7208 §9.1, folded
	want := "Received-SPF: pass (mybox.example.org: domain of myname@example.com designates\r\n" +
		"\t192.0.2.1 as permitted sender) receiver=mybox.example.org;\r\n" +
		"\tclient-ip=192.0.2.1; envelope-from=\"myname@example.com\";\r\n" +
		"\thelo=foo.example.com; identity=mailfrom\r\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}

	got = ReceivedSPF(PermError, HeaderFields{
		Receiver: "mx.example.org",
		ClientIP: netip.MustParseAddr("2001:db8::1"),
		Helo:     "evil\r\nX-Injected: yes (a) \\ \"q\"",
		Identity: IdentityHelo,
		Problem:  `spf: evil: syntax error: "moo"`,
	})
	for i, line := range strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n") {
		if i > 0 && !strings.HasPrefix(line, "\t") {
			t.Errorf("line %d does not continue the field: %q", i, line)
		}
		if strings.ContainsAny(line, "\r\n\x00") {
			t.Errorf("line %d holds a control character: %q", i, line)
		}
	}
	for _, want := range []string{
		"Received-SPF: permerror (mx.example.org: permanent error in processing domain of",
		`postmaster@evil??X-Injected: yes \(a\) \\ "q")`,
		`client-ip="2001:db8::1"`,
		`envelope-from="<>"`,
		`helo="evil??X-Injected: yes (a) \\ \"q\""`,
		`identity=helo;`,
		`problem="spf: evil: syntax error: \"moo\""`,
	} {
		if !strings.Contains(strings.ReplaceAll(got, "\r\n\t", " "), want) {
			t.Errorf("missing %s in\n%s", want, got)
		}
	}
	if got := ReceivedSPF("bogus", HeaderFields{}); !strings.HasPrefix(got, "Received-SPF: permerror (unknown: permanent error") {
		t.Errorf("unknown result: %q", got)
	}
}

// FuzzParseRecord checks that the parser never panics, and that a
// record that parses prints back as text that parses to the same.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=spf1 -all", "v=spf1 a/24//64 mx:%{d}/0 ptr", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all",
		"v=spf1 include:_spf.%{d2} exists:%{ir}.%{l1r-}.lp.%{d} redirect=x.example exp=e.%{d}",
		"v=spf1 moo.cow-far_out=man:dog/cat a:foo:bar/baz.example.com", "v=spf1 a:%{H}.bar -all",
		"v=spf1 a:macro%%percent%_%_space%-url-space.example.com -all", "v=spf1 ip6:::FFFF:1.2.3.4",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRecord(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrMultipleRecords) {
				t.Fatalf("%q: error %v is no syntax error", s, err)
			}
			return
		}
		text := r.String()
		r2, err := parseRecord(text)
		if err != nil {
			t.Fatalf("%q prints as %q, which does not parse: %v", s, text, err)
		}
		if text2 := r2.String(); text2 != text {
			t.Fatalf("%q prints as %q, then as %q", s, text, text2)
		}
	})
}

// FuzzCheckHost evaluates arbitrary records: never a panic, always
// one of the results, an error exactly with the error results.
func FuzzCheckHost(f *testing.F) {
	f.Add("v=spf1 include:b.example a:%{p}.example mx ptr exists:%{ir}.x.example -all exp=b.example", "u@a.example")
	f.Add("v=spf1 redirect=%{d}", "@a.example")
	f.Fuzz(func(t *testing.T, record, sender string) {
		r := newFakeDNS(t,
			"a.example. MX 10 b.example.",
			"b.example. A 192.0.2.1",
			"1.2.0.192.in-addr.arpa. PTR b.example.",
		)
		r.records["a.example"] = append(r.records["a.example"], txtRR("a.example.", record))
		r.records["b.example"] = append(r.records["b.example"], txtRR("b.example.", record))
		c := &Checker{Resolver: r}
		res, _, err := c.CheckHost(bg, netip.MustParseAddr("192.0.2.1"), "a.example", sender, "h.example")
		switch res {
		case None, Neutral, Pass, Fail, SoftFail:
			if err != nil {
				t.Fatalf("%s with error %v", res, err)
			}
		case TempError, PermError:
			if err == nil {
				t.Fatalf("%s without an error", res)
			}
		default:
			t.Fatalf("result %q", res)
		}
		if n := r.count(); n > 200 {
			t.Fatalf("%d queries", n)
		}
	})
}

func BenchmarkParseRecord(b *testing.B) {
	const rec = "v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.0/24 ip6:2001:db8::/32 a mx:mx.%{d} include:_spf.example.com exists:%{ir}.%{l1r-}.lp._spf.%{d2} ~all exp=explain.%{d}"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseRecord(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckHost(b *testing.B) {
	r := newFakeDNS(b,
		`example.com. TXT "v=spf1 ip4:198.51.100.0/24 mx include:_spf.example.net -all"`,
		"example.com. MX 10 mx.example.com.",
		"mx.example.com. A 198.51.100.10",
		`_spf.example.net. TXT "v=spf1 ip6:2001:db8::/32 exists:%{ir}.allow.example.net a:out.example.net ~all"`,
		"1.2.0.192.allow.example.net. A 127.0.0.2",
	)
	c := &Checker{Resolver: r}
	ip := netip.MustParseAddr("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		if res, _, err := c.CheckHost(bg, ip, "example.com", "user@example.com", "h.example"); res != Pass {
			b.Fatal(res, err)
		}
	}
}
