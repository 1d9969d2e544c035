package queue

import (
	"bytes"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/internal/logging"
	"smtpd/internal/stats"
	"smtpd/proto"
)

// schedWorld is a scheduler on a store whose deliveries are recorded,
// not made, with its counters.
type schedWorld struct {
	s       *Scheduler
	store   *Store
	stop    chan struct{}
	flushed chan struct{}

	mu        sync.Mutex
	delivered []uint64
	delays    []uint64
	permfails []string
	counts    map[string]int64
}

func newSchedWorld(t *testing.T) *schedWorld {
	t.Helper()
	w := &schedWorld{store: newTestStore(t), stop: make(chan struct{}), flushed: make(chan struct{}), counts: map[string]int64{}}
	st := stats.NewSender(func(u *proto.StatUpdate) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, c := range u.Changes {
			switch c.Op {
			case proto.StatIncrement:
				w.counts[c.Key] += c.Value
			case proto.StatDecrement:
				w.counts[c.Key] -= c.Value
			case proto.StatSet:
				w.counts[c.Key] = c.Value
			}
		}
		return nil
	})
	go func() {
		st.Run(w.stop)
		close(w.flushed)
	}()
	limits := config.DefaultLimits()
	w.s = NewScheduler(w.store, limits, st, func(e *envelope.Envelope, _ *os.File) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.delivered = append(w.delivered, e.ID)
		return nil
	}, logging.NewWriter("queue", io.Discard, false))
	w.s.OnDelay = func(e *envelope.Envelope, _ string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.delays = append(w.delays, e.ID)
	}
	w.s.OnPermfail = func(e *envelope.Envelope, reason string) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.permfails = append(w.permfails, reason)
		return nil
	}
	return w
}

// deliveries returns how many deliveries were started so far.
func (w *schedWorld) deliveries() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.delivered)
}

// stat returns a counter once every change was sent.
func (w *schedWorld) stat(key string) int64 {
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

// TestSchedulerDeferred: a deferred delivery is no failure: the
// envelope keeps its retries, last try and error, gets no delay
// warning, is not written again, waits until the time given, is
// listed as deferred and counted; one deferred past its expiry expires
// then.
func TestSchedulerDeferred(t *testing.T) {
	w := newSchedWorld(t)
	_, envs := commitOne(t, w.store, "a@example.org")
	e := envs[0]
	// created long ago: a temporary failure would warn the sender
	e.Expire = time.Now().Add(time.Hour)
	w.s.Add(e, true)
	w.s.dispatch()
	if w.deliveries() != 1 {
		t.Fatalf("%d deliveries started, want 1", w.deliveries())
	}
	path := w.store.envelopePath(e.ID)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	retry := time.Now().Add(10 * time.Minute)
	w.s.Result(proto.DeliveryResult{EvpID: e.ID, Status: proto.StatusDeferred, Text: "451 4.4.5 rate limit for domain example.org (30/m): its turn is 10m0s away", Retry: retry})
	if e.Retries != 0 || !e.LastTry.IsZero() || e.LastError != "" || e.Warned {
		t.Errorf("deferred envelope changed: retries %d, last try %v, error %q, warned %v", e.Retries, e.LastTry, e.LastError, e.Warned)
	}
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
		t.Errorf("envelope file after the deferral: %q, %v; want it as it was", after, err)
	}
	if fi2, err := os.Stat(path); err != nil || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Errorf("envelope file written again (%v)", err)
	}
	if wait := w.s.dispatch(); wait < 9*time.Minute || wait > 10*time.Minute {
		t.Errorf("next dispatch in %v, want at the deferral's time, 10m", wait)
	}
	if w.deliveries() != 1 {
		t.Errorf("deferred envelope delivered before its time")
	}
	lines := w.s.Lines("all")
	want := "|mda|deferred until " + retry.Format(time.DateTime) + "|"
	if len(lines) != 1 || !strings.Contains(lines[0], want) {
		t.Errorf("show queue: %q, want a line with %q", lines, want)
	}

	// due again, it is tried; a temporary failure then counts
	if n := w.s.Schedule("all"); n != 1 {
		t.Fatalf("scheduled %d", n)
	}
	w.s.dispatch()
	if w.deliveries() != 2 {
		t.Fatalf("%d deliveries started, want 2", w.deliveries())
	}
	if lines := w.s.Lines("all"); len(lines) != 1 || !strings.Contains(lines[0], "|mda|inflight|") {
		t.Errorf("show queue: %q, want the envelope in flight", lines)
	}
	w.s.Result(proto.DeliveryResult{EvpID: e.ID, Status: proto.StatusTempfail, Text: "451 4.2.0 mailbox busy"})
	if e.Retries != 1 || e.LastError != "451 4.2.0 mailbox busy" || !e.Warned {
		t.Errorf("after a temporary failure: retries %d, error %q, warned %v", e.Retries, e.LastError, e.Warned)
	}
	if lines := w.s.Lines("all"); len(lines) != 1 || !strings.Contains(lines[0], "|mda|pending|") {
		t.Errorf("show queue: %q, want the envelope pending", lines)
	}

	// deferred past its expiry, it is due at its expiry and expires
	w.s.Schedule("all")
	w.s.dispatch()
	e.Expire = time.Now().Add(50 * time.Millisecond)
	w.s.Result(proto.DeliveryResult{EvpID: e.ID, Status: proto.StatusDeferred, Text: "451 4.4.5 rate limit", Retry: time.Now().Add(time.Hour)})
	if wait := w.s.dispatch(); wait > 50*time.Millisecond {
		t.Errorf("next dispatch in %v, want at the expiry", wait)
	}
	time.Sleep(60 * time.Millisecond)
	w.s.dispatch()
	deadline := time.Now().Add(5 * time.Second)
	for w.s.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	w.mu.Lock()
	permfails, delays := w.permfails, len(w.delays)
	w.mu.Unlock()
	if w.s.Len() != 0 || len(permfails) != 1 || !strings.HasPrefix(permfails[0], "message expired") {
		t.Errorf("%d envelopes left, notices %q; want it expired", w.s.Len(), permfails)
	}
	if w.deliveries() != 3 {
		t.Errorf("%d deliveries started, want 3: none after the expiry", w.deliveries())
	}
	if delays != 1 {
		t.Errorf("%d delay warnings, want 1, for the temporary failure", delays)
	}
	for key, want := range map[string]int64{
		"scheduler.delivery.deferred": 2, "scheduler.delivery.tempfail": 1,
		"scheduler.envelope.expired": 1, "scheduler.envelope": 0,
	} {
		if got := w.stat(key); got != want {
			t.Errorf("%s = %d, want %d", key, got, want)
		}
	}
}

