package server

import (
	"strconv"
	"strings"
)

// ETRN is remote message queue starting (RFC 1985): a client asks the
// server to start sending the mail it holds for a node, over a new
// connection of the server's making. The engine parses the command and
// checks when it may come; the Session decides who may ask and starts
// the queue.

// ETRNNode is the argument of ETRN (RFC 1985 §5): a domain, with the
// option character "@" also the domains below it, with "#" a queue name.
type ETRNNode struct {
	// Name is the domain, or the queue name, without the option
	// character, as the client gave it.
	Name string
	// Subdomains is set by "@": the domain and every domain below it
	// (RFC 1985 §5).
	Subdomains bool
	// Queue is set by "#": Name names a queue of the server's own,
	// rather than a domain (RFC 1985 §5).
	Queue bool
}

// String is the node as the client wrote it, for replies and logs.
func (n ETRNNode) String() string {
	switch {
	case n.Queue:
		return "#" + n.Name
	case n.Subdomains:
		return "@" + n.Name
	}
	return n.Name
}

// ETRNSession is a Session that serves ETRN, on a Server that offers it
// (EnableETRN).
type ETRNSession interface {
	Session
	// ETRN runs at ETRN, once the engine has checked its syntax and
	// that no transaction is open. It returns how many messages
	// waiting for the node it started to send: none gives 251, some
	// 253 (RFC 1985 §5). A Reply refuses instead: ETRNUnable for the
	// daemon's own trouble (458), ETRNNotAllowed for a client or a
	// node that may not (459); a 2xx Reply replaces the standard one.
	ETRN(node ETRNNode) (messages int, r *Reply)
}

// ETRNUnable is the reply of RFC 1985 §5 to an ETRN the server cannot
// serve now: the daemon's trouble, temporary, never a 5xx.
func ETRNUnable(node ETRNNode) *Reply {
	return &Reply{Code: 458, Enhanced: EnhancedCode{4, 3, 0}, Text: "Unable to queue messages for node " + node.String()}
}

// ETRNNotAllowed is the reply of RFC 1985 §5 to an ETRN for a node the
// client may not ask for, or that the server does not serve, and why.
func ETRNNotAllowed(node ETRNNode, reason string) *Reply {
	return &Reply{Code: 459, Enhanced: EnhancedCode{4, 7, 1}, Text: "Node " + node.String() + " not allowed: " + reason}
}

// etrnEnabled reports whether the session is offered ETRN: the server
// enables it and the policy serves it.
func (c *Conn) etrnEnabled() bool {
	_, ok := c.sess.(ETRNSession)
	return c.srv.EnableETRN && ok && !c.srv.LMTP
}

// etrn runs ETRN. The RFC 1985 §5 sequence: it may come at any time
// once the session is established, but not inside a transaction (from
// MAIL to the end of the message); the engine asks for HELO or EHLO
// first, since the extension is one the EHLO reply offers (§2).
func (c *Conn) etrn(arg string) {
	switch {
	case !c.etrnEnabled():
		// RFC 5321 §4.2.4: known, not implemented here
		c.protocolError(502, codeInvalidCmd, "Command not implemented")
		return
	case c.helo == "":
		c.protocolError(503, codeInvalidCmd, "Send HELO or EHLO first")
		return
	case c.tx != nil:
		c.protocolError(503, codeInvalidCmd, "ETRN not allowed during a mail transaction")
		return
	}
	node, ok := parseETRN(arg)
	if !ok {
		// RFC 1985 §5: 501, syntax error in parameters
		c.protocolError(501, codeBadArgs, "Syntax: ETRN [@]domain or ETRN #queue")
		return
	}
	n, r := c.sess.(ETRNSession).ETRN(node)
	switch {
	case r != nil:
		c.send(r)
	case n <= 0:
		c.writeReply(251, codeOK, "OK, no messages waiting for node "+node.String())
	default:
		c.writeReply(253, codeOK, "OK, "+strconv.Itoa(n)+" pending messages for node "+node.String()+" started")
	}
}

// parseETRN parses the argument of ETRN: [option-character] node-name
// (RFC 1985 §5). A domain is a domain name or an address literal as
// RFC 5321 §4.1.2 has them, in ASCII (RFC 1985 predates
// internationalized names); "@" takes a domain name, not a literal; a
// queue name after "#" is letters, digits and "-", "_", ".". One
// argument, nothing after it.
func parseETRN(arg string) (ETRNNode, bool) {
	if arg == "" || strings.ContainsAny(arg, " \t") {
		return ETRNNode{}, false
	}
	var n ETRNNode
	switch arg[0] {
	case '#':
		n.Queue, n.Name = true, arg[1:]
		return n, validQueueName(n.Name)
	case '@':
		n.Subdomains, n.Name = true, arg[1:]
		if strings.HasPrefix(n.Name, "[") {
			return ETRNNode{}, false
		}
	default:
		n.Name = arg
	}
	return n, validDomain(n.Name, false, false)
}

// validQueueName checks a queue name: what the server could name a
// queue by, never what could inject anything into a reply or a log.
func validQueueName(s string) bool {
	if s == "" || len(s) > maxLabel {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}
