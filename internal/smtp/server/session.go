package server

import (
	"io"
	"net"
	"strconv"
	"strings"
)

// Session is the policy of one connection: the engine calls one method
// per phase of the dialogue, on the session's goroutine, after it has
// checked the command's syntax and sequence itself. A method that
// returns nil lets the command proceed with the engine's standard
// reply; a Reply refuses it with that reply instead (a 2xx Reply
// replaces the standard success text). Temporary failures inside the
// daemon are the Session's to answer with 4xx: they pass through as
// they are.
type Session interface {
	// Connect runs before the greeting. A 5xx reply replaces the
	// greeting with 554, after which only QUIT is accepted; a 4xx one
	// with 421, which ends the session (RFC 5321 §3.1, §4.3.2).
	Connect() *Reply
	// Helo runs at HELO (extended false) or EHLO with the client's
	// name; a 2xx reply is ignored, since the EHLO reply lists the
	// extensions.
	Helo(name string, extended bool) *Reply
	// StartTLS runs at STARTTLS, before the 220 that starts the
	// handshake: a refusal keeps the session in clear text. The
	// handshake's outcome is in Conn.TLS and the link-tls event.
	StartTLS() *Reply
	// Auth checks credentials the client gave by SASL PLAIN or LOGIN;
	// identity is the authorization identity of PLAIN, "" if none or
	// with LOGIN. nil gives 235 and Conn.AuthUser becomes user.
	Auth(mechanism, identity, user, password string) *Reply
	// Mail runs at MAIL FROM. from is "" for the null reverse-path;
	// it may lack a domain, as OpenSMTPD accepts it. A transaction
	// begins when Mail accepts; it ends with exactly one call of
	// Commit or Abort.
	Mail(from string, p MailParams) *Reply
	// Rcpt runs at RCPT TO. to may lack a domain: "Postmaster" in
	// any case (RFC 5321 §4.5.1), or a local user as OpenSMTPD
	// accepts it.
	Rcpt(to string, p RcptParams) *Reply
	// Data runs at DATA or at the first BDAT of a transaction, and
	// returns where the message goes, as received: dot-stuffing
	// undone, line endings as they are. A write error that is a
	// *Reply refuses the message with it, any other with 451 4.3.0.
	Data() (io.Writer, *Reply)
	// Commit runs when the message is complete and accepted by the
	// engine's checks; nil gives 250.
	Commit() *Reply
	// Abort ends a transaction that Commit will not end: RSET, a
	// refused message, STARTTLS, or the end of the connection.
	Abort()
	// Rset, Noop, Help and Quit run at these commands; they are
	// phases a filter may refuse.
	Rset() *Reply
	Noop() *Reply
	Help() *Reply
	Quit() *Reply
	// Close runs once the connection is closed.
	Close()
}

// DataLineSession is a Session that sees, and may rewrite, each line of
// each message as it streams in.
type DataLineSession interface {
	Session
	// DataLine gets a line of the message with its line ending, after
	// dot-stuffing is undone; the bytes it returns are stored in its
	// place (none to drop it, several lines to add some). A line
	// longer than MaxDataLine comes in pieces, only the last ending
	// in LF. line is valid only during the call. A non-2xx reply
	// refuses the message: the rest is read and dropped, then the
	// reply is sent.
	DataLine(line []byte) ([]byte, *Reply)
}

// serve runs the session.
func (c *Conn) serve() {
	defer c.close()
	if c.srv.ImplicitTLS && c.srv.TLSConfig != nil && !c.handshake() {
		return
	}
	c.sess = c.srv.NewSession(c)
	c.liner, _ = c.sess.(DataLineSession)
	c.report(Event{Kind: EventLinkConnect})
	if c.tls != nil {
		// the handshake came first, so that a refusal is readable
		c.report(Event{Kind: EventLinkTLS})
	}
	c.greet()
	for !c.quit {
		line, err := c.readCommand()
		switch {
		case err == errLineTooLong:
			// RFC 5321 §4.5.3.1.4, and §4.5.3.1.9's "500 Line too long"
			c.protocolError(500, codeSyntax, "Line too long")
			c.skipRest()
		case err != nil:
			c.endOnError(err)
			return
		default:
			c.command(line)
		}
	}
	c.bw.Flush()
}

// close ends the session: the transaction, if any, is aborted.
func (c *Conn) close() {
	c.nc.Close()
	if c.sess == nil {
		return
	}
	if c.tx != nil {
		c.abort()
	}
	c.report(Event{Kind: EventLinkDisconnect})
	c.sess.Close()
}

