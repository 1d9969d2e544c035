package regress

import (
	"bufio"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestShowEnvelopeMessageStatus: a deferred message can be looked at
// envelope by envelope and as kept in the spool; show status follows
// pause and resume.
func TestShowEnvelopeMessageStatus(t *testing.T) {
	d := startMDA(t, `retry_base = "1h"`)
	swaks(t, "--server", d.SMTPAddr, "--helo", "client.example.net", "--from", "author@example.test",
		"--to", "stuck@cmd.example.test", "--header", "Subject: inspected", "--body", "look at me")
	d.WaitStat("scheduler.delivery.tempfail", "1", 10*time.Second)
	q, _, _ := d.Smtpctl("show", "queue")
	evpid := strings.SplitN(q, "|", 2)[0]
	if len(evpid) != 16 {
		t.Fatalf("show queue: %q", q)
	}
	out, errOut, code := d.Smtpctl("show", "envelope", evpid)
	if code != 0 || !strings.Contains(out, "stuck@cmd.example.test") || !strings.Contains(out, "mailbox busy") || !strings.Contains(out, "author@example.test") {
		t.Errorf("show envelope: %d %q %q", code, out, errOut)
	}
	if out, errOut, code := d.Smtpctl("show", "envelope", "0123456789abcdef"); code != 0 || out != "no such envelope: 0123456789abcdef\n" {
		t.Errorf("unknown envelope: %d %q %q", code, out, errOut)
	}
	for _, id := range []string{evpid, evpid[:8]} {
		out, errOut, code = d.Smtpctl("sh", "mess", id)
		if code != 0 || !strings.Contains(out, "Subject: inspected") || !strings.Contains(out, "look at me") || !strings.HasPrefix(out, "Received: ") {
			t.Errorf("show message %s: %d %q %q", id, code, out, errOut)
		}
	}
	if _, errOut, code := d.Smtpctl("show", "message", "00000001"); code != 1 || !strings.Contains(errOut, "no such message") {
		t.Errorf("unknown message: %d %q", code, errOut)
	}
	status := func() string { out, _, _ := d.Smtpctl("show", "status"); return out }
	if s := status(); s != "SMTP running\nMDA running\nMTA running\n" {
		t.Errorf("show status: %q", s)
	}
	d.Smtpctl("pause", "smtp")
	d.Smtpctl("pause", "mda")
	if s := status(); s != "SMTP paused\nMDA paused\nMTA running\n" {
		t.Errorf("show status after pause: %q", s)
	}
}

// TestLogAndTrace: log brief|verbose switch debug lines in every
// process; trace shows a subsystem until untrace; monitor prints its
// header and a line per second.
func TestLogAndTrace(t *testing.T) {
	d := Start(t, bin)
	sessions := func() int { return strings.Count(d.Log(), ": session from [") }
	send := func() {
		t.Helper()
		swaks(t, swaksArgs(d, "anyone@example.test")...)
	}
	if out, _, code := d.Smtpctl("log", "brief"); code != 0 || out != "verbose off\n" {
		t.Fatalf("log brief: %d %q", code, out)
	}
	time.Sleep(500 * time.Millisecond) // until every process has it
	before := sessions()
	send()
	d.WaitMail(1, 10*time.Second)
	if sessions() != before {
		t.Errorf("debug lines after log brief")
	}
	d.Smtpctl("log", "verbose")
	time.Sleep(500 * time.Millisecond)
	send()
	d.WaitMail(2, 10*time.Second)
	if sessions() != before+1 {
		t.Errorf("no debug lines after log verbose")
	}

	for _, sub := range []string{"smtp", "imsg", "expand", "scheduler"} {
		if out, _, code := d.Smtpctl("trace", sub); code != 0 || out != sub+" on\n" {
			t.Fatalf("trace %s: %d %q", sub, code, out)
		}
	}
	send()
	d.WaitMail(3, 10*time.Second)
	d.WaitStat("scheduler.delivery.ok", "3", 5*time.Second)
	for _, want := range []string{
		`smtp: trace smtp: "EHLO client.example.net\r\n"`,
		"smtp: trace imsg: LookupExpandResult from lookup",
		"lookup: trace expand: <anyone@example.test> from <sender@example.net>: status 1, 1 destinations",
		"queue: trace scheduler: ",
	} {
		if !strings.Contains(d.Log(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
	d.Smtpctl("untrace", "all")
	// every process applies it when it reads control's frame: let
	// those in flight pass
	time.Sleep(time.Second)
	n := strings.Count(d.Log(), "trace ")
	send()
	d.WaitMail(4, 10*time.Second)
	if strings.Count(d.Log(), "trace ") != n {
		t.Errorf("traces after untrace all")
	}
	if _, errOut, code := d.Smtpctl("trace", "everything"); code != 1 || !strings.Contains(errOut, "unknown subsystem") {
		t.Errorf("trace everything: %d %q", code, errOut)
	}

	cmd := exec.Command(bin.Smtpctl, "-s", d.Socket, "monitor")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	r := bufio.NewReader(stdout)
	var lines []string
	for len(lines) < 4 {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("monitor: %v after %q", err, lines)
		}
		lines = append(lines, l)
	}
	if !strings.HasPrefix(lines[1], "curr conn disc curr enq deq ok tmpfail prmfail expire remove bounce") ||
		!regexp.MustCompile(`^(\s*\d+ ){12}\n$`).MatchString(lines[2]) || !regexp.MustCompile(`^(\s*\d+ ){12}\n$`).MatchString(lines[3]) {
		t.Errorf("monitor:\n%s", strings.Join(lines, ""))
	}
}
