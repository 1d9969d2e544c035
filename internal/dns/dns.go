// Package dns resolves what mail routing needs, MX, A, AAAA and PTR
// records, with github.com/miekg/dns against the configured servers,
// and classifies failures: a name that does not exist or a null MX is
// permanent, a server failure or a timeout temporary. Answers are cached
// for their TTL, so everyone who asks shares them.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"smtpd/internal/monkey"
)

// Error is a failed lookup. Permanent errors are not worth retrying.
type Error struct {
	Name      string
	Permanent bool
	Msg       string
	// Err is the sentinel the failure is, if any (ErrNullMX).
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("dns: %s: %s", e.Name, e.Msg) }

// Unwrap returns the sentinel the failure is, for errors.Is.
func (e *Error) Unwrap() error { return e.Err }

// IsPermanent reports whether err is a permanent DNS failure.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Permanent
}

// ErrNullMX marks a domain that accepts no mail (RFC 7505).
var ErrNullMX = errors.New("domain accepts no mail (null MX)")

// ErrNoSuchDomain marks an answer of NXDOMAIN: the name does not exist
// (SPF counts such answers as void lookups, RFC 7208 §4.6.4).
var ErrNoSuchDomain = errors.New("no such domain")

// MX is one mail exchanger with its addresses.
type MX struct {
	Preference uint16
	Host       string
	Addrs      []netip.Addr
	// Secure is set when a validating resolver authenticated the MX
	// records and the host's addresses (RFC 7672 §2.2): only then may
	// TLSA records of the host say how to authenticate it.
	Secure bool
}

// Resolver asks DNS servers. The zero value is not usable: use New.
type Resolver struct {
	// Servers are host:port addresses, tried in order.
	Servers []string
	// Timeout bounds one query to one server.
	Timeout time.Duration
	// Validating says the servers validate DNSSEC and may be trusted
	// to set the AD bit only on authenticated answers (RFC 6840 §5.8):
	// a local Unbound, say, not a resolver across a network.
	Validating bool

	mu    sync.Mutex
	cache map[cacheKey]cacheEntry
}

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	msg     *mdns.Msg
	err     error
	expires time.Time
}

// ResolvConf is where the system's resolvers are named.
const ResolvConf = "/etc/resolv.conf"

// SystemServers returns the resolvers of resolv.conf as host:port.
func SystemServers() ([]string, error) {
	cfg, err := mdns.ClientConfigFromFile(ResolvConf)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	var servers []string
	for _, s := range cfg.Servers {
		servers = append(servers, net.JoinHostPort(s, cfg.Port))
	}
	return servers, nil
}

// ValidatingServers reports whether the AD bit of servers may be
// trusted by default: when there are some and every one is on this host.
// One across a network is not, since anyone on the path could set the
// bit (RFC 6698 §4.1).
func ValidatingServers(servers []string) bool {
	for _, s := range servers {
		if ap, err := netip.ParseAddrPort(s); err != nil || !ap.Addr().IsLoopback() {
			return false
		}
	}
	return len(servers) > 0
}

// New returns a resolver using servers, or those of /etc/resolv.conf
// when servers is empty.
func New(servers []string) (*Resolver, error) {
	if len(servers) == 0 {
		var err error
		if servers, err = SystemServers(); err != nil {
			return nil, err
		}
	}
	return &Resolver{Servers: servers, Timeout: 5 * time.Second, cache: map[cacheKey]cacheEntry{}}, nil
}

// NegativeTTL is how long a failure is remembered.
const NegativeTTL = 30 * time.Second

// query returns the answer for name and qtype, from the cache or the
// servers: UDP first, TCP when the answer was truncated.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*mdns.Msg, error) {
	if err := monkey.Fail("dns"); err != nil {
		return nil, &Error{Name: name, Msg: err.Error()}
	}
	name = mdns.Fqdn(strings.ToLower(name))
	key := cacheKey{name, qtype}
	r.mu.Lock()
	if e, ok := r.cache[key]; ok && time.Now().Before(e.expires) {
		r.mu.Unlock()
		return e.msg, e.err
	}
	r.mu.Unlock()
	msg, err := r.exchange(ctx, name, qtype)
	ttl := NegativeTTL
	if err == nil {
		ttl = minTTL(msg)
	}
	if err == nil || IsPermanent(err) {
		r.mu.Lock()
		r.cache[key] = cacheEntry{msg, err, time.Now().Add(ttl)}
		r.mu.Unlock()
	}
	return msg, err
}

func minTTL(m *mdns.Msg) time.Duration {
	ttl := uint32(3600)
	for _, rr := range append(m.Answer, m.Ns...) {
		ttl = min(ttl, rr.Header().Ttl)
	}
	return time.Duration(ttl) * time.Second
}

func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (*mdns.Msg, error) {
	q := new(mdns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(1232, false)
	// ask for the AD bit without the signatures (RFC 6840 §5.7)
	q.AuthenticatedData = true
	var last error = &Error{Name: name, Msg: "no DNS server"}
	for _, server := range r.Servers {
		for _, network := range []string{"udp", "tcp"} {
			c := &mdns.Client{Net: network, Timeout: r.Timeout}
			resp, _, err := c.ExchangeContext(ctx, q, server)
			if err != nil {
				last = &Error{Name: name, Msg: err.Error()}
				break
			}
			if resp.Truncated && network == "udp" {
				continue
			}
			switch resp.Rcode {
			case mdns.RcodeSuccess:
				return resp, nil
			case mdns.RcodeNameError:
				return nil, &Error{Name: name, Permanent: true, Msg: "no such domain", Err: ErrNoSuchDomain}
			default:
				last = &Error{Name: name, Msg: mdns.RcodeToString[resp.Rcode]}
			}
			break
		}
	}
	return nil, last
}

// Records returns the records of qtype for name, following CNAMEs:
// none and no error for a name without such records (NODATA), an
// *Error wrapping ErrNoSuchDomain for a name that does not exist, a
// temporary *Error for a server failure or a timeout.
func (r *Resolver) Records(ctx context.Context, name string, qtype uint16) ([]mdns.RR, error) {
	rrs, _, err := r.SecureRecords(ctx, name, qtype)
	return rrs, err
}

// TXT returns the TXT records of name, the strings of each record
// joined as RFC 7208 §3.3 and RFC 6376 §3.6.2.2 ask.
func (r *Resolver) TXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.Records(ctx, name, mdns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, TXTString(rr.(*mdns.TXT)))
	}
	return out, nil
}

