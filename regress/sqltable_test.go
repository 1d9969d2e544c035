package regress

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"smtpd/internal/dns/dnstest"
	"smtpd/internal/table/sqltable/pgtest"
)

// pgTables are the tables of a host that keeps its domains, virtual
// users, passwords and senders in PostgreSQL.
func pgTables(dsn, cache string) string {
	return `
table "domains" {
  postgres = "` + dsn + `"
  query    = { domain = "SELECT domain FROM domains WHERE domain = $1" }
  cache    = "` + cache + `"
}
table "vusers" {
  postgres = "` + dsn + `"
  query    = { alias = "SELECT dest FROM virtuals WHERE address = $1" }
  cache    = "` + cache + `"
}
table "users" {
  postgres = "` + dsn + `"
  query    = { credentials = "SELECT username, password FROM users WHERE username = $1" }
  cache    = "` + cache + `"
}
table "senders" {
  postgres = "` + dsn + `"
  query    = { mailaddrmap = "SELECT address FROM senders WHERE username = $1" }
  cache    = "` + cache + `"
}
`
}

// TestPostgresTables: a real PostgreSQL server holds the domains,
// virtual users, AUTH passwords and allowed senders; mail is delivered
// through it. While it is stopped, recipients get 451, never a 5xx, and
// mail flows again when it is back, without a restart of smtpd. Two
// instances share it: a user inserted is accepted by both once the
// cache has expired, at once after smtpctl update table.
func TestPostgresTables(t *testing.T) {
	requireRoot(t, "PostgreSQL runs as its own user")
	db := pgtest.Start(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	db.MustExec(`CREATE TABLE domains (domain text PRIMARY KEY);
CREATE TABLE virtuals (address text, dest text);
CREATE TABLE users (username text PRIMARY KEY, password text);
CREATE TABLE senders (username text, address text);
INSERT INTO domains VALUES ('example.test');
INSERT INTO virtuals VALUES ('alice@example.test', 'sink'), ('team@example.test', 'alice@example.test');
INSERT INTO users VALUES ('alice', '` + string(hash) + `');
INSERT INTO senders VALUES ('alice', 'alice@example.test');
GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC;`)
	certDir := t.TempDir()
	os.Chmod(certDir, 0o755)
	cert, key := writeCert(t, certDir)
	conf := func(cache string) string {
		return `
hostname       = "mx.example.test"
spool          = "spool"
control_socket = "run/smtpd.sock"
` + pgTables(db.DSN, cache) + `
listen "mx" {
  address    = "{{ADDR}}"
  tls        = "starttls"
  cert       = "` + cert + `"
  key        = "` + key + `"
  auth       = "optional"
  auth_table = table.users
  senders    = table.senders
}

action "local" {
  maildir  = "mail"
  virtual  = table.vusers
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}

match {
  from   = "any"
  for    = table.domains
  action = action.local
}
`
	}
	port := FreePort(t)
	d := StartWith(t, bin, Options{Config: conf("2s"), Addr: fmt.Sprintf("127.0.0.2:%d", port)})
	other := StartWith(t, bin, Options{Config: conf("2s"), Addr: fmt.Sprintf("127.0.0.3:%d", port)})
	send := func(d *Daemon, to string) error {
		return RunDialogue(d.SMTPAddr, "expect 220\nsend EHLO client.example.net\nexpect 250\nsend MAIL FROM:<x@example.net>\nexpect 250\n"+
			"send RCPT TO:<"+to+">\nexpect 250\nsend DATA\nexpect 354\nsend Subject: through the database\nsend\nsend hi\nsend .\nexpect 250\nsend QUIT\nexpect 221\n")
	}
	// virtual delivery and an alias, both from the database
	for _, to := range []string{"alice@example.test", "team@example.test"} {
		if err := send(d, to); err != nil {
			t.Fatalf("%s: %v", to, err)
		}
	}
	d.WaitMail(2, 10*time.Second)
	if err := tryRcpt(d, "nobody@example.test", "550 5.1.1"); err != nil {
		t.Error(err)
	}
	if err := tryRcpt(d, "x@elsewhere.example", "550 5.7.1"); err != nil {
		t.Error(err)
	}
	// AUTH and senders from the database
	auth := func(from string) string {
		return swaksRun("--server", d.SMTPAddr, "--helo", "client.example.net", "--from", from, "--to", "alice@example.test",
			"--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "s3cret", "--timeout", "20")
	}
	if out := auth("alice@example.test"); !strings.Contains(out, "235 2.7.0") || !strings.Contains(out, "Message accepted") {
		t.Errorf("AUTH and allowed sender:\n%s", out)
	}
	if out := auth("bob@example.test"); !strings.Contains(out, "553 5.7.1") {
		t.Errorf("a sender alice may not use:\n%s", out)
	}
	// the database down: temporary failures only
	db.Stop()
	if err := tryRcpt(other, "alice@example.test", "451"); err != nil {
		t.Errorf("database down: %v", err)
	}
	db.Start()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := send(other, "alice@example.test")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail after the database came back: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// a user added in the database: both instances, after the cache's 2 s
	for _, x := range []*Daemon{d, other} {
		if err := tryRcpt(x, "carol@example.test", "550 5.1.1"); err != nil {
			t.Fatal(err)
		}
	}
	db.MustExec(`INSERT INTO virtuals VALUES ('carol@example.test', 'sink'), ('dave@example.test', 'sink')`)
	// at once after update table
	if out, _, code := d.Smtpctl("update", "table", "vusers"); code != 0 {
		t.Fatalf("update table: %s", out)
	}
	if err := tryRcpt(d, "dave@example.test", "250"); err != nil {
		t.Errorf("after update table: %v", err)
	}
	time.Sleep(2500 * time.Millisecond)
	for _, x := range []*Daemon{d, other} {
		if err := tryRcpt(x, "carol@example.test", "250"); err != nil {
			t.Errorf("%s after the cache expired: %v", x.SMTPAddr, err)
		}
	}
	if out, _, _ := d.Smtpctl("show", "table", "vusers", "alias", "team@example.test"); strings.TrimSpace(out) != "alice@example.test" {
		t.Errorf("show table: %q", out)
	}
	if strings.Contains(d.Log()+other.Log(), "permanent failure") {
		t.Errorf("a bounce while the database was down")
	}
	// the two instances are equal MXs: with one down, a sender's mail
	// goes through the other
	dnsSrv, err := dnstest.Start("example.test. 300 IN MX 10 mx1.example.test.", "example.test. 300 IN MX 10 mx2.example.test.",
		"mx1.example.test. 300 IN A 127.0.0.2", "mx2.example.test. 300 IN A 127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dnsSrv.Close)
	d.Kill()
	sender := StartWith(t, bin, Options{Config: fmt.Sprintf(`
hostname       = "out.example.net"
spool          = "spool"
control_socket = "run/smtpd.sock"
resolver       = ["%s"]
mx_port        = %d

listen "mx" { address = "{{ADDR}}" }
action "out" { relay = "mx" }
match {
  from   = "any"
  for    = "any"
  action = action.out
}
`, dnsSrv.Addr, port)})
	before := len(other.Mail())
	for i := range 4 {
		if err := send(sender, "alice@example.test"); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	other.WaitMail(before+4, 60*time.Second)
}
