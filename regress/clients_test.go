package regress

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

// Real clients against the daemon: swaks,
// msmtp, s-nail, Python's smtplib and go-smtp's client each complete
// transactions with the extensions they implement, and between them
// cover PIPELINING, CHUNKING/BDAT, STARTTLS, AUTH PLAIN and LOGIN,
// SMTPUTF8 and the DSN parameters. Each case checks the client's exit
// status or reply, what its transcript shows it used, the Received
// field's protocol (ESMTPS under TLS, ESMTPSA once authenticated), and
// the body as delivered, byte for byte.
//
// Which client does what, as each implements it:
//
//	PIPELINING  swaks --pipeline, msmtp (on its own when offered),
//	            Python (the BDAT chunks, written without waiting)
//	BDAT        Python (no client here has BDAT of its own; smtplib's
//	            low-level putcmd/send/getreply drive it)
//	STARTTLS    all five
//	AUTH        PLAIN and LOGIN with each of the five
//	SMTPUTF8    Python, go-smtp (swaks, msmtp, s-nail have no SMTPUTF8)
//	DSN         Python and go-smtp (RET, ENVID, NOTIFY, ORCPT), msmtp
//	            (RET, NOTIFY; it has no ENVID or ORCPT)

// clientPassword is alice's password in startClientDaemon's auth table.
const clientPassword = "s3cret"

