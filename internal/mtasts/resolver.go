package mtasts

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"sync"
	"time"
)

// Resolver discovers the policy of a recipient domain (RFC 8461 §3.3,
// §5.1): it looks up the TXT record, takes the cached policy while the
// record's id is the cached one's, fetches the policy when the id
// changed or nothing is cached, and falls back on an unexpired cached
// policy when DNS or the fetch fails. Refresh fetches again the cached
// policies that are half through their max_age (§10.2).
//
// Concurrent fetches of one domain's policy are made once. A failed
// fetch is remembered for Backoff, and its error returned meanwhile
// without trying again, so that a domain whose policy server hangs does
// not hold up every delivery to it for the fetch timeout. A Resolver
// may be used by several goroutines at once, and must not be copied
// after first use.
type Resolver struct {
	// TXT returns the TXT records of name, each record's strings
	// joined.
	TXT func(ctx context.Context, name string) ([]string, error)
	// NotFound reports whether an error of TXT means that the name has
	// no TXT record (NXDOMAIN), a domain without MTA-STS rather than a
	// failed lookup. nil means an error that is a *net.DNSError with
	// IsNotFound. With package dns, pass dns.IsPermanent. An empty
	// answer without an error also counts as no record.
	NotFound func(error) bool
	// Fetcher fetches policies; nil means a zero Fetcher.
	Fetcher *Fetcher
	// Cache keeps policies; nil means none are kept. Its clock is the
	// resolver's.
	Cache *Cache
	// Log, if set, is told of the failures Policy hides: a failed
	// lookup or fetch when it uses a cached policy, a cache entry it
	// cannot read, a failed cache write.
	Log func(domain string, err error)
	// Backoff is how long a failed fetch is not tried again for the
	// same record id; 0 means DefaultBackoff, a negative value none.
	Backoff time.Duration

	mu       sync.Mutex
	flights  map[string]*flight
	failures map[string]failure
}

// DefaultBackoff is the default of Resolver.Backoff.
const DefaultBackoff = 5 * time.Minute

// failure is a failed fetch of a domain's policy for record id,
// returned again until until.
type failure struct {
	id    string
	until time.Time
	err   error
}

// flight is a fetch of one domain's policy under way, which the callers
// that want the same policy meanwhile wait for.
type flight struct {
	done chan struct{}
	p    *Policy
	err  error
}

func (r *Resolver) now() time.Time {
	if r.Cache != nil {
		return r.Cache.now()
	}
	return time.Now()
}

func (r *Resolver) log(domain string, err error) {
	if r.Log != nil {
		r.Log(domain, err)
	}
}

func (r *Resolver) notFound(err error) bool {
	if r.NotFound != nil {
		return r.NotFound(err)
	}
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.IsNotFound
}

// cached returns the unexpired cached policy of domain, if any,
// logging why a cache entry could not be read.
func (r *Resolver) cached(domain string) (*Policy, bool) {
	if r.Cache == nil {
		return nil, false
	}
	p, err := r.Cache.Load(domain)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			r.log(domain, err)
		}
		return nil, false
	}
	if p.expired(r.now()) {
		return nil, false
	}
	return p, true
}

// Policy returns the policy that applies to mail for domain (RFC 8461
// §5.1), or nil and no error when the domain publishes none. A policy
// of mode none is returned (and cached) as any other: the caller treats
// it as no policy.
//
//   - Without a TXT record, or with an invalid one or several, the
//     unexpired cached policy is returned if there is one; otherwise
//     nil, and for an invalid record an error (wrapping ErrRecordSyntax
//     or ErrMultipleRecords).
//   - A failed TXT lookup returns the unexpired cached policy if there
//     is one, and the error otherwise.
//   - If the record's id is that of the unexpired cached policy, that
//     policy applies: the id is unchanged, so is the policy. Its max_age
//     still counts from its fetch, so once half of it has passed the
//     policy is fetched again and the cache renewed, the cached policy
//     standing in if that fails (§10.2).
//   - Otherwise the policy is fetched and cached. If that fails, the
//     unexpired cached policy is returned if there is one, and the
//     *FetchError otherwise.
//
// An error means that no policy is known: the caller delivers as
// without MTA-STS, and may report the failure (ResultType).
func (r *Resolver) Policy(ctx context.Context, domain string) (*Policy, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return nil, fmt.Errorf("MTA-STS: %w", err)
	}
	cached, haveCached := r.cached(d)
	id, err := r.lookup(ctx, d)
	if err != nil {
		if haveCached {
			if !errors.Is(err, ErrNoRecord) {
				r.log(d, fmt.Errorf("%w; using the cached policy", err))
			}
			return cached, nil
		}
		if errors.Is(err, ErrNoRecord) {
			return nil, nil
		}
		return nil, err
	}
	if haveCached && cached.ID == id {
		if r.now().Sub(cached.Fetched) < cached.MaxAge/2 {
			return cached, nil
		}
		p, err := r.fetch(ctx, d, id)
		if err != nil {
			r.log(d, fmt.Errorf("renewing the policy: %w; using the cached one", err))
			return cached, nil
		}
		return p, nil
	}
	p, err := r.fetch(ctx, d, id)
	if err != nil {
		if haveCached {
			r.log(d, fmt.Errorf("%w; using the cached policy", err))
			return cached, nil
		}
		return nil, err
	}
	return p, nil
}

