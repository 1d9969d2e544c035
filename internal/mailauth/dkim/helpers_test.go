package dkim

import (
	"bufio"
	"context"
	"crypto"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"smtpd/internal/dns"
)

// The published key records of the RFC examples (see testdata/README).
const (
	// RFC 6376 Appendix C, for brisbane._domainkey.example.com.
	rfc6376Record = "v=DKIM1; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB"
	// RFC 8463 Appendix A.2, for brisbane._domainkey.football.example.com.
	rfc8463EdRecord = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
	// RFC 8463 Appendix A.2, for test._domainkey.football.example.com.
	rfc8463RSARecord = "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
)

// fakeDNS is a Resolver from a map: a name absent from it does not
// exist (NXDOMAIN, as *dns.Resolver reports it); errs fails names with
// other errors.
type fakeDNS struct {
	txt  map[string][]string
	errs map[string]error
}

func (f *fakeDNS) TXT(ctx context.Context, name string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if err, ok := f.errs[name]; ok {
		return nil, err
	}
	if v, ok := f.txt[name]; ok {
		return v, nil
	}
	return nil, &dns.Error{Name: name, Permanent: true, Msg: "no such domain", Err: dns.ErrNoSuchDomain}
}

func (f *fakeDNS) add(name, record string) {
	if f.txt == nil {
		f.txt = map[string][]string{}
	}
	f.txt[strings.ToLower(name)] = append(f.txt[strings.ToLower(name)], record)
}

// rfcDNS serves the records of the RFC examples.
func rfcDNS() *fakeDNS {
	f := &fakeDNS{}
	f.add("brisbane._domainkey.example.com", rfc6376Record)
	f.add("brisbane._domainkey.football.example.com", rfc8463EdRecord)
	f.add("test._domainkey.football.example.com", rfc8463RSARecord)
	return f
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadTestKey(t testing.TB, name string) crypto.Signer {
	t.Helper()
	k, err := LoadKey(readTestdata(t, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return k
}

// testSigners returns a signer with the generated 2048-bit RSA key
// (selector "rsa") and one with the generated Ed25519 key (selector
// "ed") for example.org, and the DNS holding both records.
func testSigners(t testing.TB) (rsaS, edS *Signer, res *fakeDNS) {
	t.Helper()
	rsaS = &Signer{Domain: "example.org", Selector: "rsa", Key: loadTestKey(t, "rsa2048.pem")}
	edS = &Signer{Domain: "example.org", Selector: "ed", Key: loadTestKey(t, "ed25519.pem")}
	res = &fakeDNS{}
	res.add("rsa._domainkey.example.org", PublicRecord(rsaS.Key))
	res.add("ed._domainkey.example.org", PublicRecord(edS.Key))
	return rsaS, edS, res
}

// testMessage is a message of RFC 5322 form with CRLF line ends and
// folded fields, some of them recommended for signing and some not.
const testMessage = "Received: from client.example.org (client.example.org [192.0.2.7])\r\n" +
	"\tby mx.example.org with ESMTPS; Tue, 4 Nov 2025 10:00:00 +0000\r\n" +
	"From: Alice <alice@example.org>\r\n" +
	"To: Bob <bob@example.net>,\r\n" +
	"  Carol <carol@example.net>\r\n" +
	"Subject: Lunch   on\r\n" +
	"  Friday?\r\n" +
	"Date: Tue, 4 Nov 2025 10:00:00 +0000\r\n" +
	"Message-ID: <lunch.1@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"X-Mailer: test\r\n" +
	"\r\n" +
	"Hi Bob,  \r\n" +
	"\r\n" +
	"shall we meet at noon?\t\r\n" +
	".dotted line\r\n" +
	"\r\n" +
	"\r\n"

// bodyOf returns a message body of about n bytes in lines of 76.
func bodyOf(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%05d %s\r\n", i, strings.Repeat("lorem ipsum ", 6)[:68])
	}
	return b.String()
}

// signedWith returns msg with the fields of SignAll(msg, signers...)
// prepended.
func signedWith(t testing.TB, msg string, signers ...*Signer) string {
	t.Helper()
	fields, err := SignAll(strings.NewReader(msg), signers...)
	if err != nil {
		t.Fatal(err)
	}
	return fields + msg
}

// tagsOf returns the tags of the first DKIM-Signature field of msg.
func tagsOf(t testing.TB, msg string) map[string]string {
	t.Helper()
	h, err := readHeader(bufio.NewReader(strings.NewReader(msg)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range h.fields {
		if name, value := fieldName(f); strings.EqualFold(name, "DKIM-Signature") {
			tags, err := parseTags(value)
			if err != nil {
				t.Fatalf("our own signature: %v\n%s", err, f)
			}
			return tags
		}
	}
	t.Fatal("no DKIM-Signature")
	return nil
}
