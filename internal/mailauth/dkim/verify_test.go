package dkim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
	mdns "github.com/miekg/dns"

	"smtpd/internal/dns"
	"smtpd/internal/dns/dnstest"
)

var _ Resolver = (*dns.Resolver)(nil)

// TestVerifyRFCVectors: the example signatures of RFC 6376 Appendix A.2
// (rsa-sha256, simple/simple, i= of a user) and RFC 8463 Appendix A.3
// (ed25519-sha256 and rsa-sha256, relaxed/relaxed, From, Subject and
// Date over-signed) pass.
func TestVerifyRFCVectors(t *testing.T) {
	for _, tc := range []struct {
		file string
		want []Result
	}{
		{"rfc6376-a2.eml", []Result{
			{Domain: "example.com", Selector: "brisbane", Identifier: "joe@football.example.com", Algorithm: "rsa-sha256", Status: StatusPass},
		}},
		{"rfc8463-a3.eml", []Result{
			{Domain: "football.example.com", Selector: "brisbane", Identifier: "@football.example.com", Algorithm: "ed25519-sha256", Status: StatusPass},
			{Domain: "football.example.com", Selector: "test", Identifier: "@football.example.com", Algorithm: "rsa-sha256", Status: StatusPass},
		}},
	} {
		msg := readTestdata(t, tc.file)
		got, err := Verify(context.Background(), strings.NewReader(string(msg)), rfcDNS())
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.file, got, tc.want)
		}
		// and a changed body breaks them all
		bad := strings.Replace(string(msg), "Joe.", "Mallory.", 1)
		got, _ = Verify(context.Background(), strings.NewReader(bad), rfcDNS())
		for i, r := range got {
			if r.Status != StatusFail || r.Reason != "body hash did not verify" {
				t.Errorf("%s with another body, signature %d: %+v", tc.file, i, r)
			}
		}
	}
}

// TestVerifyRoundTrip: our signatures pass ours, with either key and
// every canonicalization, and survive what relays do to messages that
// relaxed canonicalization allows for.
func TestVerifyRoundTrip(t *testing.T) {
	rsaS, edS, res := testSigners(t)
	for _, base := range []*Signer{rsaS, edS} {
		for _, c := range []string{"simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed"} {
			s := *base
			s.HeaderCanon, s.BodyCanon, _ = strings.Cut(c, "/")
			signed := signedWith(t, testMessage, &s)
			check := func(what, msg string, want Status) {
				t.Helper()
				results, err := Verify(context.Background(), strings.NewReader(msg), res)
				if err != nil || len(results) != 1 || results[0].Status != want {
					t.Errorf("%s %s, %s: %+v %v", s.Selector, c, what, results, err)
				}
			}
			check("as signed", signed, StatusPass)
			check("LF line ends", strings.ReplaceAll(signed, "\r\n", "\n"), StatusPass)
			hwant, bwant := StatusPass, StatusPass
			if s.HeaderCanon == Simple {
				hwant = StatusFail
			}
			if s.BodyCanon == Simple {
				bwant = StatusFail
			}
			check("refolded Subject", strings.Replace(signed, "Subject: Lunch   on\r\n  Friday?", "Subject: Lunch on Friday?", 1), hwant)
			check("trailing blanks in the body", strings.Replace(signed, "noon?\t\r\n", "noon?  \t \r\n", 1), bwant)
		}
	}
}

