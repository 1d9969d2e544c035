package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// filterKind is the filter on the listener in a run: none in the
// comparison with OpenSMTPD, one of each kind in the filter cost rows.
// Those run with our daemon only: Debian's OpenSMTPD 6.8 speaks the
// filter protocol 0.6, not 0.7, and has no milter client, so there is
// nothing to compare with.
type filterKind int

const (
	noFilter filterKind = iota
	builtinFilter
	commandFilter
	milterFilter
)

// filterKinds are the filter cost rows, in order of expected cost. The
// no-filter row runs again there, next to the others, rather than being
// taken from the comparison: a minute apart, other activity on the
// machine moves CPU per message more than a built-in filter does.
func filterKinds() []filterKind {
	return []filterKind{noFilter, builtinFilter, commandFilter, milterFilter}
}

// String names the kind in the progress line and in failures.
func (k filterKind) String() string {
	switch k {
	case builtinFilter:
		return "built-in filter"
	case commandFilter:
		return "command filter"
	case milterFilter:
		return "milter"
	}
	return "no filter"
}

// article is the kind's name after "with".
func (k filterKind) article() string {
	if k == noFilter {
		return k.String()
	}
	return "a " + k.String()
}

// describe says in the table what the filter of the row does.
func (k filterKind) describe() string {
	switch k {
	case builtinFilter:
		return "built-in: a `from` check that never matches"
	case commandFilter:
		return "command: `passfilter -proc`, protocol 0.7, 8 phases with data-line, 5 reports"
	case milterFilter:
		return "milter: `passfilter -milter` (go-milter) on a unix socket, every step"
	}
	return "none"
}

// filterName is the name of the bench's filter in our configuration,
// and what its failures in the daemon's log mention.
const filterName = "pass"

// milterSocket is where the milter listens, in the run's directory.
func milterSocket(dir string) string { return filepath.Join(dir, "milter.sock") }

// conf returns what the kind adds to our configuration; passfilter is
// the absolute path of bench/passfilter, dir the run's directory.
func (k filterKind) conf(passfilter, dir string) filterConf {
	var block string
	switch k {
	case noFilter:
		return filterConf{}
	case builtinFilter:
		// TEST-NET-1: no client of the bench comes from there, so the
		// check runs for every session and never refuses one
		block = `from = ["192.0.2.0/24"]`
	case commandFilter:
		block = fmt.Sprintf(`command = "%s -proc"`, passfilter)
	case milterFilter:
		block = fmt.Sprintf(`milter = "unix:%s"`, milterSocket(dir))
	}
	return filterConf{
		blocks: fmt.Sprintf("filter %q {\n  %s\n}\n", filterName, block),
		chain:  fmt.Sprintf("filters = [filter.%s]", filterName),
	}
}

// startMilter starts passfilter's milter on a unix socket in dir and
// waits until it accepts connections. It runs before the daemon, whose
// parent process opens the socket for the chrooted mfa.
func startMilter(ctx context.Context, passfilter, dir string) (*proc, error) {
	sock := milterSocket(dir)
	p, err := startProc(exec.Command(passfilter, "-milter", "unix:"+sock), filepath.Join(dir, "milter.log"))
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s not accepting after 10s:\n%s", sock, p.tail())
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("exited during start: %v\n%s", p.cmd.ProcessState, p.tail())
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// filterTrouble returns the first line of our daemon's log in dir that
// says the bench's filter failed, broke or ended, and how many such
// lines there are: a run whose filter failed measured something else
// (each failure is a 451 to the client, by the default policy).
func filterTrouble(dir string) (string, int) {
	f, err := os.Open(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return "", 0
	}
	defer f.Close()
	first, n := "", 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "filter "+filterName) {
			continue
		}
		for _, bad := range []string{" failed", " broken", " ended", "unavailable"} {
			if strings.Contains(line, bad) {
				if n == 0 {
					first = line
				}
				n++
				break
			}
		}
	}
	return first, n
}

