package regress

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"smtpd/internal/dns/dnstest"
)

// filterDir makes a test directory holding the test filter phases.py
// and the log it writes, readable and writable by the unprivileged
// user the filter runs as under root.
func filterDir(t *testing.T) (dir, log string) {
	t.Helper()
	dir, _ = WriteConfig(t, "")
	src, err := os.ReadFile(filepath.Join("testdata", "filters", "phases.py"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "phases.py"), src, 0o755); err != nil {
		t.Fatal(err)
	}
	log = filepath.Join(dir, "filter.log")
	if err := os.WriteFile(log, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(log, 0o666)
	return dir, log
}

// phasesConfig runs phases.py on the mx listener.
func phasesConfig(timeout string) string {
	return WithFilters(DefaultConfig, "filter.phases", fmt.Sprintf(`
filter "phases" {
  command = "/usr/bin/python3 {{DIR}}/phases.py {{DIR}}/filter.log"
  timeout = %q
}
`, timeout))
}

// message is a whole transaction to rcpt, after EHLO.
func message(rcpt, rcptReply string) string {
	s := "send MAIL FROM:<author@example.net>\nexpect 250\nsend RCPT TO:<" + rcpt + ">\nexpect " + rcptReply + "\n"
	if rcptReply != "250" {
		return s + "send RSET\nexpect 250\n"
	}
	return s + "send DATA\nexpect 354\nsend Subject: through a filter\nsend\nsend ..body line\nsend .\nexpect 250\n"
}

// TestFilterPhases: a filter process of ours registers every phase and
// every report event of OpenSMTPD's filter protocol 0.7; it sees the
// handshake, then one session's reports and requests in the order of
// the session, and its data-line output is the message delivered.
func TestFilterPhases(t *testing.T) {
	dir, log := filterDir(t)
	d := StartWith(t, bin, Options{Dir: dir, Config: phasesConfig("10s")})
	script := "expect 220\nsend EHLO client.example.net\nexpect 250\nsend NOOP\nexpect 250\nsend HELP\nexpect 214\nsend RSET\nexpect 250\n" +
		message("alice@example.test", "250") + "send QUIT\nexpect 221\n"
	if err := RunDialogue(d.SMTPAddr, script); err != nil {
		t.Fatal(err)
	}
	mail := d.WaitMail(1, 10*time.Second)
	for _, m := range mail {
		if !regexp.MustCompile(`(?m)^X-Phases-Filter: seen\r?\nReceived: from client\.example\.net`).MatchString(m) {
			t.Errorf("message without the filter's header:\n%s", m)
		}
		if !regexp.MustCompile(`(?m)^\.body line\r?$`).MatchString(m) {
			t.Errorf("dot-stuffed line lost:\n%s", m)
		}
	}
	// the session's lines, in order, once the filter saw link-disconnect
	var lines []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(log)
		lines = strings.Split(strings.TrimSpace(string(b)), "\n")
		if strings.Contains(string(b), "|link-disconnect|") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i, want := range []string{"config|smtpd-version|", "config|protocol|0.7", "config|smtp-session-timeout|", "config|subsystem|smtp-in", "config|admd|mx.example.test", "config|ready"} {
		if i >= len(lines) || !strings.HasPrefix(lines[i], want) {
			t.Fatalf("handshake line %d: want %q in\n%s", i, want, strings.Join(lines, "\n"))
		}
	}
	order := []string{
		`^report\|0\.7\|\d+\.\d{6}\|smtp-in\|link-connect\|[0-9a-f]{16}\|[^|]*\|(pass|fail|error)\|127\.0\.0\.1:\d+\|127\.0\.0\.1:\d+$`,
		`^filter\|0\.7\|\d+\.\d{6}\|smtp-in\|connect\|[0-9a-f]{16}\|[0-9a-f]{16}\|`,
		`\|protocol-server\|[0-9a-f]{16}\|220 `,
		`\|link-greeting\|[0-9a-f]{16}\|mx\.example\.test$`,
		`\|protocol-client\|[0-9a-f]{16}\|EHLO client\.example\.net$`,
		`^filter\|.*\|ehlo\|[0-9a-f]{16}\|[0-9a-f]{16}\|client\.example\.net$`,
		`\|link-identify\|[0-9a-f]{16}\|EHLO\|client\.example\.net$`,
		`^filter\|.*\|noop\|`,
		`^filter\|.*\|rset\|`,
		`^filter\|.*\|mail-from\|[0-9a-f]{16}\|[0-9a-f]{16}\|author@example\.net$`,
		`\|tx-begin\|[0-9a-f]{16}\|[0-9a-f]{8}$`,
		`\|tx-mail\|[0-9a-f]{16}\|[0-9a-f]{8}\|ok\|author@example\.net$`,
		`^filter\|.*\|rcpt-to\|[0-9a-f]{16}\|[0-9a-f]{16}\|alice@example\.test$`,
		`\|tx-rcpt\|[0-9a-f]{16}\|[0-9a-f]{8}\|ok\|alice@example\.test$`,
		`^filter\|.*\|data\|`,
		`\|tx-data\|[0-9a-f]{16}\|[0-9a-f]{8}\|ok$`,
		`^filter\|.*\|data-line\|[0-9a-f]{16}\|[0-9a-f]{16}\|Subject: through a filter$`,
		`^filter\|.*\|data-line\|[0-9a-f]{16}\|[0-9a-f]{16}\|\.\.body line$`,
		`^filter\|.*\|data-line\|[0-9a-f]{16}\|[0-9a-f]{16}\|\.$`,
		`^filter\|.*\|commit\|`,
		`\|tx-envelope\|[0-9a-f]{16}\|[0-9a-f]{8}\|[0-9a-f]{16}$`,
		`\|tx-commit\|[0-9a-f]{16}\|[0-9a-f]{8}\|\d+$`,
		`\|tx-reset\|[0-9a-f]{16}\|[0-9a-f]{8}$`,
		`^filter\|.*\|quit\|`,
		`\|link-disconnect\|[0-9a-f]{16}$`,
	}
	at := 0
	for _, pat := range order {
		re := regexp.MustCompile(pat)
		found := false
		for ; at < len(lines); at++ {
			if re.MatchString(lines[at]) {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("no line /%s/ after the ones before, in:\n%s", pat, strings.Join(lines, "\n"))
		}
	}
	if out, _, _ := d.Smtpctl("show", "filters"); !regexp.MustCompile(`(?m)^phases\tcommand\trunning since .*\tstart 1$`).MatchString(out) {
		t.Errorf("show filters:\n%s", out)
	}
}

// TestFilterFailures: a filter that exits, hangs or writes garbage
// costs the session waiting on it a 451, never the daemon; the filter
// is started again and the next session passes through it. Refusals,
// junk and rewrites from the filter are honoured.
func TestFilterFailures(t *testing.T) {
	dir, _ := filterDir(t)
	d := StartWith(t, bin, Options{Dir: dir, Config: phasesConfig("2s")})
	ehlo := "expect 220\nsend EHLO client.example.net\nexpect 250\n"
	passes := func(n int) {
		t.Helper()
		// the filter is back after its backoff
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := RunDialogue(d.SMTPAddr, ehlo+message("alice@example.test", "250")+"send QUIT\nexpect 221\n")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no message through the restarted filter: %v\n%s", err, d.Log())
			}
			time.Sleep(200 * time.Millisecond)
		}
		d.WaitMail(n, 10*time.Second)
	}
	passes(1)
	for i, rcpt := range []string{"crash@example.test", "hang@example.test", "garbage@example.test"} {
		began := time.Now()
		if err := RunDialogue(d.SMTPAddr, ehlo+message(rcpt, "451")+"send QUIT\nexpect 221\n"); err != nil {
			t.Fatalf("%s: %v", rcpt, err)
		}
		if took := time.Since(began); took > 6*time.Second {
			t.Errorf("%s: the session waited %v on a filter with a 2 s timeout", rcpt, took)
		}
		if d.Exited(0) {
			t.Fatalf("daemon exited:\n%s", d.Log())
		}
		passes(i + 2)
	}
	out, _, _ := d.Smtpctl("show", "filters")
	if !regexp.MustCompile(`(?m)^phases\tcommand\trunning since .*\tstart 4\tlast error: `).MatchString(out) {
		t.Errorf("show filters after three failures:\n%s", out)
	}
	st := d.Stats()
	if errs, _ := strconv.Atoi(st["mfa.filter.phases.errors"]); st["mfa.filter.phases.restarts"] != "3" || st["mfa.filter.phases.timeouts"] != "1" || errs < 1 {
		t.Errorf("filter counters: restarts=%s timeouts=%s errors=%s", st["mfa.filter.phases.restarts"], st["mfa.filter.phases.timeouts"], st["mfa.filter.phases.errors"])
	}
	// a filter that makes the message malformed fails the transaction
	if err := RunDialogue(d.SMTPAddr, ehlo+"send MAIL FROM:<author@example.net>\nexpect 250\nsend RCPT TO:<badcr@example.test>\nexpect 250\n"+
		"send DATA\nexpect 354\nsend Subject: bare CR\nsend\nsend body\nsend .\nexpect 451 4.7.0\nsend QUIT\nexpect 221\n"); err != nil {
		t.Error(err)
	}
	// what the filter decides
	if err := RunDialogue(d.SMTPAddr, ehlo+message("reject@example.test", "550 5.7.1 Refused by the phases filter")+"send QUIT\nexpect 221\n"); err != nil {
		t.Error(err)
	}
	if err := RunDialogue(d.SMTPAddr, ehlo+message("junk@example.test", "250")+message("rewrite@example.test", "250")+"send QUIT\nexpect 221\n"); err != nil {
		t.Fatal(err)
	}
	var junk, rewritten int
	for _, m := range d.WaitMail(6, 10*time.Second) {
		if regexp.MustCompile(`(?m)^X-Spam: yes\r?$`).MatchString(m) {
			junk++
		}
		if strings.Contains(m, "for <sink@example.test>") {
			rewritten++
		}
	}
	// junk marks the session: both of its messages
	if junk != 2 || rewritten != 1 {
		t.Errorf("%d junk messages (want 2), %d rewritten (want 1)", junk, rewritten)
	}
}

