package smtp

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/internal/smtp/server"
	"smtpd/proto"
)

// noListener numbers the sessions of local programs, which run no
// filters.
const noListener = ^uint32(0)

// listenerFilters is what smtp needs to know of a listener's filter
// chain: which phases to ask mfa about, and whether mfa needs the
// session's events and message (filter processes and milters do).
type listenerFilters struct {
	phases   map[proto.Phase]bool
	external bool
}

// newListenerFilters reads a listener's chain and checks. A chain with
// filter processes or milters is asked at every phase, since what a
// process registered is mfa's to know, and so is a listener that makes
// checks (SPF at MAIL, DKIM at the end of the message...); built-in
// filters only at their own phase.
func newListenerFilters(l *config.Listener) listenerFilters {
	lf := listenerFilters{phases: map[proto.Phase]bool{}, external: len(l.Checks) > 0}
	for _, f := range l.Filters {
		if f.Kind != config.FilterBuiltin {
			lf.external = true
			continue
		}
		if p, ok := proto.ParsePhase(f.Phase); ok {
			lf.phases[p] = true
			if p == proto.PhaseHelo {
				lf.phases[proto.PhaseEhlo] = true
			}
		}
	}
	if lf.external {
		for p := proto.PhaseConnect; p <= proto.PhaseWiz; p++ {
			lf.phases[p] = true
		}
	}
	return lf
}

// filtersOf returns the filters of the listener numbered id.
func (s *Server) filtersOf(id uint32) listenerFilters {
	if int(id) < len(s.listenerFilters) {
		return s.listenerFilters[id]
	}
	return listenerFilters{}
}

// filter asks mfa about a phase, if the session's chain acts at it. A
// rewrite (a filter's new HELO name or address) replaces *param.
func (sess *session) filter(phase proto.Phase, param *string) *server.Reply {
	if !sess.filters.phases[phase] {
		return nil
	}
	q := &proto.SMTPFilterQuery{Phase: phase, Session: sess.info, Listener: sess.listenerID}
	if param != nil {
		q.Param = *param
	}
	env, err := sess.s.ask(sess.s.mfa, q)
	if err != nil {
		return sess.internalErr(err)
	}
	v, ok := env.Msg.(*proto.MFAFilterVerdict)
	if !ok {
		return sess.internalErr(fmt.Errorf("mfa answered %s", env.Type))
	}
	if v.Junk {
		sess.junk = true
	}
	if v.Results != "" {
		sess.info.Results = v.Results
	}
	if v.Verdict == proto.VerdictProceed {
		if v.Rewrite != "" && param != nil {
			*param = v.Rewrite
		}
		return nil
	}
	r := replyOf(v.Reply)
	r.Disconnect = v.Verdict == proto.VerdictDisconnect
	return r
}

// signKeys are the DKIM keys that sign and seal the message: those of
// the actions of the transaction's recipients.
func (sess *session) signKeys() (sign, seal []uint32) {
	add := func(keys []uint32, k *config.DKIMKey) []uint32 {
		if k == nil || slices.Contains(keys, uint32(k.ID)) {
			return keys
		}
		return append(keys, uint32(k.ID))
	}
	for _, r := range sess.rcpts {
		for _, d := range r.dests {
			a := sess.s.cfg.Action(d.Action)
			if a == nil {
				continue
			}
			for _, k := range a.Sign {
				sign = add(sign, k)
			}
			seal = add(seal, a.Seal)
		}
	}
	return sign, seal
}

