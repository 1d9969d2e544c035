package mta

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
	mdns "github.com/miekg/dns"

	"smtpd/internal/config"
	"smtpd/internal/dane"
	"smtpd/internal/logging"
	"smtpd/internal/mtasts"
	"smtpd/internal/tlsrpt"
	"smtpd/proto"
)

// The outbound TLS policies, as logs, smtpctl and the Received-like
// delivery lines name them.
const (
	policyDANE          = "dane"
	policyMTASTS        = "mta-sts"
	policySTSTesting    = "mta-sts-testing"
	policyRequired      = "required"
	policyOpportunistic = "opportunistic"
	policyNone          = "none"
)

// tlsPolicy is how one session to one exchanger must use TLS.
type tlsPolicy struct {
	name string
	// why says where the policy came from, for logs and smtpctl.
	why string
	// mustTLS forbids plain text: STARTTLS missing or failing
	// tempfails the delivery.
	mustTLS bool
	// verifyPKIX makes a certificate that does not chain to a trusted
	// authority for the host's name fatal.
	verifyPKIX bool
	// tlsa are the host's usable DANE records, which then authenticate
	// it (daneAuth); with DANE and none usable, TLS is mandatory but
	// not authenticated (RFC 7672 §2.2).
	tlsa  []*mdns.TLSA
	names []string
	// secureName says the host name was learnt securely (DNSSEC MX
	// records, an MTA-STS policy, the configuration): a certificate
	// valid for it authenticates the server for REQUIRETLS (RFC 8689
	// §4.2.1).
	secureName bool
	// report is the policy as TLS-RPT describes it, nil when sessions
	// are not counted (smarthosts); failure, when set, is what the
	// session counts as whatever its handshake gives: a testing policy
	// that does not list the host, a policy that could not be had.
	report     *tlsrpt.Result
	failure    tlsrpt.ResultType
	failureErr error
}

// domainPolicy is what a relay's domain says of TLS before its hosts
// are looked at: the configured override and its MTA-STS policy.
type domainPolicy struct {
	mode string // config.Policy*
	sts  *mtasts.Policy
	// stsErr is the failure to get the MTA-STS policy, counted for
	// TLS-RPT with each session it leaves opportunistic (hostPolicy).
	stsErr error
}

// domainPolicy returns the TLS policy settings of a relay's domain.
// The MTA-STS policy is looked up only where it may apply.
func (m *MTA) domainPolicy(r *relay) *domainPolicy {
	dp := &domainPolicy{mode: config.PolicyAuto}
	if d := m.cfg.DestinationFor(r.domain); d != nil {
		dp.mode = d.TLS
	}
	switch {
	case r.url != nil:
		return dp
	case r.tlsOptional && dp.mode != config.PolicyNoTLS:
		// TLS-Required: No (RFC 8689 §5): the recipient's policy is
		// not enforced for this mail
		dp.mode = config.PolicyOpportunistic
		return dp
	case dp.mode == config.PolicyAuto && r.action.RelayTLS == "required":
		dp.mode = config.PolicyRequired
	case dp.mode == config.PolicyAuto && r.action.RelayTLS == "no-verify":
		// certificates are not checked: no DANE or MTA-STS either
		dp.mode = config.PolicyOpportunistic
	}
	if (dp.mode == config.PolicyAuto || dp.mode == config.PolicyMTASTS) && m.sts != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		dp.sts, dp.stsErr = m.sts.Policy(ctx, r.domain)
		cancel()
		if dp.stsErr != nil {
			m.child.Log.Warnf("MTA-STS policy of %s: %v", r.domain, dp.stsErr)
		}
	}
	return dp
}

