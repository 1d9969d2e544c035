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

// SpecFor returns the spec of process p under cfg: smtp, mfa, mta and
// control run as the unprivileged user in the empty directory, queue as
// the queue user in the spool, lookup as the unprivileged user without a
// chroot since it reads tables and talks DNS.
func SpecFor(p proto.Proc, cfg *config.Config) Spec {
	switch p {
	case proto.ProcQueue:
		return Spec{Proc: p, User: cfg.QueueUser, Chroot: cfg.SpoolDir}
	case proto.ProcLookup:
		return Spec{Proc: p, User: cfg.User}
	default:
		return Spec{Proc: p, User: cfg.User, Chroot: cfg.EmptyDir}
	}
}

// ErrNoUser is returned when a configured user does not exist.
var ErrNoUser = errors.New("privsep: no such user")

// Account is a resolved user.
type Account struct {
	Name     string
	UID, GID int
}

// LookupAccount resolves a user name to its uid and primary gid.
func LookupAccount(name string) (Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return Account{}, fmt.Errorf("%w %q: create it (make install does) or set another user in smtpd.conf", ErrNoUser, name)
		}
		return Account{}, fmt.Errorf("privsep: user %q: %w", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return Account{}, fmt.Errorf("privsep: user %q has a non-numeric uid or gid", name)
	}
	if uid == 0 {
		return Account{}, fmt.Errorf("privsep: user %q is root; an unprivileged user is needed", name)
	}
	return Account{Name: name, UID: uid, GID: gid}, nil
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
	acct, err := LookupAccount(spec.User)
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
	if err := syscall.Setgroups([]int{acct.GID}); err != nil {
		return fmt.Errorf("privsep: setgroups: %w", err)
	}
	if err := syscall.Setresgid(acct.GID, acct.GID, acct.GID); err != nil {
		return fmt.Errorf("privsep: setresgid %d: %w", acct.GID, err)
	}
	if err := syscall.Setresuid(acct.UID, acct.UID, acct.UID); err != nil {
		return fmt.Errorf("privsep: setresuid %d: %w", acct.UID, err)
	}
	// the drop must be irreversible
	if err := syscall.Setuid(0); err == nil {
		return errors.New("privsep: could regain root after dropping privileges")
	}
	return nil
}
