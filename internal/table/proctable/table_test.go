package proctable

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"smtpd/internal/table"
)

const (
	python = "/usr/bin/python3"
	// testTimeout is the per-request Timeout of the tests; slack is
	// what we allow on top for the machine to be busy.
	testTimeout = 500 * time.Millisecond
	slack       = time.Second
)

// testTuning keeps restarts fast: 100ms doubling to 800ms.
func testTuning() tuning {
	return tuning{backoffMin: 100 * time.Millisecond, backoffMax: 800 * time.Millisecond, stable: time.Minute, grace: 2 * time.Second}
}

// logBuf collects what a Table logs.
type logBuf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuf) log(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// waitFor polls until the log has a line matching re, and returns the
// submatches of the first such line.
func (l *logBuf) waitFor(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		l.mu.Lock()
		for _, line := range l.lines {
			if m := rx.FindStringSubmatch(line); m != nil {
				l.mu.Unlock()
				return m
			}
		}
		l.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no log line matching %q in:\n%s", re, l)
	return nil
}

func script(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s: %v (make test installs python3)", python, err)
	}
	p, err := filepath.Abs("testdata/table.py")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func testOptions(t *testing.T, mode string, l *logBuf) Options {
	cmd := []string{python, script(t)}
	if mode != "" {
		cmd = append(cmd, mode)
	}
	return Options{Name: "devs", Command: cmd, Timeout: testTimeout, Log: l.log, SMTPDVersion: "7.8.0"}
}

// newTable starts the test program in mode; Cleanup closes the table
// and checks that its process is gone.
func newTable(t *testing.T, mode string) (*Table, *logBuf) {
	t.Helper()
	return newTableTuned(t, mode, testTuning())
}

func newTableTuned(t *testing.T, mode string, tune tuning) (*Table, *logBuf) {
	t.Helper()
	l := &logBuf{}
	tb, err := start(testOptions(t, mode, l), tune)
	if err != nil {
		t.Fatalf("start: %v\nlog:\n%s", err, l)
	}
	pid := tb.pid()
	t.Cleanup(func() {
		tb.Close()
		if last := tb.pid(); last != 0 {
			pid = last
		}
		if running(pid) {
			t.Errorf("pid %d still running after Close", pid)
		}
		if t.Failed() {
			t.Logf("log:\n%s", l)
		}
	})
	return tb, l
}

// pid returns the pid of the running program, or 0.
func (t *Table) pid() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cur == nil {
		return 0
	}
	return t.cur.pid
}

