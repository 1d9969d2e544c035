package mta

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	mdns "github.com/miekg/dns"

	"smtpd/internal/config"
	"smtpd/internal/dane"
	"smtpd/internal/logging"
	"smtpd/internal/mtasts"
	"smtpd/internal/privsep"
	"smtpd/internal/stats"
	"smtpd/internal/testcert"
	"smtpd/internal/tlsrpt"
	"smtpd/proto"
)

const (
	polDomain = "example.test"
	polMX     = "mx.example.test"
	polTLSA   = "_25._tcp.mx.example.test."
	stsTXT    = "_mta-sts.example.test."
)

// fakeDNS answers MTAResolveDNS in place of lookup from a table keyed by
// dnsKey, and keeps the questions; a name not in it does not exist.
type fakeDNS struct {
	mu      sync.Mutex
	answers map[string]proto.LookupDNSResult
	asked   []string
	reqs    *proto.Requests
}

func dnsKey(name string, qtype uint16) string {
	return strings.ToLower(mdns.Fqdn(name)) + " " + mdns.TypeToString[qtype]
}

// host answers MTAResolveMX for one host from its A records.
func (f *fakeDNS) host(name string) *proto.LookupMXResult {
	key := dnsKey(name, mdns.TypeA)
	f.mu.Lock()
	f.asked = append(f.asked, key)
	a, ok := f.answers[key]
	f.mu.Unlock()
	if !ok {
		return &proto.LookupMXResult{Outcome: proto.Outcome{Status: proto.StatusPermfail, Text: "no address"}}
	}
	mx := proto.MXHost{Host: name}
	for _, text := range a.Records {
		if rr, err := mdns.NewRR(text); err == nil {
			mx.Addrs = append(mx.Addrs, rr.(*mdns.A).A.String())
		}
	}
	return &proto.LookupMXResult{Outcome: proto.Outcome{Status: proto.StatusOK}, MXs: []proto.MXHost{mx}}
}

func (f *fakeDNS) questions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.asked)
}

