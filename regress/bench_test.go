package regress

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchSend sends n messages of body over sessions concurrent
// connections, many messages per session as a busy relay does.
func benchSend(b testing.TB, addr string, n, sessions int, body string) {
	sendMany(b, addr, n, sessions, body, func(int) string { return "r@example.test" })
}

// sendMany sends n messages of body over sessions concurrent
// connections, message i to rcpt(i).
func sendMany(b testing.TB, addr string, n, sessions int, body string, rcpt func(int) string) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			expect := func(code string) error {
				reply, err := readReply(r)
				if err == nil && !strings.HasPrefix(reply, code) {
					err = fmt.Errorf("got %q, want %s", reply, code)
				}
				return err
			}
			if err := expect("220"); err != nil {
				errs <- err
				return
			}
			fmt.Fprintf(conn, "EHLO bench.example\r\n")
			if err := expect("250"); err != nil {
				errs <- err
				return
			}
			for sent := 0; ; sent++ {
				i := next.Add(1)
				if i > int64(n) {
					break
				}
				if sent > 0 && sent%90 == 0 {
					// stay under mails_per_session
					fmt.Fprintf(conn, "RSET\r\n")
					expect("250")
				}
				fmt.Fprintf(conn, "MAIL FROM:<s@example.net>\r\nRCPT TO:<%s>\r\nDATA\r\n", rcpt(int(i)))
				for _, c := range []string{"250", "250", "354"} {
					if err := expect(c); err != nil {
						errs <- err
						return
					}
				}
				fmt.Fprintf(conn, "%s.\r\n", body)
				if err := expect("250"); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// benchRate sends b.N messages through a daemon over 8 sessions and
// reports the rate, counting until they are delivered if deliver is set.
func benchRate(b *testing.B, deliver bool) {
	conf := strings.Replace(DefaultConfig, `retry_base = "1s"`, "retry_base = \"1s\"\n  mails_per_session = 100000", 1)
	d := StartWith(b, bin, Options{Config: conf})
	body := "Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n", 40)
	procs := d.Children()
	procs["parent"] = d.Cmd.Process.Pid
	before := cpuTimes(procs)
	b.ResetTimer()
	start := time.Now()
	benchSend(b, d.SMTPAddr, b.N, 8, body)
	if deliver {
		d.WaitMail(b.N, 5*time.Minute)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
	// CPU per message: of the smtp process, and of the whole daemon
	// (deliveries run in mda processes that come and go: not counted)
	after := cpuTimes(procs)
	var total time.Duration
	for name, t := range after {
		total += t - before[name]
	}
	b.ReportMetric(float64((after["smtp"]-before["smtp"]).Microseconds())/float64(b.N), "smtp-µs/msg")
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "cpu-µs/msg")
}

// cpuTimes returns the CPU time (user and system) each process has
// used, from /proc/PID/stat.
func cpuTimes(procs map[string]int) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range procs {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// the fields after the command name, which is in parentheses
		f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		// clock ticks of 1/100 s (USER_HZ on Linux)
		out[name] = time.Duration(utime+stime) * 10 * time.Millisecond
	}
	return out
}

// BenchmarkAccept measures messages accepted per second: each one
// received, committed durably to the spool (synced, the syncs shared
// between concurrent sessions), and acknowledged with 250.
func BenchmarkAccept(b *testing.B) { benchRate(b, false) }

// BenchmarkDeliver measures messages accepted and delivered to a
// maildir per second, end to end.
func BenchmarkDeliver(b *testing.B) { benchRate(b, true) }
