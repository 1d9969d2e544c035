package regress

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	mdns "github.com/miekg/dns"

	"smtpd/internal/dane"
	"smtpd/internal/dns/dnstest"
	"smtpd/internal/testcert"
)

// tlsWorld is a DNSSEC-validating Unbound in front of a test DNS server
// with signed and unsigned zones, one receiving smtpd listening on
// several addresses with certificates of a test CA, an HTTPS server of
// MTA-STS policies, a proxy that strips STARTTLS, and a sending smtpd
// that trusts the test CA.
//
//	127.0.0.51 mx.secure.test       signed, TLSA 3 1 1 matches
//	127.0.0.52 mx.badtlsa.test      signed, TLSA does not match
//	127.0.0.53 mx.insecure.test     unsigned, a wrong TLSA ignored
//	127.0.0.54 mx.bogus.test        signed, TLSA signature broken
//	127.0.0.55 mx.sts-good.test     certificate for its name
//	127.0.0.56 mx.sts-mismatch.test certificate for another name
//	127.0.0.57 mx.sts-strip.test    proxy to .55 deleting STARTTLS
//	127.0.0.58 mta-sts.*            HTTPS policy server
//	127.0.0.59 mx.reports.test      plain text, takes the TLS reports
//
// dane-mixed.test has mx1 (TLSA mismatch, at .52) before mx2 (TLSA
// match, at .51); it and sts-testing.test ask for TLS reports.
type tlsWorld struct {
	dns     *dnstest.Server
	unbound *dnstest.Unbound
	rx, out *Daemon
	caFile  string
}

// tlsaData is the association data of a DANE-EE record (3 1 1) of c:
// the SHA-256 of its public key, in hex.
func tlsaData(t *testing.T, c *x509.Certificate) string {
	t.Helper()
	data, err := dane.Association(c, dane.SelectorSPKI, dane.MatchSHA256)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(data)
}

// tlsaRecord is the DANE-EE record of c for name and port.
func tlsaRecord(t *testing.T, name string, port int, c *x509.Certificate) string {
	t.Helper()
	return fmt.Sprintf("_%d._tcp.%s. 300 IN TLSA 3 1 1 %s", port, name, tlsaData(t, c))
}

