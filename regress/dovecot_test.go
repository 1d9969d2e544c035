package regress

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dovecot is a private Dovecot LMTP server run by a test.
type dovecot struct {
	Dir    string // its temporary directory
	Conf   string // dovecot.conf
	Addr   string // the TCP LMTP listener, 127.0.0.1:port
	Socket string // the unix LMTP listener
	Log    string // log_path

	doveadm string
	cmd     *exec.Cmd
	exited  chan struct{}
	out     *syncBuffer
}

// dovecotUsers are the mailboxes of the private Dovecot; any other
// address is unknown to its userdb.
var dovecotUsers = []string{"alice", "bob"}

// dovecotBinary finds one of Dovecot's programs or fails the test with
// the Debian package that has it.
func dovecotBinary(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	// root's PATH has sbin, a user's may not
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/lib/dovecot"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	t.Fatalf("%s not found: this test needs Debian's %s (make test-deps installs it)", name, pkg)
	return ""
}

// startDovecot starts `dovecot -F` on a configuration of its own in a
// temporary directory, with LMTP on a free loopback port and on a unix
// socket, and stops it when the test ends. Mail is stored as maildirs
// under DIR/mail/USER.
//
// As root, Dovecot refuses to run mail processes as root (uid 0 is
// below first_valid_uid): the mail users get the uid and gid of the
// system user nobody, and first_valid_uid = last_valid_uid = that uid,
// so no other uid may be used. Dovecot's own processes run as the
// dovecot and dovenull users Debian's dovecot-core creates. Run by
// another user, everything runs as that user, without anvil's chroot.
func startDovecot(t *testing.T) *dovecot {
	t.Helper()
	master := dovecotBinary(t, "dovecot", "dovecot-core")
	doveadm := dovecotBinary(t, "doveadm", "dovecot-core")
	if _, err := os.Stat("/usr/lib/dovecot/lmtp"); err != nil {
		t.Fatalf("Dovecot's LMTP server /usr/lib/dovecot/lmtp is missing: this test needs Debian's dovecot-lmtpd (make test-deps installs it): %v", err)
	}
	out, err := exec.Command(master, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("dovecot --version: %v\n%s", err, out)
	}
	version := strings.TrimSpace(string(out))
	if !strings.HasPrefix(version, "2.3.") {
		// 2.4 renamed most of the settings below
		t.Fatalf("dovecot %s: this test's configuration is for Dovecot 2.3 (Debian bookworm's dovecot-core)", version)
	}

	var mailUser, internalUser, loginUser *user.User
	unprivileged := ""
	if os.Geteuid() == 0 {
		for _, u := range []struct {
			name string
			dst  **user.User
			pkg  string
		}{{"nobody", &mailUser, "base-passwd"}, {"dovecot", &internalUser, "dovecot-core"}, {"dovenull", &loginUser, "dovecot-core"}} {
			found, err := user.Lookup(u.name)
			if err != nil {
				t.Fatalf("user %s: %v (it comes with Debian's %s)", u.name, err, u.pkg)
			}
			*u.dst = found
		}
	} else {
		me, err := user.Current()
		if err != nil {
			t.Fatal(err)
		}
		mailUser, internalUser, loginUser = me, me, me
		// the internal group (dovecot) owns some sockets and anvil
		// chroots: neither is open to an unprivileged master
		group, err := user.LookupGroupId(me.Gid)
		if err != nil {
			t.Fatal(err)
		}
		unprivileged = "default_internal_group = " + group.Name + "\nservice anvil {\n  chroot =\n}\n"
	}

	dir := t.TempDir()
	// the mail processes (nobody) and the auth process (dovecot) must
	// reach the files below dir: t.TempDir makes dir and its parent 0700
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	mail := filepath.Join(dir, "mail")
	if err := os.Mkdir(mail, 0o700); err != nil {
		t.Fatal(err)
	}
	var uid, gid int
	fmt.Sscan(mailUser.Uid, &uid)
	fmt.Sscan(mailUser.Gid, &gid)
	if err := os.Lchown(mail, uid, gid); err != nil {
		t.Fatal(err)
	}
	var users strings.Builder
	for _, u := range dovecotUsers {
		// user:password:uid:gid:gecos:home:shell:extra
		fmt.Fprintf(&users, "%s:{PLAIN}%s-secret:%d:%d::%s::\n", u, u, uid, gid, filepath.Join(mail, u))
	}
	passwd := filepath.Join(dir, "users")
	if err := os.WriteFile(passwd, []byte(users.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	dc := &dovecot{
		Dir:     dir,
		Conf:    filepath.Join(dir, "dovecot.conf"),
		Addr:    fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		Socket:  filepath.Join(dir, "run", "lmtp"),
		Log:     filepath.Join(dir, "dovecot.log"),
		doveadm: doveadm,
		exited:  make(chan struct{}),
		out:     &syncBuffer{},
	}
	_, port, _ := net.SplitHostPort(dc.Addr)
	conf := fmt.Sprintf(`# Dovecot %[1]s for regress/dovecot_test.go
base_dir = %[2]s/run
state_dir = %[2]s/state
instance_name = smtpd-regress
log_path = %[2]s/dovecot.log
hostname = lmtp.dovecot.test
protocols = lmtp
ssl = no
default_internal_user = %[3]s
default_login_user = %[4]s
first_valid_uid = %[5]d
last_valid_uid = %[5]d
auth_mechanisms = plain
disable_plaintext_auth = no
# LMTP recipients are full addresses: the users are their local parts
auth_username_format = %%Ln
auth_verbose = yes
mail_location = maildir:%[2]s/mail/%%u
lmtp_save_to_detail_mailbox = no
passdb {
  driver = passwd-file
  args = %[7]s
}
userdb {
  driver = passwd-file
  args = %[7]s
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = %[6]s
  }
  unix_listener lmtp {
    mode = 0666
  }
}
%[8]s`, version, dir, internalUser.Username, loginUser.Username, uid, port, passwd, unprivileged)
	if err := os.WriteFile(dc.Conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	dc.cmd = exec.Command(master, "-F", "-c", dc.Conf)
	dc.cmd.Stdout, dc.cmd.Stderr = dc.out, dc.out
	// its own process group, so that what is left of it can be killed
	dc.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := dc.cmd.Start(); err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	go func() {
		dc.cmd.Wait()
		close(dc.exited)
	}()
	t.Cleanup(func() {
		dc.stop(t)
		if t.Failed() {
			t.Logf("dovecot configuration %s:\n%s", dc.Conf, conf)
			t.Logf("dovecot output:\n%s", dc.out.String())
			t.Logf("dovecot log %s:\n%s", dc.Log, dc.ReadLog())
		}
	})
	dc.waitReady(t, 15*time.Second)
	return dc
}

// waitReady waits until both LMTP listeners greet.
func (dc *dovecot) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, l := range []struct{ network, addr string }{{"tcp", dc.Addr}, {"unix", dc.Socket}} {
		for {
			greeting, err := lmtpGreeting(l.network, l.addr)
			if err == nil && strings.HasPrefix(greeting, "220 ") {
				break
			}
			select {
			case <-dc.exited:
				t.Fatalf("dovecot exited during start (%v):\n%s\nlog:\n%s", dc.cmd.ProcessState, dc.out.String(), dc.ReadLog())
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("dovecot's LMTP on %s %s not ready after %v: %q %v\n%s\nlog:\n%s", l.network, l.addr, timeout, greeting, err, dc.out.String(), dc.ReadLog())
			}
		}
	}
}

// lmtpGreeting connects, reads the greeting and says QUIT.
func lmtpGreeting(network, addr string) (string, error) {
	conn, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.Write([]byte("QUIT\r\n"))
	return strings.TrimRight(line, "\r\n"), err
}

// stop stops the master with SIGTERM, which stops its children, and
// waits; whatever is left of its process group after 10s is killed.
func (dc *dovecot) stop(t *testing.T) {
	pgid := dc.cmd.Process.Pid
	dc.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-dc.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("dovecot still running 10s after SIGTERM: killed")
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-dc.exited
	}
	// children outlive the master for a moment
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(-pgid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(-pgid, syscall.SIGKILL)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ReadLog returns Dovecot's log file.
func (dc *dovecot) ReadLog() string {
	b, err := os.ReadFile(dc.Log)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Doveadm runs doveadm on the private configuration, bounded.
func (dc *dovecot) Doveadm(args ...string) (string, error) {
	cmd := exec.Command(dc.doveadm, append([]string{"-c", dc.Conf}, args...)...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("doveadm %v: killed after 20s", args)
	}
}

// Messages returns the messages of a user's INBOX in UID order, as
// `doveadm fetch text` prints them.
func (dc *dovecot) Messages(t *testing.T, user string) []string {
	t.Helper()
	out, err := dc.Doveadm("search", "-u", user, "mailbox", "INBOX", "ALL")
	if err != nil {
		t.Fatalf("doveadm search -u %s: %v\n%s", user, err, out)
	}
	var msgs []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line) // mailbox-guid uid
		if len(f) != 2 {
			continue
		}
		text, err := dc.Doveadm("fetch", "-u", user, "text", "mailbox", "INBOX", "uid", f[1])
		if err != nil {
			t.Fatalf("doveadm fetch -u %s uid %s: %v\n%s", user, f[1], err, text)
		}
		msg, ok := strings.CutPrefix(text, "text:\n")
		if !ok {
			t.Fatalf("doveadm fetch -u %s uid %s printed:\n%s", user, f[1], text)
		}
		msgs = append(msgs, msg)
	}
	return msgs
}

// TestDovecotLMTP: the lmtp action delivers into Dovecot's LMTP server,
// over TCP and over its unix socket. Two messages to alice and bob
// land in their mailboxes, byte for byte with our Received field; the
// recipient Dovecot does not know is refused with 550 and bounced to
// the sender, alone; the queue ends empty.
func TestDovecotLMTP(t *testing.T) {
	dc := startDovecot(t)
	d := StartWith(t, bin, Options{Config: DefaultConfig + `
action "dovecot" {
  lmtp     = "` + dc.Addr + `"
  user     = "sink"
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
action "dovecot_socket" {
  lmtp     = "` + dc.Socket + `"
  user     = "sink"
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
match {
  from   = "any"
  for    = "dovecot.test"
  action = action.dovecot
}
match {
  from   = "any"
  for    = "sock.dovecot.test"
  action = action.dovecot_socket
}
`})
	// the sender is local (action "local", the maildir mail/): its
	// bounce can be read there
	const sender = "sender@example.test"
	send := func(subject string, rcpts ...string) {
		out := swaks(t, "--server", d.SMTPAddr, "--helo", "client.example.net", "--from", sender,
			"--to", strings.Join(rcpts, ","), "--header", "Subject: "+subject, "--body", body[:len(body)-2], "--timeout", "20")
		if !strings.Contains(out, "Message accepted for delivery") {
			t.Fatalf("swaks to %v:\n%s", rcpts, out)
		}
	}
	send("dovecot one", "alice@dovecot.test", "bob@dovecot.test")
	send("dovecot two", "alice@dovecot.test", "bob@dovecot.test", "ghost@dovecot.test")
	send("dovecot socket", "alice@sock.dovecot.test")

	// 5 deliveries into Dovecot and the bounce; ghost failed
	d.WaitStat("scheduler.delivery.permfail", "1", 30*time.Second)
	d.WaitStat("scheduler.delivery.ok", "6", 30*time.Second)
	d.WaitStat("scheduler.envelope", "0", 10*time.Second)
	// only root may see the queue; the counter above says it to others
	if os.Geteuid() == 0 {
		if q, errOut, code := d.Smtpctl("show", "queue"); code != 0 || q != "" {
			t.Errorf("smtpctl show queue: %d %q %s", code, q, errOut)
		}
	}
	if st := d.Stats(); st["scheduler.delivery.tempfail"] != "" && st["scheduler.delivery.tempfail"] != "0" {
		t.Errorf("temporary failures: %v", st)
	}

	// Dovecot's Received names our LHLO and, over TCP, our address
	const tcp, unix = "Received: from mx.example.test ([127.0.0.1])\n", "Received: from mx.example.test\n"
	want := map[string][]struct{ subject, rcpt, from string }{
		"alice": {{"dovecot one", "alice@dovecot.test", tcp}, {"dovecot two", "alice@dovecot.test", tcp}, {"dovecot socket", "alice@sock.dovecot.test", unix}},
		"bob":   {{"dovecot one", "bob@dovecot.test", tcp}, {"dovecot two", "bob@dovecot.test", tcp}},
	}
	for _, u := range dovecotUsers {
		msgs := dc.Messages(t, u)
		if len(msgs) != len(want[u]) {
			t.Errorf("%s has %d messages in Dovecot, want %d:\n%s", u, len(msgs), len(want[u]), strings.Join(msgs, "\n----\n"))
			continue
		}
		for i, w := range want[u] {
			m := msgs[i]
			hdr, gotBody, ok := strings.Cut(m, "\n\n")
			if !ok {
				t.Errorf("%s message %d has no body:\n%s", u, i+1, m)
				continue
			}
			for _, s := range []string{
				// Dovecot's delivery fields
				"Return-Path: <" + sender + ">\n",
				"Delivered-To: " + w.rcpt + "\n",
				"by lmtp.dovecot.test with LMTP",
				"for <" + w.rcpt + ">;",
				w.from,
				// ours follows it
				"Received: from client.example.net ([127.0.0.1])\n\tby mx.example.test (smtpd) with ESMTP id ",
				"Subject: " + w.subject + "\n",
			} {
				if !strings.Contains(hdr+"\n", s) {
					t.Errorf("%s message %d lacks %q:\n%s", u, i+1, s, m)
				}
			}
			if strings.Count(hdr, "\nReceived: ") != 2 {
				t.Errorf("%s message %d: want Dovecot's and our Received fields:\n%s", u, i+1, hdr)
			}
			if strings.TrimRight(gotBody, "\n") != strings.TrimRight(unixBody, "\n") {
				t.Errorf("%s message %d body changed:\n got %q\nwant %q", u, i+1, gotBody, unixBody)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dc.Dir, "mail", "ghost")); !os.IsNotExist(err) {
		t.Errorf("Dovecot has a mailbox for the unknown user: %v", err)
	}

	// one bounce, for ghost only
	time.Sleep(300 * time.Millisecond)
	bounces := d.Mail()
	if len(bounces) != 1 {
		t.Fatalf("%d messages to %s, want the one bounce for ghost:\n%v", len(bounces), sender, bounces)
	}
	for _, m := range bounces {
		var finals []string
		for _, line := range strings.Split(strings.ReplaceAll(m, "\r\n", "\n"), "\n") {
			if strings.HasPrefix(line, "Final-Recipient:") {
				finals = append(finals, line)
			}
		}
		if len(finals) != 1 || finals[0] != "Final-Recipient: rfc822; ghost@dovecot.test" {
			t.Errorf("bounce recipients %q, want ghost@dovecot.test alone:\n%s", finals, m)
		}
		for _, s := range []string{
			"Return-Path: <>\n",
			"To: <" + sender + ">\n",
			"Subject: Delivery failure",
			"Your message could not be delivered to <ghost@dovecot.test>:",
			"Action: failed",
			"Status: 5.1.1",
			// Dovecot's reply to RCPT, passed on
			"Diagnostic-Code: smtp; 550 5.1.1 <ghost@dovecot.test> User doesn't exist",
			"Subject: dovecot two",
		} {
			if !strings.Contains(m, s) {
				t.Errorf("bounce lacks %q:\n%s", s, m)
			}
		}
		for _, s := range []string{"delivered to <alice@", "delivered to <bob@", "Subject: dovecot one", "Subject: dovecot socket"} {
			if strings.Contains(m, s) {
				t.Errorf("bounce has %q:\n%s", s, m)
			}
		}
	}
	if log := dc.ReadLog(); !strings.Contains(log, "passwd-file(ghost,") || !strings.Contains(log, "unknown user") {
		t.Errorf("Dovecot's log does not show the unknown user refused:\n%s", log)
	}
}
