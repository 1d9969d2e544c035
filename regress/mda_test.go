package regress

import (
	"bufio"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mdaConfig adds a command action for cmd.example.test to the default
// configuration: the script's first argument is the recipient's user.
const mdaConfig = `
action "cmd" {
  mda      = "{{DIR}}/deliver.sh ${dest.user} {{DIR}}/out"
  user     = "sink"
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
match {
  from   = "any"
  for    = "cmd.example.test"
  action = action.cmd
}
`

const deliverScript = `#!/bin/sh
case "$1" in
ok)    env > "$2.env"; cat > "$2.tmp"; mv "$2.tmp" "$2.ok"; exit 0 ;;
retry) if [ -e "$2.retried" ]; then cat > "$2.tmp"; mv "$2.tmp" "$2.retry"; exit 0; fi
       touch "$2.retried"; cat > /dev/null; exit 75 ;;
fail)  cat > /dev/null; echo "mailbox disabled" >&2; exit 1 ;;
stuck) cat > /dev/null; echo "mailbox busy" >&2; exit 75 ;;
esac
exit 1
`

func startMDA(t *testing.T, limits ...string) *Daemon {
	t.Helper()
	dir, _ := WriteConfig(t, "")
	if err := os.WriteFile(filepath.Join(dir, "deliver.sh"), []byte(deliverScript), 0o755); err != nil {
		t.Fatal(err)
	}
	base := `retry_base = "1s"`
	for i, l := range limits {
		if strings.HasPrefix(l, "retry_base") {
			base, limits = l, append(limits[:i:i], limits[i+1:]...)
			break
		}
	}
	conf := strings.Replace(DefaultConfig, `retry_base = "1s"`, base+"\n"+strings.Join(limits, "\n"), 1)
	return StartWith(t, bin, Options{Config: conf + mdaConfig, Dir: dir})
}

func waitFile(t *testing.T, d *Daemon, path string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(path); err == nil {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v\n%s", path, timeout, d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMDACommand: an mda command gets the message on its input and the
// delivery in its environment, without a shell; exit 75 is retried.
func TestMDACommand(t *testing.T) {
	d := startMDA(t)
	swaks(t, swaksArgs(d, "ok+ext@cmd.example.test")...)
	got := waitFile(t, d, filepath.Join(d.Dir, "out.ok"), 10*time.Second)
	if !strings.HasPrefix(got, "Return-Path: <sender@example.net>\nDelivered-To: ok@cmd.example.test\n") || !strings.HasSuffix(strings.TrimSuffix(got, "\n\n")+"\n", unixBody) {
		t.Errorf("command got %q", got)
	}
	env := waitFile(t, d, filepath.Join(d.Dir, "out.env"), time.Second)
	for _, want := range []string{"RECIPIENT=ok@cmd.example.test", "SENDER=sender@example.net", "EXTENSION=ext", "USER=sink", "HOME=" + d.Dir} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("environment lacks %s:\n%s", want, env)
		}
	}
	swaks(t, swaksArgs(d, "retry@cmd.example.test")...)
	waitFile(t, d, filepath.Join(d.Dir, "out.retry"), 15*time.Second)
	d.WaitStat("scheduler.delivery.tempfail", "1", 5*time.Second)
}

// TestBounce: a delivery that fails for good sends exactly one
// multipart/report notification to the sender; none when the sender is
// the null sender <>.
func TestBounce(t *testing.T) {
	d := startMDA(t)
	out := swaks(t, "--server", d.SMTPAddr, "--helo", "client.example.net", "--from", "author@example.test",
		"--to", "fail@cmd.example.test", "--header", "Subject: doomed", "--body", "will fail")
	if !strings.Contains(out, "Message accepted") {
		t.Fatal(out)
	}
	swaks(t, "--server", d.SMTPAddr, "--helo", "client.example.net", "--from", "<>",
		"--to", "fail@cmd.example.test", "--header", "Subject: doomed bounce", "--body", "will fail")
	d.WaitStat("scheduler.delivery.permfail", "2", 10*time.Second)
	msgs := d.WaitMail(1, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if msgs = d.Mail(); len(msgs) != 1 {
		t.Fatalf("%d notifications, want exactly 1", len(msgs))
	}
	for _, raw := range msgs {
		checkDSN(t, raw)
	}
	if st := d.Stats(); st["queue.bounce"] != "1" {
		t.Errorf("queue.bounce=%q", st["queue.bounce"])
	}
}

// TestDelayWarning: a message still undelivered after bounce_warn gets
// its sender one delay notice, not one per retry.
func TestDelayWarning(t *testing.T) {
	d := startMDA(t, `bounce_warn = "1s"`)
	swaks(t, "--server", d.SMTPAddr, "--helo", "client.example.net", "--from", "author@example.test",
		"--to", "stuck@cmd.example.test", "--header", "Subject: doomed", "--body", "stuck")
	d.WaitStat("scheduler.delivery.tempfail", "3", 20*time.Second)
	msgs := d.Mail()
	if len(msgs) != 1 {
		t.Fatalf("%d notices, want 1", len(msgs))
	}
	for _, m := range msgs {
		if !strings.Contains(m, "Action: delayed") || !strings.Contains(m, "Status: 4.0.0") || !strings.Contains(m, "mailbox busy") || !strings.Contains(m, "Will-Retry-Until: ") {
			t.Errorf("delay notice:\n%s", m)
		}
	}
}

func checkDSN(t *testing.T, raw string) {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Return-Path") != "<>" || !strings.HasPrefix(m.Header.Get("From"), "Mail Delivery System <MAILER-DAEMON@") {
		t.Errorf("header %v", m.Header)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("content type %q %v %v", m.Header.Get("Content-Type"), params, err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var types []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ct := p.Header.Get("Content-Type")
		types = append(types, strings.Split(ct, ";")[0])
		body, _ := io.ReadAll(p)
		switch {
		case strings.HasPrefix(ct, "message/delivery-status"):
			tp := textproto.NewReader(bufio.NewReader(strings.NewReader(string(body))))
			perMsg, err := tp.ReadMIMEHeader()
			if err != nil || !strings.HasPrefix(perMsg.Get("Reporting-MTA"), "dns; mx.example.test") {
				t.Errorf("per-message fields %v %v", perMsg, err)
			}
			perRcpt, err := tp.ReadMIMEHeader()
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			if perRcpt.Get("Action") != "failed" || !strings.HasPrefix(perRcpt.Get("Status"), "5.") ||
				perRcpt.Get("Final-Recipient") != "rfc822; fail@cmd.example.test" ||
				!strings.Contains(perRcpt.Get("Diagnostic-Code"), "mailbox disabled") {
				t.Errorf("per-recipient fields %v", perRcpt)
			}
		case strings.HasPrefix(ct, "text/rfc822-headers"):
			if !strings.Contains(string(body), "Subject: doomed") {
				t.Errorf("original header missing: %q", body)
			}
		}
	}
	if strings.Join(types, ",") != "text/plain,message/delivery-status,text/rfc822-headers" {
		t.Errorf("parts %v", types)
	}
}

const aliasConfig = `
table "aliases" {
  map = {
    team    = "sink, |{{DIR}}/deliver.sh ok {{DIR}}/prog, {{DIR}}/archive.mbox, :include:{{DIR}}/list"
    looper  = "looper2@alias.example.test"
    looper2 = "looper@alias.example.test, sink"
    gone    = "error:550 5.1.6 This address is gone"
  }
}
action "aliased" {
  maildir  = "mail"
  alias    = table.aliases
  user     = "sink"
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
match {
  from   = "any"
  for    = "alias.example.test"
  action = action.aliased
}
`

// TestAliases: an alias fans out to a user, a program, a file and an
// :include: list; a loop of aliases delivers once; error: refuses.
func TestAliases(t *testing.T) {
	dir, _ := WriteConfig(t, "")
	os.WriteFile(filepath.Join(dir, "deliver.sh"), []byte(deliverScript), 0o755)
	os.WriteFile(filepath.Join(dir, "list"), []byte("# included\nsink\n"), 0o644)
	d := StartWith(t, bin, Options{Config: DefaultConfig + aliasConfig, Dir: dir})
	swaks(t, swaksArgs(d, "team@alias.example.test")...)
	prog := waitFile(t, d, filepath.Join(dir, "prog.ok"), 10*time.Second)
	if !strings.Contains(prog, "Delivered-To: team@alias.example.test\n") {
		t.Errorf("program got %q", prog)
	}
	mbox := waitFile(t, d, filepath.Join(dir, "archive.mbox"), 10*time.Second)
	if !strings.HasPrefix(mbox, "From sender@example.net ") || !strings.Contains(mbox, "\n>From") && !strings.Contains(mbox, "Subject: regress\n") {
		t.Errorf("file got %q", mbox)
	}
	swaks(t, swaksArgs(d, "looper@alias.example.test")...)
	d.WaitMail(2, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	if n := len(d.Mail()); n != 2 {
		t.Errorf("%d messages in the maildir, want 2 (team and the loop, once each)", n)
	}
	if err := RunDialogue(d.SMTPAddr, "expect 220\nsend EHLO c.example\nexpect 250\nsend MAIL FROM:<s@example.net>\nexpect 250\nsend RCPT TO:<gone@alias.example.test>\nexpect 550 ^550 5.1.6 This address is gone$\n"); err != nil {
		t.Error(err)
	}
}

// TestDotForward: a system user's ~/.forward, opened by the parent,
// sends mail to the user's mailbox (\user) and to a program that runs
// as the user; a .forward others can write is ignored.
func TestDotForward(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a user and deliver as that user")
	}
	dir, _ := WriteConfig(t, "")
	home := filepath.Join(dir, "home")
	os.Mkdir(home, 0o755)
	const user = "smtpdfwdtest"
	exec.Command("userdel", user).Run()
	if out, err := exec.Command("useradd", "-M", "-d", home, "-s", "/usr/sbin/nologin", user).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", user).Run() })
	acct, err := privsepAccount(user)
	if err != nil {
		t.Fatal(err)
	}
	os.Chown(home, acct[0], acct[1])
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o777)
	os.Chmod(out, 0o777)
	os.WriteFile(filepath.Join(dir, "deliver.sh"), []byte(deliverScript), 0o755)
	fwd := filepath.Join(home, ".forward")
	os.WriteFile(fwd, []byte("\\"+user+"\n\"|"+dir+"/deliver.sh ok "+out+"/prog\"\n"), 0o644)
	os.Chown(fwd, acct[0], acct[1])
	conf := DefaultConfig + `
action "sys" { mbox = "{{DIR}}/out/mbox-${user.name}" }
match {
  from   = "any"
  for    = "fwd.example.test"
  action = action.sys
}
`
	d := StartWith(t, bin, Options{Config: conf, Dir: dir})
	swaks(t, swaksArgs(d, user+"@fwd.example.test")...)
	waitFile(t, d, filepath.Join(out, "prog.ok"), 10*time.Second)
	var st syscall.Stat_t
	syscall.Stat(filepath.Join(out, "prog.ok"), &st)
	if int(st.Uid) != acct[0] {
		t.Errorf("program ran as uid %d, want %d", st.Uid, acct[0])
	}
	mbox := waitFile(t, d, filepath.Join(out, "mbox-"+user), 10*time.Second)
	if !strings.Contains(mbox, "Delivered-To: "+user+"@fwd.example.test") {
		t.Errorf("mbox %q", mbox)
	}

	os.Chmod(fwd, 0o666)
	os.Remove(filepath.Join(out, "prog.ok"))
	swaks(t, swaksArgs(d, user+"@fwd.example.test")...)
	d.WaitStat("scheduler.delivery.ok", "3", 10*time.Second)
	if _, err := os.Stat(filepath.Join(out, "prog.ok")); err == nil {
		t.Error("a .forward writable by others was used")
	}
	if !strings.Contains(d.Log(), "ignoring "+fwd+": writable by others") {
		t.Errorf("not logged:\n%s", d.Log())
	}
}

// privsepAccount returns the uid and gid of a user from /etc/passwd.
func privsepAccount(name string) ([2]int, error) {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return [2]int{}, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) > 3 && f[0] == name {
			uid, _ := strconv.Atoi(f[2])
			gid, _ := strconv.Atoi(f[3])
			return [2]int{uid, gid}, nil
		}
	}
	return [2]int{}, fmt.Errorf("no user %s", name)
}

