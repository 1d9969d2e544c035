package smtp

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/internal/monkey"
	"smtpd/proto"
)

// MaxHops is the number of Received fields above which a message is
// taken to be looping, as in OpenSMTPD.
const MaxHops = 100

type backend struct {
	s        *Server
	listener *config.Listener
}

// NewSession runs at HELO or EHLO: go-smtp greets the client itself.
func (b *backend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	s := b.s
	ip := remoteIP(c.Conn())
	parsed := net.ParseIP(ip)
	sess := &session{
		s: s, conn: c, listener: b.listener,
		info: proto.Session{ID: s.nextID(), Remote: ip, Local: parsed != nil && parsed.IsLoopback(), Helo: c.Hostname()},
	}
	family := "inet6"
	if parsed.To4() != nil {
		family = "inet4"
	}
	if lc, ok := c.Conn().(*localConn); ok {
		// a local program, through control: the user id is the
		// kernel's word (SO_PEERCRED), the name the program's
		sess.info.Local, sess.localUser = true, fmt.Sprintf("user %s uid %d", sanitize(lc.user), lc.uid)
		family = "local"
	}
	if err := sess.filter(proto.PhaseHelo, ""); err != nil {
		return nil, err
	}
	if _, ok := c.TLSConnectionState(); ok {
		s.stats.Increment("smtp.tls", 1)
	}
	s.stats.Increment("smtp.session", 1)
	s.stats.Increment("smtp.session.total", 1)
	s.stats.Increment("smtp.session."+family, 1)
	sess.counted = "smtp.session." + family
	s.log.Debugf("%016x: session from [%s] helo %q on %s", sess.info.ID, ip, c.Hostname(), b.listener.Name)
	return sess, nil
}

// session is one SMTP session; a transaction is MAIL, RCPT..., DATA.
type session struct {
	s        *Server
	conn     *gosmtp.Conn
	listener *config.Listener
	info     proto.Session
	counted  string
	mails    int
	// localUser is set for sessions of local programs: who submits
	localUser string

	// the current transaction
	hasMail bool
	mail    *gosmtp.MailOptions
	rcpts   []rcpt
}

type rcpt struct {
	addr  string
	opts  *gosmtp.RcptOptions
	dests []proto.Destination
}

func smtpErr(code int, enhanced gosmtp.EnhancedCode, format string, args ...any) *gosmtp.SMTPError {
	return &gosmtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: fmt.Sprintf(format, args...)}
}

// replyErr turns a reply from mfa, lookup or queue into the error go-smtp
// writes. Code 0 is a temporary failure.
func replyErr(r proto.Reply) *gosmtp.SMTPError {
	code := int(r.Code)
	if code < 400 || code > 599 {
		code = 451
	}
	ec := gosmtp.EnhancedCode{code / 100, 0, 0}
	var a, b, c int
	if _, err := fmt.Sscanf(r.Enhanced, "%d.%d.%d", &a, &b, &c); err == nil && a == code/100 {
		ec = gosmtp.EnhancedCode{a, b, c}
	}
	text := r.Text
	if text == "" {
		text = "Temporary failure"
	}
	return &gosmtp.SMTPError{Code: code, EnhancedCode: ec, Message: text}
}

// internalErr is what a client sees when a process of ours fails: a
// temporary failure, never a permanent one.
func (sess *session) internalErr(err error) *gosmtp.SMTPError {
	sess.s.log.Warnf("%016x: %v", sess.info.ID, err)
	return smtpErr(451, gosmtp.EnhancedCode{4, 3, 0}, "Temporary server failure, try again later")
}

// filter asks mfa about a phase, if a filter is configured for it.
func (sess *session) filter(phase proto.Phase, rcpt string) error {
	if !sess.s.filtered[phase] {
		return nil
	}
	env, err := sess.s.ask(sess.s.mfa, &proto.SMTPFilterQuery{Phase: phase, Session: sess.info, Rcpt: rcpt})
	if err != nil {
		return sess.internalErr(err)
	}
	v, ok := env.Msg.(*proto.MFAFilterVerdict)
	if !ok {
		return sess.internalErr(fmt.Errorf("mfa answered %s", env.Type))
	}
	switch v.Verdict {
	case proto.VerdictProceed:
		return nil
	case proto.VerdictDisconnect:
		// go-smtp writes the reply when we return; close just after it
		time.AfterFunc(100*time.Millisecond, func() { sess.conn.Close() })
		return replyErr(v.Reply)
	}
	return replyErr(v.Reply)
}

func (sess *session) Reset() {
	sess.hasMail, sess.mail, sess.rcpts = false, nil, nil
}

