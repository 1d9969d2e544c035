package regress

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// idleTLSSessions is how many sessions TestStressIdleTLS holds open.
const idleTLSSessions = 10000

// TestStressIdleTLS opens idleTLSSessions sessions that each say EHLO,
// complete STARTTLS and say EHLO again, then stay idle, and prints what
// the whole daemon holds (the sum of its processes' PSS) while they are
// open. It asserts only that every session was served: memory is a
// figure to watch, not a timed or sized assertion.
func TestStressIdleTLS(t *testing.T) {
	// one descriptor per session in this process and in smtp, and some
	// to spare; the daemon inherits the limit from this process
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	need := uint64(idleTLSSessions + 1000)
	if rl.Cur < need {
		old := rl
		rl.Cur = need
		if rl.Max < need {
			rl.Max = need
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatalf("raising the descriptor limit to %d (run as root): %v", need, err)
		}
		t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	}
	certDir := t.TempDir()
	os.Chmod(certDir, 0o755)
	cert, key := writeCert(t, certDir)
	conf := strings.Replace(DefaultConfig, `retry_base = "1s"`, fmt.Sprintf("retry_base = \"1s\"\n  sessions = %d\n  sessions_per_ip = %d", idleTLSSessions+100, idleTLSSessions+100), 1)
	conf = strings.Replace(conf, `listen "mx" { address = "{{ADDR}}" }`, `listen "mx" {
  address = "{{ADDR}}"
  tls     = "starttls"
  cert    = "`+cert+`"
  key     = "`+key+`"
}`, 1)
	d := StartWith(t, bin, Options{Config: conf})

	start := time.Now()
	conns := make([]net.Conn, idleTLSSessions)
	errs := make([]error, idleTLSSessions)
	var wg sync.WaitGroup
	// a bounded number of handshakes at a time, as a crowd of clients
	// would come over some seconds
	slots := make(chan struct{}, 200)
	for i := range conns {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			conns[i], errs[i] = openIdleTLS(d.SMTPAddr)
		}()
	}
	wg.Wait()
	served := 0
	var firstErr error
	for i, err := range errs {
		if err == nil {
			served++
		} else if firstErr == nil {
			firstErr = fmt.Errorf("session %d: %w", i, err)
		}
	}
	opened := time.Since(start)
	time.Sleep(2 * time.Second) // let the daemon settle with all of them idle
	pss, procs := daemonPSS(t, d)
	t.Logf("%d of %d sessions idle after STARTTLS (opened in %.1f s); the daemon's %d processes hold %.1f MiB PSS (%.1f KiB per session)",
		served, idleTLSSessions, opened.Seconds(), procs, float64(pss)/1024, float64(pss)/float64(max(served, 1)))
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	if served != idleTLSSessions {
		t.Fatalf("%d of %d sessions served; %v", served, idleTLSSessions, firstErr)
	}
}

// openIdleTLS opens a session and takes it through EHLO, STARTTLS and
// EHLO under TLS.
func openIdleTLS(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	for _, step := range []struct{ send, want string }{{"", "220"}, {"EHLO client.example.net\r\n", "250"}, {"STARTTLS\r\n", "220"}} {
		if step.send != "" {
			if _, err := c.Write([]byte(step.send)); err != nil {
				c.Close()
				return nil, err
			}
		}
		if reply, err := readReply(r); err != nil || !strings.HasPrefix(reply, step.want) {
			c.Close()
			return nil, fmt.Errorf("%q: %q %v", step.send, reply, err)
		}
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if _, err := tc.Write([]byte("EHLO client.example.net\r\n")); err != nil {
		c.Close()
		return nil, err
	}
	if reply, err := readReply(bufio.NewReader(tc)); err != nil || !strings.HasPrefix(reply, "250") {
		c.Close()
		return nil, fmt.Errorf("EHLO under TLS: %q %v", reply, err)
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// daemonPSS is the sum of the proportional set sizes of the daemon's
// parent and children, in KiB, and how many processes it counted.
func daemonPSS(t *testing.T, d *Daemon) (kib int64, procs int) {
	pids := d.Children()
	pids["parent"] = d.Cmd.Process.Pid
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			t.Logf("pid %d: %v", pid, err)
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				kib += n
				procs++
			}
		}
	}
	return kib, procs
}
