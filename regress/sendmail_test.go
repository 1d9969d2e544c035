package regress

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sendmailConfig delivers to.., cc.. and bcc@example.test to three
// maildirs, so that each recipient's copy can be told apart.
const sendmailConfig = `
hostname       = "mx.example.test"
spool          = "spool"
control_socket = "run/smtpd.sock"

limits {
  retry_base = "1s"
}

listen "mx" { address = "{{ADDR}}" }

action "local" {
  maildir  = "mail/${user.name}"
  virtual  = { "to@example.test" = "u1", "cc@example.test" = "u2", "bcc@example.test" = "u3", "@" = "u1" }
  userbase = {
    u1 = "{{UID}}:{{GID}}:{{DIR}}"
    u2 = "{{UID}}:{{GID}}:{{DIR}}"
    u3 = "{{UID}}:{{GID}}:{{DIR}}"
  }
}

match {
  from   = "local"
  for    = "any"
  action = action.local
}
`

var installOnce struct {
	sync.Once
	dir string
	err error
	out []byte
}

// installed runs `make install` into a temporary root, once, and
// returns the directory of its sbin.
func installed(t *testing.T) string {
	t.Helper()
	installOnce.Do(func() {
		root, _ := filepath.Abs("..")
		installOnce.dir = filepath.Join(filepath.Dir(bin.Smtpd), "root")
		cmd := exec.Command("make", "-C", root, "install", "DESTDIR="+installOnce.dir, "PREFIX=/usr", "SYSCONF=/etc/mail")
		installOnce.out, installOnce.err = cmd.CombinedOutput()
	})
	if installOnce.err != nil {
		t.Fatalf("make install: %v\n%s", installOnce.err, installOnce.out)
	}
	os.Chmod(installOnce.dir, 0o755)
	return filepath.Join(installOnce.dir, "usr", "sbin")
}

// maildir returns the messages delivered to user's maildir.
func maildir(d *Daemon, user string) []string {
	files, _ := filepath.Glob(filepath.Join(d.Dir, "mail", user, "new", "*"))
	var out []string
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, string(b))
		}
	}
	return out
}

