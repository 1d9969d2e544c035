//go:build monkey

package regress

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// monkeySeed is SMTPD_MONKEY_SEED, or a new one.
func monkeySeed(t *testing.T) uint64 {
	if s, err := strconv.ParseUint(os.Getenv("SMTPD_MONKEY_SEED"), 10, 64); err == nil {
		return s
	}
	return rand.Uint64() % 1000000
}

// monkeyResult is one message of monkeyTraffic.
type monkeyResult struct {
	token, kind string
	accepted    bool
}

// monkeyRun is what monkeyTraffic saw: each message, and the codes of
// the 5xx replies with their messages' tokens.
type monkeyRun struct {
	results      []monkeyResult
	fivexx       []int
	fivexxTokens []string
}

// monkeyTraffic sends count messages from 8 concurrent clients: one in
// ten to a failing recipient, half the rest remote, the others local.
// A client retries temporary failures, as MTAs do.
func monkeyTraffic(addr string, seed uint64, count int) *monkeyRun {
	run := &monkeyRun{results: make([]monkeyResult, count)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	next := make(chan int)
	deadline := time.Now().Add(5 * time.Minute)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				token := fmt.Sprintf("token-%d-%d", seed, i)
				kind, rcpt := "local", fmt.Sprintf("u%d@local.test", i)
				switch {
				case i%10 == 0:
					kind, rcpt = "fail", fmt.Sprintf("u%d@fail.test", i)
				case i%2 == 1:
					kind, rcpt = "remote", fmt.Sprintf("u%d@example.test", i)
				}
				run.results[i] = monkeyResult{token, kind, false}
				from := fmt.Sprintf("s%d@local.test", i)
				data := "Subject: " + token + "\r\n\r\nmonkey business\r\n"
				for try := 0; try < 20 && time.Now().Before(deadline); try++ {
					code, _ := submitOne(addr, from, rcpt, data)
					if code == 250 {
						run.results[i].accepted = true
						break
					}
					if code == 421 {
						// refused at the greeting: a filter restarting
						time.Sleep(250 * time.Millisecond)
						continue
					}
					if code >= 500 {
						mu.Lock()
						run.fivexx = append(run.fivexx, code)
						run.fivexxTokens = append(run.fivexxTokens, token)
						mu.Unlock()
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}
	for i := range count {
		next <- i
	}
	close(next)
	wg.Wait()
	return run
}

// TestMonkey sends messages to local, remote and failing recipients
// from concurrent clients with every monkey on. Invariants: no 5xx (the
// same traffic gets none without monkeys), every message that got 250 is
// delivered (twice only if remote, after a dropped session) or, for the
// failing ones, returned to its sender exactly once, and the spool is
// empty at the end. MONKEY_COUNT sets the number of messages.
func TestMonkey(t *testing.T) {
	seed := monkeySeed(t)
	count := 300
	if n, err := strconv.Atoi(os.Getenv("MONKEY_COUNT")); err == nil {
		count = n
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("seed %d (make monkey SEED=%d replays it): "+format, append([]any{seed, seed}, args...)...)
	}
	t.Logf("monkey seed %d, %d messages", seed, count)
	w := startRelayWorld(t)
	// the listener runs a filter process, which in the monkey run
	// crashes, hangs or writes garbage at random, three times at most
	filtered := func(monkey string) string {
		return WithFilters(w.config(), "filter.phases", `
filter "phases" {
  command = "/usr/bin/python3 {{DIR}}/phases.py {{DIR}}/filter.log`+monkey+`"
  timeout = "1s"
}
`)
	}
	// the same traffic, fewer messages, without monkeys: the 5xx
	// replies it gets are the only ones the monkeys may cause
	cleanDir, _ := filterDir(t)
	clean := StartWith(t, bin, Options{Dir: cleanDir, Config: filtered("")})
	baseline := monkeyTraffic(clean.SMTPAddr, seed+1, count/5)
	allowed := map[int]bool{}
	for _, c := range baseline.fivexx {
		allowed[c] = true
	}
	clean.Kill()
	t.Logf("without monkeys: %d messages, 5xx replies: %v", count/5, baseline.fivexx)

	dir, _ := filterDir(t)
	budget := filepath.Join(dir, "filter.budget")
	if err := os.WriteFile(budget, []byte("3"), 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(budget, 0o666)
	d := StartWith(t, bin, Options{Dir: dir, Config: filtered(fmt.Sprintf(" monkey %d {{DIR}}/filter.budget", seed)),
		Env: []string{"SMTPD_MONKEYS=all", fmt.Sprintf("SMTPD_MONKEY_SEED=%d", seed)}})
	run := monkeyTraffic(d.SMTPAddr, seed, count)
	for i, c := range run.fivexx {
		if !allowed[c] {
			fail("%s got %d, which the run without monkeys never gave", run.fivexxTokens[i], c)
		}
	}
	results := run.results

	want := 0
	for _, r := range results {
		if r.accepted {
			want++
		}
	}
	t.Logf("%d of %d messages accepted", want, count)
	var local, remote map[string]int
	for end := time.Now().Add(3 * time.Minute); ; {
		local, remote = countTokens(d.Dir), countTokens(w.far.Dir)
		missing := 0
		for _, r := range results {
			if r.accepted && local[r.token]+remote[r.token] == 0 {
				missing++
			}
		}
		if missing == 0 && d.Stats()["scheduler.envelope"] == "0" {
			break
		}
		if time.Now().After(end) {
			fail("%d accepted messages neither delivered nor returned", missing)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, r := range results {
		if !r.accepted {
			continue
		}
		switch r.kind {
		case "local":
			if local[r.token] != 1 || remote[r.token] != 0 {
				fail("%s (local) delivered %d times", r.token, local[r.token])
			}
		case "fail":
			// the notice quotes the message's header: it lands in the
			// local maildir once
			if local[r.token] != 1 {
				fail("%s (failing) returned %d times", r.token, local[r.token])
			}
		case "remote":
			if remote[r.token] == 0 || local[r.token] != 0 {
				fail("%s (remote) delivered %d times, returned %d times", r.token, remote[r.token], local[r.token])
			}
		}
	}
	dups := 0
	for _, r := range results {
		if r.kind == "remote" && remote[r.token] > 1 {
			dups++
		}
	}
	time.Sleep(500 * time.Millisecond)
	if left := spoolFiles(d.Dir); len(left) > 0 {
		fail("spool not empty: %v", left)
	}
	// each misbehaviour ends a process, which the parent starts again
	// (a hang ends once its request times out)
	left, _ := os.ReadFile(budget)
	misbehaved := 3 - atoiOr(string(left))
	st := d.Stats()
	for end := time.Now().Add(10 * time.Second); atoiOr(st["mfa.filter.phases.restarts"]) < misbehaved && time.Now().Before(end); st = d.Stats() {
		time.Sleep(100 * time.Millisecond)
	}
	if misbehaved != 3 || atoiOr(st["mfa.filter.phases.restarts"]) < 3 {
		fail("the filter misbehaved %d times of 3, was restarted %s times", misbehaved, st["mfa.filter.phases.restarts"])
	}
	t.Logf("remote duplicates after dropped sessions: %d; counters: %v", dups, st)
}

// atoiOr is the number in s, or 0.
func atoiOr(s string) int {
	n, _ := strconv.Atoi(strings.TrimSpace(s))
	return n
}
