package dkim

// Acceptance 1: messages we sign verify with independent implementations,
// Debian's python3-dkim and OpenDKIM's library (opendkim-testmsg), each
// with a negative control so that a verifier saying yes to everything
// would be caught.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"smtpd/internal/dns/dnstest"
)

// interopMessages are messages that exercise canonicalization: folding,
// white space runs, trailing blanks and empty lines, 8-bit text, long
// bodies, a header without a body. All have the From and Date fields
// RFC 5322 §3.6 requires: libopendkim refuses a message without Date
// as a syntax error.
func interopMessages() map[string]string {
	const date = "Date: Tue, 4 Nov 2025 10:00:00 +0000\r\n"
	return map[string]string{
		"plain": testMessage,
		"8bit": "From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\r\n" +
			"To: bob@example.net\r\nSubject: Grüße aus Köln\r\nDate: Tue, 4 Nov 2025 10:00:00 +0000\r\n" +
			"Message-ID: <k1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
			"Content-Transfer-Encoding: 8bit\r\n\r\nSchöne Grüße,\r\n\tJörg   \r\n\r\n",
		"folded": "From:\tAlice\r\n <alice@example.org>\r\nTo: bob@example.net\r\nSubject:   spaced \t out  \r\n" +
			"\t  subject\r\n" + date + "List-Id: <friends.example.org>\r\nList-Unsubscribe: <mailto:leave@example.org>\r\n" +
			"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n  leading blanks\r\nend\r\n\r\n\r\n\r\n",
		"no body":    "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: nothing\r\n" + date + "\r\n",
		"100 KB":     "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: big\r\n" + date + "\r\n" + bodyOf(100<<10),
		"no newline": "From: alice@example.org\r\nSubject: last line without CRLF\r\n" + date + "\r\nbody",
	}
}

// interopSigned returns, for every message and canonicalization, the
// message signed by the given signers, and a copy of it with the body
// changed.
func interopSigned(t *testing.T, signers ...*Signer) (names []string, good, bad map[string]string) {
	good, bad = map[string]string{}, map[string]string{}
	for name, msg := range interopMessages() {
		for _, c := range []string{"relaxed/relaxed", "simple/simple"} {
			var ss []*Signer
			for _, s := range signers {
				s := *s
				s.HeaderCanon, s.BodyCanon, _ = strings.Cut(c, "/")
				ss = append(ss, &s)
			}
			key := name + " " + c
			names = append(names, key)
			good[key] = signedWith(t, msg, ss...)
			bad[key] = good[key] + "tampered\r\n"
		}
	}
	return names, good, bad
}

func TestInteropPython(t *testing.T) {
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import dkim, nacl").CombinedOutput(); err != nil {
		t.Fatalf("python3-dkim with PyNaCl is needed (make test installs python3-dkim, which depends on python3-nacl): %v\n%s", err, out)
	}
	rsaS, edS, _ := testSigners(t)
	dir := t.TempDir()
	records := filepath.Join(dir, "records")
	err := os.WriteFile(records, []byte(fmt.Sprintf("rsa._domainkey.example.org %s\ned._domainkey.example.org %s\n",
		PublicRecord(rsaS.Key), PublicRecord(edS.Key))), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(msg string) (string, error) {
		f := filepath.Join(dir, "msg")
		if err := os.WriteFile(f, []byte(msg), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(python, "testdata/dkimverify.py", f, records).CombinedOutput()
		return string(out), err
	}
	names, good, bad := interopSigned(t, rsaS, edS)
	for _, name := range names {
		out, err := verify(good[name])
		if err != nil || strings.Count(out, " pass ") != 2 {
			t.Errorf("%s: python3-dkim does not verify our signatures: %v\n%s\n%s", name, err, out, good[name][:min(len(good[name]), 2000)])
		}
		if out, err := verify(bad[name]); err == nil || strings.Contains(out, " pass ") {
			t.Errorf("%s: python3-dkim verifies a tampered message:\n%s", name, out)
		}
	}
	// python3-dkim also agrees on the RFC vectors we verify
	recs := fmt.Sprintf("brisbane._domainkey.example.com %s\nbrisbane._domainkey.football.example.com %s\ntest._domainkey.football.example.com %s\n",
		rfc6376Record, rfc8463EdRecord, rfc8463RSARecord)
	if err := os.WriteFile(records, []byte(recs), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"rfc6376-a2.eml", "rfc8463-a3.eml"} {
		if out, err := verify(string(readTestdata(t, f))); err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
}

// TestInteropOpenDKIM runs opendkim-testmsg, which verifies the message
// on its standard input with libopendkim. It has no option for test
// keys (its man page lists only -C -d -K -k -s -t, and -d -k -s are for
// signing): the library asks the resolver of /etc/resolv.conf. So the
// test serves the keys from a DNS server on port 53 of a loopback
// address and runs the program in a mount namespace where resolv.conf
// names that server, which takes root (as the regress tests do).
func TestInteropOpenDKIM(t *testing.T) {
	const prog = "/usr/sbin/opendkim-testmsg"
	if _, err := os.Stat(prog); err != nil {
		t.Fatalf("%s: %v (make test installs opendkim-tools)", prog, err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("opendkim-testmsg resolves keys only through resolv.conf: a mount namespace for it and a DNS server on port 53 need root (make test runs as root in CI)")
	}
	rsaS, edS, _ := testSigners(t)
	srv, ip := startDNS53(t)
	defer srv.Close()
	for _, s := range []*Signer{rsaS, edS} {
		record := PublicRecord(s.Key)
		var strs []string // character-strings of at most 255 octets
		for len(record) > 255 {
			strs, record = append(strs, record[:255]), record[255:]
		}
		srv.AddRR(&mdns.TXT{Hdr: mdns.RR_Header{Name: s.Selector + "._domainkey.example.org.", Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: 300},
			Txt: append(strs, record)})
	}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+ip+"\noptions attempts:1 timeout:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	verify := func(msg string) (string, error) {
		cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--",
			"/bin/sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, resolv, prog)
		cmd.Stdin = strings.NewReader(msg)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// one signature a message: opendkim-testmsg reports one result
	for _, s := range []*Signer{rsaS, edS} {
		names, good, bad := interopSigned(t, s)
		for _, name := range names {
			if out, err := verify(good[name]); err != nil || out != "" {
				t.Errorf("%s %s: opendkim-testmsg does not verify our signature: %v\n%s", algorithm(s.Key), name, err, out)
			}
			if out, err := verify(bad[name]); err == nil || !strings.Contains(out, "dkim_eom(): Bad signature") {
				t.Errorf("%s %s: opendkim-testmsg verifies a tampered message: %s", algorithm(s.Key), name, out)
			}
		}
		if n := srv.Queries(s.Selector+"._domainkey.example.org", "TXT"); n == 0 {
			t.Errorf("opendkim-testmsg did not ask our DNS server for %s", s.Selector)
		}
	}
}

// startDNS53 starts a test DNS server on port 53 of a loopback address
// no other test is likely to use, as resolv.conf has no port.
func startDNS53(t *testing.T) (*dnstest.Server, string) {
	var last error
	for range 10 {
		ip := fmt.Sprintf("127.53.%d.%d", rand.IntN(256), 1+rand.IntN(254))
		srv, err := dnstest.StartOn(ip + ":53")
		if err == nil {
			return srv, ip
		}
		last = err
	}
	t.Fatalf("no DNS server on port 53: %v", last)
	return nil, ""
}
