package queue

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"smtpd/internal/config"
	"smtpd/proto"
)

// overloadCheck is how often the queue compares its size and the
// spool's free space with the overload marks.
const overloadCheck = time.Second

// overloaded says why the queue should enter overload mode, or "".
func overloaded(o config.Overload, envelopes int, free int64) string {
	switch {
	case o.QueueHigh > 0 && envelopes > o.QueueHigh:
		return fmt.Sprintf("the queue holds %d envelopes, more than %d", envelopes, o.QueueHigh)
	case o.SpoolFreeLow > 0 && free >= 0 && free < o.SpoolFreeLow:
		return fmt.Sprintf("the spool has %d bytes free, less than %d", free, o.SpoolFreeLow)
	}
	return ""
}

// relieved reports whether the queue may leave overload mode: both
// measures are back past their low marks (hysteresis, so that the mode
// does not flap at the mark).
func relieved(o config.Overload, envelopes int, free int64) bool {
	return (o.QueueHigh == 0 || envelopes <= o.QueueLow) &&
		(o.SpoolFreeLow == 0 || free < 0 || free >= o.SpoolFreeHigh)
}

// freeBytes is the space left to unprivileged writers on the spool's
// file system, or -1 if it cannot be told.
func (s *Store) freeBytes() int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(s.Root, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// watchOverload engages and leaves overload mode: while it is on, smtp
// refuses new mail from unauthenticated clients (qmail's overload
// idea: a queue that cannot drain should not grow).
func (q *Queue) watchOverload(o config.Overload) {
	on := false
	q.stats.Set("queue.overload", 0)
	for range time.Tick(overloadCheck) {
		n, free := q.sched.Len(), q.store.freeBytes()
		var m *proto.QueueOverload
		if !on {
			if why := overloaded(o, n, free); why != "" {
				m = &proto.QueueOverload{On: true, Reason: why}
			}
		} else if relieved(o, n, free) {
			m = &proto.QueueOverload{Reason: fmt.Sprintf("the queue holds %d envelopes, the spool has %d bytes free", n, free)}
		}
		if m == nil {
			continue
		}
		on = m.On
		if on {
			q.warnf("overload mode on: %s; unauthenticated clients are refused", m.Reason)
			q.stats.Set("queue.overload", 1)
		} else {
			q.logf("overload mode off: %s", m.Reason)
			q.stats.Set("queue.overload", 0)
		}
		for _, p := range []proto.Proc{proto.ProcSMTP, proto.ProcControl} {
			if ch := q.child.Peers[p]; ch != nil {
				q.fatalSend(ch, m, 0)
			}
		}
	}
}
