package regress

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// externalsConfig sends the mail for remote.test on through external
// commands, after extsmail: ext1 then ext2 by default, work for mail
// from work.example.test, noisy for mail whose subject says so. A
// retry is an hour away, so that only smtpctl tries again sooner.
const externalsConfig = `
external "ext1"  { command = "/bin/sh {{DIR}}/ext1.sh ${sender.address} ${dest.address}" }
external "ext2"  { command = "/bin/sh {{DIR}}/ext2.sh ${sender.address} ${dest.address}" }
external "work"  { command = "/bin/sh {{DIR}}/work.sh ${sender.address} ${dest.address}" }
external "noisy" {
  command = "/bin/sh {{DIR}}/noisy.sh ${sender.address} ${dest.address}"
  timeout = "20s"
}

action "out" {
  externals = [external.ext1, external.ext2]
  user      = "sink"
  userbase  = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
  route {
    header    = "From"
    regex     = "@work\\.example\\.test>?$"
    externals = [external.work]
  }
  route {
    header    = "Subject"
    regex     = "^noisy"
    externals = [external.noisy]
  }
}

match {
  from   = "any"
  for    = "remote.test"
  action = action.out
}
`

// externalScript is each external but noisy: it notes its name and
// arguments in ran.log; with NAME.ok it writes the message it read to
// NAME.out.RECIPIENT and exits 0, else it writes NAME.stderr on its
// standard error and exits with the code in NAME.code.
const externalScript = `#!/bin/sh
dir=$(dirname "$0")
name=$(basename "$0" .sh)
echo "$name $1 $2" >> "$dir/ran.log"
if [ -e "$dir/$name.ok" ]; then
  cat > "$dir/$name.tmp" && mv "$dir/$name.tmp" "$dir/$name.out.$2"
  exit 0
fi
cat > /dev/null
cat "$dir/$name.stderr" >&2
exit "$(cat "$dir/$name.code")"
`

// noisyScript writes a MiB on its standard error, then the message it
// read to noisy.out.RECIPIENT, and succeeds.
const noisyScript = `#!/bin/sh
dir=$(dirname "$0")
echo "noisy $1 $2" >> "$dir/ran.log"
head -c 1048576 /dev/zero | tr '\0' e >&2
echo >&2
cat > "$dir/noisy.tmp" && mv "$dir/noisy.tmp" "$dir/noisy.out.$2"
exit 0
`

// startExternals starts a daemon on externalsConfig with the scripts
// in its directory; files are the flag files (NAME.ok, NAME.code,
// NAME.stderr) and their contents.
func startExternals(t *testing.T, files map[string]string) *Daemon {
	t.Helper()
	dir, _ := WriteConfig(t, "")
	for _, name := range []string{"ext1", "ext2", "work"} {
		extWrite(t, filepath.Join(dir, name+".sh"), externalScript)
	}
	extWrite(t, filepath.Join(dir, "noisy.sh"), noisyScript)
	for name, text := range files {
		extWrite(t, filepath.Join(dir, name), text)
	}
	conf := strings.Replace(DefaultConfig, `retry_base = "1s"`, `retry_base = "1h"`, 1) + externalsConfig
	return StartWith(t, bin, Options{Config: conf, Dir: dir})
}

func extWrite(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
}

// extSend sends a message from `from` (also its From field) to
// rcpt with a subject.
func extSend(t *testing.T, d *Daemon, from, rcpt, subject string) {
	t.Helper()
	script := fmt.Sprintf(`expect 220
send EHLO client.example.net
expect 250
send MAIL FROM:<%s>
expect 250
send RCPT TO:<%s>
expect 250
send DATA
expect 354
send From: Someone <%s>
send To: <%s>
send Subject: %s
sendraw "\r\n"
send The body of %s.
send .
expect 250
send QUIT
expect 221
`, from, rcpt, from, rcpt, subject, subject)
	if err := RunDialogue(d.SMTPAddr, script); err != nil {
		t.Fatal(err)
	}
}

// extRan is what the externals ran so far, a line each.
func extRan(d *Daemon) []string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "ran.log"))
	return strings.Fields(strings.ReplaceAll(string(b), " ", "|"))
}

