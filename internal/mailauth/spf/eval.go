package spf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"smtpd/internal/dns"

	"smtpd/internal/address"
)

// eval is the state of one evaluation: the inputs of check_host() and
// the counters of §4.6.4, shared by every include and redirect.
type eval struct {
	c            *Checker
	ip           netip.Addr // IPv4-mapped addresses unmapped (§5)
	sender       string     // <sender>, "postmaster" as local-part if it had none
	local        string
	senderDomain string
	helo         string

	lookups int               // terms that queried DNS
	voids   int               // lookups that found nothing
	pnames  map[string]string // %{p} by <domain>
}

func newEval(c *Checker, ip netip.Addr, sender, helo string) *eval {
	local, domain := "", sender
	if at := strings.LastIndexByte(sender, '@'); at >= 0 {
		local, domain = sender[:at], sender[at+1:]
	}
	if local == "" {
		local = "postmaster" // §4.3
	}
	return &eval{
		c:            c,
		ip:           ip.Unmap(), // §5: "MUST still be considered an IPv4 address"
		sender:       local + "@" + domain,
		local:        local,
		senderDomain: domain,
		helo:         helo,
	}
}

// failure is an error that ends the evaluation with a result,
// TempError or PermError.
type failure struct {
	res Result
	err error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

func permErr(err error) error { return &failure{PermError, err} }
func tempErr(err error) error { return &failure{TempError, err} }

// resultOf returns the result err ends the evaluation with.
func resultOf(err error) Result {
	var f *failure
	if errors.As(err, &f) {
		return f.res
	}
	return TempError
}

// explainer is what a fail needs to compute its explanation after the
// evaluation (§6.2): the exp= of the record that failed, and the
// <domain> that record was for.
type explainer struct {
	spec   domainSpec
	domain string
}

// checkHost is check_host() (§4) for domain, depth includes and
// redirects down.
func (e *eval) checkHost(ctx context.Context, domain string, depth int) (Result, *explainer, error) {
	domain = strings.TrimSuffix(domain, ".")
	if !validDomain(domain) {
		return None, nil, nil // §4.3
	}
	if depth > MaxLookups {
		// unreachable: every level counts against MaxLookups first
		return PermError, nil, permErr(ErrTooManyLookups)
	}
	txt, err := e.record(ctx, domain)
	if err != nil {
		return resultOf(err), nil, err
	}
	if txt == "" {
		return None, nil, nil // §4.5
	}
	rec, err := parseRecord(txt)
	if err != nil {
		return PermError, nil, permErr(fmt.Errorf("%s: %w", domain, err))
	}
	// §4.6.2: mechanisms in order, the first that matches decides.
	for _, m := range rec.mechs {
		ok, err := e.match(ctx, m, domain, depth)
		if err != nil {
			return resultOf(err), nil, err
		}
		if !ok {
			continue
		}
		if m.qual == Fail && rec.exp != nil {
			return Fail, &explainer{*rec.exp, domain}, nil
		}
		return m.qual, nil, nil
	}
	// §6.1: redirect applies when no mechanism matched (a record with
	// "all" never gets here). Its result, explanation included,
	// replaces this record's; its target's lack of a record is a
	// permerror.
	if rec.redirect != nil {
		if err := e.countLookup(); err != nil {
			return PermError, nil, err
		}
		target := e.expandDomain(ctx, *rec.redirect, domain)
		res, x, err := e.checkHost(ctx, target, depth+1)
		if res == None {
			return PermError, nil, permErr(fmt.Errorf("redirect=%s: %w", target, ErrNoRecord))
		}
		if err != nil {
			err = fmt.Errorf("redirect=%s: %w", target, err)
		}
		return res, x, err
	}
	return Neutral, nil, nil // §4.7
}

// record returns the SPF record of domain, "" if it has none (§4.4,
// §4.5): one TXT record starting with "v=spf1"; several are a
// permerror. Records of type SPF (99) are not looked at (§3.1).
func (e *eval) record(ctx context.Context, domain string) (string, error) {
	rrs, err := e.c.Resolver.Records(ctx, escapeName(domain), mdns.TypeTXT)
	if err != nil {
		if errors.Is(err, dns.ErrNoSuchDomain) {
			return "", nil
		}
		return "", tempErr(fmt.Errorf("TXT %s: %w", domain, err))
	}
	var found []string
	for _, rr := range rrs {
		if t, ok := rr.(*mdns.TXT); ok {
			if s := txtString(t); isSPF(s) {
				found = append(found, s)
			}
		}
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	return "", permErr(fmt.Errorf("%s: %w", domain, ErrMultipleRecords))
}

// countLookup counts a term that queries DNS (§4.6.4).
func (e *eval) countLookup() error {
	e.lookups++
	if e.lookups > MaxLookups {
		return permErr(fmt.Errorf("%w: more than %d", ErrTooManyLookups, MaxLookups))
	}
	return nil
}

// match evaluates one mechanism (§5).
func (e *eval) match(ctx context.Context, m *mechanism, domain string, depth int) (bool, error) {
	switch m.kind {
	case mechAll:
		return true, nil
	case mechIP4, mechIP6:
		// an IPv4 client never matches ip6, an IPv6 one never ip4
		// (§5.6), which Prefix.Contains ensures
		return netip.PrefixFrom(m.ip, m.bits).Contains(e.ip), nil
	}
	if err := e.countLookup(); err != nil {
		return false, err
	}
	target := domain
	if m.domain != nil {
		target = e.expandDomain(ctx, *m.domain, domain)
	}
	switch m.kind {
	case mechInclude:
		// §5.2: pass matches; fail, softfail and neutral do not; the
		// errors propagate; none is a permerror. The explanation of
		// the included record is not used.
		res, _, err := e.checkHost(ctx, target, depth+1)
		switch res {
		case Pass:
			return true, nil
		case Fail, SoftFail, Neutral:
			return false, nil
		case None:
			return false, permErr(fmt.Errorf("include:%s: %w", target, ErrNoRecord))
		}
		return false, fmt.Errorf("include:%s: %w", target, err)
	case mechA:
		addrs, err := e.addrs(ctx, target, true)
		return e.inAny(addrs, m), err
	case mechMX:
		return e.matchMX(ctx, target, m)
	case mechPTR:
		return e.matchPTR(ctx, target)
	case mechExists:
		// §5.7: an A query whatever the client's address family
		rrs, err := e.lookup(ctx, target, mdns.TypeA, true)
		return len(rrs) > 0, err
	}
	return false, permErr(fmt.Errorf("%w: mechanism %v", ErrSyntax, m.kind))
}

// matchMX is the mx mechanism (§5.4): the addresses of the domain's
// MX hosts, never the domain's own when it has no MX. More than
// MaxNames MX records is a permerror (§4.6.4).
func (e *eval) matchMX(ctx context.Context, target string, m *mechanism) (bool, error) {
	rrs, err := e.lookup(ctx, target, mdns.TypeMX, true)
	if err != nil {
		return false, err
	}
	if len(rrs) > MaxNames {
		return false, permErr(fmt.Errorf("mx:%s: %w: %d", target, ErrTooManyMX, len(rrs)))
	}
	for _, rr := range rrs {
		host := strings.TrimSuffix(unescape(rr.(*mdns.MX).Mx), ".")
		if host == "" {
			continue // a null MX (RFC 7505) has no address
		}
		addrs, err := e.addrs(ctx, host, false)
		if err != nil {
			return false, err
		}
		if e.inAny(addrs, m) {
			return true, nil
		}
	}
	return false, nil
}

// matchPTR is the ptr mechanism (§5.5): a validated name of the client
// that is target or below it. A failed PTR lookup is no match, a name
// whose address lookup fails is skipped.
func (e *eval) matchPTR(ctx context.Context, target string) (bool, error) {
	names, err := e.ptrNames(ctx, true)
	if err != nil {
		return false, err
	}
	for _, n := range names {
		if address.InDomain(n, target) && e.validates(ctx, n) {
			return true, nil
		}
	}
	return false, nil
}

// ptrNames returns the first MaxNames names of the client's PTR
// records (§4.6.4, §5.5). A temporary failure gives none, a void
// lookup counts when void is set.
func (e *eval) ptrNames(ctx context.Context, void bool) ([]string, error) {
	rev, err := mdns.ReverseAddr(e.ip.String())
	if err != nil {
		return nil, nil
	}
	rrs, err := e.lookup(ctx, strings.TrimSuffix(rev, "."), mdns.TypePTR, void)
	if err != nil {
		if resultOf(err) == PermError {
			return nil, err
		}
		return nil, nil
	}
	var names []string
	for _, rr := range rrs[:min(len(rrs), MaxNames)] {
		names = append(names, strings.TrimSuffix(unescape(rr.(*mdns.PTR).Ptr), "."))
	}
	return names, nil
}

// validates reports whether name has the client's address among its
// addresses; an error counts as no.
func (e *eval) validates(ctx context.Context, name string) bool {
	addrs, err := e.addrs(ctx, name, false)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a == e.ip {
			return true
		}
	}
	return false
}

// validatedName is the %{p} macro (§7.3): a validated name of the
// client, <domain> itself if it is one, else one below <domain>, else
// any, else "unknown". Its lookups are bounded as those of ptr.
func (e *eval) validatedName(ctx context.Context, domain string) string {
	if p, ok := e.pnames[domain]; ok {
		return p
	}
	p := "unknown"
	names, _ := e.ptrNames(ctx, false)
	var order []string
	for _, n := range names {
		if strings.EqualFold(n, domain) {
			order = append(order, n)
		}
	}
	for _, n := range names {
		if !strings.EqualFold(n, domain) && address.InDomain(n, domain) {
			order = append(order, n)
		}
	}
	for _, n := range names {
		if !address.InDomain(n, domain) {
			order = append(order, n)
		}
	}
	for _, n := range order {
		if e.validates(ctx, n) {
			p = n
			break
		}
	}
	if e.pnames == nil {
		e.pnames = map[string]string{}
	}
	e.pnames[domain] = p
	return p
}

// addrs returns the addresses of name of the client's family, A or
// AAAA (§5.3).
func (e *eval) addrs(ctx context.Context, name string, void bool) ([]netip.Addr, error) {
	qtype := mdns.TypeA
	if e.ip.Is6() {
		qtype = mdns.TypeAAAA
	}
	rrs, err := e.lookup(ctx, name, qtype, void)
	var out []netip.Addr
	for _, rr := range rrs {
		var ip netip.Addr
		switch v := rr.(type) {
		case *mdns.A:
			ip, _ = netip.AddrFromSlice(v.A.To4())
		case *mdns.AAAA:
			ip, _ = netip.AddrFromSlice(v.AAAA.To16())
		}
		if ip.IsValid() {
			out = append(out, ip)
		}
	}
	return out, err
}

// inAny reports whether one of addrs with the mechanism's CIDR length
// covers the client.
func (e *eval) inAny(addrs []netip.Addr, m *mechanism) bool {
	for _, a := range addrs {
		bits := m.cidr4
		if a.Is6() {
			bits = m.cidr6
		}
		if netip.PrefixFrom(a, bits).Contains(e.ip) {
			return true
		}
	}
	return false
}

// lookup returns the records of qtype for name. A name that does not
// exist, or has no such records, gives none, and counts as a void
// lookup when void is set (§4.6.4); so does a name DNS cannot carry,
// as an empty label or one over 63 octets (the suite's
// invalid-domain-* prefer that to a permerror). Other failures are
// temperrors (§5).
func (e *eval) lookup(ctx context.Context, name string, qtype uint16, void bool) ([]mdns.RR, error) {
	if !validName(name) {
		return nil, e.void(void, name)
	}
	rrs, err := e.c.Resolver.Records(ctx, escapeName(name), qtype)
	if err != nil && !errors.Is(err, dns.ErrNoSuchDomain) {
		return nil, tempErr(fmt.Errorf("%s %s: %w", mdns.TypeToString[qtype], name, err))
	}
	var out []mdns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype != qtype {
			continue
		}
		switch rr.(type) {
		case *mdns.A, *mdns.AAAA, *mdns.MX, *mdns.PTR, *mdns.TXT:
			out = append(out, rr)
		}
	}
	if len(out) == 0 {
		return nil, e.void(void, name)
	}
	return out, nil
}

