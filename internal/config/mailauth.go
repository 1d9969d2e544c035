package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"smtpd/internal/address"
)

// dkimRefType is the type of `dkim.NAME` references.
var dkimRefType = cty.Capsule("dkim", reflect.TypeOf(DKIMKey{}))

// DKIMKey is a dkim block: a signing key for one domain and selector
// (RFC 6376). mfa alone reads the key file; actions sign with it.
type DKIMKey struct {
	// ID is the key's place in Config.DKIMKeys, the same in every
	// process.
	ID       int
	Name     string
	Domain   string
	Selector string
	// Key is a PEM file: RSA of 1024 bits or more, or Ed25519.
	Key string
	// Headers are the fields signed; empty means the default list.
	Headers []string
	// HeaderCanon and BodyCanon are "relaxed" or "simple".
	HeaderCanon, BodyCanon string
	Range                  hcl.Range
}

var dkimSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "domain", Required: true}, {Name: "selector", Required: true}, {Name: "key", Required: true},
	{Name: "headers"}, {Name: "canonicalization"},
}}

func (d *decoder) dkim(b *hcl.Block) {
	k := &DKIMKey{ID: len(d.cfg.DKIMKeys), Name: b.Labels[0], HeaderCanon: "relaxed", BodyCanon: "relaxed", Range: b.DefRange}
	d.cfg.DKIMKeys = append(d.cfg.DKIMKeys, k)
	content, diags := b.Body.Content(dkimSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	if d.decode(attrs, "domain", &k.Domain) && !address.IsHostname(k.Domain) {
		d.errorf(attrs["domain"].Expr.Range(), "Invalid domain", "%q is not a domain name.", k.Domain)
	}
	if d.decode(attrs, "selector", &k.Selector) && !address.IsHostname(k.Selector) {
		d.errorf(attrs["selector"].Expr.Range(), "Invalid selector", "%q is not a DKIM selector (letters, digits, - and dots).", k.Selector)
	}
	if d.path(attrs, "key", &k.Key) && d.reads&readKeys != 0 {
		if err := readable(k.Key); err != nil {
			d.errorf(attrs["key"].Expr.Range(), "Unreadable key", "%v.", err)
		}
	}
	if d.decode(attrs, "headers", &k.Headers) {
		hasFrom := false
		for _, h := range k.Headers {
			if h == "" || strings.ContainsAny(h, ": \t") {
				d.errorf(attrs["headers"].Expr.Range(), "Invalid header name", "%q is not a header field name.", h)
			}
			hasFrom = hasFrom || strings.EqualFold(h, "from")
		}
		if !hasFrom {
			// RFC 6376 §5.4: From must be signed
			d.errorf(attrs["headers"].Expr.Range(), "From not signed", "The signed fields must include From (RFC 6376 §5.4).")
		}
	}
	var canon string
	if d.decode(attrs, "canonicalization", &canon) {
		h, bd, ok := strings.Cut(canon, "/")
		if !ok {
			bd = "simple"
		}
		valid := func(s string) bool { return s == "simple" || s == "relaxed" }
		if !valid(h) || !valid(bd) {
			d.errorf(attrs["canonicalization"].Expr.Range(), "Invalid canonicalization", "canonicalization must be header/body, each \"simple\" or \"relaxed\", such as \"relaxed/relaxed\"; not %q.", canon)
		}
		k.HeaderCanon, k.BodyCanon = h, bd
	}
}

func (d *decoder) dkimRefs() cty.Value {
	m := map[string]cty.Value{}
	for _, k := range d.cfg.DKIMKeys {
		m[k.Name] = cty.CapsuleVal(dkimRefType, k)
	}
	return cty.ObjectVal(m)
}

// dkimList evaluates an action's sign or seal attribute: a list of
// dkim.NAME references.
func (d *decoder) dkimList(attrs hcl.Attributes, name string) []*DKIMKey {
	return refList[DKIMKey](d, attrs, name, dkimRefType, "dkim")
}

// SRS is the srs block: the Sender Rewriting Scheme for mail forwarded
// to other domains, and the keys that check bounces to such senders.
type SRS struct {
	// Key is the file of the current secret; OldKeys are earlier
	// secrets, still accepted for bounces.
	Key     string
	OldKeys []string
	// Domain is the domain of the rewritten senders; the host name
	// by default.
	Domain string
	// MaxAge is how long a rewritten sender is honoured.
	MaxAge time.Duration
	Range  hcl.Range
}

// DefaultSRSMaxAge is how long rewritten senders are honoured.
const DefaultSRSMaxAge = 21 * 24 * time.Hour

var srsSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "key", Required: true}, {Name: "old_keys"}, {Name: "domain"}, {Name: "max_age"},
}}