// startClientDaemon starts a daemon whose listener offers STARTTLS and,
// under TLS, AUTH PLAIN and LOGIN for alice; everything for example.test
// lands in the maildir.
func startClientDaemon(t *testing.T) *Daemon {
	t.Helper()
	certDir := t.TempDir()
	os.Chmod(certDir, 0o755)
	cert, key := writeCert(t, certDir)
	hash, err := bcrypt.GenerateFromPassword([]byte(clientPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(DefaultConfig, `listen "mx" { address = "{{ADDR}}" }`, `
table "users" { map = { alice = "`+string(hash)+`" } }

listen "mx" {
  address    = "{{ADDR}}"
  tls        = "starttls"
  cert       = "`+cert+`"
  key        = "`+key+`"
  auth       = "optional"
  auth_table = table.users
}`, 1)
	return StartWith(t, bin, Options{Config: conf})
}

// clientMessage is the message the clients that take a whole message
// send: a header, then body (deliver_test.go) with its lone dot, dotted
// lines, 8-bit text and trailing space.
func clientMessage(subject, rcpt string) string {
	return "From: sender@example.net\r\nTo: <" + rcpt + ">\r\nSubject: " + subject + "\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
}

// runClient runs a client program with a bounded run time, stdin as its
// input and env added to its environment, and returns its combined
// output; err is set if it failed or timed out.
func runClient(env []string, stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s: no exit after 60s: %v", name, err)
	}
	return string(out), err
}

// dsnWant is what a queued envelope must keep of the DSN parameters
// (`smtpctl show envelope`), checked while mda is paused.
type dsnWant struct {
	notify, ret, envid, orcpt string
}

// clientCase is one client completing one transaction.
type clientCase struct {
	name string
	// from and rcpt are the envelope addresses
	from, rcpt string
	// send runs the client against addr with the message of subject
	// and returns its transcript
	send sendFunc
	// with is the protocol the Received field must name
	with string
	// transcript lists regular expressions the transcript must match:
	// what shows the client used the extension under test
	transcript []string
	// dsn, if set, is checked on the queued envelope
	dsn *dsnWant
}

// sendFunc runs a client against addr: one transaction from from to
// rcpt, of a message with subject and body. It returns the client's
// transcript, and an error if the client failed.
type sendFunc func(t *testing.T, addr, subject, from, rcpt string) (string, error)

func swaksClient(extra ...string) sendFunc {
	return func(t *testing.T, addr, subject, from, rcpt string) (string, error) {
		args := []string{"--server", addr, "--helo", "client.example.net", "--from", from, "--to", rcpt,
			"--header", "Subject: " + subject, "--body", body[:len(body)-2], "--timeout", "20"}
		return runClient(nil, "", "swaks", append(args, extra...)...)
	}
}

func msmtpClient(extra ...string) sendFunc {
	return func(t *testing.T, addr, subject, from, rcpt string) (string, error) {
		host, port, _ := net.SplitHostPort(addr)
		args := []string{"--debug", "--host=" + host, "--port=" + port, "--domain=client.example.net",
			"--from=" + from, "--timeout=20"}
		args = append(append(args, extra...), rcpt)
		return runClient(nil, clientMessage(subject, rcpt), "msmtp", args...)
	}
}

// snailClient sends with s-nail's own SMTP client (not through our
// sendmail, which sendmail_test.go covers). The body is 8-bit UTF-8
// and s-nail is told to send it as it is (mime-encoding=8bit), so that
// what arrives can be compared byte for byte.
func snailClient(mech string) sendFunc {
	return func(t *testing.T, addr, subject, from, rcpt string) (string, error) {
		home := t.TempDir()
		args := []string{"-#", "-:/", "-Sv15-compat", "-vv",
			"-Sttycharset=utf-8", "-Ssendcharsets=utf-8", "-Smime-encoding=8bit",
			"-Smta=smtp://alice@" + addr, "-Ssmtp-use-starttls", "-Stls-verify=ignore",
			"-Ssmtp-auth=" + strings.ToLower(mech), "-Spassword-alice@" + addr + "=" + clientPassword,
			"-Shostname=client.example.net", "-Sfrom=" + from, "-s", subject, rcpt}
		return runClient([]string{"HOME=" + home, "MAILRC=/dev/null", "LC_ALL=C.UTF-8"}, unixBody, "s-nail", args...)
	}
}

// pythonClient runs testdata/smtplib_client.py with the system's
// Python 3 and its standard library.
func pythonClient(extra ...string) sendFunc {
	return func(t *testing.T, addr, subject, from, rcpt string) (string, error) {
		host, port, _ := net.SplitHostPort(addr)
		msgFile := filepath.Join(t.TempDir(), "message")
		if err := os.WriteFile(msgFile, []byte(clientMessage(subject, rcpt)), 0o644); err != nil {
			t.Fatal(err)
		}
		script, _ := filepath.Abs("testdata/smtplib_client.py")
		args := []string{script, host, port, "--from", from, "--to", rcpt, "--message", msgFile}
		return runClient(nil, "", "/usr/bin/python3", append(args, extra...)...)
	}
}

// goSMTPOptions are the MAIL and RCPT options and the mechanism go-smtp's
// client uses.
type goSMTPOptions struct {
	mech string
	mail *gosmtp.MailOptions
	rcpt *gosmtp.RcptOptions
}

// goSMTPClient sends with go-smtp's client through STARTTLS. It says
// EHLO localhost: go-smtp's client offers no way to name itself and
// then start TLS.
func goSMTPClient(o goSMTPOptions) sendFunc {
	return func(t *testing.T, addr, subject, from, rcpt string) (string, error) {
		var log bytes.Buffer
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return "", err
		}
		conn.SetDeadline(time.Now().Add(60 * time.Second))
		c, err := gosmtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			conn.Close()
			return "", fmt.Errorf("starttls: %w", err)
		}
		defer c.Close()
		c.DebugWriter = &log
		c.CommandTimeout, c.SubmissionTimeout = 20*time.Second, 20*time.Second
		var a sasl.Client
		switch o.mech {
		case "PLAIN":
			a = sasl.NewPlainClient("", "alice", clientPassword)
		case "LOGIN":
			a = sasl.NewLoginClient("alice", clientPassword)
		}
		if a != nil {
			if err := c.Auth(a); err != nil {
				return log.String(), fmt.Errorf("auth %s: %w", o.mech, err)
			}
		}
		if err := c.Mail(from, o.mail); err != nil {
			return log.String(), fmt.Errorf("mail: %w", err)
		}
		if err := c.Rcpt(rcpt, o.rcpt); err != nil {
			return log.String(), fmt.Errorf("rcpt: %w", err)
		}
		w, err := c.Data()
		if err != nil {
			return log.String(), fmt.Errorf("data: %w", err)
		}
		if _, err := w.Write([]byte(clientMessage(subject, rcpt))); err != nil {
			return log.String(), fmt.Errorf("data: %w", err)
		}
		if err := w.Close(); err != nil {
			return log.String(), fmt.Errorf("end of data: %w", err)
		}
		if err := c.Quit(); err != nil {
			return log.String(), fmt.Errorf("quit: %w", err)
		}
		return log.String(), nil
	}
}

