// Package dnsbl asks DNS block and allow lists about a client address
// (RFC 5782), and checks that a client's reverse DNS name resolves back
// to it (forward-confirmed reverse DNS, the "iprev" method of RFC 8601
// §3 and §2.7.3).
package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"

	"smtpd/internal/dns"
)

// Resolver is the DNS this package needs; *dns.Resolver has it. A name
// that does not exist is an error wrapping dns.ErrNoSuchDomain, any
// other error is temporary.
type Resolver interface {
	// Records returns the records of qtype for name, CNAMEs followed.
	Records(ctx context.Context, name string, qtype uint16) ([]mdns.RR, error)
	// TXT returns the TXT records of name, each one string.
	TXT(ctx context.Context, name string) ([]string, error)
}

// MaxTextLen bounds the text of a list in a Match: it goes into an SMTP
// reply line, which has at most 512 octets (RFC 5321 §4.5.3.1.5).
const MaxTextLen = 200

// ErrListError marks an answer a list gives instead of a listing when it
// refuses the query, such as Spamhaus's 127.255.255.0/24 for queries
// through public resolvers or above the free limits: a temporary error.
var ErrListError = errors.New("list answered with an error code")

// List is one DNS list (DNSxL) to ask.
type List struct {
	// Zone is the list's zone, such as "zen.spamhaus.org".
	Zone string
	// Codes are the answers that count as a listing; empty means any
	// address of 127.0.0.0/8 (RFC 5782 §2.1), except the error codes
	// of 127.255.255.0/24.
	Codes []Range
	// Allow makes the list an allow list (DNSWL): a client it lists is
	// trusted, whatever the block lists say.
	Allow bool
}

// Range is an inclusive range of return codes, such as 127.0.0.2 to
// 127.0.0.11; a single code has Lo == Hi.
type Range struct {
	Lo, Hi netip.Addr
}

