package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTick is the unit of the times in /proc/PID/stat (USER_HZ).
const clockTick = 10 * time.Millisecond

// procStat is what the bench reads of /proc/PID/stat.
type procStat struct {
	ppid int
	// cpu is utime+stime of the process; reaped is cutime+cstime, the
	// times of its children that exited and were waited for.
	cpu, reaped time.Duration
}

// readStat reads /proc/PID/stat.
func readStat(pid int) (procStat, bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	// the fields after the command name, which is in parentheses
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 15 {
		return procStat{}, false
	}
	num := func(k int) int64 { n, _ := strconv.ParseInt(f[k], 10, 64); return n }
	return procStat{
		ppid:   int(num(1)),
		cpu:    time.Duration(num(11)+num(12)) * clockTick,
		reaped: time.Duration(num(13)+num(14)) * clockTick,
	}, true
}

// tree returns root and all its descendants, from the parent pids in
// /proc.
func tree(root int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readStat(pid); ok {
			children[st.ppid] = append(children[st.ppid], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out) && i < 100000; i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeCPU returns the CPU time used by the trees of roots so far: every
// live process's own time and the times of the children they reaped, so
// that processes that came and went are counted once, in their parent.
// Several roots, because a milter the bench starts is no descendant of
// the daemon and its work is part of the daemon's all the same.
func treeCPU(roots ...int) time.Duration {
	var total time.Duration
	for _, root := range roots {
		for _, pid := range tree(root) {
			if st, ok := readStat(pid); ok {
				total += st.cpu + st.reaped
			}
		}
	}
	return total
}

// exeCPU returns the CPU time used so far by the processes of the trees
// of roots that run the executable path (and by the children they
// reaped): the share of a filter process or milter in treeCPU.
func exeCPU(path string, roots ...int) time.Duration {
	var total time.Duration
	for _, root := range roots {
		for _, pid := range tree(root) {
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if err != nil || strings.TrimSuffix(exe, " (deleted)") != path {
				continue
			}
			if st, ok := readStat(pid); ok {
				total += st.cpu + st.reaped
			}
		}
	}
	return total
}

// pss returns the proportional set size of pid in bytes, from
// /proc/PID/smaps_rollup.
func pss(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// pssPeak samples the summed PSS of process trees every 100 ms.
type pssPeak struct {
	mu    sync.Mutex
	peak  int64
	procs int // processes in the tree at the peak
	done  chan struct{}
}

// samplePSS starts sampling the trees of roots until ctx ends.
func samplePSS(ctx context.Context, roots ...int) *pssPeak {
	p := &pssPeak{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			p.sample(roots)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// sample adds one sample of the trees of roots.
func (p *pssPeak) sample(roots []int) {
	var sum int64
	var pids []int
	for _, root := range roots {
		pids = append(pids, tree(root)...)
	}
	for _, pid := range pids {
		sum += pss(pid)
	}
	p.mu.Lock()
	if sum > p.peak {
		p.peak, p.procs = sum, len(pids)
	}
	p.mu.Unlock()
}

// result waits for the sampler, whose context must have ended, and
// returns the peak and the number of processes at it.
func (p *pssPeak) result() (int64, int) {
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak, p.procs
}
