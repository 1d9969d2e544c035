package mta

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"smtpd/internal/envelope"
	"smtpd/internal/monkey"
	"smtpd/proto"
)

// session delivers the tasks of a relay over one connection, for as
// long as tasks keep coming.
func (m *MTA) session(r *relay) {
	defer func() {
		m.mu.Lock()
		r.sessions--
		m.mu.Unlock()
	}()
	first := m.next(r, false)
	if first == nil {
		return
	}
	mxs, err, perm := m.resolve(r)
	if err != nil {
		status, text := proto.StatusTempfail, fmt.Sprintf("451 4.4.3 %s", err)
		if perm {
			status, text = proto.StatusPermfail, fmt.Sprintf("550 5.1.2 %s", err)
			if strings.Contains(err.Error(), "null MX") {
				text = fmt.Sprintf("556 5.1.10 %s", err)
			}
		}
		m.failAll(r, first, status, text)
		return
	}
	if r.action.Backup {
		if mxs, err = m.betterThanUs(mxs); err != nil {
			m.failAll(r, first, proto.StatusTempfail, "451 4.4.4 "+err.Error())
			return
		}
	}
	c, cand, err := m.connect(r, mxs)
	if err != nil {
		m.failAll(r, first, proto.StatusTempfail, "451 4.4.1 "+err.Error())
		return
	}
	defer func() {
		m.mu.Lock()
		cand.host.sessions--
		m.mu.Unlock()
	}()
	m.stats.Increment("mta.session", 1)
	if err := m.open(c, r, cand); err != nil {
		c.conn.Close()
		var perm *permanentError
		if errors.As(err, &perm) {
			m.failAll(r, first, proto.StatusPermfail, err.Error())
		} else {
			m.failAll(r, first, proto.StatusTempfail, err.Error())
		}
		return
	}
	t := first
	for n := 0; t != nil; n++ {
		if !m.send(c, t) {
			c.conn.Close()
			return
		}
		if n+1 >= MessagesPerSession {
			break
		}
		t = m.next(r, true)
	}
	c.quit()
	// more tasks may have come: another session takes them
	m.mu.Lock()
	r.sessions--
	again := r.wantsSession()
	r.sessions++
	if again {
		r.sessions++
	}
	m.mu.Unlock()
	if again {
		go m.session(r)
	}
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
				return nil, fmt.Errorf("no exchanger is preferred to this backup MX")
			}
			return better, nil
		}
	}
	return mxs, nil
}

// permanentError is a failure that will not change on retry.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

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
// answers; hosts that do not have their route penalised.
func (m *MTA) connect(r *relay, mxs []proto.MXHost) (*client, candidate, error) {
	cands := m.candidates(mxs, r.action.Source)
	if len(cands) == 0 {
		return nil, candidate{}, errors.New("no exchanger available: all are disabled after failures or busy")
	}
	var lastErr error
	for _, cd := range cands {
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
		if r.url != nil && r.url.Scheme == "smtps" {
			tc := tls.Client(conn, m.tlsConfig(r, cd.host))
			tc.SetDeadline(time.Now().Add(timeoutCommand))
			if err := tc.Handshake(); err != nil {
				conn.Close()
				m.mu.Lock()
				cd.host.sessions--
				m.mu.Unlock()
				m.penalize(cd.route, err)
				lastErr = err
				continue
			}
			c := newClient(tc)
			c.tls = true
			return c, cd, nil
		}
		return newClient(conn), cd, nil
	}
	return nil, candidate{}, fmt.Errorf("could not connect to any exchanger: %v", lastErr)
}

// tlsConfig verifies certificates when TLS is required, unless the relay
// says no-verify; opportunistic TLS takes any certificate, since an
// encrypted session beats a plain one.
func (m *MTA) tlsConfig(r *relay, h *host) *tls.Config {
	verify := r.action.RelayTLS == "required" || r.url != nil && (r.url.Scheme == "smtp+tls" || r.url.Scheme == "smtps")
	return &tls.Config{
		ServerName:             h.name,
		RootCAs:                m.roots,
		InsecureSkipVerify:     !verify || r.action.RelayTLS == "no-verify",
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
	}
}

