package queue

import (
	"container/heap"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"smtpd/internal/address"
	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/internal/logging"
	"smtpd/internal/monkey"
	"smtpd/internal/safeio"
	"smtpd/internal/stats"
	"smtpd/proto"
)

// Scheduler decides when each envelope is tried: at once when it is new,
// then after retry_base x retries² until it expires. A delivery put off
// (proto.StatusDeferred) is tried again when its deliverer asked,
// without counting as a retry.
type Scheduler struct {
	store   *Store
	limits  config.Limits
	stats   *stats.Sender
	deliver func(*envelope.Envelope, *os.File) error
	log     *logging.Logger
	// OnPermfail is told of every envelope that failed for good, before
	// the envelope is removed: it commits the notification to the
	// sender. If it cannot, the envelope stays and is tried again.
	OnPermfail func(e *envelope.Envelope, reason string) error
	// OnDelay is told once of an envelope still undelivered after
	// limits.BounceWarn, to warn the sender.
	OnDelay func(e *envelope.Envelope, reason string)

	mu       sync.Mutex
	envs     map[uint64]*entry
	waiting  waitHeap // entries not in flight, by next attempt
	wake     chan struct{}
	inflight int
	// held are entries set aside: paused one by one (entry.paused) or
	// because deliveries of their kind are paused.
	held   map[uint64]*entry
	paused map[envelope.Kind]bool
}

type entry struct {
	env      *envelope.Envelope
	next     time.Time
	inflight bool
	paused   bool
	// deferred is set while the entry waits for the time its last
	// delivery was put off to, for smtpctl show queue.
	deferred bool
	index    int // in waiting, -1 when not there
	// attempts counts the attempts that ended with the envelope kept
	// (failed or put off) since the queue started, so that smtpctl
	// flush can tell when each envelope has been tried (see Flush).
	attempts int
	// untried is set while no attempt of the envelope can have begun:
	// committed since the queue started and not handed out yet.
	untried bool
}

// waitHeap orders waiting envelopes by their next attempt, so that
// finding the due ones does not walk the whole queue.
type waitHeap []*entry

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waitHeap) Push(x any) {
	en := x.(*entry)
	en.index = len(*h)
	*h = append(*h, en)
}
func (h *waitHeap) Pop() any {
	old := *h
	en := old[len(old)-1]
	*h = old[:len(old)-1]
	en.index = -1
	return en
}

// MaxInflight bounds the deliveries, local and relayed, running at
// once. An envelope handed to mta holds its slot until its result, also
// while it waits there for its turn at a paced destination; mta defers
// those whose turn is far (mta/destination.go), so that they wait here
// without a slot.
const MaxInflight = 32

// NewScheduler returns a scheduler that hands due local envelopes to
// deliver, with the message body open for reading.
func NewScheduler(store *Store, limits config.Limits, st *stats.Sender, deliver func(*envelope.Envelope, *os.File) error, log *logging.Logger) *Scheduler {
	return &Scheduler{store: store, limits: limits, stats: st, deliver: deliver, log: log, envs: map[uint64]*entry{}, wake: make(chan struct{}, 1), held: map[uint64]*entry{}, paused: map[envelope.Kind]bool{}}
}

// Add schedules an envelope for an attempt now, or after its backoff if
// it failed before.
//
// committed says the envelope was committed by this queue process, not
// found in the spool at start-up, so that no attempt of it can have
// begun.
func (s *Scheduler) Add(e *envelope.Envelope, committed bool) {
	next := time.Now()
	if e.Retries > 0 {
		next = e.LastTry.Add(s.backoff(e.Retries))
	}
	en := &entry{env: e, next: next, index: -1, untried: committed && e.Retries == 0}
	s.mu.Lock()
	s.envs[e.ID] = en
	heap.Push(&s.waiting, en)
	s.mu.Unlock()
	s.stats.Increment("scheduler.envelope", 1)
	s.poke()
}