// hostPolicy decides the TLS policy of a session to one exchanger of a
// relay. An error means the host must not be used now: its TLSA
// records cannot be had (bogus or unreachable, RFC 7672 §2.1.1), or a
// policy leaves it out.
func (m *MTA) hostPolicy(r *relay, dp *domainPolicy, mx proto.MXHost) (*tlsPolicy, error) {
	if r.url != nil {
		return m.smarthostPolicy(r), nil
	}
	base := &tlsrpt.Result{PolicyDomain: r.domain, PolicyType: tlsrpt.PolicyNone, MXHost: mx.Host}
	switch dp.mode {
	case config.PolicyNoTLS:
		return &tlsPolicy{name: policyNone, why: "configured"}, nil
	case config.PolicyOpportunistic:
		why := "configured"
		if r.tlsOptional {
			why = "TLS-Required: No"
		}
		return &tlsPolicy{name: policyOpportunistic, why: why, report: base}, nil
	case config.PolicyRequired:
		return &tlsPolicy{name: policyRequired, why: "configured", mustTLS: true, verifyPKIX: true, names: []string{mx.Host}, secureName: mx.Secure, report: base}, nil
	}
	if dp.mode == config.PolicyAuto || dp.mode == config.PolicyDANE {
		p, err := m.danePolicy(r, mx)
		if err != nil || p != nil {
			return p, err
		}
		if dp.mode == config.PolicyDANE {
			m.recordTLS(base, tlsrpt.ResultDANERequired, mx.Host, "", nil)
			return nil, tempfail(smtp.EnhancedCode{4, 7, 5}, nil, "DANE required for %s, but %s has no DNSSEC-authenticated TLSA records", r.domain, mx.Host)
		}
	}
	if dp.sts != nil && dp.sts.Mode != mtasts.ModeNone {
		p := &tlsPolicy{name: policyMTASTS, why: "MTA-STS policy id " + dp.sts.ID, mustTLS: true, verifyPKIX: true, names: []string{mx.Host}, secureName: true}
		p.report = &tlsrpt.Result{PolicyDomain: r.domain, PolicyType: tlsrpt.PolicySTS, PolicyStrings: dp.sts.Strings(), MXHost: strings.Join(dp.sts.MX, " ")}
		testing := dp.sts.Mode == mtasts.ModeTesting && dp.mode != config.PolicyMTASTS
		if testing {
			p.name, p.mustTLS, p.verifyPKIX = policySTSTesting, false, false
		}
		if !dp.sts.Match(mx.Host) {
			notListed := fmt.Errorf("%s is not an MX of the MTA-STS policy", mx.Host)
			if !testing {
				m.recordTLS(p.report, tlsrpt.ResultValidationFailure, mx.Host, "", notListed)
				return nil, tempfail(smtp.EnhancedCode{4, 7, 5}, nil, "MTA-STS policy of %s (id %s) does not list %s among its MX hosts %v", r.domain, dp.sts.ID, mx.Host, dp.sts.MX)
			}
			p.secureName = false
			p.failure, p.failureErr = tlsrpt.ResultValidationFailure, notListed
		}
		return p, nil
	}
	if dp.mode == config.PolicyMTASTS {
		why := "none published"
		if dp.stsErr != nil {
			why = dp.stsErr.Error()
		}
		return nil, tempfail(smtp.EnhancedCode{4, 7, 5}, nil, "MTA-STS required for %s, but it has no policy: %s", r.domain, why)
	}
	p := &tlsPolicy{name: policyOpportunistic, why: "no DANE or MTA-STS policy", names: []string{mx.Host}, secureName: mx.Secure, report: base}
	if rt := stsResultType(dp.stsErr); rt != "" {
		// announced but not to be had (RFC 8460 §4.3.2.2)
		p.failure, p.failureErr = rt, dp.stsErr
	}
	return p, nil
}

// danePolicy looks up the TLSA records of an exchanger whose MX and
// address records are DNSSEC-authenticated: nil, nil when DANE does
// not apply (insecure, or no records).
func (m *MTA) danePolicy(r *relay, mx proto.MXHost) (*tlsPolicy, error) {
	if !mx.Secure {
		return nil, nil
	}
	port, _ := strconv.Atoi(m.port(r))
	name := dane.TLSAName(mx.Host, port)
	res, err := m.resolveDNS(name, mdns.TypeTLSA)
	// a DANE policy is the MX host's: its reports go to the host's
	// domain, the TLSA base domain (RFC 8460 §3)
	report := &tlsrpt.Result{PolicyDomain: mx.Host, PolicyType: tlsrpt.PolicyTLSA, MXHost: mx.Host}
	switch {
	case err != nil || res.Status == proto.StatusTempfail:
		if err == nil {
			err = errors.New(res.Text)
		}
		m.recordTLS(report, tlsrpt.ResultDNSSECInvalid, mx.Host, "", err)
		return nil, tempfail(smtp.EnhancedCode{4, 7, 5}, err, "TLSA lookup of %s failed (bogus or unreachable): not delivering to %s without DANE", name, mx.Host)
	case res.Status == proto.StatusPermfail || !res.Secure || len(res.Records) == 0:
		return nil, nil
	}
	var rrs []*mdns.TLSA
	for _, text := range res.Records {
		if rr, err := mdns.NewRR(text); err == nil {
			if t, ok := rr.(*mdns.TLSA); ok {
				rrs = append(rrs, t)
				report.PolicyStrings = append(report.PolicyStrings, fmt.Sprintf("%d %d %d %s", t.Usage, t.Selector, t.MatchingType, t.Certificate))
			}
		}
	}
	if len(rrs) == 0 {
		return nil, nil
	}
	usable := dane.Usable(rrs)
	p := &tlsPolicy{
		name: policyDANE, why: fmt.Sprintf("%d TLSA records of %s (DNSSEC)", len(rrs), name),
		mustTLS: true, tlsa: usable, secureName: true,
		// the TLSA base domain, which is the MX host name here (mx.Host
		// is already the name after any CNAME), and the next-hop
		// domain, which RFC 7672 §3.2.2 also accepts
		names: []string{mx.Host, r.domain}, report: report,
	}
	if len(usable) == 0 {
		p.why += ", none usable: TLS without authentication"
	}
	return p, nil
}

