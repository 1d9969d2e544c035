package lookup

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/table"
)

// maxCached bounds the answers kept per table: past it the cache is
// emptied, which costs lookups, never memory.
const maxCached = 100000

// backendTable is a table kept outside smtpd, with its cache.
type backendTable struct {
	b       table.Backend
	ttl     time.Duration
	timeout time.Duration

	mu    sync.Mutex
	cache map[cacheKey]cached
}

type cacheKey struct {
	service table.Service
	key     string
}

// cached is an answer, found or not (negative caching keeps a database
// from being asked again and again for the same stranger).
type cached struct {
	value   string
	found   bool
	expires time.Time
}

func newBackendTable(b table.Backend, e *config.External) *backendTable {
	return &backendTable{b: b, ttl: e.Cache, timeout: e.Timeout, cache: map[cacheKey]cached{}}
}

// lookup asks the backend, or the cache while its answer is fresh; a
// failure is never cached.
func (bt *backendTable) lookup(service table.Service, key string) (string, bool, error) {
	k := cacheKey{service, key}
	now := time.Now()
	if bt.ttl > 0 {
		bt.mu.Lock()
		c, ok := bt.cache[k]
		bt.mu.Unlock()
		if ok && now.Before(c.expires) {
			return c.value, c.found, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), bt.timeout)
	defer cancel()
	v, found, err := bt.b.Lookup(ctx, service, key)
	if err != nil {
		return "", false, err
	}
	if bt.ttl > 0 {
		bt.mu.Lock()
		if len(bt.cache) >= maxCached {
			bt.cache = map[cacheKey]cached{}
		}
		bt.cache[k] = cached{v, found, now.Add(bt.ttl)}
		bt.mu.Unlock()
	}
	return v, found, nil
}

// flush forgets the cached answers and tells a table program to read
// its data again (smtpctl update table).
func (bt *backendTable) flush() error {
	bt.mu.Lock()
	bt.cache = map[cacheKey]cached{}
	bt.mu.Unlock()
	if u, ok := bt.b.(interface{ Update(context.Context) error }); ok {
		ctx, cancel := context.WithTimeout(context.Background(), bt.timeout)
		defer cancel()
		return u.Update(ctx)
	}
	return nil
}

// tableError is a table that cannot answer now: a temporary failure.
type tableError struct {
	table string
	err   error
}

func (e *tableError) Error() string { return fmt.Sprintf("table %s: %v", e.table, e.err) }
func (e *tableError) Unwrap() error { return e.err }

// tableLookup returns the value of key in t for service: from memory,
// or from the table's backend.
func (r *Resolver) tableLookup(t *config.Table, service table.Service, key string) (string, bool, error) {
	if bt := r.Backends[t.ID]; bt != nil {
		v, found, err := bt.lookup(service, key)
		if err != nil {
			return "", false, &tableError{t.Name, err}
		}
		return v, found, nil
	}
	v, ok := t.Data.Lookup(key)
	return v, ok, nil
}

// tableHasIP reports whether ip is in t's networks.
func (r *Resolver) tableHasIP(t *config.Table, ip netip.Addr) (bool, error) {
	if r.Backends[t.ID] != nil {
		_, found, err := r.tableLookup(t, table.Netaddr, ip.String())
		return found, err
	}
	return t.Data.HasIP(ip), nil
}

// tableHasAddress reports whether t holds the address, or its
// "@domain".
func (r *Resolver) tableHasAddress(t *config.Table, addr string) (bool, error) {
	if r.Backends[t.ID] == nil {
		return t.Data.HasAddress(addr), nil
	}
	addr = strings.ToLower(addr)
	keys := []string{addr}
	if at := strings.LastIndexByte(addr, '@'); at >= 0 {
		keys = append(keys, addr[at:])
	}
	for _, k := range keys {
		if _, found, err := r.tableLookup(t, table.Mailaddr, k); err != nil || found {
			return found, err
		}
	}
	return false, nil
}

// ShowTable performs one lookup in the named table, for smtpctl show
// table: the value, "found" for a set, "not found", or the error.
// Without a service, that of the table's only query, or alias.
func (r *Resolver) ShowTable(name, service, key string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var t *config.Table
	for _, tb := range r.Config.Tables {
		if !tb.Inline && tb.Name == name {
			t = tb
		}
	}
	if t == nil {
		return fmt.Sprintf("no table %q", name)
	}
	s := table.Service(service)
	if s == "" {
		s = table.Alias
		if t.External != nil && len(t.External.Queries) == 1 {
			for only := range t.External.Queries {
				s = only
			}
		}
	}
	v, found, err := r.tableLookup(t, s, key)
	switch {
	case err != nil:
		return "error: " + err.Error()
	case !found:
		return "not found"
	case v == "":
		return "found"
	}
	return v
}
