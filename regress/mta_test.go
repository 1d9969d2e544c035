package regress

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"smtpd/internal/dns/dnstest"
)

// mxWorld is a test DNS server and receiving smtpd instances for the
// mail exchangers of example.test: 127.0.0.2 and 127.0.0.3 at
// preference 10, 127.0.0.4 at 20, all on one port.
type mxWorld struct {
	dns  *dnstest.Server
	port int
	mx   map[string]*Daemon
}

func startMXWorld(t *testing.T, records ...string) *mxWorld {
	t.Helper()
	w := &mxWorld{port: FreePort(t), mx: map[string]*Daemon{}}
	zone := append([]string{
		"example.test. 300 IN MX 10 mx1.example.test.",
		"example.test. 300 IN MX 10 mx2.example.test.",
		"example.test. 300 IN MX 20 backup.example.test.",
		"mx1.example.test. 300 IN A 127.0.0.2",
		"mx2.example.test. 300 IN A 127.0.0.3",
		"backup.example.test. 300 IN A 127.0.0.4",
		"2.0.0.127.in-addr.arpa. 300 IN PTR mx1.example.test.",
		"3.0.0.127.in-addr.arpa. 300 IN PTR mx2.example.test.",
		"4.0.0.127.in-addr.arpa. 300 IN PTR backup.example.test.",
	}, records...)
	var err error
	if w.dns, err = dnstest.Start(zone...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.dns.Close)
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		conf := strings.Replace(DefaultConfig, `hostname       = "mx.example.test"`, `hostname       = "mx-`+ip+`.example.test"`, 1)
		w.mx[ip] = StartWith(t, bin, Options{Config: conf, Addr: fmt.Sprintf("%s:%d", ip, w.port)})
	}
	return w
}

// relayConfig relays example.test (and anything in extra) through DNS.
func (w *mxWorld) relayConfig(extra string) string {
	return fmt.Sprintf(`
hostname       = "out.example.net"
spool          = "spool"
control_socket = "run/smtpd.sock"
resolver       = ["%s"]
mx_port        = %d

limits {
  retry_base = "1s"
  mails_per_session = 100000
}

listen "in" { address = "{{ADDR}}" }

action "local" {
  maildir  = "mail"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
action "out" { relay = "mx" }
%s
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
`, w.dns.Addr, w.port, extra)
}