// smarthostPolicy keeps the relay URL's own word on TLS: smtp+tls and
// smtps (and tls = "required") verify the certificate, unless the
// action says no-verify; smtp+notls and lmtp never use TLS.
func (m *MTA) smarthostPolicy(r *relay) *tlsPolicy {
	noVerify := r.action.RelayTLS == "no-verify"
	switch {
	case r.url.Scheme == "smtp+notls" || r.url.Scheme == "lmtp":
		return &tlsPolicy{name: policyNone, why: r.url.Scheme}
	case r.url.Scheme == "smtp+tls" || r.url.Scheme == "smtps" || r.action.RelayTLS == "required":
		p := &tlsPolicy{name: policyRequired, why: "relay " + r.url.Scheme, mustTLS: true, verifyPKIX: !noVerify, names: []string{r.domain}, secureName: true}
		if noVerify {
			p.why += ", no-verify"
		}
		return p
	}
	return &tlsPolicy{name: policyOpportunistic, why: "relay " + r.url.Scheme, names: []string{r.domain}, secureName: true}
}

// tlsSession is what a TLS handshake under a policy found out.
type tlsSession struct {
	// pkixErr is the certificate's PKIX verification for the host's
	// name, nil if it passed.
	pkixErr error
	// daneErr is the DANE verification, nil if it passed or did not
	// apply.
	daneErr error
}

// daneAuth reports whether DANE authenticates the server: it has
// usable TLSA records.
func (p *tlsPolicy) daneAuth() bool { return len(p.tlsa) > 0 }

// authenticated reports whether the server was authenticated, as
// REQUIRETLS asks (RFC 8689 §4.2.1): by DANE, or by a certificate valid
// for a name learnt securely.
func (p *tlsPolicy) authenticated(s *tlsSession) bool {
	if p.daneAuth() {
		return s.daneErr == nil
	}
	return s.pkixErr == nil && p.secureName
}

// tlsConfig is the client side of a handshake under p. Go's own
// verification is replaced by one that runs every check and keeps
// their outcomes, failing the handshake only where p enforces them.
func (m *MTA) tlsConfig(p *tlsPolicy, mx proto.MXHost, s *tlsSession) *tls.Config {
	name := mx.Host
	if len(p.names) > 0 {
		name = p.names[0]
	}
	return &tls.Config{
		ServerName:             name,
		InsecureSkipVerify:     true,
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			s.pkixErr = m.verifyPKIX(cs.PeerCertificates, name)
			if p.daneAuth() {
				s.daneErr = dane.Verify(p.tlsa, cs.PeerCertificates, p.names, time.Now())
				return s.daneErr
			}
			if p.verifyPKIX {
				return s.pkixErr
			}
			return nil
		},
	}
}

// verifyPKIX checks a chain as presented against the trusted
// authorities, for name.
func (m *MTA) verifyPKIX(chain []*x509.Certificate, name string) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	opts := x509.VerifyOptions{Roots: m.roots, DNSName: name, Intermediates: x509.NewCertPool()}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := chain[0].Verify(opts)
	return err
}

// tlsResultType classifies a failed handshake or verification for
// TLS-RPT (RFC 8460 §4.3).
func tlsResultType(s *tlsSession, p *tlsPolicy, err error) tlsrpt.ResultType {
	var de *dane.Error
	switch {
	case p.daneAuth() && errors.As(s.daneErr, &de):
		return tlsrpt.ResultType(de.Kind.ResultType())
	case s.pkixErr != nil && (p.verifyPKIX || p.name == policySTSTesting):
		return pkixResultType(s.pkixErr)
	case errors.As(err, &de):
		return tlsrpt.ResultType(de.Kind.ResultType())
	}
	return tlsrpt.ResultValidationFailure
}

func pkixResultType(err error) tlsrpt.ResultType {
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &hostErr):
		return tlsrpt.ResultCertificateHostMismatch
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return tlsrpt.ResultCertificateExpired
	case errors.As(err, &unknown):
		return tlsrpt.ResultCertificateNotTrusted
	}
	return tlsrpt.ResultValidationFailure
}

// stsResultType classifies a failure to get an MTA-STS policy for
// TLS-RPT (RFC 8460 §4.3.2.2): "" for one that is no policy failure,
// such as a DNS timeout.
func stsResultType(err error) tlsrpt.ResultType {
	return tlsrpt.ResultType(mtasts.ResultType(err))
}

// resolveDNS asks lookup for the records of name.
func (m *MTA) resolveDNS(name string, qtype uint16) (*proto.LookupDNSResult, error) {
	env, err := m.ask(proto.ProcLookup, &proto.MTAResolveDNS{Name: name, Qtype: qtype})
	if err != nil {
		return nil, err
	}
	res, ok := env.Msg.(*proto.LookupDNSResult)
	if !ok {
		return nil, fmt.Errorf("lookup answered %s", env.Type)
	}
	return res, nil
}

// describeTLS says how a session was protected, for the delivery log
// line: TLS version, cipher and policy.
func describeTLS(c *client, p *tlsPolicy) string {
	if c.tlsState == nil {
		return "tls=none policy=" + p.name
	}
	return fmt.Sprintf("tls=%s:%s policy=%s", logging.TLSVersion(c.tlsState.Version), tls.CipherSuiteName(c.tlsState.CipherSuite), p.name)
}
