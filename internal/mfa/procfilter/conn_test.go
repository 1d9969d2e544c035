package procfilter

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// stamp is a fixed time: 1700000000.012345.
var stamp = time.Unix(1700000000, 12345678)

func TestHandshake(t *testing.T) {
	c, f := mustStart(t, []string{
		"register|filter|smtp-in|quit",
		"register|filter|smtp-in|connect",
		"register|filter|SMTP-IN|data-line", // lka compares with strncasecmp
		"register|report|smtp-in|link-connect",
		"register|report|smtp-out|link-disconnect", // accepted, ignored
		"register|report|smtp-in|tx-begin",
	}, nil)
	want := []string{
		"config|smtpd-version|7.8.0",
		"config|protocol|0.7",
		"config|smtp-session-timeout|300",
		"config|subsystem|smtp-in",
		"config|admd|mx.example.org",
		"config|ready",
	}
	if got := <-f.config; !reflect.DeepEqual(got, want) {
		t.Errorf("config lines\n got %q\nwant %q", got, want)
	}
	if got, want := c.Phases(), []string{"connect", "data-line", "quit"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Phases() = %q, want %q", got, want)
	}
	for p, want := range map[string]bool{"connect": true, "quit": true, "helo": false, "bogus": false} {
		if c.HasPhase(p) != want {
			t.Errorf("HasPhase(%q) = %v", p, !want)
		}
	}
	for e, want := range map[string]bool{"link-connect": true, "tx-begin": true, "link-disconnect": false, "bogus": false} {
		if c.HasEvent(e) != want {
			t.Errorf("HasEvent(%q) = %v", e, !want)
		}
	}
	if c.Err() != nil {
		t.Errorf("Err() = %v", c.Err())
	}
}

func TestHandshakeAllEvents(t *testing.T) {
	c, _ := mustStart(t, []string{"register|report|smtp-in|*"}, nil)
	for _, e := range []string{"link-connect", "timeout", "filter-response", "protocol-client"} {
		if !c.HasEvent(e) {
			t.Errorf("HasEvent(%q) false after *", e)
		}
	}
	if len(c.Phases()) != 0 {
		t.Errorf("Phases() = %q", c.Phases())
	}
}

func TestHandshakeErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		regs    []string
		timeout bool
	}{
		{"garbage", []string{"hello world"}, false},
		{"unknown phase", []string{"register|filter|smtp-in|mail"}, false},
		{"unknown event", []string{"register|report|smtp-in|link-up"}, false},
		{"filter smtp-out", []string{"register|filter|smtp-out|connect"}, false},
		{"unknown subsystem", []string{"register|report|lmtp-in|link-connect"}, false},
		{"unknown stream", []string{"register|log|smtp-in|connect"}, false},
		{"short register", []string{"register|filter|smtp-in"}, false},
		{"answer before ready", []string{"filter-result|0000000000000001|0000000000000001|proceed"}, false},
		{"ready with junk", []string{"register|ready|now"}, false},
		{"no ready", []string{"register|filter|smtp-in|connect"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions()
			o.Timeout = 300 * time.Millisecond
			start := time.Now()
			c, _, err := startFake(t, o, tc.regs, nil)
			if err == nil || c != nil {
				t.Fatalf("Start = %v, %v; want an error", c, err)
			}
			if !errors.Is(err, ErrBroken) || errors.Is(err, ErrTimeout) != tc.timeout {
				t.Errorf("error %v: Is(ErrBroken) %v, Is(ErrTimeout) %v", err, errors.Is(err, ErrBroken), errors.Is(err, ErrTimeout))
			}
			if !tc.timeout && time.Since(start) > 200*time.Millisecond {
				t.Errorf("took %v to see a bad line", time.Since(start))
			}
			t.Log(err)
		})
	}
	t.Run("EOF", func(t *testing.T) {
		ours, in, out, closer := netPipe()
		go func() {
			buf := make([]byte, 1024)
			in.Read(buf) // the config, then hang up
			closer()
		}()
		_ = out
		c, err := Start(ours, testOptions())
		if err == nil || !errors.Is(err, ErrBroken) || c != nil {
			t.Fatalf("Start = %v, %v; want ErrBroken", c, err)
		}
		t.Log(err)
	})
}