// TestMXRouting: 200 messages to 20 recipients of a domain with two
// primary exchangers and a backup: one MX lookup, one PTR per host used,
// both primaries get a share, the backup none, every message arrives.
func TestMXRouting(t *testing.T) {
	w := startMXWorld(t)
	out := StartWith(t, bin, Options{Config: w.relayConfig("")})
	const n = 200
	sendMany(t, out.SMTPAddr, n, 4, "Subject: routed\r\n\r\nhello\r\n", func(i int) string {
		return fmt.Sprintf("user%d@example.test", i%20)
	})
	out.WaitStat("scheduler.delivery.ok", fmt.Sprint(n), 60*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for len(w.mx["127.0.0.2"].Mail())+len(w.mx["127.0.0.3"].Mail()) < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	got := map[string]int{}
	total := 0
	for ip, d := range w.mx {
		got[ip] = len(d.Mail())
		total += got[ip]
	}
	if total != n || got["127.0.0.2"] == 0 || got["127.0.0.3"] == 0 || got["127.0.0.4"] != 0 {
		t.Errorf("messages per exchanger %v, want %d over the two primaries", got, n)
	}
	if q := w.dns.Queries("example.test", "MX"); q != 1 {
		t.Errorf("%d MX queries, want 1", q)
	}
	for _, ptr := range []string{"2.0.0.127.in-addr.arpa", "3.0.0.127.in-addr.arpa"} {
		if q := w.dns.Queries(ptr, "PTR"); q != 1 {
			t.Errorf("%d PTR queries for %s, want 1", q, ptr)
		}
	}
	t.Logf("per exchanger: %v; sessions at each: %s / %s", got, w.mx["127.0.0.2"].Stats()["smtp.session.inet4"], w.mx["127.0.0.3"].Stats()["smtp.session.inet4"])
}

// sessionsAt counts the sessions a receiving daemon logged.
func sessionsAt(d *Daemon) int { return strings.Count(d.Log(), ": session from [") }

// TestBrokenMX: with the first primary down, everything goes to the
// other within a retry round and the dead route is penalised; the
// backup takes mail only when both primaries are down.
func TestBrokenMX(t *testing.T) {
	w := startMXWorld(t)
	w.mx["127.0.0.2"].Kill()
	out := StartWith(t, bin, Options{Config: w.relayConfig("")})
	sendMany(t, out.SMTPAddr, 20, 2, "Subject: one down\r\n\r\nhi\r\n", func(i int) string { return fmt.Sprintf("u%d@example.test", i) })
	out.WaitStat("scheduler.delivery.ok", "20", 30*time.Second)
	if n := len(w.mx["127.0.0.3"].WaitMail(20, 10*time.Second)); n != 20 {
		t.Errorf("%d messages at the second primary, want 20", n)
	}
	if n := len(w.mx["127.0.0.4"].Mail()); n != 0 {
		t.Errorf("%d messages at the backup while a primary is up", n)
	}
	if !strings.Contains(out.Log(), ">127.0.0.2 disabled for 15s") {
		t.Errorf("no penalty logged:\n%s", out.Log())
	}
	routes, _, code := out.Smtpctl("show", "routes")
	if code != 0 || !regexp.MustCompile(`(?m)^any>127\.0\.0\.2 penalty=1 disabled for \d+s error=.*refused`).MatchString(routes) ||
		!regexp.MustCompile(`(?m)^any>127\.0\.0\.3 penalty=0 up$`).MatchString(routes) {
		t.Errorf("show routes:\n%s", routes)
	}
	hosts, _, _ := out.Smtpctl("show", "hosts")
	if !strings.Contains(hosts, "127.0.0.3 name=mx2.example.test ptr=mx2.example.test sessions=") {
		t.Errorf("show hosts:\n%s", hosts)
	}
	relays, _, _ := out.Smtpctl("sh", "rel")
	if !strings.Contains(relays, "mx:out:example.test tasks=") {
		t.Errorf("show relays:\n%s", relays)
	}
	w.mx["127.0.0.3"].Kill()
	sendMany(t, out.SMTPAddr, 5, 1, "Subject: both down\r\n\r\nhi\r\n", func(i int) string { return fmt.Sprintf("v%d@example.test", i) })
	out.WaitStat("scheduler.delivery.ok", "25", 30*time.Second)
	if n := len(w.mx["127.0.0.4"].WaitMail(5, 10*time.Second)); n != 5 {
		t.Errorf("%d messages at the backup, want 5", n)
	}
}

// TestRemoteFailures: SERVFAIL is retried, NXDOMAIN and null MX are
// returned once (5.1.10 for the null MX), and a 4xx for one of two
// recipients retries that one only.
func TestRemoteFailures(t *testing.T) {
	w := startMXWorld(t,
		"null.test. 300 IN MX 0 .",
		"flaky.test. 300 IN MX 10 mx1.example.test.",
	)
	w.dns.ServFail("flaky.test")
	// the receivers refuse later@ with a 4xx
	for _, d := range w.mx {
		d.Kill()
	}
	filt := "filter \"later\" {\n  rcpt = [\"later@example.test\"]\n  action = \"tempfail\"\n}\n"
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		conf := strings.Replace(DefaultConfig, `hostname       = "mx.example.test"`, `hostname       = "mx-`+ip+`.example.test"`, 1)
		w.mx[ip] = StartWith(t, bin, Options{Config: WithFilters(conf, "filter.later", filt), Addr: fmt.Sprintf("%s:%d", ip, w.port)})
	}
	out := StartWith(t, bin, Options{Config: w.relayConfig("")})
	send := func(rcpts ...string) {
		t.Helper()
		script := "expect 220\nsend EHLO c.example\nexpect 250\nsend MAIL FROM:<author@out.example.net>\nexpect 250\n"
		for _, r := range rcpts {
			script += "send RCPT TO:<" + r + ">\nexpect 250\n"
		}
		script += "send DATA\nexpect 354\nsend Subject: remote\nsend\nsend .\nexpect 250\nsend QUIT\nexpect 221\n"
		if err := RunDialogue(out.SMTPAddr, script); err != nil {
			t.Fatal(err)
		}
	}
	send("a@nosuch.test")
	send("b@null.test")
	send("c@flaky.test")
	send("now@example.test", "later@example.test")
	out.WaitStat("scheduler.delivery.permfail", "2", 20*time.Second)
	// now@ and the two notices, delivered locally
	out.WaitStat("scheduler.delivery.ok", "3", 20*time.Second)
	out.WaitStat("scheduler.delivery.tempfail", "4", 20*time.Second)
	notices := out.WaitMail(2, 10*time.Second)
	var nxdomain, nullmx int
	for _, m := range notices {
		switch {
		case strings.Contains(m, "Final-Recipient: rfc822; a@nosuch.test") && strings.Contains(m, "Status: 5.1.2"):
			nxdomain++
		case strings.Contains(m, "Final-Recipient: rfc822; b@null.test") && strings.Contains(m, "Status: 5.1.10"):
			nullmx++
		default:
			t.Errorf("unexpected notice:\n%s", m)
		}
	}
	if nxdomain != 1 || nullmx != 1 {
		t.Errorf("notices: %d NXDOMAIN, %d null MX", nxdomain, nullmx)
	}
	time.Sleep(500 * time.Millisecond)
	delivered := 0
	for _, d := range w.mx {
		for _, m := range d.Mail() {
			if strings.Contains(m, "for <now@example.test>") || strings.Contains(m, "Subject: remote") {
				delivered++
			}
		}
	}
	if delivered != 1 {
		t.Errorf("now@ delivered %d times, want once", delivered)
	}
}

