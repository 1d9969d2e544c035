package regress

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBundledRunConfig: the configuration `make run` uses, copied with
// its relative paths into a temporary tree, accepts mail for
// anyone@localhost on 127.0.0.1:2525, delivers it into var/mail, and
// show stats counts scheduler.delivery.ok=1.
func TestBundledRunConfig(t *testing.T) {
	tree, _ := WriteConfig(t, "")
	etc := filepath.Join(tree, "etc")
	os.MkdirAll(etc, 0o755)
	conf, err := os.ReadFile("../etc/run.conf")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(etc, "run.conf"), conf, 0o644)
	cmd := exec.Command(bin.Smtpd, "-d", "-f", filepath.Join(etc, "run.conf"))
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "parent: ready") {
		if time.Now().After(deadline) {
			t.Fatalf("not ready:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := exec.Command("swaks", "--server", "127.0.0.1:2525", "--to", "anyone@localhost").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	for {
		files, _ := filepath.Glob(filepath.Join(tree, "var", "mail", "new", "*"))
		if len(files) == 1 {
			break
		}
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("%d files in var/mail/new\n%s", len(files), log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for {
		stats, _, _ := RunSmtpctl(bin, "-s", filepath.Join(tree, "var", "run", "smtpd.sock"), "show", "stats")
		if strings.Contains(stats, "\nscheduler.delivery.ok=1\n") {
			break
		}
		if time.Now().After(deadline.Add(15 * time.Second)) {
			t.Fatalf("stats:\n%s", stats)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