func TestFilterResults(t *testing.T) {
	for _, tc := range []struct {
		decision string
		want     Result
	}{
		{"proceed", Result{Action: Proceed}},
		{"junk", Result{Action: Junk}},
		{"reject|550 5.7.1 go away", Result{Action: Reject, Code: 550, Enhanced: "5.7.1", Text: "go away", Param: "550 5.7.1 go away"}},
		{"reject|451 later", Result{Action: Reject, Code: 451, Text: "later", Param: "451 later"}},
		{"reject|421 4.3.0 closing", Result{Action: Disconnect, Code: 421, Enhanced: "4.3.0", Text: "closing", Param: "421 4.3.0 closing"}},
		{"reject|554 5.7.1", Result{Action: Reject, Code: 554, Enhanced: "5.7.1", Param: "554 5.7.1"}},
		{"reject|550 5.7.1x no", Result{Action: Reject, Code: 550, Text: "5.7.1x no", Param: "550 5.7.1x no"}},
		{"disconnect|550 your IP reputation is too low", Result{Action: Disconnect, Code: 550, Text: "your IP reputation is too low", Param: "550 your IP reputation is too low"}},
		{"rewrite|<b@example.org>", Result{Action: Rewrite, Param: "<b@example.org>"}},
		{"rewrite|", Result{Action: Rewrite}},
		{"report|score=3|spam=no", Result{Action: Report, Param: "score=3|spam=no"}},
	} {
		t.Run(tc.decision, func(t *testing.T) {
			c, f := mustStart(t, []string{"register|filter|smtp-in|mail-from"}, nil)
			done := make(chan struct{})
			var got Result
			var err error
			go func() {
				defer close(done)
				got, err = c.Filter(context.Background(), stamp, "mail-from", 0xa1, "a@example.org")
			}()
			req := f.next()
			fields := fieldsOf(req)
			if want := "filter|0.7|1700000000.012345|smtp-in|mail-from|00000000000000a1|"; !strings.HasPrefix(req, want) ||
				len(fields) != 8 || len(fields[6]) != 16 || fields[7] != "a@example.org" {
				t.Errorf("request %q, want %s<token>|a@example.org", req, want)
			}
			f.send(answer(req, tc.decision))
			<-done
			if err != nil || got != tc.want {
				t.Errorf("Filter = %+v, %v; want %+v", got, err, tc.want)
			}
			if c.Err() != nil {
				t.Errorf("broken: %v", c.Err())
			}
		})
	}
}

func TestFilterFatal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		phase string
		reply func(req string) string
	}{
		{"junk at commit", "commit", func(r string) string { return answer(r, "junk") }},
		{"reject 2xx", "rcpt-to", func(r string) string { return answer(r, "reject|250 fine") }},
		{"reject no text", "rcpt-to", func(r string) string { return answer(r, "reject|550") }},
		{"reject no code", "rcpt-to", func(r string) string { return answer(r, "reject|go away") }},
		{"reject multiline", "rcpt-to", func(r string) string { return answer(r, "reject|550-go away") }},
		{"disconnect 3xx", "rcpt-to", func(r string) string { return answer(r, "disconnect|354 go on") }},
		{"proceed with param", "rcpt-to", func(r string) string { return answer(r, "proceed|x") }},
		{"rewrite without param", "rcpt-to", func(r string) string { return answer(r, "rewrite") }},
		{"unknown decision", "rcpt-to", func(r string) string { return answer(r, "accept") }},
		{"CR at end", "rcpt-to", func(r string) string { return answer(r, "proceed\r") }},
		{"wrong token", "rcpt-to", func(r string) string {
			f := fieldsOf(r)
			return "filter-result|" + f[5] + "|00000000deadbeef|proceed"
		}},
		{"wrong session", "rcpt-to", func(r string) string {
			f := fieldsOf(r)
			return "filter-result|00000000000000ff|" + f[6] + "|proceed"
		}},
		{"bad session", "rcpt-to", func(r string) string {
			f := fieldsOf(r)
			return "filter-result|0x" + f[5] + "|" + f[6] + "|proceed"
		}},
		{"missing token", "rcpt-to", func(r string) string { return "filter-result|" + fieldsOf(r)[5] }},
		{"dataline for a request", "rcpt-to", func(r string) string {
			f := fieldsOf(r)
			return "filter-dataline|" + f[5] + "|" + f[6] + "|hello"
		}},
		{"unknown verb", "rcpt-to", func(string) string { return "filter-verdict|x" }},
		{"late register", "rcpt-to", func(string) string { return "register|filter|smtp-in|helo" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, f := mustStart(t, []string{"register|filter|smtp-in|rcpt-to", "register|filter|smtp-in|commit"}, func(f *fake, line string) {
				f.send(tc.reply(line))
			})
			_ = f
			var params []string
			if tc.phase == "rcpt-to" {
				params = []string{"b@example.org"}
			}
			res, err := c.Filter(context.Background(), stamp, tc.phase, 1, params...)
			if !errors.Is(err, ErrBroken) || errors.Is(err, ErrTimeout) {
				t.Fatalf("Filter = %+v, %v; want ErrBroken", res, err)
			}
			waitBroken(t, c)
			if c.Err() == nil {
				t.Error("Err() nil after break")
			}
			if _, err := c.Filter(context.Background(), stamp, tc.phase, 2, params...); !errors.Is(err, ErrBroken) {
				t.Errorf("Filter after break: %v", err)
			}
			if err := c.Report(stamp, "link-disconnect", 2); !errors.Is(err, ErrBroken) {
				t.Errorf("Report after break: %v", err)
			}
			t.Log(err)
		})
	}
}

