package regress

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"smtpd/internal/dane"
	"smtpd/internal/dns/dnstest"
	"smtpd/internal/testcert"
)

// posttlsFingerTimeout bounds one run of posttls-finger; its own
// connect and command timeouts (-t, -T) are 30 seconds each.
const posttlsFingerTimeout = 90 * time.Second

// TestPostTLSFinger: Postfix's posttls-finger, a DANE client (RFC 7672)
// written by others, probes our receiving side. Our listener offers
// STARTTLS with a self-signed certificate for mx.posttls.test; the
// signed zone posttls.test publishes its MX and a DANE-EE TLSA record
// (3 1 1, the SHA-256 of the certificate's public key), and Debian's
// Unbound validates it for posttls-finger, whose mount namespace has
// Unbound as the resolver in resolv.conf. posttls-finger must report a
// Verified TLS connection, with the protocol version and cipher. A
// second name for the same listener, bad.posttls.test, has a TLSA
// record of another key: the same server is then not verified, so the
// first verdict rests on our certificate matching the record.
func TestPostTLSFinger(t *testing.T) {
	requireRoot(t, "a mount namespace for posttls-finger's resolv.conf and Unbound on port 53")
	finger, env := postfixTool(t, "posttls-finger")

	// the receiving side
	certDir := t.TempDir()
	os.Chmod(certDir, 0o755)
	// DANE-EE (3 1 1) matches the key whoever signed the certificate
	served, cert, key := testcert.NewCA(t).Issue(t, certDir, "mx.posttls.test")
	other, _, _ := testcert.NewCA(t).Issue(t, t.TempDir(), "mx.posttls.test") // never served
	port := FreePort(t)
	conf := strings.NewReplacer(
		`hostname       = "mx.example.test"`, `hostname       = "mx.posttls.test"`,
		`list = ["example.test"]`, `list = ["posttls.test"]`,
		`listen "mx" { address = "{{ADDR}}" }`, `listen "mx" {
  address = "{{ADDR}}"
  tls     = "starttls"
  cert    = "`+cert+`"
  key     = "`+key+`"
}`).Replace(DefaultConfig)
	StartWith(t, bin, Options{Config: conf, Addr: fmt.Sprintf("127.0.0.41:%d", port)})

	// its DNS: a signed zone behind a validating Unbound on port 53,
	// which resolv.conf cannot give another port for; spki is a TLSA
	// record's data in upper case, as posttls-finger prints it
	spki := func(c *x509.Certificate) string { return strings.ToUpper(tlsaData(t, c)) }
	goodTLSA, badTLSA := dane.TLSAName("mx.posttls.test", port), dane.TLSAName("bad.posttls.test", port)
	srv, err := dnstest.Start(
		"posttls.test. 300 IN MX 10 mx.posttls.test.",
		"mx.posttls.test. 300 IN A 127.0.0.41",
		goodTLSA+" 300 IN TLSA 3 1 1 "+spki(served),
		"bad.posttls.test. 300 IN A 127.0.0.41",
		badTLSA+" 300 IN TLSA 3 1 1 "+spki(other),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	anchor, err := srv.Sign("posttls.test.")
	if err != nil {
		t.Fatal(err)
	}
	u := dnstest.StartUnboundOnT(t, "127.0.0.98:53", dnstest.Zone{Name: "posttls.test.", Server: srv.Addr, Anchor: anchor})
	if r, err := u.Exchange(goodTLSA, mdns.TypeTLSA); err != nil || !r.AuthenticatedData || len(r.Answer) == 0 {
		t.Fatalf("unbound does not validate %s TLSA: %v\n%v", goodTLSA, err, r)
	}

	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	// glibc clears the AD bit of answers unless trust-ad is set
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.98\noptions trust-ad edns0 attempts:2 timeout:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(dest string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), posttlsFingerTimeout)
		defer cancel()
		args := []string{"--mount", "--propagation", "private", "--",
			"/bin/sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, resolv,
			finger, "-t", "30", "-T", "30", "-l", "dane", "-c", dest}
		cmd := exec.CommandContext(ctx, "unshare", args...)
		cmd.Env = env
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			err = fmt.Errorf("no end after %v: %w", posttlsFingerTimeout, ctx.Err())
		}
		t.Logf("unshare %s\n%s", strings.Join(args, " "), out)
		return string(out), err
	}

	// through the MX, as a sending MTA does: the secure MX RRset names
	// mx.posttls.test, whose secure address leads to its TLSA record
	out, err := run(fmt.Sprintf("posttls.test:%d", port))
	if err != nil {
		t.Fatalf("posttls-finger: %v\n%s", err, out)
	}
	verified := regexp.MustCompile(`(?m)^posttls-finger: Verified TLS connection established to mx\.posttls\.test\[127\.0\.0\.41\]:` +
		fmt.Sprint(port) + `: (TLSv1\.[23]) with cipher (\S+) `)
	m := verified.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("posttls-finger reports no Verified TLS connection to mx.posttls.test:\n%s", out)
	}
	t.Logf("verified by DANE: %s, cipher %s", m[1], m[2])
	// the record it matched is the one of our certificate
	if want := fmt.Sprintf("posttls-finger: mx.posttls.test[127.0.0.41]:%d: Matched DANE EE certificate at depth 0: 3 1 1 %s\n",
		port, spki(served)); !strings.Contains(out, want) {
		t.Errorf("posttls-finger output lacks %q:\n%s", want, out)
	}
	for _, bad := range []string{"Untrusted TLS", "Anonymous TLS", "Trusted TLS"} {
		if strings.Contains(out, bad) {
			t.Errorf("posttls-finger output has %q:\n%s", bad, out)
		}
	}
	if n := srv.Queries(goodTLSA, "TLSA"); n == 0 {
		t.Errorf("no TLSA query for %s reached the zone's server", goodTLSA)
	}

	// the same listener under a name whose TLSA record is another key's:
	// the handshake succeeds but DANE authentication fails
	out, err = run(fmt.Sprintf("[bad.posttls.test]:%d", port))
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("posttls-finger: %v\n%s", err, out)
	}
	if strings.Contains(out, "Verified TLS") {
		t.Errorf("posttls-finger verified bad.posttls.test, whose TLSA record is another key's:\n%s", out)
	}
	for _, want := range []string{
		fmt.Sprintf("posttls-finger: server certificate verification failed for bad.posttls.test[127.0.0.41]:%d: num=65:no matching DANE TLSA records\n", port),
		fmt.Sprintf("posttls-finger: Untrusted TLS connection established to bad.posttls.test[127.0.0.41]:%d: TLSv1.", port),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("posttls-finger output lacks %q:\n%s", want, out)
		}
	}
	if n := srv.Queries(badTLSA, "TLSA"); n == 0 {
		t.Errorf("no TLSA query for %s reached the zone's server", badTLSA)
	}
}