func (s *Scheduler) backoff(retries int) time.Duration {
	return s.limits.RetryBase * time.Duration(retries*retries)
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run dispatches due envelopes forever.
func (s *Scheduler) Run() {
	for {
		wait := s.dispatch()
		select {
		case <-s.wake:
		case <-time.After(wait):
		}
	}
}

// dispatch starts every due envelope it may and returns how long to wait
// for the next one.
func (s *Scheduler) dispatch() time.Duration {
	now := time.Now()
	s.mu.Lock()
	wait := time.Minute
	var start []*entry
	for s.waiting.Len() > 0 && s.inflight < MaxInflight {
		en := s.waiting[0]
		if d := en.next.Sub(now); d > 0 {
			wait = d
			break
		}
		heap.Pop(&s.waiting)
		if s.paused[en.env.Kind] {
			s.held[en.env.ID] = en
			continue
		}
		en.inflight = true
		s.inflight++
		start = append(start, en)
	}
	s.mu.Unlock()
	for _, en := range start {
		if now.After(en.env.Expire) && !en.env.Expire.IsZero() {
			s.stats.Increment("scheduler.envelope.expired", 1)
			s.finish(en, proto.StatusPermfail, "message expired after "+s.limits.QueueExpire.String())
			continue
		}
		s.log.Tracef("scheduler", "%s: due (try %d), to %s for <%s>", envelope.FormatEvpID(en.env.ID), en.env.Retries+1, en.env.Kind, en.env.Dest)
		body, err := safeio.Open(s.store.BodyPath(en.env.MsgID()))
		if err == nil {
			e := en.env
			if en.untried {
				c := *e
				c.FirstAttempt, en.untried = true, false
				e = &c
			}
			err = s.deliver(e, body)
			body.Close()
		}
		if err != nil {
			s.log.Warnf("deliver %s: %v", envelope.FormatEvpID(en.env.ID), err)
			s.finish(en, proto.StatusTempfail, "queue: "+err.Error())
		}
	}
	return wait
}

// Result records the outcome of a delivery.
func (s *Scheduler) Result(r proto.DeliveryResult) {
	s.mu.Lock()
	en := s.envs[r.EvpID]
	s.mu.Unlock()
	if en == nil || !en.inflight {
		s.log.Warnf("result for envelope %s that is not being delivered", envelope.FormatEvpID(r.EvpID))
		return
	}
	if r.Status == proto.StatusDeferred {
		s.putOff(en, r.Retry, r.Text)
		s.poke()
		return
	}
	s.finish(en, r.Status, r.Text)
}

// putOff puts an envelope whose delivery was not tried back to wait
// until the time its deliverer gave, as when mta has no turn for it
// sooner at its destination's message rate. That is no failure: the
// envelope's retries, last try and error and its delay warning stay as
// they were, and it is not written again, since nothing about it
// changed. After a crash it is due at once, which only costs another
// deferral. It still expires when its time is up.
func (s *Scheduler) putOff(en *entry, until time.Time, text string) {
	e := en.env
	if !e.Expire.IsZero() && e.Expire.Before(until) {
		// due at its expiry, to expire then rather than at its turn
		until = e.Expire
	}
	s.stats.Increment("scheduler.delivery.deferred", 1)
	s.log.Infof("%s: deferred for <%s> until %s: %s", envelope.FormatEvpID(e.ID), e.Dest, until.Format(time.DateTime), text)
	s.mu.Lock()
	en.inflight = false
	en.deferred = true
	en.attempts++
	en.next = until
	s.inflight--
	heap.Push(&s.waiting, en)
	s.mu.Unlock()
}

func (s *Scheduler) finish(en *entry, status proto.Status, text string) {
	e := en.env
	s.log.Tracef("scheduler", "%s: result %d %s", envelope.FormatEvpID(e.ID), status, text)
	switch status {
	case proto.StatusOK:
		s.log.Infof("%s: delivered to <%s>", envelope.FormatEvpID(e.ID), e.Dest)
		s.stats.Increment("scheduler.delivery.ok", 1)
		s.drop(en)
	case proto.StatusPermfail:
		// the notification is committed before the envelope goes, so
		// that a crash in between sends it twice rather than never
		go func() {
			if s.OnPermfail != nil {
				if err := s.OnPermfail(e, text); err != nil {
					s.log.Warnf("%s: permanent failure for <%s>, but no notice yet (%v): kept for another try", envelope.FormatEvpID(e.ID), e.Dest, err)
					s.retry(en, text)
					s.poke()
					return
				}
			}
			s.log.Infof("%s: permanent failure for <%s>: %s", envelope.FormatEvpID(e.ID), e.Dest, text)
			s.stats.Increment("scheduler.delivery.permfail", 1)
			monkey.Crash("queue.after-bounce")
			s.drop(en)
			s.poke()
		}()
		return
	default:
		s.stats.Increment("scheduler.delivery.tempfail", 1)
		s.retry(en, text)
	}
	s.poke()
}

// retry records a failed try of an envelope and puts it back to wait.
func (s *Scheduler) retry(en *entry, text string) {
	e := en.env
	e.Retries++
	e.LastTry = time.Now()
	e.LastError = envelope.CleanText(text)
	warn := !e.Warned && e.LastTry.Sub(e.Created) >= s.limits.BounceWarn && s.OnDelay != nil
	if warn {
		e.Warned = true
	}
	if err := s.store.Update(e); err != nil {
		s.log.Warnf("%s: %v", envelope.FormatEvpID(e.ID), err)
	}
	s.log.Infof("%s: temporary failure for <%s>: %s (retry %d)", envelope.FormatEvpID(e.ID), e.Dest, text, e.Retries)
	if warn {
		// a copy: the envelope itself may change while the warning goes out
		ec := *e
		go s.OnDelay(&ec, text)
	}
	s.mu.Lock()
	en.inflight = false
	en.deferred = false
	en.attempts++
	en.next = e.LastTry.Add(s.backoff(e.Retries))
	s.inflight--
	heap.Push(&s.waiting, en)
	s.mu.Unlock()
}

func (s *Scheduler) drop(en *entry) {
	if err := s.store.Remove(en.env); err != nil {
		s.log.Warnf("%s: %v", envelope.FormatEvpID(en.env.ID), err)
	}
	s.mu.Lock()
	delete(s.envs, en.env.ID)
	s.inflight--
	s.mu.Unlock()
	s.stats.Decrement("scheduler.envelope", 1)
}

// Lines describes the envelopes target names, sorted, for smtpctl.
func (s *Scheduler) Lines(target string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []string
	for _, en := range s.envs {
		if en.env.Matches(target) {
			state := "pending"
			switch {
			case en.inflight:
				state = "inflight"
			case s.held[en.env.ID] != nil:
				state = "paused"
			case en.deferred:
				state = "deferred until " + en.next.Format(time.DateTime)
			}
			lines = append(lines, en.env.QueueLine(state))
		}
	}
	sort.Strings(lines)
	return lines
}

// Envelope returns the envelope of id (16 hex digits) as it is kept
// on disk, a line per field, and whether it is queued.
func (s *Scheduler) Envelope(id string) ([]string, bool) {
	evpid, err := envelope.ParseEvpID(id)
	if err != nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	en := s.envs[evpid]
	if en == nil {
		return nil, false
	}
	data, err := en.env.Marshal()
	if err != nil {
		return []string{err.Error()}, true
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"), true
}

// HasMessage reports whether some queued envelope belongs to message id.
func (s *Scheduler) HasMessage(id uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, en := range s.envs {
		if en.env.MsgID() == id {
			return true
		}
	}
	return false
}

// Len is the number of envelopes in the queue.
func (s *Scheduler) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.envs)
}

