package mtasts

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"smtpd/internal/tlsrpt"
)

var errNXDomain = errors.New("test: no such domain")

// fakeDNS answers TXT lookups from a map; a name missing from it does
// not exist.
type fakeDNS struct {
	mu      sync.Mutex
	txt     map[string][]string
	err     error // returned for every lookup if set
	lookups int
}

func (f *fakeDNS) TXT(_ context.Context, name string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if f.err != nil {
		return nil, f.err
	}
	txt, ok := f.txt[name]
	if !ok {
		return nil, errNXDomain
	}
	return txt, nil
}

func (f *fakeDNS) set(name string, txt ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if txt == nil {
		delete(f.txt, name)
	} else {
		f.txt[name] = txt
	}
}

func (f *fakeDNS) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeDNS) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lookups
}

// policyHost serves the policies of several domains, by the Host of the
// request; a domain without one gets 404, or status if set.
type policyHost struct {
	mu       sync.Mutex
	policies map[string]string // domain: policy
	status   int
	gate     chan struct{} // if set, answers wait for it to close
}

func (h *policyHost) set(domain, policy string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.policies[domain] = policy
}

func (h *policyHost) setStatus(status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status = status
}

func (h *policyHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	host, _, _ := net.SplitHostPort(r.Host)
	body, ok := h.policies[strings.TrimPrefix(host, "mta-sts.")]
	status, gate := h.status, h.gate
	h.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if status != 0 {
		http.Error(w, "failing", status)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Write([]byte(body))
}

type resolverTest struct {
	r      *Resolver
	dns    *fakeDNS
	host   *policyHost
	server *policyServer
	clock  *clock
	logged []error
}

// newResolverTest returns a resolver for domains example.test and
// other.test, which have no TXT record and no policy yet.
func newResolverTest(t *testing.T) *resolverTest {
	t.Helper()
	ca := newTestCA(t)
	rt := &resolverTest{
		dns:   &fakeDNS{txt: map[string][]string{}},
		host:  &policyHost{policies: map[string]string{}},
		clock: newClock(),
	}
	rt.server = newPolicyServer(t, ca, ca.issue(t, "mta-sts.example.test", "mta-sts.other.test", "mta-sts.fresh.test"), rt.host.ServeHTTP)
	addr := rt.server.srv.Listener.Addr().String()
	rt.server.fetcher.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	rt.r = &Resolver{
		TXT:      rt.dns.TXT,
		NotFound: func(err error) bool { return errors.Is(err, errNXDomain) },
		Fetcher:  rt.server.fetcher,
		Cache:    &Cache{Dir: t.TempDir(), Now: rt.clock.Now},
		Log:      func(_ string, err error) { rt.logged = append(rt.logged, err) },
	}
	return rt
}

func (rt *resolverTest) fetches() int { return int(rt.server.hits.Load()) }

// policy calls Policy and checks the mode it returns, "" for none.
func (rt *resolverTest) policy(t *testing.T, domain string, mode Mode) *Policy {
	t.Helper()
	p, err := rt.r.Policy(t.Context(), domain)
	if err != nil {
		t.Fatalf("Policy(%s): %v", domain, err)
	}
	if p == nil && mode != "" || p != nil && p.Mode != mode {
		t.Fatalf("Policy(%s) = %+v, want mode %q", domain, p, mode)
	}
	return p
}

const (
	policyEnforce = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n"
	policyTesting = "version: STSv1\nmode: testing\nmx: mx2.example.test\nmax_age: 86400\n"
	policyNone    = "version: STSv1\nmode: none\nmax_age: 86400\n"
)

func TestResolverNoPolicy(t *testing.T) {
	rt := newResolverTest(t)
	rt.policy(t, "example.test", "")
	rt.dns.set("_mta-sts.example.test") // no such name
	rt.dns.set("_mta-sts.other.test", "v=spf1 -all", "some=thing")
	rt.policy(t, "other.test", "")
	rt.dns.set("_mta-sts.other.test", "") // a name whose TXT is empty
	rt.policy(t, "other.test", "")
	if rt.fetches() != 0 {
		t.Fatalf("%d fetches without an MTA-STS record", rt.fetches())
	}
}

func TestResolverFetchAndCache(t *testing.T) {
	rt := newResolverTest(t)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.set("example.test", policyEnforce)
	p := rt.policy(t, "Example.Test.", ModeEnforce)
	if p.ID != "1" || !p.Fetched.Equal(rt.clock.Now()) || !p.Match("mx.example.test") {
		t.Fatalf("policy %+v", p)
	}
	if c, ok := rt.r.Cache.Get("example.test"); !ok || !equalPolicy(c, p) {
		t.Fatalf("cached %+v, %v, want %+v", c, ok, p)
	}
	// the id is unchanged: no fetch, and the fetch time stays
	rt.clock.Advance(11 * time.Hour)
	for range 3 {
		if q := rt.policy(t, "example.test", ModeEnforce); !q.Fetched.Equal(p.Fetched) {
			t.Fatalf("fetch time changed to %v", q.Fetched)
		}
	}
	if rt.fetches() != 1 {
		t.Fatalf("%d fetches for an unchanged id, want 1", rt.fetches())
	}
	// half of max_age passed: fetched again, the cache renewed
	rt.clock.Advance(time.Hour)
	q := rt.policy(t, "example.test", ModeEnforce)
	if rt.fetches() != 2 || !q.Fetched.Equal(rt.clock.Now()) {
		t.Fatalf("%d fetches, fetch time %v, after half of max_age", rt.fetches(), q.Fetched)
	}
	rt.policy(t, "example.test", ModeEnforce)
	if rt.fetches() != 2 {
		t.Fatalf("%d fetches after renewal, want 2", rt.fetches())
	}
	if c, _ := rt.r.Cache.Get("example.test"); !c.Fetched.Equal(rt.clock.Now()) {
		t.Fatalf("cache not renewed: %+v", c)
	}
}

func TestResolverIDChanged(t *testing.T) {
	rt := newResolverTest(t)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.set("example.test", policyEnforce)
	rt.policy(t, "example.test", ModeEnforce)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=2")
	rt.host.set("example.test", policyTesting)
	rt.clock.Advance(time.Minute)
	p := rt.policy(t, "example.test", ModeTesting)
	if rt.fetches() != 2 || p.ID != "2" || !p.Match("mx2.example.test") {
		t.Fatalf("%d fetches, policy %+v", rt.fetches(), p)
	}
	if c, _ := rt.r.Cache.Get("example.test"); c.ID != "2" || c.Mode != ModeTesting {
		t.Fatalf("cache holds %+v", c)
	}
}

func TestResolverNoRecordUsesCache(t *testing.T) {
	rt := newResolverTest(t)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.set("example.test", policyEnforce)
	rt.policy(t, "example.test", ModeEnforce)
	// the record disappears (or an attacker hides it): the cached policy
	// holds until it expires
	rt.dns.set("_mta-sts.example.test")
	rt.clock.Advance(23 * time.Hour)
	rt.policy(t, "example.test", ModeEnforce)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1", "v=STSv1; id=2")
	rt.policy(t, "example.test", ModeEnforce)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=#")
	rt.policy(t, "example.test", ModeEnforce)
	if rt.fetches() != 1 {
		t.Fatalf("%d fetches, want 1", rt.fetches())
	}
	rt.clock.Advance(time.Hour)
	rt.dns.set("_mta-sts.example.test")
	rt.policy(t, "example.test", "")
}

func TestResolverFetchFailsUsesCache(t *testing.T) {
	rt := newResolverTest(t)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.set("example.test", policyEnforce)
	rt.policy(t, "example.test", ModeEnforce)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=2")
	rt.host.setStatus(http.StatusServiceUnavailable)
	rt.clock.Advance(time.Hour)
	p := rt.policy(t, "example.test", ModeEnforce)
	if p.ID != "1" || rt.fetches() != 2 || len(rt.logged) != 1 || ResultType(rt.logged[0]) != tlsrpt.ResultSTSPolicyFetchError {
		t.Fatalf("policy %+v after %d fetches, logged %v", p, rt.fetches(), rt.logged)
	}
	// the renewal at half max_age fails too: still the cached policy
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.clock.Advance(12 * time.Hour)
	if p := rt.policy(t, "example.test", ModeEnforce); rt.fetches() != 3 || p.ID != "1" {
		t.Fatalf("policy %+v after %d fetches", p, rt.fetches())
	}
	// expired: the failure is the caller's
	rt.clock.Advance(12 * time.Hour)
	p, err := rt.r.Policy(t.Context(), "example.test")
	var fe *FetchError
	if p != nil || !errors.As(err, &fe) || fe.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("Policy with an expired cache = %+v, %v", p, err)
	}
}

