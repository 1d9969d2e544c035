// Package privsep is how a process of the daemon gives up its
// privileges: each child started as root chroots where the design says
// (see Spec), then drops its groups, group and user. Not started as root,
// the same code runs without chroot and without changing user, and says
// so once in the log.
package privsep

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"

	"smtpd/internal/config"
	"smtpd/proto"
)

// Spec is the user and chroot of one process.
type Spec struct {
	Proc proto.Proc
	User string
	// Chroot is the directory the process is locked into, or "" for none.
	Chroot string
}

// SpecFor returns the spec of process p under cfg: smtp, mfa and
// control run as the unprivileged user in the empty directory, mta in
// its own state directory (MTA-STS policies and TLS-RPT counts, nothing
// of the queue's), queue as the queue user in the spool, lookup as the
// unprivileged user without a chroot since it reads tables and talks
// DNS.
func SpecFor(p proto.Proc, cfg *config.Config) Spec {
	switch p {
	case proto.ProcQueue:
		return Spec{Proc: p, User: cfg.QueueUser, Chroot: cfg.SpoolDir}
	case proto.ProcMTA:
		return Spec{Proc: p, User: cfg.User, Chroot: cfg.MTAStateDir}
	case proto.ProcLookup:
		return Spec{Proc: p, User: cfg.User}
	default:
		return Spec{Proc: p, User: cfg.User, Chroot: cfg.EmptyDir}
	}
}

// ErrNoUser is returned for a user name the password database does not
// know.
var ErrNoUser = errors.New("no such user")

// LookupUser resolves name in the system password database: the one
// passwd lookup of the daemon, for its own users and for the local
// accounts deliveries run as.
func LookupUser(name string) (proto.Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return proto.Account{}, fmt.Errorf("%w %q", ErrNoUser, name)
		}
		return proto.Account{}, fmt.Errorf("user %q: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return proto.Account{}, fmt.Errorf("user %q has a non-numeric uid or gid", name)
	}
	return proto.Account{Name: u.Username, Directory: u.HomeDir, UID: uint32(uid), GID: uint32(gid)}, nil
}

// DaemonUser resolves a user the daemon's processes run as, which must
// exist and must not be root.
func DaemonUser(name string) (proto.Account, error) {
	acct, err := LookupUser(name)
	switch {
	case errors.Is(err, ErrNoUser):
		return acct, fmt.Errorf("privsep: %w: create it (make install does) or set another user in smtpd.conf", err)
	case err != nil:
		return acct, fmt.Errorf("privsep: %w", err)
	case acct.UID == 0:
		return acct, fmt.Errorf("privsep: user %q is root; an unprivileged user is needed", name)
	}
	return acct, nil
}

// Privileged reports whether this process runs as root and so drops
// privileges.
func Privileged() bool { return os.Geteuid() == 0 }

// Drop locks the process into spec.Chroot and becomes spec.User. The
// user is resolved before the chroot, since /etc/passwd is not visible
// after it. Go applies setgroups, setresgid and setresuid to every
// thread of the process (syscall.AllThreadsSyscall semantics), which
// matters because the runtime already runs several threads here.
func Drop(spec Spec) error {
	if !Privileged() {
		return nil
	}
	acct, err := DaemonUser(spec.User)
	if err != nil {
		return err
	}
	if spec.Chroot != "" {
		if err := syscall.Chroot(spec.Chroot); err != nil {
			return fmt.Errorf("privsep: chroot %s: %w", spec.Chroot, err)
		}
		if err := os.Chdir("/"); err != nil {
			return fmt.Errorf("privsep: chdir / in %s: %w", spec.Chroot, err)
		}
	}
	uid, gid := int(acct.UID), int(acct.GID)
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("privsep: setgroups: %w", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("privsep: setresgid %d: %w", gid, err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("privsep: setresuid %d: %w", uid, err)
	}
	// the drop must be irreversible
	if err := syscall.Setuid(0); err == nil {
		return errors.New("privsep: could regain root after dropping privileges")
	}
	return nil
}

// ProgramCommand is how the daemon runs another program (a filter, a
// table program): argv as given, never through a shell, in /, with a
// minimal environment, its standard input and output on stdio, its
// standard error on stderr, in a process group of its own (a ^C at the
// terminal reaches smtpd only, and killing the group takes the
// program's children too), and killed if the process that started it
// dies. The caller adds the user to run as.
func ProgramCommand(argv []string, stdio, stderr *os.File) *exec.Cmd {
	return &exec.Cmd{
		Path:        argv[0],
		Args:        argv,
		Dir:         "/",
		Env:         []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C"},
		Stdin:       stdio,
		Stdout:      stdio,
		Stderr:      stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
}
