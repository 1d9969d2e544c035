package mfa

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/emersion/go-msgauth/authres"

	"smtpd/internal/config"
	"smtpd/internal/dns"
	"smtpd/internal/mailauth/arc"
	"smtpd/internal/mailauth/dkim"
	"smtpd/internal/mailauth/dmarc"
	"smtpd/internal/mailauth/dnsbl"
	"smtpd/internal/mailauth/spf"
	"smtpd/proto"
)

// maxCheckedHeader bounds the header section mfa reads into memory to
// find the fields it removes and the From of DMARC; past it, the rest
// is body.
const maxCheckedHeader = 256 << 10

// Checks is what mfa needs for the checks of clients and mail
// (SPF, DKIM, DMARC, DNS lists, FCrDNS) and for signing: a resolver and
// the signing keys, read before the process drops its privileges, since
// mfa alone holds the DKIM keys.
type Checks struct {
	authservID string
	resolver   *dns.Resolver
	spf        *spf.Checker
	dmarc      *dmarc.Checker
	// signers are the DKIM signers by key id, sealers the ARC sealers
	// with the same keys
	signers map[int]*dkim.Signer
	sealers map[int]*arc.Sealer
}

// NewChecks reads the DKIM keys of the configuration and prepares the
// resolver; it runs before the chroot.
func NewChecks(cfg *config.Config) (*Checks, error) {
	c := &Checks{authservID: cfg.AuthservID, signers: map[int]*dkim.Signer{}, sealers: map[int]*arc.Sealer{}}
	for _, k := range cfg.DKIMKeys {
		pem, err := os.ReadFile(k.Key)
		if err != nil {
			return nil, fmt.Errorf("dkim %s: %w", k.Name, err)
		}
		key, err := dkim.LoadKey(pem)
		if err != nil {
			return nil, fmt.Errorf("dkim %s: %s: %w", k.Name, k.Key, err)
		}
		c.signers[k.ID] = &dkim.Signer{Domain: k.Domain, Selector: k.Selector, Key: key, Headers: k.Headers, HeaderCanon: k.HeaderCanon, BodyCanon: k.BodyCanon}
		c.sealers[k.ID] = &arc.Sealer{Domain: k.Domain, Selector: k.Selector, Signer: key}
	}
	// sealing validates the chain it extends
	needDNS := false
	for _, a := range cfg.Actions {
		needDNS = needDNS || a.Seal != nil
	}
	for _, l := range cfg.Listeners {
		needDNS = needDNS || len(l.Checks) > 0
	}
	if needDNS {
		r, err := dns.New(cfg.Resolvers)
		if err != nil {
			return nil, err
		}
		c.resolver = r
		c.spf = &spf.Checker{Resolver: r, Hostname: cfg.Hostname}
		c.dmarc = &dmarc.Checker{Resolver: r}
	}
	return c, nil
}

// authState is what the checks learnt of a session and its message.
type authState struct {
	ip      netip.Addr
	helo    string
	iprev   string // FCrDNS result, "" when not checked
	iprevOK string // the name that passed
	spf     *spf.Outcome
	// arc is the validation of the message's ARC chain, results our
	// Authentication-Results without the authserv-id, for a seal
	arc     *arc.Result
	results string
	// dkim and dmarc are the results for filters
	dkim, dmarc string
}

// checking reports whether the session's listener makes check c.
func (s *session) checking(c string) bool {
	return s.listener != nil && slices.Contains(s.listener.Checks, c)
}

// resultOf is the result of one of the session's checks, for the
// filters that test them: for DKIM, pass if a signature passed, else
// the first one's result.
func (s *session) resultOf(check string) string {
	c := s.checked
	switch check {
	case config.CheckFCrDNS:
		return c.iprev
	case config.CheckSPF:
		if c.spf != nil {
			return string(c.spf.Result)
		}
	case config.CheckDKIM:
		return c.dkim
	case config.CheckARC:
		if c.arc != nil {
			return string(c.arc.Status)
		}
	case config.CheckDMARC:
		return c.dmarc
	}
	return ""
}

