package smtp

import (
	"errors"
	"sync"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/smtp/server"
	"smtpd/proto"
)

// The limits on failed authentications: each failure is answered after
// authFailureDelay, and an address with limits.auth_failures_per_ip
// failures within authFailureWindow may not try again until the window
// has passed.
const (
	authFailureDelay  = time.Second
	authFailureWindow = 10 * time.Minute
	// maxAuthFailureAddresses is the size at which the table of
	// failing addresses is swept of old entries
	maxAuthFailureAddresses = 10000
)

// The replies of authentication (RFC 4954 §6).
var (
	errAuthInvalid = &server.Reply{Code: 535, Enhanced: server.EnhancedCode{5, 7, 8}, Text: "Authentication credentials invalid"}
	// 454 4.7.0 for a temporary authentication failure
	errAuthTemporary  = &server.Reply{Code: 454, Enhanced: server.EnhancedCode{4, 7, 0}, Text: "Temporary authentication failure"}
	errAuthTooMany    = &server.Reply{Code: 454, Enhanced: server.EnhancedCode{4, 7, 0}, Text: "Too many failed authentications, try again later"}
	errAuthRequired   = &server.Reply{Code: 530, Enhanced: server.EnhancedCode{5, 7, 0}, Text: "Authentication required"}
	errSenderNotOwned = &server.Reply{Code: 553, Enhanced: server.EnhancedCode{5, 7, 1}, Text: "Sender address not allowed for this user"}
)

// authFailures counts failed authentications per client address.
type authFailures struct {
	mu    sync.Mutex
	limit int
	byIP  map[string][]time.Time
	now   func() time.Time
}

func newAuthFailures(limit int) *authFailures {
	return &authFailures{limit: limit, byIP: map[string][]time.Time{}, now: time.Now}
}

// recent returns the failures of ip within the window, dropping older ones.
func (a *authFailures) recent(ip string) []time.Time {
	cutoff := a.now().Add(-authFailureWindow)
	list := a.byIP[ip]
	for len(list) > 0 && list[0].Before(cutoff) {
		list = list[1:]
	}
	if len(list) == 0 {
		delete(a.byIP, ip)
		return nil
	}
	a.byIP[ip] = list
	return list
}

// blocked reports whether ip has failed too often lately.
func (a *authFailures) blocked(ip string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.recent(ip)) >= a.limit
}

func (a *authFailures) add(ip string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.byIP[ip] = append(a.recent(ip), a.now())
	if len(a.byIP) > maxAuthFailureAddresses {
		// many addresses failing at once: forget those whose window
		// has passed, so that the table stays bounded
		for other := range a.byIP {
			a.recent(other)
		}
	}
}

// authFailuresPerSession is how many wrong credentials a session may
// give before it is closed: a client that guesses must connect again,
// and each connection costs it the delays of its failures.
const authFailuresPerSession = 3

// Auth checks the credentials a client gave; the engine parsed the SASL
// exchange (PLAIN or LOGIN) and offers AUTH only under TLS. Only wrong
// credentials count as failures, against the session and the client's
// address, not syntax errors or cancels, which the engine answers.
func (sess *session) Auth(mechanism, identity, user, password string) *server.Reply {
	if sess.listener.Auth == config.AuthNone || !sess.tls() {
		return reply(503, server.EnhancedCode{5, 5, 1}, "Authentication not available")
	}
	if sess.s.authFailures.blocked(sess.info.Remote) {
		sess.s.stats.Increment("smtp.auth.refused", 1)
		return errAuthTooMany
	}
	if r := sess.filter(proto.PhaseAuth, &mechanism); r != nil {
		return r
	}
	if identity != "" && identity != user {
		// acting for another user is not offered
		return sess.authFailed(user)
	}
	return sess.authenticate(user, password)
}

// authenticate asks lookup to check a password; a failure is answered
// late and counted against the client's address.
func (sess *session) authenticate(user, password string) *server.Reply {
	env, err := sess.s.ask(sess.s.lookup, &proto.SMTPAuthQuery{What: "password", Listener: sess.listener.Name, User: user, Value: password})
	if err != nil {
		sess.s.log.Warnf("%016x: auth: %v", sess.info.ID, err)
		sess.s.log.Event("%s", authLine(sess.info.ID, user, "tempfail"))
		return errAuthTemporary
	}
	res, ok := env.Msg.(*proto.LookupAuthResult)
	switch {
	case !ok || res.Status == proto.StatusTempfail:
		sess.s.stats.Increment("smtp.auth.tempfail", 1)
		sess.s.log.Event("%s", authLine(sess.info.ID, user, "tempfail"))
		return errAuthTemporary
	case res.Status == proto.StatusOK:
		sess.info.Auth = user
		sess.s.stats.Increment("smtp.auth.ok", 1)
		sess.s.log.Infof("%016x: authenticated as %q from [%s]", sess.info.ID, user, sess.info.Remote)
		sess.s.log.Event("%s", authLine(sess.info.ID, user, "ok"))
		return nil
	}
	return sess.authFailed(user)
}

// authFailed counts wrong credentials and answers them late; past
// authFailuresPerSession the session ends.
func (sess *session) authFailed(user string) *server.Reply {
	sess.s.stats.Increment("smtp.auth.fail", 1)
	sess.s.log.Infof("%016x: authentication as %q failed from [%s]", sess.info.ID, user, sess.info.Remote)
	sess.s.log.Event("%s", authLine(sess.info.ID, user, "permfail"))
	sess.s.authFailures.add(sess.info.Remote)
	time.Sleep(authFailureDelay)
	if sess.authFailures++; sess.authFailures >= authFailuresPerSession {
		r := *errAuthInvalid
		r.Disconnect = true
		return &r
	}
	return errAuthInvalid
}

// senderAllowed checks MAIL FROM of an authenticated session against the
// listener's senders table.
func (sess *session) senderAllowed(from string) *server.Reply {
	if sess.info.Auth == "" || sess.listener.Senders == nil {
		return nil
	}
	env, err := sess.s.ask(sess.s.lookup, &proto.SMTPAuthQuery{What: "sender", Listener: sess.listener.Name, User: sess.info.Auth, Value: from})
	if err != nil {
		return sess.internalErr(err)
	}
	res, ok := env.Msg.(*proto.LookupAuthResult)
	switch {
	case !ok || res.Status == proto.StatusTempfail:
		return sess.internalErr(errors.New("lookup could not check the sender"))
	case res.Status == proto.StatusOK:
		return nil
	}
	sess.s.log.Infof("%016x: %q may not send as <%s>", sess.info.ID, sess.info.Auth, from)
	return errSenderNotOwned
}
