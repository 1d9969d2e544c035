package server

import (
	"bytes"
	"encoding/base64"
	"strings"
)

// SASL mechanisms the engine implements.
const (
	AuthPlain = "PLAIN"
	AuthLogin = "LOGIN"
)

// mechanisms lists the configured mechanisms the engine implements.
func (s *Server) mechanisms() []string {
	var m []string
	for _, name := range s.AuthMechanisms {
		name = strings.ToUpper(name)
		if (name == AuthPlain || name == AuthLogin) && !contains(m, name) {
			m = append(m, name)
		}
	}
	return m
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// authAllowed reports whether passwords may cross this connection.
func (c *Conn) authAllowed() bool {
	return c.tls != nil || c.srv.AllowInsecureAuth
}

// auth runs AUTH (RFC 4954 §4).
func (c *Conn) auth(arg string) {
	mechs := c.srv.mechanisms()
	switch {
	case len(mechs) == 0:
		c.protocolError(502, codeInvalidCmd, "AUTH not supported")
		return
	case c.helo == "":
		c.protocolError(503, codeInvalidCmd, "Send EHLO first")
		return
	case c.tx != nil:
		c.protocolError(503, codeInvalidCmd, "AUTH not allowed during a mail transaction")
		return
	case c.authUser != "":
		c.protocolError(503, codeInvalidCmd, "Already authenticated")
		return
	case arg == "":
		c.protocolError(501, codeBadArgs, "Syntax: AUTH mechanism [initial-response]")
		return
	}
	mech, initial, hasInitial := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	switch {
	case !contains(mechs, mech):
		c.protocolError(504, codeBadArgs, "Unrecognized authentication type")
		return
	case !c.authAllowed():
		c.protocolError(538, codeNeedTLS, "Encryption required for requested authentication mechanism")
		return
	}
	var identity, user, password string
	var ok bool
	if mech == AuthPlain {
		identity, user, password, ok = c.authPlain(initial, hasInitial)
	} else {
		user, password, ok = c.authLogin(initial, hasInitial)
	}
	if !ok {
		return
	}
	r := c.sess.Auth(mech, identity, user, password)
	if c.refusedBy(r) {
		result := "fail"
		if r.Code < 500 {
			result = "error"
		}
		c.report(Event{Kind: EventLinkAuth, Text: user, Result: result})
		return
	}
	c.authUser = user
	c.report(Event{Kind: EventLinkAuth, Text: user, Result: "pass"})
	c.ok(r, 235, codeAuthOK, "Authentication successful")
}

// authPlain runs the PLAIN exchange (RFC 4616): authzid NUL authcid
// NUL passwd.
func (c *Conn) authPlain(initial string, hasInitial bool) (identity, user, password string, ok bool) {
	var resp []byte
	if hasInitial {
		resp, ok = c.decodeSASL(initial)
	} else {
		resp, ok = c.saslExchange("")
	}
	if !ok {
		return "", "", "", false
	}
	parts := bytes.Split(resp, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 || len(parts[2]) == 0 || !saslText(resp) {
		c.protocolError(501, codeSyntax, "Malformed PLAIN response")
		return "", "", "", false
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), true
}

// authLogin runs the LOGIN exchange (draft-murchison-sasl-login): the
// user name, which may come with AUTH, then the password, each the
// answer to a challenge.
func (c *Conn) authLogin(initial string, hasInitial bool) (user, password string, ok bool) {
	var u, p []byte
	if hasInitial {
		u, ok = c.decodeSASL(initial)
	} else {
		u, ok = c.saslExchange("VXNlcm5hbWU6") // "Username:"
	}
	if ok {
		p, ok = c.saslExchange("UGFzc3dvcmQ6") // "Password:"
	}
	if !ok {
		return "", "", false
	}
	if len(u) == 0 || len(p) == 0 || !saslText(u) || !saslText(p) || bytes.IndexByte(u, 0) >= 0 || bytes.IndexByte(p, 0) >= 0 {
		c.protocolError(501, codeSyntax, "Malformed LOGIN response")
		return "", "", false
	}
	return string(u), string(p), true
}

// saslText reports whether a decoded response is free of line breaks,
// which have no business in a user name or a password and would reach
// logs and lookups.
func saslText(b []byte) bool {
	return bytes.IndexByte(b, '\r') < 0 && bytes.IndexByte(b, '\n') < 0
}

// saslExchange sends a challenge and reads the client's response.
func (c *Conn) saslExchange(challenge string) ([]byte, bool) {
	c.writeBare(334, challenge)
	line, err := c.readLine(maxAuthLine)
	switch {
	case err == errLineTooLong:
		// RFC 4954 §4
		c.protocolError(500, codeAuthLine, "Authentication exchange line is too long")
		c.skipRest()
		return nil, false
	case err != nil:
		c.endOnError(err)
		c.quit = true
		return nil, false
	}
	c.report(Event{Kind: EventProtocolClient, Line: "********"})
	return c.decodeSASL(line)
}

// decodeSASL decodes a response: base64, "=" for an empty one, "*" to
// cancel (RFC 4954 §4).
func (c *Conn) decodeSASL(s string) ([]byte, bool) {
	switch s {
	case "*":
		c.writeReply(501, codeOther, "Authentication cancelled")
		return nil, false
	case "=":
		return []byte{}, true
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		c.protocolError(501, codeSyntax, "Cannot decode base64 response")
		return nil, false
	}
	return b, true
}