// Status says whether local deliveries and relaying run or are paused.
func (s *Scheduler) Status() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lines []string
	for _, k := range []envelope.Kind{envelope.MDA, envelope.MTA} {
		state := "running"
		if s.paused[k] {
			state = "paused"
		}
		lines = append(lines, fmt.Sprintf("%s %s", strings.ToUpper(string(k)), state))
	}
	return lines
}

// Schedule makes the waiting envelopes target names due now.
func (s *Scheduler) Schedule(target string) int {
	n, _ := s.schedule(func(e *envelope.Envelope) bool { return e.Matches(target) })
	return n
}

// ScheduleDomain makes due now the waiting relayed envelopes whose
// destination is in domain, or with subdomains also in a domain below
// it: what ETRN asks (RFC 1985 §5, "ETRN domain" and "ETRN @domain"),
// and smtpctl schedule domain. It returns how many envelopes, and
// messages of them, it made due.
func (s *Scheduler) ScheduleDomain(domain string, subdomains bool) (envelopes, messages int) {
	return s.schedule(func(e *envelope.Envelope) bool {
		return e.Kind == envelope.MTA && inDomain(e.Dest, domain, subdomains)
	})
}

// inDomain reports whether the domain of the address addr is domain, or
// with subdomains one below it, ignoring case.
func inDomain(addr, domain string, subdomains bool) bool {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || domain == "" {
		return false
	}
	d := addr[at+1:]
	return strings.EqualFold(d, domain) || subdomains && address.InDomain(d, domain)
}

