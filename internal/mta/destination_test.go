package mta

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/internal/logging"
	"smtpd/internal/privsep"
	"smtpd/internal/stats"
	"smtpd/proto"
)

// paceServer is a go-smtp server that records when each message
// arrived, and when each session carried mail: from its first MAIL to
// the end of its last message. Each message takes it hold to be
// received, so that sessions overlap.
type paceServer struct {
	port int
	hold time.Duration

	mu       sync.Mutex
	arrivals map[string][]time.Time // by recipient domain
	spans    []*span
}

// span is the time a session carried mail.
type span struct{ first, last time.Time }

type paceSession struct {
	s    *paceServer
	span *span
}

func (ps *paceSession) Mail(string, *smtp.MailOptions) error {
	ps.s.mu.Lock()
	defer ps.s.mu.Unlock()
	if ps.span == nil {
		ps.span = &span{first: time.Now()}
		ps.s.spans = append(ps.s.spans, ps.span)
	}
	return nil
}

func (ps *paceSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ps *paceSession) Reset()                               {}
func (ps *paceSession) Logout() error                        { return nil }

func (ps *paceSession) Data(r io.Reader) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	time.Sleep(ps.s.hold)
	_, dom, _ := strings.Cut(strings.TrimSpace(string(body)), "@")
	ps.s.mu.Lock()
	ps.span.last = time.Now()
	ps.s.arrivals[dom] = append(ps.s.arrivals[dom], ps.span.last)
	ps.s.mu.Unlock()
	return nil
}

// mostAtOnce is the most sessions that carried mail at the same time.
func (s *paceServer) mostAtOnce() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	most := 0
	for _, a := range s.spans {
		n := 0
		for _, b := range s.spans {
			if !b.first.After(a.first) && !b.last.Before(a.first) {
				n++ // b was carrying mail when a started
			}
		}
		most = max(most, n)
	}
	return most
}

func startPaceServer(t *testing.T, hold time.Duration) *paceServer {
	t.Helper()
	s := &paceServer{hold: hold, arrivals: map[string][]time.Time{}}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &paceSession{s: s}, nil
	}))
	srv.Domain = "mx.dest.test"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *paceServer) times(dom string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.arrivals[dom]...)
}

// paceWorld is an mta on a configuration, with lookup answering that
// every domain and smarthost is at 127.0.0.1, and queue's end of the
// channel collecting the results.
type paceWorld struct {
	m       *MTA
	results chan proto.DeliveryResult
	stop    chan struct{}
	flushed chan struct{}

	mu     sync.Mutex
	counts map[string]int64
	// requeue hands deferred envelopes back to mta at their time, as
	// the queue does, instead of passing their results on.
	requeue bool
	// deferrals are the deferred results, in order.
	deferrals []proto.DeliveryResult
	// sent are the envelopes sent, with their bodies' paths, by id.
	sent map[uint64]sentEnvelope
}

type sentEnvelope struct {
	e    *envelope.Envelope
	path string
}

