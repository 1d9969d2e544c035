package queue

import (
	"container/heap"
	"fmt"
	"sort"
	"time"

	"smtpd/internal/envelope"
)

// A flush (smtpctl flush) is extsmail's batch mode: every envelope is
// tried once now, and the client waits until each has been. The queue
// keeps no state for it: each entry counts its ended attempts, Flush
// answers the count each envelope will reach once the attempt it
// starts has ended, and the client polls Tries until every envelope
// reached its count or left the queue. A client that gives up leaves
// nothing behind, and flushes by several clients at once do not mix.

// Flush makes every queued envelope due now, as `schedule all` does,
// and returns for each one that is going to be tried a line "EVPID N":
// once its attempts (Tries) reach N, or it left the queue (delivered or
// failed for good), it has been tried in this round. An envelope in
// flight counts: the attempt under way is its try. Paused envelopes,
// singly or by kind, are not tried and are left out.
func (s *Scheduler) Flush() []string {
	s.mu.Lock()
	now := time.Now()
	var lines []string
	for id, en := range s.envs {
		switch {
		case en.paused, s.held[id] != nil, s.paused[en.env.Kind]:
			continue
		case en.index >= 0:
			en.next = now
			en.deferred = false
			heap.Fix(&s.waiting, en.index)
		case !en.inflight:
			continue
		}
		lines = append(lines, fmt.Sprintf("%s %d", envelope.FormatEvpID(id), en.attempts+1))
	}
	s.mu.Unlock()
	s.poke()
	sort.Strings(lines)
	return lines
}

// Tries returns a line "EVPID N" for each queued envelope: N is the
// number of its attempts that ended with the envelope kept, failed or
// put off, since the queue started.
func (s *Scheduler) Tries() []string {
	s.mu.Lock()
	lines := make([]string, 0, len(s.envs))
	for id, en := range s.envs {
		lines = append(lines, fmt.Sprintf("%s %d", envelope.FormatEvpID(id), en.attempts))
	}
	s.mu.Unlock()
	sort.Strings(lines)
	return lines
}
