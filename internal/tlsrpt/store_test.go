package tlsrpt

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable time for a Store.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

var testOrg = Organization{Name: "Example Sender", Contact: "tlsrpt@sender.example"}

func openStore(t *testing.T, path string, c *clock) *Store {
	t.Helper()
	s, err := Open(path, c.now)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func sts(domain string) Result {
	return Result{
		PolicyDomain:  domain,
		PolicyType:    PolicySTS,
		PolicyStrings: []string{"version: STSv1", "mode: enforce", "mx: *.mail." + domain, "max_age: 86400"},
		MXHost:        "*.mail." + domain,
	}
}

func success(r Result) Result { r.Success = true; return r }

func failure(r Result, rt ResultType, mx, ip string) Result {
	r.ResultType, r.ReceivingMXHostname, r.ReceivingIP, r.SendingIP = rt, mx, ip, "192.0.2.1"
	return r
}

// summaries returns the counts of a report by policy type.
func summaries(r *Report) map[PolicyType]Summary {
	m := map[PolicyType]Summary{}
	for _, p := range r.Policies {
		m[p.Policy.Type] = p.Summary
	}
	return m
}

func TestStoreTwoDays(t *testing.T) {
	c := &clock{t: at("2024-05-01T10:00:00Z")}
	s := openStore(t, filepath.Join(t.TempDir(), "tlsrpt.json"), c)

	for range 3 {
		s.Record(success(sts("example.com")))
	}
	s.Record(failure(sts("example.com"), ResultCertificateExpired, "mx1.mail.example.com", "198.51.100.1"))
	odd := sts("example.com")
	odd.PolicyDomain, odd.MXHost = "Example.COM.", "*.MAIL.example.com"
	s.Record(failure(odd, ResultCertificateExpired, "MX1.mail.example.com.", "::ffff:198.51.100.1"))
	s.Record(Result{PolicyDomain: "example.org", PolicyType: PolicyNone, Success: true})

	c.set(at("2024-05-02T00:00:01Z"))
	s.Record(success(sts("example.com")))
	s.Record(failure(sts("example.net"), ResultSTARTTLSNotSupported, "mx.example.net", "203.0.113.7"))

	due := s.Due(c.now())
	want := []Day{{Date: "2024-05-01", Domains: []string{"example.com", "example.org"}}}
	if !reflect.DeepEqual(due, want) {
		t.Fatalf("Due = %+v, want %+v", due, want)
	}

	r, err := s.Report("2024-05-01", "example.com", testOrg)
	if err != nil {
		t.Fatal(err)
	}
	if got := summaries(r)[PolicySTS]; got != (Summary{3, 2}) {
		t.Errorf("day 1 summary %+v, want 3 successes 2 failures", got)
	}
	fd := r.Policies[0].FailureDetails
	if len(fd) != 1 || fd[0].FailedSessionCount != 2 || fd[0].ReceivingMXHostname != "mx1.mail.example.com" {
		t.Errorf("day 1 failure details %+v, want one entry counting 2", fd)
	}
	if got := r.DateRange; !got.Start.Equal(at("2024-05-01T00:00:00Z")) || !got.End.Equal(at("2024-05-01T23:59:59Z")) {
		t.Errorf("date range %v", got)
	}
	if !strings.HasPrefix(r.ReportID, "2024-05-01.") || !strings.HasSuffix(r.ReportID, ".example.com@sender.example") {
		t.Errorf("report-id %q", r.ReportID)
	}

	// today, by hand: the counts so far
	if r, err := s.Report("2024-05-02", "example.com", testOrg); err != nil || summaries(r)[PolicySTS] != (Summary{1, 0}) {
		t.Errorf("report of today: %+v, %v; want 1 success", r, err)
	}
	if _, err := s.Report("2024-05-01", "example.net", testOrg); !errors.Is(err, ErrNoCounts) {
		t.Errorf("report of a domain without counts: %v, want ErrNoCounts", err)
	}
	if _, err := s.Report("2024-05-01", "example.com", Organization{Name: "x", Contact: "nobody"}); err == nil {
		t.Errorf("report with a contact that is no address succeeded")
	}

	c.set(at("2024-05-03T06:00:00Z"))
	due = s.Due(c.now())
	want = []Day{
		{Date: "2024-05-01", Domains: []string{"example.com", "example.org"}},
		{Date: "2024-05-02", Domains: []string{"example.com", "example.net"}},
	}
	if !reflect.DeepEqual(due, want) {
		t.Fatalf("Due = %+v, want %+v", due, want)
	}
	r, err = s.Report("2024-05-02", "example.com", testOrg)
	if err != nil || summaries(r)[PolicySTS] != (Summary{1, 0}) || r.Policies[0].FailureDetails != nil {
		t.Errorf("day 2: %+v, %v; want 1 success", r, err)
	}
}

func TestStoreDone(t *testing.T) {
	c := &clock{t: at("2024-05-01T10:00:00Z")}
	s := openStore(t, filepath.Join(t.TempDir(), "tlsrpt.json"), c)
	s.Record(success(sts("example.com")))
	s.Record(success(sts("example.org")))
	c.set(at("2024-05-02T10:00:00Z"))

	s.Done("2024-05-01", "example.com")
	if due := s.Due(c.now()); len(due) != 1 || !reflect.DeepEqual(due[0].Domains, []string{"example.org"}) {
		t.Fatalf("Due after Done = %+v", due)
	}
	if _, err := s.Report("2024-05-01", "example.com", testOrg); !errors.Is(err, ErrNoCounts) {
		t.Errorf("report after Done: %v, want ErrNoCounts", err)
	}

	// a clock set back does not count a reported day again
	c.set(at("2024-05-01T23:00:00Z"))
	s.Record(success(sts("example.com")))
	if s.Dropped() != 1 {
		t.Errorf("Dropped = %d after a late result, want 1", s.Dropped())
	}
	s.Done("2024-05-01", "example.org")
	if due := s.Due(at("2024-05-02T10:00:00Z")); len(due) != 0 {
		t.Errorf("Due = %+v, want nothing", due)
	}
}

func TestStorePersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tlsrpt.json")
	c := &clock{t: at("2024-05-01T10:00:00Z")}
	s := openStore(t, path, c)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Flush of an unchanged store wrote the file: %v", err)
	}
	s.Record(success(sts("example.com")))
	s.Record(failure(sts("example.com"), ResultSTSWebPKIInvalid, "", ""))
	s.Record(Result{PolicyDomain: "example.com", PolicyType: PolicyTLSA, PolicyStrings: []string{"3 1 1 aa"}, ResultType: ResultTLSAInvalid})
	s.Record(success(sts("example.org")))
	c.set(at("2024-05-02T01:00:00Z"))
	s.Done("2024-05-01", "example.org")
	s.Record(success(sts("example.org")))

	// a temporary file left by a crash is no obstacle
	tmp := filepath.Join(filepath.Dir(path), ".tlsrpt.json.tmp")
	if err := os.WriteFile(tmp, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file after Flush: %v, %v", fi, err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}

	s2 := openStore(t, path, c)
	for _, dom := range []string{"example.com"} {
		r1, err1 := s.Report("2024-05-01", dom, testOrg)
		r2, err2 := s2.Report("2024-05-01", dom, testOrg)
		if err1 != nil || err2 != nil || !reflect.DeepEqual(r1, r2) {
			t.Errorf("%s before and after reopening:\n%+v, %v\n%+v, %v", dom, r1, err1, r2, err2)
		}
	}
	if !reflect.DeepEqual(s.Due(c.now()), s2.Due(c.now())) {
		t.Errorf("Due differs after reopening: %+v, %+v", s.Due(c.now()), s2.Due(c.now()))
	}
	// what was reported stays reported
	c.set(at("2024-05-01T23:00:00Z"))
	s2.Record(success(sts("example.org")))
	if s2.Dropped() != 1 {
		t.Errorf("a reported domain was counted again after reopening")
	}
}

