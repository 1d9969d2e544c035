package server

import "crypto/tls"

// starttls runs STARTTLS (RFC 3207).
func (c *Conn) starttls(arg string) {
	switch {
	case arg != "":
		c.protocolError(501, codeBadArgs, "STARTTLS takes no argument")
		return
	case c.srv.TLSConfig == nil:
		c.protocolError(502, codeInvalidCmd, "STARTTLS not supported")
		return
	case c.tls != nil:
		c.protocolError(503, codeInvalidCmd, "Already under TLS")
		return
	case c.helo == "":
		c.protocolError(503, codeInvalidCmd, "Send EHLO first")
		return
	case c.tx != nil:
		c.protocolError(503, codeInvalidCmd, "STARTTLS not allowed during a mail transaction")
		return
	}
	if c.refusedBy(c.sess.StartTLS()) {
		return
	}
	c.writeReply(220, codeOK, "Ready to start TLS")
	if c.bw.Flush() != nil || !c.handshake() {
		c.quit = true
		return
	}
	// RFC 3207 §4.2: what the client said in clear text is forgotten
	c.helo, c.extended, c.authUser = "", false, ""
	c.report(Event{Kind: EventLinkTLS})
}

// handshake runs the server side of a TLS handshake. Whatever the
// client sent in clear text after STARTTLS and before the handshake is
// dropped with the read buffer: taken as commands under TLS, it would
// let a man in the middle inject them (CVE-2011-0411).
func (c *Conn) handshake() bool {
	tc := tls.Server(c.nc, c.srv.TLSConfig)
	if c.nc.SetDeadline(c.deadline()) != nil || tc.Handshake() != nil {
		return false
	}
	st := tc.ConnectionState()
	c.tls, c.rw = &st, tc
	c.br.Reset(connReader{c})
	return true
}
