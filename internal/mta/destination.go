package mta

import (
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"smtpd/internal/config"
	"smtpd/internal/throttle"
)

// Destination limits (config.Destination) bound the sessions to a domain
// and pace the messages sent to it, so that a burst to a large provider
// is spread out rather than refused, or taken for spam.
//
// The limits of a relay by MX are those of the recipient domain: its own
// destination block, else that of "*", each domain with counters of its
// own. A relay through a smarthost talks to the smarthost, not to the
// recipients' domains, and the smarthost paces its own deliveries: the
// limits that apply are those of a block naming the smarthost's host, and
// "*" does not, since it would bound everything the smarthost carries
// as if it were one domain.
//
// Sessions: a relay opens no session while its destination has
// Sessions open, across all relays (actions) to it; when one ends, the
// relays of the destination waiting for one get it in turn. This is on
// top of SessionsPerRelay and SessionsPerHost.
//
// Messages: each message (task, whatever its recipients) takes its
// turn from the destination's MessageRate when it reaches mta. The
// pace has no burst (throttle.NewPaced): the transactions start
// r.Every() apart, so that no span of the rate's period holds more than
// its allowance whenever the remote side starts counting; "30/m" is one
// message every 2 s, 30 in any minute. A message whose turn comes
// within maxPaceWait waits for it in mta (counted in mta.throttled);
// one whose turn is further away goes back to the queue at once as a
// temporary failure, "rate limit for domain X", which the scheduler
// retries (counted in mta.throttled.deferred).
//
// Why not wait for every turn: the queue hands mta at most
// queue.MaxInflight (32) envelopes at a time, for all deliveries, local
// ones too, and an envelope waiting in mta holds its slot. Waiting for
// the whole backlog of a slow destination would stop all other mail
// behind it; with the bound, its waiting messages hold at most
// maxPaceWait x rate slots, for at most maxPaceWait. The price is that a
// backlog much larger than that drains at the scheduler's retry rhythm
// (retry_base x n²) rather than at the rate: the queue would have to set
// such envelopes aside without counting a retry to do better.
const maxPaceWait = 30 * time.Second

// pacedKeys bounds the destinations whose turns are remembered for one
// destination block: "*" paces every domain. One forgotten starts again
// with a turn at once; its messages stay an interval apart (waitTurn).
const pacedKeys = 10_000

// destination is the state of the limits of one destination.
type destination struct {
	// key is "mx:" and the domain, or "host:" and the smarthost:
	// the same name reached both ways may have other limits.
	key  string
	name string
	// limits is nil when no block applies.
	limits   *config.Destination
	sessions int
	// last is when the latest message was let go, or will be (waitTurn).
	last time.Time
	// relays are the relays to the destination, to hand a session to
	// when one ends.
	relays []*relay
}

// destination returns the state of the destination of a relay by MX to
// domain name, or through the smarthost name; m.mu is held.
func (m *MTA) destination(name string, mx bool) *destination {
	key := "host:" + name
	if mx {
		key = "mx:" + name
	}
	if d := m.dests[key]; d != nil {
		return d
	}
	d := &destination{key: key, name: name}
	if m.cfg != nil {
		d.limits = m.cfg.DestinationFor(name)
		if d.limits != nil && !mx && d.limits.Domain == "*" {
			d.limits = nil
		}
	}
	if m.dests == nil {
		m.dests = map[string]*destination{}
	}
	m.dests[key] = d
	return d
}

// full reports whether the destination has all the sessions it may.
func (d *destination) full() bool {
	return d != nil && d.limits != nil && d.limits.Sessions > 0 && d.sessions >= d.limits.Sessions
}

// what names the destination in failure texts.
func (d *destination) what() string {
	if strings.HasPrefix(d.key, "mx:") {
		return "domain " + d.name
	}
	return "relay host " + d.name
}

// turn takes the next message's turn at the destination: it returns
// when the message may go, or a temporary failure if that is more than
// maxPaceWait away. The turn is taken when the message reaches mta, so
// that one too far away goes back at once, rather than after holding
// its delivery slot. m.mu is held.
func (m *MTA) turn(d *destination) (due time.Time, err error) {
	if d == nil || d.limits == nil || d.limits.MessageRate.IsZero() {
		return time.Time{}, nil
	}
	if m.paces == nil {
		m.paces = map[*config.Destination]*throttle.Keyed{}
	}
	k := m.paces[d.limits]
	if k == nil {
		k = throttle.NewPaced(d.limits.MessageRate, pacedKeys)
		m.paces[d.limits] = k
	}
	delay, ok := k.Reserve(d.key, maxPaceWait)
	if !ok {
		m.stats.Increment("mta.throttled.deferred", 1)
		return time.Time{}, tempfail(smtp.EnhancedCode{4, 4, 5}, nil, "rate limit for %s (%s): its turn is %v away, later than mta waits (%v)",
			d.what(), d.limits.MessageRate, delay.Round(time.Second), maxPaceWait)
	}
	if delay == 0 {
		return time.Time{}, nil
	}
	m.stats.Increment("mta.throttled", 1)
	return time.Now().Add(delay), nil
}

// yields reports whether an idle session of r should end so that
// another relay of its destination, which has tasks but no session
// because the destination has all it may, gets one; m.mu is held.
func (r *relay) yields() bool {
	if !r.dest.full() {
		return false
	}
	for _, o := range r.dest.relays {
		if o != r && o.sessions == 0 && len(o.tasks) > 0 {
			return true
		}
	}
	return false
}

// startSession counts a session of r starting; m.mu is held.
func (r *relay) startSession() {
	r.sessions++
	if r.dest != nil {
		r.dest.sessions++
	}
}

// sessionEnded counts a session of r out and returns the relays that
// may start one in its place: its destination's others first, so that
// a relay with a steady flow does not keep the slots from the others,
// then r itself. Those returned are counted in. m.mu is held.
func (r *relay) sessionEnded() []*relay {
	r.sessions--
	if r.sessions == 0 {
		r.hostsTake = 0
	}
	var order []*relay
	if d := r.dest; d != nil {
		d.sessions--
		for i, o := range d.relays {
			if o == r {
				order = append(append(order, d.relays[i+1:]...), d.relays[:i]...)
				break
			}
		}
	}
	var start []*relay
	for _, o := range append(order, r) {
		if o.wantsSession() {
			o.startSession()
			start = append(start, o)
		}
	}
	return start
}

// waitTurn waits until a task may go: at its turn, and an interval of
// the message rate after the destination's previous message. The turns
// of the tasks are that far apart, but a task can go later than its
// turn, held up by a slow connect or a busy session: without the
// interval the tasks behind it would then go in a burst.
func (m *MTA) waitTurn(d *destination, t *task) {
	if d == nil || d.limits == nil || d.limits.MessageRate.IsZero() {
		return
	}
	m.mu.Lock()
	at := time.Now()
	if t.due.After(at) {
		at = t.due
	}
	if next := d.last.Add(d.limits.MessageRate.Every()); next.After(at) {
		at = next
	}
	d.last = at
	m.mu.Unlock()
	time.Sleep(time.Until(at))
}
