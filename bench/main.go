// Command bench compares this daemon with Debian's OpenSMTPD side by side
// on the same machine: each scenario starts a fresh instance of each
// daemon from a temporary configuration and spool on loopback, drives it
// with Postfix's smtp-source (throughput) and a small client of ours
// (latency from the final dot to the 250), and measures its whole process
// tree: CPU per message and peak PSS. The table goes to stdout and to
// var/bench/last.md.
//
// Usage (as root, from the top of the tree, after make build):
//
//	bench [-full] [-ours] [-run TEXT] [-bin bin/smtpd] [-passfilter bin/passfilter] [-out var/bench/last.md]
//
// Quick mode runs the catch-all maildir and relay-to-sink scenarios with
// 2 KB messages and 20 clients; -full adds 100 KB messages and 200
// clients. Both then measure what our daemon pays per message for one
// filter on the listener, of each kind (built-in, filter process,
// milter), with bench/passfilter as the pass-through filter process and
// milter, for each mail authentication check and for DKIM signing,
// against a DNS server of its own, in rounds where the rows take turns
// (-only-filters runs just those; -filters=false and -checks=false
// leave out either kind).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// options are the command-line settings.
type options struct {
	full      bool
	oursOnly  bool
	run       string
	bin, out  string
	cache, ip string
	msgs, lat int
	// the cost rows: whether to run those of filters and of checks and
	// signing (or only cost rows), with which pass-through filter, their
	// message counts and rounds
	filters, checks       bool
	onlyFilters           bool
	passfilter            string
	filterMsgs, filterLat int
	filterRounds          int
	// bounds of the throughput run, the wait for deliveries after it
	// and the latency run
	sourceMax, deliverMax, latencyMax time.Duration
}

