package smtp

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/internal/monkey"
	"smtpd/internal/smtp/server"
	"smtpd/proto"
)

// MaxHops is the number of Received fields above which a message is
// taken to be looping, as in OpenSMTPD.
const MaxHops = 100

// session is the daemon's policy for one SMTP session: the engine's
// hooks, one per phase, asking mfa, lookup and queue. A transaction is
// MAIL, RCPT..., then DATA or BDAT.
type session struct {
	s        *Server
	conn     *server.Conn
	listener *config.Listener
	info     proto.Session
	// listenerID numbers the listener for mfa; filters is what its
	// chain asks of the session
	listenerID uint32
	filters    listenerFilters
	counted    string
	mails      int
	// localUser is set for sessions of local programs: who submits
	localUser  string
	tlsCounted bool
	// authFailures counts the wrong credentials of this session
	authFailures int

	// the current transaction
	mail  server.MailParams
	rcpts []rcpt
	// created brings queue's answer to the message asked for at the
	// first accepted recipient, so that the body file is ready when
	// DATA comes instead of costing a round trip before the 354
	created chan created
	// the message being received, once DATA or BDAT started it
	msgid uint32
	body  *os.File
	bw    *bodyWriter
	// txid is the message id the filter events give the current
	// transaction (created at MAIL on listeners with filter processes)
	txid uint32
	// junk marks the session's messages as spam, at a filter's word;
	// discard and quarantine are the filters' word on the message
	junk       bool
	discard    bool
	quarantine string
	// tlsOptional is the message's "TLS-Required: No" (RFC 8689 §5)
	tlsOptional bool
	// auth sums up the checks of the message for its log line
	auth string
	// logged are the envelopes of the message, for its event lines
	logged []loggedEnvelope
}

// created is queue's answer to SMTPMessageCreate, or why none came.
type created struct {
	frame *proto.Frame
	err   error
}

type rcpt struct {
	addr   string
	params server.RcptParams
	dests  []proto.Destination
}

// newSession starts the policy of a connection the engine accepted.
func (s *Server) newSession(lc *config.Listener, c *server.Conn) server.Session {
	ip := remoteIP(c.NetConn())
	parsed := net.ParseIP(ip)
	sess := &session{
		s: s, conn: c, listener: lc,
		info: proto.Session{ID: s.nextID(), Remote: ip, Local: parsed != nil && parsed.IsLoopback()},
	}
	c.SetID(sess.info.ID)
	sess.listenerID = noListener
	for i, l := range s.cfg.Listeners {
		if l == lc {
			sess.listenerID = uint32(i)
			sess.filters = s.filtersOf(uint32(i))
		}
	}
	if sess.filters.external {
		s.filtered.Store(c, sess)
	}
	family := "inet6"
	if parsed.To4() != nil {
		family = "inet4"
	}
	if l, ok := c.NetConn().(*localConn); ok {
		// a local program, through control: the user id is the
		// kernel's word (SO_PEERCRED), the name the program's
		sess.info.Local, sess.localUser = true, fmt.Sprintf("user %s uid %d", sanitize(l.user), l.uid)
		c.SetLocal(true)
		family = "local"
	}
	// every connection counts, also one refused before the greeting
	s.stats.Increment("smtp.session", 1)
	s.stats.Increment("smtp.session.total", 1)
	s.stats.Increment("smtp.session."+family, 1)
	sess.counted = "smtp.session." + family
	return sess
}

// reply is a Reply of the engine.
func reply(code int, enhanced server.EnhancedCode, format string, args ...any) *server.Reply {
	return &server.Reply{Code: code, Enhanced: enhanced, Text: fmt.Sprintf(format, args...)}
}

// replyOf turns a reply from mfa, lookup or queue into the engine's.
// Code 0, or one that is not a failure, is a temporary failure.
func replyOf(r proto.Reply) *server.Reply {
	code := int(r.Code)
	if code < 400 || code > 599 {
		code = 451
	}
	ec := server.EnhancedCode{code / 100, 0, 0}
	var a, b, c int
	if _, err := fmt.Sscanf(r.Enhanced, "%d.%d.%d", &a, &b, &c); err == nil && a == code/100 {
		ec = server.EnhancedCode{a, b, c}
	}
	text := r.Text
	if text == "" {
		text = "Temporary failure"
	}
	return &server.Reply{Code: code, Enhanced: ec, Text: text}
}

// internalErr is what a client sees when a process of ours fails: a
// temporary failure, never a permanent one.
func (sess *session) internalErr(err error) *server.Reply {
	sess.s.log.Warnf("%016x: %v", sess.info.ID, err)
	return reply(451, server.EnhancedCode{4, 3, 0}, "Temporary server failure, try again later")
}