func newPaceWorld(t *testing.T, conf string, port int) *paceWorld {
	t.Helper()
	cfg, err := config.Parse([]byte(fmt.Sprintf("hostname = \"out.test\"\nmx_port = %d\n%s", port, conf)), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	a, b, err := proto.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	toQueue, err := proto.NewChannel(a, proto.ProcMTA, proto.ProcQueue)
	a.Close()
	if err != nil {
		t.Fatal(err)
	}
	queue, err := proto.NewChannel(b, proto.ProcQueue, proto.ProcMTA)
	b.Close()
	if err != nil {
		t.Fatal(err)
	}
	w := &paceWorld{results: make(chan proto.DeliveryResult, 1000), stop: make(chan struct{}), flushed: make(chan struct{}), counts: map[string]int64{}, sent: map[uint64]sentEnvelope{}}
	go func() {
		for {
			f, err := queue.Recv()
			if err != nil {
				return
			}
			r := f.Msg.(*proto.MTADeliveryResult).DeliveryResult
			if r.Status == proto.StatusDeferred {
				w.mu.Lock()
				w.deferrals = append(w.deferrals, r)
				requeue := w.requeue
				w.mu.Unlock()
				if requeue {
					time.AfterFunc(time.Until(r.Retry), func() { w.resend(r.EvpID) })
					continue
				}
			}
			w.results <- r
		}
	}()
	var reqs *proto.Requests
	reqs = proto.NewRequests(func(_ *proto.Channel, msg proto.Message, id uint32) error {
		var answer proto.Message
		switch q := msg.(type) {
		case *proto.MTAResolveMX:
			answer = &proto.LookupMXResult{Outcome: proto.Outcome{Status: proto.StatusOK}, MXs: []proto.MXHost{{Preference: 10, Host: "mx." + q.Domain, Addrs: []string{"127.0.0.1"}}}}
		case *proto.MTAResolvePTR:
			answer = &proto.LookupPTRResult{Name: "localhost"}
		default:
			return fmt.Errorf("unexpected %s", msg.Type())
		}
		go reqs.Deliver(&proto.Frame{Header: proto.Header{PeerID: id}, Msg: answer})
		return nil
	})
	child := &privsep.Child{
		Proc: proto.ProcMTA, Config: cfg, Log: logging.NewWriter("mta", io.Discard, false),
		Peers: map[proto.Proc]*proto.Channel{proto.ProcQueue: toQueue}, Requests: reqs,
	}
	w.m = New(child)
	w.m.stats = stats.NewSender(func(u *proto.StatUpdate) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, c := range u.Changes {
			w.counts[c.Key] += c.Value
		}
		return nil
	})
	go func() {
		w.m.stats.Run(w.stop)
		close(w.flushed)
	}()
	t.Cleanup(func() {
		toQueue.Close()
		queue.Close()
	})
	return w
}

// send hands mta one message per recipient, as the queue does.
func (w *paceWorld) send(t *testing.T, action string, rcpts ...string) {
	t.Helper()
	dir := t.TempDir()
	for i, rcpt := range rcpts {
		path := filepath.Join(dir, fmt.Sprint(i))
		// the body is the recipient, for the server to sort arrivals
		if err := os.WriteFile(path, []byte(rcpt+"\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		// ids go on across calls: one message each
		w.mu.Lock()
		e := &envelope.Envelope{ID: uint64(len(w.sent)+1)<<32 | 1, Kind: envelope.MTA, Action: action, Sender: "a@out.test", Dest: rcpt}
		w.sent[e.ID] = sentEnvelope{e, path}
		w.mu.Unlock()
		w.m.enqueue(e, f)
	}
}

// resend hands a deferred envelope to mta again; a failure to is its
// result.
func (w *paceWorld) resend(id uint64) {
	w.mu.Lock()
	s := w.sent[id]
	w.mu.Unlock()
	f, err := os.Open(s.path)
	if err != nil {
		w.results <- proto.DeliveryResult{EvpID: id, Status: proto.StatusTempfail, Text: "test: " + err.Error()}
		return
	}
	w.m.enqueue(s.e, f)
}

// setRequeue makes deferred envelopes come back as the queue would
// send them, at their time (paceWorld.requeue).
func (w *paceWorld) setRequeue() {
	w.mu.Lock()
	w.requeue = true
	w.mu.Unlock()
}

// deferred returns the deferred results so far.
func (w *paceWorld) deferred() []proto.DeliveryResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]proto.DeliveryResult(nil), w.deferrals...)
}

// wait collects n results, by outcome text.
func (w *paceWorld) wait(t *testing.T, n int, timeout time.Duration) (ok int, failed []string) {
	t.Helper()
	deadline := time.After(timeout)
	for range n {
		select {
		case r := <-w.results:
			if r.Status == proto.StatusOK {
				ok++
			} else {
				failed = append(failed, fmt.Sprintf("%v %s", r.Status, r.Text))
			}
		case <-deadline:
			t.Fatalf("%d results of %d after %v", ok+len(failed), n, timeout)
		}
	}
	return ok, failed
}

// stat returns a counter once every change was sent.
func (w *paceWorld) stat(key string) int64 {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.flushed
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.counts[key]
}

const paceRelays = `
action "out"   { relay = "mx" }
action "out2"  { relay = "mx" }
action "smart" { relay = "smtp://smart.test:%d" }
match {
  from   = "any"
  for    = "any"
  action = action.out
}
`

func rcpts(n int, domain string) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("u%d@%s", i, domain))
	}
	return out
}

