package dane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"smtpd/internal/tlsrpt"
)

// testNow is the verification time of the tests.
func testNow() time.Time { return time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC) }

// issuer is a CA certificate with its key.
type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// testPKI holds the certificates the tests present.
type testPKI struct {
	ca, inter, oldInter, oldCA, impostor issuer

	leaf      *x509.Certificate // mx.example.org, issued by inter
	expired   *x509.Certificate // mx.example.org, expired, issued by inter
	other     *x509.Certificate // other.example.net, issued by inter
	wild      *x509.Certificate // *.example.org, issued by inter
	cnOnly    *x509.Certificate // CN mx.example.org, no SAN
	cnAndSAN  *x509.Certificate // CN mx.example.org, SAN other.example.net
	underOld  *x509.Certificate // mx.example.org, issued by the expired oldInter
	underOldC *x509.Certificate // mx.example.org, issued by the expired oldCA
	forged    *x509.Certificate // mx.example.org, issued by impostor, which has inter's name
	underLeaf *x509.Certificate // mx.example.org, issued by the leaf key (no CA)
}

func newCert(t testing.TB, tmpl *x509.Certificate, parent *issuer) issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber, err = rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return issuer{c, key}
}

func caTmpl(cn string, notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
}

func leafTmpl(cn string, dnsNames []string, notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dnsNames,
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	now := testNow()
	year := 365 * 24 * time.Hour
	from, until := now.Add(-year), now.Add(year)
	p := &testPKI{}
	p.ca = newCert(t, caTmpl("Test Root", from, now.Add(10*year)), nil)
	p.inter = newCert(t, caTmpl("Test Intermediate", from, now.Add(5*year)), &p.ca)
	p.oldInter = newCert(t, caTmpl("Old Intermediate", from, now.Add(-time.Hour)), &p.ca)
	p.oldCA = newCert(t, caTmpl("Old Root", now.Add(-2*year), now.Add(-year/2)), nil)
	p.impostor = newCert(t, caTmpl("Test Intermediate", from, until), nil)

	mx := []string{"mx.example.org"}
	leaf := newCert(t, leafTmpl("mx.example.org", mx, from, until), &p.inter)
	p.leaf = leaf.cert
	p.expired = newCert(t, leafTmpl("mx.example.org", mx, from, now.Add(-24*time.Hour)), &p.inter).cert
	p.other = newCert(t, leafTmpl("other.example.net", []string{"other.example.net"}, from, until), &p.inter).cert
	p.wild = newCert(t, leafTmpl("*.example.org", []string{"*.example.org"}, from, until), &p.inter).cert
	p.cnOnly = newCert(t, leafTmpl("mx.example.org", nil, from, until), &p.inter).cert
	p.cnAndSAN = newCert(t, leafTmpl("mx.example.org", []string{"other.example.net"}, from, until), &p.inter).cert
	p.underOld = newCert(t, leafTmpl("mx.example.org", mx, from, until), &p.oldInter).cert
	p.underOldC = newCert(t, leafTmpl("mx.example.org", mx, from, until), &p.oldCA).cert
	p.forged = newCert(t, leafTmpl("mx.example.org", mx, from, until), &p.impostor).cert
	p.underLeaf = newCert(t, leafTmpl("mx.example.org", mx, from, until), &leaf).cert
	return p
}

// tlsa makes a TLSA record for cert.
func tlsa(t testing.TB, usage, selector, mtype uint8, cert *x509.Certificate) *dns.TLSA {
	t.Helper()
	data, err := Association(cert, selector, mtype)
	if err != nil {
		t.Fatal(err)
	}
	return raw(usage, selector, mtype, hex.EncodeToString(data))
}

// raw makes a TLSA record with the given hex data.
func raw(usage, selector, mtype uint8, data string) *dns.TLSA {
	return &dns.TLSA{
		Hdr:          dns.RR_Header{Name: "_25._tcp.mx.example.org.", Rrtype: dns.TypeTLSA, Class: dns.ClassINET, Ttl: 300},
		Usage:        usage,
		Selector:     selector,
		MatchingType: mtype,
		Certificate:  data,
	}
}

