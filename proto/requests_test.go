package proto

import (
	"errors"
	"testing"
	"time"
)

// lookupPair returns two ends of a channel, smtp's and lookup's.
func lookupPair(t *testing.T) (smtp, lookup *Channel) {
	a, b, err := Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	smtp, err1 := NewChannel(a, ProcSMTP, ProcLookup)
	lookup, err2 := NewChannel(b, ProcLookup, ProcSMTP)
	a.Close()
	b.Close()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	t.Cleanup(func() { smtp.Close(); lookup.Close() })
	return smtp, lookup
}

func TestAskCollectsContinuedAnswers(t *testing.T) {
	smtp, lookup := lookupPair(t)
	reqs := NewRequests(nil)
	go func() {
		for {
			f, err := smtp.Recv()
			if err != nil {
				return
			}
			if !reqs.Deliver(f) {
				t.Errorf("answer %d not delivered", f.PeerID)
			}
		}
	}()
	go func() {
		f, err := lookup.Recv()
		if err != nil {
			return
		}
		for i := range 3 {
			lookup.Send(&LookupExpandResult{Status: StatusOK, Destinations: []Destination{{Dest: string(rune('a' + i))}}, More: i < 2}, f.PeerID)
		}
	}()
	frames, err := reqs.Ask(smtp, &SMTPExpandRcpt{Rcpt: "x@example.org"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(frames) != 3 {
		t.Fatalf("%d frames, want 3", len(frames))
	}
}

func TestAskTimeoutAndLateAnswer(t *testing.T) {
	smtp, lookup := lookupPair(t)
	reqs := NewRequests(nil)
	_, err := reqs.Ask(smtp, &SMTPAuthQuery{What: "password"}, 20*time.Millisecond)
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("err = %v, want ErrNoAnswer", err)
	}
	f, err := lookup.Recv()
	if err != nil {
		t.Fatal(err)
	}
	lookup.Send(&LookupAuthResult{Outcome: Outcome{Status: StatusOK}}, f.PeerID)
	late, err := smtp.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !reqs.Deliver(late) {
		t.Error("the late answer to an abandoned request was taken for one nobody asked")
	}
	if reqs.Deliver(late) {
		t.Error("a second answer to a request already answered was accepted")
	}
	late.PeerID = 999
	if reqs.Deliver(late) {
		t.Error("an answer to a request never made was accepted")
	}
}
