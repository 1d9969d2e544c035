package regress

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func oneMessage(rcpt, subject string, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "expect 220\nsend EHLO client.example.net\nexpect 250\n")
	fmt.Fprintf(&b, "send MAIL FROM:<s@example.net>\nexpect 250\nsend RCPT TO:<%s>\nexpect 250\nsend DATA\nexpect 354\n", rcpt)
	fmt.Fprintf(&b, "send Subject: %s\nsend\n", subject)
	if size > 0 {
		fmt.Fprintf(&b, "repeat %d %q\n", size/100, strings.Repeat("x", 98)+"\r\n")
	}
	return b.String()
}

// TestSpoolUnwritable: when the queue cannot write its spool, clients
// get 451, never a 5xx; once it can again, mail flows and no temporary
// file is left behind.
func TestSpoolUnwritable(t *testing.T) {
	d := Start(t, bin)
	tmp := filepath.Join(d.Dir, "spool", "temporary")
	if err := os.Chmod(tmp, 0o500); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// root ignores modes; make the directory immutable instead
		if out, err := exec.Command("chattr", "+i", tmp).CombinedOutput(); err != nil {
			t.Skipf("chattr: %v %s", err, out)
		}
		defer exec.Command("chattr", "-i", tmp).Run()
	}
	// the queue cannot create the message: DATA gets 451 before the
	// client sends it, as in OpenSMTPD
	if err := RunDialogue(d.SMTPAddr, "expect 220\nsend EHLO client.example.net\nexpect 250\nsend MAIL FROM:<s@example.net>\nexpect 250\nsend RCPT TO:<a@example.test>\nexpect 250\nsend DATA\nexpect 451 4.3.0\nsend QUIT\nexpect 221\n"); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		exec.Command("chattr", "-i", tmp).Run()
	}
	os.Chmod(tmp, 0o700)
	if err := RunDialogue(d.SMTPAddr, oneMessage("a@example.test", "accepted", 0)+"send .\nexpect 250\nsend QUIT\nexpect 221\n"); err != nil {
		t.Fatal(err)
	}
	mail := d.WaitMail(1, 10*time.Second)
	for _, m := range mail {
		if !strings.Contains(m, "Subject: accepted") {
			t.Errorf("delivered %q", m)
		}
	}
	for _, sub := range []string{"temporary", "incoming"} {
		if left, _ := filepath.Glob(filepath.Join(d.Dir, "spool", sub, "*")); len(left) > 0 {
			t.Errorf("left in spool/%s: %v", sub, left)
		}
	}
}

// TestSpoolFull: on a small file system that fills up, clients get 4xx
// (452 once less than 5% is free, 451 if a write fails), never a 5xx, and
// every message that got a 250 is kept and delivered once there is room.
func TestSpoolFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir, _ := WriteConfig(t, "")
	spool := filepath.Join(dir, "spool")
	os.MkdirAll(spool, 0o711)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=400", "tmpfs", spool).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", spool).Run() })
	// deliveries fail until the maildir exists, so the spool fills up
	conf := strings.Replace(DefaultConfig, `maildir  = "mail"`, `maildir  = "mail/later"`, 1)
	os.MkdirAll(filepath.Join(dir, "mail"), 0o755)
	os.WriteFile(filepath.Join(dir, "mail", "later"), nil, 0o644)
	d := StartWith(t, bin, Options{Config: conf, Dir: dir})
	accepted, refused := 0, 0
	for i := 0; i < 60 && refused < 3; i++ {
		err := RunDialogue(d.SMTPAddr, oneMessage("a@example.test", fmt.Sprintf("fill %d", i), 40000)+"send .\nexpect 250\n")
		switch {
		case err == nil:
			accepted++
		case strings.Contains(err.Error(), `got "45`):
			refused++
		default:
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if refused == 0 || accepted == 0 {
		t.Fatalf("accepted %d, refused %d: the spool never filled", accepted, refused)
	}
	t.Logf("accepted %d messages of 40 kB on a 1 MB spool, then refused with 4xx", accepted)
	os.Remove(filepath.Join(dir, "mail", "later"))
	mail := func() int {
		files, _ := filepath.Glob(filepath.Join(dir, "mail", "later", "new", "*"))
		return len(files)
	}
	deadline := time.Now().Add(60 * time.Second)
	for mail() < accepted {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted messages delivered\n%s", mail(), accepted, d.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestCorruptEnvelope: at start, an envelope that cannot be read moves
// to corrupt/ with a copy of its message, is counted and logged, and
// the readable envelopes of the same message are still delivered.
func TestCorruptEnvelope(t *testing.T) {
	d := startMDA(t)
	// two recipients whose deliveries stay queued (exit 75)
	if err := RunDialogue(d.SMTPAddr, "expect 220\nsend EHLO c.example\nexpect 250\nsend MAIL FROM:<>\nexpect 250\n"+
		"send RCPT TO:<stuck@cmd.example.test>\nexpect 250\nsend RCPT TO:<retry@cmd.example.test>\nexpect 250\n"+
		"send DATA\nexpect 354\nsend Subject: two\nsend\nsend .\nexpect 250\nsend QUIT\nexpect 221\n"); err != nil {
		t.Fatal(err)
	}
	d.WaitStat("scheduler.delivery.tempfail", "2", 10*time.Second)
	d.Kill()
	envs, _ := filepath.Glob(filepath.Join(d.Dir, "spool", "queue", "*", "*", "[0-9a-f]*"))
	var victim string
	for _, e := range envs {
		if b, _ := os.ReadFile(e); strings.Contains(string(b), "dest: stuck@") {
			victim = e
		}
	}
	if len(envs) != 2 || victim == "" {
		t.Fatalf("envelopes %v", envs)
	}
	os.WriteFile(victim, []byte("version: 1\ngarbage\n"), 0o600)
	d2 := StartWith(t, bin, Options{Config: DefaultConfig + mdaConfig, Dir: d.Dir})
	waitFile(t, d2, filepath.Join(d.Dir, "out.retry"), 15*time.Second)
	d2.WaitStat("queue.corrupt", "1", 5*time.Second)
	msg := filepath.Base(filepath.Dir(victim))
	for _, f := range []string{filepath.Base(victim), "message"} {
		if _, err := os.Stat(filepath.Join(d.Dir, "spool", "corrupt", msg, f)); err != nil {
			t.Errorf("corrupt/%s/%s: %v", msg, f, err)
		}
	}
	if !strings.Contains(d2.Log(), "line 2 is not key: value") {
		t.Errorf("not reported:\n%s", d2.Log())
	}
}
