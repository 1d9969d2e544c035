package mta

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"smtpd/internal/envelope"
	"smtpd/internal/logging"
	"smtpd/internal/monkey"
	"smtpd/internal/tlsrpt"
	"smtpd/proto"
)

// session delivers the tasks of a relay over one connection, for as
// long as tasks keep coming. A task paced by its destination's message
// rate is sent at its turn: the session waits for it with the
// connection open, at most about maxPaceWait, well within a server's
// idle timeout of 5 minutes (RFC 5321 §4.5.3.2.7).
func (m *MTA) session(r *relay) {
	defer m.sessionDone(r)
	first := m.next(r, false)
	if first == nil {
		return
	}
	mxs, err := m.resolve(r)
	if err == nil && r.action.Backup {
		mxs, err = m.betterThanUs(mxs)
	}
	if err != nil {
		m.failAll(r, first, err)
		return
	}
	c, cand, err := m.openSession(r, mxs)
	if errors.Is(err, errHostsBusy) && m.giveBack(r, first) {
		return
	}
	if err != nil {
		m.failAll(r, first, err)
		return
	}
	defer m.release(cand)
	report := func(e *envelope.Envelope, reply string, err error) {
		m.logDelivery(e, c, cand, reply, err)
		m.report(e, reply, err)
	}
	t := first
	for n := 0; t != nil; n++ {
		m.waitTurn(r.dest, t)
		if !send(c, t, report) {
			c.Close()
			return
		}
		if n+1 >= MessagesPerSession {
			break
		}
		t = m.next(r, true)
	}
	c.quit()
}

// openSession connects to the first host of the relay that answers
// and takes the session up to MAIL. A host whose TLS fails its policy
// (a certificate DANE or MTA-STS does not accept, STARTTLS missing) is
// left for the next one, as RFC 7672 §2.2 and RFC 8461 §5 ask; other
// failures end the attempt.
func (m *MTA) openSession(r *relay, mxs []proto.MXHost) (*client, candidate, error) {
	dp := m.domainPolicy(r)
	// each exchanger's policy is decided once for the attempt: another
	// of its addresses, or a retry after a host failed its TLS, neither
	// asks for its TLSA records nor counts its failure for TLS-RPT again
	type decided struct {
		p   *tlsPolicy
		err error
	}
	policies := map[string]decided{}
	policyOf := func(mx proto.MXHost) (*tlsPolicy, error) {
		d, ok := policies[mx.Host]
		if !ok {
			d.p, d.err = m.hostPolicy(r, dp, mx)
			policies[mx.Host] = d
		}
		return d.p, d.err
	}
	skip := map[netip.Addr]bool{}
	var tlsErr error
	for {
		c, cand, err := m.connect(r, mxs, policyOf, skip)
		if err != nil {
			if tlsErr != nil && !errors.Is(err, errHostsBusy) {
				err = tlsErr
			}
			return nil, candidate{}, err
		}
		m.stats.Increment("mta.session", 1)
		err = m.open(c, r, cand)
		if err == nil {
			return c, cand, nil
		}
		c.Close()
		m.release(cand)
		var de *deliveryError
		if !errors.As(err, &de) || de.status[0] != 4 || de.status[1] != 7 {
			return nil, candidate{}, err
		}
		skip[cand.host.addr] = true
		tlsErr = err
	}
}

// release ends a session's hold on its host.
func (m *MTA) release(cd candidate) {
	m.mu.Lock()
	cd.host.sessions--
	m.mu.Unlock()
}

// logDelivery writes the delivery line of one envelope: where it went,
// how the session was protected and what the server said.
func (m *MTA) logDelivery(e *envelope.Envelope, c *client, cd candidate, reply string, err error) {
	m.logSessionDelivery(e, c, cd, reply, err)
	where := fmt.Sprintf("%s [%s] %s", cd.mx.Host, cd.host.addr, describeTLS(c, cd.policy))
	if err != nil {
		m.child.Log.Infof("%s: relay to <%s> via %s failed: %v", envelope.FormatEvpID(e.ID), e.Dest, where, err)
		return
	}
	m.child.Log.Infof("%s: relayed to <%s> via %s: %s", envelope.FormatEvpID(e.ID), e.Dest, where, reply)
}

