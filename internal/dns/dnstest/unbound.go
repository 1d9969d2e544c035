package dnstest

// A validating resolver for tests: Debian's Unbound, run in the
// foreground from a configuration of our own, that sends the queries
// for each test zone to a test server (stub-zone) and validates the
// zones it has a trust anchor for. No root anchor is configured, so
// there are no delegations to follow from the root: a zone with an
// anchor is secure (or bogus), one without is insecure (RFC 4035
// section 4.3), which is what tests of DANE (RFC 7672) need to tell
// apart.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

const (
	// UnboundPath is where Debian's unbound package installs the
	// server.
	UnboundPath = "/usr/sbin/unbound"
	// unboundStartTimeout bounds the wait for Unbound to answer.
	unboundStartTimeout = 10 * time.Second
	// unboundStopTimeout bounds the wait for Unbound to exit after
	// SIGTERM, before SIGKILL.
	unboundStopTimeout = 5 * time.Second
)

// Zone is a zone the validating resolver sends to a test server.
type Zone struct {
	// Name is the zone's apex, such as "secure.test.".
	Name string
	// Server is host:port of the test server serving it (Server.Addr).
	Server string
	// Anchor is the trust anchor Sign returned, "" for a zone the
	// resolver is to treat as insecure.
	Anchor string
}

// Unbound is a running Unbound.
type Unbound struct {
	// Addr is host:port Unbound answers on, UDP and TCP.
	Addr string
	// Dir holds its configuration (unbound.conf), pid file and log.
	Dir string
	// LogFile is Unbound's log: with val-log-level 2, a line with the
	// reason for each validation failure.
	LogFile string

	cmd       *exec.Cmd
	exited    chan struct{} // closed when the process has been waited for
	waitErr   error         // set before exited is closed
	closeOnce sync.Once
}

// FreeAddr returns host:port with a port of host (such as "127.0.0.1")
// that was free for both UDP and TCP a moment ago, for a server that
// binds it itself, as Unbound does. Another process may take it in
// between: StartUnbound then tries another when it chose the port.
func FreeAddr(host string) (string, error) {
	var err error
	for range 20 {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", net.JoinHostPort(host, "0")); err != nil {
			return "", err
		}
		addr := pc.LocalAddr().String()
		var l net.Listener
		l, err = net.Listen("tcp", addr)
		pc.Close()
		if err == nil {
			l.Close()
			return addr, nil
		}
	}
	return "", err
}

// StartUnbound writes an unbound.conf into dir and runs Unbound from
// it, in the foreground, listening on addr (such as "127.0.0.1:5353";
// "" picks a free port of 127.0.0.1), resolving the zones through their
// test servers. It returns once Unbound answers queries, at most 10
// seconds after the start. Unbound must be installed (Debian's unbound
// package); the caller stops it with Close.
func StartUnbound(dir, addr string, zones []Zone) (*Unbound, error) {
	if _, err := os.Stat(UnboundPath); err != nil {
		return nil, fmt.Errorf("dnstest: %v: install Debian's unbound (apt-get install -y unbound, "+
			"behind a /usr/sbin/policy-rc.d that exits 101 so that its service does not start)", err)
	}
	if addr != "" {
		return startUnbound(dir, addr, zones)
	}
	var err error
	for range 3 {
		if addr, err = FreeAddr("127.0.0.1"); err != nil {
			return nil, err
		}
		var u *Unbound
		var inUse addrInUseError
		if u, err = startUnbound(dir, addr, zones); err == nil || !errors.As(err, &inUse) {
			return u, err
		}
	}
	return nil, err
}

// addrInUseError is the error of a start that failed because another
// process took the port in the meantime.
type addrInUseError struct{ error }

func (e addrInUseError) Unwrap() error { return e.error }