func (e *eval) void(count bool, name string) error {
	if !count {
		return nil
	}
	e.voids++
	if e.voids > MaxVoidLookups {
		return permErr(fmt.Errorf("%w: more than %d, the last for %s", ErrTooManyVoidLookups, MaxVoidLookups, name))
	}
	return nil
}

// expandDomain expands a domain-spec into a name to look up: macros
// expanded, a trailing dot dropped, and labels cut from the left of a
// name over 253 octets until it fits (§7.3).
func (e *eval) expandDomain(ctx context.Context, d domainSpec, domain string) string {
	s := strings.TrimSuffix(e.expand(ctx, d.ms, domain), ".")
	for len(s) > 253 {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			break
		}
		s = s[i+1:]
	}
	return s
}

// expand expands a macro-string for <domain> (§7.3).
func (e *eval) expand(ctx context.Context, ms macroString, domain string) string {
	var b strings.Builder
	for _, p := range ms {
		if p.letter == 0 {
			b.WriteString(p.literal)
			continue
		}
		b.WriteString(p.transform(e.macroValue(ctx, p.letter, domain)))
	}
	return b.String()
}

// macroValue is the value of a macro letter (§7.2).
func (e *eval) macroValue(ctx context.Context, letter byte, domain string) string {
	switch letter {
	case 's':
		return e.sender
	case 'l':
		return e.local
	case 'o':
		return e.senderDomain
	case 'd':
		return domain
	case 'i':
		return dotted(e.ip)
	case 'p':
		return e.validatedName(ctx, domain)
	case 'v':
		if e.ip.Is4() {
			return "in-addr"
		}
		return "ip6"
	case 'h':
		return e.helo
	case 'c':
		return e.ip.String()
	case 'r':
		if e.c.Hostname != "" {
			return e.c.Hostname
		}
		return "unknown"
	case 't':
		now := time.Now
		if e.c.Now != nil {
			now = e.c.Now
		}
		return strconv.FormatInt(now().Unix(), 10)
	}
	return ""
}

