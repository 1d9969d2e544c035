// Package ldaptable answers table lookups from an LDAP directory, with a
// search filter and attributes per service, as OpenSMTPD's table-ldap
// does. A Table is a table.Backend.
//
// A filter holds %s where the key goes; the key is escaped first
// (RFC 4515, ldap.EscapeFilter), so a key such as "*" or "a)(uid=*"
// matches only itself, unlike table-ldap, which pastes it in with
// snprintf. The values, by service:
//
//	alias        1+ attributes; every value of every matching entry, joined with ", "
//	domain       0-1 attribute; found when an entry matches, value its first value
//	credentials  2 attributes, user and password: "user:password"
//	netaddr      0-1 attribute, as domain
//	userinfo     3 attributes, uid, gid and home: "uid:gid:home"
//	source       0-1 attribute, as domain
//	mailaddr     0-1 attribute, as domain
//	addrname     0-1 attribute, as domain
//	mailaddrmap  1+ attributes, as alias
//
// Credentials and userinfo need exactly one matching entry, which has
// all the attributes: LDAP returns entries in no particular order, so
// two answers for one user are a fault of the directory, not a choice.
//
// A failure (server down, slow, refusing the bind, an answer that does
// not fit the service) is an error, never "not found": the caller turns
// it into a temporary failure.
package ldaptable

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"

	"smtpd/internal/table"
)

// DefaultTimeout bounds a lookup of the zero Options.
const DefaultTimeout = 10 * time.Second

// redialHoldoff is how long lookups fail at once after a failed connect
// or bind, instead of each trying again: a directory that is down or
// refuses our password is not asked by every recipient of a burst, and
// the lookups tempfail without waiting for a timeout each.
const redialHoldoff = time.Second

// maxEntries and maxValue bound a joined value: a filter that matches
// the whole directory by mistake fails instead of filling the memory of
// the lookup process and the imsg that carries the answer.
const (
	maxEntries = 1 << 12
	maxValue   = 1 << 20
)

// ErrNoQuery is wrapped by the error of a lookup for a service the
// table has no query for.
var ErrNoQuery = errors.New("ldaptable: no query for the service")

// ErrClosed is wrapped by the error of a lookup after Close.
var ErrClosed = errors.New("ldaptable: table closed")

// Options say which directory a Table asks and how.
type Options struct {
	// URL is ldap://host[:port] or ldaps://host[:port] (ports 389 and
	// 636 by default). Its path, if any, must be empty: the base is
	// Base.
	URL string
	// StartTLS upgrades an ldap:// connection with the StartTLS
	// operation before binding; a failure to do so is an error, never
	// a reason to go on in clear.
	StartTLS bool
	// TLSConfig is for ldaps:// and StartTLS; nil means the system
	// roots. Its ServerName defaults to the URL's host.
	TLSConfig *tls.Config
	// BindDN and BindPassword are the simple bind of every
	// connection; the password was read by the caller from a file.
	// Both empty means anonymous. The password is in no error.
	BindDN, BindPassword string
	// Base is the DN the searches start at (whole subtree).
	Base string
	// Queries are the filter and attributes of each service the table
	// answers.
	Queries map[table.Service]Query
	// Timeout bounds a whole lookup: waiting for a connection,
	// connecting, TLS, binding and the search. 0 means DefaultTimeout.
	Timeout time.Duration
}

// Query is a service's search.
type Query struct {
	// Filter is an LDAP filter (RFC 4515) in which every %s is
	// replaced by the escaped key, e.g. "(&(objectClass=nisMailAlias)(cn=%s))".
	Filter string
	// Attributes are the attributes the value is made of, in the order
	// of the service's value (see the package documentation).
	Attributes []string
}

// Table is a table kept in an LDAP directory. It is safe for concurrent
// use: lookups share one connection, on which go-ldap multiplexes
// requests by message id, and it is dialled and bound again, on the
// next lookup, after it fails.
type Table struct {
	url       string // for errors
	addr      string // host:port
	ldaps     bool
	startTLS  bool
	tlsConfig *tls.Config
	bindDN    string
	bindPW    string
	base      string
	queries   map[table.Service]Query
	timeout   time.Duration
	timeLimit int // seconds, the server's own bound on a search

	mu      sync.Mutex
	cur     *conn         // nil until dialled, and after a failure
	dialing chan struct{} // closed when the dial in progress ends
	lastErr error         // of the last failed dial ...
	retryAt time.Time     // ... which holds off dialling until then
	closed  bool
}

var _ table.Backend = (*Table)(nil)

