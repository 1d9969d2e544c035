package regress

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"smtpd/proto"
)

// showStats polls `smtpctl show stats` until every key in want appears
// (counters reach control in batches) or 5 s pass.
func showStats(t *testing.T, d *Daemon, args []string, want ...string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, errOut, code := d.Smtpctl(args...)
		if code != 0 {
			t.Fatalf("smtpctl %v: exit %d: %s", args, code, errOut)
		}
		stats := map[string]string{}
		var keys []string
		for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("line %q is not key=value", line)
			}
			stats[k] = v
			keys = append(keys, k)
		}
		for i := 1; i < len(keys); i++ {
			if keys[i-1] >= keys[i] {
				t.Fatalf("keys not sorted: %q before %q", keys[i-1], keys[i])
			}
		}
		missing := ""
		for _, k := range want {
			if _, ok := stats[k]; !ok {
				missing = k
			}
		}
		if missing == "" {
			return stats
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in:\n%s", missing, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestShowStats: show stats prints sorted key=value lines with uptime,
// uptime.human and counters from every child; a prefix of the command
// words works as in OpenSMTPD.
func TestShowStats(t *testing.T) {
	d := Start(t, bin)
	want := []string{"uptime", "uptime.human", "control.session"}
	for _, name := range wantChildren("no-mfa") {
		if name != "control" {
			want = append(want, name+".ipc.received", name+".ipc.sent")
		}
	}
	stats := showStats(t, d, []string{"show", "stats"}, want...)
	if !regexp.MustCompile(`^\d+$`).MatchString(stats["uptime"]) || !regexp.MustCompile(`^(\d+[wdhm])*\d+s$`).MatchString(stats["uptime.human"]) {
		t.Errorf("uptime %q, uptime.human %q", stats["uptime"], stats["uptime.human"])
	}
	// smtp got its peers (lookup, queue, control; no mfa without
	// filters), its listener and SetupDone from the parent, and sent
	// SetupReady
	if stats["smtp.ipc.received"] != "5" || stats["smtp.ipc.sent"] != "1" {
		t.Errorf("smtp.ipc: %v", stats)
	}
	before := stats["control.session"]
	again := showStats(t, d, []string{"sh", "st"}, "control.session")
	if again["control.session"] <= before {
		t.Errorf("control.session %s then %s", before, again["control.session"])
	}
}

// TestSmtpctlWithoutDaemon: smtpctl fails with a clear message and exit
// status 1 when no daemon listens.
func TestSmtpctlWithoutDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	_, errOut, code := RunSmtpctl(bin, "-s", sock, "show", "stats")
	if code != 1 || !strings.Contains(errOut, "cannot connect to "+sock) || !strings.Contains(errOut, "is smtpd running?") {
		t.Errorf("exit %d: %q", code, errOut)
	}
	_, errOut, code = RunSmtpctl(bin, "-s", sock, "frobnicate")
	if code != 2 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("exit %d: %q", code, errOut)
	}
}

