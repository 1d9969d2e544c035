package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"smtpd/internal/address"
)

// TLSMode is how a listener offers TLS.
type TLSMode string

// The listener TLS modes.
const (
	TLSNone            TLSMode = "none"
	TLSStartTLS        TLSMode = "starttls"
	TLSStartTLSRequire TLSMode = "starttls-require"
	TLSImplicit        TLSMode = "smtps"
)

// AuthMode is whether a listener offers or requires AUTH.
type AuthMode string

// The listener AUTH modes.
const (
	AuthNone     AuthMode = ""
	AuthRequired AuthMode = "required"
	AuthOptional AuthMode = "optional"
)

// Listener is a listen block: where smtp accepts sessions.
type Listener struct {
	Name    string
	Address string
	TLS     TLSMode
	// Cert and Key are PEM files, required with any TLS mode.
	Cert, Key string
	// Hostname is the name in the banner and EHLO reply; it defaults to
	// the global hostname.
	Hostname string
	Auth     AuthMode
	// AuthTable maps user names to bcrypt or SHA-512-crypt hashes.
	AuthTable *Table
	// Senders, if set, maps authenticated users to the addresses (or
	// @domains) they may use in MAIL FROM.
	Senders *Table
	// Protocol is "smtp", or "lmtp" to accept final deliveries from
	// other mail systems (RFC 2033).
	Protocol string
	// Filters is the listener's filter chain, run in this order; none
	// if empty.
	Filters []*Filter
	// Checks are the checks of clients and mail the listener makes
	// (Check*); DNSLists the block and allow lists of the dnsbl check.
	Checks   []string
	DNSLists []DNSList
	// DNSFailure is what a check that cannot tell for a DNS failure
	// does: tempfail (the default) or proceed.
	DNSFailure string
	// ProxyTrusted, if set, are the load balancers allowed to give the
	// client's address in a PROXY protocol header (proxy_protocol).
	ProxyTrusted []netip.Prefix
	// ETRN, if set, is the table of the clients that may start the
	// delivery of the mail waiting for their domain with ETRN (RFC
	// 1985); see listenSchema.
	ETRN  *Table
	Range hcl.Range
}

// listenSchema are the attributes of a listen block.
//
// etrn = table.NAME offers ETRN (RFC 1985) on the listener: the EHLO
// reply lists it, and a client whose address is in the table may ask
// with "ETRN example.org" (or "ETRN @example.org", the domain and
// those below it) that the relayed mail waiting for that domain be
// tried at once. The table holds client addresses and networks
// ("192.0.2.7", "2001:db8::/32"), the form of a match rule's from
// table, and is looked up the same way (lookup's tableHasIP): a list,
// a table file of such lines, or any backend that answers netaddr
// lookups; an inline list (etrn = ["192.0.2.7"]) works too. Any other
// client is answered 459 (node not allowed); without etrn the command
// is not offered and is answered 502. Queue names ("ETRN #queue") are
// not supported. SMTP listeners only: LMTP has no use for it.
var listenSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "address", Required: true}, {Name: "tls"}, {Name: "cert"}, {Name: "key"},
	{Name: "hostname"}, {Name: "auth"}, {Name: "auth_table"}, {Name: "protocol"},
	{Name: "senders"}, {Name: "filters"}, {Name: "checks"}, {Name: "dnsbl"}, {Name: "dnswl"}, {Name: "dns_failure"},
	{Name: "proxy_protocol"}, {Name: "proxy_trusted"}, {Name: "etrn"},
}}