// TestDestinationFor: a relay by MX has the limits of its recipient
// domain, its own block or else "*"; a smarthost only those of a block
// naming it.
func TestDestinationFor(t *testing.T) {
	cfg, err := config.Parse([]byte(`
hostname = "out.test"
destination "big.test"   { sessions = 2 }
destination "smart.test" { message_rate = "5/s" }
destination "*"          { message_rate = "600/m" }
`), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	m := &MTA{cfg: cfg}
	for _, c := range []struct {
		name string
		mx   bool
		want string
	}{
		{"big.test", true, "big.test"},
		{"other.test", true, "*"},
		{"smart.test", false, "smart.test"},
		{"smart.test", true, "smart.test"},
		{"relay.isp.test", false, ""},
	} {
		d := m.destination(c.name, c.mx)
		got := ""
		if d.limits != nil {
			got = d.limits.Domain
		}
		if got != c.want {
			t.Errorf("%s (mx %v): limits of %q, want %q", c.name, c.mx, got, c.want)
		}
		if again := m.destination(c.name, c.mx); again != d {
			t.Errorf("%s: a second state", c.name)
		}
	}
	if m.destination("smart.test", true) == m.destination("smart.test", false) {
		t.Error("a domain and a smarthost of the same name share their state")
	}
}

// TestPaced: messages to a domain with a message rate go at its pace,
// one session at a time, none failing: those beyond the turns mta
// waits for come back when the queue sends them again at their turns.
// Another domain is not held up.
func TestPaced(t *testing.T) {
	s := startPaceServer(t, 0)
	w := newPaceWorld(t, fmt.Sprintf(paceRelays, s.port)+`
destination "dest.test" {
  sessions     = 1
  message_rate = "20/s"
}
`, s.port)
	const n = 12
	w.setRequeue()
	start := time.Now()
	w.send(t, "out", rcpts(n, "dest.test")...)
	w.send(t, "out", rcpts(n, "free.test")...)
	ok, failed := w.wait(t, 2*n, 10*time.Second)
	if ok != 2*n {
		t.Fatalf("%d delivered, failures: %q", ok, failed)
	}
	paced := s.times("dest.test")
	for i := 1; i < len(paced); i++ {
		// 50 ms apart, less the jitter of the sessions' wake-ups
		if d := paced[i].Sub(paced[i-1]); d < 35*time.Millisecond {
			t.Errorf("messages %d and %d arrived %v apart, want 50ms", i-1, i, d)
		}
	}
	if d := paced[n-1].Sub(start); d < time.Duration(n-1)*50*time.Millisecond {
		t.Errorf("%d messages at 20/s in %v", n, d)
	}
	free := s.times("free.test")
	if d := free[n-1].Sub(start); d > paced[n-1].Sub(start) {
		t.Errorf("the domain without limits took %v, the paced one %v", d, paced[n-1].Sub(start))
	}
	// the first goes at once, the next paceWaiting-1 wait in mta, the
	// others come back at their turns and go at once; fewer if the
	// machine is slow enough that turns pass while they are sent
	throttled, deferred := w.stat("mta.throttled"), w.stat("mta.throttled.deferred")
	if throttled < 1 || throttled > paceWaiting-1 || deferred < 1 || throttled+deferred > n-1 {
		t.Errorf("mta.throttled = %d, mta.throttled.deferred = %d; want %d and %d", throttled, deferred, paceWaiting-1, n-paceWaiting)
	}
	t.Logf("paced: %v for %d; free: %v", paced[n-1].Sub(start).Round(time.Millisecond), n, free[n-1].Sub(start).Round(time.Millisecond))
}

// TestWaitTurn: tasks held up past their turns do not then go in a
// burst: each goes an interval of the rate after the one before.
func TestWaitTurn(t *testing.T) {
	d := &destination{limits: &config.Destination{MessageRate: config.Rate{Events: 20, Per: time.Second}}}
	m := &MTA{}
	past := time.Now().Add(-time.Second)
	var at []time.Time
	for range 4 {
		m.waitTurn(d, &task{due: past})
		at = append(at, time.Now())
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 45*time.Millisecond {
			t.Errorf("task %d went %v after the one before, want 50ms", i, gap)
		}
	}
	// a destination without a rate does not wait
	start := time.Now()
	for range 100 {
		m.waitTurn(&destination{limits: &config.Destination{Sessions: 1}}, &task{})
	}
	if d := time.Since(start); d > 10*time.Millisecond {
		t.Errorf("unpaced turns took %v", d)
	}
}

// TestPaceDeferred: a message whose turn is further than mta waits goes
// back to the queue deferred to its turn, with a text that says why;
// each takes the turn after the one before.
func TestPaceDeferred(t *testing.T) {
	s := startPaceServer(t, 0)
	for _, c := range []struct {
		name, conf, action, domain string
		ok                         int
		why                        string
		rate                       time.Duration // between turns
	}{
		{"domain", `destination "dest.test" { message_rate = "1/m" }`, "out", "dest.test", 1, "rate limit for domain dest.test (1/m)", time.Minute},
		{"default", `destination "*" { message_rate = "1/m" }`, "out", "any.test", 1, "rate limit for domain any.test (1/m)", time.Minute},
		{"smarthost", `destination "smart.test" { message_rate = "1/h" }`, "smart", "dest.test", 1, "rate limit for relay host smart.test (1/h)", time.Hour},
		{"smarthost and *", `destination "*" { message_rate = "1/h" }`, "smart", "dest.test", 3, "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newPaceWorld(t, fmt.Sprintf(paceRelays, s.port)+c.conf, s.port)
			w.send(t, c.action, rcpts(3, c.domain)...)
			ok, failed := w.wait(t, 3, 10*time.Second)
			if ok != c.ok || len(failed) != 3-c.ok {
				t.Fatalf("%d delivered, failures %q; want %d delivered", ok, failed, c.ok)
			}
			for _, f := range failed {
				if !strings.HasPrefix(f, fmt.Sprintf("%v 451 4.4.5 %s: its turn is ", proto.StatusDeferred, c.why)) {
					t.Errorf("failure %q, want a deferral for %q", f, c.why)
				}
			}
			deferrals := w.deferred()
			for i, r := range deferrals {
				turn := c.rate * time.Duration(i+1)
				if wait := time.Until(r.Retry); wait > turn || wait < turn-5*time.Second {
					t.Errorf("deferral %d to %v from now, want %v", i, wait.Round(time.Second), turn)
				}
			}
			if got := w.stat("mta.throttled.deferred"); got != int64(3-c.ok) {
				t.Errorf("mta.throttled.deferred = %d, want %d", got, 3-c.ok)
			}
		})
	}
}