// TestTLSRequired: a relay that requires TLS to a host that does not
// offer STARTTLS defers the mail with a clear error and never sends it
// in clear.
func TestTLSRequired(t *testing.T) {
	w := startMXWorld(t)
	conf := strings.Replace(w.relayConfig(""), `action "out" { relay = "mx" }`, "action \"out\" {\n  relay = \"mx\"\n  tls   = \"required\"\n}", 1)
	out := StartWith(t, bin, Options{Config: conf})
	sendMany(t, out.SMTPAddr, 1, 1, "Subject: secret\r\n\r\nhi\r\n", func(int) string { return "x@example.test" })
	out.WaitStat("scheduler.delivery.tempfail", "1", 20*time.Second)
	if !strings.Contains(out.Log(), "TLS required by the required policy (configured), but ") {
		t.Errorf("no clear error:\n%s", out.Log())
	}
	for ip, d := range w.mx {
		if n := len(d.Mail()); n != 0 {
			t.Errorf("%s got %d messages in clear", ip, n)
		}
	}
}

// TestOneSessionManyMessages: messages queued for the same relay travel
// many to a connection.
func TestOneSessionManyMessages(t *testing.T) {
	w := startMXWorld(t)
	for _, d := range w.mx {
		d.Kill()
	}
	out := StartWith(t, bin, Options{Config: w.relayConfig("")})
	sendMany(t, out.SMTPAddr, 30, 1, "Subject: batch\r\n\r\nhi\r\n", func(i int) string { return fmt.Sprintf("b%d@example.test", i) })
	out.WaitStat("scheduler.delivery.tempfail", "30", 20*time.Second)
	out.Kill()
	// the exchanger comes back, and so does the relay with its queue,
	// whose envelopes are all due at once
	conf := strings.Replace(DefaultConfig, `hostname       = "mx.example.test"`, `hostname       = "mx-again.example.test"`, 1)
	again := StartWith(t, bin, Options{Config: conf, Addr: fmt.Sprintf("127.0.0.4:%d", w.port)})
	time.Sleep(1500 * time.Millisecond)
	StartWith(t, bin, Options{Config: w.relayConfig(""), Dir: out.Dir})
	again.WaitMail(30, 60*time.Second)
	n := sessionsAt(again)
	if n > 10 {
		t.Errorf("30 messages took %d sessions", n)
	}
	t.Logf("30 queued messages delivered over %d session(s)", n)
}

// submissionServer is a go-smtp server with STARTTLS and AUTH PLAIN, as
// a provider's submission service would be, that records what it gets.
type submissionServer struct {
	addr string
	mu   sync.Mutex
	// authTLS records, for each AUTH, whether TLS was on.
	authTLS []bool
	mail    []string
}

type subSession struct {
	srv  *submissionServer
	conn *smtp.Conn
	user string
}

func (s *subSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *subSession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		_, tlsOn := s.conn.TLSConnectionState()
		s.srv.mu.Lock()
		s.srv.authTLS = append(s.srv.authTLS, tlsOn)
		s.srv.mu.Unlock()
		if user != "alice" || pass != "s3cret" {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		s.user = user
		return nil
	}), nil
}
func (s *subSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	return nil
}
func (s *subSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *subSession) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	s.srv.mu.Lock()
	s.srv.mail = append(s.srv.mail, string(b))
	s.srv.mu.Unlock()
	return nil
}
func (s *subSession) Reset()        {}
func (s *subSession) Logout() error { return nil }

func startSubmission(t *testing.T) *submissionServer {
	t.Helper()
	cert, key := writeCert(t, t.TempDir())
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	sub := &submissionServer{}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &subSession{srv: sub, conn: c}, nil
	}))
	srv.Domain = "smtp.provider.test"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sub.addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sub
}

