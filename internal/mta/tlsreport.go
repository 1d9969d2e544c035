package mta

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"smtpd/internal/dns"
	"smtpd/internal/mtasts"
	"smtpd/internal/tlsrpt"
	"smtpd/proto"
)

// The files of mta's state directory (config MTAStateDir, its chroot
// when started as root).
const (
	stsCacheDir   = "mta-sts"
	tlsReportFile = "tlsrpt.json"
)

// reportEvery is how often mta looks for finished days to report,
// flushEvery how often it writes its TLS-RPT counts (a crash loses at
// most that much of them), policyRefreshEvery how often it refreshes
// the MTA-STS policies it holds (RFC 8461 §10.2).
const (
	reportEvery        = 10 * time.Minute
	flushEvery         = time.Minute
	policyRefreshEvery = 6 * time.Hour
)

// startPolicies opens the MTA-STS cache and the TLS-RPT counts in the
// state directory, once mta is locked into it.
func (m *MTA) startPolicies() {
	root := m.cfg.MTAStateDir
	if m.child.Chrooted {
		root = "/"
	}
	fetcher := &mtasts.Fetcher{RootCAs: m.roots, DialContext: m.dialPolicyHost, Port: m.cfg.MTASTSPort}
	m.sts = &mtasts.Resolver{
		TXT:      m.lookupTXT,
		NotFound: func(err error) bool { return errors.Is(err, errNoSuchName) },
		Fetcher:  fetcher,
		// Put makes the directory with the first policy; until then
		// it is an empty cache
		Cache: &mtasts.Cache{Dir: filepath.Join(root, stsCacheDir)},
	}
	if m.cfg.TLSReports.Enabled {
		store, err := tlsrpt.Open(filepath.Join(root, tlsReportFile), nil)
		if err != nil {
			m.child.Log.Warnf("TLS-RPT counts: %v", err)
		}
		m.tlsrpt = store
	}
	go m.policyLoop()
}

// policyLoop writes the TLS-RPT counts and sends the reports of
// finished days, and refreshes MTA-STS policies ahead of their expiry.
func (m *MTA) policyLoop() {
	reports := time.NewTicker(reportEvery)
	refresh := time.NewTicker(policyRefreshEvery)
	flush := time.NewTicker(flushEvery)
	defer reports.Stop()
	defer refresh.Stop()
	defer flush.Stop()
	var dropped int64
	for {
		select {
		case <-flush.C:
			if m.tlsrpt != nil {
				if err := m.tlsrpt.Flush(); err != nil {
					m.child.Log.Warnf("TLS-RPT counts: %v", err)
				}
				// results past the store's bounds are not counted: say so
				if d := m.tlsrpt.Dropped(); d > dropped {
					m.stats.Increment("mta.tlsrpt.dropped", d-dropped)
					m.child.Log.Warnf("TLS-RPT counts: %d results not counted, past the bounds of a day's counts", d-dropped)
					dropped = d
				}
			}
		case <-reports.C:
			m.sendTLSReports(false)
		case <-refresh.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			if err := m.sts.Refresh(ctx); err != nil {
				m.child.Log.Warnf("MTA-STS refresh: %v", err)
			}
			cancel()
		}
	}
}

// recordTLS counts one TLS negotiation for TLS-RPT: a success when
// result is "", else a failure of that type. Sessions without a
// reported policy (smarthosts) are not counted.
func (m *MTA) recordTLS(report *tlsrpt.Result, result tlsrpt.ResultType, mxName, addr string, err error) {
	if report == nil || m.tlsrpt == nil {
		return
	}
	r := *report
	r.Success = result == ""
	if !r.Success {
		r.ResultType, r.ReceivingMXHostname, r.ReceivingIP = result, mxName, addr
		if err != nil {
			r.FailureReasonCode = err.Error()
		}
	}
	m.tlsrpt.Record(r)
}

