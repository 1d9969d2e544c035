package mda

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"smtpd/internal/address"
	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/proto"
)

// externalScripts are the programs the tests run as externals, by
// name; each notes its name in ran.log before it acts, so that the
// order of the attempts shows.
var externalScripts = map[string]string{
	"fail1":   `echo "relay1 unreachable" >&2; exit 1`,
	"save":    `cat > "$DIR/got.$1"; echo "queued as 1234"; exit 0`,
	"temp":    `echo "connection refused" >&2; exit 75`,
	"temp2":   `echo "connection refused" >&2; exit 75`,
	"perm":    `echo "first line" >&2; echo "user unknown" >&2; exit 67`,
	"three":   `echo "busy" >&2; exit 3`,
	"noisy":   `head -c 1048576 /dev/zero | tr '\0' x >&2; echo >&2; echo "last words" >&2; head -c 1048576 /dev/zero; exit 0`,
	"hang":    `sleep 60 & echo $! > "$DIR/child.pid"; wait`,
	"signal":  `echo "dying" >&2; kill -TERM $$`,
	"partial": `head -c 10 > /dev/null; exit 75`,
	// leaves a reader of its standard input behind, and a process
	"thief": `(sleep 0.05; cat > /dev/null) >/dev/null 2>&1 & (sleep 30) >/dev/null 2>&1 & echo $! > "$DIR/left.pid"; exit 75`,
	// reads late, so that a reader left behind would get its share
	"slowsave": `sleep 0.2; cat > "$DIR/got.$1"; exit 0`,
}

