package smtp

import (
	"fmt"
	"strings"

	"smtpd/internal/logging"
	"smtpd/internal/smtp/server"
)

// The event lines of the smtp process, in OpenSMTPD's format (see
// logging.Event): a line per connection, TLS handshake, authentication,
// refused command, message and envelope, and one when the session ends,
// each starting with the session id.

// sessionEvents is what the event lines of a session remember between
// the engine's events. Report runs on the session's goroutine: no lock.
type sessionEvents struct {
	// line is the client's last line as the engine reported it, for
	// the log line of a refusal (Server.report)
	line string
	// command is what a failure answers, as logged: the last command
	// line, "DATA" still at the end of a message
	command string
	// authMech is the mechanism of the AUTH exchange under way, and
	// responses the number of SASL responses the client gave in it
	authMech  string
	responses int
	// lastCode is the code of the last reply, and answered is set
	// from then until the client's next line
	lastCode string
	answered bool
	// tlsPending is set from the 220 to STARTTLS to the end of the
	// handshake
	tlsPending bool
	timedOut   bool
}

// client notes a line of the client: a command, a SASL response (after
// a 334), or the dot that ends a message (after the 354).
func (st *sessionEvents) client(line string) {
	st.line, st.answered = line, false
	switch {
	case st.lastCode == "334" && st.authMech != "":
		st.responses++
		return
	case st.lastCode == "354" && line == ".":
		return
	}
	prev := st.command
	st.command, st.authMech, st.responses = line, "", 0
	fields := strings.Fields(line)
	verb := ""
	if len(fields) > 0 {
		verb = strings.ToUpper(fields[0])
	}
	switch {
	case verb == "AUTH":
		// whatever follows the mechanism, separated by spaces or tabs,
		// is a credential: never logged (failedCommand)
		st.authMech = "?"
		if len(fields) > 1 {
			st.authMech = strings.ToUpper(fields[1])
		}
		if len(fields) > 2 {
			st.responses = 1
		}
	case !isSMTPVerb(verb) && isAUTH(prev):
		// a client that sends its credentials without waiting for the
		// 334 of an AUTH that was refused: the line is one of them
		st.command = "(a line after AUTH)"
	}
}

// isSMTPVerb reports whether verb is a command the engine knows; another
// line right after an AUTH is taken for a credential sent too early.
func isSMTPVerb(verb string) bool {
	switch verb {
	case "HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT",
		"VRFY", "EXPN", "HELP", "STARTTLS", "AUTH", "ETRN":
		return true
	}
	return false
}

func isAUTH(line string) bool {
	f := strings.Fields(line)
	return len(f) > 0 && strings.EqualFold(f[0], "AUTH")
}

// server notes the last line of a reply. An AUTH exchange ends with
// any reply but a 334 challenge.
func (st *sessionEvents) server(line string) {
	if len(line) < 3 || len(line) > 3 && line[3] != ' ' {
		return
	}
	st.lastCode, st.answered = line[:3], true
	if st.lastCode != "334" {
		st.authMech, st.responses = "", 0
	}
	if verb, _, _ := strings.Cut(st.command, " "); st.lastCode == "220" && strings.EqualFold(verb, "STARTTLS") {
		st.tlsPending = true
	}
}

// failedCommand is the command a failure answers, as the failed-command
// line gives it: the command line, with AUTH's credentials never shown
// but the step of the exchange, as OpenSMTPD names it.
func (st *sessionEvents) failedCommand() string {
	if st.authMech == "" {
		return st.command
	}
	if st.responses == 0 {
		// the AUTH line alone, with no credential on it
		return "AUTH " + st.authMech
	}
	switch {
	case st.authMech == server.AuthLogin && st.responses == 1:
		return "AUTH LOGIN (username)"
	case st.authMech == server.AuthLogin:
		return "AUTH LOGIN (password)"
	}
	return "AUTH " + st.authMech + " (...)"
}

// badInput reports whether a failure answers no line of the client
// but input the engine could not take as one: a 500 to a line too long
// to read, as OpenSMTPD's "bad-input" lines have it.
func (st *sessionEvents) badInput(reply string) bool {
	return st.answered && strings.HasPrefix(reply, "500 ")
}

// disconnectReason says why a session ended, as OpenSMTPD's
// "disconnected reason=" does: quit when the session ended after a
// reply (QUIT, a 421, a refusal that closes the session), timeout,
// disconnect when the client went away first.
func (st *sessionEvents) disconnectReason(ending bool) string {
	switch {
	case st.timedOut:
		return "timeout"
	case st.tlsPending:
		return `"io-error: TLS handshake failed"`
	case ending:
		return "quit"
	}
	return "disconnect"
}