// TestFilterSenderscore: Debian's filter-senderscore, an OpenSMTPD
// filter written in Go, runs unchanged: it looks the client's address
// up in the reputation zone (our test DNS, which the daemon's mount
// namespace gives as the resolver in resolv.conf) and refuses the
// sender of a client with a low score, while another client passes.
func TestFilterSenderscore(t *testing.T) {
	requireRoot(t, "a mount namespace for the filter's resolv.conf and a DNS server on port 53")
	const prog = "/usr/libexec/opensmtpd/filter-senderscore"
	if _, err := os.Stat(prog); err != nil {
		t.Fatalf("%s: %v (make test installs opensmtpd-filter-senderscore)", prog, err)
	}
	srv, err := dnstest.StartOn("127.0.0.99:53", "1.0.0.127.score.senderscore.com. 300 IN A 127.0.4.5")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	dir, _ := WriteConfig(t, "")
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.99\noptions attempts:1 timeout:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := WithFilters(DefaultConfig, "filter.senderscore", `
filter "senderscore" {
  command = "`+prog+` -blockBelow 50 -blockPhase mail-from"
}
`)
	d := StartWith(t, bin, Options{Dir: dir, Config: cfg,
		Wrap: []string{"unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, resolv}})
	ehlo := "expect 220\nsend EHLO client.example.net\nexpect 250\n"
	if err := RunDialogue(d.SMTPAddr, ehlo+"send MAIL FROM:<author@example.net>\nexpect 550 your IP reputation is too low\nexpect-close\n"); err != nil {
		t.Error(err)
	}
	if srv.Queries("1.0.0.127.score.senderscore.com.", "A") == 0 {
		t.Error("the filter asked no reputation")
	}
	if err := RunDialogueFrom("127.0.0.3", d.SMTPAddr, ehlo+message("alice@example.test", "250")+"send QUIT\nexpect 221\n"); err != nil {
		t.Error(err)
	}
	d.WaitMail(1, 10*time.Second)
}
