package smtp

import (
	"errors"
	"fmt"
	"strings"

	"smtpd/internal/config"
	"smtpd/internal/smtp/server"
	"smtpd/proto"
)

// ETRN serves remote queue starting (RFC 1985) on listeners with an
// etrn table: lookup says whether the client's address is in it, as it
// says whether a client matches a rule's from table; then queue makes
// the relayed mail waiting for the domain due now. The replies are RFC
// 1985 §5's: 459 for a client or node that may not, 458 when lookup or
// queue cannot answer (the daemon's trouble is never a 5xx), and the
// engine's 251 or 253 for the count of messages.
func (sess *session) ETRN(node server.ETRNNode) (int, *server.Reply) {
	if sess.listener.ETRN == nil {
		// the engine offers it only with a table; a local session
		// never has one
		return 0, server.ETRNNotAllowed(node, "ETRN is not offered here")
	}
	// the listener's own conditions come first, as for MAIL
	if sess.listener.TLS == config.TLSStartTLSRequire && !sess.tls() {
		return 0, reply(530, server.EnhancedCode{5, 7, 0}, "Must issue a STARTTLS command first")
	}
	if sess.listener.Auth == config.AuthRequired && sess.info.Auth == "" {
		return 0, errAuthRequired
	}
	if r := sess.etrnAllowed(node); r != nil {
		sess.s.stats.Increment("smtp.etrn.refused", 1)
		return 0, r
	}
	if node.Queue {
		// RFC 1985 §5: queue names are the server's own; we have none
		sess.s.stats.Increment("smtp.etrn.refused", 1)
		return 0, server.ETRNNotAllowed(node, "queue names are not supported")
	}
	env, err := sess.s.ask(sess.s.queue, &proto.SMTPDomainSchedule{DomainTarget: proto.DomainTarget{Domain: strings.ToLower(node.Name), Subdomains: node.Subdomains}})
	if err == nil {
		if _, ok := env.Msg.(*proto.QueueDomainScheduled); !ok {
			err = fmt.Errorf("queue answered %s", env.Type)
		}
	}
	if err != nil {
		sess.s.log.Warnf("%016x: ETRN %s: %v", sess.info.ID, node, err)
		return 0, server.ETRNUnable(node)
	}
	res := env.Msg.(*proto.QueueDomainScheduled)
	sess.s.stats.Increment("smtp.etrn", 1)
	sess.s.log.Infof("%016x: ETRN %s from [%s]: %d messages (%d envelopes) scheduled", sess.info.ID, node, sess.info.Remote, res.Messages, res.Envelopes)
	return int(res.Messages), nil
}

// etrnAllowed asks lookup whether the client's address is in the
// listener's etrn table. A client that is not gets 459, the answer RFC
// 1985 §5 gives for a node the client may not start; a table that
// cannot tell now gets 458.
func (sess *session) etrnAllowed(node server.ETRNNode) *server.Reply {
	env, err := sess.s.ask(sess.s.lookup, &proto.SMTPAuthQuery{What: "etrn", Listener: sess.listener.Name, Value: sess.info.Remote})
	var res *proto.LookupAuthResult
	if err == nil {
		var ok bool
		if res, ok = env.Msg.(*proto.LookupAuthResult); !ok {
			err = fmt.Errorf("lookup answered %s", env.Type)
		} else if res.Status == proto.StatusTempfail {
			err = errors.New("lookup could not check the etrn table: " + res.Text)
		}
	}
	switch {
	case err != nil:
		sess.s.log.Warnf("%016x: ETRN %s: %v", sess.info.ID, node, err)
		return server.ETRNUnable(node)
	case res.Status != proto.StatusOK:
		// the refusal is logged with the others (Server.report)
		return server.ETRNNotAllowed(node, "client not authorized")
	}
	return nil
}
