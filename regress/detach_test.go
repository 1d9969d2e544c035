package regress

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDetachReportsStart: smtpd without -d returns once the detached
// daemon serves, with status 0; a daemon that cannot start (its
// listener's address taken) makes it fail with the reason on standard
// error, not only in the mail log.
func TestDetachReportsStart(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	start := func() (int, string, string) {
		dir, path := WriteConfig(t, "")
		if err := os.WriteFile(path, []byte(fillConfig(DefaultConfig, addr, dir, os.Getuid(), os.Getgid())), 0o644); err != nil {
			t.Fatal(err)
		}
		// files, not pipes: the detached daemon keeps its standard
		// error, and a pipe would not end while it runs
		out, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd := exec.Command(bin.Smtpd, "-f", path)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.Env = append(os.Environ(), "SMTPD_DETACHED=")
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatal("smtpd did not return within 30 s")
		}
		text, _ := os.ReadFile(out.Name())
		return cmd.ProcessState.ExitCode(), string(text), dir
	}
	code, text, dir := start()
	if code != 0 {
		t.Fatalf("first start: exit %d: %s", code, text)
	}
	// the daemon serves as soon as smtpd returned
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("the detached daemon does not serve: %v", err)
	}
	c.Close()
	t.Cleanup(func() { stopDetached(t, dir) })
	code, text, _ = start()
	if code != 1 || !strings.Contains(text, "address already in use") {
		t.Errorf("second start on the same address: exit %d, %q; want 1 and the reason", code, text)
	}
}

// stopDetached stops the daemon started with the configuration in dir:
// its processes are found by their command lines.
func stopDetached(t *testing.T, dir string) {
	pids, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range pids {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), filepath.Join(dir, "smtpd.conf")) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			syscall.Kill(pid, syscall.SIGTERM)
			for deadline := time.Now().Add(10 * time.Second); Alive(pid) && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}
