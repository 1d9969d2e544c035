package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// openSMTPD is the path of Debian's OpenSMTPD daemon. Ours is bin/smtpd in
// the tree: the two share a name only, so the bench always uses full paths.
const openSMTPD = "/usr/sbin/smtpd"

// tools are the external programs the bench runs.
type tools struct {
	// source and sink are Postfix's smtp-source and smtp-sink, run from
	// the extracted package with libs as LD_LIBRARY_PATH.
	source, sink, libs string
}

// env returns the environment the Postfix tools need.
func (t tools) env() []string {
	return append(os.Environ(), "LD_LIBRARY_PATH="+t.libs)
}

// setupTools installs OpenSMTPD if missing, keeping its service from
// starting, and extracts smtp-source and smtp-sink from Debian's postfix
// package into cache without installing it.
func setupTools(ctx context.Context, cache string, logf func(string, ...any)) (tools, error) {
	if err := ensureOpenSMTPD(ctx, logf); err != nil {
		return tools{}, err
	}
	stopPackagedOpenSMTPD(logf)
	return ensurePostfixTools(ctx, cache, logf)
}

// ensureOpenSMTPD installs Debian's opensmtpd package when
// /usr/sbin/smtpd is missing. A temporary policy-rc.d answering 101
// keeps the packaged service from starting; an existing one is restored
// afterwards.
func ensureOpenSMTPD(ctx context.Context, logf func(string, ...any)) error {
	if _, err := os.Stat(openSMTPD); err == nil {
		return nil
	}
	if os.Getuid() != 0 {
		return errors.New("OpenSMTPD is not installed (apt-get install opensmtpd, or run the bench as root)")
	}
	logf("installing Debian's opensmtpd (its service kept from starting)")
	const policy = "/usr/sbin/policy-rc.d"
	old, oldErr := os.ReadFile(policy)
	oldInfo, _ := os.Stat(policy)
	if err := os.WriteFile(policy, []byte("#!/bin/sh\n# written by smtpd's bench while it installs opensmtpd\nexit 101\n"), 0o755); err != nil {
		return err
	}
	defer func() {
		if oldErr == nil {
			os.WriteFile(policy, old, oldInfo.Mode().Perm())
		} else {
			os.Remove(policy)
		}
	}()
	os.Chmod(policy, 0o755)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "--no-install-recommends", "opensmtpd")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "RUNLEVEL=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		// the package lists may be missing on a fresh machine
		upd := exec.CommandContext(ctx, "apt-get", "update", "-q")
		if uout, uerr := upd.CombinedOutput(); uerr != nil {
			return fmt.Errorf("apt-get update: %v\n%s", uerr, uout)
		}
		cmd = exec.CommandContext(ctx, cmd.Args[0], cmd.Args[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "RUNLEVEL=1")
		if out2, err2 := cmd.CombinedOutput(); err2 != nil {
			return fmt.Errorf("apt-get install opensmtpd: %v\n%s\n%s", err2, out, out2)
		}
	}
	return nil
}

// stopPackagedOpenSMTPD makes sure no OpenSMTPD started by the package
// (or its init script) is running: it stops the service and kills, by
// pid, any /usr/sbin/smtpd left that the bench did not start.
func stopPackagedOpenSMTPD(logf func(string, ...any)) {
	if os.Getuid() != 0 {
		return
	}
	for _, args := range [][]string{{"systemctl", "stop", "opensmtpd"}, {"service", "opensmtpd", "stop"}} {
		if _, err := exec.LookPath(args[0]); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			exec.CommandContext(ctx, args[0], args[1:]...).Run()
			cancel()
		}
	}
	for range 20 {
		pids := pidsOfExe(openSMTPD)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			logf("stopping a packaged OpenSMTPD process %d", pid)
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pidsOfExe returns the processes running the executable path.
func pidsOfExe(path string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err == nil && strings.TrimSuffix(exe, " (deleted)") == path {
			out = append(out, pid)
		}
	}
	return out
}

// ensurePostfixTools extracts Debian's postfix package into cache (once)
// and returns the paths of smtp-source and smtp-sink in it.
func ensurePostfixTools(ctx context.Context, cache string, logf func(string, ...any)) (tools, error) {
	t := tools{
		source: filepath.Join(cache, "usr/sbin/smtp-source"),
		sink:   filepath.Join(cache, "usr/sbin/smtp-sink"),
		libs:   filepath.Join(cache, "usr/lib/postfix"),
	}
	if _, err := os.Stat(t.sink); err == nil {
		return t, nil
	}
	logf("downloading Debian's postfix package for smtp-source and smtp-sink (not installed)")
	tmp, err := os.MkdirTemp("", "smtpd-bench-deb-")
	if err != nil {
		return t, err
	}
	defer os.RemoveAll(tmp)
	// apt's download user must be able to write there
	os.Chmod(tmp, 0o777)
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", "postfix")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return t, fmt.Errorf("apt-get download postfix: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "postfix_*.deb"))
	if len(debs) != 1 {
		return t, fmt.Errorf("apt-get download postfix: got %v", debs)
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return t, err
	}
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], cache).CombinedOutput(); err != nil {
		return t, fmt.Errorf("dpkg-deb -x: %v\n%s", err, out)
	}
	if _, err := os.Stat(t.sink); err != nil {
		return t, fmt.Errorf("postfix package has no smtp-sink: %v", err)
	}
	return t, nil
}