// isFailure reports whether a reply line is the last line of a 4xx or
// 5xx reply.
func isFailure(line string) bool {
	return len(line) > 3 && (line[0] == '4' || line[0] == '5') && line[3] == ' '
}

// logEvent writes the event lines of the engine's events, and returns
// what the session's lines remember, nil once it is over.
func (s *Server) logEvent(e server.Event) *sessionEvents {
	id := e.Conn.ID()
	if e.Kind == server.EventLinkConnect {
		st := &sessionEvents{}
		s.events.Store(e.Conn, st)
		address, host := "local", s.cfg.Hostname
		if !e.Conn.Local() {
			ip := remoteIP(e.Conn.NetConn())
			// the smtp process does not ask for PTR records
			address, host = logging.AddrText(ip), ip
		}
		s.log.Event("%016x smtp connected address=%s host=%s", id, address, host)
		return st
	}
	v, ok := s.events.Load(e.Conn)
	if !ok {
		return nil
	}
	st := v.(*sessionEvents)
	switch e.Kind {
	case server.EventLinkTLS:
		st.tlsPending = false
		if cs, ok := e.Conn.TLS(); ok {
			s.log.Event("%016x smtp tls ciphers=%s", id, logging.TLSText(cs))
		}
	case server.EventProtocolClient:
		st.client(e.Line)
	case server.EventProtocolServer:
		// the stop's 421 and the timeout's are no failure of a command
		switch {
		case !isFailure(e.Line) || st.timedOut || s.stopReply(e.Line):
		case st.badInput(e.Line):
			s.log.Event("%016x smtp bad-input result=\"%s\"", id, logging.Quote(e.Line))
		default:
			s.log.Event("%s", failedCommandLine(id, st.failedCommand(), e.Line))
		}
		st.server(e.Line)
	case server.EventTimeout:
		st.timedOut = true
	case server.EventLinkDisconnect:
		s.events.Delete(e.Conn)
		s.log.Event("%016x smtp disconnected reason=%s", id, st.disconnectReason(e.Conn.Ending()))
		return nil
	}
	return st
}

// stopReply reports whether a reply line is the 421 with which a stop
// ends a session, rather than a refusal.
func (s *Server) stopReply(line string) bool {
	return s.draining.Load() && strings.HasPrefix(line, "421 4.3.2 ")
}

// failedCommandLine is the line of a command refused with reply.
func failedCommandLine(id uint64, command, reply string) string {
	return fmt.Sprintf("%016x smtp failed-command command=\"%s\" result=\"%s\"", id, logging.Quote(command), logging.Quote(reply))
}

// authLine is the line of an authentication that lookup answered:
// result ok, permfail or tempfail.
func authLine(id uint64, user, result string) string {
	return fmt.Sprintf("%016x smtp authentication user=%s result=%s", id, logging.Token(user), result)
}

// messageLine is the line of a message accepted: its size in the queue,
// trace fields included, its number of accepted recipients and the
// protocol that brought it (SMTP, ESMTP or LMTP).
func messageLine(id uint64, msgid uint32, size int64, rcpts int, proto string) string {
	return fmt.Sprintf("%016x smtp message msgid=%08x size=%d nrcpt=%d proto=%s", id, msgid, size, rcpts, proto)
}

// envelopeLine is the line of one envelope of an accepted message.
func envelopeLine(id, evpid uint64, from, to string) string {
	return fmt.Sprintf("%016x smtp envelope evpid=%016x from=<%s> to=<%s>", id, evpid, logging.Clean(from), logging.Clean(to))
}

// loggedEnvelope is an envelope of the message under way, for its
// envelope line.
type loggedEnvelope struct {
	id   uint64
	rcpt string
}

// protocol names the protocol of the session for the message line.
func (sess *session) protocol() string {
	switch {
	case sess.listener.Protocol == "lmtp":
		return "LMTP"
	case sess.conn.Extended():
		return "ESMTP"
	}
	return "SMTP"
}

// logMessage writes the lines of an accepted message: the message, then
// each envelope.
func (sess *session) logMessage(msgid uint32) {
	var size int64
	if fi, err := sess.body.Stat(); err == nil {
		size = fi.Size()
	}
	log := sess.s.log
	log.Event("%s", messageLine(sess.info.ID, msgid, size, len(sess.rcpts), sess.protocol()))
	for _, le := range sess.logged {
		log.Event("%s", envelopeLine(sess.info.ID, le.id, sess.info.Sender, le.rcpt))
	}
}
