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

// feature is what a cost row adds to our daemon: nothing (the
// baseline), one filter on the listener of each kind, mail
// authentication checks on the listener (checks.go) or DKIM signing in
// the action. The cost rows run with our daemon only: Debian's
// OpenSMTPD 6.8 speaks the filter protocol 0.6, not 0.7, has no milter
// client and neither checks nor signs mail itself, so there is nothing
// to compare with.
type feature int

const (
	baseline feature = iota
	builtinFilter
	commandFilter
	milterFilter
	fcrdnsCheck
	dnsblCheck
	spfCheck
	dkimCheck
	dmarcChecks // spf, dkim and dmarc, as DMARC needs the other two
	signRSA
	signRSAEd
)

// filterKinds are the filter rows, in order of expected cost.
func filterKinds() []feature {
	return []feature{builtinFilter, commandFilter, milterFilter}
}

// costKinds are the cost rows the options ask for, the baseline first.
// The baseline runs again there, next to the others, rather than being
// taken from the comparison: a minute apart, other activity on the
// machine moves CPU per message more than a built-in filter does.
func costKinds(o options) []feature {
	out := []feature{baseline}
	if o.filters {
		out = append(out, filterKinds()...)
	}
	if o.checks {
		out = append(out, checkKinds()...)
	}
	return out
}

// isFilter reports whether the feature is a filter on the listener.
func (k feature) isFilter() bool { return k >= builtinFilter && k <= milterFilter }

// runsPassfilter reports whether the row's tree holds bench/passfilter,
// whose share of the CPU the filter table shows.
func (k feature) runsPassfilter() bool { return k == commandFilter || k == milterFilter }

// String names the feature in the progress line and in failures.
func (k feature) String() string {
	switch k {
	case builtinFilter:
		return "built-in filter"
	case commandFilter:
		return "command filter"
	case milterFilter:
		return "milter"
	case signRSA, signRSAEd:
		return "signing with " + k.signKeys()
	}
	if k.isCheck() {
		return "checks " + strings.Join(k.checks(), ", ")
	}
	return "no filter, no checks"
}

// article is the feature's name after "with".
func (k feature) article() string {
	if k.isFilter() {
		return "a " + k.String()
	}
	return k.String()
}

// describe says in the table what the row adds.
func (k feature) describe() string {
	switch k {
	case builtinFilter:
		return "built-in: a `from` check that never matches"
	case commandFilter:
		return "command: `passfilter -proc`, protocol 0.7, 8 phases with data-line, 5 reports"
	case milterFilter:
		return "milter: `passfilter -milter` (go-milter) on a unix socket, every step"
	case baseline:
		return "none"
	}
	return k.describeCheck()
}

// filterName is the name of the bench's filter in our configuration,
// and what its failures in the daemon's log mention.
const filterName = "pass"

// milterSocket is where the milter listens, in the run's directory.
func milterSocket(dir string) string { return filepath.Join(dir, "milter.sock") }