// knownResults are the results known before the message, for the
// match rules (proto.Session.Results).
func (s *session) knownResults() string {
	var out []string
	for _, check := range []string{config.CheckSPF, config.CheckFCrDNS} {
		if r := s.resultOf(check); r != "" {
			out = append(out, check+"="+r)
		}
	}
	return strings.Join(out, " ")
}

// dnsFailure is the verdict when a check cannot tell for a DNS
// failure: a temporary failure, never a refusal for good.
var dnsFailure = proto.Reply{Code: 451, Enhanced: "4.4.3", Text: "Temporary DNS failure while checking your mail, try again later"}

// check runs the session's checks at q's phase, before its filters:
// FCrDNS and the DNS lists at connect, SPF at MAIL.
func (s *session) check(q *proto.SMTPFilterQuery) *proto.MFAFilterVerdict {
	c := s.m.checks
	if s.listener == nil || len(s.listener.Checks) == 0 || c.resolver == nil {
		return nil
	}
	ctx := context.Background()
	switch q.Phase {
	case proto.PhaseConnect:
		if host, _, err := net.SplitHostPort(s.src); err == nil {
			s.checked.ip, _ = netip.ParseAddr(host)
		}
		if !s.checked.ip.IsValid() {
			return nil
		}
		if s.checking(config.CheckFCrDNS) {
			name, result, _ := dnsbl.FCrDNS(ctx, c.resolver, s.checked.ip)
			s.checked.iprev, s.checked.iprevOK = result, name
			s.m.stats.Increment("mfa.check.fcrdns."+result, 1)
		}
		if s.checking(config.CheckDNSBL) {
			return s.checkLists(ctx)
		}
	case proto.PhaseHelo, proto.PhaseEhlo:
		s.checked.helo = q.Param
	case proto.PhaseMail:
		if s.checking(config.CheckSPF) && s.checked.ip.IsValid() {
			o := c.spf.CheckMail(ctx, s.checked.ip, q.Param, s.checked.helo)
			s.checked.spf = &o
			s.m.stats.Increment("mfa.check.spf."+string(o.Result), 1)
		}
	}
	return nil
}

// checkLists asks the DNS lists about the client: a listed client is
// refused with the list's text, one a list cannot tell about now is
// refused for now.
func (s *session) checkLists(ctx context.Context) *proto.MFAFilterVerdict {
	var lists []dnsbl.List
	for _, l := range s.listener.DNSLists {
		list := dnsbl.List{Zone: l.Zone, Allow: l.Allow}
		for _, code := range l.Codes {
			list.Codes = append(list.Codes, dnsbl.Range{Lo: code, Hi: code})
		}
		lists = append(lists, list)
	}
	res, err := dnsbl.Check(ctx, s.m.checks.resolver, s.checked.ip, lists)
	if _, ok := res.Allowed(); ok {
		s.m.stats.Increment("mfa.check.dnsbl.allowed", 1)
		return nil
	}
	if m, ok := res.Blocked(); ok {
		s.m.stats.Increment("mfa.check.dnsbl.listed", 1)
		return &proto.MFAFilterVerdict{Verdict: proto.VerdictReject, Reply: proto.Reply{Code: 554, Enhanced: "5.7.1", Text: m.Message(s.checked.ip)}}
	}
	if err != nil {
		s.m.stats.Increment("mfa.check.dnsbl.temperror", 1)
		s.m.log.Warnf("%016x: DNS lists: %v", s.id, err)
		if s.listener.DNSFailure != config.FailProceed {
			return &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: dnsFailure}
		}
	}
	s.m.stats.Increment("mfa.check.dnsbl.clean", 1)
	return nil
}

