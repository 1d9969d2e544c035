//go:build monkey

package monkey

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Enabled is true: this build injects faults as the environment says.
const Enabled = true

// troop is the monkeys of this process, set up once from the
// environment; a monkey build is for tests only, so this one piece of
// package state is allowed.
type troop struct {
	mu      sync.Mutex
	rng     *rand.Rand
	enabled map[string]bool
	rate    int
	crash   string
	whole   bool
}

var (
	once   sync.Once
	active *troop
)

func get() *troop {
	once.Do(func() {
		t := &troop{enabled: map[string]bool{}, rate: 5, crash: os.Getenv("SMTPD_CRASH"), whole: os.Getenv("SMTPD_CRASH_MODE") != "self"}
		for _, p := range strings.Split(os.Getenv("SMTPD_MONKEYS"), ",") {
			switch {
			case p == "all":
				for _, q := range Points {
					t.enabled[q] = true
				}
			case slices.Contains(Points, p):
				t.enabled[p] = true
			case p != "":
				fmt.Fprintf(os.Stderr, "monkey: unknown point %q (known: %s)\n", p, strings.Join(Points, ", "))
				os.Exit(2)
			}
		}
		if t.crash != "" && !slices.Contains(CrashPoints, t.crash) {
			fmt.Fprintf(os.Stderr, "monkey: unknown crash point %q (known: %s)\n", t.crash, strings.Join(CrashPoints, ", "))
			os.Exit(2)
		}
		if r, err := strconv.Atoi(os.Getenv("SMTPD_MONKEY_RATE")); err == nil {
			t.rate = r
		}
		seed, err := strconv.ParseUint(os.Getenv("SMTPD_MONKEY_SEED"), 10, 64)
		if err != nil {
			seed = rand.Uint64() % 1000000
			if len(t.enabled) > 0 {
				fmt.Fprintf(os.Stderr, "monkey: seed %d (SMTPD_MONKEY_SEED=%d replays it)\n", seed, seed)
			}
		}
		// every process draws its own sequence from the seed, and each
		// start of a process the parent starts many times (delivery
		// agents) its own too
		h := fnv.New64a()
		h.Write([]byte(strings.Join(os.Args, " ") + " " + os.Getenv(StreamEnv)))
		t.rng = rand.New(rand.NewPCG(seed, h.Sum64()))
		active = t
	})
	return active
}

func (t *troop) roll(point string) bool {
	if !t.enabled[point] {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rng.IntN(100) < t.rate
}

// Fail returns an injected temporary failure at point, at the rate set.
func Fail(point string) error {
	if get().roll(point) {
		return fmt.Errorf("%s: %w", point, ErrInjected)
	}
	return nil
}

// Delay waits up to 2 ms at point, at the rate set.
func Delay(point string) {
	t := get()
	if t.roll(point) {
		t.mu.Lock()
		d := time.Duration(t.rng.IntN(2000)) * time.Microsecond
		t.mu.Unlock()
		time.Sleep(d)
	}
}

// Crash kills this process, or the whole daemon, at the armed crash
// point: SIGKILL, so nothing gets to clean up.
func Crash(point string) {
	t := get()
	if t.crash != point {
		return
	}
	fmt.Fprintf(os.Stderr, "monkey: crash at %s\n", point)
	if t.whole {
		// a process that dropped its privileges may not signal the
		// others: then the parent does it when it loses this one
		killFamily(os.Getppid())
	}
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
}

// LostChild is called by the parent when a child died: if a crash of
// the whole daemon is armed, the parent kills every other process and
// itself, at once, rather than stopping them in order.
func LostChild() {
	t := get()
	if t.crash == "" || !t.whole {
		return
	}
	killFamily(os.Getpid())
}

// killFamily kills parent and every process it started.
func killFamily(parent int) {
	// find the children first: once the parent is gone they are
	// someone else's
	victims := []int{parent}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after ")"
		i := strings.LastIndexByte(string(data), ')')
		fields := strings.Fields(string(data[i+1:]))
		if len(fields) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid == parent {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			if pid != os.Getpid() {
				victims = append(victims, pid)
			}
		}
	}
	// the parent last: a parent that kills itself first stops there
	for _, pid := range append(victims[1:], victims[0]) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}