// conf returns what the feature adds to our configuration; dir is the
// run's directory.
func (k feature) conf(o options, env *costEnv, dir string) extraConf {
	var block string
	switch k {
	case baseline:
		return extraConf{}
	case builtinFilter:
		// TEST-NET-1: no client of the bench comes from there, so the
		// check runs for every session and never refuses one
		block = `from = ["192.0.2.0/24"]`
	case commandFilter:
		block = fmt.Sprintf(`command = "%s -proc"`, o.passfilter)
	case milterFilter:
		block = fmt.Sprintf(`milter = "unix:%s"`, milterSocket(dir))
	default:
		return k.checkConf(env)
	}
	return extraConf{
		blocks: fmt.Sprintf("filter %q {\n  %s\n}\n", filterName, block),
		listen: fmt.Sprintf("filters = [filter.%s]", filterName),
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

// filterTrouble returns how many lines of our daemon's log in dir say
// the bench's filter failed, broke or ended, and a sentence with the
// first: a run whose filter failed measured something else (each
// failure is a 451 to the client, by the default policy).
func filterTrouble(dir string) (int, string) {
	f, err := os.Open(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return 0, ""
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
	if n == 0 {
		return 0, ""
	}
	return n, fmt.Sprintf("%d filter failures in its log, the first: %s", n, first)
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

// renderCosts writes the cost section: a table of the filter rows and
// one of the check and signing rows, each under the baseline row they
// share. rounds are the results of kinds (costKinds, the baseline
// first), one per round; each row is the best of its rounds, with the
// CPU it adds per message.
func renderCosts(b *strings.Builder, sc scenario, kinds []feature, rounds [][]result, o options) {
	rows := make([]result, len(rounds))
	for i := range rounds {
		rows[i] = best(rounds[i])
	}
	fmt.Fprintf(b, "\nCost of filters, checks and signing, smtpd only (Debian's OpenSMTPD 6.8 speaks filter protocol 0.6, has no milter client and neither checks nor signs mail): %s; %d messages per throughput run and %d per latency run",
		sc.name(), o.filterMsgs, o.filterLat)
	if o.filterMsgs < o.msgs {
		fmt.Fprintf(b, " (fewer than the comparison's %d, to run every row %d times in the time)", o.msgs, o.filterRounds)
	}
	fmt.Fprintf(b, ", one fixed message with a DKIM signature (rsa-sha256) for every row, from a file (smtp-source -F). The rows take turns for %d rounds and each shows its round with the least CPU per message; the cost is its difference with the first row, which has neither filter nor checks.\n", o.filterRounds)
	table := func(head, own, none string, want func(feature) bool) {
		b.WriteString("\n| " + head + " | accepted/s | CPU per message |")
		if own != "" {
			b.WriteString(" " + own + " |")
		}
		b.WriteString(" cost over " + none + " | p50 dot to 250 | p99 dot to 250 | peak PSS |\n|---|---|---|")
		if own != "" {
			b.WriteString("---|")
		}
		b.WriteString("---|---|---|---|\n")
		for i, k := range kinds {
			if k == baseline || want(k) {
				costRow(b, k, rows[i], rows[0], own != "", o)
			}
		}
	}
	if o.filters {
		b.WriteString("\nOne filter on the listener; CPU per message counts the whole tree, the filter process or the milter included.\n")
		table("filter", "of which passfilter", "no filter", feature.isFilter)
	}
	if o.checks {
		fmt.Fprintf(b, "\nThe listener's checks, or the action's signing with RSA 2048 and Ed25519 keys. %s\n", checksNote(sc))
		table("checks or signing", "", "no checks", feature.isCheckOrSign)
	}
	// every round that went wrong, shown or not: a filter or check that
	// fails now and then is worth knowing about
	for i, k := range kinds {
		for j, r := range rounds[i] {
			what := fmt.Sprintf("smtpd with %s, round %d", k.article(), j+1)
			switch {
			case r.err != nil:
				fmt.Fprintf(b, "\n%s failed: %s\n", what, firstAndLast(r.err.Error()))
			case r.trouble > 0:
				fmt.Fprintf(b, "\n%s: %s\n", what, r.firstTrouble)
			case r.latErr != nil:
				fmt.Fprintf(b, "\n%s: %d latency messages failed, the first: %s\n", what, r.latFailed, firstLine(r.latErr.Error()))
			}
		}
	}
}

// costRow writes the row of feature k, r, with its cost over base; own
// adds the column of passfilter's share.
func costRow(b *strings.Builder, k feature, r, base result, own bool, o options) {
	fmt.Fprintf(b, "| %s |", k.describe())
	if r.err != nil {
		b.WriteString(" failed |" + strings.Repeat(" |", 5))
		if own {
			b.WriteString(" |")
		}
		b.WriteString("\n")
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
	fmt.Fprintf(b, " %s | %s |", acc, cpu)
	if own {
		if k.runsPassfilter() {
			fmt.Fprintf(b, " %.2f ms |", r.filterCPU.Seconds()*1000)
		} else {
			b.WriteString(" - |")
		}
	}
	diff := "-"
	if k != baseline && base.err == nil {
		diff = fmt.Sprintf("%+.2f ms/msg", (r.cpu-base.cpu).Seconds()*1000)
	}
	p99 := fmtDur(r.p99)
	if r.latFailed > 0 {
		p99 += fmt.Sprintf(" (%d failed)", r.latFailed)
	}
	fmt.Fprintf(b, " %s | %s | %s | %.1f MiB (%d processes) |\n",
		diff, fmtDur(r.p50), p99, float64(r.pss)/(1<<20), r.procs)
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
