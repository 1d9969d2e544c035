package tlsrpt

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"smtpd/internal/safeio"
)

// Bounds of a Store, so that the domains mail goes to cannot make it
// grow without limit. Results past a bound are dropped (see
// Store.Dropped), except failure details past MaxDetailsPerPolicy,
// which still count in total-failure-session-count (RFC 8460 §4.4) but
// get no failure-details entry of their own.
const (
	MaxDomainsPerDay     = 10000
	MaxPoliciesPerDomain = 32
	MaxDetailsPerPolicy  = 100
	// KeepDays is how many days back a Store keeps counts that were not
	// reported: enough to cover the retries of §5.5 and a daemon down
	// for a few days, not to report stale weeks.
	KeepDays = 7
)

// Lengths past which the strings of a Result are cut, and the most
// policy strings kept (an MTA-STS policy is at most 64 KiB, RFC 8461
// §3.2; a TLSA record with a full certificate is a few KiB).
const (
	maxHostLen       = 255
	maxTextLen       = 1024
	maxPolicyStrings = 64
	maxPolicyString  = 8192
	maxPolicyBytes   = 32 << 10
	maxMXPatterns    = 16
)

// dateLayout names a UTC day: the unit of a report (RFC 8460 §4.1).
const dateLayout = "2006-01-02"

// fileVersion is the version of the file format Store writes.
const fileVersion = 1

// ErrCorrupt is wrapped by the error Open returns when the file exists
// but cannot be read back: it has been renamed aside and the Store
// starts empty.
var ErrCorrupt = errors.New("tlsrpt: corrupt store file")

// ErrNoCounts is the error of Store.Report for a day and domain
// without counts (or already reported).
var ErrNoCounts = errors.New("tlsrpt: no counts for that day and domain")

// Store counts Results per UTC day, policy domain and policy, as the
// aggregate report of RFC 8460 §4 needs them, and keeps them in one
// file.
//
// Counting happens in memory; Flush writes the file, durably and
// atomically (through safeio), when something changed. The caller calls
// it every few seconds and at shutdown, so that a crash loses at most
// the last few seconds of counts and never leaves a half-written file.
//
// A Store is safe for concurrent use.
type Store struct {
	path string
	now  func() time.Time

	// flushMu makes Flushes take their snapshots and write them one
	// after the other, so that an older snapshot never replaces a
	// newer one.
	flushMu sync.Mutex

	mu       sync.Mutex
	instance string // random, names this store's reports apart from another's
	days     map[string]*day
	dirty    bool
	dropped  int64

	// the bounds, variables so that tests can make them small
	maxDomains, maxPolicies, maxDetails int
}

// day holds the counts of one UTC day, by policy domain, and the
// domains already reported (whose late results are not counted again).
type day struct {
	domains map[string]*domainCounts
	done    map[string]bool
}

type domainCounts struct {
	Policies []*policyCounts `json:"policies"`
}

// policyCounts counts the sessions under one policy (RFC 8460 §4.4
// policy, summary and failure-details).
type policyCounts struct {
	Type    PolicyType     `json:"type"`
	Strings []string       `json:"strings,omitempty"`
	MXHost  string         `json:"mx_host,omitempty"`
	Success int64          `json:"success"`
	Failure int64          `json:"failure"`
	Details []*detailCount `json:"details,omitempty"`
}

// detail is what tells failure details apart: the fields of one
// failure-details entry but its count.
type detail struct {
	ResultType          ResultType `json:"result_type"`
	SendingIP           string     `json:"sending_ip,omitempty"`
	ReceivingMXHostname string     `json:"receiving_mx_hostname,omitempty"`
	ReceivingMXHelo     string     `json:"receiving_mx_helo,omitempty"`
	ReceivingIP         string     `json:"receiving_ip,omitempty"`
	AdditionalInfo      string     `json:"additional_info,omitempty"`
	FailureReasonCode   string     `json:"failure_reason_code,omitempty"`
}

