package throttle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"smtpd/internal/config"
)

// clock is a fake clock that moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func perMinute(n int) config.Rate { return config.Rate{Events: n, Per: time.Minute} }

// TestAllow: a keyed bucket takes its whole allowance at once, then one
// event per interval; a paced one takes one event per interval from the
// start; keys do not share tokens.
func TestAllow(t *testing.T) {
	type step struct {
		after time.Duration // clock advance before the step
		key   string
		n     int // attempts
		want  int // allowed among them
	}
	for _, c := range []struct {
		name  string
		rate  config.Rate
		paced bool
		steps []step
	}{
		{"burst of 100/m", perMinute(100), false, []step{
			{0, "a", 150, 100},
			{599 * time.Millisecond, "a", 1, 0},
			{time.Millisecond, "a", 2, 1},     // 0.6 s: one token
			{6 * time.Second, "a", 20, 10},    // 6 s: ten
			{0, "b", 120, 100},                // another key is full
			{10 * time.Minute, "a", 200, 100}, // a bucket holds at most the burst
		}},
		{"paced 30/m", perMinute(30), true, []step{
			{0, "a", 10, 1},
			{time.Second, "a", 1, 0},
			{time.Second, "a", 5, 1},
			{10 * time.Second, "a", 10, 1}, // no saving up
			{0, "b", 3, 1},
		}},
		{"per second", config.Rate{Events: 5, Per: time.Second}, false, []step{
			{0, "x", 6, 5},
			{200 * time.Millisecond, "x", 3, 1},
		}},
		{"per day", config.Rate{Events: 2, Per: 24 * time.Hour}, true, []step{
			{0, "x", 3, 1},
			{11 * time.Hour, "x", 1, 0},
			{time.Hour, "x", 1, 1},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := newClock()
			k := NewKeyed(c.rate, 100)
			if c.paced {
				k = NewPaced(c.rate, 100)
			}
			k.now = clk.now
			for i, s := range c.steps {
				clk.advance(s.after)
				got := 0
				for range s.n {
					if k.Allow(s.key) {
						got++
					}
				}
				if got != s.want {
					t.Errorf("step %d (%s): %d of %d allowed, want %d", i, s.key, got, s.n, s.want)
				}
			}
		})
	}
}

// TestWindow: over any span of the rate's period, a paced key never has
// more than the allowance; a keyed one, which starts with a burst, has at
// most twice as much. A client tries every 100 ms for ten minutes.
func TestWindow(t *testing.T) {
	const n = 30
	for _, c := range []struct {
		paced     bool
		maxWindow int
	}{{true, n}, {false, 2 * n}} {
		clk := newClock()
		k := NewKeyed(perMinute(n), 10)
		if c.paced {
			k = NewPaced(perMinute(n), 10)
		}
		k.now = clk.now
		var times []time.Duration
		for at := time.Duration(0); at < 10*time.Minute; at += 100 * time.Millisecond {
			if k.Allow("k") {
				times = append(times, at)
			}
			clk.advance(100 * time.Millisecond)
		}
		worst := 0
		for i := range times {
			j := i
			for j < len(times) && times[j]-times[i] < time.Minute {
				j++
			}
			worst = max(worst, j-i)
		}
		if worst > c.maxWindow {
			t.Errorf("paced=%v: %d events in one minute, want at most %d", c.paced, worst, c.maxWindow)
		}
		// the long-term rate is the allowance either way
		if got, want := len(times), 10*n; got < want || got > want+n {
			t.Errorf("paced=%v: %d events in ten minutes, want %d (+%d burst at most)", c.paced, got, want, n)
		}
		t.Logf("paced=%v: %d events, at most %d in a minute", c.paced, len(times), worst)
	}
}

// TestReserve: reservations are served in turn; one that would wait
// longer than asked takes nothing.
func TestReserve(t *testing.T) {
	clk := newClock()
	k := NewPaced(config.Rate{Events: 5, Per: time.Second}, 10)
	k.now = clk.now
	for i, want := range []time.Duration{0, 200, 400} {
		d, ok := k.Reserve("d", time.Second)
		if !ok || d != want*time.Millisecond {
			t.Errorf("reservation %d: %v %v, want %v", i, d, ok, want*time.Millisecond)
		}
	}
	if d, ok := k.Reserve("d", 500*time.Millisecond); ok || d != 600*time.Millisecond {
		t.Errorf("past the bound: %v %v, want 600ms false", d, ok)
	}
	// the refused reservation took nothing
	if d, ok := k.Reserve("d", time.Second); !ok || d != 600*time.Millisecond {
		t.Errorf("after a refusal: %v %v, want 600ms", d, ok)
	}
	clk.advance(time.Second)
	if d, ok := k.Reserve("d", 0); !ok || d != 0 {
		t.Errorf("after the backlog: %v %v", d, ok)
	}
}