// Connect asks mfa whether the client may connect at all. Only a 554
// may refuse a session at connect (RFC 5321 §3.1); a temporary refusal
// is 421.
func (sess *session) Connect() *server.Reply {
	if sess.localUser != "" {
		return nil
	}
	if !sess.s.connectRate.Allow(sess.info.Remote) {
		sess.s.stats.Increment("smtp.session.refused", 1)
		sess.s.stats.Increment("smtp.throttle.connect", 1)
		return reply(421, server.EnhancedCode{4, 7, 0}, "Too many connections from your address, slow down")
	}
	if sess.s.overload.Load() && sess.listener.Auth == config.AuthNone {
		// clients of a listener without AUTH cannot become trusted
		sess.s.stats.Increment("smtp.session.refused", 1)
		sess.s.stats.Increment("smtp.overload.refused", 1)
		return errOverloaded
	}
	r := sess.filter(proto.PhaseConnect, nil)
	if r == nil {
		return nil
	}
	sess.s.stats.Increment("smtp.session.refused", 1)
	if r.Code < 500 || r.Disconnect {
		return reply(421, server.EnhancedCode{4, 7, 0}, "%s", r.Text)
	}
	return reply(554, server.EnhancedCode{5, 7, 1}, "%s", r.Text)
}

func (sess *session) Helo(name string, extended bool) *server.Reply {
	phase := proto.PhaseHelo
	if extended {
		phase = proto.PhaseEhlo
	}
	sess.info.Helo = name
	if r := sess.filter(phase, &sess.info.Helo); r != nil {
		return r
	}
	if _, ok := sess.conn.TLS(); ok && !sess.tlsCounted {
		sess.tlsCounted = true
		sess.s.stats.Increment("smtp.tls", 1)
	}
	sess.s.log.Debugf("%016x: session from [%s] helo %q on %s", sess.info.ID, sess.info.Remote, name, sess.listener.Name)
	return nil
}

// StartTLS lets the handshake go; the state it resets is the engine's
// and the transaction's, which the engine aborts.
func (sess *session) StartTLS() *server.Reply { return sess.filter(proto.PhaseStartTLS, nil) }

func (sess *session) Mail(from string, p server.MailParams) *server.Reply {
	if sess.mails >= sess.s.cfg.Limits.MailsPerSession {
		return reply(452, server.EnhancedCode{4, 5, 3}, "Too many messages in this session")
	}
	if sess.listener.TLS == config.TLSStartTLSRequire && !sess.tls() {
		return reply(530, server.EnhancedCode{5, 7, 0}, "Must issue a STARTTLS command first")
	}
	if sess.listener.Auth == config.AuthRequired && sess.info.Auth == "" {
		return errAuthRequired
	}
	if r := sess.senderAllowed(from); r != nil {
		return r
	}
	if r := sess.throttleMail(); r != nil {
		return r
	}
	if sess.filters.external {
		// the filter events name the transaction by its message
		if r := sess.createNow(); r != nil {
			return r
		}
	}
	sess.info.Sender = from
	if r := sess.filter(proto.PhaseMail, &sess.info.Sender); r != nil {
		sess.info.Sender = ""
		sess.endMessage()
		return r
	}
	sess.mail = p
	return nil
}

// errOverloaded refuses new mail while the queue is in overload mode.
var errOverloaded = reply(421, server.EnhancedCode{4, 3, 2}, "System overloaded, try again later")

// throttleMail applies overload mode and the message rates to a new
// transaction: authenticated and local clients pass overload mode, and
// an authenticated user is bounded by the user's rate, others by their
// address's.
func (sess *session) throttleMail() *server.Reply {
	if sess.localUser != "" {
		return nil
	}
	if sess.info.Auth == "" && sess.s.overload.Load() {
		sess.s.stats.Increment("smtp.overload.refused", 1)
		return reply(451, server.EnhancedCode{4, 3, 2}, "System overloaded, try again later")
	}
	limited := !sess.s.messageRate.Allow(sess.info.Remote)
	if sess.info.Auth != "" {
		limited = !sess.s.userRate.Allow(sess.info.Auth)
	}
	if limited {
		sess.s.stats.Increment("smtp.throttle.message", 1)
		return reply(451, server.EnhancedCode{4, 7, 0}, "Too many messages, slow down")
	}
	return nil
}

// createNow asks queue for the transaction's message at once.
func (sess *session) createNow() *server.Reply {
	sess.startCreate()
	c := <-sess.created
	ch := make(chan created, 1)
	ch <- c
	sess.created = ch
	if c.err != nil {
		return sess.internalErr(c.err)
	}
	if m, ok := c.frame.Msg.(*proto.QueueMessageCreated); ok {
		sess.txid = m.MsgID
	}
	return nil
}

