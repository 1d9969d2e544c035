package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"smtpd/internal/enqueue"
	"smtpd/proto"
)

// Bounds of smtpctl flush.
const (
	// flushTimeout is how long flush waits without -t: long enough for
	// an external or two to time out (5 minutes each by default).
	flushTimeout = 15 * time.Minute
	// flushPoll is how often flush asks how far the round got.
	flushPoll = 200 * time.Millisecond
)

// flush is extsmail's batch mode: every queued envelope is tried once
// now, and flush waits until each has been (delivered, failed, or put
// off again) or the timeout (the argument of -t) passes. It then lists
// the envelopes left in the queue and exits 75 if there are any, 0 if
// the queue is empty: `smtpctl flush && suspend` on a laptop. How the
// round is followed: see internal/queue/flush.go.
func flush(env *cmdEnv, out io.Writer) error {
	timeout := flushTimeout
	if env.arg != "" {
		d, err := time.ParseDuration(env.arg)
		if err != nil || d <= 0 {
			return fmt.Errorf("flush: -t %q is not a duration such as 90s or 10m", env.arg)
		}
		timeout = d
	}
	deadline := time.Now().Add(timeout)
	round, err := queueCounts(env.socket, "flush")
	if err != nil {
		return err
	}
	total := len(round)
	for len(round) > 0 && time.Now().Before(deadline) {
		time.Sleep(flushPoll)
		tries, err := queueCounts(env.socket, "tries")
		if err != nil {
			return err
		}
		for id, want := range round {
			if n, queued := tries[id]; !queued || n >= want {
				delete(round, id)
			}
		}
	}
	var left []string
	err = request(env.socket, &proto.ControlQueue{QueueOp: proto.QueueOp{Op: "show", Target: "all"}}, func(m proto.Message) bool {
		t, ok := m.(*proto.ControlText)
		if ok {
			left = append(left, t.Lines...)
		}
		return ok && !t.Last
	})
	if err != nil {
		return err
	}
	for _, l := range left {
		fmt.Fprintln(out, l)
	}
	switch {
	case len(round) > 0:
		return &enqueue.Error{Status: enqueue.ExitTempFail, Err: fmt.Errorf("flush: %d of %d envelopes not tried after %v; %d envelopes queued", len(round), total, timeout, len(left))}
	case len(left) > 0:
		return &enqueue.Error{Status: enqueue.ExitTempFail, Err: fmt.Errorf("flush: %d envelopes tried, %d envelopes queued", total, len(left))}
	}
	return nil
}

// queueCounts asks queue for an "EVPID N" line per envelope (ops flush
// and tries) and returns them by envelope id.
func queueCounts(socket, op string) (map[string]int, error) {
	counts := map[string]int{}
	var bad error
	err := request(socket, &proto.ControlQueue{QueueOp: proto.QueueOp{Op: op, Target: "all"}}, func(m proto.Message) bool {
		t, ok := m.(*proto.ControlText)
		if !ok {
			return false
		}
		for _, l := range t.Lines {
			id, n, _ := strings.Cut(l, " ")
			v, err := strconv.Atoi(n)
			if err != nil {
				// a daemon without the op answers a line of text
				bad = fmt.Errorf("flush: queue answered %q", l)
				return false
			}
			counts[id] = v
		}
		return !t.Last
	})
	if err == nil {
		err = bad
	}
	return counts, err
}