func TestStoreCorrupt(t *testing.T) {
	c := &clock{t: at("2024-05-01T10:00:00Z")}
	good := func(t *testing.T, path string) []byte {
		s := openStore(t, path, c)
		s.Record(failure(sts("example.com"), ResultCertificateExpired, "mx.example.com", "198.51.100.1"))
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	tests := []struct {
		name   string
		mangle func(data []byte) []byte
	}{
		{"garbage", func([]byte) []byte { return []byte("\x00\x01garbage") }},
		{"empty", func([]byte) []byte { return nil }},
		{"truncated", func(d []byte) []byte { return d[:len(d)/2] }},
		{"trailing data", func(d []byte) []byte { return append(d, "{}"...) }},
		{"unknown field", func(d []byte) []byte { return []byte(strings.Replace(string(d), `"version"`, `"x":1,"version"`, 1)) }},
		{"other version", func(d []byte) []byte { return []byte(strings.Replace(string(d), `"version":1`, `"version":2`, 1)) }},
		{"negative count", func(d []byte) []byte { return []byte(strings.Replace(string(d), `"failure":1`, `"failure":-1`, 1)) }},
		{"details over failures", func(d []byte) []byte { return []byte(strings.Replace(string(d), `"count":1`, `"count":5`, 1)) }},
		{"bad date", func(d []byte) []byte { return []byte(strings.Replace(string(d), `"2024-05-01"`, `"2024-5-1"`, 1)) }},
		{"bad domain", func(d []byte) []byte { return []byte(strings.Replace(string(d), `"example.com"`, `"Example.com"`, 1)) }},
		{"unknown policy type", func(d []byte) []byte { return []byte(strings.Replace(string(d), `"sts"`, `"dane"`, 1)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "tlsrpt.json")
			bad := tt.mangle(good(t, path))
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, c.now)
			if !errors.Is(err, ErrCorrupt) || s == nil {
				t.Fatalf("Open of a corrupt file: %v, %v; want a store and ErrCorrupt", s, err)
			}
			if due := s.Due(at("2024-05-02T10:00:00Z")); len(due) != 0 {
				t.Errorf("corrupt store not empty: %+v", due)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("corrupt file still in place: %v", err)
			}
			aside, _ := filepath.Glob(path + ".corrupt.*")
			if len(aside) != 1 {
				t.Fatalf("files set aside: %q", aside)
			}
			if data, _ := os.ReadFile(aside[0]); string(data) != string(bad) {
				t.Errorf("the file set aside is not the corrupt one")
			}
			s.Record(success(sts("example.com")))
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			openStore(t, path, c)
		})
	}

	t.Run("unreadable", func(t *testing.T) {
		path := t.TempDir() // a directory: reading fails, nothing to set aside
		s, err := Open(path, c.now)
		if err == nil || errors.Is(err, ErrCorrupt) || s != nil {
			t.Fatalf("Open of a directory: %v, %v", s, err)
		}
	})
}