// clientCases are the transactions of TestClients.
var clientCases = []clientCase{
	{
		name: "swaks/plain-pipelining", send: swaksClient("--pipeline"), with: "ESMTP",
		// the whole envelope and DATA leave in one write, before any reply
		transcript: []string{`(?m)^ -> MAIL FROM:<sender@example\.net>\r?\n -> RCPT TO:<[^>]+>\r?\n -> DATA\r?\n<-  250`},
	},
	{
		name: "swaks/starttls-plain-pipelining", send: swaksClient("--tls", "--pipeline", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", clientPassword),
		with: "ESMTPSA", transcript: []string{`TLS started`, `~> AUTH PLAIN`, `<~  235 `, `(?m)^ ~> MAIL FROM:<sender@example\.net>\r?\n ~> RCPT TO:<[^>]+>\r?\n ~> DATA\r?\n<~  250`},
	},
	{
		name: "swaks/starttls-login", send: swaksClient("--tls", "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", clientPassword),
		with: "ESMTPSA", transcript: []string{`TLS started`, `~> AUTH LOGIN`, `<~  235 `},
	},
	{
		name: "msmtp/starttls-plain-dsn", with: "ESMTPSA",
		send: msmtpClient("--tls=on", "--tls-starttls=on", "--tls-certcheck=off", "--auth=plain", "--user=alice",
			"--passwordeval=echo "+clientPassword, "--dsn-notify=success,failure", "--dsn-return=headers"),
		// msmtp pipelines MAIL, RCPT and DATA when PIPELINING is offered
		transcript: []string{`--> STARTTLS`, `--> AUTH PLAIN`, `<-- 235`, `RET=HDRS`, `NOTIFY=SUCCESS,FAILURE`,
			`(?m)^--> MAIL FROM:<sender@example\.net>.*\r?\n--> RCPT TO:<[^>]+>.*\r?\n--> DATA\r?\n<-- 250`},
		dsn: &dsnWant{notify: "SUCCESS,FAILURE", ret: "HDRS"},
	},
	{
		name: "msmtp/starttls-login", with: "ESMTPSA",
		send: msmtpClient("--tls=on", "--tls-starttls=on", "--tls-certcheck=off", "--auth=login", "--user=alice",
			"--passwordeval=echo "+clientPassword),
		transcript: []string{`--> STARTTLS`, `--> AUTH LOGIN`, `<-- 235`},
	},
	{
		name: "s-nail/starttls-plain", send: snailClient("PLAIN"), with: "ESMTPSA",
		transcript: []string{`(?i)>>> STARTTLS`, `(?i)>>> AUTH PLAIN`},
	},
	{
		name: "s-nail/starttls-login", send: snailClient("LOGIN"), with: "ESMTPSA",
		transcript: []string{`(?i)>>> STARTTLS`, `(?i)>>> AUTH LOGIN`},
	},
	{
		name: "python/starttls-plain-smtputf8-dsn", from: "pelé@example.net", rcpt: "用户@example.test", with: "ESMTPSA",
		send: pythonClient("--starttls", "--auth", "PLAIN", "--user", "alice", "--password", clientPassword, "--smtputf8",
			"--mail-option", "RET=HDRS", "--mail-option", "ENVID=env-42.python",
			"--rcpt-option", "NOTIFY=SUCCESS,FAILURE", "--rcpt-option", "ORCPT=rfc822;orig@example.test"),
		transcript: []string{`auth: 235 `, `(?i)send: 'mail FROM:<pelé@example\.net> [^']*SMTPUTF8`, `reply: retcode \(250\)`},
		dsn:        &dsnWant{notify: "SUCCESS,FAILURE", ret: "HDRS", envid: "env-42.python", orcpt: "rfc822;orig@example.test"},
	},
	{
		name: "python/starttls-login-bdat", with: "ESMTPSA",
		send:       pythonClient("--starttls", "--auth", "LOGIN", "--user", "alice", "--password", clientPassword, "--bdat", "1"),
		transcript: []string{`auth: 235 `, `send: b'BDAT \d+ LAST\\r\\n`},
	},
	{
		name: "python/bdat-pipelined-chunks", with: "ESMTP",
		send:       pythonClient("--bdat", "3"),
		transcript: []string{`send: b'BDAT \d+\\r\\n`, `send: b'BDAT \d+ LAST\\r\\n`},
	},
	{
		name: "python/starttls-bdat-smtputf8", from: "pelé@example.net", rcpt: "josé@example.test", with: "ESMTPS",
		send:       pythonClient("--starttls", "--smtputf8", "--bdat", "2"),
		transcript: []string{`(?i)send: 'mail FROM:<pelé@example\.net> [^']*SMTPUTF8`, `send: b'BDAT \d+ LAST\\r\\n`},
	},
	{
		name: "go-smtp/starttls-plain-smtputf8-dsn", from: "pelé@example.net", rcpt: "用户@example.test", with: "ESMTPSA",
		send: goSMTPClient(goSMTPOptions{mech: "PLAIN",
			mail: &gosmtp.MailOptions{UTF8: true, Return: gosmtp.DSNReturnHeaders, EnvelopeID: "env-42.gosmtp"},
			rcpt: &gosmtp.RcptOptions{Notify: []gosmtp.DSNNotify{gosmtp.DSNNotifySuccess, gosmtp.DSNNotifyFailure},
				OriginalRecipientType: gosmtp.DSNAddressTypeRFC822, OriginalRecipient: "orig@example.test"}}),
		transcript: []string{`AUTH PLAIN`, `MAIL FROM:<pelé@example\.net> [^\r\n]*SMTPUTF8`, `RET=HDRS`, `ENVID=env-42\.gosmtp`},
		dsn:        &dsnWant{notify: "SUCCESS,FAILURE", ret: "HDRS", envid: "env-42.gosmtp", orcpt: "rfc822;orig@example.test"},
	},
	{
		name: "go-smtp/starttls-login", with: "ESMTPSA",
		send:       goSMTPClient(goSMTPOptions{mech: "LOGIN"}),
		transcript: []string{`AUTH LOGIN`},
	},
}

// TestClients: each real client completes its transaction; the message
// lands byte for byte; the envelope keeps the DSN parameters given.
func TestClients(t *testing.T) {
	for _, tc := range clientCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.from == "" {
				tc.from = "sender@example.net"
			}
			if tc.rcpt == "" {
				tc.rcpt = "client@example.test"
			}
			d := startClientDaemon(t)
			if tc.dsn != nil {
				// hold deliveries so that the envelope can be looked at
				if _, errOut, code := d.Smtpctl("pause", "mda"); code != 0 {
					t.Fatalf("pause mda: %d %s", code, errOut)
				}
			}
			subject := "regress " + tc.name
			out, err := tc.send(t, d.SMTPAddr, subject, tc.from, tc.rcpt)
			if err != nil {
				t.Fatalf("client failed: %v\n%s", err, out)
			}
			for _, re := range tc.transcript {
				if !regexp.MustCompile(re).MatchString(out) {
					t.Errorf("transcript does not match %q:\n%s", re, out)
				}
			}
			if tc.dsn != nil {
				checkQueuedDSN(t, d, tc.rcpt, *tc.dsn)
				if _, errOut, code := d.Smtpctl("resume", "mda"); code != 0 {
					t.Fatalf("resume mda: %d %s", code, errOut)
				}
			}
			msgs := d.WaitMail(1, 20*time.Second)
			if len(msgs) != 1 {
				t.Fatalf("%d messages delivered, want 1", len(msgs))
			}
			for _, m := range msgs {
				checkClientDelivery(t, m, tc, subject)
			}
		})
	}
}