// recordSession counts the outcome of one session's TLS under its
// policy, once: a failure the policy already holds (a testing policy
// that does not list the host, a policy not to be had) wins over the
// handshake's success, since the session did not meet the policy.
func (m *MTA) recordSession(p *tlsPolicy, result tlsrpt.ResultType, mxName, addr string, err error) {
	if result == "" && p.failure != "" {
		result, err = p.failure, p.failureErr
	}
	m.recordTLS(p.report, result, mxName, addr, err)
}

// sendTLSReports reports every finished day to the domains that ask for
// reports (RFC 8460 §3), and with today the day so far too: then the
// rest of today is not counted. It returns a line per report.
func (m *MTA) sendTLSReports(today bool) []string {
	if m.tlsrpt == nil {
		return []string{"TLS reports are disabled"}
	}
	if err := m.tlsrpt.Flush(); err != nil {
		m.child.Log.Warnf("TLS-RPT counts: %v", err)
	}
	now := time.Now()
	until := now
	if today {
		until = now.Add(24 * time.Hour)
	}
	org := tlsrpt.Organization{Name: m.cfg.TLSReports.Organization, Contact: m.cfg.TLSReports.Contact}
	var lines []string
	for _, day := range m.tlsrpt.Due(until) {
		for _, domain := range day.Domains {
			line, err := m.sendTLSReport(day.Date, domain, org, now)
			if err != nil {
				// tried again at the next round, until the day is
				// too old to keep
				m.child.Log.Warnf("TLS report of %s for %s: %v", day.Date, domain, err)
				lines = append(lines, fmt.Sprintf("%s %s: %v", day.Date, domain, err))
				continue
			}
			m.tlsrpt.Done(day.Date, domain)
			if line != "" {
				m.child.Log.Infof("TLS report of %s for %s %s", day.Date, domain, line)
				lines = append(lines, fmt.Sprintf("%s %s: %s", day.Date, domain, line))
			}
		}
	}
	if err := m.tlsrpt.Flush(); err != nil {
		m.child.Log.Warnf("TLS-RPT counts: %v", err)
	}
	if len(lines) == 0 {
		lines = []string{"no TLS report due"}
	}
	return lines
}

// sendTLSReport sends one day's report to a domain's rua addresses; a
// domain that asks for none is done with "".
func (m *MTA) sendTLSReport(date, domain string, org tlsrpt.Organization, now time.Time) (string, error) {
	txt, err := m.lookupTXT(context.Background(), "_smtp._tls."+domain)
	if errors.Is(err, errNoSuchName) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	rua, err := tlsrpt.ParseTXT(txt)
	if err != nil {
		return "", nil // no usable reporting address: nothing asked
	}
	report, err := m.tlsrpt.Report(date, domain, org)
	if err != nil {
		return "", err
	}
	gz, err := tlsrpt.Gzip(report)
	if err != nil {
		return "", err
	}
	submitter := org.Contact[strings.LastIndexByte(org.Contact, '@')+1:]
	var sent []string
	var mailto []string
	for _, uri := range rua {
		switch {
		case strings.HasPrefix(uri, "mailto:"):
			mailto = append(mailto, strings.TrimPrefix(uri, "mailto:"))
		case strings.HasPrefix(uri, "https:"):
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			err := tlsrpt.Post(ctx, m.httpClient(), uri, gz)
			cancel()
			if err != nil {
				m.child.Log.Warnf("TLS report of %s for %s to %s: %v", date, domain, uri, err)
				continue
			}
			sent = append(sent, uri)
		}
	}
	for _, to := range mailto {
		msg, err := tlsrpt.Message(report, gz, m.cfg.TLSReports.From, to, submitter, now)
		if err != nil {
			return "", err
		}
		if err := m.submitReport(to, msg); err != nil {
			return "", err
		}
		sent = append(sent, "mailto:"+to)
	}
	if len(sent) == 0 {
		return "", fmt.Errorf("no report address took it (%s)", strings.Join(rua, ", "))
	}
	return "sent to " + strings.Join(sent, ", "), nil
}