func main() {
	var o options
	flag.BoolVar(&o.full, "full", false, "the full matrix: also 100 KB messages and 200 clients")
	flag.BoolVar(&o.oursOnly, "ours", false, "run our daemon only, without OpenSMTPD (for work on it; the table has no ratios)")
	flag.StringVar(&o.run, "run", "", "run only the scenarios whose names contain this text")
	flag.StringVar(&o.bin, "bin", "bin/smtpd", "our daemon")
	flag.StringVar(&o.out, "out", "var/bench/last.md", "where the table is written too")
	flag.StringVar(&o.cache, "cache", "var/bench-tools", "where Postfix's smtp-source and smtp-sink are extracted")
	flag.StringVar(&o.ip, "ip", "127.0.0.2", "the loopback address the daemons listen on")
	flag.IntVar(&o.msgs, "n", 2000, "messages per throughput run")
	flag.IntVar(&o.lat, "latency-n", 0, "messages per latency run (default n/4)")
	flag.BoolVar(&o.filters, "filters", true, "also measure the cost of one filter of each kind (smtpd only)")
	flag.StringVar(&o.passfilter, "passfilter", "bin/passfilter", "the pass-through filter (go build -o bin/passfilter ./bench/passfilter)")
	flag.BoolVar(&o.checks, "checks", true, "also measure the cost of each mail authentication check and of DKIM signing (smtpd only)")
	flag.BoolVar(&o.onlyFilters, "only-filters", false, "measure the cost rows only (filters, checks, signing), without the comparison")
	flag.IntVar(&o.filterMsgs, "filter-n", 0, "messages per throughput run of the cost rows (default n/4)")
	flag.IntVar(&o.filterRounds, "filter-rounds", 4, "rounds of the cost rows, the best of which is shown")
	flag.DurationVar(&o.sourceMax, "source-max", 0, "longest throughput run (default 15s, 3m with -full)")
	flag.DurationVar(&o.deliverMax, "deliver-max", 0, "longest wait for deliveries after the last 250 (default 10s, 2m with -full)")
	flag.DurationVar(&o.latencyMax, "latency-max", 0, "longest latency run (default 10s, 1m with -full)")
	flag.Parse()
	if o.lat == 0 {
		o.lat = max(1, o.msgs/4)
	}
	if o.filterMsgs == 0 {
		o.filterMsgs = max(1, o.msgs/4)
	}
	o.filterLat = max(1, o.lat*o.filterMsgs/o.msgs)
	o.filterRounds = max(1, o.filterRounds)
	if o.onlyFilters && !o.filters && !o.checks {
		fmt.Fprintln(os.Stderr, "bench: -only-filters with -filters=false and -checks=false leaves nothing to run")
		os.Exit(2)
	}
	defaults := []time.Duration{15 * time.Second, 10 * time.Second, 10 * time.Second}
	if o.full {
		defaults = []time.Duration{3 * time.Minute, 2 * time.Minute, time.Minute}
	}
	for i, d := range []*time.Duration{&o.sourceMax, &o.deliverMax, &o.latencyMax} {
		if *d == 0 {
			*d = defaults[i]
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// logf prints a line to stderr, on a line of its own after any progress.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "\r\033[K"+format+"\n", args...)
}

// run sets up the tools, runs every scenario against both daemons and
// writes the table.
func run(ctx context.Context, o options) error {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("our daemon: %v (make build)", err)
	}
	if o.filters {
		if o.passfilter, err = filepath.Abs(o.passfilter); err != nil {
			return err
		}
		if _, err := os.Stat(o.passfilter); err != nil {
			return fmt.Errorf("the pass-through filter: %v (go build -o bin/passfilter ./bench/passfilter, or -filters=false)", err)
		}
	}
	cache, err := filepath.Abs(o.cache)
	if err != nil {
		return err
	}
	t, err := setupTools(ctx, cache, logf)
	if err != nil {
		return err
	}
	base, err := os.MkdirTemp("", "smtpd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	// the daemons' unprivileged processes must reach their directories
	os.Chmod(base, 0o755)

	targets := []target{opensmtpd(), ours(bin)}
	if o.oursOnly {
		targets = targets[1:]
	}
	var scens []scenario
	if !o.onlyFilters {
		for _, sc := range scenarios(o) {
			if strings.Contains(sc.name(), o.run) {
				scens = append(scens, sc)
			}
		}
	}
	results := make([][]result, len(scens))
	var (
		kinds  []feature
		fscens []scenario
		env    *costEnv
	)
	if o.filters || o.checks {
		kinds = costKinds(o)
		if env, err = newCostEnv(base, o.checks); err != nil {
			return err
		}
		defer env.close()
		fscens = costScenarios(o, env, kinds)
	}
	fresults := make([][]result, len(fscens)) // per kind, one per round
	runs, total := 0, len(scens)*len(targets)+len(fscens)*o.filterRounds
	start := time.Now()
	for i, sc := range scens {
		for _, tg := range targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			runs++
			prefix := fmt.Sprintf("[%d/%d] %s, %s", runs, total, tg.name, sc.name())
			r := runOne(ctx, o, t, base, tg, sc, prefix)
			if r.err != nil {
				logf("%s: %v", prefix, r.err)
			}
			results[i] = append(results[i], r)
		}
	}
	// ours only, after the comparison (see feature); the rows take
	// turns, so that a disturbance on the machine hits one round of a
	// row rather than all of it
	tg := targets[len(targets)-1]
	for round := range o.filterRounds {
		for i, sc := range fscens {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			runs++
			prefix := fmt.Sprintf("[%d/%d] %s, cost round %d: %s", runs, total, tg.name, round+1, sc.feature)
			r := runOne(ctx, o, t, base, tg, sc, prefix)
			if r.err != nil {
				logf("%s: %v", prefix, r.err)
			}
			fresults[i] = append(fresults[i], r)
		}
	}
	fmt.Fprintf(os.Stderr, "\r\033[K")
	table := render(scens, targets, results, o, time.Since(start))
	if len(fscens) > 0 {
		var b strings.Builder
		renderCosts(&b, fscens[0], kinds, fresults, o)
		table += b.String()
	}
	fmt.Print(table)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(o.out, []byte(table), 0o644); err != nil {
		return err
	}
	logf("table written to %s", o.out)
	return nil
}