// startCreate asks queue for a message, once per transaction; the
// answer comes on sess.created.
func (sess *session) startCreate() {
	if sess.created != nil {
		return
	}
	ch := make(chan created, 1)
	sess.created = ch
	go func() {
		frame, err := sess.s.ask(sess.s.queue, &proto.SMTPMessageCreate{})
		ch <- created{frame, err}
	}()
}

func (sess *session) tls() bool {
	_, ok := sess.conn.TLS()
	return ok
}

func (sess *session) Rcpt(to string, p server.RcptParams) *server.Reply {
	if r := sess.filter(proto.PhaseRcpt, &to); r != nil {
		return r
	}
	frames, err := sess.s.child.Requests.Ask(sess.s.lookup, &proto.SMTPExpandRcpt{Session: sess.info, Rcpt: to}, peerTimeout)
	if err != nil {
		return sess.internalErr(err)
	}
	r := rcpt{addr: to, params: p}
	for _, env := range frames {
		res, ok := env.Msg.(*proto.LookupExpandResult)
		if !ok {
			return sess.internalErr(fmt.Errorf("lookup answered %s", env.Type))
		}
		if res.Status != proto.StatusOK {
			return replyOf(res.Reply)
		}
		r.dests = append(r.dests, res.Destinations...)
	}
	sess.rcpts = append(sess.rcpts, r)
	sess.startCreate()
	return nil
}

// Data asks mfa, then queue for a message and its body file, and
// returns where the engine writes the message: our trace fields go in
// front of it once its header section has been seen.
func (sess *session) Data() (io.Writer, *server.Reply) {
	if r := sess.filter(proto.PhaseData, nil); r != nil {
		return nil, r
	}
	if sess.created == nil {
		return nil, sess.internalErr(fmt.Errorf("DATA without a message asked of queue"))
	}
	c := <-sess.created
	sess.created = nil
	if c.err != nil {
		return nil, sess.internalErr(c.err)
	}
	env := c.frame
	switch m := env.Msg.(type) {
	case *proto.QueueMessageCreated:
		sess.msgid, sess.body = m.MsgID, m.File()
	case *proto.QueueFailure:
		return nil, replyOf(m.Reply)
	default:
		return nil, sess.internalErr(fmt.Errorf("queue answered %s", env.Type))
	}
	sess.bw = &bodyWriter{file: sess.body, trace: sess.trace}
	return sess.bw, nil
}

// Commit makes the message durable: envelopes to queue, mfa's word,
// then queue's commit; the 250 goes out only once queue says the
// message is on disk.
func (sess *session) Commit() *server.Reply {
	r := sess.commit()
	sess.endMessage()
	return r
}

func (sess *session) commit() *server.Reply {
	msgid := sess.msgid
	if err := sess.bw.finish(); err != nil {
		return sess.internalErr(fmt.Errorf("writing message %s: %w", envelope.FormatMsgID(msgid), err))
	}
	if sess.bw.info.received > MaxHops {
		return reply(554, server.EnhancedCode{5, 4, 6}, "Too many hops: mail loop detected")
	}
	if r := sess.filterMessage(); r != nil {
		return r
	}
	if r := sess.filter(proto.PhaseCommit, nil); r != nil {
		return r
	}
	if sess.discard {
		sess.s.stats.Increment("smtp.message.discarded", 1)
		sess.s.log.Infof("%016x: message %s from <%s> discarded by a filter", sess.info.ID, envelope.FormatMsgID(msgid), sess.info.Sender)
		return reply(250, server.EnhancedCode{2, 0, 0}, "%s Message accepted for delivery", envelope.FormatMsgID(msgid))
	}
	if r := sess.submit(msgid); r != nil {
		return r
	}
	env, err := sess.s.ask(sess.s.queue, &proto.SMTPMessageCommit{MsgID: msgid, Quarantine: sess.quarantine})
	sess.msgid = 0 // queue owns the message from here, committed or not
	if err != nil {
		return sess.internalErr(err)
	}
	switch m := env.Msg.(type) {
	case *proto.QueueMessageCommitted:
	case *proto.QueueFailure:
		return replyOf(m.Reply)
	default:
		return sess.internalErr(fmt.Errorf("queue answered %s", env.Type))
	}
	monkey.Crash("smtp.before-250")
	sess.mails++
	sess.s.stats.Increment("smtp.message", 1)
	id := envelope.FormatMsgID(msgid)
	auth := ""
	if sess.auth != "" {
		auth = " (" + sess.auth + ")"
	}
	if sess.mail.RequireTLS {
		auth += " REQUIRETLS"
	}
	sess.s.log.Infof("%016x: message %s accepted from <%s> for %d recipients%s", sess.info.ID, id, sess.info.Sender, len(sess.rcpts), auth)
	sess.logMessage(msgid)
	return reply(250, server.EnhancedCode{2, 0, 0}, "%s Message accepted for delivery", id)
}

