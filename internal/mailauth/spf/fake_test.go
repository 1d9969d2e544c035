package spf

import (
	"context"
	"strings"
	"sync"
	"testing"

	mdns "github.com/miekg/dns"

	"smtpd/internal/dns"
)

// fakeDNS is an in-memory Resolver: records from zone file lines,
// NXDOMAIN for unknown names, temporary failures for names in fail,
// queries counted.
type fakeDNS struct {
	records map[string][]mdns.RR // by lowercase name without the final dot
	fail    map[string]bool
	// block makes every query wait for its context to end.
	block bool

	mu      sync.Mutex
	queries int
}

func newFakeDNS(t testing.TB, lines ...string) *fakeDNS {
	t.Helper()
	f := &fakeDNS{records: map[string][]mdns.RR{}, fail: map[string]bool{}}
	for _, l := range lines {
		rr, err := mdns.NewRR(l)
		if err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		name := strings.ToLower(strings.TrimSuffix(rr.Header().Name, "."))
		f.records[name] = append(f.records[name], rr)
	}
	return f
}

func (f *fakeDNS) Records(ctx context.Context, name string, qtype uint16) ([]mdns.RR, error) {
	f.mu.Lock()
	f.queries++
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return nil, &dns.Error{Name: name, Msg: ctx.Err().Error()}
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if f.fail[name] {
		return nil, &dns.Error{Name: name, Msg: "SERVFAIL"}
	}
	rrs, ok := f.records[name]
	if !ok {
		return nil, &dns.Error{Name: name, Permanent: true, Msg: "no such domain", Err: dns.ErrNoSuchDomain}
	}
	var out []mdns.RR
	for _, rr := range rrs {
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
		}
	}
	return out, nil
}

func (f *fakeDNS) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries
}

// txtRR is a TXT record of name holding text, whatever its bytes.
func txtRR(name, text string) mdns.RR {
	return &mdns.TXT{Hdr: hdr(name, mdns.TypeTXT), Txt: txtStrings(text)}
}