// TestScheduleDomain: ETRN's scheduling (RFC 1985 §5) makes due the
// waiting relayed envelopes of the domain, ignoring case, and with
// subdomains those below it; not local ones, nor envelopes in flight or
// paused, nor a domain that merely ends like it. It is Schedule's code
// path, and counts envelopes and messages.
func TestScheduleDomain(t *testing.T) {
	w := newSchedWorld(t)
	kinds := map[string]envelope.Kind{}
	add := func(kind envelope.Kind, rcpts ...string) []*envelope.Envelope {
		t.Helper()
		_, envs := commitOne(t, w.store, rcpts...)
		for _, e := range envs {
			e.Kind = kind
			// failed once just now: due only in retry_base, an hour
			e.Retries, e.LastTry = 1, time.Now()
			kinds[e.Dest] = kind
			w.s.Add(e, true)
		}
		return envs
	}
	w.s.limits.RetryBase = time.Hour
	m1 := add(envelope.MTA, "a@backup.test", "b@Backup.TEST", "c@other.test")
	m2 := add(envelope.MTA, "d@sub.backup.test", "e@notbackup.test")
	local := add(envelope.MDA, "f@backup.test")
	inflight := add(envelope.MTA, "g@backup.test")
	paused := add(envelope.MTA, "h@backup.test")
	if wait := w.s.dispatch(); wait < 59*time.Minute {
		t.Fatalf("next dispatch in %v: envelopes due too soon", wait)
	}
	// one in flight, one paused
	w.s.Schedule(envelope.FormatEvpID(inflight[0].ID))
	w.s.dispatch()
	if w.deliveries() != 1 {
		t.Fatalf("%d deliveries, want the one in flight", w.deliveries())
	}
	if n := w.s.Pause(envelope.FormatEvpID(paused[0].ID)); n != 1 {
		t.Fatalf("paused %d", n)
	}

	for _, tt := range []struct {
		domain     string
		subdomains bool
		envs, msgs int
	}{
		{"nosuch.test", false, 0, 0},
		{"test", false, 0, 0},
		{"ckup.test", true, 0, 0},
		{"backup.test", false, 2, 1},
		{"BACKUP.test", false, 2, 1},
		{"backup.test", true, 3, 2},
		{"test", true, 5, 2},
	} {
		if envs, msgs := w.s.ScheduleDomain(tt.domain, tt.subdomains); envs != tt.envs || msgs != tt.msgs {
			t.Errorf("ScheduleDomain(%q, %v) = %d envelopes, %d messages; want %d, %d", tt.domain, tt.subdomains, envs, msgs, tt.envs, tt.msgs)
		}
	}
	// the last made every relayed waiting envelope due: they go now,
	// the local one stays
	w.s.dispatch()
	w.mu.Lock()
	got := map[uint64]bool{}
	for _, id := range w.delivered {
		got[id] = true
	}
	w.mu.Unlock()
	for _, e := range append(append(append([]*envelope.Envelope{}, m1...), m2...), inflight...) {
		if !got[e.ID] {
			t.Errorf("%s (%s) not delivered", e.Dest, kinds[e.Dest])
		}
	}
	for _, e := range append(local, paused...) {
		if got[e.ID] {
			t.Errorf("%s delivered: local or paused", e.Dest)
		}
	}
	// the one in flight was not tried twice
	if w.deliveries() != 6 {
		t.Errorf("%d deliveries, want 6", w.deliveries())
	}
}

func TestInDomain(t *testing.T) {
	for _, tt := range []struct {
		addr, domain string
		subdomains   bool
		want         bool
	}{
		{"a@example.org", "example.org", false, true},
		{"a@EXAMPLE.org", "example.ORG", false, true},
		{"a@mx.example.org", "example.org", false, false},
		{"a@mx.example.org", "example.org", true, true},
		{"a@example.org", "example.org", true, true},
		{"a@badexample.org", "example.org", true, false},
		{"a@.example.org", "example.org", true, false},
		{"example.org", "example.org", false, false},
		{"a@example.org", "", true, false},
		{`"x@example.org"@other.test`, "example.org", true, false},
	} {
		if got := inDomain(tt.addr, tt.domain, tt.subdomains); got != tt.want {
			t.Errorf("inDomain(%q, %q, %v) = %v, want %v", tt.addr, tt.domain, tt.subdomains, got, tt.want)
		}
	}
}
