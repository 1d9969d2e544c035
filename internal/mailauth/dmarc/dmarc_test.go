package dmarc

import (
	"context"
	"errors"
	"strings"
	"testing"

	msgdmarc "github.com/emersion/go-msgauth/dmarc"

	"smtpd/internal/dns"
	"smtpd/internal/dns/dnstest"
)

// zone is the DNS of the table test. Names not listed are NXDOMAIN.
var zone = []string{
	// relaxed (the default) for both; sp for subdomains
	`_dmarc.example.com. 300 IN TXT "v=DMARC1; p=reject; sp=quarantine; rua=mailto:agg@example.com"`,
	// a subdomain with its own record: its p applies, its sp is ignored
	`_dmarc.sub.example.com. 300 IN TXT "v=DMARC1; p=none; sp=reject"`,
	// several records at the author domain: no policy, and no fallback
	// to example.com
	`_dmarc.dup.example.com. 300 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.dup.example.com. 300 IN TXT "v=DMARC1; p=none"`,
	`_dmarc.strict.com. 300 IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"`,
	`_dmarc.mixed.com. 300 IN TXT "v=DMARC1; p=quarantine; aspf=s; adkim=r"`,
	`_dmarc.example.co.uk. 300 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.nosp.com. 300 IN TXT "v=DMARC1; p=quarantine"`,
	`_dmarc.none.com. 300 IN TXT "v=DMARC1; p=none"`,
	`_dmarc.pct0.com. 300 IN TXT "v=DMARC1; p=reject; pct=0"`,
	`_dmarc.pct50.com. 300 IN TXT "v=DMARC1; p=reject; pct=50"`,
	`_dmarc.pct50q.com. 300 IN TXT "v=DMARC1; p=quarantine; pct=50"`,
	`_dmarc.pct100.com. 300 IN TXT "v=DMARC1; p=quarantine; pct=100"`,
	// NODATA: the name exists without TXT
	`_dmarc.nodata.com. 300 IN A 192.0.2.1`,
	// only TXT records that are not DMARC1
	`_dmarc.spfonly.com. 300 IN TXT "v=spf1 -all"`,
	`_dmarc.spfonly.com. 300 IN TXT "v=DMARC10; p=reject"`,
	// one DMARC record among others
	`_dmarc.others.com. 300 IN TXT "hello world"`,
	`_dmarc.others.com. 300 IN TXT "v=DMARC1p=none"`,
	`_dmarc.others.com. 300 IN TXT "V = DMARC1 ; p=reject"`,
	`_dmarc.multi.com. 300 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.multi.com. 300 IN TXT "v=DMARC1; p=reject; pct=100"`,
	// a record split in two strings, joined (RFC 7489 §6.1)
	`_dmarc.split.com. 300 IN TXT "v=DMARC1; p=rej" "ect"`,
	// malformed
	`_dmarc.badp.com. 300 IN TXT "v=DMARC1; p=bogus"`,
	`_dmarc.nop.com. 300 IN TXT "v=DMARC1; adkim=s"`,
	`_dmarc.badsp.com. 300 IN TXT "v=DMARC1; p=reject; sp=maybe"`,
	`_dmarc.badprua.com. 300 IN TXT "v=DMARC1; p=bogus; rua=mailto:agg@badprua.com"`,
	`_dmarc.badopt.com. 300 IN TXT "v=DMARC1; p=reject; pct=lots; adkim=x; junk; aspf=s"`,
	// internationalized: bücher.example
	`_dmarc.xn--bcher-kva.example. 300 IN TXT "v=DMARC1; p=reject; adkim=s"`,
}

