package regress

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"smtpd/internal/testcert"
)

// body has what must survive delivery byte for byte: a line that is a
// lone dot, lines starting with dots, 8-bit text, trailing spaces.
const body = "first line\r\n.\r\n..two dots\r\n.leading dot\r\n8-bit: caf\xc3\xa9 \xe2\x82\xac\r\ntrailing space \r\n\r\nlast line\r\n"

// unixBody is body as a local mailbox keeps it, with LF line endings.
var unixBody = strings.ReplaceAll(body, "\r\n", "\n")

func swaks(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("swaks", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("swaks %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// writeCert writes a self-signed certificate for 127.0.0.1 into dir.
func writeCert(t *testing.T, dir string) (cert, key string) { return testcert.Write(t, dir) }

// checkDelivered checks one delivered message: the delivery and trace
// fields on top, the client's header, and the body byte for byte.
func checkDelivered(t *testing.T, msg, rcpt, with string) {
	t.Helper()
	hdr, gotBody, ok := strings.Cut(msg, "\n\n")
	if !ok {
		t.Fatalf("no header/body separator:\n%s", msg)
	}
	for _, want := range []string{
		"Return-Path: <sender@example.net>\n",
		"Delivered-To: sink@example.test\n",
		"Received: from client.example.net ([127.0.0.1])\n\tby mx.example.test (smtpd) with " + with + " id ",
		"for <" + rcpt + ">",
		"Subject: regress",
		"message-id: ",
		"date: ",
	} {
		if !strings.Contains(hdr, want) && !strings.Contains(strings.ToLower(hdr), want) {
			t.Errorf("header lacks %q:\n%s", want, hdr)
		}
	}
	if !strings.HasPrefix(hdr, "Return-Path:") {
		t.Errorf("header does not start with Return-Path:\n%s", hdr)
	}
	if gotBody != unixBody && gotBody != unixBody+"\n" {
		t.Errorf("body changed:\n got %q\nwant %q", gotBody, unixBody)
	}
}

func swaksArgs(d *Daemon, rcpt string) []string {
	return []string{"--server", d.SMTPAddr, "--helo", "client.example.net", "--from", "sender@example.net", "--to", rcpt,
		"--header", "Subject: regress", "--body", body[:len(body)-2], "--timeout", "20"}
}

// TestSwaksPlain: swaks delivers through a plain listener; the message
// lands byte-exact with the fields smtpd adds, and stats count it.
func TestSwaksPlain(t *testing.T) {
	d := Start(t, bin)
	out := swaks(t, swaksArgs(d, "anyone@example.test")...)
	if !strings.Contains(out, "Message accepted for delivery") {
		t.Fatalf("no 250:\n%s", out)
	}
	for _, m := range d.WaitMail(1, 10*time.Second) {
		checkDelivered(t, m, "anyone@example.test", "ESMTP")
	}
	d.WaitStat("scheduler.delivery.ok", "1", 5*time.Second)
	st := d.Stats()
	if st["smtp.message"] != "1" || st["queue.message"] != "1" || st["mda.envelope"] != "1" {
		t.Errorf("stats %v", st)
	}
}

// TestSwaksTLS: STARTTLS and implicit TLS listeners, with the TLS
// version recorded in Received.
func TestSwaksTLS(t *testing.T) {
	certDir := t.TempDir()
	os.Chmod(certDir, 0o755)
	cert, key := writeCert(t, certDir)
	conf := strings.Replace(DefaultConfig, `listen "mx" { address = "{{ADDR}}" }`, `
listen "mx" {
  address = "{{ADDR}}"
  tls     = "starttls"
  cert    = "`+cert+`"
  key     = "`+key+`"
}`, 1)
	d := StartWith(t, bin, Options{Config: conf})
	out := swaks(t, append(swaksArgs(d, "tls@example.test"), "--tls")...)
	if !strings.Contains(out, "TLS started") || !strings.Contains(out, "Message accepted") {
		t.Fatalf("STARTTLS:\n%s", out)
	}
	for _, m := range d.WaitMail(1, 10*time.Second) {
		checkDelivered(t, m, "tls@example.test", "ESMTPS")
		if !strings.Contains(m, "(TLS 1.3 ") {
			t.Errorf("no TLS version in Received:\n%s", m)
		}
	}

	required := strings.Replace(conf, `tls     = "starttls"`, `tls     = "starttls-require"`, 1)
	d3 := StartWith(t, bin, Options{Config: required})
	if err := RunDialogue(d3.SMTPAddr, "expect 220\nsend EHLO c.example\nexpect 250 STARTTLS\nsend MAIL FROM:<s@example.net>\nexpect 530 5.7.0\nsend QUIT\nexpect 221\n"); err != nil {
		t.Errorf("starttls-require: %v", err)
	}

	implicit := strings.Replace(conf, `tls     = "starttls"`, `tls     = "smtps"`, 1)
	d2 := StartWith(t, bin, Options{Config: implicit})
	out = swaks(t, append(swaksArgs(d2, "smtps@example.test"), "--tlsc")...)
	if !strings.Contains(out, "Message accepted") {
		t.Fatalf("smtps:\n%s", out)
	}
	for _, m := range d2.WaitMail(1, 10*time.Second) {
		checkDelivered(t, m, "smtps@example.test", "ESMTPS")
	}
}

// TestMsmtp: msmtp, as a mail user agent would use it, delivers.
func TestMsmtp(t *testing.T) {
	d := Start(t, bin)
	host, port, _ := net.SplitHostPort(d.SMTPAddr)
	msg := "From: sender@example.net\r\nTo: m@example.test\r\nSubject: regress\r\n\r\n" + body
	cmd := exec.Command("msmtp", "--host="+host, "--port="+port, "--domain=client.example.net",
		"--from=sender@example.net", "--auth=off", "--tls=off", "m@example.test")
	cmd.Stdin = strings.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("msmtp: %v\n%s", err, out)
	}
	for _, m := range d.WaitMail(1, 10*time.Second) {
		checkDelivered(t, m, "m@example.test", "ESMTP")
		if !strings.Contains(m, "From: sender@example.net\n") {
			t.Errorf("client header lost:\n%s", m)
		}
	}
}

// TestCatchAllSink: `virtual = { "@" = ... }` with `for = "any"` takes
// every address of every domain into one maildir.
func TestCatchAllSink(t *testing.T) {
	conf := strings.Replace(DefaultConfig, "for    = table.domains", `for    = "any"`, 1)
	d := StartWith(t, bin, Options{Config: conf})
	rcpts := []string{"a@example.org", "B+tag@Example.NET", "postmaster@sub.domain.test", "x@example.test"}
	for _, r := range rcpts {
		swaks(t, swaksArgs(d, r)...)
	}
	got := d.WaitMail(len(rcpts), 10*time.Second)
	seen := map[string]bool{}
	for _, m := range got {
		for _, r := range rcpts {
			if strings.Contains(m, "for <"+r+">") {
				seen[r] = true
			}
		}
	}
	if len(seen) != len(rcpts) {
		t.Errorf("delivered for %v, want %v", seen, rcpts)
	}
}
