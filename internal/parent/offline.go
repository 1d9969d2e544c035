package parent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"smtpd/internal/privsep"
	"smtpd/internal/queue"
)

// injectTimeout bounds the submission of one offline message.
const injectTimeout = 5 * time.Minute

// injectOffline submits the messages sendmail left in offline/ while the
// daemon was down, each by `smtpd -x offline` running as the user who
// wrote it, so that it is submitted exactly as that user would have.
// A message is removed once submitted; one that fails stays for the
// next start, and the failure is logged.
func (p *Parent) injectOffline() {
	dir := filepath.Join(p.cfg.SpoolDir, queue.DirOffline)
	entries, err := os.ReadDir(dir)
	if err != nil {
		p.log.Warnf("offline: %v", err)
		return
	}
	n := 0
	for _, e := range entries {
		// hidden names are files sendmail is still writing
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := p.injectFile(path); err != nil {
			p.log.Warnf("offline message %s: %v", e.Name(), err)
			continue
		}
		n++
	}
	if n > 0 {
		p.log.Infof("offline: %d messages submitted", n)
		p.stats.Increment("parent.offline.submitted", int64(n))
	}
}

// injectFile submits one offline message. The file must be a regular
// file with one link (not a link to someone else's file), opened without
// following symbolic links; its owner is who submits it.
func (p *Parent) injectFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() || st.Nlink != 1 {
		return errors.New("not a regular file with a single link: left alone")
	}
	if fi.Mode().Perm()&0o022 != 0 {
		// sendmail makes them 0600: someone else may have changed it
		return fmt.Errorf("mode %v, writable by others: left alone", fi.Mode().Perm())
	}
	ctx, cancel := context.WithTimeout(context.Background(), injectTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.opts.Executable, "-x", "offline", "-f", p.cfg.Path)
	cmd.Args[0] = p.opts.Argv0
	cmd.Stdin = f
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if privsep.Privileged() {
		u, err := user.LookupId(strconv.Itoa(int(st.Uid)))
		if err != nil {
			return fmt.Errorf("owner %d: %w", st.Uid, err)
		}
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: st.Uid, Gid: uint32(gid)}}
		cmd.Env = []string{"HOME=" + u.HomeDir, "USER=" + u.Username, "LOGNAME=" + u.Username, "PATH=/usr/bin:/bin"}
		cmd.Dir = "/"
	} else if int(st.Uid) != os.Getuid() {
		return fmt.Errorf("owned by uid %d, and the daemon is not root: left alone", st.Uid)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(out.String()))
	}
	return os.Remove(path)
}