// TestControlClientMisbehaves: a client that sends garbage or a message
// meant for a child loses its connection; the daemon keeps running,
// since any local user may connect.
func TestControlClientMisbehaves(t *testing.T) {
	d := Start(t, bin)
	for _, frame := range [][]byte{
		{1, 2, 3},
		proto.AppendFrame(nil, proto.Header{Type: 999}, nil),
		proto.AppendFrame(nil, proto.Header{Type: proto.TypeSetupDone}, nil),
		proto.AppendFrame(nil, proto.Header{Type: proto.TypeStatUpdate}, []byte{0, 0, 0, 0}),
	} {
		conn, err := net.Dial("unixpacket", d.Socket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(frame); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := conn.Read(make([]byte, 64)); n != 0 || err == nil {
			t.Errorf("frame %x: connection not dropped: %d %v", frame, n, err)
		}
		conn.Close()
	}
	if code := d.Wait(300 * time.Millisecond); code != -1 {
		t.Fatalf("daemon exited %d:\n%s", code, d.Log())
	}
	showStats(t, d, []string{"show", "stats"}, "uptime")
}

// TestQueueCommands: show queue lists a deferred envelope with its last
// error, with the daemon up and (reading the spool) down; schedule makes
// it be tried at once, remove takes it out; other users than root are
// refused.
func TestQueueCommands(t *testing.T) {
	d := startMDA(t, `retry_base = "1h"`)
	for _, rcpt := range []string{"stuck@cmd.example.test", "retry@cmd.example.test"} {
		swaks(t, "--server", d.SMTPAddr, "--helo", "client.example.net", "--from", "author@example.test",
			"--to", rcpt, "--header", "Subject: queued", "--body", "x")
	}
	d.WaitStat("scheduler.delivery.tempfail", "2", 10*time.Second)
	out, errOut, code := d.Smtpctl("show", "queue")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.Contains(out, "|mda|pending|author@example.test|stuck@cmd.example.test|") || !strings.Contains(out, "mda command exited 75: mailbox busy") {
		t.Fatalf("show queue: %d %q %q", code, out, errOut)
	}
	mailq := filepath.Join(installed(t), "mailq")
	if q, err := run(t, nil, "", mailq, "-C", d.Config); err != nil || q != out {
		t.Errorf("mailq: %v %q, want %q", err, q, out)
	}
	var retryID, stuckID string
	for _, l := range lines {
		if strings.Contains(l, "|retry@") {
			retryID = l[:16]
		} else {
			stuckID = l[:16]
		}
	}
	// the retry script succeeds on its second try, an hour away: schedule
	if out, _, code := d.Smtpctl("schedule", retryID); code != 0 || out != "1 envelopes scheduled\n" {
		t.Errorf("schedule: %d %q", code, out)
	}
	waitFile(t, d, filepath.Join(d.Dir, "out.retry"), 10*time.Second)
	if out, _, code := d.Smtpctl("remove", stuckID[:8]); code != 0 || out != "1 envelopes removed\n" {
		t.Errorf("remove: %d %q", code, out)
	}
	d.WaitStat("scheduler.envelope", "0", 5*time.Second)
	if out, _, _ := d.Smtpctl("show", "queue"); out != "" {
		t.Errorf("queue after remove: %q", out)
	}
	if os.Geteuid() == 0 {
		// any user may read the counters
		cmd := exec.Command(bin.Smtpctl, "-s", d.Socket, "show", "stats")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "uptime=") {
			t.Errorf("non-root show stats: %v %s", err, out)
		}
		for _, args := range [][]string{{"show", "queue"}, {"remove", "all"}, {"pause", "smtp"}, {"log", "verbose"}, {"show", "message", "00000001"}} {
			cmd := exec.Command(bin.Smtpctl, append([]string{"-s", d.Socket}, args...)...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err := cmd.CombinedOutput()
			if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "permission denied") {
				t.Errorf("non-root %v: %v %s", args, err, out)
			}
		}
	}
	// daemon down: the spool is read directly
	swaks(t, "--server", d.SMTPAddr, "--helo", "client.example.net", "--from", "author@example.test",
		"--to", "stuck@cmd.example.test", "--header", "Subject: queued", "--body", "x")
	d.WaitStat("scheduler.delivery.tempfail", "3", 10*time.Second)
	d.Kill()
	out, errOut, code = RunSmtpctl(bin, "-f", d.Config, "show", "queue")
	if code != 0 || !strings.Contains(out, "|offline|author@example.test|stuck@cmd.example.test|") {
		t.Errorf("offline show queue: %d %q %q", code, out, errOut)
	}
	if q, err := run(t, nil, "", mailq, "-C", d.Config); err != nil || q != out {
		t.Errorf("mailq with the daemon down: %v %q, want %q", err, q, out)
	}
}

// TestPauseResume: paused local deliveries wait until resumed; a paused
// envelope is left alone by schedule until resumed.
func TestPauseResume(t *testing.T) {
	d := startMDA(t, `retry_base = "1h"`)
	if out, _, code := d.Smtpctl("pause", "mda"); code != 0 || out != "1 paused\n" {
		t.Fatalf("pause mda: %d %q", code, out)
	}
	swaks(t, swaksArgs(d, "anyone@example.test")...)
	time.Sleep(time.Second)
	if n := len(d.Mail()); n != 0 {
		t.Fatalf("%d delivered while paused", n)
	}
	if out, _, _ := d.Smtpctl("show", "queue"); !strings.Contains(out, "|mda|paused|") {
		t.Errorf("show queue while paused: %q", out)
	}
	d.Smtpctl("resume", "mda")
	d.WaitMail(1, 10*time.Second)

	swaks(t, swaksArgs(d, "retry@cmd.example.test")...)
	d.WaitStat("scheduler.delivery.tempfail", "1", 10*time.Second)
	out, _, _ := d.Smtpctl("show", "queue")
	id := strings.SplitN(out, "|", 2)[0]
	if out, _, code := d.Smtpctl("pause", "envelope", id); code != 0 || out != "1 paused\n" {
		t.Fatalf("pause envelope: %d %q", code, out)
	}
	if out, _, _ := d.Smtpctl("schedule", "all"); out != "0 envelopes scheduled\n" {
		t.Errorf("schedule of a paused envelope: %q", out)
	}
	if out, _, _ := d.Smtpctl("resume", "envelope", id); out != "1 resumed\n" {
		t.Errorf("resume: %q", out)
	}
	waitFile(t, d, filepath.Join(d.Dir, "out.retry"), 10*time.Second)
}

// TestPauseSMTP: a paused smtp greets new sessions with 421 until
// resumed.
func TestPauseSMTP(t *testing.T) {
	d := Start(t, bin)
	if out, _, code := d.Smtpctl("pause", "smtp"); code != 0 || out != "smtp paused\n" {
		t.Fatalf("pause smtp: %d %q", code, out)
	}
	time.Sleep(100 * time.Millisecond)
	if err := RunDialogue(d.SMTPAddr, "expect 421 4.3.2\nexpect-close\n"); err != nil {
		t.Error(err)
	}
	d.Smtpctl("resume", "smtp")
	time.Sleep(100 * time.Millisecond)
	if err := RunDialogue(d.SMTPAddr, "expect 220\nsend QUIT\nexpect 221\n"); err != nil {
		t.Error(err)
	}
}