// Open returns a Table for o. It checks the options, and that each
// filter compiles, but does not connect: the directory may be down when
// smtpd starts and come back later. Ping connects.
func Open(o Options) (*Table, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("ldaptable: url: %w", err)
	}
	t := &Table{
		url:      o.URL,
		startTLS: o.StartTLS,
		bindDN:   o.BindDN,
		bindPW:   o.BindPassword,
		base:     o.Base,
		queries:  map[table.Service]Query{},
		timeout:  o.Timeout,
	}
	port := "389"
	switch u.Scheme {
	case "ldap":
	case "ldaps":
		t.ldaps, port = true, "636"
	default:
		return nil, fmt.Errorf("ldaptable: url %q: scheme is not ldap or ldaps", o.URL)
	}
	if u.Hostname() == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("ldaptable: url %q: want ldap[s]://host[:port] only (the base is a separate option)", o.URL)
	}
	if u.Port() != "" {
		port = u.Port()
	}
	t.addr = net.JoinHostPort(u.Hostname(), port)
	if o.StartTLS && t.ldaps {
		return nil, fmt.Errorf("ldaptable: url %q: StartTLS on ldaps", o.URL)
	}
	if t.ldaps || o.StartTLS {
		if o.TLSConfig != nil {
			t.tlsConfig = o.TLSConfig.Clone()
		} else {
			t.tlsConfig = &tls.Config{}
		}
		if t.tlsConfig.ServerName == "" {
			t.tlsConfig.ServerName = u.Hostname()
		}
	}
	// go-ldap refuses a bind with an empty password (an
	// "unauthenticated bind" would succeed as anonymous on many
	// servers), so a DN without a password is a mistake to report now
	if (o.BindDN == "") != (o.BindPassword == "") {
		return nil, errors.New("ldaptable: BindDN and BindPassword go together (both empty binds anonymously)")
	}
	if o.Base == "" {
		return nil, errors.New("ldaptable: no base DN")
	}
	if _, err := ldap.ParseDN(o.Base); err != nil {
		return nil, fmt.Errorf("ldaptable: base %q: %w", o.Base, err)
	}
	if t.timeout < 0 {
		return nil, fmt.Errorf("ldaptable: negative timeout %v", t.timeout)
	}
	if t.timeout == 0 {
		t.timeout = DefaultTimeout
	}
	t.timeLimit = int((t.timeout + time.Second - 1) / time.Second)
	if len(o.Queries) == 0 {
		return nil, errors.New("ldaptable: no queries")
	}
	for s, q := range o.Queries {
		if err := checkQuery(s, q); err != nil {
			return nil, err
		}
		t.queries[s] = Query{Filter: q.Filter, Attributes: slices.Clone(q.Attributes)}
	}
	return t, nil
}

// attributes is how many attributes the query of each service names.
func attributes(s table.Service) (lo, hi int) {
	switch s {
	case table.Alias, table.Mailaddrmap:
		return 1, 8
	case table.Credentials:
		return 2, 2
	case table.Userinfo:
		return 3, 3
	}
	return 0, 1
}

// checkQuery reports a query that could never answer for its service.
func checkQuery(s table.Service, q Query) error {
	if !slices.Contains(table.Services, s) {
		return fmt.Errorf("ldaptable: unknown service %q", s)
	}
	if !strings.Contains(q.Filter, "%s") {
		return fmt.Errorf("ldaptable: %s filter %q has no %%s for the key", s, q.Filter)
	}
	// a key that needs escaping, to compile what lookups will send
	if _, err := ldap.CompileFilter(expand(q.Filter, "x*(y)\\")); err != nil {
		return fmt.Errorf("ldaptable: %s filter %q: %w", s, q.Filter, err)
	}
	lo, hi := attributes(s)
	if n := len(q.Attributes); n < lo || n > hi {
		if lo == hi {
			return fmt.Errorf("ldaptable: %s wants %d attributes, not %d", s, lo, n)
		}
		return fmt.Errorf("ldaptable: %s wants %d to %d attributes, not %d", s, lo, hi, n)
	}
	for _, a := range q.Attributes {
		if a == "" || strings.ContainsAny(a, " \t\r\n()*\\") {
			return fmt.Errorf("ldaptable: %s: bad attribute name %q", s, a)
		}
	}
	return nil
}

// expand puts the escaped key into filter.
func expand(filter, key string) string {
	return strings.ReplaceAll(filter, "%s", ldap.EscapeFilter(key))
}