func TestResolverFetchFailsNoCache(t *testing.T) {
	rt := newResolverTest(t)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.set("example.test", "version: STSv1\nmode: enforce\nmax_age: 86400\n")
	p, err := rt.r.Policy(t.Context(), "example.test")
	if p != nil || ResultType(err) != tlsrpt.ResultSTSPolicyInvalid {
		t.Fatalf("Policy = %+v, %v, want sts-policy-invalid", p, err)
	}
	if ds, _ := rt.r.Cache.Domains(); len(ds) != 0 {
		t.Fatalf("cached %v after a failure", ds)
	}
}

func TestResolverDNSFailure(t *testing.T) {
	rt := newResolverTest(t)
	rt.dns.fail(errors.New("server failure"))
	p, err := rt.r.Policy(t.Context(), "example.test")
	if p != nil || err == nil || !strings.Contains(err.Error(), "server failure") || ResultType(err) != "" {
		t.Fatalf("Policy without cache during a DNS failure = %+v, %v", p, err)
	}
	rt.dns.fail(nil)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.set("example.test", policyEnforce)
	rt.policy(t, "example.test", ModeEnforce)
	rt.dns.fail(errors.New("server failure"))
	rt.clock.Advance(time.Hour)
	rt.policy(t, "example.test", ModeEnforce)
	if rt.fetches() != 1 || len(rt.logged) != 1 {
		t.Fatalf("%d fetches, logged %v", rt.fetches(), rt.logged)
	}
}