func (d *decoder) listener(b *hcl.Block) {
	l := &Listener{Name: b.Labels[0], TLS: TLSNone, Hostname: d.cfg.Hostname, Protocol: "smtp", Range: b.DefRange}
	d.cfg.Listeners = append(d.cfg.Listeners, l)
	content, diags := b.Body.Content(listenSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	if d.decode(attrs, "address", &l.Address) {
		if _, port, err := net.SplitHostPort(l.Address); err != nil {
			d.errorf(attrs["address"].Expr.Range(), "Invalid address", "%q is not host:port, such as \"127.0.0.1:25\" or \"[::1]:587\".", l.Address)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			d.errorf(attrs["address"].Expr.Range(), "Invalid port", "%q is not a port number.", port)
		}
	}
	if d.decode(attrs, "protocol", &l.Protocol) && l.Protocol != "smtp" && l.Protocol != "lmtp" {
		d.errorf(attrs["protocol"].Expr.Range(), "Invalid protocol", "protocol must be \"smtp\" or \"lmtp\", not %q.", l.Protocol)
	}
	var mode string
	if d.decode(attrs, "tls", &mode) {
		switch TLSMode(mode) {
		case TLSNone, TLSStartTLS, TLSStartTLSRequire, TLSImplicit:
			l.TLS = TLSMode(mode)
		default:
			d.errorf(attrs["tls"].Expr.Range(), "Invalid TLS mode", "tls must be \"none\", \"starttls\", \"starttls-require\" or \"smtps\", not %q.", mode)
		}
	}
	certOK := d.path(attrs, "cert", &l.Cert)
	keyOK := d.path(attrs, "key", &l.Key)
	switch {
	case l.TLS != TLSNone && (attrs["cert"] == nil || attrs["key"] == nil):
		d.errorf(b.DefRange, "Missing certificate", "Listener %q uses TLS (%s) and needs both cert and key.", l.Name, l.TLS)
	case l.TLS == TLSNone && (attrs["cert"] != nil || attrs["key"] != nil):
		d.errorf(b.DefRange, "Certificate without TLS", "Listener %q has a certificate but tls is \"none\".", l.Name)
	case certOK && keyOK && d.reads&readKeys != 0:
		if _, err := tls.LoadX509KeyPair(l.Cert, l.Key); err != nil {
			d.errorf(attrs["cert"].Expr.Range(), "Unusable certificate", "%v.", err)
		}
	}
	if d.decode(attrs, "hostname", &l.Hostname) && !address.IsHostname(l.Hostname) {
		d.errorf(attrs["hostname"].Expr.Range(), "Invalid hostname", "%q is not a host name.", l.Hostname)
	}
	if a := attrs["auth"]; a != nil {
		v, diags := a.Expr.Value(nil)
		d.diags = append(d.diags, diags...)
		switch {
		case diags.HasErrors():
		case v.Type() == cty.Bool && v.True():
			l.Auth = AuthRequired
		case v.Type() == cty.Bool:
		case v.Type() == cty.String && v.AsString() == "optional":
			l.Auth = AuthOptional
		default:
			d.errorf(a.Expr.Range(), "Invalid auth", "auth must be true, false or \"optional\".")
		}
	}
	d.listenerChecks(l, attrs)
	d.proxy(l, attrs)
	l.Filters = d.filterChain(attrs)
	for _, f := range l.Filters {
		for check := range f.Results {
			if !slices.Contains(l.Checks, check) {
				d.errorf(attrs["filters"].Expr.Range(), "Result of a check not made", "Filter %q tests the %s result, but listener %q does not check %s: add it to checks.", f.Name, check, l.Name, check)
			}
		}
	}
	l.AuthTable = d.tableRef(attrs, "auth_table", "listen "+l.Name+" auth_table")
	l.Senders = d.tableRef(attrs, "senders", "listen "+l.Name+" senders")
	// the clients of ETRN are addresses and networks, as the clients
	// of a match rule's from table: a table reference or an inline list
	l.ETRN = d.tableRef(attrs, "etrn", "listen "+l.Name+" etrn")
	if l.ETRN != nil && l.Protocol == "lmtp" {
		d.errorf(attrs["etrn"].NameRange, "ETRN on an LMTP listener", "etrn applies to SMTP listeners only; LMTP (RFC 2033) takes final deliveries.")
	}
	switch {
	case l.Auth != AuthNone && l.TLS == TLSNone:
		d.errorf(attrs["auth"].Expr.Range(), "AUTH without TLS", "Listener %q offers AUTH but no TLS; passwords would cross the network in clear.", l.Name)
	case l.Auth != AuthNone && attrs["auth_table"] == nil:
		d.errorf(attrs["auth"].Expr.Range(), "AUTH without auth_table", "Listener %q offers AUTH but has no auth_table of user names and password hashes.", l.Name)
	case l.Auth == AuthNone && (attrs["auth_table"] != nil || attrs["senders"] != nil):
		d.errorf(b.DefRange, "auth_table without auth", "Listener %q has auth_table or senders but does not offer AUTH (auth = true or \"optional\").", l.Name)
	}
}

// proxy decodes proxy_protocol and the balancers trusted to use it.
func (d *decoder) proxy(l *Listener, attrs hcl.Attributes) {
	var on bool
	d.decode(attrs, "proxy_protocol", &on)
	var trusted []string
	has := d.decode(attrs, "proxy_trusted", &trusted)
	switch {
	case on && !has:
		d.errorf(attrs["proxy_protocol"].Expr.Range(), "PROXY protocol without trusted balancers", "Give the addresses of the load balancers with proxy_trusted = [\"10.0.0.1\", ...]: from anyone else a PROXY header is refused.")
	case has && !on:
		d.errorf(attrs["proxy_trusted"].Expr.Range(), "proxy_trusted without proxy_protocol", "Set proxy_protocol = true to accept PROXY headers from these addresses.")
	}
	if !on {
		return
	}
	for _, s := range trusted {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil {
				d.errorf(attrs["proxy_trusted"].Expr.Range(), "Invalid address", "%q is not an IP address or network.", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		l.ProxyTrusted = append(l.ProxyTrusted, p)
	}
}

// filterChain evaluates a listener's filters attribute: a list of
// filter references such as [filter.a, filter.b].
func (d *decoder) filterChain(attrs hcl.Attributes) []*Filter {
	return refList[Filter](d, attrs, "filters", filterRefType, "filter")
}

// refList evaluates an attribute that lists references to blocks of
// kind (filter.NAME, dkim.NAME) of the capsule type ty; none may be
// listed twice.
func refList[T any](d *decoder, attrs hcl.Attributes, name string, ty cty.Type, kind string) []*T {
	a, v, ok := d.refValue(attrs, name)
	if !ok {
		return nil
	}
	if vt := v.Type(); !(vt.IsTupleType() || vt.IsListType()) || v.IsNull() {
		d.errorf(a.Expr.Range(), "List of references expected", "%s must be a list of references such as [%s.NAME]; this is %s.", name, kind, vt.FriendlyName())
		return nil
	}
	var out []*T
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.Type() != ty {
			d.errorf(a.Expr.Range(), "Reference expected", "Each element of %s must be a reference such as %s.NAME; one is %s.", name, kind, e.Type().FriendlyName())
			return nil
		}
		ref := e.EncapsulatedValue().(*T)
		if slices.Contains(out, ref) {
			d.errorf(a.Expr.Range(), "Listed twice", "%s lists a %s twice.", name, kind)
			continue
		}
		out = append(out, ref)
	}
	return out
}

// Method is how an action delivers.
type Method string

// The delivery methods.
const (
	Maildir Method = "maildir"
	Mbox    Method = "mbox"
	LMTP    Method = "lmtp"
	MDA     Method = "mda"
	Relay   Method = "relay"
	// Externals sends mail on by running external commands in turn
	// (external blocks), as extsmail does.
	Externals Method = "externals"
)

// Action is an action block: what happens to the recipients a match
// rule sends to it.
type Action struct {
	Name   string
	Method Method
	// Target is the maildir path, mbox path, LMTP destination or MDA
	// command, evaluated per delivery; nil for relay.
	Target *Template
	// RelayURL is the relay destination; nil means the recipient
	// domain's MX hosts.
	RelayURL *url.URL

	Alias, Virtual, Userbase *Table
	// User runs every delivery of this action, whoever the recipient.
	User string

	// Relay options.
	Helo, Source string
	Credentials  *Table
	RelayTLS     string
	// Backup makes an MX relay a backup MX: it hands mail only to
	// exchangers preferred to this host.
	Backup bool
	// Sign are the DKIM keys that sign mail received for this action;
	// Seal the key that adds an ARC set (RFC 8617) to it, for mail
	// forwarded on, so that its authentication survives the hop.
	Sign []*DKIMKey
	Seal *DKIMKey
	// Externals are the commands of an externals action, tried in
	// order; Routes choose other lists by header (ExternalsFor).
	Externals []*ExternalCommand
	Routes    []Route
	Range     hcl.Range
}

var actionSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "route"}}, Attributes: []hcl.AttributeSchema{
	{Name: string(Externals)},
	{Name: string(Maildir)}, {Name: string(Mbox)}, {Name: string(LMTP)}, {Name: string(MDA)}, {Name: string(Relay)},
	{Name: "alias"}, {Name: "virtual"}, {Name: "userbase"}, {Name: "user"},
	{Name: "helo"}, {Name: "source"}, {Name: "credentials"}, {Name: "tls"}, {Name: "backup"},
	{Name: "sign"}, {Name: "seal"},
}}