// sessionDone ends a session. Tasks that came while it was ending, or
// that it left, start another; so do those of other relays to the same
// destination, which its session limit may have held back.
func (m *MTA) sessionDone(r *relay) {
	m.mu.Lock()
	start := r.sessionEnded()
	m.mu.Unlock()
	for _, o := range start {
		go m.session(o)
	}
}

// giveBack returns a session's first task to the head of its relay's
// queue when other sessions of the relay run and will carry it: the
// session found every exchanger with all the sessions it may have, and
// leaves the tasks to them rather than fail them all back to the
// queue. The relay starts no more sessions than the others until it is
// idle, or it would try again at once.
func (m *MTA) giveBack(r *relay, t *task) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.sessions < 2 {
		return false
	}
	r.tasks = append([]*task{t}, r.tasks...)
	r.hostsTake = r.sessions - 1
	return true
}

// betterThanUs keeps, for a backup MX, the exchangers preferred to this
// host; if this host is not among them all are kept.
func (m *MTA) betterThanUs(mxs []proto.MXHost) ([]proto.MXHost, error) {
	for i, mx := range mxs {
		if strings.EqualFold(mx.Host, m.cfg.Hostname) {
			var better []proto.MXHost
			for _, b := range mxs[:i] {
				if b.Preference < mx.Preference {
					better = append(better, b)
				}
			}
			if len(better) == 0 {
				return nil, tempfail(smtp.EnhancedCode{4, 4, 4}, nil, "no exchanger is preferred to this backup MX")
			}
			return better, nil
		}
	}
	return mxs, nil
}

// port returns the port of a relay.
func (m *MTA) port(r *relay) string {
	if r.url == nil {
		return strconv.Itoa(m.cfg.MXPort)
	}
	if p := r.url.Port(); p != "" {
		return p
	}
	switch r.url.Scheme {
	case "smtps":
		return "465"
	case "lmtp":
		return "24"
	}
	return "25"
}

// connect tries the relay's hosts in order and returns the first that
// answers; hosts that do not have their route penalised. A host the
// TLS policy leaves out (no TLSA records to be had, not in the MTA-STS
// policy) is skipped without a penalty.
func (m *MTA) connect(r *relay, mxs []proto.MXHost, policyOf func(proto.MXHost) (*tlsPolicy, error), skip map[netip.Addr]bool) (*client, candidate, error) {
	cands, busy := m.candidates(mxs, r.action.Source)
	cands = slices.DeleteFunc(cands, func(cd candidate) bool { return skip[cd.host.addr] })
	if len(cands) == 0 {
		if busy {
			return nil, candidate{}, tempfail(smtp.EnhancedCode{4, 4, 1}, errHostsBusy, "no exchanger available")
		}
		return nil, candidate{}, tempfail(smtp.EnhancedCode{4, 4, 1}, nil, "no exchanger available: all are disabled after failures")
	}
	lmtp := r.url != nil && r.url.Scheme == "lmtp"
	var lastErr error
	for _, cd := range cands {
		pol, err := policyOf(cd.mx)
		if err != nil {
			m.child.Log.Infof("not using %s (%s): %v", cd.mx.Host, cd.host.addr, err)
			lastErr = err
			continue
		}
		cd.policy, cd.tls = pol, &tlsSession{}
		d := net.Dialer{Timeout: timeoutConnect}
		if r.action.Source != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(r.action.Source)}
		}
		conn, err := d.Dial("tcp", net.JoinHostPort(cd.host.addr.String(), m.port(r)))
		if err != nil {
			m.penalize(cd.route, err)
			lastErr = err
			continue
		}
		m.mu.Lock()
		cd.host.sessions++
		m.mu.Unlock()
		m.stats.Increment("mta.connector", 1)
		if r.url == nil || r.url.Scheme != "smtps" {
			return newClient(conn, lmtp), cd, nil
		}
		tc := tls.Client(conn, m.tlsConfig(pol, cd.mx, cd.tls))
		tc.SetDeadline(time.Now().Add(timeoutCommand))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			m.release(cd)
			m.penalize(cd.route, err)
			lastErr = err
			continue
		}
		tc.SetDeadline(time.Time{})
		c := newClient(tc, lmtp)
		st := tc.ConnectionState()
		c.tlsState = &st
		return c, cd, nil
	}
	if _, ok := lastErr.(*deliveryError); ok {
		return nil, candidate{}, lastErr
	}
	return nil, candidate{}, tempfail(smtp.EnhancedCode{4, 4, 1}, lastErr, "could not connect to any exchanger")
}