// TestExternals: an externals action sends mail on through commands
// tried in order until one succeeds, routed by header; a round of
// temporary failures keeps the message queued with the externals'
// errors for smtpctl show queue, until smtpctl schedule or flush tries
// it again.
func TestExternals(t *testing.T) {
	t.Run("second external", func(t *testing.T) {
		d := startExternals(t, map[string]string{"ext1.stderr": "relay1 unreachable\n", "ext1.code": "1", "ext2.ok": ""})
		extSend(t, d, "alice@home.example.test", "bob@remote.test", "hello")
		got := waitFile(t, d, filepath.Join(d.Dir, "ext2.out.bob@remote.test"), 10*time.Second)
		if !strings.Contains(got, "\r\nSubject: hello\r\n\r\nThe body of hello.\r\n") || !strings.HasPrefix(got, "Received: ") {
			t.Errorf("ext2 got %q", got)
		}
		want := []string{"ext1|alice@home.example.test|bob@remote.test", "ext2|alice@home.example.test|bob@remote.test"}
		if ran := extRan(d); strings.Join(ran, " ") != strings.Join(want, " ") {
			t.Errorf("ran %q, want %q", ran, want)
		}
		d.WaitStat("scheduler.envelope", "0", 5*time.Second)
		for _, line := range []string{"external ext1 failed for <bob@remote.test>", "(permanent): exited 1: relay1 unreachable", "external ext2 took the message for <bob@remote.test>"} {
			if !strings.Contains(d.Log(), line) {
				t.Errorf("log lacks %q", line)
			}
		}
	})

	t.Run("all fail then recover", func(t *testing.T) {
		d := startExternals(t, map[string]string{
			"ext1.stderr": "ssh: connect to host relay1 port 22: Network is unreachable\n", "ext1.code": "75",
			"ext2.stderr": "warming up\nssh: Could not resolve hostname relay2\n", "ext2.code": "75",
		})
		extSend(t, d, "alice@home.example.test", "bob@remote.test", "stuck")
		d.WaitStat("scheduler.delivery.tempfail", "1", 10*time.Second)
		out, _, code := d.Smtpctl("show", "queue")
		want := "external ext1: exited 75: ssh: connect to host relay1 port 22: Network is unreachable; external ext2: exited 75: ssh: Could not resolve hostname relay2"
		if code != 0 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "|bob@remote.test|") || !strings.HasSuffix(out, "|1|"+want+"\n") {
			t.Fatalf("show queue: %d %q\nwant the error %q", code, out, want)
		}
		// the network is back: ext2 works, and the queue is told
		extWrite(t, filepath.Join(d.Dir, "ext2.ok"), "")
		if out, _, code := d.Smtpctl("schedule", "all"); code != 0 || out != "1 envelopes scheduled\n" {
			t.Fatalf("schedule all: %d %q", code, out)
		}
		got := waitFile(t, d, filepath.Join(d.Dir, "ext2.out.bob@remote.test"), 10*time.Second)
		if !strings.Contains(got, "The body of stuck.") {
			t.Errorf("ext2 got %q", got)
		}
		d.WaitStat("scheduler.envelope", "0", 5*time.Second)
	})

	t.Run("routes", func(t *testing.T) {
		d := startExternals(t, map[string]string{"ext1.ok": "", "work.ok": ""})
		extSend(t, d, "alice@work.example.test", "boss@remote.test", "report")
		extSend(t, d, "alice@home.example.test", "mum@remote.test", "news")
		work := waitFile(t, d, filepath.Join(d.Dir, "work.out.boss@remote.test"), 10*time.Second)
		home := waitFile(t, d, filepath.Join(d.Dir, "ext1.out.mum@remote.test"), 10*time.Second)
		if !strings.Contains(work, "The body of report.") || !strings.Contains(home, "The body of news.") {
			t.Errorf("work got %q, ext1 got %q", work, home)
		}
		for _, f := range []string{"ext1.out.boss@remote.test", "work.out.mum@remote.test", "ext2.out.mum@remote.test"} {
			if _, err := os.Stat(filepath.Join(d.Dir, f)); err == nil {
				t.Errorf("%s: routed the wrong way", f)
			}
		}
	})

	t.Run("noisy", func(t *testing.T) {
		d := startExternals(t, nil)
		start := time.Now()
		extSend(t, d, "alice@home.example.test", "bob@remote.test", "noisy one")
		got := waitFile(t, d, filepath.Join(d.Dir, "noisy.out.bob@remote.test"), 10*time.Second)
		d.WaitStat("scheduler.delivery.ok", "1", 10*time.Second)
		if !strings.Contains(got, "The body of noisy one.") {
			t.Errorf("noisy got %q", got)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("delivered after %v", took)
		}
	})

	t.Run("flush", func(t *testing.T) {
		d := startExternals(t, map[string]string{
			"ext1.stderr": "relay1 unreachable\n", "ext1.code": "75",
			"ext2.stderr": "relay2 unreachable\n", "ext2.code": "75",
		})
		extSend(t, d, "alice@home.example.test", "bob@remote.test", "batch")
		d.WaitStat("scheduler.delivery.tempfail", "1", 10*time.Second)
		out, errOut, code := d.Smtpctl("flush", "-t", "30s")
		if code != 75 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "|bob@remote.test|") || !strings.HasSuffix(out, "|2|external ext1: exited 75: relay1 unreachable; external ext2: exited 75: relay2 unreachable\n") {
			t.Fatalf("flush with the externals failing: %d %q %q", code, out, errOut)
		}
		if !strings.Contains(errOut, "1 envelopes tried, 1 envelopes queued") {
			t.Errorf("flush said %q", errOut)
		}
		extWrite(t, filepath.Join(d.Dir, "ext1.ok"), "")
		if out, errOut, code := d.Smtpctl("flush"); code != 0 || out != "" || errOut != "" {
			t.Fatalf("flush with ext1 working: %d %q %q", code, out, errOut)
		}
		if _, err := os.Stat(filepath.Join(d.Dir, "ext1.out.bob@remote.test")); err != nil {
			t.Errorf("flush exited 0 before the delivery: %v", err)
		}
		// an empty queue flushes at once
		if out, errOut, code := d.Smtpctl("flush"); code != 0 || out != "" {
			t.Errorf("flush of an empty queue: %d %q %q", code, out, errOut)
		}
		if _, errOut, code := d.Smtpctl("flush", "-t", "soon"); code != 1 || !strings.Contains(errOut, "not a duration") {
			t.Errorf("flush -t soon: %d %q", code, errOut)
		}
	})
}
