//go:build monkey

package regress

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
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
	d := StartWith(t, bin, Options{Config: w.config(), Env: []string{"SMTPD_MONKEYS=all", fmt.Sprintf("SMTPD_MONKEY_SEED=%d", seed)}})

	type result struct {
		token, kind string
		accepted    bool
	}
	results := make([]result, count)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fivexx []string
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
				from := fmt.Sprintf("s%d@local.test", i)
				data := "Subject: " + token + "\r\n\r\nmonkey business\r\n"
				// a client retries temporary failures, as MTAs do
				for try := 0; try < 20 && time.Now().Before(deadline); try++ {
					code, err := submitOne(d.SMTPAddr, from, rcpt, data)
					if code == 250 {
						results[i] = result{token, kind, true}
						break
					}
					if code >= 500 {
						mu.Lock()
						fivexx = append(fivexx, fmt.Sprintf("%s: %d", token, code))
						mu.Unlock()
						break
					}
					_ = err
					time.Sleep(20 * time.Millisecond)
				}
				if !results[i].accepted {
					results[i] = result{token, kind, false}
				}
			}
		}()
	}
	for i := range count {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(fivexx) > 0 {
		fail("5xx replies: %v", fivexx)
	}

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
	t.Logf("remote duplicates after dropped sessions: %d; counters: %v", dups, d.Stats())
}
