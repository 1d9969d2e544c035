package dnstest

// DNSSEC for the test server: zones signed on the fly, so that tests of
// DANE (RFC 7672) can put a validating resolver (unbound.go) in front
// of data whose security status they choose: secure, insecure (a zone
// that is not signed, or not anchored in the resolver) or bogus
// (Corrupt).
//
// The server signs no zone file ahead of time. Each answer's RRsets are
// signed when first served (RFC 4034 section 3, RFC 4035 section 3.1.1)
// and the signature is kept until the RRset changes or nears its
// expiration. Negative answers use compact denial of existence
// (RFC 9824, formerly draft-ietf-dnsop-compact-denial-of-existence):
// one NSEC record at the query name, generated for the answer, so the
// server needs no ordered view of the zone (RFC 4035 section 3.1.3 asks
// for NSEC chains otherwise; the minimally covering form this builds on
// is in RFC 4470, and RFC 7129 explains the denial records in general).

import (
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

const (
	// keyTTL is the TTL of the DNSKEY and of the SOA that Sign adds.
	keyTTL = 300
	// sigInception and sigLifetime place signatures' validity an hour
	// in the past and a day ahead, so that a validator's clock a little
	// off from ours does not matter (RFC 4035 section 5.3.1 checks
	// both ends).
	sigInception = time.Hour
	sigLifetime  = 24 * time.Hour
	// ednsSize is the UDP payload size the server advertises in answers
	// to EDNS queries from signed zones (the DNS flag day 2020 value).
	ednsSize = 1232
)

// signedZone is a zone Sign made secure: its key and the signatures it
// made so far.
type signedZone struct {
	apex   string // lowercase FQDN
	key    *mdns.DNSKEY
	signer crypto.Signer
	sigs   map[rrsetKey]cachedSig
}

// rrsetKey names an RRset: lowercase owner name and type.
type rrsetKey struct {
	name  string
	rtype uint16
}

// cachedSig is a signature and the RRset it covers, in text, so that a
// record added since is noticed and the RRset signed again.
type cachedSig struct {
	data string
	sig  *mdns.RRSIG
}

// Sign makes zone (such as "secure.test.") a signed zone: it generates
// a key (ECDSA P-256 with SHA-256, algorithm 13, RFC 6605) used both as
// key-signing and zone-signing key (flags 257, SEP set), adds its DNSKEY
// at the apex, and an SOA there if the zone has none (negative answers
// need one, RFC 2308). From then on, queries with the DO bit set
// (RFC 3225) for names at or below the apex get an RRSIG with each
// RRset and signed NSEC records in negative answers; queries without it
// get the same answers without DNSSEC records, as from a real server.
// Every name below the apex belongs to the zone: the server knows no
// delegations.
//
// The returned anchor is the key's DS record (SHA-256 digest) in the
// syntax of Unbound's trust-anchor option, such as
// "secure.test. DS 12345 13 2 3A1F...": give it to StartUnbound in
// Zone.Anchor. Records can still be added afterwards; they are signed
// when served.
func (s *Server) Sign(zone string) (anchor string, err error) {
	apex := mdns.CanonicalName(zone)
	if _, ok := mdns.IsDomainName(apex); !ok {
		return "", fmt.Errorf("dnstest: sign %q: not a domain name", zone)
	}
	key := &mdns.DNSKEY{
		Hdr:       mdns.RR_Header{Name: apex, Rrtype: mdns.TypeDNSKEY, Class: mdns.ClassINET, Ttl: keyTTL},
		Flags:     mdns.ZONE | mdns.SEP,
		Protocol:  3,
		Algorithm: mdns.ECDSAP256SHA256,
	}
	var priv crypto.PrivateKey
	// miekg/dns refuses to sign with key tag 0, which is 1 key in 65536.
	for priv == nil || key.KeyTag() == 0 {
		if priv, err = key.Generate(256); err != nil {
			return "", fmt.Errorf("dnstest: sign %s: %w", apex, err)
		}
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return "", fmt.Errorf("dnstest: sign %s: %T is not a crypto.Signer", apex, priv)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.zones[apex] != nil {
		return "", fmt.Errorf("dnstest: %s is already signed", apex)
	}
	if s.zones == nil {
		s.zones = map[string]*signedZone{}
	}
	if s.soa(apex) == nil {
		s.records[apex] = append(s.records[apex], &mdns.SOA{
			Hdr:     mdns.RR_Header{Name: apex, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: keyTTL},
			Ns:      "ns." + apex,
			Mbox:    "hostmaster." + apex,
			Serial:  1,
			Refresh: 3600,
			Retry:   600,
			Expire:  86400,
			Minttl:  60,
		})
	}
	s.records[apex] = append(s.records[apex], key)
	s.zones[apex] = &signedZone{apex: apex, key: key, signer: signer, sigs: map[rrsetKey]cachedSig{}}
	ds := key.ToDS(mdns.SHA256)
	return fmt.Sprintf("%s DS %d %d %d %s", apex, ds.KeyTag, ds.Algorithm, ds.DigestType, strings.ToUpper(ds.Digest)), nil
}

// Corrupt makes the signature the server sends over the RRset of name
// and qtype invalid, so that a validator finds the data bogus
// (RFC 4035 section 5.5) while the records themselves are unchanged:
// what an attacker who rewrites answers on the path achieves. It may
// be called before or after Sign; it has effect only in signed zones.
// Corrupting mdns.TypeNSEC at a name makes its denials of existence
// bogus, mdns.TypeDNSKEY at an apex the whole zone.
func (s *Server) Corrupt(name string, qtype uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.corrupt == nil {
		s.corrupt = map[rrsetKey]bool{}
	}
	s.corrupt[rrsetKey{mdns.CanonicalName(name), qtype}] = true
}

// signedZoneOf returns the signed zone name is in, the one with the
// closest apex, or nil. The caller holds s.mu.
func (s *Server) signedZoneOf(name string) *signedZone {
	if len(s.zones) == 0 {
		return nil
	}
	for off, end := 0, false; !end; off, end = mdns.NextLabel(name, off) {
		if z := s.zones[name[off:]]; z != nil {
			return z
		}
	}
	return s.zones["."]
}

// soa returns the SOA record at apex, or nil. The caller holds s.mu.
func (s *Server) soa(apex string) *mdns.SOA {
	for _, rr := range s.records[apex] {
		if soa, ok := rr.(*mdns.SOA); ok {
			return soa
		}
	}
	return nil
}

// answerSigned fills resp, the answer to req for name in the signed zone
// z: the RRsets asked for with their signatures, or a negative answer
// with the zone's SOA and an NSEC record at name proving it, signed.
// rrs are the records of name; known is whether name exists for the
// server (it has records, or it is an empty non-terminal and the server
// answers NODATA for those). DNSSEC records go only to queries with the
// DO bit set, which also get an OPT record back (RFC 6891). Over UDP
// an answer larger than the client's buffer is truncated (TC set) so
// that the client retries over TCP.
func (s *Server) answerSigned(resp, req *mdns.Msg, z *signedZone, name string, rrs []mdns.RR, known, udp bool) {
	q := req.Question[0]
	opt := req.IsEdns0()
	do := opt != nil && opt.Do()
	if err := s.fillSigned(resp, z, q, name, rrs, known, do); err != nil {
		resp.Answer, resp.Ns = nil, nil
		resp.Rcode = mdns.RcodeServerFailure
	}
	size := mdns.MinMsgSize
	if opt != nil {
		resp.SetEdns0(ednsSize, do)
		size = max(size, int(opt.UDPSize()))
	}
	if udp {
		resp.Truncate(size)
	}
}

// fillSigned is answerSigned without the transport concerns.
func (s *Server) fillSigned(resp *mdns.Msg, z *signedZone, q mdns.Question, name string, rrs []mdns.RR, known, do bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp.Answer = answer(rrs, q.Qtype)
	if len(resp.Answer) > 0 {
		if do {
			sigs, err := s.signSets(z, resp.Answer)
			if err != nil {
				return err
			}
			resp.Answer = append(resp.Answer, sigs...)
		}
		return nil
	}

	// Negative answer: NODATA, or NXDOMAIN for a name that does not
	// exist, with the SOA for negative caching (RFC 2308).
	soa := s.soa(z.apex)
	if soa == nil {
		return errors.New("no SOA") // Sign adds one; nothing removes it
	}
	resp.Ns = []mdns.RR{soa}
	if !do {
		if !known {
			resp.Rcode = mdns.RcodeNameError
		}
		return nil
	}
	// Compact denial of existence (RFC 9824): NODATA for every name,
	// proven by an NSEC record at the name itself whose next name is the
	// name's immediate successor in canonical order (\000.name, RFC 4034
	// section 6.1), so that it covers no other name. Its type bitmap
	// lists what the name has, and RRSIG and NSEC, which every signed
	// name has (RFC 4035 section 2.3); the validator checks that the
	// type asked for is absent, and CNAME (RFC 4035 section 5.4). A name
	// that does not exist has only RRSIG, NSEC and NXNAME, the type
	// RFC 9824 adds so that resolvers can tell it from an empty
	// non-terminal. Because the NSEC matches the name, no wildcard proof
	// is needed, unlike the NXDOMAIN proof of RFC 4035 section 3.1.3.2.
	types := []uint16{mdns.TypeRRSIG, mdns.TypeNSEC}
	for _, rr := range rrs {
		types = append(types, rr.Header().Rrtype)
	}
	if !known {
		types = append(types, mdns.TypeNXNAME)
	}
	slices.Sort(types)
	next := `\000.` + name
	if name == "." {
		next = `\000.`
	}
	nsec := &mdns.NSEC{
		// RFC 9077: the TTL of negative answers' NSEC is the SOA's
		// negative TTL, the smaller of its TTL and MINIMUM fields.
		Hdr:        mdns.RR_Header{Name: name, Rrtype: mdns.TypeNSEC, Class: mdns.ClassINET, Ttl: min(soa.Hdr.Ttl, soa.Minttl)},
		NextDomain: next,
		TypeBitMap: slices.Compact(types),
	}
	resp.Ns = append(resp.Ns, nsec)
	sigs, err := s.signSets(z, resp.Ns)
	if err != nil {
		return err
	}
	resp.Ns = append(resp.Ns, sigs...)
	return nil
}

// signSets returns an RRSIG for each RRset among rrs, in their order.
// The caller holds s.mu.
func (s *Server) signSets(z *signedZone, rrs []mdns.RR) ([]mdns.RR, error) {
	var sigs []mdns.RR
	var done []rrsetKey
	for _, rr := range rrs {
		k := rrsetKey{mdns.CanonicalName(rr.Header().Name), rr.Header().Rrtype}
		if slices.Contains(done, k) {
			continue
		}
		done = append(done, k)
		var set []mdns.RR
		for _, r := range rrs {
			if r.Header().Rrtype == k.rtype && mdns.CanonicalName(r.Header().Name) == k.name {
				set = append(set, r)
			}
		}
		sig, err := s.signature(z, k, set)
		if err != nil {
			return nil, err
		}
		sigs = append(sigs, sig)
	}
	return sigs, nil
}

// signature returns the RRSIG over set, the RRset k, from the cache when
// it still covers the same records and is valid for an hour more;
// corrupted if Corrupt asked for it. The caller holds s.mu.
func (s *Server) signature(z *signedZone, k rrsetKey, set []mdns.RR) (*mdns.RRSIG, error) {
	var data strings.Builder
	ttl := set[0].Header().Ttl
	for _, rr := range set {
		data.WriteString(rr.String())
		data.WriteByte('\n')
		ttl = min(ttl, rr.Header().Ttl)
	}
	now := time.Now()
	c, ok := z.sigs[k]
	if !ok || c.data != data.String() || int64(c.sig.Expiration) < now.Add(time.Hour).Unix() {
		sig := &mdns.RRSIG{
			// The original TTL is the smallest of the set's, which a
			// validator caps the RRset's TTL to (RFC 4035 section 5.3.3).
			Hdr:        mdns.RR_Header{Ttl: ttl},
			OrigTtl:    ttl,
			Algorithm:  z.key.Algorithm,
			KeyTag:     z.key.KeyTag(),
			SignerName: z.apex,
			Inception:  uint32(now.Add(-sigInception).Unix()),
			Expiration: uint32(now.Add(sigLifetime).Unix()),
		}
		if err := sig.Sign(z.signer, set); err != nil {
			return nil, fmt.Errorf("dnstest: sign %s %s: %w", k.name, mdns.TypeToString[k.rtype], err)
		}
		c = cachedSig{data: data.String(), sig: sig}
		z.sigs[k] = c
	}
	if !s.corrupt[k] {
		return c.sig, nil
	}
	return corrupted(c.sig), nil
}

// corrupted returns a copy of sig whose signature bytes are inverted at
// both ends: well formed, but it fails verification.
func corrupted(sig *mdns.RRSIG) *mdns.RRSIG {
	bad := mdns.Copy(sig).(*mdns.RRSIG)
	b, err := base64.StdEncoding.DecodeString(bad.Signature)
	if err != nil || len(b) == 0 {
		b = make([]byte, 64) // an ECDSA P-256 signature's size
	}
	b[0] ^= 0xff
	b[len(b)-1] ^= 0xff
	bad.Signature = base64.StdEncoding.EncodeToString(b)
	return bad
}