type detailCount struct {
	detail
	Count int64 `json:"count"`
}

// fileState is the file: the days by date, each with its counts and
// the domains already reported.
type fileState struct {
	Version  int                 `json:"version"`
	Instance string              `json:"instance"`
	Days     map[string]*fileDay `json:"days"`
}

type fileDay struct {
	Domains map[string]*domainCounts `json:"domains,omitempty"`
	Done    []string                 `json:"done,omitempty"`
}

// Open returns the Store kept in the file at path, loading the counts
// it holds; now gives the time (time.Now if nil). A missing file is an
// empty Store. The file's directory must exist; Flush writes beside the
// file a hidden temporary one, .NAME.tmp.
//
// If the file cannot be read, Open fails. If it is there but does not
// parse, Open renames it aside (NAME.corrupt.UNIXNANO) and returns an
// empty, usable Store together with an error wrapping ErrCorrupt: the
// caller logs it and goes on.
func Open(path string, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	s := &Store{
		path:        path,
		now:         now,
		maxDomains:  MaxDomainsPerDay,
		maxPolicies: MaxPoliciesPerDomain,
		maxDetails:  MaxDetailsPerPolicy,
	}
	s.reset()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: reading store: %w", err)
	}
	if err := s.load(data); err != nil {
		aside := fmt.Sprintf("%s.corrupt.%d", path, now().UnixNano())
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("%w: %s: %w; setting it aside: %w", ErrCorrupt, path, err, rerr)
		}
		s.reset()
		return s, fmt.Errorf("%w: %s: %w; moved to %s, counting from zero", ErrCorrupt, path, err, aside)
	}
	s.prune(now())
	return s, nil
}

// reset empties s and gives it a new instance name.
func (s *Store) reset() {
	var b [8]byte
	rand.Read(b[:])
	s.instance = hex.EncodeToString(b[:])
	s.days = map[string]*day{}
	s.dirty = false
}

// load replaces the counts of s with those of the file's data,
// checking them as it goes: a file that breaks a rule Record keeps is
// as corrupt as one that does not parse.
func (s *Store) load(data []byte) error {
	var st fileState
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return fmt.Errorf("parsing: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the end")
	}
	if st.Version != fileVersion {
		return fmt.Errorf("version %d, not %d", st.Version, fileVersion)
	}
	if b, err := hex.DecodeString(st.Instance); err != nil || len(b) != 8 {
		return fmt.Errorf("malformed instance %q", st.Instance)
	}
	days := map[string]*day{}
	for date, fd := range st.Days {
		if t, err := time.Parse(dateLayout, date); err != nil || t.Format(dateLayout) != date {
			return fmt.Errorf("malformed date %q", date)
		}
		if fd == nil {
			return fmt.Errorf("%s: null day", date)
		}
		d := &day{domains: map[string]*domainCounts{}, done: map[string]bool{}}
		for _, dom := range fd.Done {
			if n, ok := normalizeDomain(dom); !ok || n != dom {
				return fmt.Errorf("%s: malformed domain %q", date, dom)
			}
			d.done[dom] = true
		}
		for dom, dc := range fd.Domains {
			if n, ok := normalizeDomain(dom); !ok || n != dom || d.done[dom] {
				return fmt.Errorf("%s: malformed or reported domain %q", date, dom)
			}
			if err := s.checkDomain(dc); err != nil {
				return fmt.Errorf("%s %s: %w", date, dom, err)
			}
			d.domains[dom] = dc
		}
		if len(d.domains)+len(d.done) > s.maxDomains {
			return fmt.Errorf("%s: %d domains, over the bound", date, len(d.domains)+len(d.done))
		}
		days[date] = d
	}
	s.instance, s.days = st.Instance, days
	return nil
}

