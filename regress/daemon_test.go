package regress

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"smtpd/proto"
)

func childNames() []string {
	var names []string
	for _, p := range proto.Children {
		names = append(names, p.String())
	}
	return names
}

// mfaConfig is DefaultConfig with a built-in filter on its listener,
// which gives mfa work: without, the daemon runs no mfa.
var mfaConfig = WithFilters(DefaultConfig, "filter.blocklist", `
filter "blocklist" {
  from    = ["192.0.2.0/24"]
  message = "550 5.7.1 Mail from your network is refused here"
}
`)

// daemonConfigs are a configuration with every child and one without
// mfa, by the children they run.
func daemonConfigs() map[string]string {
	return map[string]string{"all": mfaConfig, "no-mfa": DefaultConfig}
}

// wantChildren are the children a configuration of daemonConfigs runs.
func wantChildren(kind string) []string {
	names := childNames()
	if kind == "no-mfa" {
		names = slices.DeleteFunc(names, func(n string) bool { return n == "mfa" })
	}
	slices.Sort(names)
	return names
}

// TestStartStop: the parent starts six children visible as
// `smtpd -x NAME` (five when nothing needs mfa), and SIGINT (the
// terminal's ^C) or SIGTERM stops them all with exit status 0.
func TestStartStop(t *testing.T) {
	for kind, config := range daemonConfigs() {
		for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
			t.Run(kind+"/"+sig.String(), func(t *testing.T) {
				startStop(t, config, wantChildren(kind), sig)
			})
		}
	}
}

// startStop starts a daemon under config, checks that it runs the
// children want and that sig stops them all.
func startStop(t *testing.T, config string, want []string, sig syscall.Signal) {
	d := StartWith(t, bin, Options{Config: config})
	children := d.Children()
	var names []string
	for name, pid := range children {
		names = append(names, name)
		if args := strings.Join(Cmdline(pid), " "); !strings.Contains(args, "smtpd -x "+name) {
			t.Errorf("child %s shows as %q", name, args)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Fatalf("children %v, want %v", names, want)
	}
	d.Signal(sig)
	if code := d.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d after %v", code, sig)
	}
	for name, pid := range children {
		if Alive(pid) {
			t.Errorf("child %s (pid %d) still running", name, pid)
		}
	}
	if strings.Contains(d.Log(), "lost") {
		t.Errorf("a clean stop logged a loss:\n%s", d.Log())
	}
	if _, err := os.Stat(d.Socket); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// TestLostChild: kill -9 of any one child stops the parent and every
// other child within 2 s, non-zero, with "lost child: NAME".
func TestLostChild(t *testing.T) {
	for _, name := range childNames() {
		t.Run(name, func(t *testing.T) {
			d := StartWith(t, bin, Options{Config: mfaConfig})
			children := d.Children()
			pid, ok := children[name]
			if !ok || pid <= 0 {
				t.Fatalf("no child %s among %v", name, children)
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			code := d.Wait(2 * time.Second)
			if code == -1 {
				t.Fatal("parent still running 2s after a child was killed")
			}
			if code == 0 {
				t.Error("parent exited 0 after losing a child")
			}
			if want := "lost child: " + name; !strings.Contains(d.Log(), want) {
				t.Errorf("log lacks %q:\n%s", want, d.Log())
			}
			for other, pid := range children {
				if Alive(pid) {
					t.Errorf("child %s (pid %d) survived", other, pid)
				}
			}
		})
	}
}

// TestPrivsep checks through /proc that, started as root, every child
// runs as the user and in the chroot of the design, with no
// supplementary groups, and that the parent alone keeps uid 0.
func TestPrivsep(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("privilege separation is checked when the tests run as root")
	}
	d := StartWith(t, bin, Options{Config: mfaConfig})
	ids := func(pid int) (uid, gid, groups string) {
		u, _ := StatusField(pid, "Uid")
		g, _ := StatusField(pid, "Gid")
		groups, _ = StatusField(pid, "Groups")
		return u, g, groups
	}
	account := func(name string) (uid, gid string) {
		out, err := os.ReadFile("/etc/passwd")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Split(line, ":")
			if len(f) > 3 && f[0] == name {
				return f[2], f[3]
			}
		}
		t.Fatalf("no user %s", name)
		return "", ""
	}
	if uid, _, _ := ids(d.Cmd.Process.Pid); uid != "0\t0\t0\t0" {
		t.Errorf("parent uid %q", uid)
	}
	spool := filepath.Join(d.Dir, "spool")
	want := map[string]struct{ user, root string }{
		"smtp":    {"_smtpd", "/var/empty"},
		"mfa":     {"_smtpd", "/var/empty"},
		"mta":     {"_smtpd", spool + "-mta"},
		"control": {"_smtpd", "/var/empty"},
		"lookup":  {"_smtpd", "/"},
		"queue":   {"_smtpq", spool},
	}
	children := d.Children()
	for name, w := range want {
		pid, ok := children[name]
		if !ok {
			t.Errorf("no child %s", name)
			continue
		}
		u, g := account(w.user)
		uid, gid, groups := ids(pid)
		if wantIDs := strings.Repeat(u+"\t", 3) + u; uid != wantIDs {
			t.Errorf("%s: Uid %q, want %q (%s)", name, uid, wantIDs, w.user)
		}
		if wantIDs := strings.Repeat(g+"\t", 3) + g; gid != wantIDs {
			t.Errorf("%s: Gid %q, want %q", name, gid, wantIDs)
		}
		if groups != g {
			t.Errorf("%s: Groups %q, want only %s", name, groups, g)
		}
		root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid))
		if err != nil || root != w.root {
			t.Errorf("%s: root %q (%v), want %q", name, root, err, w.root)
		}
	}
	// the queue user owns the spool's directories, and nobody else may
	// look into them
	for _, dir := range []string{"temporary", "incoming", "queue", "corrupt", "purge"} {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(spool, dir), &st); err != nil {
			t.Fatal(err)
		}
		u, _ := account("_smtpq")
		if fmt.Sprint(st.Uid) != u || st.Mode&0o077 != 0 {
			t.Errorf("spool/%s: uid %d mode %o", dir, st.Uid, st.Mode&0o7777)
		}
	}
}

// TestUnprivileged: started by a user other than root, the daemon works
// as that user without chroot and says so once per process. Run as root,
// the test starts it as nobody.
func TestUnprivileged(t *testing.T) {
	var opts Options
	uid := os.Getuid()
	if uid == 0 {
		uid = 65534
		opts.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
	}
	d := StartWith(t, bin, opts)
	children := d.Children()
	if len(children) != len(wantChildren("no-mfa")) {
		t.Fatalf("children %v", children)
	}
	for name, pid := range children {
		if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err == nil && root != "/" {
			t.Errorf("%s: chroot %q without root", name, root)
		}
		if u, _ := StatusField(pid, "Uid"); !strings.HasPrefix(u, fmt.Sprint(uid)+"\t") {
			t.Errorf("%s: Uid %q, want %d", name, u, uid)
		}
	}
	if out, _, code := d.Smtpctl("show", "stats"); code != 0 || !strings.Contains(out, "uptime=") {
		t.Errorf("show stats: %d %q", code, out)
	}
	if n := strings.Count(d.Log(), "not started as root"); n != len(children)+1 {
		t.Errorf("%d notes about running unprivileged, want one per process:\n%s", n, d.Log())
	}
}