func TestStoreBounds(t *testing.T) {
	c := &clock{t: at("2024-05-01T10:00:00Z")}
	s := openStore(t, filepath.Join(t.TempDir(), "tlsrpt.json"), c)
	s.maxDomains, s.maxPolicies, s.maxDetails = 2, 2, 2

	s.Record(success(sts("a.example")))
	s.Record(success(sts("b.example")))
	s.Record(success(sts("c.example"))) // third domain: dropped
	if got := s.Dropped(); got != 1 {
		t.Errorf("Dropped = %d after a domain too many, want 1", got)
	}

	tlsa := Result{PolicyDomain: "a.example", PolicyType: PolicyTLSA, PolicyStrings: []string{"3 1 1 aa"}, Success: true}
	s.Record(tlsa)
	tlsa.PolicyStrings = []string{"3 1 1 bb"}
	s.Record(tlsa) // third policy: dropped
	if got := s.Dropped(); got != 2 {
		t.Errorf("Dropped = %d after a policy too many, want 2", got)
	}

	for _, ip := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.1", "::ffff:198.51.100.2"} {
		s.Record(failure(sts("b.example"), ResultCertificateNotTrusted, "mx.b.example", ip))
	}
	// invalid results are not counted
	s.Record(Result{PolicyDomain: "", PolicyType: PolicySTS})
	s.Record(Result{PolicyDomain: "bad domain", PolicyType: PolicySTS})
	s.Record(Result{PolicyDomain: "b.example", PolicyType: "dane"})
	if got := s.Dropped(); got != 5 {
		t.Errorf("Dropped = %d after invalid results, want 5", got)
	}

	c.set(at("2024-05-02T10:00:00Z"))
	r, err := s.Report("2024-05-01", "b.example", testOrg)
	if err != nil {
		t.Fatal(err)
	}
	p := r.Policies[0]
	if p.Summary != (Summary{1, 5}) {
		t.Errorf("summary %+v, want 1 success and all 5 failures", p.Summary)
	}
	var counts []int64
	for _, fd := range p.FailureDetails {
		counts = append(counts, fd.FailedSessionCount)
	}
	if !reflect.DeepEqual(counts, []int64{2, 2}) {
		t.Errorf("failure details counts %v, want [2 2]: the third IP folded into the total only", counts)
	}
	a, err := s.Report("2024-05-01", "a.example", testOrg)
	if err != nil || len(a.Policies) != 2 {
		t.Errorf("a.example: %+v, %v; want 2 policies", a, err)
	}

	// long strings are cut
	long := sts("a.example")
	long.FailureReasonCode = strings.Repeat("é", 2000)
	long.PolicyStrings = []string{strings.Repeat("x", 10000)}
	c.set(at("2024-05-02T10:00:00Z"))
	s.Record(long)
	c.set(at("2024-05-03T10:00:00Z"))
	r, err = s.Report("2024-05-02", "a.example", testOrg)
	if err != nil {
		t.Fatal(err)
	}
	got := r.Policies[0]
	if len(got.Policy.Strings[0]) != maxPolicyString || len(got.FailureDetails[0].FailureReasonCode) > maxTextLen {
		t.Errorf("strings not cut: %d, %d", len(got.Policy.Strings[0]), len(got.FailureDetails[0].FailureReasonCode))
	}
	if _, err := json.Marshal(r); err != nil {
		t.Error(err)
	}
}

