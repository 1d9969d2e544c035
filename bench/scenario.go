package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// scenario is one line of the matrix: where mail goes and what load.
type scenario struct {
	relay bool // to smtp-sink; else to one catch-all maildir
	load
	latMsgs int     // messages of the latency run
	feature feature // of a cost row, ours only
	env     *costEnv
}

// name describes the scenario in the table and the progress line.
func (s scenario) name() string {
	dest := "catch-all maildir"
	if s.relay {
		dest = "relay to sink"
	}
	conn := "new connection per message"
	if s.reuse {
		conn = "reused connections"
	}
	name := fmt.Sprintf("%s, %s, %d clients, %s", dest, sizeName(s.size), s.clients, conn)
	if s.feature != baseline {
		name += ", " + s.feature.String()
	}
	return name
}

// sizeName writes a message size in KB.
func sizeName(n int) string { return fmt.Sprintf("%d KB", n>>10) }

// scenarios returns the matrix of the mode chosen.
func scenarios(o options) []scenario {
	sizes, clients := []int{2 << 10}, []int{20}
	if o.full {
		sizes, clients = []int{2 << 10, 100 << 10}, []int{20, 200}
	}
	var out []scenario
	for _, relay := range []bool{false, true} {
		for _, size := range sizes {
			for _, c := range clients {
				for _, reuse := range []bool{false, true} {
					out = append(out, scenario{relay: relay, load: load{msgs: o.msgs, size: size, clients: c, reuse: reuse}, latMsgs: o.lat})
				}
			}
		}
	}
	return out
}

// costBase is the scenario of the cost rows, the comparison's
// catch-all with reused connections (the quick mode's load), with
// env's message.
func costBase(o options, env *costEnv) scenario {
	return scenario{load: load{msgs: o.filterMsgs, size: 2 << 10, clients: 20, reuse: true, fixed: env.msg},
		latMsgs: o.filterLat, env: env}
}

// costScenarios returns the cost runs, in the order of kinds.
func costScenarios(o options, env *costEnv, kinds []feature) []scenario {
	var out []scenario
	for _, k := range kinds {
		sc := costBase(o, env)
		sc.feature = k
		out = append(out, sc)
	}
	return out
}

// result is what one run of one daemon measured.
type result struct {
	accepted, delivered float64 // messages per second
	allDelivered        bool    // every message arrived within the wait
	stopped             bool    // smtp-source was stopped by the time bound
	cpu                 time.Duration
	filterCPU           time.Duration // per message, the part of cpu in passfilter
	pss                 int64
	procs               int
	p50, p99            time.Duration
	latFailed           int
	latErr              error // the first of the failures
	// trouble counts the log lines where the filter failed, or the
	// messages that lack what the checks or signing should have added;
	// firstTrouble says so with the first
	trouble      int
	firstTrouble string
	err          error
}

