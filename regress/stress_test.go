package regress

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStressSessionCap opens the session cap plus 100 connections at
// once: the extra ones get 421, the daemon goes on serving.
func TestStressSessionCap(t *testing.T) {
	const limit, extra = 50, 100
	conf := strings.Replace(DefaultConfig, `retry_base = "1s"`, fmt.Sprintf("retry_base = \"1s\"\n  sessions = %d\n  sessions_per_ip = %d", limit, limit+extra), 1)
	d := StartWith(t, bin, Options{Config: conf})
	conns := make([]net.Conn, limit+extra)
	greetings := make([]string, len(conns))
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", d.SMTPAddr, 10*time.Second)
			if err != nil {
				greetings[i] = "dial: " + err.Error()
				return
			}
			conns[i] = c
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				greetings[i] = "read: " + err.Error()
				return
			}
			greetings[i] = line[:3]
		}()
	}
	wg.Wait()
	count := map[string]int{}
	for _, g := range greetings {
		count[g]++
	}
	t.Logf("%d connections at a cap of %d sessions: %v", len(conns), limit, count)
	if count["220"] != limit || count["421"] != extra {
		t.Errorf("greetings %v, want %d x 220 and %d x 421", count, limit, extra)
	}
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	// the sessions are gone and the daemon still serves
	deadline := time.Now().Add(10 * time.Second)
	for d.Stats()["smtp.session"] != "0" && d.Stats()["smtp.session"] != "" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	swaks(t, swaksArgs(d, "after@example.test")...)
	d.WaitMail(1, 10*time.Second)
	if st := d.Stats(); st["smtp.session.refused"] != fmt.Sprint(extra) {
		t.Errorf("smtp.session.refused=%q, want %d", st["smtp.session.refused"], extra)
	}
}

// TestStressSlowloris: a client sending a byte every second, never
// idle long enough for the command timeout, is cut by the absolute
// session deadline.
func TestStressSlowloris(t *testing.T) {
	conf := strings.Replace(DefaultConfig, `retry_base = "1s"`, "retry_base = \"1s\"\n  session_timeout = \"3s\"\n  command_timeout = \"5s\"", 1)
	d := StartWith(t, bin, Options{Config: conf})
	c, err := net.Dial("tcp", d.SMTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	r := bufio.NewReader(c)
	r.ReadString('\n')
	closed := make(chan time.Duration, 1)
	go func() {
		// everything the server says until it closes
		for {
			if _, err := r.ReadString('\n'); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}()
	cmd := "EHLO slow.example.net\r\n"
	for i := 0; i < 30; i++ {
		select {
		case after := <-closed:
			t.Logf("slowloris cut after %v, %d bytes sent, session_timeout 3s", after.Round(100*time.Millisecond), i)
			if after < 2500*time.Millisecond {
				t.Errorf("cut after %v, before the session deadline", after)
			}
			return
		case <-time.After(time.Second):
		}
		c.Write([]byte{cmd[i%len(cmd)]})
	}
	t.Fatal("a client sending a byte a second kept its session for 30 s")
}

// TestStressRelay sends 10,000 messages through the relay path, to a
// second smtpd found through the test DNS, and prints the peak memory
// (VmHWM) of every process of both daemons.
func TestStressRelay(t *testing.T) {
	const n = 10000
	w := startRelayWorld(t)
	far := w.far
	d := StartWith(t, bin, Options{Config: w.config()})
	start := time.Now()
	body := "Subject: stress\r\n\r\n" + strings.Repeat("stress test line of some length, to make a message of about 2 KB\r\n", 30)
	sendMany(t, d.SMTPAddr, n, 8, body, func(i int) string { return fmt.Sprintf("r%d@example.test", i%100) })
	accepted := time.Since(start)
	deadline := time.Now().Add(5 * time.Minute)
	for {
		files, _ := os.ReadDir(filepath.Join(far.Dir, "mail", "new"))
		if len(files) >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages relayed after 5 minutes", len(files), n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("%d messages: accepted in %v, relayed and delivered in %v", n, accepted.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for name, dd := range map[string]*Daemon{"relay": d, "receiver": far} {
		pids := dd.Children()
		pids["parent"] = dd.Cmd.Process.Pid
		var lines []string
		for proc, pid := range pids {
			hwm, err := StatusField(pid, "VmHWM")
			if err != nil {
				continue
			}
			lines = append(lines, fmt.Sprintf("%s=%s", proc, strings.Join(strings.Fields(hwm), " ")))
		}
		sort.Strings(lines)
		t.Logf("peak RSS of the %s: %s", name, strings.Join(lines, ", "))
	}
	d.WaitStat("scheduler.delivery.ok", fmt.Sprint(n), 30*time.Second)
	d.WaitStat("scheduler.envelope", "0", 10*time.Second)
}
