package regress

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dialogueConfig is the default configuration with small limits, so the
// limit cases stay small, and with a rule for the host's own name, as
// every real configuration has, so that <Postmaster> has a place.
var dialogueConfig = WithFilters(strings.Replace(DefaultConfig, `retry_base = "1s"`, `retry_base   = "1s"
  message_size = "64K"
  recipients   = 100
  line_length  = 1000`, 1), "filter.blocked-senders, filter.evil-helo, filter.later", "") + `
match {
  from   = "any"
  for    = "local"
  action = action.local
}
filter "blocked-senders" {
  sender = ["@blocked.example"]
}
filter "evil-helo" {
  helo   = ["evil.example"]
  action = "disconnect"
}
filter "later" {
  rcpt_regex = "^later@"
  action     = "tempfail"
}
`

// TestDialogues plays every scripted dialogue of testdata/dialogues
// against its own daemon, then checks how many messages were delivered
// ("# delivered: N" in the script), which is how a smuggled transaction
// would show.
func TestDialogues(t *testing.T) {
	playDialogues(t, "testdata/dialogues/*.dlg", func(t *testing.T) *Daemon {
		return StartWith(t, bin, Options{Config: dialogueConfig})
	})
}

// playDialogues plays every dialogue the pattern names against a daemon
// of its own, then checks how many messages were delivered.
func playDialogues(t *testing.T, pattern string, start func(*testing.T) *Daemon) {
	paths, _ := filepath.Glob(pattern)
	if len(paths) == 0 {
		t.Fatalf("no dialogues %s", pattern)
	}
	delivered := regexp.MustCompile(`(?m)^# delivered: (\d+)$`)
	for _, p := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(p), ".dlg"), func(t *testing.T) {
			t.Parallel()
			script, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			m := delivered.FindSubmatch(script)
			if m == nil {
				t.Fatal("no '# delivered: N' line")
			}
			want, _ := strconv.Atoi(string(m[1]))
			d := start(t)
			if err := RunDialogue(d.SMTPAddr, string(script)); err != nil {
				t.Fatal(err)
			}
			if want > 0 {
				d.WaitMail(want, 10*time.Second)
			}
			// anything smuggled would be delivered about as fast
			time.Sleep(300 * time.Millisecond)
			if got := d.Mail(); len(got) != want {
				t.Errorf("%d messages delivered, want %d: %v", len(got), want, got)
			}
			if strings.Contains(d.Log(), "fatal") {
				t.Errorf("a process failed:\n%s", d.Log())
			}
		})
	}
}