// runOne starts a fresh instance of tg (and a sink for relaying), runs
// the scenario against it and stops everything it started. Its
// directory stays until the bench ends: removing thousands of files
// between runs would slow the next run's file creations on file systems
// that keep recently freed inodes aside (ext4 without a journal skips
// them for a minute or more), whichever daemon comes next.
func runOne(ctx context.Context, o options, t tools, base string, tg target, sc scenario, prefix string) (r result) {
	dir, err := os.MkdirTemp(base, strings.ToLower(tg.name)+"-")
	if err != nil {
		return result{err: err}
	}
	action, sinkPort := "local", 0
	var sk *sink
	if sc.relay {
		action = "relay"
		if sk, err = startSink(ctx, t, dir); err != nil {
			return result{err: fmt.Errorf("smtp-sink: %v", err)}
		}
		defer sk.stop()
		sinkPort = sk.port
	}
	// a milter runs on its own, started first; its CPU and memory count
	// as the daemon's
	var roots []int
	if sc.feature == milterFilter {
		m, err := startMilter(ctx, o.passfilter, dir)
		if err != nil {
			return result{err: fmt.Errorf("milter: %v", err)}
		}
		defer m.stop()
		roots = append(roots, m.pid())
	}
	var verify func(maildir string) (int, string)
	if sc.feature.isCheckOrSign() {
		// from before the start, for the DNS queries the daemon makes
		verify = sc.feature.verifier(sc.env)
	}
	d, err := tg.start(ctx, dir, o.ip, action, sinkPort, sc.feature.conf(o, sc.env, dir))
	if err != nil {
		return result{err: err}
	}
	defer d.stop()
	roots = append([]int{d.pid()}, roots...)
	switch {
	case sc.feature.isFilter():
		defer func() { r.trouble, r.firstTrouble = filterTrouble(dir) }()
	case verify != nil:
		defer func() { r.trouble, r.firstTrouble = verify(d.maildir) }()
	}
	delivered := func() int {
		if sk != nil {
			return int(sk.msgs.n.Load())
		}
		return countFiles(d.maildir + "/new")
	}

	// progress until the run ends
	sent := &counter{}
	var latSent atomic.Int64
	var phase atomic.Value
	phase.Store("throughput")
	pctx, stopProgress := context.WithCancel(ctx)
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		for {
			fmt.Fprintf(os.Stderr, "\r\033[K%s: %s, sent %d, delivered %d, latency %d",
				prefix, phase.Load(), sent.n.Load(), delivered(), latSent.Load())
			select {
			case <-pctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	defer func() { stopProgress(); <-progressDone }()

	sctx, stopSampling := context.WithCancel(ctx)
	peak := samplePSS(sctx, roots...)
	defer func() {
		stopSampling()
		r.pss, r.procs = peak.result()
	}()
	cpu0, fcpu0 := treeCPU(roots...), time.Duration(0)
	if sc.feature.runsPassfilter() {
		fcpu0 = exeCPU(o.passfilter, roots...)
	}
	start := time.Now()
	err = runSource(ctx, t, d.addr, sc.load, sent, o.sourceMax)
	if err != nil && err != context.DeadlineExceeded {
		return result{err: err}
	}
	// what was accepted, all of it or up to the time bound
	want := sc.msgs
	if r.stopped = err == context.DeadlineExceeded; r.stopped {
		want = int(sent.n.Load())
	}
	if want == 0 {
		return result{err: fmt.Errorf("no message accepted in %v", o.sourceMax)}
	}
	r.accepted = float64(want) / time.Since(start).Seconds()

	// every message delivered, or the wait over
	phase.Store("delivering")
	deadline := time.Now().Add(o.deliverMax)
	n, last := delivered(), time.Now()
	for n < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if m := delivered(); m != n {
			n, last = m, time.Now()
		}
	}
	r.allDelivered = n >= want
	r.delivered = float64(n) / last.Sub(start).Seconds()
	r.cpu = (treeCPU(roots...) - cpu0) / time.Duration(want)
	if sc.feature.runsPassfilter() {
		r.filterCPU = (exeCPU(o.passfilter, roots...) - fcpu0) / time.Duration(want)
	}

	phase.Store("latency")
	lat := sc.load
	lat.msgs = sc.latMsgs
	lctx, cancel := context.WithTimeout(ctx, o.latencyMax)
	defer cancel()
	ds, failed, latErr := latencies(lctx, d.addr, lat, &latSent)
	r.p50, r.p99, r.latFailed, r.latErr = percentile(ds, 50), percentile(ds, 99), failed, latErr
	return r
}

// render writes the table in markdown.
func render(scens []scenario, targets []target, results [][]result, o options, took time.Duration) string {
	var b strings.Builder
	mode := "quick"
	if o.full {
		mode = "full"
	}
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "smtpd bench (%s mode) on %s, %s; %d messages per throughput run (smtp-source), %d per latency run; %v\n",
		mode, host, time.Now().UTC().Format("2006-01-02 15:04 MST"), o.msgs, o.lat, took.Round(time.Second))
	if len(scens) == 0 {
		return b.String() // cost rows only
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "| scenario | metric |")
	for _, tg := range targets {
		fmt.Fprintf(&b, " %s |", tg.name)
	}
	fmt.Fprintf(&b, " ratio |\n|---|---|")
	for range targets {
		b.WriteString("---|")
	}
	b.WriteString("---|\n")
	type metric struct {
		name string
		val  func(result) float64
		show func(result) string
	}
	metrics := []metric{
		{"accepted/s", func(r result) float64 { return r.accepted }, func(r result) string {
			s := fmt.Sprintf("%.0f", r.accepted)
			if r.stopped {
				s += " (stopped after " + o.sourceMax.String() + ")"
			}
			return s
		}},
		{"delivered/s", func(r result) float64 { return r.delivered }, func(r result) string {
			s := fmt.Sprintf("%.0f", r.delivered)
			if !r.allDelivered {
				s += " (not all within " + o.deliverMax.String() + ")"
			}
			return s
		}},
		{"CPU per message", func(r result) float64 { return r.cpu.Seconds() }, func(r result) string {
			s := fmt.Sprintf("%.2f ms", r.cpu.Seconds()*1000)
			if !r.allDelivered {
				s += " (deliveries unfinished)"
			}
			return s
		}},
		{"peak PSS", func(r result) float64 { return float64(r.pss) }, func(r result) string {
			return fmt.Sprintf("%.1f MiB (%d processes)", float64(r.pss)/(1<<20), r.procs)
		}},
		{"p50 dot to 250", func(r result) float64 { return r.p50.Seconds() }, func(r result) string { return fmtDur(r.p50) }},
		{"p99 dot to 250", func(r result) float64 { return r.p99.Seconds() }, func(r result) string {
			s := fmtDur(r.p99)
			if r.latFailed > 0 {
				s += fmt.Sprintf(" (%d failed)", r.latFailed)
			}
			return s
		}},
	}
	for i, sc := range scens {
		rs := results[i]
		for j, m := range metrics {
			label := ""
			if j == 0 {
				label = sc.name()
			}
			fmt.Fprintf(&b, "| %s | %s |", label, m.name)
			for _, r := range rs {
				if r.err != nil {
					b.WriteString(" failed |")
				} else {
					fmt.Fprintf(&b, " %s |", m.show(r))
				}
			}
			// ours / OpenSMTPD: the last target over the first; CPU
			// per message only when both delivered everything, since
			// deliveries not made are work not counted
			switch {
			case len(rs) != 2 || rs[0].err != nil || rs[1].err != nil || m.val(rs[0]) <= 0:
				b.WriteString(" - |\n")
			case m.name == "CPU per message" && !(rs[0].allDelivered && rs[1].allDelivered):
				b.WriteString(" - (deliveries unfinished) |\n")
			default:
				fmt.Fprintf(&b, " %.2f |\n", m.val(rs[1])/m.val(rs[0]))
			}
		}
	}
	for i, sc := range scens {
		for j, r := range results[i] {
			if r.err != nil {
				fmt.Fprintf(&b, "\n%s, %s failed: %s\n", targets[j].name, sc.name(), firstLine(r.err.Error()))
			} else if r.latErr != nil {
				fmt.Fprintf(&b, "\n%s, %s: %d latency messages failed, the first: %s\n", targets[j].name, sc.name(), r.latFailed, firstLine(r.latErr.Error()))
			}
		}
	}
	return b.String()
}

// fmtDur writes a latency in milliseconds.
func fmtDur(d time.Duration) string { return fmt.Sprintf("%.1f ms", d.Seconds()*1000) }

// firstLine returns s up to its first newline.
func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