// TestLMTP: one smtpd delivers with `lmtp` to a second smtpd that
// listens with `protocol = "lmtp"` and keeps the mail in its maildir.
func TestLMTP(t *testing.T) {
	farConf := strings.Replace(DefaultConfig, `listen "mx" { address = "{{ADDR}}" }`, "listen \"mx\" {\n  address  = \"{{ADDR}}\"\n  protocol = \"lmtp\"\n}", 1)
	far := StartWith(t, bin, Options{Config: strings.Replace(farConf, "for    = table.domains", `for    = "any"`, 1)})
	near := StartWith(t, bin, Options{Config: DefaultConfig + `
action "lmtp" {
  lmtp     = "` + far.SMTPAddr + `"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
match {
  from   = "any"
  for    = "lmtp.example.test"
  action = action.lmtp
}
`})
	swaks(t, swaksArgs(near, "anyone@lmtp.example.test")...)
	for _, m := range far.WaitMail(1, 10*time.Second) {
		if !strings.Contains(m, "Delivered-To: sink@lmtp.example.test") || strings.Count(m, "Received: ") != 2 || !strings.Contains(m, "with LMTP") || !strings.Contains(m, unixBody) {
			t.Errorf("delivered over LMTP:\n%s", m)
		}
	}
	near.WaitStat("scheduler.delivery.ok", "1", 5*time.Second)
}