func (d *decoder) srs(b *hcl.Block) {
	s := &SRS{Domain: d.cfg.Hostname, MaxAge: DefaultSRSMaxAge, Range: b.DefRange}
	d.cfg.SRS = s
	content, diags := b.Body.Content(srsSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	d.path(attrs, "key", &s.Key)
	if d.decode(attrs, "old_keys", &s.OldKeys) {
		for i, p := range s.OldKeys {
			if p == "" {
				d.errorf(attrs["old_keys"].Expr.Range(), "Empty path", "old_keys must not hold empty paths.")
				continue
			}
			s.OldKeys[i] = d.abs(p)
		}
	}
	if d.decode(attrs, "domain", &s.Domain) && !address.IsHostname(s.Domain) {
		d.errorf(attrs["domain"].Expr.Range(), "Invalid domain", "%q is not a domain name.", s.Domain)
	}
	var age string
	if d.decode(attrs, "max_age", &age) {
		v, err := parseDuration(age)
		if err == nil && v < 24*time.Hour {
			err = fmt.Errorf("max_age must be at least a day, since the scheme counts days")
		}
		if err != nil {
			d.errorf(attrs["max_age"].Expr.Range(), "Invalid duration", "%v.", err)
		}
		s.MaxAge = v
	}
	if d.reads&readKeys != 0 {
		for _, p := range append([]string{s.Key}, s.OldKeys...) {
			if err := readable(p); p != "" && err != nil {
				d.errorf(b.DefRange, "Unreadable SRS key", "%v.", err)
			}
		}
	}
}

// The checks a listener can make of its clients and their mail.
const (
	CheckFCrDNS = "fcrdns"
	CheckSPF    = "spf"
	CheckDKIM   = "dkim"
	CheckARC    = "arc"
	CheckDMARC  = "dmarc"
	CheckDNSBL  = "dnsbl"
)

var allChecks = []string{CheckFCrDNS, CheckSPF, CheckDKIM, CheckARC, CheckDMARC, CheckDNSBL}

// DNSList is a DNS block list (or allow list) of client addresses
// (RFC 5782): a zone, and the answers that count as listed.
type DNSList struct {
	Zone string
	// Codes are the answers that count; any in 127.0.0.0/8 if empty.
	Codes []netip.Addr
	// Allow makes it an allow list: a listed client skips the block
	// lists.
	Allow bool
}

// listenerChecks decodes a listener's checks, dnsbl, dnswl and
// dns_failure.
func (d *decoder) listenerChecks(l *Listener, attrs hcl.Attributes) {
	l.DNSFailure = FailTempfail
	if d.decode(attrs, "dns_failure", &l.DNSFailure) && l.DNSFailure != FailTempfail && l.DNSFailure != FailProceed {
		d.errorf(attrs["dns_failure"].Expr.Range(), "Invalid dns_failure", "dns_failure must be \"tempfail\" or \"proceed\", not %q.", l.DNSFailure)
	}
	if d.decode(attrs, "checks", &l.Checks) {
		for _, c := range l.Checks {
			if !slices.Contains(allChecks, c) {
				d.errorf(attrs["checks"].Expr.Range(), "Unknown check", "%q is not one of %s.", c, strings.Join(allChecks, ", "))
			}
		}
		if slices.Contains(l.Checks, CheckDMARC) && (!slices.Contains(l.Checks, CheckSPF) || !slices.Contains(l.Checks, CheckDKIM)) {
			d.errorf(attrs["checks"].Expr.Range(), "DMARC without SPF and DKIM", "DMARC (RFC 7489) evaluates the SPF and DKIM results: add \"spf\" and \"dkim\" to checks.")
		}
	}
	for _, name := range []string{"dnsbl", "dnswl"} {
		var lists []string
		if !d.decode(attrs, name, &lists) {
			continue
		}
		for _, s := range lists {
			zone, codes, _ := strings.Cut(s, "=")
			list := DNSList{Zone: strings.ToLower(strings.TrimSuffix(zone, ".")), Allow: name == "dnswl"}
			if !address.IsHostname(list.Zone) {
				d.errorf(attrs[name].Expr.Range(), "Invalid list zone", "%q is not a DNS zone.", zone)
				continue
			}
			for _, c := range strings.Split(codes, ",") {
				if c == "" {
					continue
				}
				a, err := netip.ParseAddr(strings.TrimSpace(c))
				if err != nil || !a.Is4() || a.As4()[0] != 127 {
					d.errorf(attrs[name].Expr.Range(), "Invalid list answer", "%q is not an answer in 127.0.0.0/8 (RFC 5782 §2.1); write the zone, then = and the answers that count, such as \"zen.example=127.0.0.2,127.0.0.4\".", c)
					continue
				}
				list.Codes = append(list.Codes, a)
			}
			l.DNSLists = append(l.DNSLists, list)
		}
	}
	if len(l.DNSLists) > 0 && !slices.Contains(l.Checks, CheckDNSBL) {
		a := attrs["dnsbl"]
		if a == nil {
			a = attrs["dnswl"]
		}
		d.errorf(a.Expr.Range(), "Lists without the dnsbl check", "Add \"dnsbl\" to checks to use the lists.")
	}
	if slices.Contains(l.Checks, CheckDNSBL) && len(l.DNSLists) == 0 {
		d.errorf(attrs["checks"].Expr.Range(), "dnsbl check without lists", "Give the lists with dnsbl = [\"zone\", ...].")
	}
}