func waitMaildir(t *testing.T, d *Daemon, user string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := maildir(d, user)
		if len(m) >= n {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d messages, want %d\n%s", user, len(m), n, d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// run runs a command with stdin, as cred if set, and returns its output.
func run(t *testing.T, cred *syscall.Credential, stdin, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSendmailHeaders: `sendmail -t` through the installed link delivers
// to To, Cc and Bcc, with the Bcc field gone and From, Date and
// Message-Id added; send-mail and recipients on the command line work
// too, and s-nail sends through our sendmail.
func TestSendmailHeaders(t *testing.T) {
	sbin := installed(t)
	d := StartWith(t, bin, Options{Config: sendmailConfig})
	msg := "To: to@example.test\nCc: \"Cee\" <cc@example.test>\nBcc: bcc@example.test\nSubject: headers\n\nhi\n"
	if out, err := run(t, nil, msg, filepath.Join(sbin, "sendmail"), "-C", d.Config, "-t"); err != nil {
		t.Fatalf("sendmail -t: %v\n%s", err, out)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	// From carries the full name from the password database, if any
	from := regexp.MustCompile(`\nFrom: (.* <)?` + regexp.QuoteMeta(me.Username+"@mx.example.test") + `>?\n`)
	for _, u := range []string{"u1", "u2", "u3"} {
		m := waitMaildir(t, d, u, 1)[0]
		for _, want := range []string{"Subject: headers\n", "\nDate: ", "\nMessage-Id: <", "Received: from localhost (user " + me.Username + " uid " + me.Uid + ")"} {
			if !strings.Contains(m, want) {
				t.Errorf("%s: no %q in\n%s", u, want, m)
			}
		}
		if !from.MatchString(m) {
			t.Errorf("%s: no From of %s in\n%s", u, me.Username, m)
		}
		if strings.Contains(strings.ToLower(m), "bcc") {
			t.Errorf("%s: Bcc left in\n%s", u, m)
		}
	}

	// recipients as arguments, a dot line ending the message without -i
	if out, err := run(t, nil, "Subject: args\n\nfirst\n.\nnot sent\n", filepath.Join(sbin, "send-mail"), "-C", d.Config, "-f", "me@example.org", "-F", "Me", "cc@example.test"); err != nil {
		t.Fatalf("send-mail: %v\n%s", err, out)
	}
	m := waitMaildir(t, d, "u2", 2)
	var args string
	for _, x := range m {
		if strings.Contains(x, "Subject: args") {
			args = x
		}
	}
	if !strings.Contains(args, "Return-Path: <me@example.org>") || !strings.Contains(args, "From: \"Me\" <me@example.org>") || strings.Contains(args, "not sent") {
		t.Errorf("send-mail message:\n%s", args)
	}

	out, err := run(t, nil, "body from s-nail\n", "s-nail", "-:/", "-S", "sendwait", "-S", "mta="+filepath.Join(sbin, "sendmail"),
		"-S", "mta-arguments=-C "+d.Config, "-s", "via s-nail", "to@example.test")
	if err != nil {
		t.Fatalf("s-nail: %v\n%s", err, out)
	}
	found := false
	for _, x := range waitMaildir(t, d, "u1", 2) {
		found = found || strings.Contains(x, "Subject: via s-nail") && strings.Contains(x, "body from s-nail")
	}
	if !found {
		t.Errorf("s-nail's message not delivered: %v", maildir(d, "u1"))
	}
	d.WaitStat("control.enqueue", "3", 5*time.Second)

	// -bs: SMTP on standard input and output
	out, err = run(t, nil, "EHLO me\r\nMAIL FROM:<x@example.org>\r\nRCPT TO:<bcc@example.test>\r\nDATA\r\nSubject: bs\r\n\r\nhi\r\n.\r\nQUIT\r\n", filepath.Join(sbin, "sendmail"), "-C", d.Config, "-bs")
	if err != nil || !strings.Contains(out, "250 2.0.0") || !strings.Contains(out, "221 ") {
		t.Errorf("sendmail -bs: %v\n%s", err, out)
	}
	waitMaildir(t, d, "u3", 2)
}

// TestSendmailOffline: with the daemon down sendmail exits 0 and keeps
// the message in offline/, mode 0600, which no other user can read or
// replace; the next start submits it as its user.
func TestSendmailOffline(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to act as two users")
	}
	sbin := installed(t)
	d := StartWith(t, bin, Options{Config: sendmailConfig})
	dir := d.Dir
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(10 * time.Second); code != 0 {
		t.Fatalf("stop: %d", code)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if out, err := run(t, nobody, "To: to@example.test\nSubject: offline\n\nkept\n", filepath.Join(sbin, "sendmail"), "-C", d.Config, "-t"); err != nil {
		t.Fatalf("sendmail with the daemon down: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "spool", "offline", "*"))
	if len(files) != 1 {
		t.Fatalf("offline/ holds %v", files)
	}
	fi, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o600 || st.Uid != 65534 {
		t.Errorf("offline file mode %v owner %d", fi.Mode(), st.Uid)
	}
	other := &syscall.Credential{Uid: 1, Gid: 1} // daemon
	for _, attack := range []string{
		"cat " + files[0],
		"echo forged > /tmp/forged.$$ && mv -f /tmp/forged.$$ " + files[0] + "; s=$?; rm -f /tmp/forged.$$; exit $s",
		"rm -f " + files[0],
		"echo forged >> " + files[0],
	} {
		if out, err := run(t, other, "", "sh", "-c", attack); err == nil {
			t.Errorf("another user could %q: %s", attack, out)
		}
	}

	d2 := StartWith(t, bin, Options{Config: sendmailConfig, Dir: dir})
	m := waitMaildir(t, d2, "u1", 1)[0]
	if !strings.Contains(m, "kept") || !strings.Contains(m, "Received: from localhost (user nobody uid 65534)") || !strings.Contains(m, "Return-Path: <nobody@mx.example.test>") {
		t.Errorf("offline message:\n%s", m)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if files, _ := filepath.Glob(filepath.Join(dir, "spool", "offline", "*")); len(files) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("offline file not removed after submission\n%s", d2.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNewaliasesMakemap: newaliases reloads the alias table files of the
// running daemon; makemap checks a table file and writes it sorted.
func TestNewaliasesMakemap(t *testing.T) {
	sbin := installed(t)
	dir := t.TempDir()
	aliases := filepath.Join(dir, "aliases")
	os.WriteFile(aliases, []byte("postmaster: root\nroot: sink\n"), 0o644)
	conf := strings.Replace(DefaultConfig, `  virtual  = { "@" = "sink" }`, `  alias    = table.aliases`, 1)
	conf = strings.Replace(conf, `table "domains"`, `table "aliases" { file = "`+aliases+`" }
table "domains"`, 1)
	d := StartWith(t, bin, Options{Config: conf})
	if out, err := run(t, nil, "", filepath.Join(sbin, "newaliases"), "-C", d.Config); err != nil || out != "table aliases reloaded\n" {
		t.Errorf("newaliases: %v %q", err, out)
	}
	d.WaitStat("lookup.table.reload", "1", 5*time.Second)

	makemap := filepath.Join(sbin, "makemap")
	if out, err := run(t, nil, "", makemap, "-t", "aliases", aliases); err != nil || out != aliases+": 2 entries (map)\n" {
		t.Errorf("makemap: %v %q", err, out)
	}
	sorted := filepath.Join(dir, "sorted")
	if out, err := run(t, nil, "", makemap, "-o", sorted, aliases); err != nil {
		t.Errorf("makemap -o: %v %q", err, out)
	}
	if b, _ := os.ReadFile(sorted); string(b) != "postmaster\troot\nroot\tsink\n" {
		t.Errorf("makemap wrote %q", b)
	}
	os.WriteFile(aliases, []byte("a: b\na: c\n"), 0o644)
	if out, err := run(t, nil, "", makemap, aliases); err == nil || !strings.Contains(out, "line 2") {
		t.Errorf("makemap on a broken file: %v %q", err, out)
	}
}