// startUnbound is StartUnbound on a given address.
func startUnbound(dir, addr string, zones []Zone) (*Unbound, error) {
	conf, err := unboundConfig(dir, addr, zones)
	if err != nil {
		return nil, err
	}
	confFile := filepath.Join(dir, "unbound.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	u := &Unbound{Addr: addr, Dir: dir, LogFile: filepath.Join(dir, "unbound.log"), exited: make(chan struct{})}
	logf, err := os.OpenFile(u.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// -d keeps it in the foreground, our child, so that Close can wait
	// for it; it logs to stderr (logfile ""), which goes to LogFile
	// with what it says before reading its configuration.
	u.cmd = exec.Command(UnboundPath, "-d", "-c", confFile)
	u.cmd.Dir = dir
	u.cmd.Stdout, u.cmd.Stderr = logf, logf
	// A test binary that dies leaves no Unbound behind.
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := u.cmd.Start(); err != nil {
		return nil, fmt.Errorf("dnstest: start unbound: %w", err)
	}
	go func() {
		u.waitErr = u.cmd.Wait()
		close(u.exited)
	}()
	if err := u.waitReady(); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

// waitReady waits until Unbound answers a query for localhost., which it
// answers itself (a default local zone) without asking any server.
func (u *Unbound) waitReady() error {
	c := &mdns.Client{Timeout: 200 * time.Millisecond}
	m := new(mdns.Msg)
	m.SetQuestion("localhost.", mdns.TypeA)
	deadline := time.Now().Add(unboundStartTimeout)
	for {
		if _, _, err := c.Exchange(m, u.Addr); err == nil {
			return nil
		}
		select {
		case <-u.exited:
			log := u.Log()
			err := fmt.Errorf("dnstest: unbound exited (%v) before answering on %s; its log:\n%s", u.waitErr, u.Addr, log)
			if strings.Contains(log, "Address already in use") {
				err = addrInUseError{err}
			}
			return err
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dnstest: unbound not answering on %s after %v; its log:\n%s", u.Addr, unboundStartTimeout, u.Log())
		}
	}
}

// unboundConfig returns the configuration of an Unbound for tests, in
// dir, on addr, for zones. Each setting is explained where it is not
// plain; the manual is unbound.conf(5).
func unboundConfig(dir, addr string, zones []Zone) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("dnstest: unbound address %q: %w", addr, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `server:
	# As the user running the test, in dir, nothing outside it.
	username: ""
	chroot: ""
	directory: %[1]q
	pidfile: %[2]q
	use-syslog: no
	logfile: ""
	log-time-ascii: yes
	verbosity: 1
	interface: %[3]s
	port: %[4]s
	do-ip6: no
	num-threads: 1
	so-reuseport: no
	access-control: 127.0.0.0/8 allow
	# The test servers are on loopback, which Unbound avoids by default.
	do-not-query-localhost: no
	module-config: "validator iterator"
	# One log line with the reason for each validation failure.
	val-log-level: 2
	val-permissive-mode: no
	harden-dnssec-stripped: yes
	# Queries for the full name only, as the test servers see them.
	qname-minimisation: no
	# Almost no caching, so that a test's changes to its servers show.
	cache-min-ttl: 0
	cache-max-ttl: 1
	cache-max-negative-ttl: 1
	val-bogus-ttl: 1
	# A server that left a query unanswered is asked again.
	infra-keep-probing: yes
	# No root trust anchor and no auto-trust-anchor-file: only the
	# zones given one below are validated. No RFC 8145 key tag queries
	# (_ta-XXXX) to the test servers either.
	trust-anchor-signaling: no
`, dir, filepath.Join(dir, "unbound.pid"), host, port)
	for _, z := range zones {
		name := mdns.Fqdn(z.Name)
		if _, ok := mdns.IsDomainName(name); !ok || strings.ContainsAny(name, "\"\n") {
			return "", fmt.Errorf("dnstest: unbound zone %q: not a domain name", z.Name)
		}
		// Unbound answers names under test., invalid. and others
		// itself by default (RFC 6761); transparent lets queries for
		// this zone through to its stub.
		fmt.Fprintf(&b, "\tlocal-zone: %q transparent\n", name)
		if z.Anchor != "" {
			if strings.ContainsAny(z.Anchor, "\"\n") {
				return "", fmt.Errorf("dnstest: unbound trust anchor %q", z.Anchor)
			}
			fmt.Fprintf(&b, "\ttrust-anchor: %q\n", z.Anchor)
		}
	}
	for _, z := range zones {
		h, p, err := net.SplitHostPort(z.Server)
		if err != nil {
			return "", fmt.Errorf("dnstest: server of zone %s: %w", z.Name, err)
		}
		if _, err := strconv.Atoi(p); err != nil {
			return "", fmt.Errorf("dnstest: server of zone %s: port %q", z.Name, p)
		}
		fmt.Fprintf(&b, "stub-zone:\n\tname: %q\n\tstub-addr: %s@%s\n", mdns.Fqdn(z.Name), h, p)
	}
	return b.String(), nil
}

// StartUnboundT is StartUnbound for a test: in a temporary directory,
// on a free port of 127.0.0.1, stopped when the test ends. It fails the
// test if Unbound cannot start, and when the test has failed it logs
// Unbound's validation failures, so that the failure says why.
func StartUnboundT(t testing.TB, zones ...Zone) *Unbound {
	t.Helper()
	return StartUnboundOnT(t, "", zones...)
}

// StartUnboundOnT is StartUnboundT on a given address, such as
// "127.0.0.98:53" for programs that take their resolver from
// resolv.conf, which has no port.
func StartUnboundOnT(t testing.TB, addr string, zones ...Zone) *Unbound {
	t.Helper()
	u, err := StartUnbound(t.TempDir(), addr, zones)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("unbound's validation failures:\n%s", u.Reasons(""))
		}
		u.Close()
	})
	return u
}