// greet sends the greeting, or the refusal the Session gives instead.
// Input the client sent early is simply read after it, as OpenSMTPD
// does: the engine reads nothing before the greeting is out.
func (c *Conn) greet() {
	if r := c.sess.Connect(); r != nil && !r.success() {
		r = r.normalize()
		if r.Code >= 500 {
			r.Code = 554
		} else {
			r.Code = 421
		}
		c.send(r)
		c.refused = true
		return
	}
	c.writeBare(220, c.srv.hostname()+" "+c.srv.greeting())
	c.report(Event{Kind: EventLinkGreeting, Text: c.srv.hostname()})
}

// protocolError answers a command the engine refuses as malformed or
// out of sequence. Past MaxErrors such errors, the answer is 421 and
// the session ends.
func (c *Conn) protocolError(code int, enhanced, text string) {
	c.errors++
	if c.errors > c.srv.maxErrors() {
		c.writeReply(421, codeTooManyErrors, c.srv.hostname()+" Too many errors, closing connection")
		return
	}
	c.writeReply(code, enhanced, text)
}

// refusedBy sends r if it refuses the command, and reports whether it
// did.
func (c *Conn) refusedBy(r *Reply) bool {
	if r != nil && !r.success() {
		c.send(r)
		return true
	}
	return false
}

// ok sends the success reply: the Session's own, or the standard one.
func (c *Conn) ok(r *Reply, code int, enhanced, text string) {
	if r != nil {
		c.send(r)
		return
	}
	c.writeReply(code, enhanced, text)
}

// command runs one command line.
func (c *Conn) command(line string) {
	verb, arg := splitCommand(line)
	if c.srv.Report != nil {
		c.reportCommand(verb, arg, line)
	}
	if !validLine(line) {
		c.protocolError(500, codeSyntax, "Invalid character in command")
		return
	}
	if c.refused && verb != "QUIT" {
		// RFC 5321 §3.1: after a 554 greeting, 503 to all but QUIT
		c.protocolError(503, codeInvalidCmd, "Session refused, only QUIT is accepted")
		return
	}
	switch verb {
	case "HELO", "EHLO":
		if c.srv.LMTP {
			// RFC 2033 §4.1: LHLO replaces them
			c.protocolError(500, codeInvalidCmd, "Command unrecognized: this is LMTP, say LHLO")
			return
		}
		c.hello(verb, arg)
	case "LHLO":
		if !c.srv.LMTP {
			c.protocolError(502, codeInvalidCmd, "Command not implemented")
			return
		}
		c.hello(verb, arg)
	case "MAIL":
		c.mail(arg)
	case "RCPT":
		c.rcpt(arg)
	case "DATA":
		c.data(arg)
	case "BDAT":
		c.bdat(arg)
	case "RSET":
		c.rset(arg)
	case "NOOP":
		// RFC 5321 §4.1.1.9: an argument is ignored
		if !c.refusedBy(c.sess.Noop()) {
			c.writeReply(250, codeOK, "Ok")
		}
	case "HELP":
		// RFC 5321 §4.1.1.8: HELP may name a topic; there is one
		// answer for all
		if r := c.sess.Help(); r != nil {
			c.send(r)
		} else {
			commands := "HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP STARTTLS AUTH"
			if c.etrnEnabled() {
				commands += " ETRN"
			}
			c.writeReply(214, codeOK, "This is "+c.srv.hostname()+" "+c.srv.greeting()+"\nCommands: "+commands+"\nEnd of HELP info")
		}
	case "QUIT":
		c.quitCommand(arg)
	case "VRFY", "EXPN":
		c.vrfy(verb, arg)
	case "STARTTLS":
		c.starttls(arg)
	case "AUTH":
		c.auth(arg)
	case "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "PATCH", "TRACE":
		// a browser made to talk to us (ALPACA, cross-protocol
		// attacks): nothing of the request is echoed, and the
		// session ends
		c.writeReply(500, codeInvalidCmd, "This is an SMTP server, not an HTTP one")
		c.quit = true
	case "ETRN":
		c.etrn(arg)
	case "TURN", "ATRN", "SEND", "SOML", "SAML", "VERB", "ONEX":
		// RFC 5321 §4.2.4: 502 for commands known but not
		// implemented, 500 for unknown ones
		c.protocolError(502, codeInvalidCmd, "Command not implemented")
	default:
		c.protocolError(500, codeInvalidCmd, "Command unrecognized")
	}
}

