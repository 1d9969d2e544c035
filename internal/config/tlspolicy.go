package config

import (
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"smtpd/internal/address"
	"smtpd/internal/dns"
)

// Outbound TLS policies a destination block may set (tls = "..."):
// the default, PolicyAuto, applies DANE where the MX records and TLSA
// records are DNSSEC-authenticated (RFC 7672), else the domain's
// MTA-STS policy (RFC 8461), else opportunistic STARTTLS.
const (
	PolicyAuto          = ""
	PolicyDANE          = "dane"
	PolicyMTASTS        = "mta-sts"
	PolicyRequired      = "required"
	PolicyOpportunistic = "opportunistic"
	PolicyNoTLS         = "none"
)

// TLSReports is the tls_reports block: the daily TLS reports (RFC
// 8460) mta sends to the domains that publish an _smtp._tls record.
type TLSReports struct {
	Enabled bool
	// Organization and Contact fill organization-name and contact-info
	// (RFC 8460 §4.4); From is the From of the report messages.
	Organization, Contact, From string
}

var tlsReportsSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "enabled"}, {Name: "organization"}, {Name: "contact"}, {Name: "from"},
}}

// outboundTLS decodes the global settings of outbound TLS: ca_file,
// mta_state_dir, mta_sts_port, resolver_validates and tls_reports.
func (d *decoder) outboundTLS(attrs hcl.Attributes, reports []*hcl.Block) {
	cfg := d.cfg
	d.path(attrs, "ca_file", &cfg.CAFile)
	// beside the spool by default (/var/spool/smtpd-mta), so that
	// each instance has its own
	cfg.MTAStateDir = filepath.Join(filepath.Dir(cfg.SpoolDir), filepath.Base(cfg.SpoolDir)+"-mta")
	d.path(attrs, "mta_state_dir", &cfg.MTAStateDir)
	cfg.MTASTSPort = 443
	if d.decode(attrs, "mta_sts_port", &cfg.MTASTSPort) && (cfg.MTASTSPort < 1 || cfg.MTASTSPort > 65535) {
		d.errorf(attrs["mta_sts_port"].Expr.Range(), "Invalid port", "%d is not a port number.", cfg.MTASTSPort)
	}
	// a forged AD bit would let DANE win over a domain's MTA-STS
	// policy: trusted by default from resolvers on this host only
	servers := cfg.Resolvers
	if len(servers) == 0 {
		servers, _ = dns.SystemServers()
	}
	cfg.ResolverValidates = dns.ValidatingServers(servers)
	d.decode(attrs, "resolver_validates", &cfg.ResolverValidates)

	host := cfg.Hostname
	cfg.TLSReports = TLSReports{Enabled: true, Organization: host, Contact: "postmaster@" + host, From: "noreply-tlsrpt@" + host}
	d.single(reports, func(b *hcl.Block) {
		content, diags := b.Body.Content(tlsReportsSchema)
		d.diags = append(d.diags, diags...)
		a := content.Attributes
		r := &cfg.TLSReports
		d.decode(a, "enabled", &r.Enabled)
		for name, dst := range map[string]*string{"organization": &r.Organization, "contact": &r.Contact, "from": &r.From} {
			if d.decode(a, name, dst) && *dst == "" {
				d.errorf(a[name].Expr.Range(), "Empty value", "%s must not be empty.", name)
			}
		}
		if local, domain, ok := strings.Cut(r.From, "@"); !ok || local == "" || !address.IsHostname(domain) {
			// without a from, the default is made of a host name that
			// is no domain (an invalid hostname, the system's own)
			rng := b.DefRange
			if from := a["from"]; from != nil {
				rng = from.Expr.Range()
			}
			d.errorf(rng, "Invalid address", "%q is not a mail address such as noreply-tlsrpt@example.org.", r.From)
		}
	})
}

// destinationTLS decodes a destination block's tls attribute.
func (d *decoder) destinationTLS(attrs hcl.Attributes, dst *Destination) {
	if !d.decode(attrs, "tls", &dst.TLS) {
		return
	}
	switch dst.TLS {
	case PolicyDANE, PolicyMTASTS, PolicyRequired, PolicyOpportunistic, PolicyNoTLS:
	default:
		d.errorf(attrs["tls"].Expr.Range(), "Invalid TLS policy", "tls must be \"dane\", \"mta-sts\", \"required\", \"opportunistic\" or \"none\", not %q.", dst.TLS)
	}
}
