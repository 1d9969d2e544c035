package regress

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tryRcpt runs a session with d up to RCPT TO:<to>, whose reply must
// start with want, and quits.
func tryRcpt(d *Daemon, to, want string) error {
	return RunDialogue(d.SMTPAddr, "expect 220\nsend EHLO client.example.net\nexpect 250\nsend MAIL FROM:<x@example.net>\nexpect 250\n"+
		"send RCPT TO:<"+to+">\nexpect "+want+"\nsend QUIT\nexpect 221\n")
}

// TestProcTable: a table program (OpenSMTPD's table protocol, a small
// script here) answers the domains and virtual users; when it exits or
// hangs, the recipient being looked up gets 451, the program is started
// again, and the next recipient is served, without a stop of smtpd.
func TestProcTable(t *testing.T) {
	dir, _ := WriteConfig(t, "")
	src, err := os.ReadFile(filepath.Join("testdata", "tables", "vusers.py"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vusers.py"), src, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(`table "domains" { list = ["example.test"] }`, `table "vusers" {
  proc    = "/usr/bin/python3 {{DIR}}/vusers.py"
  timeout = "1s"
  cache   = "0s"
}`, `virtual  = { "@" = "sink" }`, `virtual  = table.vusers`, `for    = table.domains`, `for    = table.vusers`).Replace(DefaultConfig)
	d := StartWith(t, bin, Options{Dir: dir, Config: cfg})
	served := func() {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := tryRcpt(d, "alice@example.test", "250")
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the table program did not come back: %v\n%s", err, d.Log())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	served()
	if err := tryRcpt(d, "nobody@example.test", "550 5.1.1"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"crash@example.test", "hang@example.test"} {
		began := time.Now()
		if err := tryRcpt(d, bad, "451"); err != nil {
			t.Errorf("%s: %v", bad, err)
		}
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("%s: %v for a table with a 1 s timeout", bad, took)
		}
		if d.Exited(0) {
			t.Fatalf("smtpd stopped:\n%s", d.Log())
		}
		served()
	}
	if out, _, _ := d.Smtpctl("show", "table", "vusers", "alias", "team@example.test"); strings.TrimSpace(out) != "alice@example.test" {
		t.Errorf("show table: %q", out)
	}
	if out, _, code := d.Smtpctl("update", "table", "vusers"); code != 0 || !strings.Contains(out, "reloaded") {
		t.Errorf("update table: %d %s", code, out)
	}
}