// defaultTargets are the targets of `maildir = true` and `mbox = true`.
var defaultTargets = map[Method]string{
	Maildir: "${user.directory}/Maildir",
	Mbox:    "/var/mail/${user.name}",
}

func (d *decoder) action(b *hcl.Block) {
	a := &Action{Name: b.Labels[0], Range: b.DefRange}
	d.cfg.Actions = append(d.cfg.Actions, a)
	content, diags := b.Body.Content(actionSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	var methods []string
	for _, m := range []Method{Maildir, Mbox, LMTP, MDA, Relay, Externals} {
		if attrs[string(m)] != nil {
			methods = append(methods, string(m))
		}
	}
	if len(methods) != 1 {
		d.errorf(b.DefRange, "Invalid action", "Action %q needs exactly one of maildir, mbox, lmtp, mda, relay or externals; it has %s.", a.Name, describe(methods))
		return
	}
	a.Method = Method(methods[0])
	if a.Method == Externals {
		d.actionExternals(a, attrs, content.Blocks)
	} else {
		d.routesOutside(a, content.Blocks)
	}
	if a.Method == Relay {
		d.relay(a, attrs)
	} else {
		if a.Method != Externals {
			a.Target = d.target(a.Method, attrs[methods[0]])
		}
		for _, opt := range []string{"helo", "source", "credentials", "tls", "backup"} {
			if attrs[opt] != nil {
				d.errorf(attrs[opt].NameRange, "Relay option in a local action", "%s applies to relay actions only.", opt)
			}
		}
	}
	prefix := "action " + a.Name + " "
	a.Alias = d.tableRef(attrs, "alias", prefix+"alias")
	a.Virtual = d.tableRef(attrs, "virtual", prefix+"virtual")
	a.Userbase = d.tableRef(attrs, "userbase", prefix+"userbase")
	if attrs["alias"] != nil && attrs["virtual"] != nil {
		d.errorf(attrs["virtual"].NameRange, "Alias and virtual together", "An action expands either aliases or virtual users, not both.")
	}
	if d.decode(attrs, "user", &a.User) && a.User == "" {
		d.errorf(attrs["user"].Expr.Range(), "Empty user name", "user must name a user.")
	}
	a.Sign = d.dkimList(attrs, "sign")
	if seal := d.dkimList(attrs, "seal"); len(seal) == 1 {
		a.Seal = seal[0]
	} else if len(seal) > 1 {
		d.errorf(attrs["seal"].Expr.Range(), "One sealing key", "An action seals with one key, such as seal = [dkim.NAME]; a message gets one ARC set per hop.")
	}
}

func describe(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, " and ")
}

