package mta

import (
	"math"
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
// message every 2 s, 30 in any minute. A message whose turn is near
// waits for it in mta (counted in mta.throttled). One whose turn is
// further goes back to the queue at once, deferred to its turn
// (proto.StatusDeferred, "rate limit for domain X", counted in
// mta.throttled.deferred): the turn is taken for it and kept (booked),
// so that the messages of a backlog come back one turn apart, each to
// the turn it was given, and drain at the rate. A deferral is no
// failure: the queue counts no retry for it, and records no error.
//
// Why not wait for every turn: the queue hands mta at most
// queue.MaxInflight (32) envelopes at a time, for all deliveries, local
// ones too, and an envelope waiting in mta holds its slot. Waiting for
// the whole backlog of a slow destination would stop all other mail
// behind it, and so would that of a fast one: at "20/s", 30 s of turns
// are 600 messages. So a message waits in mta only if its turn is at
// most maxPaceWait away and among the destination's next paceWaiting
// turns: a destination holds at most paceWaiting slots, a quarter of
// them, each for at most maxPaceWait. A deferred message that comes
// back at its turn holds its slot only while it is sent.
const (
	maxPaceWait = 30 * time.Second
	paceWaiting = 8
)

// bookingGrace is how long a booked turn is kept after it passed: the
// queue may send the message back late, when it has no slot free, or
// some of its envelopes after the others. Past that, the message takes
// a turn anew.
const bookingGrace = 10 * time.Minute

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
	// booked are the turns taken for messages deferred to them, by
	// message id, and bookings the same in the order they were taken,
	// to forget them once past (forget).
	booked   map[uint32]time.Time
	bookings []booking
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

// booking is a turn taken for a deferred message.
type booking struct {
	msgid uint32
	at    time.Time
}

// turn takes the turn of message msgid at the destination: it returns
// when the message may go, or a deferral to its turn if it should not
// wait for it in mta. The turn is taken when the message reaches mta,
// so that one too far away goes back at once, rather than after holding
// its delivery slot. A message deferred before has its turn booked and
// gets it again, rather than one after those taken since. m.mu is held.
func (m *MTA) turn(d *destination, msgid uint32) (due time.Time, err error) {
	if d == nil || d.limits == nil || d.limits.MessageRate.IsZero() {
		return time.Time{}, nil
	}
	now := time.Now()
	d.forget(now)
	at, booked := d.booked[msgid]
	if !booked {
		if m.paces == nil {
			m.paces = map[*config.Destination]*throttle.Keyed{}
		}
		k := m.paces[d.limits]
		if k == nil {
			k = throttle.NewPaced(d.limits.MessageRate, pacedKeys)
			m.paces[d.limits] = k
		}
		// the turn is taken however far away it is: a deferred message
		// keeps it, and those after it come after
		delay, _ := k.Reserve(d.key, math.MaxInt64)
		at = now.Add(delay)
	}
	every := d.limits.MessageRate.Every()
	switch delay := at.Sub(now); {
	case delay <= 0:
		return time.Time{}, nil
	case delay <= maxPaceWait && delay <= (paceWaiting-1)*every:
		m.stats.Increment("mta.throttled", 1)
		return at, nil
	default:
		if !booked {
			d.book(msgid, at)
		}
		m.stats.Increment("mta.throttled.deferred", 1)
		return time.Time{}, deferral(at, smtp.EnhancedCode{4, 4, 5}, "rate limit for %s (%s): its turn is %v away",
			d.what(), d.limits.MessageRate, roundDelay(delay))
	}
}

// roundDelay rounds a delay for a failure text: to the second, or the
// millisecond below one.
func roundDelay(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// book keeps the turn at taken for a deferred message; m.mu is held.
func (d *destination) book(msgid uint32, at time.Time) {
	if d.booked == nil {
		d.booked = map[uint32]time.Time{}
	}
	d.booked[msgid] = at
	d.bookings = append(d.bookings, booking{msgid, at})
}

// forget drops the bookings past by more than bookingGrace. Turns are
// taken in order, so the oldest come first; one out of order, after the
// pace forgot the destination (pacedKeys), is only dropped late. m.mu
// is held.
func (d *destination) forget(now time.Time) {
	n := 0
	for _, b := range d.bookings {
		if now.Sub(b.at) <= bookingGrace {
			break
		}
		if d.booked[b.msgid].Equal(b.at) {
			delete(d.booked, b.msgid)
		}
		n++
	}
	// the array's forgotten front is freed when append next has to
	// grow it, and copies only those kept
	d.bookings = d.bookings[n:]
	if len(d.bookings) == 0 {
		d.bookings = nil
	}
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