func TestCheck(t *testing.T) {
	srv, err := dnstest.Start(zone...)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.ServFail("_dmarc.tempfail.com")
	srv.ServFail("_dmarc.example.net")    // an organizational domain
	srv.ServFail("_dmarc.sf.example.com") // a subdomain of a domain with a policy
	res, err := dns.New([]string{srv.Addr})
	if err != nil {
		t.Fatal(err)
	}

	pass := func(d string) AuthResult { return AuthResult{Result: "pass", Domain: d} }
	fail := func(d string) AuthResult { return AuthResult{Result: "fail", Domain: d} }
	dkim := func(rs ...AuthResult) []AuthResult { return rs }

	type want struct {
		status       Status
		disp         Disposition
		policy       msgdmarc.Policy
		policyDomain string
		org          string
		spf, dkim    bool // aligned passes
		sampledOut   bool
		fallback     bool
		draws        int   // calls of Rand
		errIs        error // for permerror
	}
	tests := []struct {
		name string
		in   Input
		rnd  float64
		want want
	}{
		// alignment, relaxed (default)
		{"relaxed SPF exact", Input{FromDomain: "example.com", SPF: pass("example.com")}, 0,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "example.com", org: "example.com", spf: true}},
		{"relaxed SPF subdomain of org", Input{FromDomain: "example.com", SPF: pass("bounce.mail.example.com")}, 0,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "example.com", org: "example.com", spf: true}},
		{"relaxed DKIM org vs subdomain author", Input{FromDomain: "a.example.com", DKIM: dkim(pass("example.com"))}, 0,
			want{status: Pass, disp: "none", policy: "quarantine", policyDomain: "example.com", org: "example.com", dkim: true}},
		{"relaxed sibling subdomains", Input{FromDomain: "a.example.com", SPF: pass("b.example.com")}, 0,
			want{status: Pass, disp: "none", policy: "quarantine", policyDomain: "example.com", org: "example.com", spf: true}},
		{"relaxed other domain fails", Input{FromDomain: "example.com", SPF: pass("example.net"), DKIM: dkim(pass("example.org"))}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "example.com", org: "example.com"}},
		{"relaxed suffix of label is not a subdomain", Input{FromDomain: "example.com", DKIM: dkim(pass("badexample.com"))}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "example.com", org: "example.com"}},
		// strict
		{"strict SPF exact", Input{FromDomain: "strict.com", SPF: pass("strict.com")}, 0,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "strict.com", org: "strict.com", spf: true}},
		{"strict SPF subdomain fails", Input{FromDomain: "strict.com", SPF: pass("mail.strict.com")}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "strict.com", org: "strict.com"}},
		{"strict DKIM exact", Input{FromDomain: "strict.com", DKIM: dkim(pass("STRICT.com."))}, 0,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "strict.com", org: "strict.com", dkim: true}},
		{"strict DKIM subdomain fails", Input{FromDomain: "strict.com", DKIM: dkim(pass("sub.strict.com"))}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "strict.com", org: "strict.com"}},
		{"strict SPF, relaxed DKIM passes", Input{FromDomain: "mixed.com", SPF: pass("bounce.mixed.com"), DKIM: dkim(pass("mail.mixed.com"))}, 0,
			want{status: Pass, disp: "none", policy: "quarantine", policyDomain: "mixed.com", org: "mixed.com", dkim: true}},
		{"strict SPF unaligned, relaxed DKIM failed", Input{FromDomain: "mixed.com", SPF: pass("bounce.mixed.com"), DKIM: dkim(fail("mixed.com"))}, 0,
			want{status: Fail, disp: "quarantine", policy: "quarantine", policyDomain: "mixed.com", org: "mixed.com"}},
		// public suffixes
		{"co.uk sibling subdomains aligned", Input{FromDomain: "a.example.co.uk", DKIM: dkim(pass("b.example.co.uk"))}, 0,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "example.co.uk", org: "example.co.uk", dkim: true}},
		{"co.uk other registrant not aligned", Input{FromDomain: "example.co.uk", SPF: pass("other.co.uk")}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "example.co.uk", org: "example.co.uk"}},
		{"co.uk public suffix itself not aligned", Input{FromDomain: "example.co.uk", DKIM: dkim(pass("co.uk"))}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "example.co.uk", org: "example.co.uk"}},
		// combinations of SPF and DKIM
		{"DKIM pass unaligned, SPF pass aligned", Input{FromDomain: "example.com", SPF: pass("example.com"), DKIM: dkim(pass("esp.example"))}, 0,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "example.com", org: "example.com", spf: true}},
		{"SPF pass unaligned, second DKIM aligned", Input{FromDomain: "example.com", SPF: pass("esp.example"), DKIM: dkim(pass("esp.example"), pass("example.com"))}, 0,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "example.com", org: "example.com", dkim: true}},
		{"SPF softfail aligned, DKIM fail aligned", Input{FromDomain: "example.com", SPF: AuthResult{"softfail", "example.com"}, DKIM: dkim(fail("example.com"))}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "example.com", org: "example.com"}},
		{"SPF PASS in capitals", Input{FromDomain: "example.com", SPF: AuthResult{"PASS", "example.com"}}, 0,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "example.com", org: "example.com", spf: true}},
		{"nothing authenticated", Input{FromDomain: "example.com"}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "example.com", org: "example.com"}},
		// where the policy is found; sp
		{"subdomain gets sp of org record", Input{FromDomain: "x.y.example.com", SPF: pass("esp.example")}, 0,
			want{status: Fail, disp: "quarantine", policy: "quarantine", policyDomain: "example.com", org: "example.com"}},
		{"subdomain with own record: its p, not sp", Input{FromDomain: "sub.example.com"}, 0,
			want{status: Fail, disp: "none", policy: "none", policyDomain: "sub.example.com", org: "example.com"}},
		{"below subdomain with own record: org sp", Input{FromDomain: "x.sub.example.com"}, 0,
			want{status: Fail, disp: "quarantine", policy: "quarantine", policyDomain: "example.com", org: "example.com"}},
		{"subdomain without sp gets p", Input{FromDomain: "a.nosp.com"}, 0,
			want{status: Fail, disp: "quarantine", policy: "quarantine", policyDomain: "nosp.com", org: "nosp.com"}},
		{"author domain in capitals with final dot", Input{FromDomain: "Example.COM."}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "example.com", org: "example.com"}},
		{"IDN author domain as U-label", Input{FromDomain: "bücher.example", DKIM: dkim(pass("xn--bcher-kva.example"))}, 0,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "xn--bcher-kva.example", org: "xn--bcher-kva.example", dkim: true}},
		{"record in two strings", Input{FromDomain: "split.com"}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "split.com", org: "split.com"}},
		// p=none/quarantine/reject
		{"p=none fail", Input{FromDomain: "none.com", SPF: fail("none.com")}, 0,
			want{status: Fail, disp: "none", policy: "none", policyDomain: "none.com", org: "none.com"}},
		{"p=quarantine fail", Input{FromDomain: "nosp.com"}, 0,
			want{status: Fail, disp: "quarantine", policy: "quarantine", policyDomain: "nosp.com", org: "nosp.com"}},
		// pct
		{"pct=0 reject becomes quarantine", Input{FromDomain: "pct0.com"}, 0,
			want{status: Fail, disp: "quarantine", policy: "reject", policyDomain: "pct0.com", org: "pct0.com", sampledOut: true}},
		{"pct=50 sampled in", Input{FromDomain: "pct50.com"}, 0.49,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "pct50.com", org: "pct50.com", draws: 1}},
		{"pct=50 sampled out", Input{FromDomain: "pct50.com"}, 0.5,
			want{status: Fail, disp: "quarantine", policy: "reject", policyDomain: "pct50.com", org: "pct50.com", sampledOut: true, draws: 1}},
		{"pct=50 quarantine sampled out", Input{FromDomain: "pct50q.com"}, 0.99,
			want{status: Fail, disp: "none", policy: "quarantine", policyDomain: "pct50q.com", org: "pct50q.com", sampledOut: true, draws: 1}},
		{"pct=50 pass draws nothing", Input{FromDomain: "pct50.com", SPF: pass("pct50.com")}, 0.99,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "pct50.com", org: "pct50.com", spf: true}},
		{"pct=100 always applied", Input{FromDomain: "pct100.com"}, 0.999,
			want{status: Fail, disp: "quarantine", policy: "quarantine", policyDomain: "pct100.com", org: "pct100.com"}},
		// no policy
		{"no record, NXDOMAIN", Input{FromDomain: "norecord.com", SPF: fail("norecord.com")}, 0,
			want{status: None, disp: "none", org: "norecord.com"}},
		{"no record at subdomain nor org, NXDOMAIN", Input{FromDomain: "a.b.norecord.com"}, 0,
			want{status: None, disp: "none", org: "norecord.com"}},
		{"NODATA", Input{FromDomain: "nodata.com"}, 0,
			want{status: None, disp: "none", org: "nodata.com"}},
		{"only non-DMARC1 TXT", Input{FromDomain: "spfonly.com"}, 0,
			want{status: None, disp: "none", org: "spfonly.com"}},
		{"one DMARC1 among other TXT", Input{FromDomain: "others.com"}, 0,
			want{status: Fail, disp: "reject", policy: "reject", policyDomain: "others.com", org: "others.com"}},
		{"multiple records: none", Input{FromDomain: "multi.com"}, 0,
			want{status: None, disp: "none", policyDomain: "multi.com", org: "multi.com"}},
		{"multiple records at subdomain: no fallback to org", Input{FromDomain: "dup.example.com"}, 0,
			want{status: None, disp: "none", policyDomain: "dup.example.com", org: "example.com"}},
		// malformed records
		{"invalid p: permerror", Input{FromDomain: "badp.com", SPF: pass("badp.com")}, 0,
			want{status: PermError, disp: "none", policyDomain: "badp.com", org: "badp.com", errIs: ErrInvalidRecord}},
		{"missing p: permerror", Input{FromDomain: "nop.com"}, 0,
			want{status: PermError, disp: "none", policyDomain: "nop.com", org: "nop.com", errIs: ErrInvalidRecord}},
		{"invalid sp: permerror", Input{FromDomain: "a.badsp.com"}, 0,
			want{status: PermError, disp: "none", policyDomain: "badsp.com", org: "badsp.com", errIs: ErrInvalidRecord}},
		{"invalid p with rua: read as p=none", Input{FromDomain: "badprua.com"}, 0,
			want{status: Fail, disp: "none", policy: "none", policyDomain: "badprua.com", org: "badprua.com", fallback: true}},
		{"invalid optional tags dropped", Input{FromDomain: "badopt.com", SPF: pass("mail.badopt.com"), DKIM: dkim(pass("mail.badopt.com"))}, 0,
			want{status: Pass, disp: "none", policy: "reject", policyDomain: "badopt.com", org: "badopt.com", dkim: true}},
		{"invalid author domain", Input{FromDomain: "[192.0.2.1]"}, 0,
			want{status: PermError, disp: "none", errIs: ErrNoAuthorDomain}},
		{"empty author domain", Input{}, 0,
			want{status: PermError, disp: "none", errIs: ErrNoAuthorDomain}},
		// DNS errors
		{"SERVFAIL at author domain", Input{FromDomain: "tempfail.com", SPF: pass("tempfail.com")}, 0,
			want{status: TempError, disp: "none", org: "tempfail.com"}},
		{"SERVFAIL at org domain", Input{FromDomain: "a.example.net"}, 0,
			want{status: TempError, disp: "none", org: "example.net"}},
		{"SERVFAIL at subdomain: no fallback to org", Input{FromDomain: "sf.example.com"}, 0,
			want{status: TempError, disp: "none", org: "example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			draws := 0
			c := &Checker{Resolver: res, Rand: func() float64 { draws++; return tt.rnd }}
			got, err := c.Check(context.Background(), tt.in)
			if got == nil {
				t.Fatalf("Check returned nil result, err %v", err)
			}
			w := tt.want
			switch {
			case w.status == TempError:
				var de *dns.Error
				if !errors.As(err, &de) || dns.IsPermanent(err) {
					t.Errorf("err = %v, want a temporary *dns.Error", err)
				}
			case w.errIs != nil:
				if !errors.Is(err, w.errIs) {
					t.Errorf("err = %v, want %v", err, w.errIs)
				}
			case err != nil:
				t.Errorf("err = %v", err)
			}
			if got.Result != w.status || got.Disposition != w.disp || got.Policy != w.policy ||
				got.PolicyDomain != w.policyDomain || got.OrgDomain != w.org ||
				got.SPFAligned != w.spf || got.DKIMAligned != w.dkim ||
				got.SampledOut != w.sampledOut || got.Fallback != w.fallback {
				t.Errorf("got result=%s disposition=%s policy=%q policy domain=%q org=%q spf=%v dkim=%v sampled out=%v fallback=%v\n"+
					"want result=%s disposition=%s policy=%q policy domain=%q org=%q spf=%v dkim=%v sampled out=%v fallback=%v (comment %q)",
					got.Result, got.Disposition, got.Policy, got.PolicyDomain, got.OrgDomain, got.SPFAligned, got.DKIMAligned, got.SampledOut, got.Fallback,
					w.status, w.disp, w.policy, w.policyDomain, w.org, w.spf, w.dkim, w.sampledOut, w.fallback, got.Comment)
			}
			if draws != w.draws {
				t.Errorf("Rand called %d times, want %d", draws, w.draws)
			}
			if (got.Record != nil) != (w.policy != "") {
				t.Errorf("Record = %+v with policy %q", got.Record, w.policy)
			}
			if len(got.DKIM) != len(tt.in.DKIM) && got.Record != nil {
				t.Errorf("%d DKIM alignments for %d signatures", len(got.DKIM), len(tt.in.DKIM))
			}
		})
	}
	t.Logf("%d cases", len(tests))
}