// target decodes a delivery target: a template string, or true for the
// method's default where it has one.
func (d *decoder) target(m Method, a *hcl.Attribute) *Template {
	if len(a.Expr.Variables()) == 0 {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			d.diags = append(d.diags, diags...)
			return nil
		}
		if v.Type() == cty.Bool {
			def, ok := defaultTargets[m]
			if !ok || v.False() {
				d.errorf(a.Expr.Range(), "Invalid "+string(m), "%s needs a string, such as a path or a command.", m)
				return nil
			}
			return literalTemplate(def, "")
		}
		if v.Type() == cty.String && strings.TrimSpace(v.AsString()) == "" {
			d.errorf(a.Expr.Range(), "Empty "+string(m), "%s must not be empty.", m)
			return nil
		}
	}
	// maildir and mbox paths may be relative to the configuration;
	// an LMTP destination or an MDA command is taken as written.
	dir := ""
	if m == Maildir || m == Mbox {
		dir = d.dir
	}
	t, diags := newTemplate(a.Expr, d.src, dir)
	d.diags = append(d.diags, diags...)
	return t
}

// relaySchemes are the URL schemes of a relay destination.
var relaySchemes = map[string]bool{"smtp": true, "smtp+tls": true, "smtp+notls": true, "smtps": true, "lmtp": true}