// newPolicyMTA is an MTA whose lookup is a fakeDNS, counting TLS-RPT
// results in a store of its own.
func newPolicyMTA(t *testing.T, answers map[string]proto.LookupDNSResult, dests ...*config.Destination) (*MTA, *fakeDNS) {
	t.Helper()
	f := &fakeDNS{answers: answers}
	f.reqs = proto.NewRequests(func(_ *proto.Channel, msg proto.Message, id uint32) error {
		if q, ok := msg.(*proto.MTAResolveMX); ok && q.HostOnly {
			// the addresses of one host: its A records in the table
			go f.reqs.Deliver(&proto.Frame{Header: proto.Header{PeerID: id}, Msg: f.host(q.Domain)})
			return nil
		}
		q, ok := msg.(*proto.MTAResolveDNS)
		if !ok {
			return fmt.Errorf("unexpected %s", msg.Type())
		}
		key := dnsKey(q.Name, q.Qtype)
		f.mu.Lock()
		f.asked = append(f.asked, key)
		a, ok := f.answers[key]
		f.mu.Unlock()
		if !ok {
			a = proto.LookupDNSResult{Outcome: proto.Outcome{Status: proto.StatusPermfail, Text: "NXDOMAIN"}}
		}
		go f.reqs.Deliver(&proto.Frame{Header: proto.Header{PeerID: id}, Msg: &a})
		return nil
	})
	store, err := tlsrpt.Open(filepath.Join(t.TempDir(), "c.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &MTA{
		cfg:    &config.Config{MXPort: 25, Destinations: dests},
		child:  &privsep.Child{Proc: proto.ProcMTA, Log: logging.NewWriter("mta", io.Discard, false)},
		reqs:   f.reqs,
		tlsrpt: store,
	}, f
}

// todayReport is today's TLS report of polDomain, empty without counts.
// todayReport merges today's reports of the recipient domain (MTA-STS
// and no policy) and of its exchanger (DANE, whose policy domain is the
// MX host, RFC 8460 §3).
func todayReport(t *testing.T, m *MTA) *tlsrpt.Report {
	t.Helper()
	org := tlsrpt.Organization{Name: "x", Contact: "postmaster@example.net"}
	out := &tlsrpt.Report{}
	for _, domain := range []string{polDomain, polMX} {
		rep, err := m.tlsrpt.Report(time.Now().UTC().Format("2006-01-02"), domain, org)
		if errors.Is(err, tlsrpt.ErrNoCounts) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out.Policies = append(out.Policies, rep.Policies...)
	}
	return out
}

// reported lists today's TLS-RPT counts of polDomain and polMX: "TYPE ok N" for
// the successes of a policy, "TYPE RESULT" for each kind of failure.
func reported(t *testing.T, m *MTA) []string {
	t.Helper()
	var out []string
	for _, p := range todayReport(t, m).Policies {
		if n := p.Summary.TotalSuccessfulSessionCount; n > 0 {
			out = append(out, fmt.Sprintf("%s ok %d", p.Policy.Type, n))
		}
		for _, d := range p.FailureDetails {
			out = append(out, fmt.Sprintf("%s %s", p.Policy.Type, d.ResultType))
		}
	}
	return out
}

// tlsaAnswer is lookup's answer for the TLSA records of polMX.
func tlsaAnswer(status proto.Status, secure bool, rdata ...string) *proto.LookupDNSResult {
	a := &proto.LookupDNSResult{Outcome: proto.Outcome{Status: status}, Secure: secure}
	if status == proto.StatusTempfail {
		a.Text = "SERVFAIL (bogus)"
	}
	for _, rd := range rdata {
		a.Records = append(a.Records, polTLSA+" 300 IN "+rd)
	}
	return a
}

var digest = strings.Repeat("5a", 32)

// wantPolicy is what a tlsPolicy should say; why is a substring.
type wantPolicy struct {
	name                                  string
	mustTLS, verifyPKIX, dane, secureName bool
	names                                 []string
	why                                   string
	report                                tlsrpt.PolicyType // "" for none
}

// mxRelay is a relay to the exchangers of polDomain.
func mxRelay(relayTLS string, optional bool) *relay {
	if relayTLS == "" {
		relayTLS = "opportunistic"
	}
	return &relay{domain: polDomain, action: &config.Action{RelayTLS: relayTLS}, tlsOptional: optional}
}

// checkErr checks an error against a substring, "" for none, and
// reports whether there is a policy to check.
func checkErr(t *testing.T, err error, want string) bool {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("error %v", err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("error %v, want %q", err, want)
	}
	return want == "" && err == nil
}

// checkPolicy compares p with w.
func checkPolicy(t *testing.T, p *tlsPolicy, w wantPolicy) {
	t.Helper()
	if p == nil {
		t.Fatal("no policy")
	}
	got := wantPolicy{p.name, p.mustTLS, p.verifyPKIX, p.daneAuth(), p.secureName, p.names, p.why, ""}
	if p.report != nil {
		got.report = p.report.PolicyType
	}
	if got.name != w.name || got.mustTLS != w.mustTLS || got.verifyPKIX != w.verifyPKIX || got.dane != w.dane ||
		got.secureName != w.secureName || !slices.Equal(got.names, w.names) || !strings.Contains(got.why, w.why) || got.report != w.report {
		t.Errorf("policy\n got  %+v\n want %+v", got, w)
	}
}

// TestHostPolicy: the policy of a session to one exchanger, from the
// destination block, the relay, DNSSEC and TLSA records, and MTA-STS.
func TestHostPolicy(t *testing.T) {
	secure := proto.MXHost{Preference: 10, Host: polMX, Addrs: []string{"192.0.2.1"}, Secure: true}
	insecure := secure
	insecure.Secure = false
	other := proto.MXHost{Preference: 20, Host: "mx.other.test", Addrs: []string{"192.0.2.2"}}
	enforce := &mtasts.Policy{Mode: mtasts.ModeEnforce, MX: []string{polMX, "*.backup.example.test"}, ID: "20240101", MaxAge: time.Hour}
	stsTesting := &mtasts.Policy{Mode: mtasts.ModeTesting, MX: []string{polMX}, ID: "20240102", MaxAge: time.Hour}
	stsNone := &mtasts.Policy{Mode: mtasts.ModeNone, ID: "20240103", MaxAge: time.Hour}
	dane311 := tlsaAnswer(proto.StatusOK, true, "TLSA 3 1 1 "+digest)
	tlsaQ := []string{dnsKey(polTLSA, mdns.TypeTLSA)}
	both := []string{polMX, polDomain}
	opportunistic := wantPolicy{name: policyOpportunistic, names: []string{polMX}, why: "no DANE or MTA-STS policy", report: tlsrpt.PolicyNone}
	secureOpp := opportunistic
	secureOpp.secureName = true
	daneOK := wantPolicy{name: policyDANE, mustTLS: true, dane: true, secureName: true, names: both, why: "1 TLSA records of " + polTLSA + " (DNSSEC)", report: tlsrpt.PolicyTLSA}
	stsOK := wantPolicy{name: policyMTASTS, mustTLS: true, verifyPKIX: true, secureName: true, names: []string{polMX}, why: "MTA-STS policy id 20240101", report: tlsrpt.PolicySTS}
	required := wantPolicy{name: policyRequired, why: "configured", mustTLS: true, verifyPKIX: true, names: []string{polMX}, report: tlsrpt.PolicyNone}
	secureRequired := required
	secureRequired.secureName = true
	configured := wantPolicy{name: policyOpportunistic, why: "configured", report: tlsrpt.PolicyNone}

	for _, c := range []struct {
		name     string
		tls      string // the destination block's tls, "" for none
		relayTLS string // the action's tls
		optional bool   // TLS-Required: No
		sts      *mtasts.Policy
		stsErr   error
		mx       proto.MXHost
		tlsa     *proto.LookupDNSResult // nil: NXDOMAIN
		want     wantPolicy
		err      string // substring of the error; "" for none
		queries  []string
		reported []string
	}{
		// DANE needs DNSSEC-authenticated MX and address records: the
		// TLSA records of an insecure host are not even asked for
		{name: "insecure MX", mx: insecure, tlsa: dane311, want: opportunistic},
		{name: "secure MX, secure 3 1 1", mx: secure, tlsa: dane311, want: daneOK, queries: tlsaQ},
		// an unsigned TLSA answer, or none, is no DANE (RFC 7672 §2.2)
		{name: "TLSA answer not secure", mx: secure, tlsa: tlsaAnswer(proto.StatusOK, false, "TLSA 3 1 1 "+digest), want: secureOpp, queries: tlsaQ},
		{name: "TLSA NXDOMAIN", mx: secure, tlsa: tlsaAnswer(proto.StatusPermfail, true), want: secureOpp, queries: tlsaQ},
		{name: "TLSA NODATA", mx: secure, tlsa: tlsaAnswer(proto.StatusOK, true), want: secureOpp, queries: tlsaQ},
		{name: "secure answer without TLSA records", mx: secure, tlsa: tlsaAnswer(proto.StatusOK, true, "CNAME tlsa.example.test.", "TLSA 3 x 1 "+digest), want: secureOpp, queries: tlsaQ},
		// bogus or unreachable TLSA records leave the host out, counted
		// as dnssec-invalid; MTA-STS does not stand in for them
		{name: "TLSA bogus", mx: secure, tlsa: tlsaAnswer(proto.StatusTempfail, true), err: "451 4.7.5 TLSA lookup of " + polTLSA + " failed (bogus or unreachable)", queries: tlsaQ, reported: []string{"tlsa dnssec-invalid"}},
		{name: "TLSA bogus, STS enforce", mx: secure, sts: enforce, tlsa: tlsaAnswer(proto.StatusTempfail, false), err: "4.7.5 TLSA lookup", queries: tlsaQ, reported: []string{"tlsa dnssec-invalid"}},
		// PKIX-TA and PKIX-EE are unusable for SMTP: TLS is mandatory
		// but unauthenticated (RFC 7672 §2.2)
		{name: "only TLSA usages 0 and 1", mx: secure, tlsa: tlsaAnswer(proto.StatusOK, true, "TLSA 0 1 1 "+digest, "TLSA 1 1 1 "+digest),
			want:    wantPolicy{name: policyDANE, mustTLS: true, secureName: true, names: both, why: "2 TLSA records of " + polTLSA + " (DNSSEC), none usable", report: tlsrpt.PolicyTLSA},
			queries: tlsaQ},
		// tls = "dane" leaves out hosts without DANE
		{name: "dane, insecure MX", tls: config.PolicyDANE, mx: insecure, err: "451 4.7.5 DANE required for example.test, but mx.example.test has no DNSSEC-authenticated TLSA records", reported: []string{"no-policy-found dane-required"}},
		{name: "dane, no TLSA records", tls: config.PolicyDANE, mx: secure, err: "DANE required", queries: tlsaQ, reported: []string{"no-policy-found dane-required"}},
		{name: "dane, secure TLSA", tls: config.PolicyDANE, mx: secure, tlsa: dane311, want: daneOK, queries: tlsaQ},
		// MTA-STS (RFC 8461 §5)
		{name: "STS enforce, MX listed", sts: enforce, mx: insecure, want: stsOK},
		{name: "STS enforce, MX matches a wildcard", sts: enforce, mx: proto.MXHost{Host: "b1.backup.example.test"},
			want: wantPolicy{name: policyMTASTS, mustTLS: true, verifyPKIX: true, secureName: true, names: []string{"b1.backup.example.test"}, why: "id 20240101", report: tlsrpt.PolicySTS}},
		{name: "STS enforce, MX not listed", sts: enforce, mx: other, err: "451 4.7.5 MTA-STS policy of example.test (id 20240101) does not list mx.other.test among its MX hosts [mx.example.test *.backup.example.test]", reported: []string{"sts validation-failure"}},
		{name: "STS testing, MX listed", sts: stsTesting, mx: insecure,
			want: wantPolicy{name: policySTSTesting, secureName: true, names: []string{polMX}, why: "id 20240102", report: tlsrpt.PolicySTS}},
		// testing: delivered anyway, but the name was not learnt securely
		{name: "STS testing, MX not listed", sts: stsTesting, mx: other,
			want:     wantPolicy{name: policySTSTesting, names: []string{"mx.other.test"}, why: "id 20240102", report: tlsrpt.PolicySTS},
			reported: []string{"sts validation-failure"}},
		{name: "STS mode none", sts: stsNone, mx: insecure, want: opportunistic},
		// tls = "mta-sts" enforces even a testing policy, and wants one
		{name: "mta-sts, testing policy", tls: config.PolicyMTASTS, sts: stsTesting, mx: insecure,
			want: wantPolicy{name: policyMTASTS, mustTLS: true, verifyPKIX: true, secureName: true, names: []string{polMX}, why: "id 20240102", report: tlsrpt.PolicySTS}},
		{name: "mta-sts, testing policy, MX not listed", tls: config.PolicyMTASTS, sts: stsTesting, mx: other, err: "does not list mx.other.test", reported: []string{"sts validation-failure"}},
		{name: "mta-sts without policy", tls: config.PolicyMTASTS, mx: insecure, err: "451 4.7.5 MTA-STS required for example.test, but it has no policy: none published"},
		{name: "mta-sts, policy mode none", tls: config.PolicyMTASTS, sts: stsNone, mx: insecure, err: "MTA-STS required"},
		{name: "mta-sts, policy not had", tls: config.PolicyMTASTS, stsErr: errors.New("fetch timed out"), mx: insecure, err: "no policy: fetch timed out"},
		// a failed policy fetch: opportunistic, and counted; a failed
		// TXT lookup is no policy failure (RFC 8460 §4.3.2.2)
		{name: "STS fetch failed", stsErr: &mtasts.FetchError{Domain: polDomain, Step: mtasts.StepConnect, Err: errors.New("refused")}, mx: insecure, want: opportunistic, reported: []string{"no-policy-found sts-policy-fetch-error"}},
		{name: "STS TXT lookup failed", stsErr: errors.New("SERVFAIL"), mx: insecure, want: opportunistic},
		{name: "STS TXT record invalid", stsErr: fmt.Errorf("MTA-STS: %w", mtasts.ErrRecordSyntax), mx: insecure, want: opportunistic, reported: []string{"no-policy-found sts-policy-invalid"}},
		{name: "STS certificate refused", stsErr: &mtasts.FetchError{Domain: polDomain, Step: mtasts.StepTLS, WebPKI: true, Err: errors.New("x509")}, mx: insecure, want: opportunistic, reported: []string{"no-policy-found sts-webpki-invalid"}},
		// a DANE host is held to its TLSA records whatever MTA-STS says
		{name: "DANE wins over STS", sts: enforce, mx: secure, tlsa: dane311, want: daneOK, queries: tlsaQ},
		{name: "unsigned TLSA, STS enforce", sts: enforce, mx: secure, tlsa: tlsaAnswer(proto.StatusOK, false, "TLSA 3 1 1 "+digest), want: stsOK, queries: tlsaQ},
		// the destination block decides before DANE and MTA-STS
		{name: "none", tls: config.PolicyNoTLS, sts: enforce, mx: secure, tlsa: dane311, want: wantPolicy{name: policyNone, why: "configured"}},
		{name: "opportunistic", tls: config.PolicyOpportunistic, sts: enforce, mx: secure, tlsa: dane311, want: configured},
		{name: "required, secure MX", tls: config.PolicyRequired, mx: secure, tlsa: dane311, want: secureRequired},
		{name: "required, insecure MX", tls: config.PolicyRequired, mx: insecure, want: required},
		// an action's tls = "required" counts where the block says nothing
		{name: "action required", relayTLS: "required", mx: insecure, want: required},
		{name: "action required, secure TLSA", relayTLS: "required", mx: secure, tlsa: dane311, want: secureRequired},
		{name: "block wins over action required", tls: config.PolicyOpportunistic, relayTLS: "required", mx: insecure, want: configured},
		// TLS-Required: No (RFC 8689 §5) overrides all of them
		{name: "TLS-Required: No", tls: config.PolicyDANE, optional: true, sts: enforce, mx: secure, tlsa: dane311,
			want: wantPolicy{name: policyOpportunistic, why: "TLS-Required: No", report: tlsrpt.PolicyNone}},
	} {
		t.Run(c.name, func(t *testing.T) {
			answers := map[string]proto.LookupDNSResult{}
			if c.tlsa != nil {
				answers[dnsKey(polTLSA, mdns.TypeTLSA)] = *c.tlsa
			}
			m, f := newPolicyMTA(t, answers, &config.Destination{Domain: polDomain, TLS: c.tls})
			r := mxRelay(c.relayTLS, c.optional)
			dp := m.domainPolicy(r)
			dp.sts, dp.stsErr = c.sts, c.stsErr
			if p, err := m.hostPolicy(r, dp, c.mx); checkErr(t, err, c.err) {
				checkPolicy(t, p, c.want)
				countPending(m, p)
			}
			if q := f.questions(); !slices.Equal(q, c.queries) {
				t.Errorf("DNS questions %q, want %q", q, c.queries)
			}
			if got := reported(t, m); !slices.Equal(got, c.reported) {
				t.Errorf("TLS-RPT %q, want %q", got, c.reported)
			}
		})
	}
}

// TestSmarthostPolicy: a smarthost keeps its URL's word on TLS, whatever
// its destination block says; nothing is looked up or counted.
func TestSmarthostPolicy(t *testing.T) {
	required := wantPolicy{name: policyRequired, mustTLS: true, verifyPKIX: true, secureName: true, names: []string{"smarthost.test"}}
	noVerify := wantPolicy{name: policyRequired, mustTLS: true, secureName: true, names: []string{"smarthost.test"}}
	opp := wantPolicy{name: policyOpportunistic, secureName: true, names: []string{"smarthost.test"}, why: "relay smtp"}
	for _, c := range []struct {
		url, relayTLS string
		want          wantPolicy
	}{
		{"smtp+tls://smarthost.test:587", "opportunistic", withWhy(required, "relay smtp+tls")},
		{"smtps://smarthost.test", "opportunistic", withWhy(required, "relay smtps")},
		{"smtp+tls://isp@smarthost.test:587", "no-verify", withWhy(noVerify, "relay smtp+tls, no-verify")},
		{"smtps://smarthost.test", "no-verify", withWhy(noVerify, "relay smtps, no-verify")},
		// smtp: STARTTLS when offered, unless the action requires it
		{"smtp://smarthost.test", "opportunistic", opp},
		{"smtp://smarthost.test", "no-verify", opp},
		{"smtp://smarthost.test:2525", "required", withWhy(required, "relay smtp")},
		// never TLS, even when the action asks for it
		{"smtp+notls://smarthost.test", "required", wantPolicy{name: policyNone, why: "smtp+notls"}},
		{"lmtp://smarthost.test:24", "required", wantPolicy{name: policyNone, why: "lmtp"}},
	} {
		t.Run(c.url+" "+c.relayTLS, func(t *testing.T) {
			m, f := newPolicyMTA(t, nil, &config.Destination{Domain: "smarthost.test", TLS: config.PolicyDANE})
			u, err := url.Parse(c.url)
			if err != nil {
				t.Fatal(err)
			}
			r := &relay{domain: u.Hostname(), url: u, action: &config.Action{RelayTLS: c.relayTLS}}
			p, err := m.hostPolicy(r, m.domainPolicy(r), proto.MXHost{Host: "smarthost.test", Addrs: []string{"192.0.2.9"}, Secure: true})
			if err != nil {
				t.Fatal(err)
			}
			checkPolicy(t, p, c.want)
			if q := f.questions(); len(q) > 0 {
				t.Errorf("DNS questions %q", q)
			}
		})
	}
}

func withWhy(w wantPolicy, why string) wantPolicy {
	w.why = why
	return w
}

// TestDomainPolicy: where the MTA-STS policy is looked up, through
// lookup and an HTTPS fetch as startPolicies wires them, and how a
// policy that cannot be had counts.
func TestDomainPolicy(t *testing.T) {
	ca := testcert.NewCA(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{issue(t, ca, false, "mta-sts.example.test")}}
	srv.StartTLS()
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	txt := func(rec string) *proto.LookupDNSResult {
		return &proto.LookupDNSResult{Outcome: proto.Outcome{Status: proto.StatusOK}, Records: []string{rec}}
	}
	record := txt("v=STSv1; id=20240101")
	servfail := &proto.LookupDNSResult{Outcome: proto.Outcome{Status: proto.StatusTempfail, Text: "SERVFAIL"}}
	for _, c := range []struct {
		name, tls, relayTLS string
		optional            bool
		txt                 *proto.LookupDNSResult // of _mta-sts.example.test
		addr                bool                   // mta-sts.example.test has an address
		lookups             int                    // TXT questions
		policy, err         string
		reported            []string
	}{
		{name: "no TXT record", lookups: 1, policy: policyOpportunistic},
		{name: "policy fetched", txt: record, addr: true, lookups: 1, policy: policyMTASTS},
		// a failed lookup is no policy failure; the rest count
		{name: "TXT lookup fails", txt: servfail, lookups: 1, policy: policyOpportunistic},
		{name: "TXT record invalid", txt: txt("v=STSv1; id=not valid"), lookups: 1, policy: policyOpportunistic, reported: []string{"no-policy-found sts-policy-invalid"}},
		{name: "policy host without address", txt: record, lookups: 1, policy: policyOpportunistic, reported: []string{"no-policy-found sts-policy-fetch-error"}},
		{name: "mta-sts, TXT lookup fails", tls: config.PolicyMTASTS, txt: servfail, lookups: 1, err: "no policy: MTA-STS: looking up TXT _mta-sts.example.test"},
		{name: "mta-sts, policy fetched", tls: config.PolicyMTASTS, txt: record, addr: true, lookups: 1, policy: policyMTASTS},
		// the other settings do not look MTA-STS up
		{name: "none", tls: config.PolicyNoTLS, txt: record, addr: true, policy: policyNone},
		{name: "dane", tls: config.PolicyDANE, txt: record, addr: true, err: "DANE required", reported: []string{"no-policy-found dane-required"}},
		{name: "required", tls: config.PolicyRequired, txt: record, addr: true, policy: policyRequired},
		{name: "action required", relayTLS: "required", txt: record, addr: true, policy: policyRequired},
		{name: "TLS-Required: No", optional: true, txt: record, addr: true, policy: policyOpportunistic},
	} {
		t.Run(c.name, func(t *testing.T) {
			answers := map[string]proto.LookupDNSResult{}
			if c.txt != nil {
				answers[dnsKey(stsTXT, mdns.TypeTXT)] = *c.txt
			}
			if c.addr {
				answers[dnsKey("mta-sts.example.test", mdns.TypeA)] = *txt("mta-sts.example.test. 300 IN A 127.0.0.1")
			}
			m, f := newPolicyMTA(t, answers, &config.Destination{Domain: polDomain, TLS: c.tls})
			m.roots = caPool(t, ca)
			m.sts = &mtasts.Resolver{
				TXT:      m.lookupTXT,
				NotFound: func(err error) bool { return errors.Is(err, errNoSuchName) },
				Fetcher:  &mtasts.Fetcher{RootCAs: m.roots, DialContext: m.dialPolicyHost, Port: port, Timeout: 5 * time.Second},
			}
			r := mxRelay(c.relayTLS, c.optional)
			dp := m.domainPolicy(r)
			txts := slices.DeleteFunc(f.questions(), func(q string) bool { return !strings.HasSuffix(q, " TXT") })
			if len(txts) != c.lookups {
				t.Errorf("TXT lookups %q, want %d", txts, c.lookups)
			}
			p, err := m.hostPolicy(r, dp, proto.MXHost{Host: polMX, Addrs: []string{"192.0.2.1"}})
			if checkErr(t, err, c.err) {
				if p.name != c.policy {
					t.Errorf("policy %s (%s), want %s", p.name, p.why, c.policy)
				}
				countPending(m, p)
			}
			if got := reported(t, m); !slices.Equal(got, c.reported) {
				t.Errorf("TLS-RPT %q, want %q", got, c.reported)
			}
		})
	}
}

// issue is a key pair for names from ca; withCA appends the authority's
// certificate to the chain the server presents.
func issue(t *testing.T, ca *testcert.CA, withCA bool, names ...string) tls.Certificate {
	t.Helper()
	_, cert, key := ca.Issue(t, t.TempDir(), names...)
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if withCA {
		kp.Certificate = append(kp.Certificate, caCert(t, ca).Raw)
	}
	return kp
}

func caCert(t *testing.T, ca *testcert.CA) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(ca.PEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func caPool(t *testing.T, ca *testcert.CA) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(caCert(t, ca))
	return pool
}

// tlsaOf is a TLSA record of c.
func tlsaOf(t *testing.T, c *x509.Certificate, usage, selector, mtype uint8) *mdns.TLSA {
	t.Helper()
	a, err := dane.Association(c, selector, mtype)
	if err != nil {
		t.Fatal(err)
	}
	rr, err := mdns.NewRR(fmt.Sprintf("%s 300 IN TLSA %d %d %d %s", polTLSA, usage, selector, mtype, hex.EncodeToString(a)))
	if err != nil {
		t.Fatal(err)
	}
	return rr.(*mdns.TLSA)
}

// handshake runs a TLS handshake of cfg with a server presenting cert
// and returns the name the server was asked for.
func handshake(t *testing.T, cfg *tls.Config, cert tls.Certificate) (sni string, err error) {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { sni = h.ServerName; return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c, err := l.Accept(); err == nil {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", l.Addr().String(), cfg)
	if err == nil {
		c.Close()
	}
	<-done
	return sni, err
}

// TestTLSConfig: the checks of VerifyConnection in real handshakes, what
// they keep, how the failures are classified for TLS-RPT, and whether
// the server counts as authenticated for REQUIRETLS: by DANE alone where
// it applies, else by PKIX for a name learnt securely (RFC 8689 §4.2.1).
func TestTLSConfig(t *testing.T) {
	ca, rogue := testcert.NewCA(t), testcert.NewCA(t)
	good := issue(t, ca, false, polMX)
	wrongName := issue(t, ca, false, "other.example.net")
	untrusted := issue(t, rogue, false, polMX)
	domainChain := issue(t, ca, true, polDomain)
	wrongChain := issue(t, ca, true, "other.example.net")
	smarthost := issue(t, ca, false, "smarthost.test")
	leaf := func(c tls.Certificate) *x509.Certificate { return c.Leaf }

	mxNames := []string{polMX}
	required := &tlsPolicy{name: policyRequired, mustTLS: true, verifyPKIX: true, names: mxNames, secureName: true}
	opp := &tlsPolicy{name: policyOpportunistic, names: mxNames, secureName: true}
	insecureName := &tlsPolicy{name: policyRequired, mustTLS: true, verifyPKIX: true, names: mxNames}
	testingPol := &tlsPolicy{name: policySTSTesting, names: mxNames, secureName: true}
	daneWith := func(rrs ...*mdns.TLSA) *tlsPolicy {
		return &tlsPolicy{name: policyDANE, mustTLS: true, tlsa: rrs, names: []string{polMX, polDomain}, secureName: true}
	}
	ee := daneWith(tlsaOf(t, leaf(untrusted), dane.UsageDANEEE, dane.SelectorSPKI, dane.MatchSHA256))
	ta := daneWith(tlsaOf(t, caCert(t, ca), dane.UsageDANETA, dane.SelectorCert, dane.MatchSHA256))
	unusable := &tlsPolicy{name: policyDANE, mustTLS: true, names: []string{polMX, polDomain}, secureName: true}
	u, _ := url.Parse("smtp+tls://smarthost.test:587")
	m := &MTA{roots: caPool(t, ca)}
	smart := m.smarthostPolicy(&relay{domain: "smarthost.test", url: u, action: &config.Action{}})
	smartNoVerify := m.smarthostPolicy(&relay{domain: "smarthost.test", url: u, action: &config.Action{RelayTLS: "no-verify"}})

	for _, c := range []struct {
		name   string
		pol    *tlsPolicy
		cert   tls.Certificate
		ok     bool
		sni    string
		pkix   tlsrpt.ResultType // of pkixErr, "" for nil
		dane   bool              // daneErr set
		result tlsrpt.ResultType // of a failed handshake
		auth   bool
	}{
		{name: "PKIX, right name", pol: required, cert: good, ok: true, sni: polMX, auth: true},
		{name: "PKIX, wrong name", pol: required, cert: wrongName, sni: polMX, pkix: tlsrpt.ResultCertificateHostMismatch, result: tlsrpt.ResultCertificateHostMismatch},
		{name: "PKIX, name not learnt securely", pol: insecureName, cert: good, ok: true, sni: polMX},
		{name: "PKIX, untrusted", pol: required, cert: untrusted, sni: polMX, pkix: tlsrpt.ResultCertificateNotTrusted, result: tlsrpt.ResultCertificateNotTrusted},
		// opportunistic takes any certificate but keeps what was wrong,
		// for REQUIRETLS
		{name: "opportunistic, wrong name", pol: opp, cert: wrongName, ok: true, sni: polMX, pkix: tlsrpt.ResultCertificateHostMismatch},
		{name: "opportunistic, untrusted", pol: opp, cert: untrusted, ok: true, sni: polMX, pkix: tlsrpt.ResultCertificateNotTrusted},
		{name: "STS testing, wrong name", pol: testingPol, cert: wrongName, ok: true, sni: polMX, pkix: tlsrpt.ResultCertificateHostMismatch},
		// DANE-EE matches the key, whatever the name and issuer
		{name: "DANE-EE match", pol: ee, cert: untrusted, ok: true, sni: polMX, pkix: tlsrpt.ResultCertificateNotTrusted, auth: true},
		{name: "DANE-EE no match", pol: ee, cert: good, sni: polMX, dane: true, result: tlsrpt.ResultValidationFailure},
		// DANE-TA: the chain must present the authority, and the leaf
		// be for the MX host or the recipient domain
		{name: "DANE-TA, recipient domain", pol: ta, cert: domainChain, ok: true, sni: polMX, pkix: tlsrpt.ResultCertificateHostMismatch, auth: true},
		{name: "DANE-TA, wrong name", pol: ta, cert: wrongChain, sni: polMX, pkix: tlsrpt.ResultCertificateHostMismatch, dane: true, result: tlsrpt.ResultCertificateHostMismatch},
		{name: "DANE-TA, authority not presented", pol: ta, cert: good, sni: polMX, dane: true, result: tlsrpt.ResultValidationFailure},
		// no usable records: TLS with any certificate, not authenticated
		{name: "DANE, none usable", pol: unusable, cert: untrusted, ok: true, sni: polMX, pkix: tlsrpt.ResultCertificateNotTrusted},
		{name: "smarthost", pol: smart, cert: smarthost, ok: true, sni: "smarthost.test", auth: true},
		{name: "smarthost, wrong name", pol: smart, cert: good, sni: "smarthost.test", pkix: tlsrpt.ResultCertificateHostMismatch, result: tlsrpt.ResultCertificateHostMismatch},
		{name: "smarthost no-verify, wrong name", pol: smartNoVerify, cert: good, ok: true, sni: "smarthost.test", pkix: tlsrpt.ResultCertificateHostMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &tlsSession{}
			sni, err := handshake(t, m.tlsConfig(c.pol, proto.MXHost{Host: polMX}, s), c.cert)
			if (err == nil) != c.ok {
				t.Errorf("handshake: %v", err)
			}
			if sni != c.sni {
				t.Errorf("SNI %q, want %q", sni, c.sni)
			}
			var pkix tlsrpt.ResultType
			if s.pkixErr != nil {
				pkix = pkixResultType(s.pkixErr)
			}
			if pkix != c.pkix {
				t.Errorf("PKIX %q (%v), want %q", pkix, s.pkixErr, c.pkix)
			}
			var de *dane.Error
			if (s.daneErr != nil) != c.dane || s.daneErr != nil && !errors.As(s.daneErr, &de) {
				t.Errorf("DANE error %v", s.daneErr)
			}
			if !c.ok {
				if got := tlsResultType(s, c.pol, err); got != c.result {
					t.Errorf("result %q, want %q", got, c.result)
				}
			}
			if got := c.pol.authenticated(s); got != c.auth {
				t.Errorf("authenticated %v", got)
			}
		})
	}
}

// TestResultTypes: the TLS-RPT result types of failed handshakes, of
// certificates and of MTA-STS policies that could not be had.
func TestResultTypes(t *testing.T) {
	other := errors.New("handshake failure")
	hostErr := x509.HostnameError{Certificate: &x509.Certificate{}, Host: polMX}
	expired := x509.CertificateInvalidError{Cert: &x509.Certificate{}, Reason: x509.Expired}
	daneP := &tlsPolicy{name: policyDANE, tlsa: []*mdns.TLSA{{}}}
	for _, c := range []struct {
		name string
		got  tlsrpt.ResultType
		want tlsrpt.ResultType
	}{
		{"pkix host", pkixResultType(fmt.Errorf("tls: %w", hostErr)), tlsrpt.ResultCertificateHostMismatch},
		{"pkix expired", pkixResultType(expired), tlsrpt.ResultCertificateExpired},
		{"pkix not authorized", pkixResultType(x509.CertificateInvalidError{Reason: x509.NotAuthorizedToSign}), tlsrpt.ResultValidationFailure},
		{"pkix unknown authority", pkixResultType(x509.UnknownAuthorityError{}), tlsrpt.ResultCertificateNotTrusted},
		{"pkix other", pkixResultType(other), tlsrpt.ResultValidationFailure},
		{"dane no usable", tlsResultType(&tlsSession{daneErr: &dane.Error{Kind: dane.KindNoUsable}}, daneP, other), tlsrpt.ResultTLSAInvalid},
		{"dane expired", tlsResultType(&tlsSession{daneErr: &dane.Error{Kind: dane.KindExpired}, pkixErr: hostErr}, daneP, other), tlsrpt.ResultCertificateExpired},
		// a handshake that failed before any check
		{"dane, no check", tlsResultType(&tlsSession{}, daneP, other), tlsrpt.ResultValidationFailure},
		{"required expired", tlsResultType(&tlsSession{pkixErr: expired}, &tlsPolicy{verifyPKIX: true}, other), tlsrpt.ResultCertificateExpired},
		// PKIX not enforced: its error did not fail the handshake
		{"opportunistic", tlsResultType(&tlsSession{pkixErr: expired}, &tlsPolicy{name: policyOpportunistic}, other), tlsrpt.ResultValidationFailure},
		{"STS testing", tlsResultType(&tlsSession{pkixErr: hostErr}, &tlsPolicy{name: policySTSTesting}, other), tlsrpt.ResultCertificateHostMismatch},
		{"dane error in err", tlsResultType(&tlsSession{}, &tlsPolicy{}, fmt.Errorf("x: %w", &dane.Error{Kind: dane.KindNameMismatch})), tlsrpt.ResultCertificateHostMismatch},
		{"sts DNS failure", stsResultType(other), ""},
		{"sts no error", stsResultType(nil), ""},
		{"sts TXT syntax", stsResultType(fmt.Errorf("MTA-STS: %w", mtasts.ErrRecordSyntax)), tlsrpt.ResultSTSPolicyInvalid},
		{"sts TXT twice", stsResultType(fmt.Errorf("MTA-STS: %w", mtasts.ErrMultipleRecords)), tlsrpt.ResultSTSPolicyInvalid},
		{"sts fetch", stsResultType(fmt.Errorf("x: %w", &mtasts.FetchError{Step: mtasts.StepConnect, Err: other})), tlsrpt.ResultSTSPolicyFetchError},
		{"sts webpki", stsResultType(&mtasts.FetchError{WebPKI: true, Err: other}), tlsrpt.ResultSTSWebPKIInvalid},
		{"sts invalid", stsResultType(&mtasts.FetchError{Invalid: true, Err: other}), tlsrpt.ResultSTSPolicyInvalid},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.name, c.got, c.want)
		}
	}
}