// filterMessage passes the received message through the chain's
// data-line filters, milters and checks, and has it signed; when they
// changed it, their version replaces the body file's content. The
// queue's commit makes the new content durable like any other.
func (sess *session) filterMessage() *server.Reply {
	sign, seal := sess.signKeys()
	if !sess.filters.external && len(sign) == 0 && len(seal) == 0 {
		return nil
	}
	size, err := sess.body.Seek(0, io.SeekEnd)
	if err != nil {
		return sess.internalErr(err)
	}
	env, err := sess.s.ask(sess.s.mfa, proto.NewSMTPFilterMessage(sess.body, sess.info.ID, sess.listenerID, sess.msgid, size, sign, seal))
	if err != nil {
		return sess.internalErr(err)
	}
	var fate proto.MessageFate
	switch m := env.Msg.(type) {
	case *proto.MFAMessageVerdict:
		if m.Verdict != proto.VerdictProceed {
			r := replyOf(m.Reply)
			r.Disconnect = m.Verdict == proto.VerdictDisconnect
			return r
		}
		fate = m.Fate
	case *proto.MFAMessageRewritten:
		defer m.File().Close()
		fate = m.Fate
		if err := replaceContent(sess.body, m.File(), m.Size); err != nil {
			return sess.internalErr(fmt.Errorf("rewriting message %s: %w", envelope.FormatMsgID(sess.msgid), err))
		}
	default:
		return sess.internalErr(fmt.Errorf("mfa answered %s", env.Type))
	}
	sess.discard, sess.quarantine, sess.auth = fate.Discard, fate.Quarantine, fate.Auth
	return nil
}

// replaceContent makes dst's content that of src's first size octets;
// the copy runs in the kernel (copy_file_range or sendfile).
func replaceContent(dst, src *os.File, size int64) error {
	if err := dst.Truncate(0); err != nil {
		return err
	}
	if _, err := dst.Seek(0, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(dst, io.NewSectionReader(src, 0, size))
	if err == nil && n != size {
		err = fmt.Errorf("copied %d of %d octets", n, size)
	}
	return err
}

// filterEvent passes an event of a session whose chain has filter
// processes or milters to mfa, with the fields OpenSMTPD's report
// events carry (smtpd-filters(7), protocol 0.7).
func (s *Server) filterEvent(sess *session, e server.Event) {
	msgid := func() string { return fmt.Sprintf("%08x", sess.txid) }
	var params []string
	switch e.Kind {
	case server.EventLinkConnect:
		params = []string{sess.rdns(), "error", addrText(e.Conn.RemoteAddr()), addrText(e.Conn.LocalAddr())}
	case server.EventLinkGreeting:
		params = []string{e.Text}
	case server.EventLinkIdentify:
		params = []string{e.Method, e.Text}
	case server.EventLinkTLS:
		st, _ := e.Conn.TLS()
		params = []string{tlsText(st)}
	case server.EventLinkAuth:
		params = []string{e.Result, e.Text}
	case server.EventTxBegin, server.EventTxRollback, server.EventTxReset:
		params = []string{msgid()}
	case server.EventTxMail, server.EventTxRcpt:
		params = []string{msgid(), e.Result, e.Text}
	case server.EventTxData:
		params = []string{msgid(), e.Result}
	case server.EventTxCommit:
		params = []string{msgid(), strconv.FormatInt(e.Size, 10)}
	case server.EventProtocolClient, server.EventProtocolServer:
		params = []string{e.Line}
	}
	s.sendFilterEvent(sess, e.Time, e.Kind, params)
}

func (s *Server) sendFilterEvent(sess *session, t time.Time, kind string, params []string) {
	ev := &proto.SMTPFilterEvent{Session: sess.info.ID, Listener: sess.listenerID, Time: t, Event: kind, Params: params}
	if err := s.child.Send(s.mfa, ev, 0); err != nil {
		s.log.Fatalf("%v", err)
	}
}

// rdns is the client's host name as the filter protocol gives it; the
// daemon does not resolve it.
func (sess *session) rdns() string { return "<unknown>" }

// addrText writes an address as OpenSMTPD does: a.b.c.d:port,
// [v6]:port, or unix:<socket> for a local one.
func addrText(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return a.String()
}

// tlsText describes a TLS session as the link-tls event does:
// version:cipher:bits, in OpenSSL's names.
func tlsText(st tls.ConnectionState) string {
	bits := 128
	switch st.CipherSuite {
	case tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		bits = 256
	}
	version := map[uint16]string{tls.VersionTLS10: "TLSv1", tls.VersionTLS11: "TLSv1.1", tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[st.Version]
	return fmt.Sprintf("%s:%s:%d", version, tls.CipherSuiteName(st.CipherSuite), bits)
}
