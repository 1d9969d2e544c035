package regress

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/privsep"
	"smtpd/internal/queue"
	"smtpd/proto"
)

// The Makefile's defaults, where `make install` puts things when only
// DESTDIR is given.
const (
	installSbin    = "/usr/local/sbin"
	installBin     = "/usr/local/bin"
	installMan     = "/usr/local/share/man"
	installSysconf = "/etc/mail"
	installUnit    = "/lib/systemd/system/smtpd.service"
	installSysuser = "/usr/lib/sysusers.d/smtpd.conf"
	installTmpfile = "/usr/lib/tmpfiles.d/smtpd.conf"
)

// TestInstallTree: `make install DESTDIR=tmp` as root creates no user
// and installs the binaries, the sendmail links, the man pages, the
// systemd unit, sysusers.d and tmpfiles.d files; the unit passes
// systemd-analyze verify (when the machine has it), the sysusers and
// tmpfiles files create the users and directories the daemon expects,
// and the unit's own command lines, run from the tree on a test
// configuration, check the configuration, start the daemon in the
// foreground with its children chrooted and unprivileged, reload it
// with SIGHUP, and stop it with SIGTERM, while sendmail from the tree
// delivers.
func TestInstallTree(t *testing.T) {
	requireRoot(t, "installing and running the unit's command lines")
	root, _ := filepath.Abs("..")
	destdir := t.TempDir()
	// as root the children exec the installed binary: keep it reachable
	os.Chmod(filepath.Dir(destdir), 0o755)
	os.Chmod(destdir, 0o755)
	cmd := exec.Command("make", "install", "DESTDIR="+destdir)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install DESTDIR=%s: %v\n%s", destdir, err, out)
	} else if strings.Contains(string(out), "creating user") {
		t.Errorf("make install into DESTDIR created users on this machine:\n%s", out)
	}
	in := func(p string) string { return filepath.Join(destdir, p) }

	// the binaries and the sendmail interface
	for _, p := range []string{installSbin + "/smtpd", installSbin + "/smtpctl"} {
		if fi, err := os.Stat(in(p)); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v", p, fi, err)
		}
	}
	for _, l := range []string{"sendmail", "send-mail", "mailq", "newaliases", "makemap"} {
		if target, err := os.Readlink(in(installSbin + "/" + l)); err != nil || target != "smtpctl" {
			t.Errorf("%s/%s -> %q (%v), want smtpctl", installSbin, l, target, err)
		}
	}
	for _, l := range []string{"mailq", "newaliases"} {
		target, err := os.Readlink(in(installBin + "/" + l))
		if err != nil || target != installSbin+"/smtpctl" {
			t.Errorf("%s/%s -> %q (%v), want %s/smtpctl", installBin, l, target, err, installSbin)
		}
	}

	// every man page of the repository
	pages, _ := filepath.Glob(filepath.Join(root, "*.[58]"))
	if len(pages) == 0 {
		t.Error("no man pages in the repository")
	}
	installedPage := map[string]bool{}
	for _, src := range pages {
		name := filepath.Base(src)
		dst := fmt.Sprintf("%s/man%s/%s", installMan, name[len(name)-1:], name)
		want, _ := os.ReadFile(src)
		got, err := os.ReadFile(in(dst))
		switch {
		case err != nil:
			t.Errorf("man page %s not installed: %v", name, err)
		case !bytes.Equal(got, want):
			t.Errorf("%s differs from %s", dst, name)
		default:
			page := strings.TrimSuffix(name, name[len(name)-2:])
			installedPage[fmt.Sprintf("%s(%s)", page, name[len(name)-1:])] = true
		}
	}

	// the systemd files
	for _, p := range []string{installUnit, installSysuser, installTmpfile} {
		if fi, err := os.Stat(in(p)); err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("%s: %v %v", p, fi, err)
		}
	}
	unit := parseUnit(t, in(installUnit))
	if got := unit.get("Service", "Type"); !slices.Equal(got, []string{"simple"}) {
		t.Errorf("Type=%v, want simple", got)
	}
	for _, doc := range strings.Fields(strings.Join(unit.get("Unit", "Documentation"), " ")) {
		if page, ok := strings.CutPrefix(doc, "man:"); ok && !installedPage[page] {
			t.Errorf("Documentation=%s: no such man page installed", doc)
		}
	}
	rw := strings.Fields(strings.Join(unit.get("Service", "ReadWritePaths"), " "))
	for _, p := range []string{config.DefaultSpoolDir, config.DefaultSpoolDir + "-mta", "/run"} {
		if !slices.Contains(rw, p) {
			t.Errorf("ReadWritePaths %v lack %s", rw, p)
		}
	}
	if !strings.HasPrefix(config.DefaultControlSocket, "/var/run/") && !strings.HasPrefix(config.DefaultControlSocket, "/run/") {
		t.Errorf("control socket %s is outside /run, which the unit makes writable", config.DefaultControlSocket)
	}
	verifyUnit(t, destdir, unit)
	checkSysusersTmpfiles(t, destdir)

	// the unit's command lines, on a test configuration
	runUnit(t, destdir, unit)
}