// messageChecks verifies the message's DKIM signatures, evaluates
// DMARC, and writes the result: our Authentication-Results (and
// Received-SPF) in front of the message, whose own
// Authentication-Results that claim our authserv-id are removed
// (RFC 8601 §5). A DMARC failure of a domain that asks for rejection
// refuses the message.
func (s *session) messageChecks(in *os.File, size int64) (*os.File, *proto.MFAFilterVerdict) {
	c := s.m.checks
	if s.listener == nil || len(s.listener.Checks) == 0 || c.resolver == nil {
		return nil, nil
	}
	ctx := context.Background()
	var results []authres.Result
	var summary []string
	if s.checked.iprev != "" {
		results = append(results, &authres.IPRevResult{Value: authres.ResultValue(s.checked.iprev), IP: s.checked.ip.String()})
	}
	if o := s.checked.spf; o != nil {
		r := &authres.SPFResult{Value: authres.ResultValue(o.Result)}
		if o.Identity == spf.IdentityMailFrom {
			r.From = o.Sender
		} else {
			r.Helo = o.Domain
		}
		results = append(results, r)
		summary = append(summary, "spf="+string(o.Result))
	}
	var sigs []dkim.Result
	if s.checking(config.CheckDKIM) {
		var err error
		sigs, err = dkim.Verify(ctx, io.NewSectionReader(in, 0, size), c.resolver)
		if err != nil {
			s.m.log.Warnf("%016x: DKIM: %v", s.id, err)
		}
		if len(sigs) == 0 {
			results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
			summary = append(summary, "dkim=none")
			s.checked.dkim = "none"
		}
		for i, sig := range sigs {
			if i == 0 || sig.Status == dkim.StatusPass {
				s.checked.dkim = string(sig.Status)
			}
			results = append(results, sig.AuthRes())
			summary = append(summary, "dkim="+string(sig.Status))
			s.m.stats.Increment("mfa.check.dkim."+string(sig.Status), 1)
		}
	}
	if s.checking(config.CheckARC) {
		res, err := (&arc.Validator{Resolver: c.resolver}).Validate(ctx, io.NewSectionReader(in, 0, size))
		if err != nil {
			s.m.log.Warnf("%016x: ARC: %v", s.id, err)
		} else {
			s.checked.arc = res
			results = append(results, res.AuthResult())
			summary = append(summary, "arc="+string(res.Status))
			s.m.stats.Increment("mfa.check.arc."+string(res.Status), 1)
		}
	}
	hdr, bodyAt, err := readMessageHeader(in, size)
	if err != nil {
		return nil, &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: proto.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary failure reading the message"}}
	}
	var junk bool
	if s.checking(config.CheckDMARC) {
		v, r, sum := s.dmarc(ctx, hdr, sigs)
		if v != nil {
			return nil, v
		}
		results = append(results, r)
		summary = append(summary, sum)
		junk = sum == "dmarc=fail(quarantine)"
		s.checked.dmarc = string(r.(*authres.DMARCResult).Value)
	}
	var prefix strings.Builder
	ar := authres.Format(c.authservID, results)
	s.checked.results = strings.TrimPrefix(strings.TrimPrefix(ar, c.authservID), "; ")
	prefix.WriteString(foldField("Authentication-Results", ar))
	if o := s.checked.spf; o != nil {
		prefix.WriteString(spf.ReceivedSPF(o.Result, spf.HeaderFields{
			Receiver: c.authservID, ClientIP: s.checked.ip, EnvelopeFrom: emptyIfHelo(o), Helo: s.checked.helo, Identity: o.Identity, Problem: errText(o.Err),
		}))
	}
	if junk {
		prefix.WriteString("X-Spam: yes\r\n")
	}
	s.authSummary = strings.Join(summary, " ")
	out, err := memFile()
	if err == nil {
		err = writeMessage(out, prefix.String(), dropOurResults(hdr, c.authservID), in, bodyAt, size)
	}
	if err != nil {
		if out != nil {
			out.Close()
		}
		return nil, &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: proto.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary failure writing the message"}}
	}
	return out, nil
}