func TestFilterParams(t *testing.T) {
	c, f := mustStart(t, []string{"register|filter|smtp-in|connect", "register|filter|smtp-in|data",
		"register|filter|smtp-in|helo"}, func(f *fake, line string) {
		f.lines <- line
		f.send(answer(line, "proceed"))
	})
	ctx := context.Background()
	check := func(want string) {
		t.Helper()
		got := f.next()
		fields := fieldsOf(got)
		got = strings.Replace(got, "|"+fields[6]+"|", "|<token>|", 1)
		if got != want {
			t.Errorf("request\n got %q\nwant %q", got, want)
		}
	}
	if _, err := c.Filter(ctx, stamp, "connect", 0x1234, "mail.example.org", "[2001:db8::1]"); err != nil {
		t.Fatal(err)
	}
	check("filter|0.7|1700000000.012345|smtp-in|connect|0000000000001234|<token>|mail.example.org|[2001:db8::1]")
	// phases without parameter still end with an empty field
	if _, err := c.Filter(ctx, stamp, "data", 0x1234); err != nil {
		t.Fatal(err)
	}
	check("filter|0.7|1700000000.012345|smtp-in|data|0000000000001234|<token>|")
	// a client cannot end the line early
	if _, err := c.Filter(ctx, stamp, "helo", 0x1234, "evil\r\nfilter-result|0000000000001234|0000000000000001|proceed\x00"); err != nil {
		t.Fatal(err)
	}
	check("filter|0.7|1700000000.012345|smtp-in|helo|0000000000001234|<token>|evil  filter-result|0000000000001234|0000000000000001|proceed ")

	// caller mistakes: errors, the Conn stays up, nothing is sent
	for _, tc := range []struct {
		phase  string
		params []string
	}{
		{"connect", []string{"only-rdns"}},
		{"connect", []string{"rdns|evil", "192.0.2.1"}},
		{"helo", nil},
		{"data", []string{"a", "b"}},
		{"data-line", []string{"x"}},
		{"bogus", nil},
	} {
		if _, err := c.Filter(ctx, stamp, tc.phase, 1, tc.params...); err == nil || errors.Is(err, ErrBroken) {
			t.Errorf("Filter(%s, %q) = %v, want a caller error", tc.phase, tc.params, err)
		}
	}
	// a phase the filter did not register proceeds without asking
	if res, err := c.Filter(ctx, stamp, "rcpt-to", 1, "a@example.org"); err != nil || res.Action != Proceed {
		t.Errorf("unregistered phase: %+v, %v", res, err)
	}
	f.nothing()
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

func TestConcurrentOutOfOrder(t *testing.T) {
	const n = 64
	var mu sync.Mutex
	var reqs []string
	c, _ := mustStart(t, []string{"register|filter|smtp-in|rcpt-to"}, func(f *fake, line string) {
		mu.Lock()
		defer mu.Unlock()
		reqs = append(reqs, line)
		if len(reqs) < n {
			return
		}
		// answer all at once, last first, each with its session's code
		for i := len(reqs) - 1; i >= 0; i-- {
			sid := fieldsOf(reqs[i])[5]
			var v uint64
			fmt.Sscanf(sid, "%x", &v)
			f.send(answer(reqs[i], fmt.Sprintf("reject|%d %s", 400+v, sid)))
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(sid uint64) {
			defer wg.Done()
			res, err := c.Filter(context.Background(), time.Time{}, "rcpt-to", sid, "x@example.org")
			if err != nil {
				errs <- err
				return
			}
			if res.Code != 400+int(sid) || res.Text != fmt.Sprintf("%016x", sid) {
				errs <- fmt.Errorf("session %d got %+v", sid, res)
			}
		}(uint64(i))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestFilterHangs(t *testing.T) {
	o := testOptions()
	o.Timeout = 200 * time.Millisecond
	c, _, err := startFake(t, o, []string{"register|filter|smtp-in|helo", "register|ready"}, func(*fake, string) {})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = c.Filter(context.Background(), stamp, "helo", 7, "example.org")
	took := time.Since(start)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, ErrBroken) {
		t.Fatalf("Filter = %v; want ErrTimeout", err)
	}
	if took < o.Timeout || took > o.Timeout+time.Second {
		t.Errorf("gave up after %v, timeout %v", took, o.Timeout)
	}
	waitBroken(t, c)
	if !errors.Is(c.Err(), ErrTimeout) {
		t.Errorf("Err() = %v", c.Err())
	}
	t.Log(err)
}

// A filter that stops reading blocks our writes: the watchdog breaks
// the Conn rather than leave Report stuck.
func TestFilterStopsReading(t *testing.T) {
	o := testOptions()
	o.Timeout = 200 * time.Millisecond
	block := make(chan struct{})
	c, _, err := startFake(t, o, []string{"register|report|smtp-in|protocol-client", "register|ready"}, func(*fake, string) { <-block })
	defer close(block)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < 3 && err == nil; i++ {
		err = c.Report(stamp, "protocol-client", 1, "NOOP")
	}
	if !errors.Is(err, ErrTimeout) || time.Since(start) > 2*time.Second {
		t.Fatalf("Report = %v after %v; want ErrTimeout", err, time.Since(start))
	}
}

func TestGarbageWakesWaiters(t *testing.T) {
	const n = 8
	var mu sync.Mutex
	seen := 0
	c, _ := mustStart(t, []string{"register|filter|smtp-in|ehlo"}, func(f *fake, line string) {
		mu.Lock()
		defer mu.Unlock()
		if seen++; seen == n {
			f.send("this is not the protocol")
		}
	})
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(sid uint64) {
			defer wg.Done()
			if _, err := c.Filter(context.Background(), stamp, "ehlo", sid, "example.org"); !errors.Is(err, ErrBroken) || errors.Is(err, ErrTimeout) {
				t.Errorf("session %d: %v", sid, err)
			}
		}(uint64(i + 1))
	}
	wg.Wait()
	if took := time.Since(start); took > time.Second {
		t.Errorf("waiters woke after %v", took)
	}
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), `"this is not the protocol"`) {
		t.Errorf("Err() = %v, want the line quoted", err)
	}
}

func TestLongLine(t *testing.T) {
	c, f := mustStart(t, nil, nil)
	go f.send(strings.Repeat("x", 2*maxLine))
	waitBroken(t, c)
	if err := c.Err(); !errors.Is(err, ErrBroken) || !strings.Contains(err.Error(), "longer than") || len(err.Error()) > 1000 {
		t.Errorf("Err() = %.300v", err)
	}
}

func TestEOFBreaks(t *testing.T) {
	c, f := mustStart(t, []string{"register|filter|smtp-in|helo"}, nil)
	done := make(chan error)
	go func() {
		_, err := c.Filter(context.Background(), stamp, "helo", 1, "example.org")
		done <- err
	}()
	f.next()
	f.closer()
	if err := <-done; !errors.Is(err, ErrBroken) {
		t.Errorf("Filter = %v", err)
	}
	waitBroken(t, c)
}

// A caller that gives up leaves its request pending: the late answer is
// dropped quietly and the Conn goes on.
func TestFilterCancel(t *testing.T) {
	c, f := mustStart(t, []string{"register|filter|smtp-in|helo"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := c.Filter(ctx, stamp, "helo", 1, "example.org")
		done <- err
	}()
	req := f.next()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || errors.Is(err, ErrBroken) {
		t.Fatalf("Filter = %v, want Canceled", err)
	}
	f.send(answer(req, "proceed"))
	go func() {
		res, err := c.Filter(context.Background(), stamp, "helo", 2, "example.org")
		if err == nil && res.Action != Reject {
			err = fmt.Errorf("got %+v", res)
		}
		done <- err
	}()
	f.send(answer(f.next(), "reject|550 no"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

func TestReport(t *testing.T) {
	c, f := mustStart(t, []string{"register|report|smtp-in|link-connect", "register|report|smtp-in|link-disconnect",
		"register|report|smtp-in|protocol-client", "register|report|smtp-in|tx-mail"}, nil)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Report(stamp, "link-connect", 0xabc, "mail.example.org", "pass", "192.0.2.1:4321", "192.0.2.2:25"))
	if got, want := f.next(), "report|0.7|1700000000.012345|smtp-in|link-connect|0000000000000abc|mail.example.org|pass|192.0.2.1:4321|192.0.2.2:25"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	// not registered: nothing
	must(c.Report(stamp, "tx-begin", 0xabc, "0badcafe"))
	must(c.Report(stamp, "link-auth", 0xabc, "pass", "user"))
	f.nothing()
	// no parameter, no trailing "|"
	must(c.Report(stamp, "link-disconnect", 0xabc))
	if got, want := f.next(), "report|0.7|1700000000.012345|smtp-in|link-disconnect|0000000000000abc"; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	// "|" is fine in the last parameter; CR, LF and NUL are not
	must(c.Report(stamp, "protocol-client", 1, "MAIL FROM:<a|b@example.org>\r\nreport|0.7|1|smtp-in|link-disconnect|1\x00"))
	if got, want := f.next(), "report|0.7|1700000000.012345|smtp-in|protocol-client|0000000000000001|MAIL FROM:<a|b@example.org>  report|0.7|1|smtp-in|link-disconnect|1 "; got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	for _, tc := range []struct {
		event  string
		params []string
	}{
		{"link-connect", []string{"a", "b", "c"}},
		{"link-connect", []string{"rdns|x", "pass", "192.0.2.1:1", "192.0.2.2:25"}},
		{"tx-mail", []string{"0badcafe", "ok|x", "a@example.org"}},
		{"link-disconnect", []string{"x"}},
		{"link-up", nil},
	} {
		if err := c.Report(stamp, tc.event, 1, tc.params...); err == nil || errors.Is(err, ErrBroken) {
			t.Errorf("Report(%s, %q) = %v, want a caller error", tc.event, tc.params, err)
		}
	}
	f.nothing()
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

func TestReportNow(t *testing.T) {
	o := testOptions()
	o.Now = func() time.Time { return time.Unix(42, 7000) }
	c, f, err := startFake(t, o, []string{"register|report|smtp-in|timeout", "register|ready"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Report(time.Time{}, "timeout", 5); err != nil {
		t.Fatal(err)
	}
	if got, want := f.next(), "report|0.7|42.000007|smtp-in|timeout|0000000000000005"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestOnReport(t *testing.T) {
	c, f := mustStart(t, nil, nil)
	got := make(chan string, 4)
	c.OnReport(func(sid uint64, text string) { got <- fmt.Sprintf("%x %s", sid, text) })
	f.send("report|1700000000.000001|smtp-in|00000000000000a1|score=3|more",
		"report|1700000000.000002|smtp-in|b2|")
	for _, want := range []string{"a1 score=3|more", "b2 "} {
		select {
		case g := <-got:
			if g != want {
				t.Errorf("report %q, want %q", g, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no report")
		}
	}
	// a malformed report breaks, as in lka_report_proc
	f.send("report|1700000000.1|smtp-in|a1|short usec")
	waitBroken(t, c)
}
