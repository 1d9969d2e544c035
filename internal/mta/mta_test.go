package mta

import (
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/privsep"
	"smtpd/proto"
)

// TestNextWakes: a session waiting for a task wakes when one comes, not
// at the next tick of a poll, and gives up after Keepalive otherwise.
func TestNextWakes(t *testing.T) {
	m := &MTA{}
	r := &relay{more: make(chan struct{})}
	want := &task{msgid: 7}
	go func() {
		time.Sleep(50 * time.Millisecond)
		m.mu.Lock()
		r.add(want)
		m.mu.Unlock()
	}()
	start := time.Now()
	if got := m.next(r, true); got != want {
		t.Fatalf("got %v", got)
	}
	if d := time.Since(start); d > Keepalive/2 {
		t.Errorf("woke after %v", d)
	}
	if got := m.next(r, false); got != nil {
		t.Errorf("a task from nowhere: %v", got)
	}
}

// fakeLookup answers MTACredentialsQuery in place of lookup, counting
// the questions.
type fakeLookup struct {
	mu     sync.Mutex
	asked  int
	answer proto.LookupCredentials
	reqs   *proto.Requests
}

func newMTAWithLookup(answer proto.LookupCredentials) (*MTA, *fakeLookup) {
	l := &fakeLookup{answer: answer}
	l.reqs = proto.NewRequests(func(_ *proto.Channel, m proto.Message, id uint32) error {
		q := m.(*proto.MTACredentialsQuery)
		l.mu.Lock()
		l.asked++
		a := l.answer
		l.mu.Unlock()
		if q.Table != 3 || q.Label != "isp" {
			a = proto.LookupCredentials{Outcome: proto.Outcome{Status: proto.StatusPermfail}}
		}
		go l.reqs.Deliver(&proto.Frame{Header: proto.Header{PeerID: id}, Msg: &a})
		return nil
	})
	return &MTA{child: &privsep.Child{}, reqs: l.reqs, relays: map[string]*relay{}}, l
}

func (l *fakeLookup) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.asked
}

// TestCredentials: lookup is asked once per relay, its answer kept
// until the tables are reloaded; no entry and lookup's temporary
// failure both defer the mail, and only the latter is asked again.
func TestCredentials(t *testing.T) {
	u, _ := url.Parse("smtp+tls://isp@smarthost.test:587")
	newRelay := func() *relay {
		return &relay{url: u, action: &config.Action{Credentials: &config.Table{ID: 3, Name: "secrets"}}, more: make(chan struct{})}
	}
	m, l := newMTAWithLookup(proto.LookupCredentials{Outcome: proto.Outcome{Status: proto.StatusOK}, User: "alice", Password: "s3cret"})
	r := newRelay()
	m.relays["url:smarthost"] = r
	for range 3 {
		a, err := m.credentials(r)
		if err != nil || a.User != "alice" || a.Password != "s3cret" {
			t.Fatalf("%+v %v", a, err)
		}
	}
	if n := l.count(); n != 1 {
		t.Errorf("lookup asked %d times for one relay", n)
	}
	if err := m.handle(nil, &proto.Frame{Msg: &proto.LookupTablesReloaded{}}); err != nil {
		t.Fatal(err)
	}
	if r.creds != nil {
		t.Error("credentials kept after a reload")
	}
	l.answer.Password = "n3w"
	if a, err := m.credentials(r); err != nil || a.Password != "n3w" || l.count() != 2 {
		t.Errorf("after a reload: %+v %v, %d questions", a, err, l.count())
	}

	for _, c := range []struct {
		answer proto.LookupCredentials
		text   string
		asks   int
	}{
		{proto.LookupCredentials{Outcome: proto.Outcome{Status: proto.StatusPermfail, Text: "no such entry"}}, `451 4.7.8 no credentials "isp" in table secrets`, 1},
		{proto.LookupCredentials{Outcome: proto.Outcome{Status: proto.StatusTempfail, Text: "table unreadable"}}, `451 4.7.0 credentials "isp" in table secrets: table unreadable`, 2},
	} {
		m, l := newMTAWithLookup(c.answer)
		r := newRelay()
		for range 2 {
			_, err := m.credentials(r)
			if r := outcome("", err); r.Status != proto.StatusTempfail || r.Text != c.text {
				t.Errorf("%v: %v %q", c.answer.Status, r.Status, r.Text)
			}
		}
		if l.count() != c.asks {
			t.Errorf("%v: asked %d times, want %d", c.answer.Status, l.count(), c.asks)
		}
		if strings.Contains(c.text, "s3cret") {
			t.Error("secret in a failure text")
		}
	}
}
