package regress

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// sendLoop sends numbered messages over one session after another until
// stop is closed or the server goes away, and records the numbers that
// got a 250.
func sendLoop(addr string, next func() int, accepted func(int), stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(conn)
		ok := func(code string) bool {
			reply, err := readReply(r)
			return err == nil && strings.HasPrefix(reply, code)
		}
		if !ok("220") {
			conn.Close()
			return
		}
		fmt.Fprintf(conn, "EHLO client.example.net\r\n")
		if !ok("250") {
			conn.Close()
			return
		}
		for i := 0; i < 20; i++ {
			n := next()
			fmt.Fprintf(conn, "MAIL FROM:<s@example.net>\r\nRCPT TO:<n%d@example.test>\r\nDATA\r\n", n)
			if !ok("250") || !ok("250") || !ok("354") {
				conn.Close()
				return
			}
			fmt.Fprintf(conn, "Subject: crash %d\r\n\r\nmessage %d\r\nEND\r\n.\r\n", n, n)
			if !ok("250") {
				conn.Close()
				return
			}
			accepted(n)
		}
		fmt.Fprintf(conn, "QUIT\r\n")
		conn.Close()
	}
}

// TestCrashDurability: while clients keep sending, the whole daemon is
// killed with SIGKILL at a random moment, 20 times over the same spool.
// Every message that got a 250 is delivered at least once, no message is
// delivered half, and nothing is left in the spool at the end.
func TestCrashDurability(t *testing.T) {
	var mu sync.Mutex
	counter := 0
	accepted := map[int]bool{}
	next := func() int {
		mu.Lock()
		defer mu.Unlock()
		counter++
		return counter
	}
	record := func(n int) {
		mu.Lock()
		accepted[n] = true
		mu.Unlock()
	}
	dir := ""
	const rounds = 20
	for round := 0; round < rounds; round++ {
		d := StartWith(t, bin, Options{Dir: dir})
		dir = d.Dir
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sendLoop(d.SMTPAddr, next, record, stop)
			}()
		}
		time.Sleep(time.Duration(50+rand.IntN(400)) * time.Millisecond)
		d.Kill()
		close(stop)
		wg.Wait()
	}
	d := StartWith(t, bin, Options{Dir: dir})
	mu.Lock()
	want := len(accepted)
	mu.Unlock()
	if want < rounds {
		t.Fatalf("only %d messages accepted in %d rounds", want, rounds)
	}
	deadline := time.Now().Add(30 * time.Second)
	subject := regexp.MustCompile(`(?m)^Subject: crash (\d+)$`)
	for {
		got := map[int]int{}
		half := 0
		for name, m := range d.Mail() {
			s := subject.FindStringSubmatch(m)
			if s == nil || !strings.HasSuffix(m, "END\n") {
				half++
				t.Logf("incomplete message %s: %q", name, m)
				continue
			}
			var n int
			fmt.Sscan(s[1], &n)
			got[n]++
		}
		missing := 0
		for n := range accepted {
			if got[n] == 0 {
				missing++
			}
		}
		if half > 0 {
			t.Fatalf("%d incomplete messages delivered", half)
		}
		if missing == 0 {
			dups := 0
			for _, c := range got {
				dups += c - 1
			}
			t.Logf("%d messages accepted over %d crashes, all delivered (%d delivered twice, %d not acknowledged but delivered)", want, rounds, dups, len(got)-want)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted messages never delivered\n%s", missing, want, d.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.WaitStat("scheduler.envelope", "0", 10*time.Second)
	for _, sub := range []string{"temporary", "incoming", "purge"} {
		left, _ := filepath.Glob(filepath.Join(d.Dir, "spool", sub, "*"))
		if len(left) > 0 {
			t.Errorf("spool/%s not empty after recovery: %v", sub, left)
		}
	}
	msgs, _ := filepath.Glob(filepath.Join(d.Dir, "spool", "queue", "*", "*"))
	if len(msgs) > 0 {
		t.Errorf("messages left in the queue: %v", msgs)
	}
	if _, err := os.Stat(filepath.Join(d.Dir, "spool", "corrupt")); err != nil {
		t.Error(err)
	}
}