// externalsConfig writes the scripts into dir and returns a
// configuration with an external per script and the action "out".
func externalsConfig(t *testing.T, dir, action string) *config.Config {
	t.Helper()
	var conf strings.Builder
	for name, body := range externalScripts {
		script := filepath.Join(dir, name+".sh")
		text := fmt.Sprintf("#!/bin/sh\nDIR=%s\necho %s >> \"$DIR/ran.log\"\n%s\n", dir, name, body)
		if err := os.WriteFile(script, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&conf, "external %q {\n  command = \"/bin/sh %s ${dest.user}\"\n  timeout = \"500ms\"\n", name, script)
		if name == "three" {
			conf.WriteString("  temporary = [3]\n")
		}
		conf.WriteString("}\n")
	}
	conf.WriteString(action)
	cfg, err := config.Parse([]byte(conf.String()), filepath.Join(dir, "smtpd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// message writes a message into a file and returns it open.
func message(t *testing.T, dir, text string) *os.File {
	t.Helper()
	p := filepath.Join(dir, "body")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func deliverTo(t *testing.T, cfg *config.Config, body *os.File, dest string) ([]string, error) {
	t.Helper()
	e := &envelope.Envelope{ID: 1<<32 | 1, Action: "out", Sender: "alice@example.org", Rcpt: dest, Dest: dest}
	vars := config.TemplateVars{Dest: address.Split(dest), Rcpt: address.Split(dest), Sender: address.Split(e.Sender), User: proto.Account{Name: "alice"}}
	var logged []string
	logf := func(format string, args ...any) { logged = append(logged, fmt.Sprintf(format, args...)) }
	err := deliverExternals(cfg.Action("out"), vars, []string{"PATH=/usr/bin:/bin"}, "/", e, body, logf)
	return logged, err
}

func ranLog(t *testing.T, dir string) string {
	b, _ := os.ReadFile(filepath.Join(dir, "ran.log"))
	return strings.Join(strings.Fields(string(b)), " ")
}

// TestExternalsInOrder: the externals run in order until one exits 0;
// the one that takes the message reads it whole from its standard
// input, from the start although the file was read before.
func TestExternalsInOrder(t *testing.T) {
	dir := t.TempDir()
	cfg := externalsConfig(t, dir, `action "out" {
  externals = [external.fail1, external.save, external.temp]
  user      = "alice"
}`)
	text := "Subject: hi\r\n\r\n" + strings.Repeat("line of the body\r\n", 100000)
	body := message(t, dir, text)
	body.Seek(12345, 0)
	logged, err := deliverTo(t, cfg, body, "bob@example.net")
	if err != nil {
		t.Fatal(err)
	}
	if got := ranLog(t, dir); got != "fail1 save" {
		t.Errorf("ran %q", got)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "got.bob"))
	if string(got) != text {
		t.Errorf("the external got %d bytes of %d", len(got), len(text))
	}
	if len(logged) != 2 || !strings.Contains(logged[0], "external fail1 failed for <bob@example.net>") || !strings.Contains(logged[0], "(permanent): exited 1: relay1 unreachable") || !strings.Contains(logged[1], "external save took the message") {
		t.Errorf("logged %q", logged)
	}
}

// TestExternalsFailures: the failure is temporary unless every
// external failed permanently, and names each with its last line of
// standard error.
func TestExternalsFailures(t *testing.T) {
	for _, tt := range []struct {
		list      string
		temporary bool
		text      string
	}{
		{"external.temp, external.temp2", true, "external temp: exited 75: connection refused; external temp2: exited 75: connection refused"},
		{"external.perm, external.fail1", false, "external perm: exited 67: user unknown; external fail1: exited 1: relay1 unreachable"},
		{"external.perm, external.temp", true, "external perm: exited 67: user unknown; external temp: exited 75: connection refused"},
		{"external.three", true, "external three: exited 3: busy"},
		{"external.signal", true, "external signal: killed by signal 15 (terminated): dying"},
		{"external.missing", true, "external missing: no-such-program: not found in /usr/bin:/bin"},
	} {
		t.Run(tt.list, func(t *testing.T) {
			dir := t.TempDir()
			cfg := externalsConfig(t, dir, `external "missing" { command = "no-such-program -x" }
action "out" {
  externals = [`+tt.list+`]
  user      = "alice"
}`)
			logged, err := deliverTo(t, cfg, message(t, dir, "Subject: x\r\n\r\nbody\r\n"), "bob@example.net")
			var temp tempError
			if err == nil || errors.As(err, &temp) != tt.temporary {
				t.Fatalf("error %v, want temporary %v", err, tt.temporary)
			}
			if err.Error() != tt.text {
				t.Errorf("text %q\nwant %q", err, tt.text)
			}
			if len(logged) != strings.Count(tt.list, ",")+1 {
				t.Errorf("logged %q", logged)
			}
		})
	}
}

// TestExternalTimeout: an external still running at its timeout is
// killed with what it started, and the attempt is temporary.
func TestExternalTimeout(t *testing.T) {
	dir := t.TempDir()
	cfg := externalsConfig(t, dir, `action "out" {
  externals = [external.hang, external.save]
  user      = "alice"
}`)
	start := time.Now()
	logged, err := deliverTo(t, cfg, message(t, dir, "Subject: x\r\n\r\nbody\r\n"), "bob@example.net")
	if err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("%v after %v", err, time.Since(start))
	}
	if len(logged) != 2 || !strings.Contains(logged[0], "(temporary): timed out after 500ms") {
		t.Errorf("logged %q", logged)
	}
	waitKilled(t, filepath.Join(dir, "child.pid"))
}

// waitKilled waits until the process whose pid an external wrote into
// file is gone: killed with its group, the orphan may stay a zombie a
// moment before init reaps it.
func waitKilled(t *testing.T, file string) {
	t.Helper()
	b, _ := os.ReadFile(file)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid %q in %s", b, file)
	}
	for deadline := time.Now().Add(5 * time.Second); syscall.Kill(pid, 0) == nil && !zombie(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d an external started survived it", pid)
		}
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, after, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(after, "Z")
}

// TestExternalNoisy: an external writing a MiB on each of its outputs
// neither blocks nor fills the memory, and its last line is kept.
func TestExternalNoisy(t *testing.T) {
	dir := t.TempDir()
	cfg := externalsConfig(t, dir, `action "out" {
  externals = [external.noisy]
  user      = "alice"
}`)
	x := cfg.Externals[0]
	for _, e := range cfg.Externals {
		if e.Name == "noisy" {
			x = e
		}
	}
	x.Temporary = nil
	start := time.Now()
	a := runExternal(x, config.TemplateVars{Dest: address.Split("b@example.net")}, []string{"PATH=/usr/bin:/bin"}, "/", message(t, dir, "Subject: x\r\n\r\n"))
	if a.err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("%v after %v", a.err, time.Since(start))
	}
	if a.line != "last words" {
		t.Errorf("last line %q", a.line)
	}
}