// checkClientDelivery checks a delivered message: the Received field
// names the protocol, the client's Subject is there, the body is
// byte-exact.
func checkClientDelivery(t *testing.T, msg string, tc clientCase, subject string) {
	t.Helper()
	hdr, gotBody, ok := strings.Cut(msg, "\n\n")
	if !ok {
		t.Fatalf("no header/body separator:\n%s", msg)
	}
	if !strings.HasPrefix(hdr, "Return-Path: <"+tc.from+">\n") {
		t.Errorf("Return-Path is not <%s>:\n%s", tc.from, hdr)
	}
	if !regexp.MustCompile(`(?m)^Received: from .*\n\tby mx\.example\.test \(smtpd\) with ` + tc.with + ` id `).MatchString(hdr) {
		t.Errorf("Received does not say %s:\n%s", tc.with, hdr)
	}
	if !strings.Contains(hdr, "\nSubject: "+subject+"\n") {
		t.Errorf("Subject lost:\n%s", hdr)
	}
	if gotBody != unixBody && gotBody != unixBody+"\n" {
		t.Errorf("body changed:\n got %q\nwant %q", gotBody, unixBody)
	}
}

// checkQueuedDSN checks the DSN parameters of the envelope queued for
// rcpt, with `smtpctl show queue` and `show envelope`.
func checkQueuedDSN(t *testing.T, d *Daemon, rcpt string, want dsnWant) {
	t.Helper()
	var evpid string
	deadline := time.Now().Add(10 * time.Second)
	for evpid == "" {
		q, _, _ := d.Smtpctl("show", "queue")
		for _, line := range strings.Split(q, "\n") {
			if id, _, ok := strings.Cut(line, "|"); ok && len(id) == 16 {
				evpid = id
			}
		}
		if evpid == "" {
			if time.Now().After(deadline) {
				t.Fatalf("nothing queued after 10s:\n%s", q)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	out, errOut, code := d.Smtpctl("show", "envelope", evpid)
	if code != 0 {
		t.Fatalf("show envelope %s: %d %s", evpid, code, errOut)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			fields[k] = v
		}
	}
	if fields["rcpt"] != rcpt {
		t.Errorf("envelope rcpt %q, want %q\n%s", fields["rcpt"], rcpt, out)
	}
	check := func(key, want string, fold bool) {
		got := fields[key]
		if got != want && !(fold && strings.EqualFold(got, want)) {
			t.Errorf("envelope %s %q, want %q\n%s", key, got, want, out)
		}
	}
	check("notify", want.notify, true)
	check("ret", want.ret, true)
	check("envid", want.envid, false)
	// the address type of ORCPT is case-insensitive (RFC 3461 §4.2)
	check("orcpt", want.orcpt, true)
}
