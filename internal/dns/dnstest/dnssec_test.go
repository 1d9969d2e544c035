package dnstest

import (
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// tlsa is a DANE-EE(3) SPKI(1) SHA-256(1) record, as RFC 7672 section
// 3.1.1 recommends for MX hosts; the digest is arbitrary.
const tlsa = "_25._tcp.mx.secure.test. 300 IN TLSA 3 1 1 " +
	"0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6"

// TestUnboundValidates runs Debian's Unbound as a validating resolver in
// front of a test server with a signed zone, an unsigned one and a
// signed one with a corrupted signature, and checks the answers' AD bit
// and rcode: what DANE's decisions rest on (RFC 7672 section 2.2).
func TestUnboundValidates(t *testing.T) {
	srv, err := Start(
		"www.secure.test. 300 IN A 192.0.2.1",
		"mx.secure.test. 300 IN A 192.0.2.25",
		tlsa,
		"alias.secure.test. 300 IN CNAME www.secure.test.",
		"www.insecure.test. 300 IN A 192.0.2.2",
		"www.bogus.test. 300 IN A 192.0.2.3",
		"ok.bogus.test. 300 IN A 192.0.2.4",
	)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	secure, err := srv.Sign("secure.test.")
	if err != nil {
		t.Fatal(err)
	}
	bogus, err := srv.Sign("bogus.test.")
	if err != nil {
		t.Fatal(err)
	}
	srv.Corrupt("www.bogus.test.", mdns.TypeA)
	u := StartUnboundT(t,
		Zone{Name: "secure.test.", Server: srv.Addr, Anchor: secure},
		Zone{Name: "insecure.test.", Server: srv.Addr},
		Zone{Name: "bogus.test.", Server: srv.Addr, Anchor: bogus},
	)

	for _, c := range []struct {
		test   string
		name   string
		qtype  uint16
		rcodes []int // any of them
		answer uint16
		ad     bool
	}{
		{"secure A", "www.secure.test.", mdns.TypeA, []int{mdns.RcodeSuccess}, mdns.TypeA, true},
		{"secure TLSA", "_25._tcp.mx.secure.test.", mdns.TypeTLSA, []int{mdns.RcodeSuccess}, mdns.TypeTLSA, true},
		{"secure CNAME", "alias.secure.test.", mdns.TypeA, []int{mdns.RcodeSuccess}, mdns.TypeA, true},
		{"secure DNSKEY", "secure.test.", mdns.TypeDNSKEY, []int{mdns.RcodeSuccess}, mdns.TypeDNSKEY, true},
		{"secure NODATA", "_25._tcp.www.secure.test.", mdns.TypeTLSA, []int{mdns.RcodeSuccess}, 0, true},
		{"secure NODATA at a name with an A", "mx.secure.test.", mdns.TypeTLSA, []int{mdns.RcodeSuccess}, 0, true},
		{"secure NODATA at the apex", "secure.test.", mdns.TypeMX, []int{mdns.RcodeSuccess}, 0, true},
		{"secure NXDOMAIN", "nowhere.secure.test.", mdns.TypeA, []int{mdns.RcodeNameError, mdns.RcodeSuccess}, 0, true},
		{"insecure A", "www.insecure.test.", mdns.TypeA, []int{mdns.RcodeSuccess}, mdns.TypeA, false},
		{"insecure NXDOMAIN", "nowhere.insecure.test.", mdns.TypeA, []int{mdns.RcodeNameError}, 0, false},
		{"bogus A", "www.bogus.test.", mdns.TypeA, []int{mdns.RcodeServerFailure}, 0, false},
		{"valid A in the zone with a bogus RRset", "ok.bogus.test.", mdns.TypeA, []int{mdns.RcodeSuccess}, mdns.TypeA, true},
	} {
		t.Run(c.test, func(t *testing.T) {
			r, err := u.Exchange(c.name, c.qtype)
			if err != nil {
				t.Fatalf("%s %s: %v; unbound says:\n%s", c.name, mdns.TypeToString[c.qtype], err, u.Reasons(c.name))
			}
			var got []uint16
			for _, rr := range r.Answer {
				got = append(got, rr.Header().Rrtype)
			}
			switch {
			case !slices.Contains(c.rcodes, r.Rcode),
				r.AuthenticatedData != c.ad,
				c.answer == 0 && len(r.Answer) > 0,
				c.answer != 0 && !slices.Contains(got, c.answer):
				t.Fatalf("%s %s: got %s, AD %v, answer types %v; want %v, AD %v, answer %s\n%s\nunbound says:\n%s",
					c.name, mdns.TypeToString[c.qtype], mdns.RcodeToString[r.Rcode], r.AuthenticatedData, got,
					rcodeNames(c.rcodes), c.ad, mdns.TypeToString[c.answer], r, u.Reasons(c.name))
			}
		})
	}
	// The bogus answer's reason is in the log, for failing tests to show.
	if reasons := u.Reasons("www.bogus.test."); !strings.Contains(reasons, "validation failure <www.bogus.test. A IN>") {
		t.Errorf("no validation failure logged for www.bogus.test.:\n%s", reasons)
	}
}

func rcodeNames(rcodes []int) string {
	var names []string
	for _, r := range rcodes {
		names = append(names, mdns.RcodeToString[r])
	}
	return strings.Join(names, " or ")
}

// TestSignedAnswers checks the signed zone's answers on the wire,
// without a validator: RRSIGs that verify with the zone's DNSKEY, the
// compact denial NSEC records, DNSSEC records only with the DO bit,
// corrupted signatures that fail, and unsigned zones as before.
func TestSignedAnswers(t *testing.T) {
	srv, err := Start("www.secure.test. 300 IN A 192.0.2.1", "a.b.secure.test. 300 IN A 192.0.2.5",
		"www.plain.test. 300 IN A 192.0.2.2", tlsa)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	anchor, err := srv.Sign("Secure.Test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(anchor, "secure.test. DS ") || !strings.Contains(anchor, " 13 2 ") {
		t.Errorf("anchor %q", anchor)
	}
	if _, err := srv.Sign("secure.test."); err == nil {
		t.Error("signing a zone twice succeeded")
	}
	srv.Corrupt("_25._tcp.mx.secure.test.", mdns.TypeTLSA)

	ask := func(name string, qtype uint16, do bool) *mdns.Msg {
		t.Helper()
		m := new(mdns.Msg)
		m.SetQuestion(name, qtype)
		if do {
			m.SetEdns0(1232, true)
		}
		r, err := mdns.Exchange(m, srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	keys := ask("secure.test.", mdns.TypeDNSKEY, true)
	var key *mdns.DNSKEY
	for _, rr := range keys.Answer {
		if k, ok := rr.(*mdns.DNSKEY); ok {
			key = k
		}
	}
	if key == nil || !keys.Authoritative {
		t.Fatalf("DNSKEY answer:\n%s", keys)
	}
	if ds := key.ToDS(mdns.SHA256); !strings.Contains(anchor, strings.ToUpper(ds.Digest)) {
		t.Errorf("anchor %q is not the DS of %s", anchor, key)
	}
	// verify checks that each RRset in rrs has an RRSIG that verifies,
	// or fails to when bad.
	verify := func(rrs []mdns.RR, bad bool) {
		t.Helper()
		n := 0
		for _, rr := range rrs {
			sig, ok := rr.(*mdns.RRSIG)
			if !ok {
				continue
			}
			n++
			var set []mdns.RR
			for _, r := range rrs {
				if r.Header().Rrtype == sig.TypeCovered && strings.EqualFold(r.Header().Name, sig.Hdr.Name) {
					set = append(set, r)
				}
			}
			if err := sig.Verify(key, set); (err != nil) != bad || !sig.ValidityPeriod(time.Time{}) {
				t.Errorf("%s: verify: %v (want failure: %v)", sig, err, bad)
			}
		}
		if n == 0 {
			t.Errorf("no RRSIG in %v", rrs)
		}
	}
	verify(keys.Answer, false)
	verify(ask("www.secure.test.", mdns.TypeA, true).Answer, false)
	verify(ask("_25._tcp.mx.secure.test.", mdns.TypeTLSA, true).Answer, true)

	for _, c := range []struct {
		name   string
		qtype  uint16
		types  []uint16 // the NSEC's bitmap
		rcode  int      // without DO
		nodata bool
	}{
		{"www.secure.test.", mdns.TypeTLSA, []uint16{mdns.TypeA, mdns.TypeRRSIG, mdns.TypeNSEC}, mdns.RcodeSuccess, true},
		{"secure.test.", mdns.TypeA, []uint16{mdns.TypeSOA, mdns.TypeRRSIG, mdns.TypeNSEC, mdns.TypeDNSKEY}, mdns.RcodeSuccess, true},
		{"nowhere.secure.test.", mdns.TypeA, []uint16{mdns.TypeRRSIG, mdns.TypeNSEC, mdns.TypeNXNAME}, mdns.RcodeNameError, false},
	} {
		r := ask(c.name, c.qtype, true)
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 4 || r.IsEdns0() == nil || !r.IsEdns0().Do() {
			t.Errorf("%s %s with DO:\n%s", c.name, mdns.TypeToString[c.qtype], r)
			continue
		}
		verify(r.Ns, false)
		for _, rr := range r.Ns {
			if nsec, ok := rr.(*mdns.NSEC); ok {
				if nsec.Hdr.Name != c.name || nsec.NextDomain != `\000.`+c.name || !slices.Equal(nsec.TypeBitMap, c.types) {
					t.Errorf("%s %s: NSEC %s, want bitmap %v", c.name, mdns.TypeToString[c.qtype], nsec, c.types)
				}
			}
		}
		if r := ask(c.name, c.qtype, false); r.Rcode != c.rcode || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != mdns.TypeSOA {
			t.Errorf("%s %s without DO:\n%s", c.name, mdns.TypeToString[c.qtype], r)
		}
	}

	if r := ask("www.secure.test.", mdns.TypeA, false); len(r.Answer) != 1 || r.IsEdns0() != nil {
		t.Errorf("without DO, want one A and no OPT:\n%s", r)
	}
	// An empty non-terminal answers NXDOMAIN by default, as in unsigned
	// zones, and NODATA once EmptyNonTerminals asks for it.
	if r := ask("b.secure.test.", mdns.TypeA, false); r.Rcode != mdns.RcodeNameError {
		t.Errorf("empty non-terminal:\n%s", r)
	}
	srv.EmptyNonTerminals(true)
	if r := ask("b.secure.test.", mdns.TypeA, false); r.Rcode != mdns.RcodeSuccess {
		t.Errorf("empty non-terminal with EmptyNonTerminals:\n%s", r)
	}
	// Unsigned zones answer as before, DO or not.
	for _, do := range []bool{false, true} {
		if r := ask("www.plain.test.", mdns.TypeA, do); len(r.Answer) != 1 || len(r.Ns) != 0 || len(r.Extra) != 0 {
			t.Errorf("unsigned zone, DO %v:\n%s", do, r)
		}
		if r := ask("nowhere.plain.test.", mdns.TypeA, do); r.Rcode != mdns.RcodeNameError || len(r.Ns) != 0 {
			t.Errorf("unsigned zone, DO %v:\n%s", do, r)
		}
	}
}