// checkDomain checks the counts of one domain as load reads them.
func (s *Store) checkDomain(dc *domainCounts) error {
	if dc == nil || len(dc.Policies) == 0 || len(dc.Policies) > s.maxPolicies {
		return errors.New("no policies or too many")
	}
	for _, pc := range dc.Policies {
		if pc == nil || !knownPolicyType(pc.Type) || pc.Success < 0 || pc.Failure < 0 || len(pc.Details) > s.maxDetails {
			return errors.New("malformed policy counts")
		}
		var sum int64
		for _, dt := range pc.Details {
			if dt == nil || dt.ResultType == "" || dt.Count < 1 {
				return errors.New("malformed failure details")
			}
			sum += dt.Count
			if sum > pc.Failure || sum < 0 {
				return errors.New("failure details count more than the failures")
			}
		}
	}
	return nil
}

// Record counts r under the current UTC day. A Result without a
// usable policy domain or with an unknown policy type, or one past the
// bounds of the Store, is not counted (see Dropped).
//
// The fields are tidied first, so that the same failure seen twice
// counts as one failure-details entry: host names lose case and their
// trailing dot, IP addresses are written as RFC 5952 says (one that
// does not parse is left out), and long strings are cut.
func (s *Store) Record(r Result) {
	dom, ok := normalizeDomain(r.PolicyDomain)
	if !ok || !knownPolicyType(r.PolicyType) {
		s.mu.Lock()
		s.dropped++
		s.mu.Unlock()
		return
	}
	strs := clampPolicyStrings(r.PolicyStrings)
	mx := normalizeMX(r.MXHost)
	var dt detail
	if !r.Success {
		dt = makeDetail(r)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	date := s.now().UTC().Format(dateLayout)
	d := s.days[date]
	if d == nil {
		d = &day{domains: map[string]*domainCounts{}, done: map[string]bool{}}
		s.days[date] = d
	}
	if d.done[dom] {
		s.dropped++
		return
	}
	dc := d.domains[dom]
	if dc == nil {
		if len(d.domains)+len(d.done) >= s.maxDomains {
			s.dropped++
			return
		}
		dc = &domainCounts{}
		d.domains[dom] = dc
	}
	var pc *policyCounts
	for _, p := range dc.Policies {
		if p.Type == r.PolicyType && p.MXHost == mx && slices.Equal(p.Strings, strs) {
			pc = p
			break
		}
	}
	if pc == nil {
		if len(dc.Policies) >= s.maxPolicies {
			s.dropped++
			return
		}
		pc = &policyCounts{Type: r.PolicyType, Strings: strs, MXHost: mx}
		dc.Policies = append(dc.Policies, pc)
	}
	s.dirty = true
	if r.Success {
		pc.Success++
		return
	}
	pc.Failure++
	for _, x := range pc.Details {
		if x.detail == dt {
			x.Count++
			return
		}
	}
	if len(pc.Details) < s.maxDetails {
		pc.Details = append(pc.Details, &detailCount{dt, 1})
	}
}

// Dropped returns how many Results Record did not count since Open.
func (s *Store) Dropped() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// Day names the policy domains with counts of one finished UTC day
// that have not been reported.
type Day struct {
	Date    string   // YYYY-MM-DD, UTC
	Domains []string // sorted
}

// Due returns the days before now's UTC day that hold counts not yet
// reported, oldest first (RFC 8460 §4.1: a report covers a full UTC
// day). Days older than KeepDays are forgotten first.
func (s *Store) Due(now time.Time) []Day {
	today := now.UTC().Format(dateLayout)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune(now)
	var due []Day
	for date, d := range s.days {
		if date >= today || len(d.domains) == 0 {
			continue
		}
		doms := make([]string, 0, len(d.domains))
		for dom := range d.domains {
			doms = append(doms, dom)
		}
		slices.Sort(doms)
		due = append(due, Day{Date: date, Domains: doms})
	}
	slices.SortFunc(due, func(a, b Day) int { return strings.Compare(a.Date, b.Date) })
	return due
}

// Done forgets the counts of domain on date, once its report went out
// (or will never), and keeps the Store from counting that day for it
// again.
func (s *Store) Done(date, domain string) {
	dom, ok := normalizeDomain(domain)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.days[date]
	if d == nil {
		if _, err := time.Parse(dateLayout, date); err != nil {
			return
		}
		d = &day{domains: map[string]*domainCounts{}, done: map[string]bool{}}
		s.days[date] = d
	}
	delete(d.domains, dom)
	d.done[dom] = true
	s.dirty = true
}

// prune forgets the days more than KeepDays away from now: those past
// reporting, and those a clock set far ahead left behind.
func (s *Store) prune(now time.Time) {
	today := now.UTC().Truncate(24 * time.Hour)
	oldest := today.AddDate(0, 0, -KeepDays).Format(dateLayout)
	newest := today.AddDate(0, 0, KeepDays).Format(dateLayout)
	for date := range s.days {
		if date < oldest || date > newest {
			delete(s.days, date)
			s.dirty = true
		}
	}
}

// Flush writes the counts to the file if they changed since the last
// Flush: to a temporary file beside it, then renamed over it and the
// directory synced (safeio.WriteFile), so that the file is always
// either the old counts or the new ones, whole. On error the counts
// stay in memory and the next Flush tries again.
func (s *Store) Flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()

	s.mu.Lock()
	if !s.dirty {
		s.mu.Unlock()
		return nil
	}
	s.prune(s.now())
	data, err := s.marshal()
	s.dirty = false
	s.mu.Unlock()

	if err == nil {
		err = s.write(data)
	}
	if err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return fmt.Errorf("tlsrpt: writing %s: %w", s.path, err)
	}
	return nil
}