// open runs the session up to MAIL: greeting, EHLO, STARTTLS and AUTH
// as the relay asks.
func (m *MTA) open(c *client, r *relay, cd candidate) error {
	m.lookupPTR(cd.host)
	rep, err := c.greet()
	if err != nil {
		m.penalize(cd.route, err)
		return fmt.Errorf("451 4.4.2 %s: %v", cd.host.addr, err)
	}
	if rep.Code != 220 {
		return replyFailure("greeting", rep)
	}
	if strings.EqualFold(c.greeting, m.cfg.Hostname) {
		return &permanentError{fmt.Sprintf("554 5.4.6 mail loop: %s (%s) is this host", cd.host.name, cd.host.addr)}
	}
	m.healthy(cd.route)
	helo := r.action.Helo
	if helo == "" {
		helo = m.cfg.Hostname
	}
	if rep, err = c.hello(helo); err != nil {
		return fmt.Errorf("451 4.4.2 %s: %v", cd.host.addr, err)
	}
	if rep.Code != 250 {
		return replyFailure("EHLO", rep)
	}
	required := r.action.RelayTLS == "required" || r.url != nil && r.url.Scheme == "smtp+tls"
	never := r.url != nil && (r.url.Scheme == "smtp+notls" || r.url.Scheme == "lmtp")
	if !c.tls && !never {
		if _, ok := c.ext["STARTTLS"]; ok {
			if err := c.startTLS(m.tlsConfig(r, cd.host)); err != nil {
				return fmt.Errorf("451 4.7.5 STARTTLS with %s failed: %v", cd.host.addr, err)
			}
			if rep, err = c.hello(helo); err != nil || rep.Code != 250 {
				return fmt.Errorf("451 4.4.2 EHLO after STARTTLS with %s failed", cd.host.addr)
			}
			m.stats.Increment("mta.tls", 1)
		} else if required {
			return fmt.Errorf("451 4.7.4 TLS required but %s (%s) does not offer STARTTLS", cd.host.name, cd.host.addr)
		} else {
			// opportunistic TLS falls back to plain text: say so
			m.stats.Increment("mta.plaintext", 1)
			m.child.Log.Infof("%s (%s) offers no STARTTLS: sending in plain text", cd.host.name, cd.host.addr)
		}
	}
	if r.url != nil && r.url.User != nil && r.action.Credentials != nil {
		label := r.url.User.Username()
		secret, ok := r.action.Credentials.Data.Lookup(label)
		user, pass, found := strings.Cut(secret, ":")
		if !ok || !found {
			return fmt.Errorf("451 4.7.8 no credentials %q in table %s", label, r.action.Credentials.Name)
		}
		if err := c.auth(user, pass); err != nil {
			// refused credentials are a configuration problem to fix,
			// not a reason to return the mail
			return fmt.Errorf("451 4.7.8 authentication with %s failed: %v", cd.host.addr, err)
		}
	}
	return nil
}

// replyFailure turns a refused step into the failure of the session.
func replyFailure(step string, rep *Reply) error {
	if rep.Permanent() {
		return &permanentError{fmt.Sprintf("%s (at %s)", rep, step)}
	}
	return fmt.Errorf("%s (at %s)", rep, step)
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
		m.mu.Lock()
		h.ptr = env.Msg.(*proto.LookupPTRResult).Name
		m.mu.Unlock()
	}
}