// open runs the session up to MAIL: greeting, EHLO, STARTTLS as the
// TLS policy asks, the REQUIRETLS check and AUTH.
func (m *MTA) open(c *client, r *relay, cd candidate) error {
	m.lookupPTR(cd.host)
	helo := r.action.Helo
	if helo == "" {
		helo = m.cfg.Hostname
	}
	greeted, err := c.hello(helo)
	if !greeted {
		if se, ok := isSMTPError(err); ok {
			return replyError(se, "greeting")
		}
		m.penalize(cd.route, err)
		return tempfail(smtp.EnhancedCode{4, 4, 2}, err, "%s", cd.host.addr)
	}
	// go-smtp drops the greeting's text: the wire kept it
	if strings.EqualFold(c.w.greetingName(), m.cfg.Hostname) {
		return permfail(554, smtp.EnhancedCode{5, 4, 6}, "mail loop: %s (%s) is this host", cd.host.name, cd.host.addr)
	}
	m.healthy(cd.route)
	if err != nil {
		if se, ok := isSMTPError(err); ok {
			return replyError(se, "EHLO")
		}
		return tempfail(smtp.EnhancedCode{4, 4, 2}, err, "%s", cd.host.addr)
	}
	if err := m.startTLS(c, r, cd, helo); err != nil {
		return err
	}
	if c.tlsState != nil {
		m.child.Log.Event("%016x mta tls ciphers=%s", c.id, logging.TLSText(*c.tlsState))
	}
	m.mu.Lock()
	r.policy = cd.policy.name + " (" + cd.policy.why + ")"
	m.mu.Unlock()
	if r.requireTLS {
		if err := checkRequireTLS(c, cd); err != nil {
			return err
		}
	}
	return m.authenticate(c, r, cd)
}

// startTLS runs STARTTLS as the session's policy asks (RFC 3207, RFC
// 7672, RFC 8461) and counts the outcome for TLS-RPT.
func (m *MTA) startTLS(c *client, r *relay, cd candidate, helo string) error {
	pol, s := cd.policy, cd.tls
	addr := cd.host.addr.String()
	if c.tlsState != nil {
		m.recordSession(pol, "", cd.mx.Host, addr, nil)
		return nil
	}
	if pol.name == policyNone {
		return nil
	}
	if ok, _ := c.Extension("STARTTLS"); !ok {
		if pol.mustTLS {
			m.recordSession(pol, tlsrpt.ResultSTARTTLSNotSupported, cd.mx.Host, addr, nil)
			return tempfail(smtp.EnhancedCode{4, 7, 4}, nil, "TLS required by the %s policy (%s), but %s (%s) does not offer STARTTLS", pol.name, pol.why, cd.mx.Host, addr)
		}
		if pol.name == policySTSTesting {
			m.recordSession(pol, tlsrpt.ResultSTARTTLSNotSupported, cd.mx.Host, addr, nil)
		} else if pol.failure != "" {
			m.recordSession(pol, "", cd.mx.Host, addr, nil)
		}
		// opportunistic TLS falls back to plain text: say so
		m.stats.Increment("mta.plaintext", 1)
		m.child.Log.Infof("%s (%s) offers no STARTTLS: sending in plain text", cd.mx.Host, addr)
		return nil
	}
	if err := c.startTLS(m.tlsConfig(pol, cd.mx, s)); err != nil {
		m.recordSession(pol, tlsResultType(s, pol, err), cd.mx.Host, addr, err)
		return tempfail(smtp.EnhancedCode{4, 7, 5}, err, "STARTTLS with %s (%s) under the %s policy (%s) failed", cd.mx.Host, addr, pol.name, pol.why)
	}
	if pol.name == policySTSTesting && s.pkixErr != nil {
		// testing: deliver, but tell the domain (RFC 8461 §5)
		m.recordSession(pol, pkixResultType(s.pkixErr), cd.mx.Host, addr, s.pkixErr)
		m.child.Log.Infof("%s (%s) fails the MTA-STS policy of %s in testing mode: %v", cd.mx.Host, addr, r.domain, s.pkixErr)
	} else {
		m.recordSession(pol, "", cd.mx.Host, addr, nil)
	}
	if err := c.Hello(helo); err != nil {
		return tempfail(smtp.EnhancedCode{4, 4, 2}, err, "EHLO after STARTTLS with %s failed", addr)
	}
	m.stats.Increment("mta.tls", 1)
	return nil
}