// TestDSNParameters: NOTIFY=NEVER suppresses the failure notice; RET=FULL
// returns the whole message; ENVID and ORCPT are reported back.
func TestDSNParameters(t *testing.T) {
	d := startMDA(t)
	script := "expect 220\nsend EHLO c.example\nexpect 250\n" +
		"send MAIL FROM:<author@example.test> RET=FULL ENVID=env-42\nexpect 250\n" +
		"send RCPT TO:<fail@cmd.example.test> NOTIFY=FAILURE ORCPT=rfc822;orig@example.test\nexpect 250\n" +
		"send DATA\nexpect 354\nsend Subject: full return\nsend\nsend the whole body\nsend .\nexpect 250\n" +
		"send MAIL FROM:<author@example.test>\nexpect 250\n" +
		"send RCPT TO:<fail@cmd.example.test> NOTIFY=NEVER\nexpect 250\n" +
		"send DATA\nexpect 354\nsend Subject: silent\nsend\nsend .\nexpect 250\nsend QUIT\nexpect 221\n"
	if err := RunDialogue(d.SMTPAddr, script); err != nil {
		t.Fatal(err)
	}
	d.WaitStat("scheduler.delivery.permfail", "2", 10*time.Second)
	msgs := d.WaitMail(1, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	if msgs = d.Mail(); len(msgs) != 1 {
		t.Fatalf("%d notices, want 1", len(msgs))
	}
	for _, m := range msgs {
		for _, want := range []string{"Original-Envelope-Id: env-42", "Original-Recipient: rfc822;orig@example.test",
			"Content-Type: message/rfc822", "Subject: full return", "the whole body"} {
			if !strings.Contains(m, want) {
				t.Errorf("notice lacks %q:\n%s", want, m)
			}
		}
	}
}

// TestExpiry: a message still undeliverable after queue_expire is
// returned to its sender as failed.
func TestExpiry(t *testing.T) {
	d := startMDA(t, `queue_expire = "3s"`)
	swaks(t, "--server", d.SMTPAddr, "--helo", "client.example.net", "--from", "author@example.test",
		"--to", "stuck@cmd.example.test", "--header", "Subject: doomed", "--body", "stuck")
	d.WaitStat("scheduler.delivery.permfail", "1", 30*time.Second)
	for _, m := range d.WaitMail(1, 10*time.Second) {
		if !strings.Contains(m, "Action: failed") || !strings.Contains(m, "expired") {
			t.Errorf("notice:\n%s", m)
		}
	}
	d.WaitStat("scheduler.envelope", "0", 10*time.Second)
}