// running tells whether pid is a live process (not gone, not a zombie
// left to a parent that does not reap).
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may contain anything, so look after
	// its last ")"
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// waitGone polls until pid is no longer running.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for running(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitWorking polls until a lookup succeeds, failing fast while the
// program restarts, and returns how long that took.
func waitWorking(t *testing.T, tb *Table) time.Duration {
	t.Helper()
	began := time.Now()
	for {
		v, found, err := tb.Lookup(context.Background(), table.Userinfo, "alice")
		if err == nil {
			if !found || v != "1000:1000:/home/alice" {
				t.Fatalf("after restart: %q, %v", v, found)
			}
			return time.Since(began)
		}
		if !errors.Is(err, ErrRestarting) {
			t.Fatalf("while restarting: %v, want ErrRestarting", err)
		}
		if time.Since(began) > 5*time.Second {
			t.Fatalf("not restarted: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDefaultTuning(t *testing.T) {
	// the filter processes' policy: 1s doubling to 60s, reset by a
	// run of a minute
	want := tuning{backoffMin: time.Second, backoffMax: time.Minute, stable: time.Minute, grace: 5 * time.Second}
	if got := defaultTuning(); got != want {
		t.Errorf("%+v, want %+v", got, want)
	}
}

func TestLookupEveryService(t *testing.T) {
	tb, l := newTable(t, "")
	l.waitFor(t, `^table devs: config 7\.8\.0 0\.1 devs$`)

	var names []string
	for _, s := range tb.Services() {
		names = append(names, string(s))
	}
	if !slices.Equal(names, allServices()) {
		t.Errorf("services %v, want %v", names, allServices())
	}

	ctx := context.Background()
	for _, c := range []struct {
		service    table.Service
		key, value string // value "" with found: a check
	}{
		{table.Alias, "root", "admin@example.org,ops@example.org"},
		{table.Alias, "pipe", "a|b"},
		{table.Domain, "example.org", ""},
		{table.Credentials, "alice", "alice:$2b$08$abcdefghijklmnopqrstuv"},
		{table.Netaddr, "192.0.2.1", ""},
		{table.Userinfo, "alice", "1000:1000:/home/alice"},
		{table.Source, "192.0.2.10", ""},
		{table.Mailaddr, "alice@example.org", ""},
		{table.Addrname, "192.0.2.1", "mx.example.org"},
		{table.Mailaddrmap, "alice", "alice@example.org,a@example.org"},
		{"relayhost", "example.org", "smtp+tls://relay.example.org"},
		{"string", "tag", ""},
		{"regex", "x", ""},
		{"auth", "alice:secret", ""},
	} {
		v, found, err := tb.Lookup(ctx, c.service, c.key)
		if err != nil || !found || v != c.value {
			t.Errorf("%s %q: got %q, %v, %v; want %q, found", c.service, c.key, v, found, err, c.value)
		}
		// the key with a "|" is one field: not the key in the table
		for _, miss := range []string{"nobody", "", c.key + "|x", "x|" + c.key} {
			v, found, err = tb.Lookup(ctx, c.service, miss)
			if err != nil || found || v != "" {
				t.Errorf("%s %q: got %q, %v, %v; want not found", c.service, miss, v, found, err)
			}
		}
	}
}

func TestUnknownOrUnregisteredService(t *testing.T) {
	tb, _ := newTable(t, "alias-only")
	if got := tb.Services(); !slices.Equal(got, []table.Service{table.Alias}) {
		t.Errorf("services %v", got)
	}
	ctx := context.Background()
	if _, _, err := tb.Lookup(ctx, table.Domain, "example.org"); !errors.Is(err, ErrService) {
		t.Errorf("unregistered service: %v, want ErrService", err)
	}
	if _, _, err := tb.Lookup(ctx, "frobnicate", "x"); !errors.Is(err, ErrService) {
		t.Errorf("unknown service: %v, want ErrService", err)
	}
	if v, found, err := tb.Lookup(ctx, table.Alias, "root"); err != nil || !found || v == "" {
		t.Errorf("alias still works: %q, %v, %v", v, found, err)
	}
}

func TestStartFails(t *testing.T) {
	for _, c := range []struct {
		mode string
		want error
	}{
		{"unknown-service", ErrProtocol},
		{"no-services", ErrProtocol},
		{"garbage-handshake", ErrProtocol},
		{"exit-handshake", ErrBroken},
	} {
		t.Run(c.mode, func(t *testing.T) {
			l := &logBuf{}
			began := time.Now()
			tb, err := start(testOptions(t, c.mode, l), testTuning())
			if err == nil {
				tb.Close()
				t.Fatal("started")
			}
			if !errors.Is(err, c.want) {
				t.Errorf("error %v, want %v", err, c.want)
			}
			if d := time.Since(began); d > slack {
				t.Errorf("took %v", d)
			}
			t.Log(err)
		})
	}
	t.Run("handshake timeout", func(t *testing.T) {
		o := Options{Name: "devs", Command: []string{"/bin/sleep", "1000"}, StartTimeout: 200 * time.Millisecond}
		began := time.Now()
		_, err := start(o, testTuning())
		if !errors.Is(err, ErrTimeout) {
			t.Errorf("error %v, want ErrTimeout", err)
		}
		if d := time.Since(began); d > 200*time.Millisecond+slack {
			t.Errorf("took %v", d)
		}
	})
	for _, o := range []Options{
		{Name: "", Command: []string{"/bin/true"}},
		{Name: "a|b", Command: []string{"/bin/true"}},
		{Name: "a\nb", Command: []string{"/bin/true"}},
		{Name: "devs"},
		{Name: "devs", Command: []string{""}},
		{Name: "devs", Command: []string{"/nonexistent/table-program"}},
		{Name: "devs", Command: []string{"no-such-table-program-in-path"}},
		{Name: "devs", Command: []string{"/bin/true"}, SMTPDVersion: "7.8.0\nconfig|ready"},
	} {
		if tb, err := start(o, testTuning()); err == nil {
			tb.Close()
			t.Errorf("%+v: started", o)
		}
	}
}

func TestMisbehaviour(t *testing.T) {
	for _, c := range []struct {
		key  string
		want error
	}{
		{"crash@example.org", ErrBroken},
		{"hang@example.org", ErrTimeout},
		{"garbage@example.org", ErrProtocol},
		{"wrongid@example.org", ErrProtocol},
	} {
		t.Run(c.key, func(t *testing.T) {
			tb, l := newTable(t, "")
			pid := tb.pid()
			for _, s := range []table.Service{table.Mailaddr, table.Alias} { // check, then lookup
				began := time.Now()
				_, _, err := tb.Lookup(context.Background(), s, c.key)
				if d := time.Since(began); d > testTimeout+slack {
					t.Errorf("%s: error after %v", s, d)
				}
				if !errors.Is(err, c.want) {
					t.Fatalf("%s: %v, want %v", s, err, c.want)
				}
				t.Logf("%s: %v", s, err)

				// fail fast while restarting
				began = time.Now()
				_, _, err = tb.Lookup(context.Background(), table.Userinfo, "alice")
				if !errors.Is(err, ErrRestarting) || errors.Is(err, ErrBroken) {
					t.Errorf("right after: %v, want ErrRestarting", err)
				}
				if d := time.Since(began); d > testTimeout/2 {
					t.Errorf("fast failure took %v", d)
				}
				waitGone(t, pid)

				if d := waitWorking(t, tb); d > 5*time.Second {
					t.Errorf("restart took %v", d)
				}
				if next := tb.pid(); next == pid || next == 0 {
					t.Errorf("pid %d after restart, was %d", next, pid)
				} else {
					pid = next
				}
			}
			l.waitFor(t, `starting it again in 100ms`)
			l.waitFor(t, `starting it again in 200ms`) // the second failure doubled the backoff
		})
	}
}

func TestErrorAnswerKeepsProgram(t *testing.T) {
	tb, _ := newTable(t, "")
	pid := tb.pid()
	for _, s := range []table.Service{table.Domain, table.Userinfo} {
		_, found, err := tb.Lookup(context.Background(), s, "error@example.org")
		if !errors.Is(err, ErrFailure) || errors.Is(err, ErrBroken) || found {
			t.Fatalf("%s: %v, %v; want ErrFailure", s, found, err)
		}
		if !strings.Contains(err.Error(), "boom") {
			t.Errorf("%s: message lost: %v", s, err)
		}
	}
	if v, found, err := tb.Lookup(context.Background(), table.Userinfo, "alice"); err != nil || !found || v == "" {
		t.Errorf("next lookup: %q, %v, %v", v, found, err)
	}
	if got := tb.pid(); got != pid {
		t.Errorf("pid %d, was %d: restarted on an error answer", got, pid)
	}
}

func TestIdleExit(t *testing.T) {
	tb, _ := newTable(t, "")
	pid := tb.pid()
	if _, found, err := tb.Lookup(context.Background(), table.Alias, "bye@example.org"); err != nil || found {
		t.Fatalf("bye: %v, %v", found, err)
	}
	waitGone(t, pid)
	// a request sent before the supervisor notices fails as broken,
	// which is fine (a tempfail) but not what we test here
	for deadline := time.Now().Add(5 * time.Second); tb.pid() == pid; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("exit not noticed")
		}
	}
	waitWorking(t, tb)
	if tb.pid() == pid {
		t.Error("same pid")
	}
}

func TestKeysRefused(t *testing.T) {
	tb, _ := newTable(t, "")
	pid := tb.pid()
	for _, key := range []string{"a\nb", "a\rb", "alice\n", "\r\n", "a\x00b", strings.Repeat("x", maxLine)} {
		_, _, err := tb.Lookup(context.Background(), table.Userinfo, key)
		if !errors.Is(err, ErrKey) {
			t.Errorf("%q: %v, want ErrKey", key, err)
		}
	}
	// had a line been sent, the program would have exited on the
	// second half as a bad request
	if v, found, err := tb.Lookup(context.Background(), table.Userinfo, "alice"); err != nil || !found || v == "" {
		t.Errorf("next lookup: %q, %v, %v", v, found, err)
	}
	if tb.pid() != pid {
		t.Error("restarted")
	}
}

func TestUpdate(t *testing.T) {
	tb, _ := newTable(t, "")
	for i := 1; i <= 2; i++ {
		if err := tb.Update(context.Background()); err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		v, _, err := tb.Lookup(context.Background(), table.Alias, "updates")
		if err != nil || v != strconv.Itoa(i) {
			t.Errorf("after update %d: %q, %v", i, v, err)
		}
	}

	tb, _ = newTable(t, "update-error")
	pid := tb.pid()
	err := tb.Update(context.Background())
	if !errors.Is(err, ErrFailure) || !strings.Contains(err.Error(), "cannot reload") {
		t.Errorf("update: %v, want ErrFailure", err)
	}
	if v, _, err := tb.Lookup(context.Background(), table.Alias, "updates"); err != nil || v != "1" || tb.pid() != pid {
		t.Errorf("after a failed update: %q, %v, pid %d (was %d)", v, err, tb.pid(), pid)
	}
}

func TestStderrLogged(t *testing.T) {
	tb, l := newTable(t, "")
	if _, _, err := tb.Lookup(context.Background(), table.Alias, "stderr@example.org"); err != nil {
		t.Fatal(err)
	}
	l.waitFor(t, `^table devs: looking up stderr@example\.org$`)
}

func TestConcurrent(t *testing.T) {
	tb, _ := newTable(t, "")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				key, want := "alice", "1000:1000:/home/alice"
				if (g+i)%2 == 1 {
					key, want = "nobody", ""
				}
				v, found, err := tb.Lookup(context.Background(), table.Userinfo, key)
				if err != nil || v != want || found != (want != "") {
					errs <- fmt.Errorf("goroutine %d, %d: %q: %q, %v, %v", g, i, key, v, found, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestContextEnds(t *testing.T) {
	tb, _ := newTable(t, "")
	pid := tb.pid()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, _, err := tb.Lookup(ctx, table.Alias, "hang@example.org")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want DeadlineExceeded", err)
	}
	if d := time.Since(began); d > 100*time.Millisecond+slack/2 {
		t.Errorf("returned after %v", d)
	}
	// the hung request still times out in the background and the
	// program is replaced; nobody reads its late answers
	waitGone(t, pid)
	waitWorking(t, tb)

	// an ended ctx never reaches the program
	cancel()
	if _, _, err := tb.Lookup(ctx, table.Alias, "crash@example.org"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v, want DeadlineExceeded", err)
	}
	if _, _, err := tb.Lookup(context.Background(), table.Alias, "root"); err != nil {
		t.Errorf("after: %v", err)
	}
}

func TestClose(t *testing.T) {
	tb, l := newTable(t, "child")
	m := l.waitFor(t, `^table devs: child (\d+)$`)
	child, _ := strconv.Atoi(m[1])
	pid := tb.pid()
	if !running(pid) || !running(child) {
		t.Fatalf("pid %d or child %d not running", pid, child)
	}
	// a request in flight when Close comes ends at once
	errc := make(chan error, 1)
	go func() {
		_, _, err := tb.Lookup(context.Background(), table.Alias, "hang@example.org")
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	began := time.Now()
	if err := tb.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if d := time.Since(began); d > slack {
		t.Errorf("close took %v", d)
	}
	if err := <-errc; err == nil {
		t.Error("hung lookup succeeded")
	}
	if running(pid) {
		t.Errorf("program %d still running", pid)
	}
	waitGone(t, child) // reparented; its reaper may take a moment
	if _, _, err := tb.Lookup(context.Background(), table.Alias, "root"); !errors.Is(err, ErrClosed) {
		t.Errorf("lookup after close: %v, want ErrClosed", err)
	}
	if err := tb.Update(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("update after close: %v, want ErrClosed", err)
	}
	if err := tb.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestCloseWhileRestarting(t *testing.T) {
	tune := testTuning()
	tune.backoffMin = time.Hour
	tb, _ := newTableTuned(t, "", tune)
	if _, _, err := tb.Lookup(context.Background(), table.Alias, "crash@example.org"); !errors.Is(err, ErrBroken) {
		t.Fatal(err)
	}
	began := time.Now()
	tb.Close()
	if d := time.Since(began); d > slack {
		t.Errorf("close took %v", d)
	}
}

// TestCloseIgnoresTerm checks the SIGKILL after the grace period, with
// a program that ignores SIGTERM and the end of its input.
func TestCloseIgnoresTerm(t *testing.T) {
	prog := filepath.Join(t.TempDir(), "stubborn.sh")
	err := os.WriteFile(prog, []byte(`#!/bin/sh
trap '' TERM
read l; read l; read l; read l
echo 'register|alias'
echo 'register|ready'
while :; do sleep 1; done
`), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	tune := testTuning()
	tune.grace = 300 * time.Millisecond
	tb, err := start(Options{Name: "devs", Command: []string{prog}, Timeout: testTimeout}, tune)
	if err != nil {
		t.Fatal(err)
	}
	pid := tb.pid()
	began := time.Now()
	tb.Close()
	if d := time.Since(began); d < tune.grace || d > tune.grace+slack {
		t.Errorf("close took %v, want the grace of %v", d, tune.grace)
	}
	if running(pid) {
		t.Errorf("pid %d still running", pid)
	}
}