// TestVerifyTampering is acceptance 3: a changed body or signed field
// fails, an added unsigned field does not, a second From fails
// wherever it is put (From is over-signed).
func TestVerifyTampering(t *testing.T) {
	rsaS, edS, res := testSigners(t)
	signed := signedWith(t, testMessage, rsaS, edS)
	for _, tc := range []struct {
		name   string
		edit   func(string) string
		want   Status
		reason string
	}{
		{"unchanged", func(m string) string { return m }, StatusPass, ""},
		{"body changed", func(m string) string { return strings.Replace(m, "at noon", "at one", 1) }, StatusFail, "body hash did not verify"},
		{"body appended", func(m string) string { return m + "P.S. send money\r\n" }, StatusFail, "body hash did not verify"},
		{"empty lines appended", func(m string) string { return m + "\r\n\r\n" }, StatusPass, ""}, // §3.4.3, §3.4.4
		{"Subject changed", func(m string) string { return strings.Replace(m, "Lunch", "Dinner", 1) }, StatusFail, "signature did not verify"},
		{"From changed", func(m string) string { return strings.Replace(m, "From: Alice", "From: Alicia", 1) }, StatusFail, "signature did not verify"},
		{"Date removed", func(m string) string { return strings.Replace(m, "Date: Tue, 4 Nov 2025 10:00:00 +0000\r\n", "", 1) }, StatusFail, "signature did not verify"},
		{"unsigned field added", func(m string) string {
			return strings.Replace(m, "X-Mailer: test\r\n", "X-Mailer: test\r\nX-Spam-Score: 0.1\r\n", 1)
		}, StatusPass, ""},
		{"trace field added on top", func(m string) string { return "Received: from relay.example.net by mx.example.com\r\n" + m }, StatusPass, ""},
		{"unsigned X-Mailer changed", func(m string) string { return strings.Replace(m, "X-Mailer: test", "X-Mailer: other", 1) }, StatusPass, ""},
		{"second From on top", func(m string) string { return "From: Mallory <mallory@example.com>\r\n" + m }, StatusFail, "signature did not verify"},
		{"second From below", func(m string) string {
			return strings.Replace(m, "X-Mailer: test\r\n", "X-Mailer: test\r\nFrom: Mallory <mallory@example.com>\r\n", 1)
		}, StatusFail, "signature did not verify"},
		{"second Subject added", func(m string) string { return "Subject: urgent\r\n" + m }, StatusPass, ""}, // only From is over-signed by default
	} {
		results, err := Verify(context.Background(), strings.NewReader(tc.edit(signed)), res)
		if err != nil || len(results) != 2 {
			t.Errorf("%s: %+v %v", tc.name, results, err)
			continue
		}
		for _, r := range results {
			if r.Status != tc.want || r.Reason != tc.reason {
				t.Errorf("%s, %s: %s (%s), want %s (%s)", tc.name, r.Algorithm, r.Status, r.Reason, tc.want, tc.reason)
			}
		}
	}
}