// TestConnectFilter: a client address a filter names is refused with
// 554 instead of the greeting, and then, as RFC 5321 §3.1 asks, gets
// 503 to anything but QUIT; others are greeted.
func TestConnectFilter(t *testing.T) {
	cfg := WithFilters(DefaultConfig, "filter.blocked", `filter "blocked" { from = "127.0.0.2" }`)
	d := StartWith(t, bin, Options{Config: cfg})
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	conn, err := dialer.Dial("tcp", d.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	if reply, err := readReply(r); err != nil || !strings.HasPrefix(reply, "554 5.7.1") {
		t.Fatalf("greeting %q %v", reply, err)
	}
	for _, step := range []struct{ send, want string }{{"EHLO client.example.net", "503 5.5.1"}, {"QUIT", "221"}} {
		io.WriteString(conn, step.send+"\r\n")
		if reply, err := readReply(r); err != nil || !strings.HasPrefix(reply, step.want) {
			t.Errorf("%s: %q %v, want %s", step.send, reply, err, step.want)
		}
	}
	if _, err := readReply(r); err != io.EOF {
		t.Errorf("connection left open after QUIT: %v", err)
	}
	if err := RunDialogue(d.SMTPAddr, "expect 220\nsend QUIT\nexpect 221\n"); err != nil {
		t.Error(err)
	}
}

// TestSessionLimits: past sessions_per_ip (and past sessions), a client
// gets 421 instead of the greeting, and the sessions it holds still work.
func TestSessionLimits(t *testing.T) {
	conf := strings.Replace(DefaultConfig, `retry_base = "1s"`, "retry_base = \"1s\"\n  sessions = 3\n  sessions_per_ip = 2", 1)
	d := StartWith(t, bin, Options{Config: conf})
	dial := func(src string) (net.Conn, string) {
		dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		c, err := dialer.Dial("tcp", d.SMTPAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		reply, _ := readReply(bufio.NewReader(c))
		return c, reply
	}
	var held []net.Conn
	for _, src := range []string{"127.0.0.1", "127.0.0.1"} {
		c, reply := dial(src)
		held = append(held, c)
		if !strings.HasPrefix(reply, "220 ") {
			t.Fatalf("greeting %q", reply)
		}
	}
	c, reply := dial("127.0.0.1")
	c.Close()
	if !strings.HasPrefix(reply, "421 4.7.0 Too many sessions from your address") {
		t.Errorf("third session from one address: %q", reply)
	}
	c, reply = dial("127.0.0.3")
	held = append(held, c)
	if !strings.HasPrefix(reply, "220 ") {
		t.Errorf("other address: %q", reply)
	}
	c, reply = dial("127.0.0.4")
	c.Close()
	if !strings.HasPrefix(reply, "421 4.7.0 Too many sessions") {
		t.Errorf("fourth session: %q", reply)
	}
	io.WriteString(held[0], "NOOP\r\n")
	if reply, err := readReply(bufio.NewReader(held[0])); err != nil || !strings.HasPrefix(reply, "250") {
		t.Errorf("held session: %q %v", reply, err)
	}
	for _, c := range held {
		c.Close()
	}
	d.WaitStat("smtp.session.refused", "2", 5*time.Second)
}

// TestTableReload: SIGHUP makes lookup read its file tables again; a
// broken file keeps the old contents.
func TestTableReload(t *testing.T) {
	dir, _ := WriteConfig(t, "")
	virtuals := filepath.Join(dir, "virtuals")
	os.WriteFile(virtuals, []byte("old@example.test sink\n"), 0o644)
	conf := strings.Replace(DefaultConfig, `virtual  = { "@" = "sink" }`, `virtual  = table.virtuals`, 1) +
		"table \"virtuals\" { file = \"virtuals\" }\n"
	d := StartWith(t, bin, Options{Config: conf, Dir: dir})
	rcpt := func(addr, code string) {
		t.Helper()
		if err := RunDialogue(d.SMTPAddr, "expect 220\nsend EHLO c.example\nexpect 250\nsend MAIL FROM:<s@example.net>\nexpect 250\nsend RCPT TO:<"+addr+">\nexpect "+code+"\n"); err != nil {
			t.Error(err)
		}
	}
	rcpt("old@example.test", "250")
	rcpt("new@example.test", "550")
	os.WriteFile(virtuals, []byte("old@example.test sink\nnew@example.test sink\n"), 0o644)
	d.Signal(syscall.SIGHUP)
	d.WaitStat("lookup.table.reload", "1", 5*time.Second)
	rcpt("new@example.test", "250")
	os.WriteFile(virtuals, []byte("broken\nnew@example.test sink\n"), 0o644)
	d.Signal(syscall.SIGHUP)
	d.WaitStat("lookup.table.reload", "2", 5*time.Second)
	rcpt("new@example.test", "250")
	if !strings.Contains(d.Log(), "reload: table virtuals") {
		t.Errorf("broken table not reported:\n%s", d.Log())
	}
	// smtpctl update table does the same for one table, and says how it went
	if _, errOut, code := d.Smtpctl("update", "table", "virtuals"); code != 1 || !strings.Contains(errOut, "table virtuals: ") {
		t.Errorf("update of a broken table: exit %d, %q", code, errOut)
	}
	os.WriteFile(virtuals, []byte("newer@example.test sink\n"), 0o644)
	if out, _, code := d.Smtpctl("update", "table", "virtuals"); code != 0 || out != "table virtuals reloaded\n" {
		t.Errorf("update table: %d %q", code, out)
	}
	rcpt("newer@example.test", "250")
	rcpt("new@example.test", "550")
}