// dmarc evaluates DMARC for the message with header hdr: the verdict
// (a rejection the domain asked for, or a temporary failure), else the
// result for Authentication-Results and its summary.
func (s *session) dmarc(ctx context.Context, hdr []byte, sigs []dkim.Result) (*proto.MFAFilterVerdict, authres.Result, string) {
	msg, err := mail.ReadMessage(bytes.NewReader(append(append([]byte(nil), hdr...), "\r\n"...)))
	var from string
	if err == nil {
		from, err = dmarc.FromDomain(msg.Header)
	}
	if err != nil {
		s.m.stats.Increment("mfa.check.dmarc.permerror", 1)
		return nil, &authres.DMARCResult{Value: authres.ResultPermError, Reason: "no single author domain"}, "dmarc=permerror"
	}
	in := dmarc.Input{FromDomain: from}
	if o := s.checked.spf; o != nil {
		in.SPF = dmarc.AuthResult{Result: string(o.Result), Domain: o.Domain}
	}
	for _, sig := range sigs {
		in.DKIM = append(in.DKIM, dmarc.AuthResult{Result: string(sig.Status), Domain: sig.Domain})
	}
	res, err := s.m.checks.dmarc.Check(ctx, in)
	s.m.stats.Increment("mfa.check.dmarc."+string(res.Result), 1)
	ar := &authres.DMARCResult{Value: authres.ResultValue(res.Result), From: from}
	switch {
	case res.Result == dmarc.TempError:
		s.m.log.Warnf("%016x: DMARC: %v", s.id, err)
		if s.listener.DNSFailure != config.FailProceed {
			// RFC 7489 §6.6.3: the receiver may defer
			return &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: dnsFailure}, nil, ""
		}
	case res.Result == dmarc.Fail && res.Disposition == dmarc.DispositionReject:
		// RFC 7489 §6.7: the domain asked that such mail be refused
		return &proto.MFAFilterVerdict{Verdict: proto.VerdictReject, Reply: proto.Reply{Code: 550, Enhanced: "5.7.1",
			Text: "Message refused: " + from + " asks that mail failing DMARC be rejected"}}, nil, ""
	case res.Result == dmarc.Fail && res.Disposition == dmarc.DispositionQuarantine:
		return nil, ar, "dmarc=fail(quarantine)"
	}
	return nil, ar, "dmarc=" + string(res.Result)
}

func emptyIfHelo(o *spf.Outcome) string {
	if o.Identity == spf.IdentityHelo {
		return ""
	}
	return o.Sender
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// foldField writes a header field, folding its value at the "; "
// between results so that lines stay short (RFC 5322 §2.2.3).
func foldField(name, value string) string {
	return name + ": " + strings.ReplaceAll(value, "; ", ";\r\n\t") + "\r\n"
}

// readMessageHeader reads the header section of the message, at most
// maxCheckedHeader bytes of it; bodyAt is where what follows starts
// (the empty line included).
func readMessageHeader(f *os.File, size int64) (hdr []byte, bodyAt int64, err error) {
	br := bufio.NewReader(io.NewSectionReader(f, 0, min(size, maxCheckedHeader)))
	for {
		line, err := br.ReadBytes('\n')
		if len(line) == 0 || string(line) == "\r\n" || string(line) == "\n" || err != nil && err != io.EOF {
			if err != nil && err != io.EOF {
				return nil, 0, err
			}
			return hdr, int64(len(hdr)), nil
		}
		if line[0] != ' ' && line[0] != '\t' && !bytes.Contains(line, []byte(":")) {
			// not a field: the body starts without an empty line
			return hdr, int64(len(hdr)), nil
		}
		hdr = append(hdr, line...)
		if err == io.EOF {
			return hdr, int64(len(hdr)), nil
		}
	}
}

// dropOurResults removes the Authentication-Results fields of hdr
// whose authserv-id is ours: nobody else may speak for us (RFC 8601
// §5).
func dropOurResults(hdr []byte, authservID string) []byte {
	var out []byte
	skipping := false
	for len(hdr) > 0 {
		i := bytes.IndexByte(hdr, '\n')
		line := hdr[:i+1]
		hdr = hdr[i+1:]
		if line[0] == ' ' || line[0] == '\t' {
			if !skipping {
				out = append(out, line...)
			}
			continue
		}
		skipping = false
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(strings.TrimSpace(string(name)), "Authentication-Results") {
			// the value may be folded: take the id from the whole field
			whole := string(value)
			for j := 0; j < len(hdr) && (hdr[j] == ' ' || hdr[j] == '\t'); {
				k := bytes.IndexByte(hdr[j:], '\n')
				whole += string(hdr[j : j+k+1])
				j += k + 1
			}
			if id, _, err := authres.Parse(strings.TrimSpace(whole)); err == nil && strings.EqualFold(id, authservID) {
				skipping = true
				continue
			} else if err != nil && strings.EqualFold(strings.TrimSpace(strings.Split(whole, ";")[0]), authservID) {
				skipping = true
				continue
			}
		}
		out = append(out, line...)
	}
	return out
}

// writeMessage writes prefix, the header hdr and the rest of in from
// bodyAt to out. in is read at offsets (pread): its file offset is
// shared with smtp, which passed the descriptor.
func writeMessage(out *os.File, prefix string, hdr []byte, in *os.File, bodyAt, size int64) error {
	if _, err := out.WriteString(prefix); err != nil {
		return err
	}
	if _, err := out.Write(hdr); err != nil {
		return err
	}
	_, err := io.Copy(out, io.NewSectionReader(in, bodyAt, size-bodyAt))
	return err
}

// signers are the DKIM signers of the keys given by id.
func (c *Checks) signersOf(keys []uint32) []*dkim.Signer {
	var out []*dkim.Signer
	for _, k := range keys {
		if sg := c.signers[int(k)]; sg != nil {
			out = append(out, sg)
		}
	}
	return out
}

// signStage is the last stage of a message: the signatures of the
// keys given. A message that cannot be signed is refused for now.
func (c *Checks) signStage(m *MFA, sid uint64, keys []uint32) messageStage {
	return func(in *os.File, size int64) (*os.File, *proto.MFAFilterVerdict) {
		out, err := c.sign(in, size, keys)
		if errors.Is(err, dkim.ErrNoFrom) || errors.Is(err, dkim.ErrHeaderTooLarge) {
			// the message's own doing: it goes unsigned, as it would
			// go nowhere else
			m.log.Warnf("%016x: not signed: %v", sid, err)
			return nil, nil
		}
		if err != nil {
			m.log.Warnf("%016x: DKIM signing: %v", sid, err)
			return nil, &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: signFailure}
		}
		if out != nil {
			m.stats.Increment("mfa.dkim.signed", 1)
		}
		return out, nil
	}
}