// marshal encodes the counts for the file; s.mu is held.
func (s *Store) marshal() ([]byte, error) {
	st := fileState{Version: fileVersion, Instance: s.instance, Days: map[string]*fileDay{}}
	for date, d := range s.days {
		fd := &fileDay{Domains: d.domains}
		for dom := range d.done {
			fd.Done = append(fd.Done, dom)
		}
		slices.Sort(fd.Done)
		st.Days[date] = fd
	}
	return json.Marshal(st)
}

// write puts data in the file. The temporary file is created
// exclusively, so one left by a crash is removed first: only the
// Flush holding flushMu writes it.
func (s *Store) write(data []byte) error {
	tmp := filepath.Join(filepath.Dir(s.path), "."+filepath.Base(s.path)+".tmp")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return safeio.WriteFile(tmp, s.path, 0o600, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// Report builds the report of domain for the UTC day date (YYYY-MM-DD)
// on behalf of org (RFC 8460 §4.4). Reports are due once the day is
// over (see Due); a report of the current day, asked for by hand, has
// the counts so far under the whole day's date range, and Done then
// keeps the rest of the day from being counted for the domain. The
// report-id
// is the same each time for a day and domain, so that a report sent
// again after a failure (§5.5) can be recognised as the same one.
func (s *Store) Report(date, domain string, org Organization) (*Report, error) {
	start, err := time.Parse(dateLayout, date)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: report date: %w", err)
	}
	submitter, err := org.submitter()
	if err != nil {
		return nil, err
	}
	dom, ok := normalizeDomain(domain)
	if !ok {
		return nil, fmt.Errorf("tlsrpt: %q is not a domain", domain)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	var dc *domainCounts
	if d := s.days[date]; d != nil {
		dc = d.domains[dom]
	}
	if dc == nil {
		return nil, fmt.Errorf("%w: %s %s", ErrNoCounts, date, dom)
	}
	r := &Report{
		OrganizationName: org.Name,
		DateRange:        DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
		ContactInfo:      org.Contact,
		ReportID:         date + "." + s.instance + "." + dom + "@" + submitter,
	}
	for _, pc := range dc.Policies {
		r.Policies = append(r.Policies, pc.result(dom))
	}
	slices.SortFunc(r.Policies, comparePolicyResults)
	return r, nil
}