// Exchange asks Unbound for name and qtype with the DO bit set, as a
// DANE client does (RFC 7672 section 2.2 relies on the AD bit of the
// answer), over UDP and then TCP if the answer is truncated.
func (u *Unbound) Exchange(name string, qtype uint16) (*mdns.Msg, error) {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	m.SetEdns0(ednsSize, true)
	c := &mdns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, u.Addr)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.Exchange(m, u.Addr)
	}
	return r, err
}

// Log returns what Unbound logged so far.
func (u *Unbound) Log() string {
	b, err := os.ReadFile(u.LogFile)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Reasons returns the validation failures Unbound logged about name
// (all of them for ""), one a line, such as "validation failure
// <www.bogus.test. A IN>: signature crypto failed from 127.0.0.1 for
// DNSKEY www.bogus.test. ...". Without any, it returns the end of the
// log, so that a failure message always has something to say.
func (u *Unbound) Reasons(name string) string {
	log := u.Log()
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(nil, 1<<20)
	want := "<" + strings.ToLower(mdns.Fqdn(name)) + " "
	for sc.Scan() {
		l := sc.Text()
		if strings.Contains(l, "validation failure") && (name == "" || strings.Contains(strings.ToLower(l), want)) {
			lines = append(lines, l)
		}
	}
	if len(lines) > 0 {
		return strings.Join(lines, "\n")
	}
	return "(no validation failure logged; the log ends with)\n" + tail(log)
}

// Close stops Unbound and waits for it to exit: SIGTERM, then SIGKILL
// if it has not exited within 5 seconds. It may be called more than
// once.
func (u *Unbound) Close() error {
	u.closeOnce.Do(func() {
		u.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-u.exited:
		case <-time.After(unboundStopTimeout):
			u.cmd.Process.Kill()
			<-u.exited
		}
	})
	var exit *exec.ExitError
	if errors.As(u.waitErr, &exit) && exit.Exited() && exit.ExitCode() != 0 {
		return fmt.Errorf("dnstest: unbound: %w; its log ends with:\n%s", u.waitErr, tail(u.Log()))
	}
	return nil
}

// tail returns the last 20 lines of a log.
func tail(log string) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}