// sealStage adds our ARC set to a message we pass on (RFC 8617
// §5.1), with the key given, over the results of our checks (results,
// as in Authentication-Results after the authserv-id) and the chain's
// validation (chain; nil to validate it now). A chain that failed is
// not extended; a message that cannot be sealed goes on unsealed, as a
// hop without ARC would pass it.
func (c *Checks) sealStage(m *MFA, sid uint64, keys []uint32, chain *arc.Result, results string) messageStage {
	return func(in *os.File, size int64) (*os.File, *proto.MFAFilterVerdict) {
		if len(keys) == 0 || c.sealers[int(keys[0])] == nil {
			return nil, nil
		}
		if chain == nil {
			var err error
			if chain, err = (&arc.Validator{Resolver: c.resolver}).Validate(context.Background(), io.NewSectionReader(in, 0, size)); err != nil {
				m.log.Warnf("%016x: not sealed: %v", sid, err)
				return nil, nil
			}
		}
		if results == "" {
			results = "arc=" + string(chain.Status)
		}
		set, err := c.sealers[int(keys[0])].Seal(io.NewSectionReader(in, 0, size), c.authservID, results, chain)
		if err != nil {
			m.log.Warnf("%016x: not sealed: %v", sid, err)
			return nil, nil
		}
		out, err := memFile()
		if err == nil {
			err = writeMessage(out, set.String(), nil, in, 0, size)
		}
		if err != nil {
			if out != nil {
				out.Close()
			}
			return nil, &proto.MFAFilterVerdict{Verdict: proto.VerdictTempfail, Reply: signFailure}
		}
		m.stats.Increment("mfa.arc.sealed", 1)
		return out, nil
	}
}

// sign signs the message in with the keys given: the DKIM-Signature
// fields go in front of it, in a new file.
func (c *Checks) sign(in *os.File, size int64, keys []uint32) (*os.File, error) {
	signers := c.signersOf(keys)
	if len(signers) == 0 {
		return nil, nil
	}
	fields, err := dkim.SignAll(io.NewSectionReader(in, 0, size), signers...)
	if err != nil {
		return nil, err
	}
	out, err := memFile()
	if err != nil {
		return nil, err
	}
	if err := writeMessage(out, fields, nil, in, 0, size); err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}