// checkRequireTLS refuses to send a REQUIRETLS message over a session
// whose server was not authenticated, or that does not take REQUIRETLS
// in turn (RFC 8689 §4.2.1): such mail is returned, never sent with
// less protection.
func checkRequireTLS(c *client, cd candidate) error {
	if c.tlsState == nil || !cd.policy.authenticated(cd.tls) {
		why := "no TLS"
		switch {
		case cd.tls.daneErr != nil:
			why = cd.tls.daneErr.Error()
		case cd.tls.pkixErr != nil:
			why = cd.tls.pkixErr.Error()
		case c.tlsState != nil:
			why = "its name was not learnt securely (DNSSEC or MTA-STS)"
		}
		return permfail(550, smtp.EnhancedCode{5, 7, 10}, "REQUIRETLS: %s (%s) could not be authenticated: %s", cd.mx.Host, cd.host.addr, why)
	}
	if ok, _ := c.Extension("REQUIRETLS"); !ok {
		return permfail(550, smtp.EnhancedCode{5, 7, 30}, "REQUIRETLS support required, but %s (%s) does not offer it", cd.mx.Host, cd.host.addr)
	}
	return nil
}

// authenticate logs in to a smarthost whose relay names credentials,
// with PLAIN or else LOGIN (RFC 4954), only over TLS. Refused
// credentials are a configuration problem to fix, not a reason to
// return the mail: every failure here is temporary.
func (m *MTA) authenticate(c *client, r *relay, cd candidate) error {
	if r.url == nil || r.url.User == nil || r.action.Credentials == nil {
		return nil
	}
	if c.tlsState == nil {
		return tempfail(smtp.EnhancedCode{4, 7, 8}, nil, "authentication with %s failed: refusing to send credentials without TLS", cd.host.addr)
	}
	cr, err := m.credentials(r)
	if err != nil {
		return err
	}
	var mech sasl.Client
	switch {
	case c.SupportsAuth(sasl.Plain):
		mech = sasl.NewPlainClient("", cr.User, cr.Password)
	case c.SupportsAuth(sasl.Login):
		mech = sasl.NewLoginClient(cr.User, cr.Password)
	default:
		_, offered := c.Extension("AUTH")
		return tempfail(smtp.EnhancedCode{4, 7, 8}, nil, "authentication with %s failed: it offers no AUTH PLAIN or LOGIN (%q)", cd.host.addr, offered)
	}
	if err := c.Auth(mech); err != nil {
		if se, ok := isSMTPError(err); ok {
			err = replyError(se, "")
		}
		return tempfail(smtp.EnhancedCode{4, 7, 8}, err, "authentication with %s failed", cd.host.addr)
	}
	return nil
}

// lookupPTR asks once per host for its name, for the logs.
func (m *MTA) lookupPTR(h *host) {
	m.mu.Lock()
	done := h.ptrDone
	h.ptrDone = true
	m.mu.Unlock()
	if done {
		return
	}
	if env, err := m.ask(proto.ProcLookup, &proto.MTAResolvePTR{Addr: h.addr.String()}); err == nil {
		if res, ok := env.Msg.(*proto.LookupPTRResult); ok {
			m.mu.Lock()
			h.ptr = res.Name
			m.mu.Unlock()
		}
	}
}

// reportFunc receives the outcome of one envelope: delivered with the
// remote host's reply when err is nil.
type reportFunc func(e *envelope.Envelope, reply string, err error)