// schedule makes due now the waiting envelopes match accepts: not
// those in flight, nor those set aside (paused). It returns how many
// envelopes, and messages of them.
func (s *Scheduler) schedule(match func(*envelope.Envelope) bool) (envelopes, messages int) {
	s.mu.Lock()
	msgs := map[uint32]bool{}
	now := time.Now()
	for _, en := range s.envs {
		// a paused kind (smtpctl pause mta) waits for its resume: not
		// counted as started
		if en.index >= 0 && !s.paused[en.env.Kind] && match(en.env) {
			en.next = now
			en.deferred = false
			heap.Fix(&s.waiting, en.index)
			msgs[en.env.MsgID()] = true
			envelopes++
		}
	}
	s.mu.Unlock()
	s.poke()
	return envelopes, len(msgs)
}

// Remove drops the waiting envelopes target names, without notice to
// their senders, as an administrator asked.
func (s *Scheduler) Remove(target string) int {
	s.mu.Lock()
	var gone []*entry
	for _, en := range s.envs {
		if en.inflight || !en.env.Matches(target) {
			continue
		}
		if en.index >= 0 {
			heap.Remove(&s.waiting, en.index)
		}
		delete(s.held, en.env.ID)
		delete(s.envs, en.env.ID)
		gone = append(gone, en)
	}
	s.mu.Unlock()
	for _, en := range gone {
		if err := s.store.Remove(en.env); err != nil {
			s.log.Warnf("%s: %v", envelope.FormatEvpID(en.env.ID), err)
		}
		s.log.Infof("%s: removed by the administrator", envelope.FormatEvpID(en.env.ID))
		s.stats.Decrement("scheduler.envelope", 1)
		s.stats.Increment("scheduler.envelope.removed", 1)
	}
	return len(gone)
}

// Pause sets aside the envelopes target names, or every envelope of a
// kind ("mda" for local deliveries, "mta" for relaying) until Resume.
func (s *Scheduler) Pause(target string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := envelope.Kind(target); k == envelope.MDA || k == envelope.MTA {
		s.paused[k] = true
		return 1
	}
	n := 0
	for _, en := range s.envs {
		if !en.inflight && !en.paused && en.env.Matches(target) {
			if en.index >= 0 {
				heap.Remove(&s.waiting, en.index)
			}
			en.paused = true
			s.held[en.env.ID] = en
			n++
		}
	}
	return n
}

// Resume undoes Pause; resumed envelopes are tried at once.
func (s *Scheduler) Resume(target string) int {
	s.mu.Lock()
	k := envelope.Kind(target)
	kind := k == envelope.MDA || k == envelope.MTA
	if kind {
		delete(s.paused, k)
	}
	n := 0
	for id, en := range s.held {
		switch {
		case kind && en.paused, kind && en.env.Kind != k:
			continue
		case !kind && (!en.paused || !en.env.Matches(target)):
			continue
		}
		en.paused = false
		en.deferred = false
		delete(s.held, id)
		if s.paused[en.env.Kind] {
			s.held[id] = en
		} else {
			en.next = time.Now()
			heap.Push(&s.waiting, en)
		}
		n++
	}
	s.mu.Unlock()
	s.poke()
	if kind {
		return 1
	}
	return n
}