func TestResolverInvalidRecord(t *testing.T) {
	rt := newResolverTest(t)
	for _, txt := range [][]string{{"v=STSv1; id=1", "v=STSv1; id=2"}, {"v=STSv1; id=#"}, {"v=STSv1"}} {
		rt.dns.set("_mta-sts.example.test", txt...)
		p, err := rt.r.Policy(t.Context(), "example.test")
		if p != nil || ResultType(err) != tlsrpt.ResultSTSPolicyInvalid {
			t.Fatalf("Policy with TXT %q = %+v, %v", txt, p, err)
		}
	}
	if rt.fetches() != 0 {
		t.Fatalf("%d fetches for invalid records", rt.fetches())
	}
}

func TestResolverCorruptCache(t *testing.T) {
	rt := newResolverTest(t)
	if err := os.WriteFile(filepath.Join(rt.r.Cache.Dir, "example.test"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.set("example.test", policyEnforce)
	rt.policy(t, "example.test", ModeEnforce)
	if len(rt.logged) != 1 || !errors.Is(rt.logged[0], ErrCacheCorrupt) {
		t.Fatalf("logged %v, want the corrupt entry", rt.logged)
	}
	if p, ok := rt.r.Cache.Get("example.test"); !ok || p.ID != "1" {
		t.Fatalf("corrupt entry not replaced: %+v, %v", p, ok)
	}
}

func TestResolverModeNone(t *testing.T) {
	rt := newResolverTest(t)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=9")
	rt.host.set("example.test", policyNone)
	rt.policy(t, "example.test", ModeNone)
	rt.policy(t, "example.test", ModeNone)
	if c, ok := rt.r.Cache.Get("example.test"); !ok || c.Mode != ModeNone || rt.fetches() != 1 {
		t.Fatalf("cached %+v, %v after %d fetches", c, ok, rt.fetches())
	}
}

func TestResolverDefaultNotFound(t *testing.T) {
	rt := newResolverTest(t)
	rt.r.NotFound = nil
	rt.dns.fail(&net.DNSError{Err: "no such host", Name: "_mta-sts.example.test", IsNotFound: true})
	if p, err := rt.r.Policy(t.Context(), "example.test"); p != nil || err != nil {
		t.Fatalf("Policy on NXDOMAIN = %+v, %v", p, err)
	}
	rt.dns.fail(&net.DNSError{Err: "timeout", Name: "_mta-sts.example.test", IsTimeout: true})
	if _, err := rt.r.Policy(t.Context(), "example.test"); err == nil {
		t.Fatal("a timeout is taken for no record")
	}
}

func TestResolverWithoutCache(t *testing.T) {
	rt := newResolverTest(t)
	rt.r.Cache = nil
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.set("example.test", policyEnforce)
	rt.policy(t, "example.test", ModeEnforce)
	rt.policy(t, "example.test", ModeEnforce)
	if rt.fetches() != 2 {
		t.Fatalf("%d fetches without a cache, want 2", rt.fetches())
	}
	if err := rt.r.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
}

func TestResolverConcurrentFetchesShared(t *testing.T) {
	rt := newResolverTest(t)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.set("example.test", policyEnforce)
	release := make(chan struct{})
	rt.host.mu.Lock()
	rt.host.gate = release
	rt.host.mu.Unlock()
	const n = 8
	var wg sync.WaitGroup
	policies := make([]*Policy, n)
	for i := range n {
		wg.Go(func() {
			policies[i], _ = rt.r.Policy(t.Context(), "example.test")
		})
	}
	for rt.dns.count() < n {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	for i, p := range policies {
		if p == nil || p.Mode != ModeEnforce {
			t.Fatalf("caller %d got %+v", i, p)
		}
		if i > 0 && &p.MX[0] == &policies[0].MX[0] {
			t.Fatal("callers share a policy")
		}
	}
	if rt.fetches() != 1 {
		t.Fatalf("%d fetches for concurrent callers, want 1", rt.fetches())
	}
}

func TestResolverRefresh(t *testing.T) {
	rt := newResolverTest(t)
	c := rt.r.Cache
	now := rt.clock.Now()
	due := testPolicy(now.Add(-13 * time.Hour)) // past half of its day
	due.ID = "old"
	fresh := testPolicy(now.Add(-time.Hour))
	expired := testPolicy(now.Add(-25 * time.Hour))
	failing := testPolicy(now.Add(-16 * time.Hour))
	failing.MaxAge = 30 * time.Hour // due now, not expired after 12 hours more
	for d, p := range map[string]*Policy{"example.test": due, "fresh.test": fresh, "expired.test": expired, "other.test": failing} {
		if err := c.Put(d, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "corrupt.test"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	// example.test serves a new policy, and its record a new id, even
	// if hidden the refresh fetches; other.test fails
	rt.host.set("example.test", policyTesting)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=new")
	err := rt.r.Refresh(t.Context())
	if err == nil || !errors.Is(err, ErrCacheCorrupt) || ResultType(err) != tlsrpt.ResultSTSPolicyFetchError {
		t.Fatalf("Refresh error %v, want the corrupt entry and other.test's failure", err)
	}
	if rt.fetches() != 2 {
		t.Fatalf("%d fetches, want 2 (example.test, other.test)", rt.fetches())
	}
	if p, ok := c.Get("example.test"); !ok || p.Mode != ModeTesting || p.ID != "new" || !p.Fetched.Equal(now) {
		t.Fatalf("example.test after refresh: %+v, %v", p, ok)
	}
	if p, ok := c.Get("fresh.test"); !ok || !equalPolicy(p, fresh) {
		t.Fatalf("fresh.test after refresh: %+v, %v", p, ok)
	}
	if p, ok := c.Get("other.test"); !ok || !equalPolicy(p, failing) {
		t.Fatalf("other.test after a failed refresh: %+v, %v", p, ok)
	}
	ds, _ := c.Domains()
	if strings.Contains(strings.Join(ds, " "), "expired.test") || strings.Contains(strings.Join(ds, " "), "corrupt.test") {
		t.Fatalf("expired or corrupt entries kept: %v", ds)
	}

	// the TXT record is hidden: the refresh still fetches, keeping the id
	rt.dns.set("_mta-sts.example.test")
	rt.host.set("example.test", policyEnforce)
	rt.host.set("other.test", policyEnforce)
	rt.host.set("fresh.test", policyEnforce)
	rt.clock.Advance(12 * time.Hour)
	if err := rt.r.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if p, _ := c.Get("example.test"); p.Mode != ModeEnforce || p.ID != "new" || !p.Fetched.Equal(rt.clock.Now()) {
		t.Fatalf("example.test after refresh without TXT: %+v", p)
	}
	if p, _ := c.Get("other.test"); p.ID != failing.ID || !p.Fetched.Equal(rt.clock.Now()) {
		t.Fatalf("other.test after refresh: %+v", p)
	}

	// a canceled context stops the refresh
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rt.clock.Advance(12 * time.Hour)
	if err := rt.r.Refresh(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Refresh with a canceled context: %v", err)
	}
}

func TestResolverBackoff(t *testing.T) {
	rt := newResolverTest(t)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.setStatus(http.StatusServiceUnavailable)
	fails := func(fetches int) {
		t.Helper()
		p, err := rt.r.Policy(t.Context(), "example.test")
		if p != nil || ResultType(err) != tlsrpt.ResultSTSPolicyFetchError || rt.fetches() != fetches {
			t.Fatalf("Policy = %+v, %v after %d fetches, want a fetch error after %d", p, err, rt.fetches(), fetches)
		}
	}
	fails(1)
	fails(1) // remembered, not tried again
	rt.clock.Advance(DefaultBackoff - time.Second)
	fails(1)
	rt.clock.Advance(time.Second)
	fails(2)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=2") // a new id is tried at once
	fails(3)
	rt.host.setStatus(0)
	rt.host.set("example.test", policyEnforce)
	fails(3)
	rt.clock.Advance(DefaultBackoff)
	rt.policy(t, "example.test", ModeEnforce)
	if rt.fetches() != 4 {
		t.Fatalf("%d fetches, want 4", rt.fetches())
	}

	rt.r.Backoff = -1
	rt.r.Cache = nil
	rt.host.setStatus(http.StatusServiceUnavailable)
	fails(5)
	fails(6)
}

func TestResolverCanceledFetchNotRemembered(t *testing.T) {
	rt := newResolverTest(t)
	rt.dns.set("_mta-sts.example.test", "v=STSv1; id=1")
	rt.host.set("example.test", policyEnforce)
	ctx, cancel := context.WithCancel(t.Context())
	rt.r.TXT = func(ctx context.Context, name string) ([]string, error) {
		defer cancel() // the caller gives up while the fetch starts
		return rt.dns.TXT(ctx, name)
	}
	if p, err := rt.r.Policy(ctx, "example.test"); p != nil || err == nil {
		t.Fatalf("Policy with a canceled context = %+v, %v", p, err)
	}
	rt.policy(t, "example.test", ModeEnforce)
}