// reportCommand reports a command line, with the credentials of an AUTH
// initial response masked, as OpenSMTPD masks them.
// Fields are split at spaces and tabs alike: a tab must not carry a
// credential past the mask.
func (c *Conn) reportCommand(verb, arg, line string) {
	if f := strings.Fields(line); len(f) > 0 && strings.EqualFold(f[0], "AUTH") {
		line = "AUTH"
		if len(f) > 1 {
			line += " " + f[1]
		}
		if len(f) > 2 {
			line += " ********"
		}
	}
	c.report(Event{Kind: EventProtocolClient, Line: line})
}

// hello runs HELO and EHLO. A second one inside a transaction is
// refused as OpenSMTPD refuses it (RFC 5321 §4.1.4 lets the server
// decide); between transactions it is taken as RFC 5321 §4.1.4 says, a
// reset with a new name, because go-smtp's client (and so many programs)
// says EHLO again after every RSET. STARTTLS makes the client a
// stranger again, who must say EHLO anew (RFC 3207 §4.2).
func (c *Conn) hello(verb, arg string) {
	switch {
	case c.helo != "" && c.tx != nil:
		c.protocolError(503, codeInvalidCmd, "Already identified")
		return
	case arg == "":
		c.protocolError(501, codeBadArgs, verb+" requires a domain name")
		return
	case !validHelo(arg):
		c.protocolError(501, codeBadArgs, "Invalid domain name")
		return
	}
	extended := verb != "HELO"
	if c.refusedBy(c.sess.Helo(arg, extended)) {
		return
	}
	c.helo, c.extended = arg, extended
	c.report(Event{Kind: EventLinkIdentify, Method: verb, Text: arg})
	text := c.srv.hostname() + " Hello " + arg
	if a, ok := c.nc.RemoteAddr().(*net.TCPAddr); ok {
		text += " [" + a.IP.String() + "]"
	}
	text += ", pleased to meet you"
	if extended {
		text += "\n" + strings.Join(c.extensions(), "\n")
	}
	c.writeBare(250, text)
}

// extensions lists what the EHLO reply offers, in go-smtp's order,
// which clients and tests have seen so far.
func (c *Conn) extensions() []string {
	ext := []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING"}
	if c.srv.EnableBinaryMIME {
		ext = append(ext, "BINARYMIME")
	}
	ext = append(ext, "SMTPUTF8", "DSN", "SIZE "+strconv.FormatInt(c.srv.maxMessageBytes(), 10))
	if c.srv.TLSConfig != nil && c.tls == nil {
		ext = append(ext, "STARTTLS")
	}
	if c.srv.EnableRequireTLS && c.tls != nil {
		// RFC 8689: offered only under TLS
		ext = append(ext, "REQUIRETLS")
	}
	if m := c.srv.mechanisms(); len(m) > 0 && c.authUser == "" && c.authAllowed() {
		ext = append(ext, "AUTH "+strings.Join(m, " "))
	}
	if c.etrnEnabled() {
		// RFC 1985 §2: the keyword, without parameters
		ext = append(ext, "ETRN")
	}
	return append(ext, "HELP")
}

// mail runs MAIL FROM.
func (c *Conn) mail(arg string) {
	switch {
	case c.helo == "":
		c.protocolError(503, codeInvalidCmd, "Send HELO or EHLO first")
		return
	case c.tx != nil:
		c.protocolError(503, codeInvalidCmd, "Nested MAIL command")
		return
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		c.protocolError(501, codeBadArgs, "Syntax: MAIL FROM:<address>")
		return
	}
	from, rest, err := parsePath(rest, true)
	if err != nil {
		c.protocolError(553, codeSenderSyntax, "Sender address syntax error")
		return
	}
	params, err := parseParams(rest)
	var p MailParams
	if err == nil {
		p, err = parseMailParams(params, mailOptions{
			binaryMIME:    c.srv.EnableBinaryMIME,
			requireTLS:    c.srv.EnableRequireTLS && c.tls != nil,
			authenticated: c.authUser != "",
		})
	}
	switch {
	case err == errParamUnknown:
		c.protocolError(555, codeBadArgs, "Unsupported MAIL parameter")
		return
	case err != nil:
		c.protocolError(501, codeBadArgs, "Malformed MAIL parameter")
		return
	case !p.SMTPUTF8 && !isASCII(from):
		// RFC 6531 §3.5: 550 for the sender, 553 for a recipient
		c.protocolError(550, codeNonASCII, "Non-ASCII addresses not permitted for that sender without SMTPUTF8")
		return
	case p.Size > c.srv.maxMessageBytes():
		// RFC 1870 §6.1
		c.writeReply(552, codeTooBig, "Message size exceeds fixed maximum message size")
		return
	}
	n := c.txCount + 1
	r := c.sess.Mail(from, p)
	if c.refusedBy(r) {
		c.report(Event{Kind: EventTxMail, Tx: n, Text: from, Result: r.result()})
		return
	}
	c.txCount = n
	c.tx = &transaction{n: n, params: p}
	c.report(Event{Kind: EventTxBegin, Tx: n})
	c.report(Event{Kind: EventTxMail, Tx: n, Text: from, Result: "ok"})
	c.ok(r, 250, codeOK, "Ok")
}