// send delivers one task and reports each recipient's outcome. It
// returns false when the connection is unusable.
func (m *MTA) send(c *client, t *task) bool {
	defer t.body.Close()
	e0 := t.envs[0]
	utf8Needed := !isASCII(e0.Sender)
	for _, e := range t.envs {
		utf8Needed = utf8Needed || !isASCII(e.Dest)
	}
	_, hasUTF8 := c.ext["SMTPUTF8"]
	if utf8Needed && !hasUTF8 {
		m.finishAll(t, proto.StatusPermfail, "553 5.6.7 the recipient's server does not accept internationalised addresses (SMTPUTF8)")
		return true
	}
	mail := fmt.Sprintf("MAIL FROM:<%s>", e0.Sender)
	if fi, err := t.body.Stat(); err == nil {
		if _, ok := c.ext["SIZE"]; ok {
			mail += fmt.Sprintf(" SIZE=%d", fi.Size())
		}
	}
	if _, ok := c.ext["8BITMIME"]; ok {
		mail += " BODY=8BITMIME"
	}
	if utf8Needed {
		mail += " SMTPUTF8"
	}
	_, dsn := c.ext["DSN"]
	if dsn && e0.Ret != "" {
		mail += " RET=" + e0.Ret
	}
	if dsn && e0.EnvID != "" {
		mail += " ENVID=" + xtext(e0.EnvID)
	}
	if err := monkey.Fail("mta.session"); err != nil {
		c.conn.Close()
		m.finishAll(t, proto.StatusTempfail, "451 4.4.2 connection lost before MAIL: "+err.Error())
		return false
	}
	rep, err := c.cmd(timeoutCommand, "%s", mail)
	if err != nil {
		m.finishAll(t, proto.StatusTempfail, "451 4.4.2 connection lost at MAIL: "+err.Error())
		return false
	}
	if rep.Code/100 != 2 {
		m.finishAll(t, statusOf(rep), rep.String())
		c.cmd(timeoutCommand, "RSET")
		return true
	}
	var accepted []*envelope.Envelope
	for i, e := range t.envs {
		rcpt := fmt.Sprintf("RCPT TO:<%s>", e.Dest)
		if dsn && e.Notify != "" {
			rcpt += " NOTIFY=" + e.Notify
		}
		if dsn && e.ORcpt != "" {
			rcpt += " ORCPT=" + xtext(e.ORcpt)
		}
		if err := monkey.Fail("mta.session"); err != nil {
			// as if the remote host answered 451, without asking it
			m.result(e, proto.StatusTempfail, "451 4.3.0 "+err.Error())
			continue
		}
		rep, err := c.cmd(timeoutCommand, "%s", rcpt)
		if err != nil {
			// the recipients refused so far have their results
			t.envs = append(accepted, t.envs[i:]...)
			m.finishAll(t, proto.StatusTempfail, "451 4.4.2 connection lost at RCPT: "+err.Error())
			return false
		}
		if rep.Code/100 == 2 {
			accepted = append(accepted, e)
		} else {
			m.result(e, statusOf(rep), rep.String())
		}
	}
	if len(accepted) == 0 {
		c.cmd(timeoutCommand, "RSET")
		return true
	}
	if _, err := t.body.Seek(0, io.SeekStart); err != nil {
		t.envs = accepted
		m.finishAll(t, proto.StatusTempfail, "451 4.3.0 "+err.Error())
		return false
	}
	rep, err = c.data(t.body)
	if err == nil && rep.Code/100 == 2 {
		monkey.Crash("mta.after-250")
		if err = monkey.Fail("mta.session"); err != nil {
			// the remote host has the message: retrying duplicates it,
			// as a connection lost at this moment does
			c.conn.Close()
		}
	}
	if err != nil {
		t.envs = accepted
		m.finishAll(t, proto.StatusTempfail, "451 4.4.2 connection lost during DATA: "+err.Error())
		return false
	}
	for _, e := range accepted {
		if rep.Code/100 == 2 {
			m.result(e, proto.StatusOK, rep.String())
		} else {
			m.result(e, statusOf(rep), rep.String())
		}
	}
	return true
}

func (m *MTA) finishAll(t *task, status proto.Status, text string) {
	for _, e := range t.envs {
		m.result(e, status, text)
	}
}

// statusOf maps a reply to an outcome: 5xx permanent, anything else
// temporary.
func statusOf(rep *Reply) proto.Status {
	if rep.Permanent() {
		return proto.StatusPermfail
	}
	return proto.StatusTempfail
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// xtext encodes a DSN parameter (RFC 3461 §4).
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}