// endMessage closes the body file and drops a message that was not
// handed to queue for commit, also one whose creation is still under
// way; the transaction is over.
func (sess *session) endMessage() {
	if sess.body != nil {
		sess.body.Close()
	}
	if sess.msgid != 0 {
		sess.s.child.Send(sess.s.queue, &proto.SMTPMessageRollback{MsgID: sess.msgid}, 0)
	}
	if ch := sess.created; ch != nil {
		sess.created = nil
		go func() {
			if c := <-ch; c.err == nil {
				if m, ok := c.frame.Msg.(*proto.QueueMessageCreated); ok {
					m.File().Close()
					sess.s.child.Send(sess.s.queue, &proto.SMTPMessageRollback{MsgID: m.MsgID}, 0)
				}
			}
		}()
	}
	sess.msgid, sess.body, sess.bw = 0, nil, nil
	sess.info.Sender, sess.mail, sess.rcpts = "", server.MailParams{}, nil
	sess.discard, sess.quarantine, sess.auth, sess.logged = false, "", "", nil
}

// Abort ends a transaction without a message: RSET, a refused message,
// STARTTLS or the end of the connection.
func (sess *session) Abort() { sess.endMessage() }

func (sess *session) Rset() *server.Reply { return sess.filter(proto.PhaseRset, nil) }
func (sess *session) Noop() *server.Reply { return sess.filter(proto.PhaseNoop, nil) }
func (sess *session) Help() *server.Reply { return sess.filter(proto.PhaseHelp, nil) }

// Quit lets the filters see the QUIT; its answer is always 221 (RFC
// 5321 §4.1.1.10).
func (sess *session) Quit() *server.Reply {
	sess.filter(proto.PhaseQuit, nil)
	return nil
}

// Close counts the session out.
func (sess *session) Close() {
	if sess.filters.external {
		sess.s.filtered.Delete(sess.conn)
	}
	sess.endMessage()
	sess.s.stats.Decrement("smtp.session", 1)
	sess.s.stats.Decrement(sess.counted, 1)
}

// sanitize keeps what may appear in a trace field: a client's HELO or
// an address could otherwise inject header lines or comments.
func sanitize(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]@+_=", c) {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "unknown"
	}
	return b.String()
}

// submit sends queue one envelope per destination. Recipients that
// expand to the same destination (aliases, a catch-all) get one copy, as
// Postfix's duplicate filter does.
func (sess *session) submit(msgid uint32) *server.Reply {
	now := time.Now()
	seen := map[proto.Destination]bool{}
	for _, r := range sess.rcpts {
		for _, d := range r.dests {
			key := d
			key.Rule = 0
			if seen[key] {
				continue
			}
			seen[key] = true
			e := &envelope.Envelope{
				ID:   envelope.NewEvpID(msgid),
				Kind: envelope.Kind(d.Kind), Rule: int(d.Rule), Action: d.Action,
				Sender: cmp.Or(d.Sender, sess.info.Sender), Rcpt: r.addr, Dest: d.Dest, User: d.User, Target: d.Target,
				Helo: sanitize(sess.info.Helo), Remote: sess.info.Remote,
				Created: now, Expire: now.Add(sess.s.cfg.Limits.QueueExpire),
				Ret: sess.mail.Ret, Notify: strings.Join(r.params.Notify, ","),
				RequireTLS: sess.mail.RequireTLS, TLSOptional: sess.tlsOptional,
			}
			if sess.mail.EnvID != "" {
				e.EnvID = sanitize(sess.mail.EnvID)
			}
			if r.params.ORcpt != "" {
				e.ORcpt = strings.ToLower(r.params.ORcptType) + ";" + sanitize(r.params.ORcpt)
			}
			data, err := e.Marshal()
			if err != nil {
				return sess.internalErr(err)
			}
			if err := sess.s.child.Send(sess.s.queue, &proto.SMTPEnvelopeSubmit{MsgID: msgid, Envelope: data}, 0); err != nil {
				return sess.internalErr(err)
			}
			sess.logged = append(sess.logged, loggedEnvelope{id: e.ID, rcpt: r.addr})
			if sess.filters.external {
				sess.s.sendFilterEvent(sess, now, "tx-envelope", []string{fmt.Sprintf("%08x", msgid), envelope.FormatEvpID(e.ID)})
			}
		}
	}
	return nil
}