// send delivers one task and reports each recipient's outcome. It
// returns false when the connection is unusable.
func send(c *client, t *task, report reportFunc) bool {
	defer t.body.Close()
	reportAll := func(envs []*envelope.Envelope, err error) {
		for _, e := range envs {
			report(e, "", err)
		}
	}
	// refused reports a step that failed for envs: a reply leaves the
	// connection usable, anything else lost it
	refused := func(envs []*envelope.Envelope, err error, step string) bool {
		if se, ok := isSMTPError(err); ok {
			reportAll(envs, replyError(se, ""))
			c.Reset()
			return true
		}
		reportAll(envs, tempfail(smtp.EnhancedCode{4, 4, 2}, err, "connection lost at %s", step))
		return false
	}
	e0 := t.envs[0]
	utf8Needed := !isASCII(e0.Sender)
	for _, e := range t.envs {
		utf8Needed = utf8Needed || !isASCII(e.Dest)
	}
	if ok, _ := c.Extension("SMTPUTF8"); utf8Needed && !ok {
		reportAll(t.envs, permfail(553, smtp.EnhancedCode{5, 6, 7}, "the recipient's server does not accept internationalised addresses (SMTPUTF8)"))
		return true
	}
	// go-smtp adds BODY=8BITMIME, and SIZE and the DSN parameters
	// where the server offers them
	opts := mailOptions(e0)
	opts.UTF8 = utf8Needed
	opts.RequireTLS = e0.RequireTLS
	if fi, err := t.body.Stat(); err == nil {
		opts.Size = fi.Size()
	}
	if err := monkey.Fail("mta.session"); err != nil {
		c.Close()
		reportAll(t.envs, tempfail(smtp.EnhancedCode{4, 4, 2}, err, "connection lost before MAIL"))
		return false
	}
	if err := c.Mail(e0.Sender, opts); err != nil {
		return refused(t.envs, err, "MAIL")
	}
	var accepted []*envelope.Envelope
	for i, e := range t.envs {
		if err := monkey.Fail("mta.session"); err != nil {
			// as if the remote host answered 451, without asking it
			report(e, "", tempfail(smtp.EnhancedCode{4, 3, 0}, err, ""))
			continue
		}
		err := c.Rcpt(e.Dest, rcptOptions(e))
		if err == nil {
			accepted = append(accepted, e)
			continue
		}
		if se, ok := isSMTPError(err); ok {
			report(e, "", replyError(se, ""))
			continue
		}
		// the recipients refused so far have their results
		reportAll(append(accepted, t.envs[i:]...), tempfail(smtp.EnhancedCode{4, 4, 2}, err, "connection lost at RCPT"))
		return false
	}
	if len(accepted) == 0 {
		c.Reset()
		return true
	}
	if _, err := t.body.Seek(0, io.SeekStart); err != nil {
		reportAll(accepted, tempfail(smtp.EnhancedCode{4, 3, 0}, err, ""))
		return false
	}
	c.CommandTimeout = timeoutData
	dc, err := c.Data()
	c.CommandTimeout = timeoutCommand
	if err != nil {
		return refused(accepted, err, "DATA")
	}
	if err := c.sendBody(dc, t.body); err != nil {
		reportAll(accepted, tempfail(smtp.EnhancedCode{4, 4, 2}, err, "connection lost during DATA"))
		return false
	}
	c.w.beforeRead = func() { monkey.Crash("mta.before-250") }
	replies, refusals, lost := c.endData(dc, accepted)
	c.w.beforeRead = nil
	if len(replies) > 0 {
		monkey.Crash("mta.after-250")
		if err := monkey.Fail("mta.session"); err != nil {
			// the remote host has the message: retrying duplicates it,
			// as a connection lost at this moment does
			c.Close()
			replies, lost = nil, err
		}
	}
	for _, e := range accepted {
		switch {
		case replies[e.Dest] != "":
			report(e, replies[e.Dest], nil)
		case refusals[e.Dest] != nil:
			report(e, "", refusals[e.Dest])
		default:
			report(e, "", tempfail(smtp.EnhancedCode{4, 4, 2}, lost, "connection lost during DATA"))
		}
	}
	return lost == nil
}