// Lookup returns the value of key for service. The lookup is bounded
// by the Timeout as well as by ctx.
func (t *Table) Lookup(ctx context.Context, service table.Service, key string) (string, bool, error) {
	q, ok := t.queries[service]
	if !ok {
		return "", false, fmt.Errorf("%w: %s", ErrNoQuery, service)
	}
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	// sets need one entry to answer, credentials and userinfo two to
	// tell an ambiguous answer; the server stops there (sizeLimitExceeded)
	limit := 1
	switch service {
	case table.Alias, table.Mailaddrmap:
		limit = maxEntries
	case table.Credentials, table.Userinfo:
		limit = 2
	}
	entries, err := t.search(ctx, expand(q.Filter, key), q.Attributes, limit)
	if err != nil {
		return "", false, fmt.Errorf("ldaptable: %s: %s lookup: %w", t.url, service, err)
	}
	if len(entries) == 0 {
		return "", false, nil
	}
	v, err := format(service, q.Attributes, entries)
	if err != nil {
		return "", false, fmt.Errorf("ldaptable: %s: %s lookup: %w", t.url, service, err)
	}
	return v, true, nil
}

// Ping connects and binds if no connection is up, and checks that the
// base exists: for a configuration check, or to fail early.
func (t *Table) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	c, err := t.conn(ctx)
	if err != nil {
		return fmt.Errorf("ldaptable: %s: %w", t.url, err)
	}
	// "1.1" asks for no attributes (RFC 4511 section 4.5.1.8)
	req := ldap.NewSearchRequest(t.base, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 1, t.timeLimit, false,
		"(objectClass=*)", []string{"1.1"}, nil)
	entries, err := t.run(ctx, c, req)
	if err == nil && len(entries) == 0 {
		err = errors.New("base not visible to the bind DN")
	}
	if err != nil {
		return fmt.Errorf("ldaptable: %s: base %q: %w", t.url, t.base, err)
	}
	return nil
}

// Close closes the connection; lookups after it fail with ErrClosed.
func (t *Table) Close() error {
	t.mu.Lock()
	c := t.cur
	t.cur, t.closed = nil, true
	t.mu.Unlock()
	if c != nil {
		// tell the server, rather than leave it to notice a reset;
		// the deadline keeps a server that stopped reading from
		// holding Close
		_ = c.raw.SetDeadline(time.Now().Add(t.timeout))
		_ = c.lc.Unbind()
		c.close()
	}
	return nil
}

// format makes the value of service from the matching entries.
func format(service table.Service, attrs []string, entries []*ldap.Entry) (string, error) {
	switch service {
	case table.Alias, table.Mailaddrmap:
		var vals []string
		size := 0
		for _, e := range entries {
			for _, a := range attrs {
				for _, v := range e.GetEqualFoldAttributeValues(a) {
					if err := checkValue(e, a, v); err != nil {
						return "", err
					}
					size += len(v) + 2
					if size > maxValue {
						return "", fmt.Errorf("value longer than %d bytes", maxValue)
					}
					vals = append(vals, v)
				}
			}
		}
		if len(vals) == 0 {
			// an entry matched but says nowhere to deliver: not a
			// reason to bounce (not found), nor to deliver nowhere
			return "", fmt.Errorf("no %s in the %d matching entries", strings.Join(attrs, " or "), len(entries))
		}
		return strings.Join(vals, ", "), nil
	case table.Credentials, table.Userinfo:
		if len(entries) > 1 {
			return "", fmt.Errorf("key matches more than one entry (%s, %s, ...)", entries[0].DN, entries[1].DN)
		}
		e := entries[0]
		parts := make([]string, len(attrs))
		for i, a := range attrs {
			v := e.GetEqualFoldAttributeValues(a)
			if len(v) == 0 {
				return "", fmt.Errorf("entry %s has no %s", e.DN, a)
			}
			if err := checkValue(e, a, v[0]); err != nil {
				return "", err
			}
			// the caller splits at the first colons
			if i < len(attrs)-1 && strings.Contains(v[0], ":") {
				return "", fmt.Errorf("entry %s: %s contains a colon", e.DN, a)
			}
			parts[i] = v[0]
		}
		return strings.Join(parts, ":"), nil
	}
	if len(attrs) == 0 {
		return "", nil
	}
	e := entries[0]
	v := e.GetEqualFoldAttributeValues(attrs[0])
	if len(v) == 0 {
		return "", nil
	}
	if err := checkValue(e, attrs[0], v[0]); err != nil {
		return "", err
	}
	return v[0], nil
}

// checkValue refuses values that would break the line-based protocols
// table answers travel on (and a configuration that reads them).
func checkValue(e *ldap.Entry, attr, v string) error {
	if strings.ContainsAny(v, "\r\n\x00") {
		return fmt.Errorf("entry %s: %s holds CR, LF or NUL", e.DN, attr)
	}
	return nil
}