// best returns, of the rounds of one kind, the run with the least CPU
// per message among those that went well: the one least disturbed by
// whatever else the machine did. Failed runs come last, the first of
// them standing for all.
func best(rounds []result) result {
	var out result
	found := false
	for _, r := range rounds {
		if r.err == nil && r.trouble == 0 && r.allDelivered && (!found || r.cpu < out.cpu) {
			out, found = r, true
		}
	}
	if !found {
		out = rounds[0]
	}
	return out
}

// renderFilterCost writes the filter cost section: one row per filter
// kind (rounds, in the order of filterKinds, the first without a
// filter), the best of its rounds, with the CPU it adds per message.
func renderFilterCost(b *strings.Builder, sc scenario, rounds [][]result, o options) {
	rows := make([]result, len(rounds))
	for i := range rounds {
		rows[i] = best(rounds[i])
	}
	base := rows[0]
	fmt.Fprintf(b, "\nFilter cost, smtpd only (Debian's OpenSMTPD 6.8 speaks filter protocol 0.6 and has no milter client): %s, one filter on the listener; %d messages per throughput run and %d per latency run",
		sc.name(), o.filterMsgs, o.filterLat)
	if o.filterMsgs < o.msgs {
		fmt.Fprintf(b, " (fewer than the comparison's %d, to run every kind %d times in the time)", o.msgs, o.filterRounds)
	}
	fmt.Fprintf(b, "; the kinds take turns for %d rounds and each row is the round with the least CPU per message. CPU per message counts the whole tree, the filter process or the milter included; the cost is its difference with no filter.\n\n", o.filterRounds)
	b.WriteString("| filter | accepted/s | CPU per message | of which passfilter | cost over no filter | p50 dot to 250 | p99 dot to 250 | peak PSS |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	row := func(k filterKind, r result) {
		fmt.Fprintf(b, "| %s |", k.describe())
		if r.err != nil {
			b.WriteString(" failed | | | | | | |\n")
			return
		}
		acc := fmt.Sprintf("%.0f", r.accepted)
		if r.stopped {
			acc += " (stopped after " + o.sourceMax.String() + ")"
		}
		cpu := fmt.Sprintf("%.2f ms", r.cpu.Seconds()*1000)
		if !r.allDelivered {
			cpu += " (deliveries unfinished)"
		}
		own := "-"
		if k == commandFilter || k == milterFilter {
			own = fmt.Sprintf("%.2f ms", r.filterCPU.Seconds()*1000)
		}
		diff := "-"
		if k != noFilter && base.err == nil {
			diff = fmt.Sprintf("%+.2f ms/msg", (r.cpu-base.cpu).Seconds()*1000)
		}
		p99 := fmtDur(r.p99)
		if r.latFailed > 0 {
			p99 += fmt.Sprintf(" (%d failed)", r.latFailed)
		}
		fmt.Fprintf(b, " %s | %s | %s | %s | %s | %s | %.1f MiB (%d processes) |\n",
			acc, cpu, own, diff, fmtDur(r.p50), p99, float64(r.pss)/(1<<20), r.procs)
	}
	for i, k := range filterKinds() {
		row(k, rows[i])
	}
	// every round that went wrong, shown or not: a filter that fails
	// now and then is worth knowing about
	for i, k := range filterKinds() {
		for j, r := range rounds[i] {
			what := fmt.Sprintf("smtpd with %s, round %d", k.article(), j+1)
			switch {
			case r.err != nil:
				fmt.Fprintf(b, "\n%s failed: %s\n", what, firstAndLast(r.err.Error()))
			case r.trouble > 0:
				fmt.Fprintf(b, "\n%s: %d filter failures in its log, the first: %s\n", what, r.trouble, r.firstTrouble)
			case r.latErr != nil:
				fmt.Fprintf(b, "\n%s: %d latency messages failed, the first: %s\n", what, r.latFailed, firstLine(r.latErr.Error()))
			}
		}
	}
}

// firstAndLast returns the first line of s and, if there are more, the
// last one that is not empty: for a daemon that exited during its start,
// what went wrong is in the last line of its log.
func firstAndLast(s string) string {
	first, rest, _ := strings.Cut(s, "\n")
	lines := strings.Split(strings.TrimSpace(rest), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return first + " (" + last + ")"
	}
	return first
}