// TestExternalWholeMessage: each external reads the whole message from
// its start, whatever the one before did: read part of it, or left a
// reader of its input and another process behind, which are killed
// with it.
func TestExternalWholeMessage(t *testing.T) {
	for _, c := range []struct {
		name, first, second string
		left                bool
	}{
		{"partial read", "partial", "save", false},
		{"leftovers", "thief", "slowsave", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := externalsConfig(t, dir, fmt.Sprintf(`action "out" {
  externals = [external.%s, external.%s]
  user      = "alice"
}`, c.first, c.second))
			text := "Subject: x\r\n\r\n" + strings.Repeat("x", 1<<20)
			if _, err := deliverTo(t, cfg, message(t, dir, text), "bob@example.net"); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(dir, "got.bob")); string(got) != text {
				t.Errorf("the second external got %d bytes of %d", len(got), len(text))
			}
			if c.left {
				waitKilled(t, filepath.Join(dir, "left.pid"))
			}
		})
	}
}

// TestExternalsRoute: a route chooses the list by a header field,
// folded or not, and the action's own list is the default.
func TestExternalsRoute(t *testing.T) {
	dir := t.TempDir()
	cfg := externalsConfig(t, dir, `action "out" {
  externals = [external.fail1]
  user      = "alice"
  route {
    header    = "from"
    regex     = "@work\\.example\\.org>?$"
    externals = [external.save]
  }
}`)
	if _, err := deliverTo(t, cfg, message(t, dir, "Subject: x\r\nFrom: Alice\r\n <alice@work.example.org>\r\n\r\nFrom: x@work.example.org\r\n"), "routed@example.net"); err != nil {
		t.Errorf("routed: %v", err)
	}
	if _, err := deliverTo(t, cfg, message(t, dir, "Subject: x\r\nFrom: alice@home.example.org\r\n\r\nFrom: x@work.example.org\r\n"), "default@example.net"); err == nil || !strings.Contains(err.Error(), "relay1 unreachable") {
		t.Errorf("default: %v", err)
	}
	if got := ranLog(t, dir); got != "save fail1" {
		t.Errorf("ran %q", got)
	}
}

func TestHeaderFields(t *testing.T) {
	for text, want := range map[string]map[string][]string{
		"From: a@b\r\nTo: x,\r\n\ty\r\nto: z\r\n\r\nBody: no\r\n": {"from": {"a@b"}, "to": {"x,\ty", "z"}},
		"Subject: no end":           {"subject": {"no end"}},
		"X: 1\nY:2\n\nZ: 3\n":       {"x": {"1"}, "y": {"2"}},
		"X: 1\nnot a field\nY: 2\n": {"x": {"1"}},
		"\r\nX: body\r\n":           {},
	} {
		got, err := headerFields(bytes.NewReader([]byte(text)))
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%q: %v %v", text, got, err)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	var b tailBuffer
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if len(b.Bytes()) != outputTail || !strings.HasSuffix(string(b.Bytes()), "line 2998\nline 2999\n") {
		t.Errorf("%d bytes ending %q", len(b.Bytes()), b.Bytes()[len(b.Bytes())-20:])
	}
	b.Write(bytes.Repeat([]byte("y"), 3*outputTail))
	if len(b.Bytes()) != outputTail || lastLine(b.Bytes()) != strings.Repeat("y", maxErrorLine)+"..." {
		t.Errorf("%d bytes", len(b.Bytes()))
	}
	if got := lastLine([]byte("one\ntwo\x01\n\n  \n")); got != "two" {
		t.Errorf("last line %q", got)
	}
}