// rcpt runs RCPT TO.
func (c *Conn) rcpt(arg string) {
	switch {
	case c.tx == nil:
		c.protocolError(503, codeInvalidCmd, "Need MAIL before RCPT")
		return
	case c.tx.body != nil:
		c.protocolError(503, codeInvalidCmd, "RCPT not allowed once BDAT has begun")
		return
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		c.protocolError(501, codeBadArgs, "Syntax: RCPT TO:<address>")
		return
	}
	if c.tx.rcpts >= c.srv.maxRecipients() {
		// RFC 5321 §4.5.3.1.10: a temporary failure, so that the
		// client sends the rest in another transaction
		c.writeReply(452, codeTooManyRcpts, "Too many recipients")
		return
	}
	utf8ok := c.tx.params.SMTPUTF8
	to, rest, err := parsePath(rest, utf8ok)
	switch {
	case err == errAddrNonASCII:
		c.protocolError(553, codeNonASCII, "Non-ASCII addresses not permitted for that recipient without SMTPUTF8")
		return
	case err != nil || to == "":
		c.protocolError(501, codeRcptSyntax, "Recipient address syntax error")
		return
	}
	params, err := parseParams(rest)
	var p RcptParams
	if err == nil {
		p, err = parseRcptParams(params, utf8ok)
	}
	switch {
	case err == errParamUnknown:
		c.protocolError(555, codeBadArgs, "Unsupported RCPT parameter")
		return
	case err != nil:
		c.protocolError(501, codeBadArgs, "Malformed RCPT parameter")
		return
	}
	r := c.sess.Rcpt(to, p)
	if c.refusedBy(r) {
		c.report(Event{Kind: EventTxRcpt, Tx: c.tx.n, Text: to, Result: r.result()})
		return
	}
	c.tx.rcpts++
	c.report(Event{Kind: EventTxRcpt, Tx: c.tx.n, Text: to, Result: "ok"})
	c.ok(r, 250, codeRcptOK, "Recipient ok")
}

// rset runs RSET, which RFC 5321 §4.1.1.5 allows at any time.
func (c *Conn) rset(arg string) {
	if arg != "" {
		c.protocolError(501, codeBadArgs, "RSET takes no argument")
		return
	}
	r := c.sess.Rset()
	if c.refusedBy(r) {
		return
	}
	if c.tx != nil {
		c.abort()
	}
	c.ok(r, 250, codeOK, "Reset state")
}

// abort ends the transaction without a message.
func (c *Conn) abort() {
	n := c.tx.n
	c.tx = nil
	c.sess.Abort()
	c.report(Event{Kind: EventTxRollback, Tx: n})
	c.report(Event{Kind: EventTxReset, Tx: n})
}

func (c *Conn) quitCommand(arg string) {
	if arg != "" {
		c.protocolError(501, codeBadArgs, "QUIT takes no argument")
		return
	}
	r := c.sess.Quit()
	if c.refusedBy(r) {
		return
	}
	c.ok(r, 221, codeOK, "Bye")
	c.quit = true
}

// vrfy answers VRFY and EXPN. Addresses are not disclosed; RFC 5321
// §7.3 then requires 252 rather than a code that could be read as a
// verification, where OpenSMTPD answers 500.
func (c *Conn) vrfy(verb, arg string) {
	if arg == "" {
		c.protocolError(501, codeBadArgs, verb+" requires an argument")
		return
	}
	c.writeReply(252, codeVrfy, "Cannot "+verb+" this address, but will accept mail for it and attempt delivery")
}
