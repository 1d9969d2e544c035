package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	mdns "github.com/miekg/dns"

	"smtpd/internal/dns"
)

// The results of FCrDNS, the values of the "iprev" method in an
// Authentication-Results header field (RFC 8601 §2.7.3).
const (
	// Pass: a name of the address resolves back to it.
	Pass = "pass"
	// Fail: the names were resolved and none resolves back.
	Fail = "fail"
	// TempError: a lookup failed in a way that may pass.
	TempError = "temperror"
	// PermError: the address has no name (RFC 8601 §3: "no PTR data
	// are published").
	PermError = "permerror"
)

// MaxPTRNames is how many names of an address FCrDNS resolves, the
// limit SPF sets on its "ptr" mechanism for the same lookups (RFC 7208
// §4.6.4); a name beyond it is ignored.
const MaxPTRNames = 10

// FCrDNS checks that ip's reverse DNS is confirmed by forward DNS (RFC
// 8601 §3): it looks up the PTR names of ip, then the addresses of each
// name, A for IPv4 and AAAA for IPv6, and passes when one of them is
// ip. It returns the name that passed or, if none did, the first name
// of ip, and one of Pass, Fail, TempError and PermError; err says why
// for TempError and PermError, and is nil otherwise.
func FCrDNS(ctx context.Context, r Resolver, ip netip.Addr) (name, result string, err error) {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return "", PermError, errors.New("dnsbl: iprev: invalid address")
	}
	rev, err := mdns.ReverseAddr(ip.String())
	if err != nil {
		return "", PermError, fmt.Errorf("dnsbl: iprev: %w", err)
	}
	rrs, err := r.Records(ctx, rev, mdns.TypePTR)
	if errors.Is(err, dns.ErrNoSuchDomain) {
		return "", PermError, fmt.Errorf("dnsbl: iprev %s: no PTR record: %w", ip, err)
	}
	if err != nil {
		return "", TempError, fmt.Errorf("dnsbl: iprev %s: %w", ip, err)
	}
	var names []string
	for _, rr := range rrs {
		p, ok := rr.(*mdns.PTR)
		if !ok {
			continue
		}
		n := strings.ToLower(strings.TrimSuffix(p.Ptr, "."))
		if n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
		if len(names) == MaxPTRNames {
			break
		}
	}
	if len(names) == 0 {
		return "", PermError, fmt.Errorf("dnsbl: iprev %s: no PTR record", ip)
	}
	qtype := mdns.TypeAAAA
	if ip.Is4() {
		qtype = mdns.TypeA
	}
	var tempErr error
	for _, n := range names {
		// Records, not Addrs, which would take a name such as
		// "192.0.2.1" for the address it spells and pass it
		rrs, err := r.Records(ctx, n, qtype)
		if err != nil {
			if !errors.Is(err, dns.ErrNoSuchDomain) && tempErr == nil {
				tempErr = err
			}
			continue
		}
		for _, rr := range rrs {
			if addrOf(rr) == ip {
				return n, Pass, nil
			}
		}
	}
	if tempErr != nil {
		// a name not resolved might have been the one that passes
		return names[0], TempError, fmt.Errorf("dnsbl: iprev %s: %w", ip, tempErr)
	}
	return names[0], Fail, nil
}

// addrOf returns the address of an A or AAAA record.
func addrOf(rr mdns.RR) netip.Addr {
	var a netip.Addr
	switch v := rr.(type) {
	case *mdns.A:
		a, _ = netip.AddrFromSlice(v.A.To4())
	case *mdns.AAAA:
		a, _ = netip.AddrFromSlice(v.AAAA.To16())
	}
	return a.Unmap()
}
