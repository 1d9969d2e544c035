package smtp

import (
	"bytes"
	"errors"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"smtpd/internal/config"
	"smtpd/proto"
)

// The limits on failed authentications: each failure is answered after
// authFailureDelay, and an address with authFailureLimit failures within
// authFailureWindow may not try again until the window has passed.
const (
	authFailureDelay  = time.Second
	authFailureLimit  = 5
	authFailureWindow = 10 * time.Minute
	// maxAuthFailureAddresses is the size at which the table of
	// failing addresses is swept of old entries
	maxAuthFailureAddresses = 10000
)

var (
	errAuthInvalid = &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	// RFC 4954 §6: 454 4.7.0 for a temporary authentication failure
	errAuthTemporary  = &gosmtp.SMTPError{Code: 454, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	errAuthTooMany    = &gosmtp.SMTPError{Code: 454, EnhancedCode: gosmtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentications, try again later"}
	errAuthRequired   = &gosmtp.SMTPError{Code: 530, EnhancedCode: gosmtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errSenderNotOwned = &gosmtp.SMTPError{Code: 553, EnhancedCode: gosmtp.EnhancedCode{5, 7, 1}, Message: "Sender address not allowed for this user"}
)

// authFailures counts failed authentications per client address.
type authFailures struct {
	mu   sync.Mutex
	byIP map[string][]time.Time
	now  func() time.Time
}

func newAuthFailures() *authFailures {
	return &authFailures{byIP: map[string][]time.Time{}, now: time.Now}
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
	return len(a.recent(ip)) >= authFailureLimit
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

// AuthMechanisms lists what the session offers; go-smtp announces them
// only once the session is under TLS.
func (sess *session) AuthMechanisms() []string {
	if sess.listener.Auth == config.AuthNone {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth starts an authentication exchange.
func (sess *session) Auth(mech string) (sasl.Server, error) {
	if sess.listener.Auth == config.AuthNone || !sess.tls() {
		return nil, gosmtp.ErrAuthUnsupported
	}
	if sess.s.authFailures.blocked(sess.info.Remote) {
		sess.s.stats.Increment("smtp.auth.refused", 1)
		return nil, errAuthTooMany
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, password string) error {
			if identity != "" && identity != user {
				return errAuthInvalid
			}
			return sess.authenticate(user, password)
		}), nil
	case sasl.Login:
		return &loginServer{check: sess.authenticate}, nil
	}
	return nil, gosmtp.ErrAuthUnknownMechanism
}

// authenticate asks lookup to check a password; a failure is answered
// late and counted against the client's address.
func (sess *session) authenticate(user, password string) error {
	env, err := sess.s.ask(sess.s.lookup, &proto.SMTPAuthQuery{What: "password", Listener: sess.listener.Name, User: user, Value: password})
	if err != nil {
		sess.s.log.Warnf("%016x: auth: %v", sess.info.ID, err)
		return errAuthTemporary
	}
	res, ok := env.Msg.(*proto.LookupAuthResult)
	switch {
	case !ok || res.Status == proto.StatusTempfail:
		sess.s.stats.Increment("smtp.auth.tempfail", 1)
		return errAuthTemporary
	case res.Status == proto.StatusOK:
		sess.info.Auth = user
		sess.s.stats.Increment("smtp.auth.ok", 1)
		sess.s.log.Infof("%016x: authenticated as %q from [%s]", sess.info.ID, user, sess.info.Remote)
		return nil
	}
	sess.s.stats.Increment("smtp.auth.fail", 1)
	sess.s.log.Infof("%016x: authentication as %q failed from [%s]", sess.info.ID, user, sess.info.Remote)
	sess.s.authFailures.add(sess.info.Remote)
	time.Sleep(authFailureDelay)
	return errAuthInvalid
}

// senderAllowed checks MAIL FROM of an authenticated session against the
// listener's senders table.
func (sess *session) senderAllowed(from string) error {
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

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login): the user name and the password each
// answer a challenge; a client may send the user name with AUTH.
type loginServer struct {
	check func(user, password string) error
	step  int
	user  string
}

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch l.step {
	case 0:
		l.step = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.step, l.user = 2, string(response)
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		if bytes.ContainsAny(response, "\x00") || l.user == "" {
			return nil, false, errAuthInvalid
		}
		err := l.check(l.user, string(response))
		return nil, err == nil, err
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
