package regress

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"smtpd/internal/dns/dnstest"
	"smtpd/internal/mailauth/dkim"
)

// TestInboundChecks: a listener that checks FCrDNS, SPF, DKIM, DMARC
// and a DNS block list, against our test DNS. A forged message from a
// domain whose DMARC policy is reject is refused with 550 5.7.1 at the
// end of data; a valid one is delivered with our Authentication-Results
// and Received-SPF, and a field that claimed our authserv-id is gone; a
// listed client is refused with the list's text; a list that cannot be
// asked makes the refusal temporary.
func TestInboundChecks(t *testing.T) {
	srv, err := dnstest.Start(
		"good.example. 300 IN TXT \"v=spf1 ip4:127.0.0.1 -all\"",
		"_dmarc.good.example. 300 IN TXT \"v=DMARC1; p=reject\"",
		"forged.example. 300 IN TXT \"v=spf1 ip4:192.0.2.1 -all\"",
		"_dmarc.forged.example. 300 IN TXT \"v=DMARC1; p=reject\"",
		"1.0.0.127.in-addr.arpa. 300 IN PTR client.good.example.",
		"client.good.example. 300 IN A 127.0.0.1",
		"3.0.0.127.bl.example. 300 IN A 127.0.0.2",
		"3.0.0.127.bl.example. 300 IN TXT \"Listed: see https://bl.example/127.0.0.3\"",
		"bl.example. 300 IN SOA ns.bl.example. hostmaster.bl.example. 1 3600 600 86400 300",
		"nodmarc.example. 300 IN TXT \"v=spf1 -all\"",
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cfg := strings.Replace(DefaultConfig, `listen "mx" { address = "{{ADDR}}" }`, `resolver = ["`+srv.Addr+`"]
listen "mx" {
  address = "{{ADDR}}"
  checks  = ["fcrdns", "spf", "dkim", "dmarc", "dnsbl"]
  dnsbl   = ["bl.example"]
  filters = [filter.spf-junk]
}
filter "spf-junk" {
  spf    = ["fail", "softfail"]
  action = "junk"
}
match {
  from   = "any"
  for    = "any"
  fcrdns = ["fail", "permerror"]
  reject = true
}`, 1)
	d := StartWith(t, bin, Options{Config: cfg})
	msg := func(mailFrom, from, extra string) string {
		return "expect 220\nsend EHLO client.good.example\nexpect 250\nsend MAIL FROM:<" + mailFrom + ">\nexpect 250\n" +
			"send RCPT TO:<reader@example.test>\nexpect 250\nsend DATA\nexpect 354\n" + extra +
			"send From: <" + from + ">\nsend Subject: checked\nsend\nsend hello\nsend .\n"
	}
	if err := RunDialogue(d.SMTPAddr, msg("a@forged.example", "boss@forged.example", "")+"expect 550 5.7.1\nsend QUIT\nexpect 221\n"); err != nil {
		t.Errorf("forged: %v", err)
	}
	if err := RunDialogue(d.SMTPAddr, msg("a@good.example", "a@good.example", "send Authentication-Results: mx.example.test; dkim=pass header.d=bank.example\n")+"expect 250\nsend QUIT\nexpect 221\n"); err != nil {
		t.Fatalf("valid: %v", err)
	}
	for _, m := range d.WaitMail(1, 10*time.Second) {
		unfolded := strings.ReplaceAll(m, "\n\t", " ")
		for _, want := range []string{
			`(?m)^Authentication-Results: mx\.example\.test; iprev=pass .*spf=pass smtp\.mailfrom=a@good\.example.*dkim=none.*dmarc=pass header\.from=good\.example`,
			`(?m)^Received-SPF: pass `,
		} {
			if !regexp.MustCompile(want).MatchString(unfolded) {
				t.Errorf("no /%s/ in:\n%s", want, m)
			}
		}
		if strings.Contains(m, "bank.example") {
			t.Errorf("the client's field claiming our authserv-id is still there:\n%s", m)
		}
	}
	// SPF fails, no DMARC policy: delivered, marked by the filter
	if err := RunDialogue(d.SMTPAddr, msg("a@nodmarc.example", "a@nodmarc.example", "")+"expect 250\nsend QUIT\nexpect 221\n"); err != nil {
		t.Fatalf("spf fail: %v", err)
	}
	junk := 0
	for _, m := range d.WaitMail(2, 10*time.Second) {
		if regexp.MustCompile(`(?m)^X-Spam: yes$`).MatchString(m) {
			junk++
			if !strings.Contains(m, "spf=fail") {
				t.Errorf("junk without spf=fail:\n%s", m)
			}
		}
	}
	if junk != 1 {
		t.Errorf("%d messages marked as junk, want 1", junk)
	}
	if err := RunDialogueFrom("127.0.0.3", d.SMTPAddr, "expect 554 5.7.1 Listed: see https://bl.example/127.0.0.3\nsend QUIT\nexpect 221\n"); err != nil {
		t.Errorf("listed client: %v", err)
	}
	// a client without reverse DNS: the match rule on FCrDNS refuses it
	if err := RunDialogueFrom("127.0.0.5", d.SMTPAddr, "expect 220\nsend EHLO nameless.example\nexpect 250\nsend MAIL FROM:<a@good.example>\nexpect 250\nsend RCPT TO:<reader@example.test>\nexpect 550 5.7.1\nsend QUIT\nexpect 221\n"); err != nil {
		t.Errorf("client without PTR: %v", err)
	}
	srv.ServFail("4.0.0.127.bl.example")
	if err := RunDialogueFrom("127.0.0.4", d.SMTPAddr, "expect 421\nexpect-close\n"); err != nil {
		t.Errorf("list failing: %v", err)
	}
	if !strings.Contains(d.Log(), "(spf=pass dkim=none dmarc=pass)") {
		t.Errorf("the accepted line does not name the results:\n%s", d.Log())
	}
	d.WaitStat("mfa.check.dmarc.fail", "1", 5*time.Second)
	d.WaitStat("mfa.check.dnsbl.listed", "1", 5*time.Second)
}

// TestDKIMSigning: mail relayed by an action with two keys (RSA and
// Ed25519) arrives signed by both, and python3-dkim verifies each.
func TestDKIMSigning(t *testing.T) {
	far := StartWith(t, bin, Options{Addr: fmt.Sprintf("127.0.0.2:%d", FreePort(t))})
	dir, _ := WriteConfig(t, "")
	rsaRecord := dkimKey(t, dir)
	edRecord := ed25519Key(t, dir)
	d := StartWith(t, bin, Options{Dir: dir, Config: `
hostname       = "out.example.test"
spool          = "spool"
control_socket = "run/smtpd.sock"

listen "mx" { address = "{{ADDR}}" }

dkim "rsa" {
  domain   = "example.test"
  selector = "test"
  key      = "key.pem"
}
dkim "ed" {
  domain   = "example.test"
  selector = "ed"
  key      = "ed.pem"
}

action "out" {
  relay = "smtp://` + far.SMTPAddr + `"
  sign  = [dkim.rsa, dkim.ed]
}

match {
  from   = "any"
  for    = "any"
  action = action.out
}
`})
	msg := sendSigned(t, d, far)
	if n := strings.Count(msg, "DKIM-Signature:"); n != 2 {
		t.Fatalf("%d signatures:\n%s", n, msg)
	}
	verifyDKIMWith(t, msg, map[string]string{"test._domainkey.example.test.": rsaRecord, "ed._domainkey.example.test.": edRecord})
}

// TestSRS: mail forwarded through an alias to another domain leaves
// with an SRS sender of ours; a bounce to that sender comes back to the
// original sender; a forged SRS address is refused with 550.
func TestSRS(t *testing.T) {
	farCfg := strings.Replace(DefaultConfig, `list = ["example.test"]`, `list = ["far.test"]`, 1)
	far := StartWith(t, bin, Options{Addr: fmt.Sprintf("127.0.0.2:%d", FreePort(t)), Config: farCfg})
	dir, _ := WriteConfig(t, "")
	if err := os.WriteFile(filepath.Join(dir, "srs.key"), []byte("a long secret for the tests of smtpd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := StartWith(t, bin, Options{Dir: dir, Config: `
hostname       = "fwd.example.test"
spool          = "spool"
control_socket = "run/smtpd.sock"

listen "mx" { address = "{{ADDR}}" }

srs {
  key    = "srs.key"
  domain = "example.test"
}

table "aliases" { map = { fwd = "reader@far.test" } }

action "local" {
  maildir  = "mail"
  alias    = table.aliases
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
action "origin" {
  maildir  = "mail"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
action "out" { relay = "smtp://` + far.SMTPAddr + `" }

match {
  from   = "any"
  for    = "example.test"
  action = action.local
}
match {
  from   = "any"
  for    = "origin.example"
  action = action.origin
}
match {
  from   = "local"
  for    = "any"
  action = action.out
}
`})
	send := func(from, rcpt, want string) error {
		return RunDialogue(d.SMTPAddr, "expect 220\nsend EHLO client.example.net\nexpect 250\nsend MAIL FROM:<"+from+">\nexpect 250\n"+
			"send RCPT TO:<"+rcpt+">\nexpect "+want+"\n"+map[bool]string{true: "send DATA\nexpect 354\nsend Subject: srs\nsend\nsend hi\nsend .\nexpect 250\n"}[want == "250"]+"send QUIT\nexpect 221\n")
	}
	if err := send("author@origin.example", "fwd@example.test", "250"); err != nil {
		t.Fatal(err)
	}
	var srsSender string
	for _, m := range far.WaitMail(1, 20*time.Second) {
		match := regexp.MustCompile(`(?m)^Return-Path: <(SRS0=[^=]+=[^=]+=origin\.example=author@example\.test)>`).FindStringSubmatch(m)
		if match == nil {
			t.Fatalf("the forwarded message's sender is not ours:\n%s", m)
		}
		srsSender = match[1]
	}
	// the far side's bounce, to our SRS sender
	if err := send("", srsSender, "250"); err != nil {
		t.Fatalf("bounce: %v", err)
	}
	for _, m := range d.WaitMail(1, 10*time.Second) {
		// the origin.example action's catch-all user: the SRS address
		// was turned back into the original sender's
		if !strings.Contains(m, "Delivered-To: sink@origin.example") || !strings.Contains(m, "for <"+srsSender+">") {
			t.Errorf("the bounce did not reach the original sender:\n%s", m)
		}
	}
	forged := "SRS0=abcd=" + srsSender[strings.Index(srsSender, "=")+6:]
	if err := send("", forged, "550 5.7.1"); err != nil {
		t.Errorf("forged %s: %v", forged, err)
	}
}

// TestARCSeal: mail relayed by an action that seals gets our ARC set,
// over the results of our checks, and python3-dkim validates the chain
// at the receiving end.
func TestARCSeal(t *testing.T) {
	srv, err := dnstest.Start("good.example. 300 IN TXT \"v=spf1 ip4:127.0.0.1 -all\"")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	far := StartWith(t, bin, Options{Addr: fmt.Sprintf("127.0.0.2:%d", FreePort(t))})
	dir, _ := WriteConfig(t, "")
	record := dkimKey(t, dir)
	d := StartWith(t, bin, Options{Dir: dir, Config: `
hostname       = "fwd.example.test"
spool          = "spool"
control_socket = "run/smtpd.sock"
resolver       = ["` + srv.Addr + `"]

listen "mx" {
  address = "{{ADDR}}"
  checks  = ["spf", "dkim", "arc"]
}

dkim "rsa" {
  domain   = "fwd.example.test"
  selector = "test"
  key      = "key.pem"
}

action "out" {
  relay = "smtp://` + far.SMTPAddr + `"
  seal  = [dkim.rsa]
}

match {
  from   = "any"
  for    = "any"
  action = action.out
}
`})
	if err := RunDialogue(d.SMTPAddr, "expect 220\nsend EHLO client.good.example\nexpect 250\nsend MAIL FROM:<a@good.example>\nexpect 250\n"+
		"send RCPT TO:<reader@example.test>\nexpect 250\nsend DATA\nexpect 354\nsend From: <a@good.example>\nsend Subject: sealed\n"+
		"send Date: Thu, 26 Nov 2026 12:00:00 +0000\nsend\nsend hello\nsend .\nexpect 250\nsend QUIT\nexpect 221\n"); err != nil {
		t.Fatal(err)
	}
	for _, m := range far.WaitMail(1, 20*time.Second) {
		if !regexp.MustCompile(`(?m)^ARC-Authentication-Results: i=1; fwd\.example\.test; spf=pass`).MatchString(strings.ReplaceAll(m, "\n\t", " ")) {
			t.Errorf("no ARC set with our results:\n%s", m)
		}
		crlf := strings.ReplaceAll(strings.ReplaceAll(m, "\r\n", "\n"), "\n", "\r\n")
		cmd := exec.Command("/usr/bin/python3", filepath.Join("testdata", "filters", "arcverify.py"), record)
		cmd.Stdin = strings.NewReader(crlf)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("arc_verify: %v\n%s\nmessage:\n%s", err, out, m)
		}
	}
}

// TestInboundDKIM: a message whose DKIM signature verifies passes DMARC
// by DKIM alignment although SPF fails, and our Authentication-Results
// say dkim=pass for its domain; the same message with its body changed
// fails DKIM, then DMARC, and is refused.
func TestInboundDKIM(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := dnstest.Start(
		"signed.example. 300 IN TXT \"v=spf1 -all\"",
		"_dmarc.signed.example. 300 IN TXT \"v=DMARC1; p=reject\"",
		"sel._domainkey.signed.example. 300 IN TXT \"v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub)+"\"",
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cfg := strings.Replace(DefaultConfig, `listen "mx" { address = "{{ADDR}}" }`, `resolver = ["`+srv.Addr+`"]
listen "mx" {
  address = "{{ADDR}}"
  checks  = ["spf", "dkim", "dmarc"]
}`, 1)
	d := StartWith(t, bin, Options{Config: cfg})
	body := "From: <news@signed.example>\r\nTo: <reader@example.test>\r\nSubject: signed\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\n\r\nThe signed body.\r\n"
	signer := &dkim.Signer{Domain: "signed.example", Selector: "sel", Key: key}
	field, err := signer.Sign(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	send := func(msg, want string) error {
		script := "expect 220\nsend EHLO client.example.net\nexpect 250\nsend MAIL FROM:<bounces@signed.example>\nexpect 250\n" +
			"send RCPT TO:<reader@example.test>\nexpect 250\nsend DATA\nexpect 354\n"
		for _, line := range strings.Split(strings.TrimSuffix(msg, "\r\n"), "\r\n") {
			script += "sendraw " + strconv.Quote(line+"\r\n") + "\n"
		}
		return RunDialogue(d.SMTPAddr, script+"send .\nexpect "+want+"\nsend QUIT\nexpect 221\n")
	}
	if err := send(field+body, "250"); err != nil {
		t.Fatalf("signed: %v", err)
	}
	for _, m := range d.WaitMail(1, 10*time.Second) {
		unfolded := strings.ReplaceAll(m, "\n\t", " ")
		if !regexp.MustCompile(`(?m)^Authentication-Results: mx\.example\.test; spf=fail .*dkim=pass header\.d=signed\.example.*dmarc=pass`).MatchString(unfolded) {
			t.Errorf("results of a good signature:\n%s", m)
		}
	}
	if err := send(field+strings.Replace(body, "signed body", "changed body", 1), "550 5.7.1"); err != nil {
		t.Errorf("tampered: %v", err)
	}
	d.WaitStat("mfa.check.dkim.fail", "1", 5*time.Second)
}
