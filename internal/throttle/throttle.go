// Package throttle holds token buckets by key, in bounded memory: the
// smtp process keys them by client address or user name to bound the
// rates of connections and messages, the mta process by destination
// domain to pace the messages it sends there. Keys may come from an
// attacker, so a Keyed remembers at most a fixed number of them and
// forgets the least recently used first. The buckets are those of
// golang.org/x/time/rate.
package throttle

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"smtpd/internal/config"
)

// Keyed holds one token bucket per key, for at most max keys. It is
// safe for concurrent use. A nil *Keyed limits nothing: NewKeyed and
// NewPaced return nil for the zero Rate, so that callers need no
// special case for "no limit".
//
// A key that was forgotten, because max other keys were used since it
// was last, starts again with a full bucket. That lets a client with
// more than max keys (addresses) go faster than each key's rate, which
// the limit per key never bounded anyway; it keeps memory bounded,
// at about 170 bytes per key besides the key itself.
type Keyed struct {
	limit rate.Limit
	burst int
	max   int
	// now is the clock, a seam for tests.
	now func() time.Time

	mu sync.Mutex
	// lru holds *bucket, the most recently used in front; keys finds
	// them by key.
	lru  list.List
	keys map[string]*list.Element
}

type bucket struct {
	key string
	lim *rate.Limiter
}

// NewKeyed returns buckets of r.Events tokens, refilled at rate r, for
// at most keys keys: a key may use its whole allowance at once, then one
// event every r.Every(). "100/m" allows 100 connections in a burst, then
// one every 0.6 s. This suits limits on clients, which may legitimately
// send a batch now and then and are kept to the rate over time; the
// price of the burst is that a key that starts full and keeps going may
// have up to twice r.Events in one span of r.Per. NewPaced has no
// burst. A zero Rate returns nil, no limit.
func NewKeyed(r config.Rate, keys int) *Keyed {
	return newKeyed(r, r.Events, keys)
}

// NewPaced returns buckets of one token, refilled at rate r, for at
// most keys keys: events are spaced at least r.Every() apart, so that no
// span of r.Per holds more than r.Events of them, whenever it starts.
// "30/m" lets one message go every 2 s. This suits limits that a remote
// party counts, such as a mail provider's limit on what one sender may
// send it: a burst would exceed it. A zero Rate returns nil, no limit.
func NewPaced(r config.Rate, keys int) *Keyed {
	return newKeyed(r, 1, keys)
}

func newKeyed(r config.Rate, burst, keys int) *Keyed {
	if r.IsZero() {
		return nil
	}
	return &Keyed{
		limit: rate.Every(r.Every()),
		burst: burst,
		max:   max(keys, 1),
		now:   time.Now,
		keys:  map[string]*list.Element{},
	}
}

// limiter returns the bucket of key, making it the most recently used,
// or a new full one, forgetting the least recently used key if there are
// max already; k.mu is held.
func (k *Keyed) limiter(key string) *rate.Limiter {
	if e, ok := k.keys[key]; ok {
		k.lru.MoveToFront(e)
		return e.Value.(*bucket).lim
	}
	if k.lru.Len() >= k.max {
		// reuse the oldest element rather than allocate another
		e := k.lru.Back()
		b := e.Value.(*bucket)
		delete(k.keys, b.key)
		b.key, b.lim = key, rate.NewLimiter(k.limit, k.burst)
		k.keys[key] = e
		k.lru.MoveToFront(e)
		return b.lim
	}
	b := &bucket{key: key, lim: rate.NewLimiter(k.limit, k.burst)}
	k.keys[key] = k.lru.PushFront(b)
	return b.lim
}

// Allow takes a token of key now and reports true, or reports false,
// taking nothing, if the bucket is empty.
func (k *Keyed) Allow(key string) bool {
	if k == nil {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.limiter(key).AllowN(k.now(), 1)
}

// Reserve takes a token of key that comes within the given time and
// returns how long until it may be used: 0 if it may be at once. If the
// next token comes later, it takes nothing and reports false with the
// delay, so that the caller can put the event off rather than hold it
// that long. Reserved tokens are taken in turn: the second caller waits
// for the token after the first one's.
func (k *Keyed) Reserve(key string, within time.Duration) (delay time.Duration, ok bool) {
	if k == nil {
		return 0, true
	}
	_, delay, ok = k.reserve(key, within)
	return delay, ok
}

// reserve takes a token of key due within the given time; r is nil
// when it takes none.
func (k *Keyed) reserve(key string, within time.Duration) (r *rate.Reservation, delay time.Duration, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	r = k.limiter(key).ReserveN(now, 1)
	if !r.OK() {
		return nil, 0, false // only for a burst below 1, which newKeyed never makes
	}
	delay = r.DelayFrom(now)
	if delay > within {
		// no reservation came after this one under k.mu: all of its
		// token goes back
		r.CancelAt(now)
		return nil, delay, false
	}
	return r, delay, true
}

// Wait takes a token of key, waiting for it if need be, unless ctx ends
// first; then it takes nothing and returns an error wrapping ctx's. If
// ctx has a deadline before the token comes, it returns at once. This is
// for pacing what this process sends, not for clients: a client over
// its limit is refused rather than kept waiting (Allow).
func (k *Keyed) Wait(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("throttle: waiting for %q: %w", key, err)
	}
	if k == nil {
		return nil
	}
	within := time.Duration(1<<63 - 1)
	if deadline, ok := ctx.Deadline(); ok {
		within = deadline.Sub(k.now())
	}
	r, delay, ok := k.reserve(key, within)
	if !ok {
		return fmt.Errorf("throttle: the next token for %q comes in %v, after the deadline: %w", key, delay, context.DeadlineExceeded)
	}
	if delay == 0 {
		return nil
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		// give the token back, less what was reserved after it
		r.CancelAt(k.now())
		return fmt.Errorf("throttle: waiting for %q: %w", key, ctx.Err())
	}
}

// Len returns the number of keys remembered, at most max.
func (k *Keyed) Len() int {
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lru.Len()
}