// dotted is the %{i} form of ip (§7.3): dotted quad for IPv4, dotted
// nibbles for IPv6. The nibbles are uppercase, as the suite's
// v-macro-ip6 expects; DNS ignores the case.
func dotted(ip netip.Addr) string {
	if ip.Is4() {
		return ip.String()
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, 63)
	for i, x := range ip.As16() {
		if i > 0 {
			b = append(b, '.')
		}
		b = append(b, hex[x>>4], '.', hex[x&15])
	}
	return string(b)
}

// explain computes the explanation of a fail (§6.2): the TXT record
// named by exp=, macro-expanded. A name that does not expand to
// something DNS can carry, a DNS failure, no record or several, or a
// syntax error in the text give the default explanation. The lookup
// counts against no limit (§4.6.4).
func (e *eval) explain(ctx context.Context, x *explainer) string {
	def := e.c.DefaultExplanation
	if def == "" {
		def = DefaultExplanation
	}
	if x == nil {
		return def
	}
	name := e.expandDomain(ctx, x.spec, x.domain)
	if !validName(name) {
		return def
	}
	rrs, err := e.c.Resolver.Records(ctx, escapeName(name), mdns.TypeTXT)
	if err != nil {
		return def
	}
	var texts []string
	for _, rr := range rrs {
		if t, ok := rr.(*mdns.TXT); ok {
			texts = append(texts, txtString(t))
		}
	}
	if len(texts) != 1 {
		return def
	}
	ms, err := parseMacroString(texts[0], true)
	if err != nil {
		return def
	}
	s := printable(e.expand(ctx, ms, x.domain))
	if s == "" {
		return def
	}
	return s
}

// printable replaces what is not printable ASCII with '?', for the
// expanded explanation goes into an SMTP reply.
func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c > '~' {
			b[i] = '?'
		}
	}
	return string(b)
}
