//go:build monkey

package regress

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"smtpd/internal/monkey"
)

// TestCrashMatrix walks every crash point of a monkey build: the daemon
// (or, at the queue's points, the queue process alone) is killed there
// while it takes a local, a remote and a failing message; after a
// restart every message that got 250 is delivered, or returned to its
// sender, and the spool is empty. Where a crash comes after a delivery
// or a notice and before the queue could record it, a relayed message or
// a notice may arrive twice: never less than once. A message delivered
// into a maildir arrives exactly once at every point: its file bears the
// envelope's name, and the next attempt finds it.
func TestCrashMatrix(t *testing.T) {
	w := startRelayWorld(t)
	type run struct{ point, mode string }
	var runs []run
	for _, p := range monkey.CrashPoints {
		runs = append(runs, run{p, "whole"})
		if len(p) > 6 && p[:6] == "queue." {
			runs = append(runs, run{p, "self"})
		}
	}
	durable := []string{"queue.after-sync", "queue.after-publish", "smtp.before-250"}
	// once a message is durable its delivery may start at once and
	// finish before the crash reaches every process: the queue never
	// records it, and delivers it again after the restart
	mayRepeat := append([]string{"mda.after-deliver", "mta.after-250", "mta.before-250", "queue.after-bounce"}, durable...)
	for n, r := range runs {
		t.Run(r.point+"/"+r.mode, func(t *testing.T) {
			d := StartWith(t, bin, Options{Config: w.config(), Env: []string{"SMTPD_CRASH=" + r.point, "SMTPD_CRASH_MODE=" + r.mode}})
			dir := d.Dir
			type msg struct{ token, kind string }
			var accepted []msg
			for i, kind := range []string{"local", "remote", "fail"} {
				token := fmt.Sprintf("token-%d-%d", n, i)
				rcpt := map[string]string{"local": "a@local.test", "remote": "b@example.test", "fail": "c@fail.test"}[kind]
				code, _ := submitOne(d.SMTPAddr, "sender@local.test", rcpt, "Subject: "+token+"\r\n\r\ncrash test\r\n")
				if code == 250 {
					accepted = append(accepted, msg{token, kind})
				}
				time.Sleep(300 * time.Millisecond) // let each be delivered before the next
			}
			if !d.Exited(15 * time.Second) {
				t.Fatalf("the daemon did not crash at %s", r.point)
			}
			d.Kill() // children of a daemon whose queue alone was killed
			t.Logf("crashed at %s (%s) with %d of 3 messages accepted", r.point, r.mode, len(accepted))
			if slices.Contains(durable, r.point) && len(accepted) == 0 {
				// on disk before the crash, though its client never
				// heard so: it must be delivered all the same
				accepted = append(accepted, msg{fmt.Sprintf("token-%d-0", n), "local"})
			}
			d2 := StartWith(t, bin, Options{Config: w.config(), Dir: dir})
			deadline := time.Now().Add(30 * time.Second)
			for {
				local, remote := countTokens(dir), countTokens(w.far.Dir)
				missing := 0
				for _, m := range accepted {
					if local[m.token]+remote[m.token] == 0 {
						missing++
					}
				}
				if n := d2.Stats()["scheduler.envelope"]; missing == 0 && (n == "0" || n == "") {
					for _, m := range accepted {
						got := local[m.token] + remote[m.token]
						if got > 1 && (m.kind == "local" || !slices.Contains(mayRepeat, r.point)) {
							t.Errorf("%s (%s) arrived %d times", m.token, m.kind, got)
						}
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the crash at %s, %d accepted messages not delivered\n%s", r.point, missing, d2.Log())
				}
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			if left := spoolFiles(dir); len(left) > 0 {
				t.Errorf("spool not empty after the crash at %s: %v", r.point, left)
			}
			d2.Signal(syscall.SIGTERM)
			d2.Wait(10 * time.Second)
		})
	}
}