func TestStorePrune(t *testing.T) {
	c := &clock{t: at("2024-05-01T10:00:00Z")}
	path := filepath.Join(t.TempDir(), "tlsrpt.json")
	s := openStore(t, path, c)
	s.Record(success(sts("example.com")))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	later := at("2024-05-01T10:00:00Z").AddDate(0, 0, KeepDays+1)
	if due := s.Due(later); len(due) != 0 {
		t.Errorf("Due %d days later = %+v, want nothing", KeepDays+1, due)
	}
	c.set(later)
	if due := openStore(t, path, c).Due(later); len(due) != 0 {
		t.Errorf("Due after reopening %d days later = %+v, want nothing", KeepDays+1, due)
	}
}

func TestStoreConcurrent(t *testing.T) {
	c := &clock{t: at("2024-05-01T10:00:00Z")}
	path := filepath.Join(t.TempDir(), "tlsrpt.json")
	s := openStore(t, path, c)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				if i%3 == 0 {
					s.Record(failure(sts("example.com"), ResultValidationFailure, "mx.example.com", "198.51.100.9"))
				} else {
					s.Record(success(sts("example.com")))
				}
				if g == 0 && i%50 == 0 {
					if err := s.Flush(); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	c.set(at("2024-05-02T10:00:00Z"))
	r, err := openStore(t, path, c).Report("2024-05-01", "example.com", testOrg)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Policies[0].Summary; got != (Summary{8 * 133, 8 * 67}) {
		t.Errorf("summary %+v after concurrent recording", got)
	}
}

func TestStoreNormalize(t *testing.T) {
	c := &clock{t: at("2024-05-01T10:00:00Z")}
	s := openStore(t, filepath.Join(t.TempDir(), "tlsrpt.json"), c)

	multi := sts("example.com")
	multi.MXHost = "*.mail.example.com MX2.Example.com., *.mail.example.com"
	s.Record(success(multi))
	f := failure(multi, ResultValidationFailure, "mx2.example.com", "198.51.100.2:25")
	f.AdditionalInfo = "mx2.example.com is not an MX of the policy"
	s.Record(f)
	f.AdditionalInfo, f.FailureReasonCode = "tls: handshake failure", "alert 40"
	s.Record(f)
	f.AdditionalInfo, f.FailureReasonCode = "https://sender.example/i?x=1", ""
	f.SendingIP = "fe80::1%eth0"
	s.Record(f)
	s.Record(Result{PolicyDomain: "bücher.example", PolicyType: PolicyNone, Success: true})

	c.set(at("2024-05-02T10:00:00Z"))
	r, err := s.Report("2024-05-01", "example.com", testOrg)
	if err != nil {
		t.Fatal(err)
	}
	p := r.Policies[0]
	if want := []string{"*.mail.example.com", "mx2.example.com"}; !reflect.DeepEqual(p.Policy.MXHost, want) {
		t.Errorf("mx-host %q, want %q", p.Policy.MXHost, want)
	}
	want := []FailureDetail{
		{ResultType: ResultValidationFailure, SendingMTAIP: "192.0.2.1", ReceivingMXHostname: "mx2.example.com", ReceivingIP: "198.51.100.2",
			FailedSessionCount: 1, FailureReasonCode: "alert 40 (tls: handshake failure)"},
		{ResultType: ResultValidationFailure, SendingMTAIP: "192.0.2.1", ReceivingMXHostname: "mx2.example.com", ReceivingIP: "198.51.100.2",
			FailedSessionCount: 1, FailureReasonCode: "mx2.example.com is not an MX of the policy"},
		{ResultType: ResultValidationFailure, SendingMTAIP: "fe80::1", ReceivingMXHostname: "mx2.example.com", ReceivingIP: "198.51.100.2",
			FailedSessionCount: 1, AdditionalInformation: "https://sender.example/i?x=1"},
	}
	if !reflect.DeepEqual(p.FailureDetails, want) {
		t.Errorf("failure details:\n%+v\nwant\n%+v", p.FailureDetails, want)
	}
	if due := s.Due(c.now()); len(due) != 1 || !reflect.DeepEqual(due[0].Domains, []string{"example.com", "xn--bcher-kva.example"}) {
		t.Errorf("Due = %+v, want the IDN in A-labels", due)
	}
}
