package regress

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"smtpd/internal/dns/dnstest"
)

// swaksRun runs swaks and returns its transcript, whether or not the
// transaction succeeded.
func swaksRun(args ...string) string {
	out, _ := exec.Command("swaks", args...).CombinedOutput()
	return string(out)
}

// TestSubmissionAuth: a submission listener with a bcrypt auth table.
// PLAIN and LOGIN work under STARTTLS and are not offered in clear; an
// authenticated user relays to another smtpd, an anonymous one may not;
// wrong passwords get 535 and, repeated, lock the address out; the
// senders table limits MAIL FROM.
func TestSubmissionAuth(t *testing.T) {
	far := StartWith(t, bin, Options{Addr: fmt.Sprintf("127.0.0.2:%d", FreePort(t))})
	dnsSrv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dnsSrv.Close)
	certDir := t.TempDir()
	os.Chmod(certDir, 0o755)
	cert, key := writeCert(t, certDir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	required := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	conf := `
hostname       = "submit.example.net"
spool          = "spool"
control_socket = "run/smtpd.sock"
resolver       = ["` + dnsSrv.Addr + `"]

limits { auth_failures_per_ip = 5 }

table "users"   { map = { alice = "` + string(hash) + `", bob = "` + string(hash) + `" } }
table "senders" { map = { alice = "alice@example.net", bob = "@example.org" } }

listen "sub" {
  address    = "{{ADDR}}"
  tls        = "starttls"
  cert       = "` + cert + `"
  key        = "` + key + `"
  auth       = "optional"
  auth_table = table.users
  senders    = table.senders
}
listen "required" {
  address    = "` + required + `"
  tls        = "starttls"
  cert       = "` + cert + `"
  key        = "` + key + `"
  auth       = true
  auth_table = table.users
}

action "out" { relay = "smtp://` + far.SMTPAddr + `" }

match {
  from   = "auth"
  for    = "any"
  action = action.out
}
`
	d := StartWith(t, bin, Options{Config: conf})
	send := func(mech, user, password, from string, extra ...string) string {
		args := []string{"--server", d.SMTPAddr, "--helo", "client.example.net", "--from", from, "--to", "friend@example.test",
			"--header", "Subject: auth " + mech, "--timeout", "20"}
		if mech != "" {
			args = append(args, "--auth", mech, "--auth-user", user, "--auth-password", password)
		}
		return swaksRun(append(args, extra...)...)
	}

	for _, mech := range []string{"PLAIN", "LOGIN"} {
		out := send(mech, "alice", "s3cret", "alice@example.net", "--tls")
		if !strings.Contains(out, "235 2.7.0") || !strings.Contains(out, "Message accepted") {
			t.Fatalf("AUTH %s:\n%s", mech, out)
		}
	}
	for _, m := range far.WaitMail(2, 20*time.Second) {
		if !strings.Contains(m, "with ESMTPSA id") {
			t.Errorf("Received does not say ESMTPSA:\n%s", m)
		}
	}

	if out := send("", "", "", "alice@example.net", "--quit-after", "EHLO"); strings.Contains(out, "AUTH") {
		t.Errorf("AUTH offered without TLS:\n%s", out)
	}
	if out := send("", "", "", "alice@example.net", "--tls", "--quit-after", "EHLO"); !strings.Contains(out, "250-AUTH PLAIN LOGIN") && !strings.Contains(out, "250 AUTH PLAIN LOGIN") {
		t.Errorf("AUTH not offered under TLS:\n%s", out)
	}
	if out := send("", "", "", "alice@example.net", "--tls"); !strings.Contains(out, "550 5.7.1") {
		t.Errorf("anonymous relaying not refused with 550 5.7.1:\n%s", out)
	}
	if out := swaksRun("--server", required, "--from", "x@example.net", "--to", "friend@example.test", "--tls", "--timeout", "20"); !strings.Contains(out, "530 5.7.0") {
		t.Errorf("MAIL without AUTH on an auth = true listener:\n%s", out)
	}
	if out := send("PLAIN", "bob", "s3cret", "alice@example.net", "--tls"); !strings.Contains(out, "553 5.7.1") {
		t.Errorf("bob sent as alice:\n%s", out)
	}
	if out := send("LOGIN", "bob", "s3cret", "bob@example.org", "--tls"); !strings.Contains(out, "Message accepted") {
		t.Errorf("bob could not use his domain:\n%s", out)
	}

	for i := range 5 {
		start := time.Now()
		out := send("PLAIN", "alice", "wrong", "alice@example.net", "--tls")
		if !strings.Contains(out, "535 5.7.8") {
			t.Fatalf("wrong password %d:\n%s", i, out)
		}
		if time.Since(start) < 900*time.Millisecond {
			t.Errorf("failure %d answered at once", i)
		}
	}
	if out := send("PLAIN", "alice", "s3cret", "alice@example.net", "--tls"); !strings.Contains(out, "454 4.7.0 Too many failed") {
		t.Errorf("sixth attempt not rate-limited:\n%s", out)
	}
	far.WaitMail(3, 20*time.Second)
	d.WaitStat("smtp.auth.refused", "1", 5*time.Second)
	st := d.Stats()
	if st["smtp.auth.ok"] != "4" || st["smtp.auth.fail"] != "5" || st["smtp.auth.refused"] != "1" {
		t.Errorf("auth stats: %v", st)
	}
}
