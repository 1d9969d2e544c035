package regress

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"smtpd/internal/dns/dnstest"
)

// TestETRN: remote queue starting (RFC 1985). A relay holds mail for
// backup.test and sub.backup.test, whose exchanger was down at the first
// try; with retry_base at an hour only a request can make it go. A
// client outside the listener's etrn table gets 459 and starts nothing;
// one in it (127.0.0.1) gets 253 for backup.test, and that mail alone
// arrives at once, although the route to the exchanger is still
// penalised for its failure; smtpctl schedule domain does the same for
// the administrator, "@backup.test" taking the subdomain's mail too.
func TestETRN(t *testing.T) {
	port := FreePort(t)
	zone, err := dnstest.Start(
		"backup.test. 300 IN MX 10 mx.backup.test.",
		"sub.backup.test. 300 IN MX 10 mx.backup.test.",
		"mx.backup.test. 300 IN A 127.0.0.5",
		"5.0.0.127.in-addr.arpa. 300 IN PTR mx.backup.test.",
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(zone.Close)
	out := StartWith(t, bin, Options{Config: fmt.Sprintf(`
hostname       = "out.example.net"
spool          = "spool"
control_socket = "run/smtpd.sock"
resolver       = ["%s"]
mx_port        = %d

limits {
  retry_base = "1h"
}

table "sites" { list = ["127.0.0.1", "192.0.2.0/24"] }

listen "mx" {
  address = "{{ADDR}}"
  etrn    = table.sites
}

action "out" { relay = "mx" }

match {
  from   = "any"
  for    = "any"
  action = action.out
}
`, zone.Addr, port)})
	send := func(rcpt, subject string) {
		t.Helper()
		if err := RunDialogue(out.SMTPAddr, "expect 220\nsend EHLO client.example.net\nexpect 250\n"+
			"send MAIL FROM:<author@out.example.net>\nexpect 250\nsend RCPT TO:<"+rcpt+">\nexpect 250\n"+
			"send DATA\nexpect 354\nsend Subject: "+subject+"\nsend\nsend held for the site\nsend .\nexpect 250\n"+
			"send QUIT\nexpect 221\n"); err != nil {
			t.Fatal(err)
		}
	}
	send("a@backup.test", "first")
	send("b@sub.backup.test", "second")
	// the exchanger is down: both wait an hour
	out.WaitStat("scheduler.delivery.tempfail", "2", 20*time.Second)

	// the site comes up
	far := StartWith(t, bin, Options{
		Config: strings.NewReplacer(`hostname       = "mx.example.test"`, `hostname       = "mx.backup.test"`,
			`table "domains" { list = ["example.test"] }`, `table "domains" { list = ["backup.test", "sub.backup.test"] }`).Replace(DefaultConfig),
		Addr: fmt.Sprintf("127.0.0.5:%d", port),
	})

	// a client the table does not hold: 459, and nothing moves
	if err := RunDialogueFrom("127.0.0.2", out.SMTPAddr, `
expect 220
send EHLO site.backup.test
expect 250 (?m)^250-ETRN$
send ETRN backup.test
expect 459 ^459 4\.7\.1 Node backup\.test not allowed: client not authorized$
send ETRN @backup.test
expect 459
send QUIT
expect 221
`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := len(far.Mail()); n != 0 {
		t.Fatalf("%d messages arrived after a refused ETRN", n)
	}

	// the site itself: syntax and sequence first, then its domain
	if err := RunDialogue(out.SMTPAddr, `
expect 220
send ETRN backup.test
expect 503
send EHLO site.backup.test
expect 250 (?m)^250-ETRN$
send ETRN
expect 501
send ETRN backup.test now
expect 501
send ETRN #backup
expect 459 ^459 4\.7\.1 Node #backup not allowed: queue names are not supported$
send ETRN nothing.test
expect 251 ^251 2\.0\.0 OK, no messages waiting for node nothing\.test$
send MAIL FROM:<site@backup.test>
expect 250
send ETRN backup.test
expect 503
send RSET
expect 250
send ETRN Backup.Test
expect 253 ^253 2\.0\.0 OK, 1 pending messages for node Backup\.Test started$
send QUIT
expect 221
`); err != nil {
		t.Fatal(err)
	}
	mail := far.WaitMail(1, 10*time.Second)
	for _, m := range mail {
		if !strings.Contains(m, "Subject: first") {
			t.Errorf("ETRN backup.test brought another message:\n%s", m)
		}
	}
	if !strings.Contains(out.Log(), "route any>127.0.0.5 enabled again") {
		t.Errorf("the route's penalty was not lifted:\n%s", out.Log())
	}
	// the subdomain's mail is not backup.test's
	time.Sleep(time.Second)
	if n := len(far.Mail()); n != 1 {
		t.Errorf("%d messages arrived, want only backup.test's", n)
	}

	// the administrator: the exact domain has nothing left, @ takes
	// the subdomain
	if o, e, code := out.Smtpctl("schedule", "domain", "backup.test"); code != 0 || o != "0 envelopes scheduled\n" {
		t.Errorf("smtpctl schedule domain backup.test: %q %q %d", o, e, code)
	}
	if o, e, code := out.Smtpctl("schedule", "domain", "@backup.test"); code != 0 || o != "1 envelopes scheduled\n" {
		t.Fatalf("smtpctl schedule domain @backup.test: %q %q %d", o, e, code)
	}
	mail = far.WaitMail(2, 10*time.Second)
	second := 0
	for _, m := range mail {
		if strings.Contains(m, "Subject: second") {
			second++
		}
	}
	if second != 1 {
		t.Errorf("the subdomain's message arrived %d times", second)
	}
	if o, _, code := out.Smtpctl("schedule", "domain", "a@b"); code == 0 {
		t.Errorf("smtpctl schedule domain a@b accepted: %q", o)
	}
	out.WaitStat("scheduler.delivery.ok", "2", 10*time.Second)
	if st := out.Stats(); st["smtp.etrn"] != "2" || st["smtp.etrn.refused"] != "3" {
		t.Errorf("smtp.etrn=%s smtp.etrn.refused=%s, want 2 (251 and 253) and 3 (459)", st["smtp.etrn"], st["smtp.etrn.refused"])
	}
	// a listener without etrn neither offers nor takes it
	if err := RunDialogue(far.SMTPAddr, `
expect 220
send EHLO site.backup.test
expect 250
send ETRN backup.test
expect 502
send QUIT
expect 221
`); err != nil {
		t.Fatal(err)
	}
}