// submitReport hands queue a report message from the null sender,
// which notices use (RFC 5321 §4.5.5), and waits for its commit.
func (m *MTA) submitReport(to string, msg []byte) error {
	fd, err := unix.MemfdCreate("smtpd-tlsrpt", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("report file: %w", err)
	}
	f := os.NewFile(uintptr(fd), "tlsrpt")
	defer f.Close()
	if _, err := f.Write(msg); err != nil {
		return fmt.Errorf("report file: %w", err)
	}
	env, err := m.ask(proto.ProcQueue, proto.NewMTAReportSubmit("", []string{to}, f))
	if err != nil {
		return err
	}
	res, ok := env.Msg.(*proto.QueueReportQueued)
	if !ok {
		return fmt.Errorf("queue answered %s", env.Type)
	}
	if res.Status != proto.StatusOK {
		return errors.New(res.Text)
	}
	return nil
}

// errNoSuchName is a name that does not exist, or has no records of
// the type asked: not a failure for policy discovery.
var errNoSuchName = errors.New("no such record")

// lookupTXT asks lookup for the TXT records of name.
func (m *MTA) lookupTXT(_ context.Context, name string) ([]string, error) {
	res, err := m.resolveDNS(name, mdns.TypeTXT)
	if err != nil {
		return nil, err
	}
	switch {
	case res.Status == proto.StatusPermfail:
		return nil, fmt.Errorf("%s: %w", name, errNoSuchName)
	case res.Status != proto.StatusOK:
		return nil, &dns.Error{Name: name, Msg: res.Text}
	case len(res.Records) == 0:
		return nil, fmt.Errorf("%s: %w", name, errNoSuchName)
	}
	return res.Records, nil
}

// dialPolicyHost connects to a policy or report host, resolved by
// lookup, since mta itself reads no resolver configuration.
func (m *MTA) dialPolicyHost(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	// the addresses of one host, as for a smarthost
	env, err := m.ask(proto.ProcLookup, &proto.MTAResolveMX{Domain: host, HostOnly: true})
	if err != nil {
		return nil, err
	}
	res, ok := env.Msg.(*proto.LookupMXResult)
	if !ok {
		return nil, fmt.Errorf("lookup answered %s", env.Type)
	}
	if res.Status != proto.StatusOK {
		return nil, fmt.Errorf("%s: %s", host, res.Text)
	}
	var addrs []string
	for _, mx := range res.MXs {
		addrs = append(addrs, mx.Addrs...)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s: no address", host)
	}
	var d net.Dialer
	var lastErr error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, network, net.JoinHostPort(a, port))
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// httpClient posts reports to https rua addresses (RFC 8460 §5.4),
// resolving through lookup and trusting mta's authorities.
func (m *MTA) httpClient() *http.Client {
	return &http.Client{
		Timeout: time.Minute,
		// a client per report: a connection kept idle for reuse
		// would stay open for good
		Transport: &http.Transport{
			DialContext:       m.dialPolicyHost,
			TLSClientConfig:   &tls.Config{RootCAs: m.roots, MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// stsPolicies describes the MTA-STS policies mta holds, one per line.
func (m *MTA) stsPolicies() []string {
	if m.sts == nil {
		return nil
	}
	domains, err := m.sts.Cache.Domains()
	if err != nil {
		return []string{err.Error()}
	}
	var lines []string
	for _, d := range domains {
		p, ok := m.sts.Cache.Get(d)
		if !ok {
			continue
		}
		lines = append(lines, fmt.Sprintf("%s mta-sts mode=%s id=%s max_age=%s mx=%s fetched=%s", d, p.Mode, p.ID, p.MaxAge, strings.Join(p.MX, ","), p.Fetched.UTC().Format(time.RFC3339)))
	}
	return lines
}