func (sess *session) Logout() error {
	sess.s.stats.Decrement("smtp.session", 1)
	sess.s.stats.Decrement(sess.counted, 1)
	return nil
}

func (sess *session) Mail(from string, opts *gosmtp.MailOptions) error {
	if sess.mails >= sess.s.cfg.Limits.MailsPerSession {
		return smtpErr(452, gosmtp.EnhancedCode{4, 5, 3}, "Too many messages in this session")
	}
	if sess.listener.TLS == config.TLSStartTLSRequire && !sess.tls() {
		return smtpErr(530, gosmtp.EnhancedCode{5, 7, 0}, "Must issue a STARTTLS command first")
	}
	if sess.listener.Auth == config.AuthRequired && sess.info.Auth == "" {
		return errAuthRequired
	}
	if strings.ContainsAny(from, "\r\n\x00 ") {
		return smtpErr(553, gosmtp.EnhancedCode{5, 1, 7}, "Invalid sender address")
	}
	if err := sess.senderAllowed(from); err != nil {
		return err
	}
	sess.Reset()
	sess.info.Sender = from
	if err := sess.filter(proto.PhaseMail, ""); err != nil {
		return err
	}
	sess.hasMail, sess.mail = true, opts
	return nil
}

func (sess *session) tls() bool {
	_, ok := sess.conn.TLSConnectionState()
	return ok
}

func (sess *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	if !sess.hasMail {
		return smtpErr(503, gosmtp.EnhancedCode{5, 5, 1}, "Need MAIL before RCPT")
	}
	if err := sess.filter(proto.PhaseRcpt, to); err != nil {
		return err
	}
	frames, err := sess.s.child.Requests.Ask(sess.s.lookup, &proto.SMTPExpandRcpt{Session: sess.info, Rcpt: to}, peerTimeout)
	if err != nil {
		return sess.internalErr(err)
	}
	r := rcpt{addr: to, opts: opts}
	for _, env := range frames {
		res, ok := env.Msg.(*proto.LookupExpandResult)
		if !ok {
			return sess.internalErr(fmt.Errorf("lookup answered %s", env.Type))
		}
		if res.Status != proto.StatusOK {
			sess.s.log.Infof("%016x: recipient <%s> refused: %d %s", sess.info.ID, to, res.Reply.Code, res.Reply.Text)
			return replyErr(res.Reply)
		}
		r.dests = append(r.dests, res.Destinations...)
	}
	sess.rcpts = append(sess.rcpts, r)
	return nil
}

func (sess *session) Data(r io.Reader) error {
	if len(sess.rcpts) == 0 {
		return smtpErr(503, gosmtp.EnhancedCode{5, 5, 1}, "Need RCPT before DATA")
	}
	if err := sess.filter(proto.PhaseData, ""); err != nil {
		return err
	}
	env, err := sess.s.ask(sess.s.queue, &proto.SMTPMessageCreate{})
	if err != nil {
		return sess.internalErr(err)
	}
	var msgid uint32
	var body *os.File
	switch m := env.Msg.(type) {
	case *proto.QueueMessageCreated:
		msgid, body = m.MsgID, m.File()
	case *proto.QueueFailure:
		return replyErr(m.Reply)
	default:
		return sess.internalErr(fmt.Errorf("queue answered %s", env.Type))
	}
	committed := false
	defer func() {
		body.Close()
		if !committed {
			sess.s.child.Send(sess.s.queue, &proto.SMTPMessageRollback{MsgID: msgid}, 0)
		}
	}()
	if err := sess.receive(msgid, body, r); err != nil {
		return err
	}
	if err := sess.submit(msgid); err != nil {
		return err
	}
	if err := sess.filter(proto.PhaseCommit, ""); err != nil {
		return err
	}
	env, err = sess.s.ask(sess.s.queue, &proto.SMTPMessageCommit{MsgID: msgid})
	committed = true // queue owns the message from here, committed or not
	if err != nil {
		return sess.internalErr(err)
	}
	switch m := env.Msg.(type) {
	case *proto.QueueMessageCommitted:
	case *proto.QueueFailure:
		return replyErr(m.Reply)
	default:
		return sess.internalErr(fmt.Errorf("queue answered %s", env.Type))
	}
	monkey.Crash("smtp.before-250")
	sess.mails++
	sess.s.stats.Increment("smtp.message", 1)
	sess.s.log.Infof("%016x: message %s accepted from <%s> for %d recipients", sess.info.ID, envelope.FormatMsgID(msgid), sess.info.Sender, len(sess.rcpts))
	return smtpErr(250, gosmtp.EnhancedCode{2, 0, 0}, "%s Message accepted for delivery", envelope.FormatMsgID(msgid))
}