// TestPaceBacklog: a backlog far beyond the turns mta waits for drains
// at the rate, not at the queue's retry rhythm: the deferred messages
// come back one turn apart, each to its own turn, once, and go then.
func TestPaceBacklog(t *testing.T) {
	s := startPaceServer(t, 0)
	w := newPaceWorld(t, fmt.Sprintf(paceRelays, s.port)+`destination "dest.test" { message_rate = "20/s" }`, s.port)
	w.setRequeue()
	const n = 30
	const every = 50 * time.Millisecond
	start := time.Now()
	w.send(t, "out", rcpts(n, "dest.test")...)
	ok, failed := w.wait(t, n, 10*time.Second)
	if ok != n {
		t.Fatalf("%d delivered, failures: %q", ok, failed)
	}
	took := time.Since(start)
	if took < (n-2)*every || took > (n-1)*every+2*time.Second {
		t.Errorf("%d messages at 20/s took %v, want about %v", n, took, (n-1)*every)
	}
	deferrals := w.deferred()
	if len(deferrals) > n-paceWaiting || len(deferrals) < n/2 {
		t.Errorf("%d deferrals, want %d", len(deferrals), n-paceWaiting)
	}
	seen := map[uint64]bool{}
	for i, r := range deferrals {
		if seen[r.EvpID] {
			t.Errorf("envelope %x deferred twice", r.EvpID)
		}
		seen[r.EvpID] = true
		if i == 0 {
			if first := r.Retry.Sub(start); first < (paceWaiting-1)*every {
				t.Errorf("first deferral to %v after the start, within the turns mta waits for", first)
			}
			continue
		}
		if gap := r.Retry.Sub(deferrals[i-1].Retry); gap < every-10*time.Millisecond || gap > every+10*time.Millisecond {
			t.Errorf("deferrals %d and %d are %v apart, want %v", i-1, i, gap, every)
		}
	}
	paced := s.times("dest.test")
	for i := 1; i < len(paced); i++ {
		if d := paced[i].Sub(paced[i-1]); d < 35*time.Millisecond {
			t.Errorf("messages %d and %d arrived %v apart, want 50ms", i-1, i, d)
		}
	}
	if got := w.stat("mta.throttled.deferred"); got != int64(len(deferrals)) {
		t.Errorf("mta.throttled.deferred = %d, want %d", got, len(deferrals))
	}
	t.Logf("%d messages in %v, %d deferred once", n, took.Round(time.Millisecond), len(deferrals))
}