// lookup returns the id of the MTA-STS TXT record of domain. A name
// without TXT records gives ErrNoRecord, as a name without an MTA-STS
// record.
func (r *Resolver) lookup(ctx context.Context, domain string) (string, error) {
	if r.TXT == nil {
		return "", errors.New("MTA-STS: Resolver without TXT lookup")
	}
	name := "_mta-sts." + domain
	txt, err := r.TXT(ctx, name)
	if err != nil {
		if r.notFound(err) {
			return "", ErrNoRecord
		}
		return "", fmt.Errorf("MTA-STS: looking up TXT %s: %w", name, err)
	}
	id, err := ParseTXT(txt)
	if err != nil && !errors.Is(err, ErrNoRecord) {
		return "", fmt.Errorf("MTA-STS: %s: %w", name, err)
	}
	return id, err
}

// fetch fetches the policy of domain for the record id and caches it.
// Concurrent fetches of one domain are made once: the others wait for
// it, and get their own copy. A failure is remembered (Backoff).
func (r *Resolver) fetch(ctx context.Context, domain, id string) (*Policy, error) {
	r.mu.Lock()
	if fl, ok := r.failures[domain]; ok && fl.id == id && r.now().Before(fl.until) {
		r.mu.Unlock()
		return nil, fl.err
	}
	if f, ok := r.flights[domain]; ok {
		r.mu.Unlock()
		select {
		case <-f.done:
			if f.err != nil {
				return nil, f.err
			}
			return f.p.clone(), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	if r.flights == nil {
		r.flights = map[string]*flight{}
	}
	r.flights[domain] = f
	r.mu.Unlock()

	f.p, f.err = r.fetchAndStore(ctx, domain, id)

	r.mu.Lock()
	delete(r.flights, domain)
	// a fetch the caller gave up on says nothing of the domain
	if f.err == nil || ctx.Err() == nil {
		r.remember(domain, id, f.err)
	}
	r.mu.Unlock()
	close(f.done)
	if f.err != nil {
		return nil, f.err
	}
	return f.p.clone(), nil
}

// remember records the outcome of a fetch of domain's policy for id,
// with r.mu held, and forgets the failures whose time is up.
func (r *Resolver) remember(domain, id string, err error) {
	now := r.now()
	for d, fl := range r.failures {
		if !now.Before(fl.until) {
			delete(r.failures, d)
		}
	}
	backoff := r.Backoff
	if backoff == 0 {
		backoff = DefaultBackoff
	}
	if err == nil || backoff < 0 {
		delete(r.failures, domain)
		return
	}
	if r.failures == nil {
		r.failures = map[string]failure{}
	}
	r.failures[domain] = failure{id: id, until: now.Add(backoff), err: err}
}

func (r *Resolver) fetchAndStore(ctx context.Context, domain, id string) (*Policy, error) {
	fetcher := r.Fetcher
	if fetcher == nil {
		fetcher = &Fetcher{}
	}
	p, err := fetcher.Fetch(ctx, domain)
	if err != nil {
		return nil, err
	}
	p.ID, p.Fetched = id, r.now()
	if r.Cache != nil {
		if err := r.Cache.Put(domain, p); err != nil {
			// the policy is good even if it could not be kept
			r.log(domain, err)
		}
	}
	return p, nil
}

// Refresh fetches again the cached policies that are half through their
// max_age, so that they do not run out while the domain's TXT record is
// being hidden (RFC 8461 §10.2 proactive refresh). It fetches whatever
// the TXT record says, and takes the record's id if it has one, keeping
// the cached id otherwise. Expired and corrupt entries are removed. The
// errors of all domains are returned joined; a failed refresh leaves
// the cached policy as it was.
func (r *Resolver) Refresh(ctx context.Context) error {
	if r.Cache == nil {
		return nil
	}
	domains, err := r.Cache.Domains()
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range domains {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		p, err := r.Cache.Load(d)
		switch {
		case errors.Is(err, ErrCacheCorrupt):
			errs = append(errs, err)
			if err := r.Cache.Remove(d); err != nil {
				errs = append(errs, err)
			}
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		}
		now := r.now()
		if p.expired(now) {
			if err := r.Cache.Remove(d); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if now.Sub(p.Fetched) < p.MaxAge/2 {
			continue
		}
		id := p.ID
		if newID, err := r.lookup(ctx, d); err == nil {
			id = newID
		}
		if _, err := r.fetch(ctx, d, id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