// TestVerifyStatuses: key and signature problems map to the RFC 8601
// results.
func TestVerifyStatuses(t *testing.T) {
	rsaS, _, res := testSigners(t)
	signed := signedWith(t, testMessage, rsaS)
	sig, rest, _ := strings.Cut(signed, "\r\nReceived:")
	rest = "\r\nReceived:" + rest
	withTags := func(edit func(string) string) string { return edit(sig) + rest }
	keyName := "rsa._domainkey.example.org"
	withKey := func(records ...string) *fakeDNS {
		f := &fakeDNS{txt: map[string][]string{keyName: records}}
		if records == nil {
			delete(f.txt, keyName)
		}
		return f
	}
	for _, tc := range []struct {
		name   string
		msg    string
		res    Resolver
		want   Status
		reason string // a part of it
	}{
		{"no key record (NXDOMAIN)", signed, withKey(), StatusPermError, "no key for signature"},
		{"no TXT record (NODATA)", signed, withKey([]string{}...), StatusPermError, "no valid key found"},
		{"two key records", signed, withKey(PublicRecord(rsaS.Key), PublicRecord(rsaS.Key)), StatusPermError, "multiple TXT records"},
		{"revoked key", signed, withKey("v=DKIM1; k=rsa; p="), StatusPermError, "key revoked"},
		{"key of another type", signed, withKey(PublicRecord(loadTestKey(t, "ed25519.pem"))), StatusPermError, "inappropriate key algorithm"},
		{"key for sha1 only", signed, withKey("v=DKIM1; h=sha1; " + PublicRecord(rsaS.Key)[9:]), StatusPermError, "inappropriate hash algorithm"},
		{"other key", signed, withKey(PublicRecord(loadTestKey(t, "rfc6376.pem"))), StatusFail, "signature did not verify"},
		{"SERVFAIL", signed, &fakeDNS{errs: map[string]error{keyName: &dns.Error{Name: keyName, Msg: "SERVFAIL"}}}, StatusTempError, "key unavailable"},
		{"timeout", signed, &fakeDNS{errs: map[string]error{keyName: &dns.Error{Name: keyName, Msg: "i/o timeout"}}}, StatusTempError, "i/o timeout"},
		{"rsa-sha1", withTags(func(s string) string { return strings.Replace(s, "a=rsa-sha256", "a=rsa-sha1", 1) }), res, StatusPermError, "too weak"},
		{"unknown algorithm", withTags(func(s string) string { return strings.Replace(s, "a=rsa-sha256", "a=rsa-md5", 1) }), res, StatusPermError, "unsupported hash"},
		{"l= present", withTags(func(s string) string { return strings.Replace(s, "a=rsa-sha256;", "a=rsa-sha256; l=10;", 1) }), res, StatusPolicy, "l="},
		{"From not signed", withTags(func(s string) string { return strings.Replace(s, "h=From:From:", "h=", 1) }), res, StatusPermError, "From field not signed"},
		{"i= outside d=", withTags(func(s string) string {
			return strings.Replace(s, "d=example.org;", "d=example.org; i=a@example.com;", 1)
		}), res, StatusPermError, "domain mismatch"},
		{"expired", withTags(func(s string) string { return strings.Replace(s, "d=example.org;", "d=example.org; x=1000;", 1) }), res, StatusPermError, "expired"},
		{"version 2", withTags(func(s string) string { return strings.Replace(s, "v=1;", "v=2;", 1) }), res, StatusNeutral, "version"},
		{"bh= missing", withTags(func(s string) string { return strings.Replace(s, "bh=", "xh=", 1) }), res, StatusNeutral, "missing required tag bh="},
		{"duplicate tag", withTags(func(s string) string { return strings.Replace(s, "v=1;", "v=1; d=example.com;", 1) }), res, StatusNeutral, "duplicate tag d"},
		{"tag-list garbage", withTags(func(s string) string { return strings.Replace(s, "v=1;", "v=1; garbage;", 1) }), res, StatusNeutral, "without '='"},
		{"invalid d=", withTags(func(s string) string { return strings.Replace(s, "d=example.org;", "d=exa..mple.org;", 1) }), res, StatusPermError, "invalid key record name"},
	} {
		results, err := Verify(context.Background(), strings.NewReader(tc.msg), tc.res)
		if err != nil || len(results) != 1 {
			t.Errorf("%s: %+v %v", tc.name, results, err)
			continue
		}
		if r := results[0]; r.Status != tc.want || !strings.Contains(r.Reason, tc.reason) {
			t.Errorf("%s: %s (%s), want %s (…%s…)", tc.name, r.Status, r.Reason, tc.want, tc.reason)
		}
	}

	// a cancelled context is a temporary failure, not a missing key
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if results, err := Verify(ctx, strings.NewReader(signed), res); err != nil || results[0].Status != StatusTempError {
		t.Errorf("cancelled: %+v %v", results, err)
	}
	// no signature: no results
	if results, err := Verify(context.Background(), strings.NewReader(testMessage), res); err != nil || results != nil {
		t.Errorf("unsigned: %+v %v", results, err)
	}
	// a read error is an error, not a result
	if _, err := Verify(context.Background(), &errReader{signed}, res); err == nil {
		t.Error("read error not reported")
	}
}

type errReader struct{ s string }

func (e *errReader) Read(p []byte) (int, error) {
	if e.s == "" {
		return 0, errors.New("disk on fire")
	}
	n := copy(p, e.s)
	e.s = e.s[n:]
	return n, nil
}