// ParseRange parses a return code, "127.0.0.2", a range of them,
// "127.0.0.2-127.0.0.11", or a prefix, "127.0.0.0/24".
func ParseRange(s string) (Range, error) {
	if lo, hi, ok := strings.Cut(s, "-"); ok {
		l, err1 := netip.ParseAddr(strings.TrimSpace(lo))
		h, err2 := netip.ParseAddr(strings.TrimSpace(hi))
		if err1 != nil || err2 != nil || !l.Is4() || !h.Is4() || h.Less(l) {
			return Range{}, fmt.Errorf("dnsbl: invalid return code range %q", s)
		}
		return Range{l, h}, nil
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil || !p.Addr().Is4() {
			return Range{}, fmt.Errorf("dnsbl: invalid return code prefix %q", s)
		}
		p = p.Masked()
		return Range{p.Addr(), lastAddr(p)}, nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() {
		return Range{}, fmt.Errorf("dnsbl: invalid return code %q", s)
	}
	return Range{a, a}, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Contains reports whether a is in the range.
func (r Range) Contains(a netip.Addr) bool {
	return r.Lo.Compare(a) <= 0 && a.Compare(r.Hi) <= 0
}

// Match is a list that lists the client.
type Match struct {
	// List is the list, as configured.
	List List
	// Code is the lowest of the answers that count, Codes all of them.
	Code  netip.Addr
	Codes []netip.Addr
	// Text is the list's TXT record for the client, made fit for a
	// reply: printable ASCII on one line, at most MaxTextLen bytes;
	// empty when the list has none.
	Text string
}

// Message returns the text for the rejection reply: the list's own, or
// one naming the list.
func (m Match) Message(ip netip.Addr) string {
	if m.Text != "" {
		return m.Text
	}
	return fmt.Sprintf("%s is listed by %s", ip.Unmap(), m.List.Zone)
}

// ListError is a failure to ask one list. Every one is temporary: the
// caller turns it into a temporary failure or ignores the list, as it
// is configured.
type ListError struct {
	Zone string
	Err  error
}

func (e *ListError) Error() string { return "dnsbl: " + e.Zone + ": " + e.Err.Error() }

// Unwrap returns the cause, a DNS error or ErrListError.
func (e *ListError) Unwrap() error { return e.Err }

// Result is what the lists said about a client.
type Result struct {
	// Matches are the lists that list the client, in the order given.
	Matches []Match
	// Errors are the lists that could not be asked, in the order given.
	Errors []*ListError
}

// Allowed returns the first allow list that lists the client.
func (r Result) Allowed() (Match, bool) {
	for _, m := range r.Matches {
		if m.List.Allow {
			return m, true
		}
	}
	return Match{}, false
}

// Blocked returns the first block list that lists the client, unless
// an allow list lists it too.
func (r Result) Blocked() (Match, bool) {
	if _, ok := r.Allowed(); ok {
		return Match{}, false
	}
	for _, m := range r.Matches {
		if !m.List.Allow {
			return m, true
		}
	}
	return Match{}, false
}

// Check asks every list about ip, all at once. The error joins the
// errors of the lists that could not be asked (each a *ListError, also
// in Result.Errors), or is that ip is not a valid address; the result
// of the other lists is valid either way.
func Check(ctx context.Context, r Resolver, ip netip.Addr, lists []List) (Result, error) {
	if !ip.IsValid() {
		return Result{}, errors.New("dnsbl: invalid client address")
	}
	type answer struct {
		match *Match
		err   error
	}
	answers := make([]answer, len(lists))
	var wg sync.WaitGroup
	for i, l := range lists {
		wg.Go(func() {
			m, err := check(ctx, r, ip, l)
			answers[i] = answer{m, err}
		})
	}
	wg.Wait()
	var res Result
	var errs []error
	for i, a := range answers {
		switch {
		case a.err != nil:
			e := &ListError{Zone: lists[i].Zone, Err: a.err}
			res.Errors = append(res.Errors, e)
			errs = append(errs, e)
		case a.match != nil:
			res.Matches = append(res.Matches, *a.match)
		}
	}
	return res, errors.Join(errs...)
}

// check asks one list: nil and no error when it does not list ip.
func check(ctx context.Context, r Resolver, ip netip.Addr, l List) (*Match, error) {
	zone := strings.TrimSuffix(strings.TrimSpace(l.Zone), ".")
	if zone == "" || strings.HasPrefix(zone, ".") || strings.Contains(zone, "..") {
		return nil, errors.New("invalid zone")
	}
	name := QueryName(ip, zone)
	rrs, err := r.Records(ctx, name, mdns.TypeA)
	if errors.Is(err, dns.ErrNoSuchDomain) {
		return nil, nil // NXDOMAIN: not listed (RFC 5782 §2.1)
	}
	if err != nil {
		return nil, err
	}
	var codes []netip.Addr
	for _, rr := range rrs {
		a, ok := rr.(*mdns.A)
		if !ok {
			continue
		}
		code, ok := netip.AddrFromSlice(a.A.To4())
		if !ok {
			continue
		}
		// listings are in 127.0.0.0/8 (RFC 5782 §2.1); anything else
		// is a resolver that rewrites NXDOMAIN, and lists nothing
		b := code.As4()
		if b[0] != 127 {
			continue
		}
		if b[1] == 255 && b[2] == 255 {
			return nil, fmt.Errorf("%s: %w %s: query refused (public resolver, over the limits or no access?)", name, ErrListError, code)
		}
		if counts(l.Codes, code) {
			codes = append(codes, code)
		}
	}
	if len(codes) == 0 {
		return nil, nil
	}
	slices.SortFunc(codes, netip.Addr.Compare)
	codes = slices.Compact(codes)
	m := &Match{List: l, Code: codes[0], Codes: codes}
	// the text is a courtesy (RFC 5782 §2.1): without it the reply
	// names the list
	if txts, err := r.TXT(ctx, name); err == nil {
		m.Text = Sanitize(strings.Join(txts, "; "))
	}
	return m, nil
}

func counts(codes []Range, code netip.Addr) bool {
	if len(codes) == 0 {
		return true
	}
	for _, r := range codes {
		if r.Contains(code) {
			return true
		}
	}
	return false
}

// QueryName returns the name to ask zone about ip: the octets of an
// IPv4 address in reverse (RFC 5782 §2.1), the nibbles of an IPv6
// address in reverse (§2.4), as in-addr.arpa and ip6.arpa do. An
// IPv4-mapped IPv6 address is asked as the IPv4 address it is.
func QueryName(ip netip.Addr, zone string) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(a[i])))
			b.WriteByte('.')
		}
	} else {
		const hex = "0123456789abcdef"
		a := ip.As16()
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[a[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(strings.TrimSuffix(zone, "."))
	return b.String()
}

// Sanitize makes s, text from DNS, fit for a reply line (RFC 5321 §4.2
// allows printable ASCII and tabs): other bytes become '?', runs of
// spaces one space, and the text is cut to MaxTextLen bytes.
func Sanitize(s string) string {
	var b strings.Builder
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			space = true
			continue
		case c < ' ' || c > '~':
			c = '?'
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteByte(c)
		if b.Len() >= MaxTextLen {
			break
		}
	}
	out := b.String()
	if len(out) > MaxTextLen {
		out = out[:MaxTextLen]
	}
	return strings.TrimRight(out, " ")
}
