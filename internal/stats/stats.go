// Package stats carries the daemon's counters: each process changes its
// counters through a Sender, which sends them to control in batches;
// control keeps them in a Store that `smtpctl show stats` reads.
package stats

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"smtpd/proto"
)

// Sender batches counter changes and sends them to control. Changes to
// the same key between two sends are merged, so a busy process sends at
// most one frame per FlushInterval whatever its rate of changes.
type Sender struct {
	// FlushInterval is the least time between two sends.
	FlushInterval time.Duration

	send func(*proto.StatUpdate) error

	mu      sync.Mutex
	pending []proto.StatChange
	index   map[string]int
	wake    chan struct{}
}

// NewSender returns a Sender that hands its batches to send, usually
// the Send method of the channel to control.
func NewSender(send func(*proto.StatUpdate) error) *Sender {
	return &Sender{
		FlushInterval: 100 * time.Millisecond,
		send:          send,
		index:         map[string]int{},
		wake:          make(chan struct{}, 1),
	}
}

// Increment adds n to the counter key.
func (s *Sender) Increment(key string, n int64) { s.change(key, proto.StatIncrement, n) }

// Decrement subtracts n from the counter key.
func (s *Sender) Decrement(key string, n int64) { s.change(key, proto.StatDecrement, n) }

// Set sets the counter key to v.
func (s *Sender) Set(key string, v int64) { s.change(key, proto.StatSet, v) }

func (s *Sender) change(key string, op proto.StatOp, v int64) {
	s.mu.Lock()
	if i, ok := s.index[key]; ok {
		s.pending[i] = merge(s.pending[i], op, v)
	} else {
		s.index[key] = len(s.pending)
		s.pending = append(s.pending, proto.StatChange{Key: key, Op: op, Value: v})
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// merge folds a new change into a pending one for the same key.
func merge(c proto.StatChange, op proto.StatOp, v int64) proto.StatChange {
	if op == proto.StatSet {
		return proto.StatChange{Key: c.Key, Op: proto.StatSet, Value: v}
	}
	if op == proto.StatDecrement {
		v = -v
	}
	switch c.Op {
	case proto.StatIncrement:
		c.Value += v
	case proto.StatDecrement:
		c.Value -= v
	case proto.StatSet:
		c.Value += v
	}
	return c
}

// Run sends batches until stop is closed, then sends what is left. It
// returns the first send error.
func (s *Sender) Run(stop <-chan struct{}) error {
	for {
		select {
		case <-s.wake:
		case <-stop:
			return s.flush()
		}
		if err := s.flush(); err != nil {
			return err
		}
		select {
		case <-time.After(s.FlushInterval):
		case <-stop:
			return s.flush()
		}
	}
}

// maxBatch keeps a StatUpdate well inside proto.MaxPayload.
const maxBatch = 100

func (s *Sender) flush() error {
	s.mu.Lock()
	batch := s.pending
	s.pending = nil
	clear(s.index)
	s.mu.Unlock()
	for len(batch) > 0 {
		n := min(len(batch), maxBatch)
		if err := s.send(&proto.StatUpdate{Changes: batch[:n]}); err != nil {
			return fmt.Errorf("stats: %w", err)
		}
		batch = batch[n:]
	}
	return nil
}

// Store holds the counters of all processes, in control.
type Store struct {
	mu     sync.Mutex
	values map[string]int64
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{values: map[string]int64{}} }

// Apply applies a batch of changes.
func (st *Store) Apply(changes []proto.StatChange) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, c := range changes {
		switch c.Op {
		case proto.StatIncrement:
			st.values[c.Key] += c.Value
		case proto.StatDecrement:
			st.values[c.Key] -= c.Value
		case proto.StatSet:
			st.values[c.Key] = c.Value
		}
	}
}

// Snapshot returns every counter that was ever touched, sorted by key.
func (st *Store) Snapshot() []proto.StatValue {
	st.mu.Lock()
	out := make([]proto.StatValue, 0, len(st.values))
	for k, v := range st.values {
		out = append(out, proto.StatValue{Key: k, Value: v})
	}
	st.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// HumanDuration writes d as OpenSMTPD's uptime.human does: weeks, days,
// hours, minutes and seconds, leaving out leading zero units ("1d2h0m5s").
func HumanDuration(d time.Duration) string {
	secs := int64(d / time.Second)
	units := []struct {
		suffix string
		size   int64
	}{{"w", 7 * 86400}, {"d", 86400}, {"h", 3600}, {"m", 60}, {"s", 1}}
	var b strings.Builder
	for _, u := range units {
		n := secs / u.size
		secs %= u.size
		if n > 0 || b.Len() > 0 || u.suffix == "s" {
			fmt.Fprintf(&b, "%d%s", n, u.suffix)
		}
	}
	return b.String()
}