func (d *decoder) relay(a *Action, attrs hcl.Attributes) {
	var dest string
	if !d.decode(attrs, "relay", &dest) {
		return
	}
	rng := attrs["relay"].Expr.Range()
	if dest != "mx" {
		u, err := url.Parse(dest)
		switch {
		case err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "":
			d.errorf(rng, "Invalid relay", "relay must be \"mx\" or a URL such as \"smtp+tls://label@smarthost.example.net:587\", not %q.", dest)
			return
		case !relaySchemes[u.Scheme]:
			d.errorf(rng, "Invalid relay scheme", "%q is not one of smtp, smtp+tls, smtp+notls, smtps or lmtp.", u.Scheme)
			return
		case u.Port() != "":
			if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
				d.errorf(rng, "Invalid port", "%q is not a port number.", u.Port())
				return
			}
		}
		if _, hasPass := u.User.Password(); hasPass {
			d.errorf(rng, "Password in relay URL", "Put the label before @ and the secret in the credentials table.")
			return
		}
		a.RelayURL = u
	}
	d.decode(attrs, "helo", &a.Helo)
	if d.decode(attrs, "source", &a.Source) && net.ParseIP(a.Source) == nil {
		d.errorf(attrs["source"].Expr.Range(), "Invalid source", "%q is not an IP address.", a.Source)
	}
	if d.decode(attrs, "backup", &a.Backup) && a.Backup && a.RelayURL != nil {
		d.errorf(attrs["backup"].NameRange, "Backup with a smarthost", "backup applies to relay = \"mx\" only.")
	}
	a.Credentials = d.tableRef(attrs, "credentials", "action "+a.Name+" credentials")
	if a.Credentials != nil && (a.RelayURL == nil || a.RelayURL.User == nil) {
		d.errorf(attrs["credentials"].NameRange, "Credentials without a label", "Name the credentials label in the relay URL, as in \"smtp+tls://label@host:587\".")
	}
	a.RelayTLS = "opportunistic"
	if d.decode(attrs, "tls", &a.RelayTLS) {
		switch a.RelayTLS {
		case "opportunistic", "required", "no-verify":
		default:
			d.errorf(attrs["tls"].Expr.Range(), "Invalid relay TLS", "tls must be \"opportunistic\", \"required\" or \"no-verify\", not %q.", a.RelayTLS)
		}
	}
	for _, opt := range []string{"alias", "virtual", "userbase", "user"} {
		if attrs[opt] != nil {
			d.errorf(attrs[opt].NameRange, "Local option in a relay action", "%s applies to local deliveries only.", opt)
		}
	}
}

// CondKind is the kind of a match condition.
type CondKind int

// The condition kinds. CondTable matches what is in the table.
const (
	CondAny CondKind = iota + 1
	CondLocal
	CondAuth
	CondSocket
	CondTable
)

// Cond is one condition of a match rule.
type Cond struct {
	Kind  CondKind
	Table *Table
}