// receive writes the message into the body file: our Received field,
// Message-Id and Date if the message lacks them, then the message.
func (sess *session) receive(msgid uint32, body *os.File, r io.Reader) error {
	strict := &strictReader{r: r}
	br := bufio.NewReaderSize(strict, 64*1024)
	hdr, leftover, info, err := readHeader(br)
	if err == nil {
		w := bufio.NewWriterSize(body, 64*1024)
		sess.writeTrace(w, msgid, info)
		w.Write(hdr)
		w.Write(leftover)
		if _, err = io.Copy(w, br); err == nil {
			err = w.Flush()
		}
	}
	switch {
	case err == nil && info.received > MaxHops:
		return smtpErr(554, gosmtp.EnhancedCode{5, 4, 6}, "Too many hops: mail loop detected")
	case err == nil:
		return nil
	case errors.Is(err, errBareLineEnding):
		sess.s.log.Infof("%016x: message refused: bare CR or LF", sess.info.ID)
		return smtpErr(550, gosmtp.EnhancedCode{5, 5, 2}, "Bare CR or LF in message, refused: possible SMTP smuggling")
	}
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return se // too large, from go-smtp's reader
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
		return smtpErr(421, gosmtp.EnhancedCode{4, 4, 2}, "Connection trouble during DATA")
	}
	return sess.internalErr(fmt.Errorf("writing message %s: %w", envelope.FormatMsgID(msgid), err))
}

// writeTrace writes the fields the daemon adds at the top of a message.
func (sess *session) writeTrace(w *bufio.Writer, msgid uint32, info headerInfo) {
	host := sess.s.cfg.Hostname
	proto := "ESMTP"
	if sess.listener.Protocol == "lmtp" {
		proto = "LMTP"
	}
	tlsInfo := ""
	// RFC 3848: S for TLS, A for an authenticated client
	if st, ok := sess.conn.TLSConnectionState(); ok {
		proto += "S"
		tlsInfo = fmt.Sprintf("\r\n\t(%s %s)", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	}
	if sess.info.Auth != "" {
		proto += "A"
	}
	forClause := ""
	if len(sess.rcpts) == 1 {
		forClause = "\r\n\tfor <" + sanitize(sess.rcpts[0].addr) + ">"
	}
	now := time.Now()
	from := fmt.Sprintf("%s ([%s])", sanitize(sess.info.Helo), sess.info.Remote)
	if sess.localUser != "" {
		from = "localhost (" + sess.localUser + ")"
	}
	fmt.Fprintf(w, "Received: from %s\r\n\tby %s (smtpd) with %s id %s%s%s;\r\n\t%s\r\n",
		from, host, proto, envelope.FormatMsgID(msgid), tlsInfo, forClause, now.Format(time.RFC1123Z))
	if !info.hasMessageID {
		fmt.Fprintf(w, "Message-Id: <%d.%s.%x@%s>\r\n", now.Unix(), envelope.FormatMsgID(msgid), rand.Uint32(), host)
	}
	if !info.hasDate {
		fmt.Fprintf(w, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
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
func (sess *session) submit(msgid uint32) error {
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
				Sender: sess.info.Sender, Rcpt: r.addr, Dest: d.Dest, User: d.User, Target: d.Target,
				Helo: sanitize(sess.info.Helo), Remote: sess.info.Remote,
				Created: now, Expire: now.Add(sess.s.cfg.Limits.QueueExpire),
			}
			if sess.mail != nil {
				e.Ret, e.EnvID = string(sess.mail.Return), sanitize(sess.mail.EnvelopeID)
				if sess.mail.EnvelopeID == "" {
					e.EnvID = ""
				}
			}
			if r.opts != nil {
				var notify []string
				for _, n := range r.opts.Notify {
					notify = append(notify, string(n))
				}
				e.Notify = strings.Join(notify, ",")
				if r.opts.OriginalRecipient != "" {
					e.ORcpt = strings.ToLower(string(r.opts.OriginalRecipientType)) + ";" + sanitize(r.opts.OriginalRecipient)
				}
			}
			data, err := e.Marshal()
			if err != nil {
				return sess.internalErr(err)
			}
			if err := sess.s.child.Send(sess.s.queue, &proto.SMTPEnvelopeSubmit{MsgID: msgid, Envelope: data}, 0); err != nil {
				return sess.internalErr(err)
			}
		}
	}
	return nil
}