// TestTurnBooked: a deferred message keeps its turn: sent back before
// it, it is deferred to it again rather than to one after those taken
// since, and near it, it waits for it; a booking long past is
// forgotten.
func TestTurnBooked(t *testing.T) {
	m := &MTA{stats: stats.NewSender(func(*proto.StatUpdate) error { return nil })}
	d := &destination{key: "mx:dest.test", name: "dest.test", limits: &config.Destination{MessageRate: config.Rate{Events: 1, Per: time.Minute}}}
	retry := func(msgid uint32) time.Time {
		t.Helper()
		due, err := m.turn(d, msgid)
		if err == nil {
			t.Fatalf("message %d: due %v, want a deferral", msgid, due)
		}
		r := outcome("", err)
		if r.Status != proto.StatusDeferred {
			t.Fatalf("message %d: %v %s, want a deferral", msgid, r.Status, r.Text)
		}
		return r.Retry
	}
	if due, err := m.turn(d, 1); err != nil || !due.IsZero() {
		t.Fatalf("first message: due %v, %v; want at once", due, err)
	}
	start := time.Now()
	two, three := retry(2), retry(3)
	if at := two.Sub(start); at < 59*time.Second || at > time.Minute {
		t.Errorf("second message deferred to %v from now, want 1m", at)
	}
	if gap := three.Sub(two); gap < 59*time.Second || gap > 61*time.Second {
		t.Errorf("third message deferred %v after the second, want 1m", gap)
	}
	if again := retry(2); !again.Equal(two) {
		t.Errorf("second message back early: deferred to %v, want its turn %v", again, two)
	}
	near := time.Now().Add(100 * time.Millisecond)
	d.book(4, near)
	if due, err := m.turn(d, 4); err != nil || !due.Equal(near) {
		t.Errorf("message back near its turn: due %v, %v; want %v", due, err, near)
	}
	d.forget(two.Add(bookingGrace + time.Second))
	if _, ok := d.booked[2]; ok {
		t.Error("a booking long past is kept")
	}
	if _, ok := d.booked[3]; !ok || len(d.bookings) != 2 {
		t.Errorf("bookings %v after forgetting the second message's", d.bookings)
	}
}

// TestDestinationSessions: the sessions to a domain stay within its
// limit across relays (two actions) to it, and the relay the limit
// held back gets a session when one ends. Without the limit the same
// mail takes more, up to SessionsPerHost: the relays want six, and the
// one that finds the host busy leaves its tasks to the others rather
// than fail them.
func TestDestinationSessions(t *testing.T) {
	for _, c := range []struct {
		conf    string
		maxOpen int
	}{
		{`destination "dest.test" { sessions = 2 }`, 2},
		{`destination "*" { sessions = 1 }`, 1},
		{"", 0},
	} {
		s := startPaceServer(t, 5*time.Millisecond)
		w := newPaceWorld(t, fmt.Sprintf(paceRelays, s.port)+c.conf, s.port)
		const n = 60
		all := rcpts(n, "dest.test")
		w.send(t, "out", all[:n/2]...)
		w.send(t, "out2", all[n/2:]...)
		ok, failed := w.wait(t, n, 30*time.Second)
		if ok != n {
			t.Fatalf("%q: %d delivered, failures %q", c.conf, ok, failed)
		}
		got := s.mostAtOnce()
		switch {
		case c.maxOpen > 0 && got > c.maxOpen:
			t.Errorf("%q: %d sessions at once, want at most %d", c.conf, got, c.maxOpen)
		case c.maxOpen == 0 && got <= 2:
			t.Errorf("without a limit: %d sessions at once, want more than 2", got)
		}
		t.Logf("%q: at most %d sessions at once", c.conf, got)
	}
}