// Match is a match rule: conditions, and an action or a rejection.
type Match struct {
	// From is the client: any, local, auth, socket, or addresses/CIDRs.
	From *Cond
	// For is the recipient domain: any, local, or domains.
	For *Cond
	// Sender, Rcpt, Helo and Auth are optional tables of addresses,
	// addresses, HELO names and authenticated user names.
	Sender, Rcpt, Helo, Auth *Cond
	// Results are conditions on the results of the listener's checks
	// known when recipients are matched: spf and fcrdns.
	Results map[string][]string
	Action  *Action
	Reject  bool
	Range   hcl.Range
}

var matchSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "from"}, {Name: "for"}, {Name: "sender"}, {Name: "rcpt"}, {Name: "helo"}, {Name: "auth"},
	{Name: "action"}, {Name: "reject"},
	{Name: "spf"}, {Name: "fcrdns"}, {Name: "dkim"}, {Name: "arc"}, {Name: "dmarc"},
}}

// matchResults are the checks a match rule can test: those whose
// result is known when recipients are matched.
var matchResults = map[string]string{
	CheckSPF: "", CheckFCrDNS: "",
	CheckDKIM:  "The DKIM result is known at the end of the message, after the recipients are matched: test it in a filter.",
	CheckARC:   "The ARC result is known at the end of the message, after the recipients are matched: test it in a filter.",
	CheckDMARC: "The DMARC result is known at the end of the message, after the recipients are matched: test it in a filter.",
}

func (d *decoder) match(b *hcl.Block) {
	m := &Match{Range: b.DefRange}
	d.cfg.Matches = append(d.cfg.Matches, m)
	content, diags := b.Body.Content(matchSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	what := fmt.Sprintf("match at line %d", b.DefRange.Start.Line)
	m.From = d.cond(attrs, "from", what, CondLocal, map[string]CondKind{"any": CondAny, "local": CondLocal, "auth": CondAuth, "socket": CondSocket})
	m.For = d.cond(attrs, "for", what, CondLocal, map[string]CondKind{"any": CondAny, "local": CondLocal})
	m.Sender = d.cond(attrs, "sender", what, 0, nil)
	m.Rcpt = d.cond(attrs, "rcpt", what, 0, nil)
	m.Helo = d.cond(attrs, "helo", what, 0, nil)
	m.Auth = d.cond(attrs, "auth", what, 0, nil)
	m.Results = d.results(attrs, matchResults)
	d.decode(attrs, "reject", &m.Reject)
	if a, v, ok := d.refValue(attrs, "action"); ok {
		if v.Type() != actionRefType {
			d.errorf(a.Expr.Range(), "Action reference expected", "action must name an action block, as in action = action.local.")
		} else {
			m.Action = v.EncapsulatedValue().(*Action)
		}
	}
	switch {
	case attrs["action"] != nil && m.Reject:
		d.errorf(b.DefRange, "Action and reject together", "A match rule either delivers with an action or rejects.")
	case attrs["action"] == nil && !m.Reject:
		d.errorf(b.DefRange, "Missing action", "A match rule needs action = action.NAME or reject = true.")
	}
}

// cond decodes a condition: one of the keywords, or a table (reference,
// list, map, or a single string, which is a table of one).
func (d *decoder) cond(attrs hcl.Attributes, name, what string, def CondKind, keywords map[string]CondKind) *Cond {
	a := attrs[name]
	if a == nil {
		if def == 0 {
			return nil
		}
		return &Cond{Kind: def}
	}
	if !d.refsKnown(a.Expr) {
		return nil
	}
	v, diags := a.Expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return nil
	}
	if v.Type() == cty.String && !v.IsNull() {
		s := v.AsString()
		if k, ok := keywords[s]; ok {
			return &Cond{Kind: k}
		}
		if s == "" {
			d.errorf(a.Expr.Range(), "Empty condition", "%s must not be empty.", name)
			return nil
		}
		v = cty.TupleVal([]cty.Value{v})
	}
	var t *Table
	if v.Type() == tableRefType {
		t = v.EncapsulatedValue().(*Table)
	} else {
		t = d.inlineTable(a, v, what+" "+name)
	}
	if t == nil {
		return nil
	}
	return &Cond{Kind: CondTable, Table: t}
}