func TestVerify(t *testing.T) {
	p := newPKI(t)
	mx := []string{"mx.example.org"}
	full := []*x509.Certificate{p.leaf, p.inter.cert, p.ca.cert}
	noRoot := []*x509.Certificate{p.leaf, p.inter.cert}
	chain := func(leaf *x509.Certificate) []*x509.Certificate {
		return []*x509.Certificate{leaf, p.inter.cert, p.ca.cert}
	}
	recs := func(rr ...*dns.TLSA) []*dns.TLSA { return rr }

	tests := []struct {
		name    string
		records []*dns.TLSA
		chain   []*x509.Certificate
		names   []string
		kind    Kind          // 0: authenticated
		msg     string        // part of the error message
		shift   time.Duration // added to testNow for the check
	}{
		// DANE-EE(3), RFC 7672 §3.1.1.
		{name: "3 1 1", records: recs(tlsa(t, 3, 1, 1, p.leaf)), chain: full, names: mx},
		{name: "3 0 1", records: recs(tlsa(t, 3, 0, 1, p.leaf)), chain: full, names: mx},
		{name: "3 1 2", records: recs(tlsa(t, 3, 1, 2, p.leaf)), chain: full, names: mx},
		{name: "3 0 0", records: recs(tlsa(t, 3, 0, 0, p.leaf)), chain: full, names: mx},
		{name: "3 1 0", records: recs(tlsa(t, 3, 1, 0, p.leaf)), chain: full, names: mx},
		{name: "3 1 1 leaf alone", records: recs(tlsa(t, 3, 1, 1, p.leaf)), chain: []*x509.Certificate{p.leaf}},
		{name: "3 1 1 mismatch", records: recs(tlsa(t, 3, 1, 1, p.other)), chain: full, names: mx,
			kind: KindNoMatch, msg: "no TLSA record matches the certificate chain (3 1 1 "},
		{name: "3 1 1 of an issuer does not match", records: recs(tlsa(t, 3, 1, 1, p.inter.cert)), chain: full, names: mx,
			kind: KindNoMatch},
		{name: "3 x x ignores expiry", records: recs(tlsa(t, 3, 1, 1, p.expired)), chain: chain(p.expired), names: mx},
		{name: "3 x x ignores names", records: recs(tlsa(t, 3, 0, 1, p.other)), chain: chain(p.other), names: mx},
		{name: "3 x x needs no names", records: recs(tlsa(t, 3, 0, 1, p.other)), chain: chain(p.other)},
		{name: "3 x x ignores the chain", records: recs(tlsa(t, 3, 1, 1, p.forged)), chain: chain(p.forged), names: mx},

		// DANE-TA(2), RFC 7672 §3.1.2.
		{name: "2 1 1 root in chain", records: recs(tlsa(t, 2, 1, 1, p.ca.cert)), chain: full, names: mx},
		{name: "2 0 1 root in chain", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)), chain: full, names: mx},
		{name: "2 0 1 intermediate", records: recs(tlsa(t, 2, 0, 1, p.inter.cert)), chain: full, names: mx},
		{name: "2 1 2 intermediate", records: recs(tlsa(t, 2, 1, 2, p.inter.cert)), chain: noRoot, names: mx},
		{name: "2 0 0 intermediate", records: recs(tlsa(t, 2, 0, 0, p.inter.cert)), chain: noRoot, names: mx},
		{name: "2 1 0 intermediate", records: recs(tlsa(t, 2, 1, 0, p.inter.cert)), chain: noRoot, names: mx},
		{name: "2 x x chain out of order", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)),
			chain: []*x509.Certificate{p.leaf, p.ca.cert, p.inter.cert}, names: mx},
		{name: "2 x x second name", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)), chain: full,
			names: []string{"mail.example.com", "mx.example.org"}},
		{name: "2 x x name case and dot", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)), chain: full,
			names: []string{"MX.Example.ORG."}},
		{name: "2 x x wrong name", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)), chain: chain(p.other), names: mx,
			kind: KindNameMismatch, msg: "certificate name other.example.net does not match mx.example.org"},
		{name: "2 x x no names", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)), chain: full,
			kind: KindNameMismatch, msg: "no reference name"},
		{name: "2 x x CN when no SAN", records: recs(tlsa(t, 2, 1, 1, p.inter.cert)), chain: chain(p.cnOnly), names: mx},
		{name: "2 x x CN ignored with SAN", records: recs(tlsa(t, 2, 1, 1, p.inter.cert)), chain: chain(p.cnAndSAN), names: mx,
			kind: KindNameMismatch},
		{name: "2 x x wildcard", records: recs(tlsa(t, 2, 1, 1, p.ca.cert)), chain: chain(p.wild), names: mx},
		{name: "2 x x wildcard one label only", records: recs(tlsa(t, 2, 1, 1, p.ca.cert)), chain: chain(p.wild),
			names: []string{"a.b.example.org"}, kind: KindNameMismatch},
		{name: "2 x x wildcard not the parent", records: recs(tlsa(t, 2, 1, 1, p.ca.cert)), chain: chain(p.wild),
			names: []string{"example.org"}, kind: KindNameMismatch},
		{name: "2 x x TA not in chain", records: recs(tlsa(t, 2, 1, 1, p.ca.cert)), chain: noRoot, names: mx,
			kind: KindNoMatch, msg: "no TLSA record matches"},
		{name: "2 1 0 bare key not in chain", records: recs(tlsa(t, 2, 1, 0, p.ca.cert)), chain: noRoot, names: mx},
		{name: "2 0 0 certificate not in chain", records: recs(tlsa(t, 2, 0, 0, p.ca.cert)), chain: noRoot, names: mx},
		{name: "2 1 0 bare key, leaf alone", records: recs(tlsa(t, 2, 1, 0, p.inter.cert)), chain: []*x509.Certificate{p.leaf}, names: mx},
		{name: "2 1 0 bare key, wrong name", records: recs(tlsa(t, 2, 1, 0, p.ca.cert)),
			chain: []*x509.Certificate{p.other, p.inter.cert}, names: mx, kind: KindNameMismatch},
		{name: "2 x x expired leaf", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)), chain: chain(p.expired), names: mx,
			kind: KindExpired, msg: "certificate mx.example.org expired on 2026-05-31"},
		{name: "2 x x not yet valid", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)), chain: full, names: mx,
			kind: KindExpired, msg: "certificate mx.example.org is not valid before", shift: -2 * 365 * 24 * time.Hour},
		{name: "2 x x expired intermediate", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)),
			chain: []*x509.Certificate{p.underOld, p.oldInter.cert, p.ca.cert}, names: mx,
			kind: KindExpired, msg: `intermediate certificate "Old Intermediate" expired`},
		{name: "2 x x expired TA is not checked", records: recs(tlsa(t, 2, 0, 1, p.oldInter.cert)),
			chain: []*x509.Certificate{p.underOld, p.oldInter.cert, p.ca.cert}, names: mx},
		{name: "2 x x expired root TA", records: recs(tlsa(t, 2, 1, 1, p.oldCA.cert)),
			chain: []*x509.Certificate{p.underOldC, p.oldCA.cert}, names: mx},
		{name: "2 x x name checked before dates", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)), chain: chain(p.expired),
			names: []string{"mx.example.com"}, kind: KindNameMismatch},
		{name: "2 x x forged signature", records: recs(tlsa(t, 2, 0, 1, p.ca.cert)), chain: chain(p.forged), names: mx,
			kind: KindNoMatch, msg: "does not chain to the DANE-TA trust anchor (2 0 1 "},
		{name: "2 x x signed by the impostor's twin", records: recs(tlsa(t, 2, 0, 1, p.inter.cert)),
			chain: []*x509.Certificate{p.forged, p.inter.cert}, names: mx, kind: KindNoMatch},
		{name: "2 x x issuer is not a CA", records: recs(tlsa(t, 2, 0, 1, p.leaf)),
			chain: []*x509.Certificate{p.underLeaf, p.leaf}, names: mx, kind: KindNoMatch},
		{name: "2 x x never matches the leaf", records: recs(tlsa(t, 2, 0, 1, p.leaf)), chain: full, names: mx,
			kind: KindNoMatch},

		// Usability, RFC 7672 §3.1.3.
		{name: "usage 0 and 1 only", records: recs(tlsa(t, 0, 0, 1, p.ca.cert), tlsa(t, 1, 1, 1, p.leaf)), chain: full, names: mx,
			kind: KindNoUsable, msg: "none of the 2 TLSA records is usable for SMTP (0 0 1, 1 1 1)"},
		{name: "no records", chain: full, names: mx, kind: KindNoUsable, msg: "no TLSA records"},
		{name: "short digest", records: recs(raw(3, 1, 1, hex.EncodeToString(make([]byte, 31)))), chain: full, names: mx,
			kind: KindNoUsable, msg: "the TLSA record (3 1 1) is not usable for SMTP"},
		{name: "SHA2-512 length with SHA2-256 type", records: recs(raw(3, 1, 1, hex.EncodeToString(make([]byte, 64)))), chain: full,
			kind: KindNoUsable},
		{name: "unknown selector", records: recs(raw(3, 2, 1, hex.EncodeToString(make([]byte, 32)))), chain: full,
			kind: KindNoUsable},
		{name: "unknown matching type", records: recs(raw(3, 1, 3, hex.EncodeToString(make([]byte, 32)))), chain: full,
			kind: KindNoUsable},
		{name: "bad hex", records: recs(raw(3, 1, 1, strings.Repeat("zz", 32))), chain: full, kind: KindNoUsable},
		{name: "PKIX-EE matching is ignored", records: recs(tlsa(t, 1, 1, 1, p.leaf), tlsa(t, 3, 1, 1, p.other)), chain: full,
			kind: KindNoMatch},

		// Several records.
		{name: "one of several matches", records: recs(
			tlsa(t, 3, 1, 1, p.other), tlsa(t, 2, 0, 1, p.oldCA.cert), raw(3, 1, 1, "00"), tlsa(t, 3, 1, 1, p.leaf)),
			chain: full, names: mx},
		{name: "EE match wins over TA name mismatch", records: recs(tlsa(t, 2, 0, 1, p.ca.cert), tlsa(t, 3, 1, 1, p.other)),
			chain: chain(p.other), names: mx},
		{name: "TA match wins over EE mismatch", records: recs(tlsa(t, 3, 1, 1, p.other), tlsa(t, 2, 0, 1, p.ca.cert)),
			chain: full, names: mx},
		{name: "none of several", records: recs(tlsa(t, 3, 1, 1, p.other), tlsa(t, 3, 1, 2, p.other), tlsa(t, 2, 1, 1, p.oldCA.cert),
			tlsa(t, 3, 0, 1, p.other)), chain: full, names: mx,
			kind: KindNoMatch, msg: "and 1 more; the server certificate has 3 1 1 "},

		// The chain.
		{name: "empty chain", records: recs(tlsa(t, 3, 1, 1, p.leaf)), kind: KindNoMatch, msg: "no certificate"},
		{name: "nil in chain", records: recs(tlsa(t, 3, 1, 1, p.leaf)), chain: []*x509.Certificate{p.leaf, nil}, kind: KindNoMatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.records, tt.chain, tt.names, testNow().Add(tt.shift))
			if tt.kind == 0 {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("Verify = %v, want an *Error of kind %d", err, tt.kind)
			}
			if de.Kind != tt.kind {
				t.Errorf("Verify kind = %d (%v), want %d", de.Kind, err, tt.kind)
			}
			if !strings.Contains(de.Msg, tt.msg) {
				t.Errorf("Verify = %q, want it to contain %q", de.Msg, tt.msg)
			}
			t.Log(err)
		})
	}
}