// endData sends the final dot and reads the outcome by recipient: the
// remote host's reply for those it took, the failure of those it
// refused. SMTP has one reply for all, LMTP one each (RFC 2033 §4.2).
// lost is set when the connection was lost before every recipient had
// its reply.
func (c *client) endData(dc *smtp.DataCommand, rcpts []*envelope.Envelope) (replies map[string]string, refusals map[string]error, lost error) {
	replies, refusals = map[string]string{}, map[string]error{}
	if !c.lmtp {
		resp, err := dc.CloseWithResponse()
		if se, ok := isSMTPError(err); ok {
			for _, e := range rcpts {
				refusals[e.Dest] = replyError(se, "")
			}
			return replies, refusals, nil
		}
		if err != nil {
			return replies, refusals, err
		}
		for _, e := range rcpts {
			replies[e.Dest] = okReply(resp)
		}
		return replies, refusals, nil
	}
	resps, err := dc.CloseWithLMTPResponse()
	var refused smtp.LMTPDataError
	if errors.As(err, &refused) {
		for rcpt, se := range refused {
			refusals[rcpt] = replyError(se, "")
		}
	}
	if _, onlyRefusals := err.(smtp.LMTPDataError); !onlyRefusals {
		lost = err
	}
	for rcpt, resp := range resps {
		replies[rcpt] = okReply(resp)
	}
	for _, e := range rcpts {
		if replies[e.Dest] == "" && refusals[e.Dest] == nil && lost == nil {
			lost = fmt.Errorf("mta: no reply for <%s>", e.Dest)
		}
	}
	return replies, refusals, lost
}

// okReply is the text of a 250 to the final dot, on one line.
func okReply(resp *smtp.DataResponse) string {
	return "250 " + strings.ReplaceAll(resp.StatusText, "\n", " ")
}

// mailOptions carries the DSN parameters of RFC 3461 §4.3-4.4 that the
// envelope kept. go-smtp refuses values outside the RFC before sending
// anything; they are left out here rather than failing the delivery.
func mailOptions(e *envelope.Envelope) *smtp.MailOptions {
	opts := &smtp.MailOptions{}
	switch ret := smtp.DSNReturn(strings.ToUpper(e.Ret)); ret {
	case smtp.DSNReturnFull, smtp.DSNReturnHeaders:
		opts.Return = ret
	}
	// ENVID is printable ASCII, at most 100 characters (§4.4)
	if isPrintableASCII(e.EnvID) && len(e.EnvID) <= 100 {
		opts.EnvelopeID = e.EnvID
	}
	return opts
}

// rcptOptions carries the DSN parameters of RFC 3461 §4.1-4.2, as
// mailOptions does.
func rcptOptions(e *envelope.Envelope) *smtp.RcptOptions {
	opts := &smtp.RcptOptions{Notify: dsnNotify(e.Notify)}
	typ, addr, _ := strings.Cut(e.ORcpt, ";")
	switch t := smtp.DSNAddressType(strings.ToUpper(typ)); {
	case t == smtp.DSNAddressTypeRFC822 && addr != "" && isPrintableASCII(addr),
		t == smtp.DSNAddressTypeUTF8 && addr != "" && utf8.ValidString(addr):
		opts.OriginalRecipientType, opts.OriginalRecipient = t, addr
	}
	return opts
}

// dsnNotify parses a NOTIFY value: NEVER alone, or one or more of
// SUCCESS, FAILURE and DELAY (RFC 3461 §4.1); nil if it is neither.
func dsnNotify(s string) []smtp.DSNNotify {
	if s == "" {
		return nil
	}
	fields := strings.Split(strings.ToUpper(s), ",")
	if len(fields) == 1 && smtp.DSNNotify(fields[0]) == smtp.DSNNotifyNever {
		return []smtp.DSNNotify{smtp.DSNNotifyNever}
	}
	var out []smtp.DSNNotify
	for _, f := range fields {
		n := smtp.DSNNotify(f)
		if n != smtp.DSNNotifySuccess && n != smtp.DSNNotifyFailure && n != smtp.DSNNotifyDelayed || slices.Contains(out, n) {
			return nil
		}
		out = append(out, n)
	}
	return out
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
