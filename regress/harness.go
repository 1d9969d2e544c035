// Package regress drives the built smtpd and smtpctl binaries end to end,
// over real sockets on loopback. Build builds them once per test binary;
// Start runs a whole daemon from a configuration in a temporary
// directory, unprivileged or, when the tests run as root, with its real
// privilege separation.
package regress

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binaries are the paths of the built programs.
type Binaries struct {
	Smtpd, Smtpctl string
}

// Build compiles smtpd and smtpctl from the module at root into dir,
// with the build tags given ("monkey" for fault injection).
func Build(root, dir string, tags ...string) (Binaries, error) {
	b := Binaries{Smtpd: filepath.Join(dir, "smtpd"), Smtpctl: filepath.Join(dir, "smtpctl")}
	for out, pkg := range map[string]string{b.Smtpd: "./smtpd", b.Smtpctl: "./smtpctl"} {
		cmd := exec.Command("go", "build", "-tags", strings.Join(tags, ","), "-o", out, pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
		}
	}
	return b, nil
}

// syncBuffer is a bytes.Buffer safe for the writer goroutine of exec and
// readers in the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Daemon is a running smtpd.
type Daemon struct {
	Bin    Binaries
	Dir    string
	Config string
	Socket string
	// SMTPAddr is the address of the "mx" listener of the default
	// configuration.
	SMTPAddr string
	Cmd      *exec.Cmd

	t      testing.TB
	log    *syncBuffer
	exited chan struct{}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// DefaultConfig is a configuration that accepts mail for example.test
// and delivers every address of it to the maildir mail/ below the test
// directory, as the user running the test ({{...}} are filled by Start).
const DefaultConfig = `
hostname       = "mx.example.test"
spool          = "spool"
control_socket = "run/smtpd.sock"

limits {
  retry_base = "1s"
}

table "domains" { list = ["example.test"] }

listen "mx" { address = "{{ADDR}}" }

action "local" {
  maildir  = "mail"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}

match {
  from   = "any"
  for    = table.domains
  action = action.local
}
`

// WithFilters gives the "mx" listener of a configuration built on
// DefaultConfig the filter chain chain (filter references such as
// filter.NAME) and adds the filter blocks in blocks.
func WithFilters(config, chain, blocks string) string {
	return strings.Replace(config, `listen "mx" { address = "{{ADDR}}" }`,
		"listen \"mx\" {\n  address = \"{{ADDR}}\"\n  filters = ["+chain+"]\n}\n", 1) + blocks
}

// WriteConfig writes a configuration into a new temporary directory and
// returns the directory and the file.
func WriteConfig(t testing.TB, text string) (dir, path string) {
	t.Helper()
	dir = t.TempDir()
	// as root the queue chroots into the spool below dir, and the
	// children must be able to reach nothing else: keep dir traversable
	// (t.TempDir makes both dir and its parent 0700)
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	path = filepath.Join(dir, "smtpd.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, path
}

// Options change how Start runs the daemon.
type Options struct {
	// Config is the configuration template; DefaultConfig if empty.
	// {{ADDR}} is a free loopback address, {{DIR}} the test directory,
	// {{UID}} and {{GID}} the user deliveries run as.
	Config string
	// Dir reuses the directory of an earlier daemon, and its spool.
	Dir string
	// Addr is the listener address ({{ADDR}}); a free port on 127.0.0.1
	// if empty.
	Addr string
	// Credential, if set, runs the daemon as another user; the test
	// directory is handed to that user.
	Credential *syscall.Credential
	// Env is added to the daemon's environment (monkey settings).
	Env []string
	// Wrap, if set, is a command that runs the daemon: the daemon's
	// command line is appended to it (unshare, for instance).
	Wrap []string
	// Command, if set, is the daemon's command line in place of
	// `smtpd -d -v -f CONFIG` (a systemd unit's ExecStart, for
	// instance); it must run the daemon in the foreground on the
	// configuration in Dir.
	Command []string
}

// Start starts a daemon in the foreground on DefaultConfig and waits
// until it is ready.
func Start(t testing.TB, bin Binaries) *Daemon {
	t.Helper()
	return StartWith(t, bin, Options{})
}

// StartWith is Start with options.
func StartWith(t testing.TB, bin Binaries, opts Options) *Daemon {
	t.Helper()
	addr := opts.Addr
	if addr == "" {
		addr = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	}
	uid, gid := os.Getuid(), os.Getgid()
	if c := opts.Credential; c != nil {
		uid, gid = int(c.Uid), int(c.Gid)
	}
	text := opts.Config
	if text == "" {
		text = DefaultConfig
	}
	dir, path := opts.Dir, filepath.Join(opts.Dir, "smtpd.conf")
	if dir == "" {
		dir, path = WriteConfig(t, "")
	}
	if err := os.WriteFile(path, []byte(fillConfig(text, addr, dir, uid, gid)), 0o644); err != nil {
		t.Fatal(err)
	}
	if opts.Credential != nil {
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	d := &Daemon{
		Bin: bin, Dir: dir, Config: path, SMTPAddr: addr,
		Socket: filepath.Join(dir, "run", "smtpd.sock"),
		t:      t, log: &syncBuffer{}, exited: make(chan struct{}),
	}
	args := []string{bin.Smtpd, "-d", "-v", "-f", path}
	if opts.Command != nil {
		args = opts.Command
	}
	if opts.Wrap != nil {
		args = append(append([]string{}, opts.Wrap...), args...)
	}
	d.Cmd = exec.Command(args[0], args[1:]...)
	d.Cmd.Stdout, d.Cmd.Stderr = d.log, d.log
	if opts.Env != nil {
		d.Cmd.Env = append(os.Environ(), opts.Env...)
	}
	if opts.Credential != nil {
		d.Cmd.SysProcAttr = &syscall.SysProcAttr{Credential: opts.Credential}
	}
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.Cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.Cmd.Process.Kill()
		<-d.exited
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.log.String(), "parent: ready") {
		select {
		case <-d.exited:
			t.Fatalf("daemon exited during start: %v\n%s", d.Cmd.ProcessState, d.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready after 10s:\n%s", d.log.String())
		}
	}
	return d
}

// fillConfig fills the {{...}} of a configuration template (see
// Options.Config) for a daemon on addr in dir, delivering as uid:gid.
func fillConfig(text, addr, dir string, uid, gid int) string {
	return strings.NewReplacer("{{ADDR}}", addr, "{{DIR}}", dir, "{{UID}}", fmt.Sprint(uid), "{{GID}}", fmt.Sprint(gid)).Replace(text)
}

// Log returns what the daemon logged so far.
func (d *Daemon) Log() string { return d.log.String() }

// Wait waits up to timeout for the parent to exit and returns its exit
// status, or -1 if it is still running.
func (d *Daemon) Wait(timeout time.Duration) int {
	select {
	case <-d.exited:
		return d.Cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		return -1
	}
}

// Exited waits up to timeout for the parent to exit, whatever way, and
// reports whether it did.
func (d *Daemon) Exited(timeout time.Duration) bool {
	select {
	case <-d.exited:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Signal sends sig to the parent.
func (d *Daemon) Signal(sig syscall.Signal) {
	if err := d.Cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
}

// Children returns the pids of the parent's children by process name, as
// read from /proc.
func (d *Daemon) Children() map[string]int {
	return ChildrenOf(d.Cmd.Process.Pid)
}

// ChildrenOf finds the `smtpd -x NAME` children of pid in /proc.
func ChildrenOf(pid int) map[string]int {
	out := map[string]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if PPid(cpid) != pid {
			continue
		}
		args := Cmdline(cpid)
		for i, a := range args {
			if a == "-x" && i+1 < len(args) {
				out[args[i+1]] = cpid
			}
		}
	}
	return out
}

// PPid returns the parent pid of pid, or -1.
func PPid(pid int) int {
	v, _ := StatusField(pid, "PPid")
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

// Cmdline returns the argv of pid.
func Cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// StatusField returns a field of /proc/PID/status, such as "Uid".
func StatusField(pid int, name string) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == name {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s in /proc/%d/status", name, pid)
}

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	state, err := StatusField(pid, "State")
	return err == nil && !strings.HasPrefix(state, "Z")
}

// Smtpctl runs smtpctl against the daemon's control socket.
func (d *Daemon) Smtpctl(args ...string) (stdout, stderr string, code int) {
	return RunSmtpctl(d.Bin, append([]string{"-s", d.Socket}, args...)...)
}

// RunSmtpctl runs smtpctl with args.
func RunSmtpctl(bin Binaries, args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(bin.Smtpctl, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code == 0 {
		code = -1
	}
	return o.String(), e.String(), code
}

// Mail returns the messages delivered to the maildir mail/ of the
// default configuration, by file name.
func (d *Daemon) Mail() map[string]string {
	out := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(d.Dir, "mail", "new", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil {
			out[filepath.Base(f)] = string(b)
		}
	}
	return out
}

// WaitMail waits until at least n messages were delivered and returns
// them; it fails the test after timeout.
func (d *Daemon) WaitMail(n int, timeout time.Duration) map[string]string {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := d.Mail()
		if len(m) >= n {
			return m
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%d messages delivered after %v, want %d\n%s", len(m), timeout, n, d.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stats returns the counters of `smtpctl show stats`.
func (d *Daemon) Stats() map[string]string {
	out, _, _ := d.Smtpctl("show", "stats")
	stats := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			stats[k] = v
		}
	}
	return stats
}

// WaitStat waits until counter key has value want.
func (d *Daemon) WaitStat(key, want string, timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := d.Stats()[key]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s=%q after %v, want %q\n%s", key, got, timeout, want, d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill kills the parent and every child at once with SIGKILL, as a
// power cut would stop them, and waits for the parent.
func (d *Daemon) Kill() {
	pids := []int{d.Cmd.Process.Pid}
	for _, pid := range d.Children() {
		pids = append(pids, pid)
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	<-d.exited
	// children not yet reaped by the dead parent are reparented; wait
	// until none is left running
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids[1:] {
		for Alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// RunDialogue plays a scripted SMTP dialogue against addr. Each line of
// script is a directive:
//
//	send TEXT          send TEXT and CRLF
//	sendraw "QUOTED"   send a Go-quoted string as it is
//	repeat N "QUOTED"  send a Go-quoted string N times
//	expect CODE [RE]   read one reply (all its lines); its code must start
//	                   with CODE and its text match the regular expression
//	expect-close       the server closes the connection (after any reply)
//	starttls           send STARTTLS, want 220 and nothing after it, and
//	                   do the TLS handshake (the certificate is not checked)
//
// Empty lines and lines starting with # are skipped. It returns an error
// naming the line that failed.
func RunDialogue(addr, script string) error { return RunDialogueFrom("", addr, script) }

// RunDialogueFrom is RunDialogue from the client address localIP
// (such as 127.0.0.3), or any if "".
func RunDialogueFrom(localIP, addr, script string) error {
	dialer := net.Dialer{Timeout: 5 * time.Second}
	if localIP != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	raw, err := dialer.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	var conn net.Conn = raw
	r := bufio.NewReader(conn)
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		verb, arg, _ := strings.Cut(line, " ")
		var err error
		switch verb {
		case "starttls":
			var reply string
			if _, err = io.WriteString(conn, "STARTTLS\r\n"); err == nil {
				reply, err = readReply(r)
			}
			switch {
			case err != nil:
			case !strings.HasPrefix(reply, "220 "):
				err = fmt.Errorf("got %q, want 220", reply)
			case r.Buffered() > 0:
				err = errors.New("data after the 220 to STARTTLS")
			default:
				tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
				tc.SetDeadline(time.Now().Add(20 * time.Second))
				if err = tc.Handshake(); err == nil {
					conn, r = tc, bufio.NewReader(tc)
				}
			}
		case "send":
			_, err = io.WriteString(conn, arg+"\r\n")
		case "sendraw":
			var s string
			if s, err = strconv.Unquote(arg); err == nil {
				_, err = io.WriteString(conn, s)
			}
		case "repeat":
			count, q, _ := strings.Cut(arg, " ")
			var k int
			var s string
			if k, err = strconv.Atoi(count); err == nil {
				if s, err = strconv.Unquote(q); err == nil {
					_, err = io.WriteString(conn, strings.Repeat(s, k))
				}
			}
		case "expect":
			code, re, _ := strings.Cut(arg, " ")
			var reply string
			if reply, err = readReply(r); err == nil {
				if !strings.HasPrefix(reply, code) {
					err = fmt.Errorf("got %q, want code %s", reply, code)
				} else if re != "" && !regexp.MustCompile(re).MatchString(reply) {
					err = fmt.Errorf("got %q, want /%s/", reply, re)
				}
			}
		case "expect-close":
			for err == nil {
				_, err = readReply(r)
			}
			if err == io.EOF || errors.Is(err, syscall.ECONNRESET) {
				err = nil
			} else {
				err = fmt.Errorf("connection still open: %v", err)
			}
		default:
			err = fmt.Errorf("unknown directive %q", verb)
		}
		if err != nil {
			return fmt.Errorf("line %d (%s): %w", n+1, line, err)
		}
	}
	return nil
}

// readReply reads one SMTP reply, all its lines, joined by newlines.
func readReply(r *bufio.Reader) (string, error) {
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return strings.Join(lines, "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] != '-' {
			return strings.Join(lines, "\n"), nil
		}
	}
}

// requireRoot fails a test that needs root when it does not run as
// root: make test (and CI) runs as root, and a skipped test would prove
// nothing there.
func requireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("%s needs root: run the tests as root (make test does in CI)", what)
	}
}
