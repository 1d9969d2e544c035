package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is a process the bench started, in a process group of its own.
type proc struct {
	cmd    *exec.Cmd
	log    string // file with its output
	exited chan struct{}
}

// startProc starts cmd in its own process group, its output to logPath.
func startProc(cmd *exec.Cmd, logPath string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if cmd.Stdout == nil {
		cmd.Stdout = f
	}
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// pid returns the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop ends the process and all its descendants: SIGTERM to the group,
// then, after up to 5 s, SIGKILL to the group and to every descendant
// still seen, by pid.
func (p *proc) stop() {
	pids := tree(p.pid())
	syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	for _, pid := range append(pids, tree(p.pid())[1:]...) {
		if pid != p.pid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
}

// tail returns the end of the process's log.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// waitBanner waits until addr answers with a 220 greeting, for up to
// timeout, failing early if p exits.
func waitBanner(ctx context.Context, p *proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "QUIT\r\n")
			c.Close()
			if strings.HasPrefix(line, "220") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering after %v:\n%s", addr, timeout, p.tail())
		}
		select {
		case <-p.exited:
			return fmt.Errorf("exited during start: %v\n%s", p.cmd.ProcessState, p.tail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// freePort returns a TCP port on ip that was free a moment ago.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Deliveries run as nobody in both daemons, into a maildir made for it.
const (
	deliverUID = 65534
	deliverGID = 65534
)

// ourConfig is the configuration of our daemon: every address of
// example.test goes to one maildir (catch-all) or to the sink.
const ourConfig = `
hostname       = "mx.example.test"
spool          = "spool"
control_socket = "run/smtpd.sock"
{{GLOBAL}}

limits {
  mails_per_session = 1000000
  sessions_per_ip   = 10000
}

table "domains" { list = ["example.test"] }

listen "mx" {
  address = "{{ADDR}}"
  {{LISTEN}}
}

{{BLOCKS}}

action "local" {
  maildir  = "{{DIR}}/Maildir"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
  {{SIGN}}
}

{{RELAY}}

match {
  from   = "any"
  for    = table.domains
  action = action.{{ACTION}}
}
`

// openConfig is the smtpd.conf(5) of OpenSMTPD for the same scenarios.
const openConfig = `
smtp limit max-mails 1000000
table catchall { "@" = "nobody" }
listen on {{IP}} port {{PORT}} hostname mx.example.test
action "local" maildir "{{DIR}}/Maildir" virtual <catchall>
action "relay" relay host smtp://127.0.0.1:{{SINK}}
match from any for domain "example.test" action "{{ACTION}}"
`

// daemon is a daemon under test, running from its own directory.
type daemon struct {
	*proc
	addr    string
	dir     string
	maildir string // its new/ is where the catch-all delivers
}

// target says how to start one of the daemons compared.
type target struct {
	name  string
	start func(ctx context.Context, dir, ip, action string, sink int, f extraConf) (*daemon, error)
}

// extraConf is what a cost row adds to our configuration: global
// settings (the resolver), blocks (a filter, DKIM keys), the listener's
// attributes (filters, checks) and the local action's (sign). The zero
// value adds nothing.
type extraConf struct {
	global, blocks, listen, action string
}

// prepareDir makes the run directory traversable for the unprivileged
// processes and the maildir writable by the delivery user.
func prepareDir(dir string) (string, error) {
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	md := filepath.Join(dir, "Maildir")
	for _, sub := range []string{"", "new", "cur", "tmp"} {
		p := filepath.Join(md, sub)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return "", err
		}
		if os.Getuid() == 0 {
			if err := os.Chown(p, deliverUID, deliverGID); err != nil {
				return "", err
			}
		}
	}
	return md, nil
}

// fill replaces the {{...}} of a configuration template.
func fill(text string, kv ...string) string {
	return strings.NewReplacer(kv...).Replace(text)
}

// ours returns the target of our daemon, the binary at bin.
func ours(bin string) target {
	return target{name: "smtpd", start: func(ctx context.Context, dir, ip, action string, sink int, f extraConf) (*daemon, error) {
		md, err := prepareDir(dir)
		if err != nil {
			return nil, err
		}
		port, err := freePort(ip)
		if err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("%s:%d", ip, port)
		uid, gid := deliverUID, deliverGID
		if os.Getuid() != 0 {
			uid, gid = os.Getuid(), os.Getgid()
		}
		conf := filepath.Join(dir, "smtpd.conf")
		relay := ""
		if sink != 0 {
			relay = fmt.Sprintf(`action "relay" { relay = "smtp://127.0.0.1:%d" }`, sink)
		}
		text := fill(ourConfig, "{{ADDR}}", addr, "{{DIR}}", dir, "{{UID}}", fmt.Sprint(uid),
			"{{GID}}", fmt.Sprint(gid), "{{RELAY}}", relay, "{{ACTION}}", action,
			"{{GLOBAL}}", f.global, "{{LISTEN}}", f.listen, "{{BLOCKS}}", f.blocks, "{{SIGN}}", f.action)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		p, err := startProc(exec.Command(bin, "-d", "-f", conf), filepath.Join(dir, "daemon.log"))
		if err != nil {
			return nil, err
		}
		d := &daemon{proc: p, addr: addr, dir: dir, maildir: md}
		if err := waitBanner(ctx, p, addr, 15*time.Second); err != nil {
			p.stop()
			return nil, err
		}
		return d, nil
	}}
}

// opensmtpd returns the target of Debian's OpenSMTPD. Its queue is the
// compiled-in /var/spool/smtpd: the bench runs it in a mount namespace of
// its own with a fresh directory bound there, so each run starts empty
// and the packaged spool is not touched. In the same namespace its
// resolver (libasr, which asks DNS before /etc/hosts unless told
// otherwise) gets a resolv.conf with "lookup file bind": without it every
// reverse lookup of 127.0.0.1 waits for a name server that a machine
// without DNS never answers, and OpenSMTPD takes seconds per session,
// while glibc and Go read /etc/hosts first.
func opensmtpd() target {
	return target{name: "OpenSMTPD", start: func(ctx context.Context, dir, ip, action string, sink int, f extraConf) (*daemon, error) {
		if f != (extraConf{}) {
			// 6.8 speaks filter protocol 0.6, has no milter client and
			// neither checks nor signs mail
			return nil, errors.New("the bench runs its cost rows with smtpd only")
		}
		if os.Getuid() != 0 {
			return nil, errors.New("OpenSMTPD runs as root only")
		}
		md, err := prepareDir(dir)
		if err != nil {
			return nil, err
		}
		spool := filepath.Join(dir, "spool")
		if err := os.Mkdir(spool, 0o711); err != nil {
			return nil, err
		}
		port, err := freePort(ip)
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, "smtpd.conf")
		text := fill(openConfig, "{{IP}}", ip, "{{PORT}}", fmt.Sprint(port), "{{DIR}}", dir,
			"{{SINK}}", fmt.Sprint(sink), "{{ACTION}}", action)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return nil, err
		}
		resolv := filepath.Join(dir, "resolv.conf")
		orig, _ := os.ReadFile("/etc/resolv.conf")
		if err := os.WriteFile(resolv, append([]byte("lookup file bind\n"), orig...), 0o644); err != nil {
			return nil, err
		}
		os.MkdirAll("/var/spool/smtpd", 0o711)
		cmd := exec.Command("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
			`mount --bind "$1" /var/spool/smtpd && mount --bind "$2" /etc/resolv.conf && exec "$3" -d -f "$4"`,
			"sh", spool, resolv, openSMTPD, conf)
		p, err := startProc(cmd, filepath.Join(dir, "daemon.log"))
		if err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("%s:%d", ip, port)
		d := &daemon{proc: p, addr: addr, dir: dir, maildir: md}
		if err := waitBanner(ctx, p, addr, 15*time.Second); err != nil {
			p.stop()
			return nil, err
		}
		return d, nil
	}}
}

// countFiles returns the number of entries in dir.
func countFiles(dir string) int {
	f, err := os.Open(dir)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	for {
		names, err := f.Readdirnames(4096)
		n += len(names)
		if err != nil {
			return n
		}
	}
}