func startTLSWorld(t *testing.T) *tlsWorld {
	requireRoot(t, "listens on 127.0.0.5x")
	w := &tlsWorld{}
	port, httpsPort := FreePort(t), FreePort(t)
	certs := t.TempDir()
	os.Chmod(certs, 0o755)
	ca := testcert.NewCA(t)
	w.caFile = filepath.Join(certs, "ca.pem")
	if err := os.WriteFile(w.caFile, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	type listener struct{ ip, certName string }
	listeners := map[string]listener{
		"secure": {"127.0.0.51", "mx.secure.test"}, "badtlsa": {"127.0.0.52", "mx.badtlsa.test"},
		"insecure": {"127.0.0.53", "mx.insecure.test"}, "bogus": {"127.0.0.54", "mx.bogus.test"},
		"stsgood": {"127.0.0.55", "mx.sts-good.test"}, "stsbad": {"127.0.0.56", "other.example"},
	}
	// the certificate at .55 serves a second exchanger name
	extraNames := map[string][]string{"stsgood": {"mx2.sts-mixed.test"}}
	issued := map[string]*x509.Certificate{}
	var conf strings.Builder
	for name, l := range listeners {
		c, cert, key := ca.Issue(t, certs, append([]string{l.certName}, extraNames[name]...)...)
		issued[name] = c
		fmt.Fprintf(&conf, "listen %q {\n  address = \"%s:%d\"\n  tls = \"starttls\"\n  cert = %q\n  key = %q\n}\n", name, l.ip, port, cert, key)
	}
	other, _, _ := ca.Issue(t, certs, "unrelated.example")

	zones := []string{"secure.test", "badtlsa.test", "bogus.test", "dane-mixed.test", "insecure.test",
		"sts-good.test", "sts-mismatch.test", "sts-outside.test", "sts-testing.test", "sts-strip.test", "reports.test",
		"forced.test", "plain.test", "sts-mixed.test"}
	records := []string{
		"secure.test. 300 IN MX 10 mx.secure.test.", "mx.secure.test. 300 IN A 127.0.0.51",
		tlsaRecord(t, "mx.secure.test", port, issued["secure"]),
		"badtlsa.test. 300 IN MX 10 mx.badtlsa.test.", "mx.badtlsa.test. 300 IN A 127.0.0.52",
		tlsaRecord(t, "mx.badtlsa.test", port, other),
		"insecure.test. 300 IN MX 10 mx.insecure.test.", "mx.insecure.test. 300 IN A 127.0.0.53",
		tlsaRecord(t, "mx.insecure.test", port, other),
		"bogus.test. 300 IN MX 10 mx.bogus.test.", "mx.bogus.test. 300 IN A 127.0.0.54",
		tlsaRecord(t, "mx.bogus.test", port, issued["bogus"]),
		"dane-mixed.test. 300 IN MX 10 mx1.dane-mixed.test.", "dane-mixed.test. 300 IN MX 20 mx2.dane-mixed.test.",
		"mx1.dane-mixed.test. 300 IN A 127.0.0.52", "mx2.dane-mixed.test. 300 IN A 127.0.0.51",
		tlsaRecord(t, "mx1.dane-mixed.test", port, other), tlsaRecord(t, "mx2.dane-mixed.test", port, issued["secure"]),
		// DANE policies are the hosts': they ask for reports themselves
		`_smtp._tls.mx1.dane-mixed.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"`,
		`_smtp._tls.mx2.dane-mixed.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"`,
		// sts-mixed.test: mx1 (.56) has a certificate for another
		// name, mx2 (.55) one for its own: one report, both outcomes
		"sts-mixed.test. 300 IN MX 10 mx1.sts-mixed.test.", "sts-mixed.test. 300 IN MX 20 mx2.sts-mixed.test.",
		"mx1.sts-mixed.test. 300 IN A 127.0.0.56", "mx2.sts-mixed.test. 300 IN A 127.0.0.55",
		`_mta-sts.sts-mixed.test. 300 IN TXT "v=STSv1; id=20261126"`, "mta-sts.sts-mixed.test. 300 IN A 127.0.0.58",
		`_smtp._tls.sts-mixed.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"`,
		"reports.test. 300 IN MX 10 mx.reports.test.", "mx.reports.test. 300 IN A 127.0.0.59",
		// unsigned, with destination blocks asking for DANE, and for no TLS
		"forced.test. 300 IN MX 10 mx.forced.test.", "mx.forced.test. 300 IN A 127.0.0.53",
		"plain.test. 300 IN MX 10 mx.plain.test.", "mx.plain.test. 300 IN A 127.0.0.53",
	}
	policies := map[string]string{
		"sts-good.test":     "mode: enforce\nmx: mx.sts-good.test",
		"sts-mismatch.test": "mode: enforce\nmx: mx.sts-mismatch.test",
		"sts-outside.test":  "mode: enforce\nmx: mx.elsewhere.test",
		"sts-testing.test":  "mode: testing\nmx: mx.sts-testing.test",
		"sts-strip.test":    "mode: enforce\nmx: *.sts-strip.test",
	}
	policyHosts := []string{"mta-sts.sts-mixed.test"}
	stsIP := map[string]string{"sts-good.test": "127.0.0.55", "sts-mismatch.test": "127.0.0.56", "sts-outside.test": "127.0.0.55", "sts-testing.test": "127.0.0.56", "sts-strip.test": "127.0.0.57"}
	for d := range policies {
		records = append(records,
			fmt.Sprintf("%s. 300 IN MX 10 mx.%s.", d, d), fmt.Sprintf("mx.%s. 300 IN A %s", d, stsIP[d]),
			fmt.Sprintf(`_mta-sts.%s. 300 IN TXT "v=STSv1; id=20261126"`, d), fmt.Sprintf("mta-sts.%s. 300 IN A 127.0.0.58", d))
		policyHosts = append(policyHosts, "mta-sts."+d)
	}
	records = append(records, `_smtp._tls.sts-testing.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"`)
	var err error
	if w.dns, err = dnstest.Start(records...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.dns.Close)
	var uz []dnstest.Zone
	for _, z := range zones {
		zone := dnstest.Zone{Name: z + ".", Server: w.dns.Addr}
		if z == "secure.test" || z == "badtlsa.test" || z == "bogus.test" || z == "dane-mixed.test" {
			if zone.Anchor, err = w.dns.Sign(z + "."); err != nil {
				t.Fatal(err)
			}
		}
		uz = append(uz, zone)
	}
	w.dns.Corrupt(fmt.Sprintf("_%d._tcp.mx.bogus.test.", port), mdns.TypeTLSA)
	w.unbound = dnstest.StartUnboundT(t, uz...)

	// the MTA-STS policies, over HTTPS with a certificate of the CA
	_, hcert, hkey := ca.Issue(t, certs, policyHosts...)
	kp, err := tls.LoadX509KeyPair(hcert, hkey)
	if err != nil {
		t.Fatal(err)
	}
	hl, err := tls.Listen("tcp", fmt.Sprintf("127.0.0.58:%d", httpsPort), &tls.Config{Certificates: []tls.Certificate{kp}})
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.Host)
		domain := strings.TrimPrefix(host, "mta-sts.")
		p, ok := policies[domain]
		if domain == "sts-mixed.test" {
			p, ok = "mode: enforce\nmx: *.sts-mixed.test", true
		}
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(rw, r)
			return
		}
		rw.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(rw, "version: STSv1\r\n%s\r\nmax_age: 86400\r\n", strings.ReplaceAll(p, "\n", "\r\n"))
	})}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })
	stripSTARTTLS(t, fmt.Sprintf("127.0.0.57:%d", port), fmt.Sprintf("127.0.0.55:%d", port))

	// DefaultConfig, for every test domain, plus the TLS listeners
	rxConf := strings.NewReplacer(
		`table "domains" { list = ["example.test"] }`, `table "domains" { list = ["`+strings.Join(zones, `", "`)+`"] }`,
		`listen "mx" { address = "{{ADDR}}" }`, `listen "reports" { address = "{{ADDR}}" }`+"\n"+conf.String(),
	).Replace(DefaultConfig)
	w.rx = StartWith(t, bin, Options{Config: rxConf, Addr: fmt.Sprintf("127.0.0.59:%d", port)})
	_, ocert, okey := ca.Issue(t, certs, "out.example.net")
	w.out = StartWith(t, bin, Options{Config: fmt.Sprintf(`
hostname       = "out.example.net"
spool          = "spool"
control_socket = "run/smtpd.sock"
resolver       = ["%s"]
mx_port        = %d
mta_sts_port   = %d
ca_file        = %q

limits { retry_base = "1s" }

tls_reports {
  organization = "Example Sender"
  contact      = "postmaster@out.example.net"
}

listen "in" {
  address = "{{ADDR}}"
  tls     = "starttls"
  cert    = %q
  key     = %q
}

action "local" {
  maildir  = "mail"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
action "out" { relay = "mx" }

destination "forced.test" { tls = "dane" }
destination "plain.test" { tls = "none" }

match {
  from   = "any"
  for    = "out.example.net"
  action = action.local
}
match {
  from   = "any"
  for    = "any"
  action = action.out
}
`, w.unbound.Addr, port, httpsPort, w.caFile, ocert, okey)})
	return w
}