func TestUsable(t *testing.T) {
	d32 := hex.EncodeToString(make([]byte, 32))
	d64 := hex.EncodeToString(make([]byte, 64))
	tests := []struct {
		rr   *dns.TLSA
		want bool
	}{
		{raw(3, 1, 1, d32), true},
		{raw(3, 1, 1, strings.ToUpper("ab"+d32[2:])), true},
		{raw(2, 0, 2, d64), true},
		{raw(3, 0, 0, "3082"), true},
		{raw(0, 1, 1, d32), false},
		{raw(1, 1, 1, d32), false},
		{raw(4, 1, 1, d32), false},
		{raw(255, 1, 1, d32), false},
		{raw(3, 2, 1, d32), false},
		{raw(3, 1, 3, d32), false},
		{raw(3, 1, 255, d32), false},
		{raw(3, 1, 1, d64), false},
		{raw(3, 1, 2, d32), false},
		{raw(3, 1, 1, d32[2:]), false},
		{raw(3, 1, 1, d32+"0"), false},
		{raw(3, 1, 0, ""), false},
		{raw(3, 1, 1, "xy"+d32[2:]), false},
		{nil, false},
	}
	var all, want []*dns.TLSA
	for _, tt := range tests {
		all = append(all, tt.rr)
		got := Usable([]*dns.TLSA{tt.rr})
		if (len(got) == 1) != tt.want {
			t.Errorf("Usable(%v) = %v, want usable %v", tt.rr, got, tt.want)
		}
		if tt.want {
			want = append(want, tt.rr)
		}
	}
	got := Usable(all)
	if len(got) != len(want) {
		t.Fatalf("Usable(all) kept %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("Usable(all)[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	if got := Usable(nil); got != nil {
		t.Errorf("Usable(nil) = %v", got)
	}
}

func TestMatchName(t *testing.T) {
	tests := []struct {
		id, name string
		want     bool
	}{
		{"mx.example.org", "mx.example.org", true},
		{"MX.example.org.", "mx.EXAMPLE.org", true},
		{"mx.example.org", "mx2.example.org", false},
		{"mx.example.org", "example.org", false},
		{"*.example.org", "mx.example.org", true},
		{"*.example.org", "MX.Example.Org.", true},
		{"*.example.org", "a.b.example.org", false},
		{"*.example.org", "example.org", false},
		{"*.example.org", ".example.org", false},
		{"*.org", "example.org", false},
		{"*", "mx", false},
		{"mx*.example.org", "mx1.example.org", false},
		{"*mx.example.org", "amx.example.org", false},
		{"mx.*.org", "mx.example.org", false},
		{"*.*.org", "a.b.org", false},
		{"*.example.org", "*.example.org", false},
		{"", "", false},
		{"mx.example.org", "", false},
	}
	for _, tt := range tests {
		if got := matchName(tt.id, tt.name); got != tt.want {
			t.Errorf("matchName(%q, %q) = %v, want %v", tt.id, tt.name, got, tt.want)
		}
	}
}

func TestAssociation(t *testing.T) {
	p := newPKI(t)
	for _, tt := range []struct {
		sel, mt uint8
		size    int
	}{
		{0, 0, len(p.leaf.Raw)},
		{1, 0, len(p.leaf.RawSubjectPublicKeyInfo)},
		{0, 1, 32},
		{1, 1, 32},
		{0, 2, 64},
		{1, 2, 64},
	} {
		a, err := Association(p.leaf, tt.sel, tt.mt)
		if err != nil || len(a) != tt.size {
			t.Errorf("Association(leaf, %d, %d) = %d bytes, %v; want %d bytes", tt.sel, tt.mt, len(a), err, tt.size)
		}
	}
	// The full data is a copy: changing it leaves the certificate alone.
	a, _ := Association(p.leaf, 1, 0)
	a[0] ^= 0xff
	if a[0] == p.leaf.RawSubjectPublicKeyInfo[0] {
		t.Error("Association returned the certificate's own bytes")
	}
	// Agrees with the DNS library's own computation.
	want, err := dns.CertificateToDANE(1, 1, p.leaf)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := Association(p.leaf, 1, 1); hex.EncodeToString(got) != want {
		t.Errorf("Association(leaf, 1, 1) = %x, want %s", got, want)
	}
	for _, tt := range []struct {
		cert    *x509.Certificate
		sel, mt uint8
	}{
		{nil, 1, 1},
		{p.leaf, 2, 1},
		{p.leaf, 1, 3},
		{&x509.Certificate{}, 1, 1},
	} {
		if _, err := Association(tt.cert, tt.sel, tt.mt); err == nil {
			t.Errorf("Association(%v, %d, %d) succeeded", tt.cert != nil, tt.sel, tt.mt)
		}
	}
}

func TestTLSAName(t *testing.T) {
	for _, tt := range []struct {
		host string
		port int
		want string
	}{
		{"mx.example.org", 25, "_25._tcp.mx.example.org."},
		{"mx.example.org.", 25, "_25._tcp.mx.example.org."},
		{"smtp.example.net", 465, "_465._tcp.smtp.example.net."},
	} {
		if got := TLSAName(tt.host, tt.port); got != tt.want {
			t.Errorf("TLSAName(%q, %d) = %q, want %q", tt.host, tt.port, got, tt.want)
		}
	}
}

func TestResultType(t *testing.T) {
	for k, want := range map[Kind]tlsrpt.ResultType{
		KindNoUsable:     "tlsa-invalid",
		KindNoMatch:      "validation-failure",
		KindNameMismatch: "certificate-host-mismatch",
		KindExpired:      "certificate-expired",
		0:                "validation-failure",
	} {
		if got := k.ResultType(); got != want {
			t.Errorf("Kind(%d).ResultType() = %q, want %q", k, got, want)
		}
	}
}
