package queue

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"smtpd/internal/envelope"
	"smtpd/proto"
)

// TestFlush: Flush makes every envelope due but the paused ones and
// names the count of attempts each reaches once tried; Tries shows the
// counts grow as attempts end failed or put off, and delivered
// envelopes leave.
func TestFlush(t *testing.T) {
	w := newSchedWorld(t)
	w.s.limits.RetryBase = time.Hour
	_, envs := commitOne(t, w.store, "a@example.org", "b@example.org", "c@example.org", "d@example.org")
	for _, e := range envs {
		// failed once just now: due only in an hour
		e.Retries, e.LastTry = 1, time.Now()
		w.s.Add(e, true)
	}
	ids := make([]string, len(envs))
	for i, e := range envs {
		ids[i] = envelope.FormatEvpID(e.ID)
	}
	// d is in flight, c paused
	w.s.Schedule(ids[3])
	w.s.dispatch()
	w.s.Pause(ids[2])
	if w.deliveries() != 1 {
		t.Fatalf("%d deliveries", w.deliveries())
	}

	round := w.s.Flush()
	want := []string{ids[0] + " 1", ids[1] + " 1", ids[3] + " 1"}
	if !slices.Equal(round, want) {
		t.Fatalf("Flush: %q, want %q", round, want)
	}
	w.s.dispatch()
	if w.deliveries() != 3 {
		t.Fatalf("%d deliveries after the flush, want 3: d not twice, c not at all", w.deliveries())
	}
	// a delivered, b failed again, d put off
	w.s.Result(proto.DeliveryResult{EvpID: envs[0].ID, Status: proto.StatusOK})
	w.s.Result(proto.DeliveryResult{EvpID: envs[1].ID, Status: proto.StatusTempfail, Text: "external x: exited 75"})
	w.s.Result(proto.DeliveryResult{EvpID: envs[3].ID, Status: proto.StatusDeferred, Retry: time.Now().Add(time.Hour)})
	tries := w.s.Tries()
	want = []string{ids[1] + " 1", ids[2] + " 0", ids[3] + " 1"}
	if !slices.Equal(tries, want) {
		t.Errorf("Tries: %q, want %q", tries, want)
	}
	// the next round counts on from there
	w.s.Resume(ids[2])
	round = w.s.Flush()
	want = []string{ids[1] + " 2", ids[2] + " 1", ids[3] + " 2"}
	if !slices.Equal(round, want) {
		t.Errorf("second Flush: %q, want %q", round, want)
	}
	// a kind paused is left out
	w.s.dispatch()
	for _, e := range envs[1:] {
		w.s.Result(proto.DeliveryResult{EvpID: e.ID, Status: proto.StatusTempfail, Text: "again"})
	}
	w.s.Pause(string(envelope.MDA))
	if round := w.s.Flush(); len(round) != 0 {
		t.Errorf("Flush with local deliveries paused: %q", round)
	}
	if got := fmt.Sprint(w.s.Tries()); got != fmt.Sprint([]string{ids[1] + " 2", ids[2] + " 1", ids[3] + " 2"}) {
		t.Errorf("Tries: %s", got)
	}
}