// TestVerifyMaxSignatures: signatures beyond MaxSignatures are reported
// without being checked.
func TestVerifyMaxSignatures(t *testing.T) {
	rsaS, edS, res := testSigners(t)
	signers := []*Signer{rsaS, edS, rsaS, edS, rsaS, edS, rsaS}
	msg := signedWith(t, testMessage, signers...)
	results, err := Verify(context.Background(), strings.NewReader(msg), res)
	if err != nil || len(results) != len(signers) {
		t.Fatalf("%+v %v", results, err)
	}
	for i, r := range results {
		want := StatusPass
		if i >= MaxSignatures {
			want = StatusPolicy
		}
		if r.Status != want || r.Algorithm != algorithm(signers[i].Key) {
			t.Errorf("signature %d: %+v, want %s", i, r, want)
		}
	}
}

// TestVerifyWithResolver: *dns.Resolver against a DNS server serves the
// keys, and its NXDOMAIN and SERVFAIL become permerror and temperror.
func TestVerifyWithResolver(t *testing.T) {
	rsaS, edS, _ := testSigners(t)
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rsaRecord := PublicRecord(rsaS.Key) // longer than 255: two strings
	srv.AddRR(&mdns.TXT{Hdr: mdns.RR_Header{Name: "rsa._domainkey.example.org.", Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: 300},
		Txt: []string{rsaRecord[:200], rsaRecord[200:]}})
	srv.AddRR(&mdns.TXT{Hdr: mdns.RR_Header{Name: "ed._domainkey.example.org.", Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: 300},
		Txt: []string{PublicRecord(edS.Key)}})
	srv.ServFail("broken._domainkey.example.org")
	r, err := dns.New([]string{srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	broken := *edS
	broken.Selector = "broken"
	gone := *edS
	gone.Selector = "gone"
	msg := signedWith(t, testMessage, rsaS, edS, &broken, &gone)
	results, err := Verify(context.Background(), strings.NewReader(msg), r)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range results {
		got = append(got, r.Selector+"="+string(r.Status))
	}
	if want := "[rsa=pass ed=pass broken=temperror gone=permerror]"; fmt.Sprint(got) != want {
		t.Errorf("%v, want %s\n%+v", got, want, results)
	}
}

// TestAuthRes: results as Authentication-Results entries (RFC 8601
// §2.7.1), with values from the message unable to break the field.
func TestAuthRes(t *testing.T) {
	results, err := Verify(context.Background(), strings.NewReader(string(readTestdata(t, "rfc8463-a3.eml"))), rfcDNS())
	if err != nil {
		t.Fatal(err)
	}
	var ars []authres.Result
	for _, r := range results {
		ars = append(ars, r.AuthRes())
	}
	ars = append(ars, Result{Domain: "example.org", Identifier: "@example.org", Status: StatusFail, Reason: "body hash did not verify"}.AuthRes())
	got := authres.Format("mx.example.net", ars)
	want := "mx.example.net; dkim=pass header.d=football.example.com header.i=@football.example.com;" +
		" dkim=pass header.d=football.example.com header.i=@football.example.com;" +
		` dkim=fail reason="body hash did not verify" header.d=example.org header.i=@example.org`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	evil := Result{Domain: "ex\"am\\ple.org\r\nX-Injected: 1", Identifier: "@x\x00y", Status: StatusPermError,
		Reason: "no key for signature: dns: \"quoted\\\" name;\r\nX-Injected: 1"}
	f := authres.Format("mx.example.net", []authres.Result{evil.AuthRes()})
	if strings.ContainsAny(f, "\r\n\x00\\") || strings.Count(f, `"`)%2 != 0 || strings.Count(f, ";") != 1 {
		t.Errorf("unsafe field: %q", f)
	}
	id, parsed, err := authres.Parse(f)
	if err != nil || id != "mx.example.net" || len(parsed) != 1 {
		t.Fatalf("%q does not parse back: %v", f, err)
	}
	// (authres.Parse cuts quoted strings at spaces: compare the value)
	if d, ok := parsed[0].(*authres.DKIMResult); !ok || d.Value != authres.ResultPermError {
		t.Errorf("parsed back as %+v", parsed[0])
	}
}