// TXTString returns the strings of a TXT record joined, as the bytes
// that were on the wire.
func TXTString(rr *mdns.TXT) string {
	var b strings.Builder
	for _, s := range rr.Txt {
		unescapeTXT(&b, s)
	}
	return b.String()
}

// unescapeTXT writes s, a TXT string as github.com/miekg/dns keeps it
// (in presentation form: \" for a quote, \DDD for other bytes), as the
// bytes that were on the wire.
func unescapeTXT(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); n <= 255 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// SecureRecords is Records that also says whether the answer, and every
// CNAME on the way to it, was authenticated by a validating resolver.
// A bogus answer is a server failure to a validating resolver: a
// temporary *Error here.
func (r *Resolver) SecureRecords(ctx context.Context, name string, qtype uint16) ([]mdns.RR, bool, error) {
	secure := r.Validating
	for range 8 {
		msg, err := r.query(ctx, name, qtype)
		if err != nil {
			return nil, false, err
		}
		secure = secure && msg.AuthenticatedData
		var out []mdns.RR
		var cname string
		for _, rr := range msg.Answer {
			switch {
			case rr.Header().Rrtype == qtype:
				out = append(out, rr)
			case rr.Header().Rrtype == mdns.TypeCNAME:
				cname = rr.(*mdns.CNAME).Target
			}
		}
		if len(out) > 0 || cname == "" {
			return out, secure, nil
		}
		name = cname
	}
	return nil, false, &Error{Name: name, Msg: "CNAME chain too long"}
}

// Addrs returns the IPv4 and IPv6 addresses of host.
func (r *Resolver) Addrs(ctx context.Context, host string) ([]netip.Addr, error) {
	addrs, _, err := r.SecureAddrs(ctx, host)
	return addrs, err
}

// SecureAddrs is Addrs that also says whether every answer it used was
// authenticated. An address literal is as secure as its source.
func (r *Resolver) SecureAddrs(ctx context.Context, host string) ([]netip.Addr, bool, error) {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{ip}, r.Validating, nil
	}
	var addrs []netip.Addr
	var firstErr error
	secure := r.Validating
	for _, qtype := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		rrs, sec, err := r.SecureRecords(ctx, host, qtype)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			secure = false
			continue
		}
		secure = secure && sec
		for _, rr := range rrs {
			switch v := rr.(type) {
			case *mdns.A:
				if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
					addrs = append(addrs, a)
				}
			case *mdns.AAAA:
				if a, ok := netip.AddrFromSlice(v.AAAA); ok {
					addrs = append(addrs, a)
				}
			}
		}
	}
	if len(addrs) == 0 {
		if firstErr != nil {
			return nil, false, firstErr
		}
		return nil, false, &Error{Name: host, Permanent: true, Msg: "no address"}
	}
	return addrs, secure, nil
}

// MX returns the mail exchangers of domain sorted by preference, each
// with its addresses. A domain without MX records is its own MX (RFC
// 5321 §5.1); a null MX is ErrNullMX, permanent.
func (r *Resolver) MX(ctx context.Context, domain string) ([]MX, error) {
	rrs, secure, err := r.SecureRecords(ctx, domain, mdns.TypeMX)
	if err != nil {
		return nil, err
	}
	var mxs []MX
	for _, rr := range rrs {
		mx := rr.(*mdns.MX)
		if mx.Mx == "." {
			return nil, &Error{Name: domain, Permanent: true, Msg: ErrNullMX.Error(), Err: ErrNullMX}
		}
		mxs = append(mxs, MX{Preference: mx.Preference, Host: strings.TrimSuffix(strings.ToLower(mx.Mx), ".")})
	}
	if len(mxs) == 0 {
		mxs = []MX{{Host: strings.TrimSuffix(strings.ToLower(domain), ".")}}
	}
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Preference < mxs[j].Preference })
	var usable []MX
	var lastErr error
	for _, mx := range mxs {
		addrs, sec, err := r.SecureAddrs(ctx, mx.Host)
		if err != nil {
			lastErr = err
			continue
		}
		mx.Addrs, mx.Secure = addrs, secure && sec
		usable = append(usable, mx)
	}
	if len(usable) == 0 {
		return nil, lastErr
	}
	return usable, nil
}

// PTR returns the name of ip, or "" if it has none.
func (r *Resolver) PTR(ctx context.Context, ip netip.Addr) (string, error) {
	rev, err := mdns.ReverseAddr(ip.String())
	if err != nil {
		return "", err
	}
	rrs, err := r.Records(ctx, rev, mdns.TypePTR)
	if err != nil {
		if IsPermanent(err) {
			return "", nil
		}
		return "", err
	}
	if len(rrs) == 0 {
		return "", nil
	}
	return strings.TrimSuffix(rrs[0].(*mdns.PTR).Ptr, "."), nil
}