// unitFile is a parsed systemd unit: the values of each key by section.
type unitFile struct {
	path   string
	values map[string][]string
}

func (u *unitFile) get(section, key string) []string { return u.values[section+"."+key] }

// parseUnit reads a unit file: sections, key=value lines with
// backslash continuations, comments.
func parseUnit(t *testing.T, path string) *unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := &unitFile{path: path, values: map[string][]string{}}
	section, pending := "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if pending == "" && (line == "" || line[0] == '#' || line[0] == ';') {
			continue
		}
		if cont, ok := strings.CutSuffix(line, "\\"); ok {
			pending += cont + " "
			continue
		}
		line, pending = pending+line, ""
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q", path, line)
		}
		key := section + "." + strings.TrimSpace(k)
		u.values[key] = append(u.values[key], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// execLine turns a unit's Exec line into an argv to run here: its
// prefixes (-, @, +, ! and :) dropped, programs and files that the
// install tree holds taken from it, the argument of -f replaced by cfg
// and $MAINPID by mainPID. It also returns the configuration path the
// line named.
func execLine(t *testing.T, destdir, line, cfg string, mainPID int) (argv []string, unitCfg string) {
	t.Helper()
	if strings.ContainsAny(line, `"'`) {
		t.Fatalf("%q: quoting is beyond this test", line)
	}
	words := strings.Fields(strings.TrimLeft(line, "-@+!:"))
	if len(words) == 0 {
		t.Fatalf("empty Exec line %q", line)
	}
	for i, w := range words {
		switch {
		case i > 0 && words[i-1] == "-f":
			unitCfg, w = w, cfg
		case w == "$MAINPID" || w == "${MAINPID}":
			w = strconv.Itoa(mainPID)
		case strings.HasPrefix(w, "/"):
			if _, err := os.Stat(filepath.Join(destdir, w)); err == nil {
				w = filepath.Join(destdir, w)
			} else if i == 0 {
				if _, err := exec.LookPath(w); err != nil {
					t.Fatalf("%q: %s is neither installed nor on this machine", line, w)
				}
			}
		}
		argv = append(argv, w)
	}
	return argv, unitCfg
}

// verifyUnit runs systemd-analyze verify on the unit as it would read on
// the installed system, its programs taken from the tree; man pages were
// checked against the tree already. Without systemd-analyze it says so.
func verifyUnit(t *testing.T, destdir string, unit *unitFile) {
	t.Helper()
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze is not available here: unit not verified by systemd")
		return
	}
	text, err := os.ReadFile(unit.path)
	if err != nil {
		t.Fatal(err)
	}
	// a program the tree installs is checked there
	var lines []string
	for _, line := range strings.Split(string(text), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "Exec") {
			prefix := v[:len(v)-len(strings.TrimLeft(v, "-@+!:"))]
			prog, rest, _ := strings.Cut(v[len(prefix):], " ")
			if _, err := os.Stat(filepath.Join(destdir, prog)); err == nil {
				line = k + "=" + prefix + filepath.Join(destdir, prog) + " " + rest
			}
		}
		lines = append(lines, line)
	}
	copyPath := filepath.Join(t.TempDir(), "smtpd.service")
	if err := os.WriteFile(copyPath, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", copyPath).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// checkSysusersTmpfiles applies the installed sysusers.d and tmpfiles.d
// files to the tree itself, as a package's installation would to the
// system, when systemd's tools are here: the users of the default
// configuration appear, and the directories get the owners and modes
// the parent gives them at start.
func checkSysusersTmpfiles(t *testing.T, destdir string) {
	t.Helper()
	sysusers, err1 := exec.LookPath("systemd-sysusers")
	tmpfiles, err2 := exec.LookPath("systemd-tmpfiles")
	if err1 != nil || err2 != nil {
		t.Log("systemd-sysusers or systemd-tmpfiles is not available here: their files are not applied")
		return
	}
	if out, err := exec.Command(sysusers, "--root="+destdir).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers --root: %v\n%s", err, out)
	}
	passwd, err := os.ReadFile(filepath.Join(destdir, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string][2]int{}
	for _, line := range strings.Split(string(passwd), "\n") {
		f := strings.Split(line, ":")
		if len(f) != 7 {
			continue
		}
		uid, _ := strconv.Atoi(f[2])
		gid, _ := strconv.Atoi(f[3])
		ids[f[0]] = [2]int{uid, gid}
		if (f[0] == config.DefaultUser || f[0] == config.DefaultQueueUser) && (f[5] != config.DefaultEmptyDir || f[6] != "/usr/sbin/nologin" || uid == 0) {
			t.Errorf("sysusers made %q", line)
		}
	}
	for _, name := range []string{config.DefaultUser, config.DefaultQueueUser} {
		if _, ok := ids[name]; !ok {
			t.Errorf("sysusers made no user %s:\n%s", name, passwd)
		}
	}
	if out, err := exec.Command(tmpfiles, "--root="+destdir, "--create").CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles --root --create: %v\n%s", err, out)
	}
	// the spool's own modes are those of queue.PrepareSpool
	ref := filepath.Join(t.TempDir(), "spool")
	if err := queue.PrepareSpool(ref, -1, -1); err != nil {
		t.Fatal(err)
	}
	refMode := func(p string) fs.FileMode {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}
	d := ids[config.DefaultUser]
	for _, w := range []struct {
		path     string
		mode     fs.FileMode
		uid, gid int
	}{
		{config.DefaultSpoolDir, refMode(ref), 0, 0},
		{config.DefaultSpoolDir + "/" + queue.DirOffline, refMode(filepath.Join(ref, queue.DirOffline)), 0, 0},
		{config.DefaultSpoolDir + "-mta", fs.ModeDir | 0o700, d[0], d[1]},
		{config.DefaultEmptyDir, fs.ModeDir | 0o755, 0, 0},
	} {
		fi, err := os.Stat(filepath.Join(destdir, w.path))
		if err != nil {
			t.Errorf("tmpfiles: %v", err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != w.mode || int(st.Uid) != w.uid || int(st.Gid) != w.gid {
			t.Errorf("tmpfiles: %s is %v %d:%d, want %v %d:%d", w.path, fi.Mode(), st.Uid, st.Gid, w.mode, w.uid, w.gid)
		}
	}
}

// runUnit runs the unit's ExecStartPre, ExecStart and ExecReload from
// the tree on DefaultConfig, delivers with the tree's sendmail, checks
// the children's privileges, and stops the daemon as systemd would.
func runUnit(t *testing.T, destdir string, unit *unitFile) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	dir, cfgPath := WriteConfig(t, "")
	// written now for ExecStartPre, which checks it before the start
	text := fillConfig(DefaultConfig, addr, dir, os.Getuid(), os.Getgid())
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	one := func(key string) string {
		v := unit.get("Service", key)
		if len(v) != 1 {
			t.Fatalf("%s: %d lines, want 1", key, len(v))
		}
		return v[0]
	}
	sbin := filepath.Join(destdir, installSbin)

	for _, line := range unit.get("Service", "ExecStartPre") {
		argv, unitCfg := execLine(t, destdir, line, cfgPath, 0)
		if unitCfg != installSysconf+"/smtpd.conf" {
			t.Errorf("ExecStartPre=%s reads %q, want %s/smtpd.conf", line, unitCfg, installSysconf)
		}
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("ExecStartPre %v: %v\n%s", argv, err, out)
		}
	}

	argv, unitCfg := execLine(t, destdir, one("ExecStart"), cfgPath, 0)
	if unitCfg != installSysconf+"/smtpd.conf" {
		t.Errorf("ExecStart reads %q, want %s/smtpd.conf", unitCfg, installSysconf)
	}
	if _, err := os.Stat(filepath.Join(destdir, unitCfg)); err != nil {
		t.Errorf("the unit's configuration is not installed: %v", err)
	}
	d := StartWith(t, Binaries{Smtpd: argv[0], Smtpctl: filepath.Join(sbin, "smtpctl")},
		Options{Config: text, Dir: dir, Addr: addr, Command: argv})
	// registered after StartWith's, so run before it: the children go
	// while their parent still names them
	t.Cleanup(func() {
		for _, pid := range d.Children() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	// Type=simple: the process started is the parent itself, whose
	// children chroot and become the users of the design
	cfg, err := config.LoadWithoutTables(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	children := d.Children()
	for _, proc := range proto.Children {
		pid, ok := children[proc.String()]
		if proc == proto.ProcMFA && !cfg.NeedsMFA() {
			if ok {
				t.Errorf("mfa runs (pid %d) though nothing needs it", pid)
			}
			continue
		}
		if !ok {
			t.Errorf("no child %s of pid %d: %v", proc, d.Cmd.Process.Pid, children)
			continue
		}
		spec := privsep.SpecFor(proc, cfg)
		acct, err := privsep.LookupUser(spec.User)
		if err != nil {
			t.Fatal(err)
		}
		wantRoot := spec.Chroot
		if wantRoot == "" {
			wantRoot = "/"
		}
		if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid)); err != nil || root != wantRoot {
			t.Errorf("%s: root %q (%v), want %q", proc, root, err, wantRoot)
		}
		for field, id := range map[string]uint32{"Uid": acct.UID, "Gid": acct.GID} {
			want := strings.TrimSpace(strings.Repeat(fmt.Sprint(id)+"\t", 4))
			if got, _ := StatusField(pid, field); got != want || id == 0 {
				t.Errorf("%s: %s %q, want %q (%s)", proc, field, got, want, spec.User)
			}
		}
	}

	// sendmail from the tree, on the same configuration
	send := func(subject string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(sbin, "sendmail"), "-C", cfgPath, "-f", "root@example.test", "user@example.test")
		cmd.Stdin = strings.NewReader("Subject: " + subject + "\n\nthrough the installed sendmail\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail: %v\n%s", err, out)
		}
	}
	send("before reload")
	if m := d.WaitMail(1, 15*time.Second); !strings.Contains(strings.Join(slices.Collect(maps.Values(m)), ""), "Subject: before reload") {
		t.Errorf("delivered: %v", m)
	}

	// ExecReload: the daemon stays, with the same children, and delivers
	reload, _ := execLine(t, destdir, one("ExecReload"), cfgPath, d.Cmd.Process.Pid)
	if out, err := exec.Command(reload[0], reload[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("ExecReload %v: %v\n%s", reload, err, out)
	}
	if d.Exited(2 * time.Second) {
		t.Fatalf("ExecReload %v stopped the daemon: %v\n%s", reload, d.Cmd.ProcessState, d.Log())
	}
	for name, pid := range children {
		if !Alive(pid) {
			t.Errorf("child %s (pid %d) gone after reload", name, pid)
		}
	}
	if !strings.Contains(d.Log(), "SIGHUP") {
		t.Errorf("no word of the reload in the log:\n%s", d.Log())
	}
	send("after reload")
	d.WaitMail(2, 15*time.Second)

	// systemd's stop: SIGTERM to the main process (KillMode=mixed)
	if got := unit.get("Service", "KillMode"); !slices.Equal(got, []string{"mixed"}) {
		t.Errorf("KillMode=%v, want mixed: the parent stops its children itself", got)
	}
	d.Signal(syscall.SIGTERM)
	if code := d.Wait(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM (-1: still running after 10s)", code)
	}
	for name, pid := range children {
		if Alive(pid) {
			t.Errorf("child %s (pid %d) still running", name, pid)
		}
	}
	if _, err := os.Stat(d.Socket); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
}