// TestDiscoveryQueries checks which names policy discovery asks for
// (RFC 7489 §6.6.3): the author domain, then the organizational domain
// only if the first gave no DMARC record.
func TestDiscoveryQueries(t *testing.T) {
	srv, err := dnstest.Start(zone...)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res, err := dns.New([]string{srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	c := &Checker{Resolver: res}
	for _, tc := range []struct {
		from      string
		asked     []string
		notAsked  []string
		wantFound string
	}{
		{"sub.example.com", []string{"_dmarc.sub.example.com"}, []string{"_dmarc.example.com"}, "sub.example.com"},
		{"dup.example.com", []string{"_dmarc.dup.example.com"}, []string{"_dmarc.example.com"}, "dup.example.com"},
		{"a.b.nosp.com", []string{"_dmarc.a.b.nosp.com", "_dmarc.nosp.com"}, []string{"_dmarc.b.nosp.com"}, "nosp.com"},
		{"norecord.com", []string{"_dmarc.norecord.com"}, nil, ""},
	} {
		got, err := c.Check(context.Background(), Input{FromDomain: tc.from})
		if err != nil {
			t.Fatalf("%s: %v", tc.from, err)
		}
		if got.PolicyDomain != tc.wantFound {
			t.Errorf("%s: policy domain %q, want %q", tc.from, got.PolicyDomain, tc.wantFound)
		}
		for _, n := range tc.asked {
			if q := srv.Queries(n, "TXT"); q != 1 {
				t.Errorf("%s: %d TXT queries for %s, want 1", tc.from, q, n)
			}
		}
		for _, n := range tc.notAsked {
			if q := srv.Queries(n, "TXT"); q != 0 {
				t.Errorf("%s: %d TXT queries for %s, want none", tc.from, q, n)
			}
		}
	}
}

// TestResultDetails checks what aggregate reports will need.
func TestResultDetails(t *testing.T) {
	srv, err := dnstest.Start(zone...)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res, err := dns.New([]string{srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	c := &Checker{Resolver: res, Rand: func() float64 { return 0 }}
	got, err := c.Check(context.Background(), Input{
		FromDomain: "A.Example.COM",
		SPF:        AuthResult{"pass", "Bounce.Example.NET"},
		DKIM:       []AuthResult{{"fail", "example.com"}, {"pass", "esp.example"}, {"pass", "not a domain"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.FromDomain != "a.example.com" || got.OrgDomain != "example.com" || got.PolicyDomain != "example.com" {
		t.Errorf("domains %q %q %q", got.FromDomain, got.OrgDomain, got.PolicyDomain)
	}
	if got.SPF != (Alignment{Domain: "bounce.example.net", Result: "pass"}) {
		t.Errorf("SPF %+v", got.SPF)
	}
	wantDKIM := []Alignment{
		{Domain: "example.com", Result: "fail", Aligned: true},
		{Domain: "esp.example", Result: "pass"},
		{Domain: "not a domain", Result: "pass"},
	}
	if len(got.DKIM) != len(wantDKIM) {
		t.Fatalf("DKIM %+v", got.DKIM)
	}
	for i := range wantDKIM {
		if got.DKIM[i] != wantDKIM[i] {
			t.Errorf("DKIM[%d] = %+v, want %+v", i, got.DKIM[i], wantDKIM[i])
		}
	}
	r := got.Record
	if r == nil || r.Policy != "reject" || r.SubdomainPolicy != "quarantine" || r.DKIMAlignment != msgdmarc.AlignmentRelaxed ||
		len(r.ReportURIAggregate) != 1 || r.ReportURIAggregate[0] != "mailto:agg@example.com" {
		t.Errorf("record %+v", r)
	}
	if got.Result != Fail || got.Policy != "quarantine" || got.Disposition != DispositionQuarantine {
		t.Errorf("result %s policy %s disposition %s", got.Result, got.Policy, got.Disposition)
	}
}

// TestTemporaryContext: a cancelled context is a temporary failure.
func TestTemporaryContext(t *testing.T) {
	srv, err := dnstest.Start(zone...)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	res, err := dns.New([]string{srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, err := (&Checker{Resolver: res}).Check(ctx, Input{FromDomain: "example.com"})
	if err == nil || got.Result != TempError || dns.IsPermanent(err) {
		t.Errorf("got %s, %v; want temperror", got.Result, err)
	}
}

func TestVersionTag(t *testing.T) {
	for txt, want := range map[string]bool{
		"v=DMARC1; p=none":      true,
		"v=DMARC1":              true,
		"V = DMARC1 ;p=reject":  true,
		"v=DMARC1\t; p=none":    true,
		"v=dmarc1; p=none":      false, // %x44 %x4d...: DMARC1 is case-sensitive
		"v=DMARC10; p=none":     false,
		"v=DMARC1p=none":        false,
		" v=DMARC1; p=none":     false,
		"p=none; v=DMARC1":      false,
		"v=spf1 -all":           false,
		"":                      false,
		"vDMARC1":               false,
		"v=DMARC1 p=none; x=y ": false,
	} {
		if _, got := versionTag(txt); got != want {
			t.Errorf("versionTag(%q) = %v, want %v", txt, got, want)
		}
	}
}

func TestParseRecord(t *testing.T) {
	pct := func(r *msgdmarc.Record) int {
		if r.Percent == nil {
			return 100
		}
		return *r.Percent
	}
	tests := []struct {
		txt      string
		ok       bool
		fallback bool
		p, sp    msgdmarc.Policy
		pct      int
		aspf     msgdmarc.AlignmentMode
	}{
		{"v=DMARC1; p=reject", true, false, "reject", "", 100, "r"},
		{"v=DMARC1;p=quarantine;sp=none;pct=20;aspf=s", true, false, "quarantine", "none", 20, "s"},
		{"v=DMARC1; p=none; pct=101", true, false, "none", "", 100, "r"},
		{"v=DMARC1; p=none; aspf=x; pct=-1; ri=0; rf=pdf; fo=z", true, false, "none", "", 100, "r"},
		{"v=DMARC1; p=reject; ;; novalue; x-unknown=1;", true, false, "reject", "", 100, "r"},
		{"v=DMARC1; sp=reject; rua=mailto:a@example.com", true, true, "none", "", 100, "r"},
		{"v=DMARC1; p=Reject; rua=mailto:a@example.com!10m, https://r.example/x", true, true, "none", "", 100, "r"},
		{"v=DMARC1; p=reject; sp=bad; rua=mailto:a@example.com; aspf=s", true, true, "none", "", 100, "s"},
		{"v=DMARC1; p=bad; rua=not a uri", false, false, "", "", 0, ""},
		{"v=DMARC1; p=bad; rua=", false, false, "", "", 0, ""},
		{"v=DMARC1", false, false, "", "", 0, ""},
		{"v=spf1 -all", false, false, "", "", 0, ""},
	}
	for _, tt := range tests {
		rec, fb, err := parseRecord(tt.txt)
		if (err == nil) != tt.ok {
			t.Errorf("parseRecord(%q): err %v", tt.txt, err)
			continue
		}
		if err != nil {
			continue
		}
		if fb != tt.fallback || rec.Policy != tt.p || rec.SubdomainPolicy != tt.sp || pct(rec) != tt.pct || rec.SPFAlignment != tt.aspf {
			t.Errorf("parseRecord(%q) = p=%s sp=%s pct=%d aspf=%s fallback=%v", tt.txt, rec.Policy, rec.SubdomainPolicy, pct(rec), rec.SPFAlignment, fb)
		}
	}
}

func TestOrganizationalDomain(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":           "example.com",
		"a.b.example.com":       "example.com",
		"Mail.Example.COM.":     "example.com",
		"example.co.uk":         "example.co.uk",
		"x.y.example.co.uk":     "example.co.uk",
		"co.uk":                 "co.uk",
		"com":                   "com",
		"mail.example.test":     "example.test",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
	} {
		if got := OrganizationalDomain(in); got != want {
			t.Errorf("OrganizationalDomain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSPFIdentity(t *testing.T) {
	for _, tc := range [][3]string{
		{"user@example.com", "mx.example.net", "example.com"},
		{"", "mx.example.net", "mx.example.net"},
		{"\"a@b\"@example.org", "h", "example.org"},
	} {
		if got := SPFIdentity(tc[0], tc[1]); got != tc[2] {
			t.Errorf("SPFIdentity(%q, %q) = %q, want %q", tc[0], tc[1], got, tc[2])
		}
	}
}

// FuzzParseRecord checks that record parsing never panics and yields
// only policies RFC 7489 §6.3 defines.
func FuzzParseRecord(f *testing.F) {
	for _, s := range zone {
		if i := strings.IndexByte(s, '"'); i >= 0 {
			f.Add(strings.ReplaceAll(s[i+1:len(s)-1], `" "`, ""))
		}
	}
	f.Add("v=DMARC1; p=bad; rua=mailto:a@example.com!10m")
	f.Fuzz(func(t *testing.T, txt string) {
		rec, fallback, err := parseRecord(txt)
		if err != nil {
			return
		}
		switch rec.Policy {
		case msgdmarc.PolicyNone, msgdmarc.PolicyQuarantine, msgdmarc.PolicyReject:
		default:
			t.Fatalf("parseRecord(%q): policy %q", txt, rec.Policy)
		}
		if fallback && rec.Policy != msgdmarc.PolicyNone {
			t.Fatalf("parseRecord(%q): fallback with policy %q", txt, rec.Policy)
		}
		if rec.Percent != nil && (*rec.Percent < 0 || *rec.Percent > 100) {
			t.Fatalf("parseRecord(%q): pct %d", txt, *rec.Percent)
		}
	})
}