// TestSmarthostAuth: a smarthost relay authenticates over STARTTLS only;
// wrong credentials defer the mail rather than return it.
func TestSmarthostAuth(t *testing.T) {
	sub := startSubmission(t)
	dnsSrv, _ := dnstest.Start()
	t.Cleanup(dnsSrv.Close)
	smarthost := func(secret string) string {
		return strings.Replace(DefaultConfig, "match {", `
resolver = ["`+dnsSrv.Addr+`"]
table "secrets" { map = { isp = "`+secret+`" } }
action "smarthost" {
  relay       = "smtp+tls://isp@`+sub.addr+`"
  credentials = table.secrets
  tls         = "no-verify"
}
match {
  from   = "any"
  for    = "elsewhere.example"
  action = action.smarthost
}
match {`, 1)
	}
	d := StartWith(t, bin, Options{Config: smarthost("alice:s3cret")})
	sendMany(t, d.SMTPAddr, 3, 1, "Subject: via smarthost\r\n\r\nhi\r\n", func(i int) string { return fmt.Sprintf("friend%d@elsewhere.example", i) })
	d.WaitStat("scheduler.delivery.ok", "3", 20*time.Second)
	sub.mu.Lock()
	if len(sub.mail) != 3 || len(sub.authTLS) == 0 {
		t.Errorf("%d messages, %d AUTH at the smarthost", len(sub.mail), len(sub.authTLS))
	}
	for _, on := range sub.authTLS {
		if !on {
			t.Error("credentials sent without TLS")
		}
	}
	sub.mu.Unlock()

	bad := StartWith(t, bin, Options{Config: smarthost("alice:wrong")})
	sendMany(t, bad.SMTPAddr, 1, 1, "Subject: refused\r\n\r\nhi\r\n", func(int) string { return "friend@elsewhere.example" })
	bad.WaitStat("scheduler.delivery.tempfail", "1", 20*time.Second)
	if st := bad.Stats(); st["scheduler.delivery.permfail"] != "" || st["queue.bounce"] != "" {
		t.Errorf("wrong credentials bounced: %v", st)
	}
	if !strings.Contains(bad.Log(), "authentication with 127.0.0.1 failed: 535 5.7.8") {
		t.Errorf("no clear error:\n%s", bad.Log())
	}
}

// TestMXLoop: an exchanger that turns out to be this host (its greeting
// names our host name) is a mail loop: the message is returned, not
// relayed in circles.
func TestMXLoop(t *testing.T) {
	w := startMXWorld(t)
	for _, d := range w.mx {
		d.Kill()
	}
	conf := strings.Replace(DefaultConfig, `hostname       = "mx.example.test"`, `hostname       = "out.example.net"`, 1)
	StartWith(t, bin, Options{Config: conf, Addr: fmt.Sprintf("127.0.0.2:%d", w.port)})
	out := StartWith(t, bin, Options{Config: w.relayConfig("")})
	if err := RunDialogue(out.SMTPAddr, "expect 220\nsend EHLO c.example\nexpect 250\nsend MAIL FROM:<author@out.example.net>\nexpect 250\n"+
		"send RCPT TO:<x@example.test>\nexpect 250\nsend DATA\nexpect 354\nsend Subject: loop\nsend\nsend .\nexpect 250\n"); err != nil {
		t.Fatal(err)
	}
	out.WaitStat("scheduler.delivery.permfail", "1", 20*time.Second)
	for _, m := range out.WaitMail(1, 10*time.Second) {
		if !strings.Contains(m, "Status: 5.4.6") || !strings.Contains(m, "mail loop") {
			t.Errorf("notice:\n%s", m)
		}
	}
}

// TestBackupMX: a relay in backup mode, listed at preference 20 as
// backup.example.test, hands mail only to the primaries, and holds it
// while they are all down.
func TestBackupMX(t *testing.T) {
	w := startMXWorld(t)
	w.mx["127.0.0.4"].Kill()
	conf := strings.Replace(w.relayConfig(""), `hostname       = "out.example.net"`, `hostname       = "backup.example.test"`, 1)
	conf = strings.Replace(conf, `action "out" { relay = "mx" }`, "action \"out\" {\n  relay  = \"mx\"\n  backup = true\n}", 1)
	conf = strings.Replace(conf, `for    = "out.example.net"`, `for    = "backup.example.test"`, 1)
	b := StartWith(t, bin, Options{Config: conf})
	sendMany(t, b.SMTPAddr, 4, 1, "Subject: via backup\r\n\r\nhi\r\n", func(i int) string { return fmt.Sprintf("k%d@example.test", i) })
	b.WaitStat("scheduler.delivery.ok", "4", 20*time.Second)
	w.mx["127.0.0.2"].Kill()
	w.mx["127.0.0.3"].Kill()
	sendMany(t, b.SMTPAddr, 1, 1, "Subject: held\r\n\r\nhi\r\n", func(int) string { return "held@example.test" })
	b.WaitStat("scheduler.delivery.tempfail", "1", 20*time.Second)
	if strings.Contains(b.Log(), ">127.0.0.4") {
		t.Errorf("the backup tried itself:\n%s", b.Log())
	}
}
