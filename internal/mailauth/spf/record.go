package spf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// kind is a mechanism (RFC 7208 §5).
type kind uint8

const (
	mechAll kind = iota
	mechInclude
	mechA
	mechMX
	mechPTR
	mechIP4
	mechIP6
	mechExists
)

func (k kind) String() string {
	switch k {
	case mechAll:
		return "all"
	case mechInclude:
		return "include"
	case mechA:
		return "a"
	case mechMX:
		return "mx"
	case mechPTR:
		return "ptr"
	case mechIP4:
		return "ip4"
	case mechIP6:
		return "ip6"
	case mechExists:
		return "exists"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// mechanism is a directive: a qualifier and a mechanism (§4.6.2).
type mechanism struct {
	qual Result // Pass, Fail, SoftFail or Neutral
	kind kind
	// domain is the target of include, a, mx, ptr and exists; nil for
	// a, mx and ptr without one, which then mean <domain>.
	domain *domainSpec
	// ip and bits are the network of ip4 and ip6.
	ip   netip.Addr
	bits int
	// cidr4 and cidr6 are the dual-cidr-length of a and mx (§5.6).
	cidr4, cidr6 int
}

// modifier is an unknown modifier, kept only to print the record back;
// redirect and exp live in record (§6).
type modifier struct {
	name  string
	value macroString
}

// term is one term of a record, in order: a mechanism or a modifier.
type term struct {
	mech *mechanism
	mod  *modifier // unknown, redirect or exp
}

// record is a parsed SPF record.
type record struct {
	terms    []term
	mechs    []*mechanism
	redirect *domainSpec
	exp      *domainSpec
}

// version is the version section every SPF record starts with (§4.5).
const version = "v=spf1"

// isSPF reports whether txt is an SPF record: it starts with a version
// section of exactly "v=spf1", compared without regard to case, ended
// by a space or the end of the record (§4.5).
func isSPF(txt string) bool {
	return len(txt) >= len(version) && strings.EqualFold(txt[:len(version)], version) &&
		(len(txt) == len(version) || txt[len(version)] == ' ')
}

// parseRecord parses an SPF record, the whole of it: a syntax error
// anywhere is a permerror even when a term before it would match
// (§4.6, the suite's detect-errors-anywhere).
func parseRecord(txt string) (*record, error) {
	if !isSPF(txt) {
		return nil, fmt.Errorf("%w: not an SPF record", ErrSyntax)
	}
	r := &record{}
	// terms are separated by one or more SP, and only SP (§4.6.1);
	// other white space is part of a term, and not allowed in any.
	for _, t := range strings.Split(txt[len(version):], " ") {
		if t == "" {
			continue
		}
		if err := r.addTerm(t); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// modifierName returns the name of t if t is a modifier,
// name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) followed by "=".
func modifierName(t string) (string, bool) {
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'):
		case i > 0 && c == '=':
			return t[:i], true
		default:
			return "", false
		}
	}
	return "", false
}

func (r *record) addTerm(t string) error {
	if name, ok := modifierName(t); ok {
		return r.addModifier(t, name, t[len(name)+1:])
	}
	m, err := parseMechanism(t)
	if err != nil {
		return err
	}
	r.mechs = append(r.mechs, m)
	r.terms = append(r.terms, term{mech: m})
	return nil
}

// addModifier adds a modifier (§6). redirect and exp take a
// domain-spec and may appear once each; a malformed one is an error,
// not an unknown modifier (the suite's redirect-syntax-error). Unknown
// modifiers need only be valid macro-strings, and are ignored.
func (r *record) addModifier(t, name, value string) error {
	lname := strings.ToLower(name)
	switch lname {
	case "redirect", "exp":
		d, err := parseDomainSpec(value)
		if err != nil {
			return fmt.Errorf("%w (in %q)", err, t)
		}
		slot := &r.redirect
		if lname == "exp" {
			slot = &r.exp
		}
		if *slot != nil {
			return fmt.Errorf("%w: %s= appears twice", ErrSyntax, lname)
		}
		*slot = &d
		r.terms = append(r.terms, term{mod: &modifier{name: lname, value: d.ms}})
	default:
		ms, err := parseMacroString(value, false)
		if err != nil {
			return fmt.Errorf("%w (in %q)", err, t)
		}
		r.terms = append(r.terms, term{mod: &modifier{name: name, value: ms}})
	}
	return nil
}

// parseMechanism parses a directive: [ qualifier ] mechanism (§4.6.2,
// §5). Names are case-insensitive, as ABNF strings are.
func parseMechanism(t string) (*mechanism, error) {
	m := &mechanism{qual: Pass, cidr4: 32, cidr6: 128}
	switch t[0] {
	case '+':
		t = t[1:]
	case '-':
		m.qual, t = Fail, t[1:]
	case '~':
		m.qual, t = SoftFail, t[1:]
	case '?':
		m.qual, t = Neutral, t[1:]
	}
	end := strings.IndexAny(t, ":/")
	if end < 0 {
		end = len(t)
	}
	name, arg := strings.ToLower(t[:end]), t[end:]
	bad := func(why string) (*mechanism, error) {
		return nil, fmt.Errorf("%w: %q: %s", ErrSyntax, t, why)
	}
	switch name {
	case "all":
		m.kind = mechAll
		if arg != "" {
			return bad("all takes no argument")
		}
	case "include", "exists":
		m.kind = mechInclude
		if name == "exists" {
			m.kind = mechExists
		}
		if !strings.HasPrefix(arg, ":") {
			return bad(name + " needs a domain")
		}
		d, err := parseDomainSpec(arg[1:])
		if err != nil {
			return nil, fmt.Errorf("%w (in %q)", err, t)
		}
		m.domain = &d
	case "ptr":
		m.kind = mechPTR
		if arg == "" {
			break
		}
		if arg[0] != ':' {
			return bad("ptr takes no CIDR length")
		}
		d, err := parseDomainSpec(arg[1:])
		if err != nil {
			return nil, fmt.Errorf("%w (in %q)", err, t)
		}
		m.domain = &d
	case "a", "mx":
		m.kind = mechA
		if name == "mx" {
			m.kind = mechMX
		}
		spec, c4, c6, err := splitDualCIDR(arg)
		if err != nil {
			return bad(err.Error())
		}
		m.cidr4, m.cidr6 = c4, c6
		if spec == "" {
			break
		}
		if spec[0] != ':' {
			return bad("malformed CIDR length")
		}
		d, err := parseDomainSpec(spec[1:])
		if err != nil {
			return nil, fmt.Errorf("%w (in %q)", err, t)
		}
		m.domain = &d
	case "ip4", "ip6":
		m.kind = mechIP4
		if name == "ip6" {
			m.kind = mechIP6
		}
		if !strings.HasPrefix(arg, ":") {
			return bad(name + " needs a network")
		}
		ip, bits, err := parseNetwork(arg[1:], m.kind == mechIP6)
		if err != nil {
			return bad(err.Error())
		}
		m.ip, m.bits = ip, bits
	default:
		return bad("unknown mechanism")
	}
	return m, nil
}

// splitDualCIDR splits the argument of a or mx into the domain-spec
// part (with its ':') and the dual-cidr-length that may end it:
// [ ip4-cidr-length ] [ "/" ip6-cidr-length ] (§5.3, §5.4). A slash
// followed by something other than a number belongs to the
// domain-spec, which may hold slashes.
func splitDualCIDR(arg string) (spec string, cidr4, cidr6 int, err error) {
	spec, cidr4, cidr6 = arg, 32, 128
	if i := strings.LastIndex(spec, "//"); i >= 0 && allDigits(spec[i+2:]) {
		if cidr6, err = cidrLength(spec[i+2:], 128); err != nil {
			return "", 0, 0, err
		}
		spec = spec[:i]
	}
	if i := strings.LastIndexByte(spec, '/'); i >= 0 && allDigits(spec[i+1:]) {
		if cidr4, err = cidrLength(spec[i+1:], 32); err != nil {
			return "", 0, 0, err
		}
		spec = spec[:i]
	}
	return spec, cidr4, cidr6, nil
}

// parseNetwork parses ip4-network [ ip4-cidr-length ] or ip6-network
// [ ip6-cidr-length ] (§5.6).
func parseNetwork(s string, six bool) (netip.Addr, int, error) {
	addr, length, hasLength := strings.Cut(s, "/")
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Zone() != "" || ip.Is6() != six || six != strings.Contains(addr, ":") {
		return netip.Addr{}, 0, fmt.Errorf("malformed network %q", addr)
	}
	bits := ip.BitLen()
	if hasLength {
		if bits, err = cidrLength(length, bits); err != nil {
			return netip.Addr{}, 0, err
		}
	}
	return ip, bits, nil
}

// cidrLength parses a CIDR length of at most max bits. Leading zeros
// are refused, as in ip4-network and the ABNF of ip4-cidr-length
// ("0" / %x31-39 0*1DIGIT), and as the suite's cidr4-032 reads it.
func cidrLength(s string, max int) (int, error) {
	if !allDigits(s) || len(s) > 1 && s[0] == '0' || len(s) > 3 {
		return 0, fmt.Errorf("malformed CIDR length %q", s)
	}
	n, _ := strconv.Atoi(s)
	if n > max {
		return 0, fmt.Errorf("CIDR length %d over %d", n, max)
	}
	return n, nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String returns the record in canonical form: names in lowercase,
// the "+" qualifier and default CIDR lengths left out. Parsing it gives
// the same record back.
func (r *record) String() string {
	var b strings.Builder
	b.WriteString(version)
	for _, t := range r.terms {
		b.WriteByte(' ')
		if t.mod != nil {
			b.WriteString(t.mod.name + "=" + t.mod.value.String())
			continue
		}
		b.WriteString(t.mech.String())
	}
	return b.String()
}

// String returns the directive as it can be written in a record.
func (m *mechanism) String() string {
	var b strings.Builder
	switch m.qual {
	case Fail:
		b.WriteByte('-')
	case SoftFail:
		b.WriteByte('~')
	case Neutral:
		b.WriteByte('?')
	}
	b.WriteString(m.kind.String())
	if m.domain != nil {
		b.WriteString(":" + m.domain.String())
	}
	switch m.kind {
	case mechIP4, mechIP6:
		b.WriteString(":" + m.ip.String())
		if m.bits != m.ip.BitLen() {
			b.WriteString("/" + strconv.Itoa(m.bits))
		}
	case mechA, mechMX:
		if m.cidr4 != 32 {
			b.WriteString("/" + strconv.Itoa(m.cidr4))
		}
		if m.cidr6 != 128 {
			b.WriteString("//" + strconv.Itoa(m.cidr6))
		}
	}
	return b.String()
}