// countPending counts the failure a policy holds for its session, as
// the session's outcome does whatever its handshake gives.
func countPending(m *MTA, p *tlsPolicy) {
	if p.failure != "" {
		m.recordSession(p, "", polMX, "", nil)
	}
}

// TestSessionCountedOnce: a session to an exchanger a testing MTA-STS
// policy does not list, or under a policy that could not be fetched, is
// one session in the TLS report, not a failure and a success.
func TestSessionCountedOnce(t *testing.T) {
	ca := testcert.NewCA(t)
	cert := issue(t, ca, false, polMX)
	for _, c := range []struct {
		name   string
		sts    *mtasts.Policy
		stsErr error
	}{
		{name: "STS testing, MX not listed", sts: &mtasts.Policy{Mode: mtasts.ModeTesting, MX: []string{"mx2.example.test"}, ID: "1"}},
		{name: "STS fetch failed", stsErr: &mtasts.FetchError{Domain: polDomain, Step: mtasts.StepConnect, Err: errors.New("refused")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := startServer(t, func(srv *smtp.Server) { srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}} })
			m, _ := newPolicyMTA(t, nil)
			m.roots = caPool(t, ca)
			m.stats = stats.NewSender(func(*proto.StatUpdate) error { return nil })
			r := mxRelay("", false)
			dp := m.domainPolicy(r)
			dp.sts, dp.stsErr = c.sts, c.stsErr
			mx := proto.MXHost{Host: polMX, Addrs: []string{"127.0.0.1"}}
			p, err := m.hostPolicy(r, dp, mx)
			if err != nil {
				t.Fatal(err)
			}
			cd := candidate{host: &host{addr: netip.MustParseAddr("127.0.0.1"), name: polMX}, mx: mx, policy: p, tls: &tlsSession{}}
			if err := m.startTLS(s.dial(t, false), r, cd, "out.example.net"); err != nil {
				t.Fatal(err)
			}
			var n int64
			for _, p := range todayReport(t, m).Policies {
				n += p.Summary.TotalSuccessfulSessionCount + p.Summary.TotalFailureSessionCount
			}
			if n != 1 || !strings.Contains(fmt.Sprint(reported(t, m)), "sts") {
				t.Errorf("one session counted as %d: %q", n, reported(t, m))
			}
		})
	}
}

// TestDescribeTLS: the TLS part of the delivery log line.
func TestDescribeTLS(t *testing.T) {
	for v, want := range map[uint16]string{tls.VersionTLS13: "TLSv1.3", tls.VersionTLS12: "TLSv1.2", tls.VersionTLS10: "TLSv1.0", 0x0305: "0x0305"} {
		if got := logging.TLSVersion(v); got != want {
			t.Errorf("TLSVersion(%#x) = %q, want %q", v, got, want)
		}
	}
	if got := describeTLS(&client{}, &tlsPolicy{name: policyOpportunistic}); got != "tls=none policy=opportunistic" {
		t.Errorf("plain: %q", got)
	}
	st := &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256}
	if got := describeTLS(&client{tlsState: st}, &tlsPolicy{name: policyDANE}); got != "tls=TLSv1.3:TLS_AES_128_GCM_SHA256 policy=dane" {
		t.Errorf("TLS: %q", got)
	}
}