// TestLRU: at most max keys are kept; the least recently used goes
// first and comes back with a full bucket.
func TestLRU(t *testing.T) {
	clk := newClock()
	k := NewKeyed(perMinute(1), 3)
	k.now = clk.now
	for _, key := range []string{"a", "b", "c"} {
		if !k.Allow(key) || k.Allow(key) {
			t.Fatalf("%s: not one token", key)
		}
	}
	k.Allow("a") // a is the most recent now: b goes first
	k.Allow("d")
	if k.Len() != 3 {
		t.Errorf("%d keys, want 3", k.Len())
	}
	if k.Allow("a") || k.Allow("c") {
		t.Error("a kept key lost its state")
	}
	if !k.Allow("b") {
		t.Error("the forgotten key b did not start full")
	}
	// b came back by forgetting the least recent of d, a, c: d
	if !k.Allow("d") {
		t.Error("d was not forgotten")
	}
}

// TestBounded: a million distinct keys, as from an attacker, leave at
// most max in memory.
func TestBounded(t *testing.T) {
	const max = 1000
	k := NewKeyed(perMinute(10), max)
	for i := range 1_000_000 {
		if !k.Allow(fmt.Sprint(i)) {
			t.Fatalf("key %d refused on first use", i)
		}
	}
	if n := k.Len(); n > max {
		t.Errorf("%d keys kept, want at most %d", n, max)
	}
	if n := len(k.keys); n != k.Len() {
		t.Errorf("index of %d keys for a list of %d", n, k.Len())
	}
}

// TestUnlimited: the zero Rate is no limit, with a nil *Keyed.
func TestUnlimited(t *testing.T) {
	for _, k := range []*Keyed{NewKeyed(config.Rate{}, 10), NewPaced(config.Rate{}, 10)} {
		if k != nil {
			t.Fatal("a bucket for no limit")
		}
		for range 1000 {
			if !k.Allow("x") {
				t.Fatal("refused without a limit")
			}
		}
		if d, ok := k.Reserve("x", 0); d != 0 || !ok {
			t.Errorf("Reserve: %v %v", d, ok)
		}
		if err := k.Wait(context.Background(), "x"); err != nil {
			t.Errorf("Wait: %v", err)
		}
		if k.Len() != 0 {
			t.Errorf("Len %d", k.Len())
		}
	}
}

// TestWait: Wait paces on the real clock, gives up at once on a
// deadline it cannot meet, and gives the token back when cancelled.
func TestWait(t *testing.T) {
	k := NewPaced(config.Rate{Events: 20, Per: time.Second}, 10) // one per 50 ms
	start := time.Now()
	for range 3 {
		if err := k.Wait(context.Background(), "w"); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("3 paced waits in %v, want at least 100 ms", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	k.Wait(context.Background(), "d") // the token of now
	start = time.Now()
	err := k.Wait(ctx, "d")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Millisecond {
		t.Errorf("deadline too short: %v after %v", err, time.Since(start))
	}

	k.Wait(context.Background(), "c")
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		time.Sleep(10 * time.Millisecond)
		cancel()
	}()
	if err := k.Wait(ctx, "c"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// the cancelled wait gave its token back: the next is 50 ms after
	// the first, not 100
	if d, ok := k.Reserve("c", time.Second); !ok || d > 45*time.Millisecond {
		t.Errorf("after a cancelled wait: %v %v", d, ok)
	}
	if err := k.Wait(ctx, "c"); !errors.Is(err, context.Canceled) {
		t.Errorf("done context: %v", err)
	}
}

// TestConcurrent: many goroutines share a bucket without taking more
// than it holds (run with -race).
func TestConcurrent(t *testing.T) {
	clk := newClock()
	k := NewKeyed(perMinute(500), 4)
	k.now = clk.now
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				if k.Allow(fmt.Sprint((g + i) % 2)) {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n != 1000 {
		t.Errorf("%d allowed over two keys of 500, want 1000", n)
	}
}

// BenchmarkAllow: one hot key, and many keys turning over the LRU.
func BenchmarkAllow(b *testing.B) {
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("192.0.2.%d", i)
	}
	for _, c := range []struct {
		name string
		keys []string
		max  int
	}{{"one key", keys[:1], 10_000}, {"10k keys fit", keys[:10_000], 10_000}, {"100k keys evict", keys, 10_000}} {
		b.Run(c.name, func(b *testing.B) {
			k := NewKeyed(perMinute(100), c.max)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				k.Allow(c.keys[i%len(c.keys)])
				i++
			}
		})
	}
	b.Run("parallel", func(b *testing.B) {
		k := NewKeyed(perMinute(100), 10_000)
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(n.Add(1)) * 7919
			for pb.Next() {
				k.Allow(keys[i%10_000])
				i++
			}
		})
	})
}