// stripSTARTTLS forwards connections from addr to target, deleting the
// STARTTLS extension from the server's EHLO reply, as an attacker on
// the path does.
func stripSTARTTLS(t *testing.T, addr, target string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer s.Close()
				go io.Copy(s, c)
				r := bufio.NewReader(s)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if strings.Contains(strings.ToUpper(line), "STARTTLS") {
						line = line[:4] + "XXXXXXXX\r\n"
					}
					if _, err := io.WriteString(c, line); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// submitTLS sends one message to the sending daemon over STARTTLS,
// with REQUIRETLS if asked.
func submitTLS(t *testing.T, addr, from, rcpt, data string, requireTLS bool) {
	t.Helper()
	c, err := smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(from, &smtp.MailOptions{RequireTLS: requireTLS}); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		t.Fatalf("RCPT: %v", err)
	}
	wc, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(wc, data)
	if err := wc.Close(); err != nil {
		t.Fatalf("DATA: %v", err)
	}
	c.Quit()
}

// mailWith returns the delivered messages of d that contain s.
func mailWith(d *Daemon, s string) []string {
	var out []string
	for _, m := range d.Mail() {
		if strings.Contains(m, s) {
			out = append(out, m)
		}
	}
	return out
}

// waitQueued waits until the queue of d shows an envelope for rcpt with
// a last error, and returns its line.
func waitQueued(t *testing.T, d *Daemon, rcpt string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _, _ := d.Smtpctl("show", "queue")
		for _, line := range strings.Split(out, "\n") {
			f := strings.Split(line, "|")
			if len(f) == 11 && f[4] == rcpt && f[10] != "" {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no failed attempt for <%s> in the queue after a minute:\n%s", rcpt, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestOutboundTLSPolicies: DANE, MTA-STS and REQUIRETLS as a receiving
// domain and a sender ask, against a validating Unbound.
func TestOutboundTLSPolicies(t *testing.T) {
	w := startTLSWorld(t)
	send := func(rcpt string) {
		submitTLS(t, w.out.SMTPAddr, "alice@out.example.net", rcpt, "Subject: to-"+rcpt+"\r\n\r\nbody of the message\r\n", false)
	}
	for _, d := range []string{"secure.test", "badtlsa.test", "insecure.test", "bogus.test", "dane-mixed.test",
		"sts-good.test", "sts-mismatch.test", "sts-outside.test", "sts-testing.test", "sts-strip.test", "forced.test", "plain.test", "sts-mixed.test"} {
		send("a@" + d)
	}
	// a message that asks for no TLS policy: delivered despite DANE
	submitTLS(t, w.out.SMTPAddr, "alice@out.example.net", "optional@badtlsa.test", "TLS-Required: No\r\nSubject: to-optional@badtlsa.test\r\n\r\nreport\r\n", false)

	t.Run("delivered", func(t *testing.T) {
		w.rx.WaitMail(8, 60*time.Second)
		for rcpt, policy := range map[string]string{
			"a@secure.test": "policy=dane", "a@insecure.test": "policy=opportunistic", "a@dane-mixed.test": "policy=dane",
			"a@sts-good.test": "policy=mta-sts", "a@sts-testing.test": "policy=mta-sts-testing", "a@plain.test": "tls=none policy=none",
			"optional@badtlsa.test": "policy=opportunistic", "a@sts-mixed.test": "policy=mta-sts",
		} {
			if len(mailWith(w.rx, "Subject: to-"+rcpt)) != 1 {
				t.Errorf("<%s> not delivered", rcpt)
			}
			want := "relayed to <" + rcpt + "> via "
			i := strings.Index(w.out.Log(), want)
			if i < 0 {
				t.Errorf("no delivery line for <%s>", rcpt)
				continue
			}
			line, _, _ := strings.Cut(w.out.Log()[i:], "\n")
			if !strings.Contains(line, " "+policy) || !strings.Contains(line, "tls=TLSv1.") && policy != "tls=none policy=none" {
				t.Errorf("delivery line %q: want %s and the TLS version", line, policy)
			}
		}
		if !strings.Contains(w.out.Log(), "mx.sts-testing.test (127.0.0.56) fails the MTA-STS policy of sts-testing.test in testing mode") {
			t.Errorf("the testing policy's failure was not logged")
		}
	})

	t.Run("refused", func(t *testing.T) {
		for rcpt, want := range map[string]string{
			"a@badtlsa.test":      "no TLSA record matches",
			"a@bogus.test":        "TLSA lookup of _",
			"a@sts-mismatch.test": "mx.sts-mismatch.test",
			"a@sts-outside.test":  "does not list mx.sts-outside.test",
			"a@sts-strip.test":    "does not offer STARTTLS",
			"a@forced.test":       "DANE required for forced.test",
		} {
			line := waitQueued(t, w.out, rcpt)
			if lastErr := line[strings.LastIndexByte(line, '|')+1:]; !strings.Contains(lastErr, want) || !strings.Contains(lastErr, " 4.7.") {
				t.Errorf("<%s>: queue line %q, want a temporary failure saying %q", rcpt, line, want)
			}
			if n := len(mailWith(w.rx, "Subject: to-"+rcpt)); n != 0 {
				t.Errorf("<%s> delivered despite its policy", rcpt)
			}
		}
		if strings.Contains(w.out.Log(), "mx.sts-strip.test (127.0.0.57) offers no STARTTLS: sending in plain text") {
			t.Errorf("the stripped session was sent in plain text")
		}
		relays, _, _ := w.out.Smtpctl("show", "relays")
		if !strings.Contains(relays, "tls=dane (1 TLSA records of _") || !strings.Contains(relays, "tls=mta-sts (MTA-STS policy id 20261126)") {
			t.Errorf("show relays does not name the policies:\n%s", relays)
		}
		policies, _, _ := w.out.Smtpctl("show", "policies")
		if !strings.Contains(policies, "sts-good.test mta-sts mode=enforce id=20261126") {
			t.Errorf("show policies:\n%s", policies)
		}
	})

	t.Run("requiretls", func(t *testing.T) {
		submitTLS(t, w.out.SMTPAddr, "alice@out.example.net", "b@secure.test", "Subject: requiretls-dane\r\n\r\nsecret\r\n", true)
		submitTLS(t, w.out.SMTPAddr, "alice@out.example.net", "b@insecure.test", "Subject: requiretls-plain\r\n\r\nsecret body\r\n", true)
		deadline := time.Now().Add(60 * time.Second)
		for len(mailWith(w.rx, "Subject: requiretls-dane")) == 0 || len(mailWith(w.out, "requiretls-plain")) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the REQUIRETLS messages did not arrive or return within a minute")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(w.rx.Log(), "accepted from <alice@out.example.net> for 1 recipients REQUIRETLS") {
			t.Errorf("the receiving side did not see REQUIRETLS")
		}
		dsn := mailWith(w.out, "requiretls-plain")[0]
		if !strings.Contains(dsn, "5.7.10") || !strings.Contains(dsn, "REQUIRETLS") || strings.Contains(dsn, "secret body") {
			t.Errorf("the notice of the refused REQUIRETLS message should give 5.7.10 and the reason, without the body:\n%s", dsn)
		}
		if n := len(mailWith(w.rx, "Subject: requiretls-plain")); n != 0 {
			t.Errorf("the REQUIRETLS message went to a host that was not authenticated")
		}
	})

	t.Run("tlsrpt", func(t *testing.T) { checkTLSReports(t, w) })
}
