package server

import "time"

// Kinds of Event. The names are those of OpenSMTPD's report events
// (smtpd-filters(7), protocol 0.7), so that a filter layer can pass them
// on as they are.
const (
	// EventLinkConnect: a client connected; its addresses are the
	// Conn's.
	EventLinkConnect = "link-connect"
	// EventLinkGreeting: the greeting went out; Text is the host name.
	EventLinkGreeting = "link-greeting"
	// EventLinkIdentify: HELO or EHLO (Method) was accepted; Text is
	// the name the client gave.
	EventLinkIdentify = "link-identify"
	// EventLinkTLS: a TLS handshake completed; the state is the Conn's.
	EventLinkTLS = "link-tls"
	// EventLinkAuth: an authentication ended; Result is pass, fail or
	// error, Text the user name.
	EventLinkAuth = "link-auth"
	// EventLinkDisconnect: the session ended.
	EventLinkDisconnect = "link-disconnect"
	// EventTxBegin: MAIL was accepted and a transaction began.
	EventTxBegin = "tx-begin"
	// EventTxMail: the answer to MAIL; Text is the address, Result ok,
	// permfail or tempfail.
	EventTxMail = "tx-mail"
	// EventTxRcpt: the answer to RCPT; Text is the address, Result ok,
	// permfail or tempfail.
	EventTxRcpt = "tx-rcpt"
	// EventTxData: the answer to DATA or to the first BDAT; Result ok,
	// permfail or tempfail.
	EventTxData = "tx-data"
	// EventTxCommit: the message was accepted; Size is its length in
	// octets as received.
	EventTxCommit = "tx-commit"
	// EventTxRollback: the transaction ended without a message.
	EventTxRollback = "tx-rollback"
	// EventTxReset: the transaction is over, committed or not.
	EventTxReset = "tx-reset"
	// EventProtocolClient: a line from the client: a command, a SASL
	// response (masked), or the "." that ends DATA. Message lines are
	// not reported.
	EventProtocolClient = "protocol-client"
	// EventProtocolServer: a line of a reply.
	EventProtocolServer = "protocol-server"
	// EventTimeout: the client was silent too long, or the session
	// outlived its limit.
	EventTimeout = "timeout"
)

// Event is what the Server's Report callback sees: every line in and
// out, and the link and transaction events, in order, with the time.
type Event struct {
	Time time.Time
	Conn *Conn
	// Kind is one of the Event* constants.
	Kind string
	// Tx numbers the transactions of a session from 1, in tx-* events.
	Tx int
	// Line is the line, without CRLF, of protocol-client and
	// protocol-server events.
	Line string
	// Method is HELO or EHLO in link-identify events.
	Method string
	// Text is the identity, address or user name the event is about.
	Text string
	// Result is ok, permfail or tempfail in tx-mail, tx-rcpt and
	// tx-data events, and pass, fail or error in link-auth events.
	Result string
	// Size is the message size in tx-commit events.
	Size int64
}

// report passes an event to the Report callback, if there is one. It
// runs on the session's goroutine: the callback must not block long.
func (c *Conn) report(e Event) {
	if c.srv.Report == nil {
		return
	}
	e.Time = time.Now()
	e.Conn = c
	c.srv.Report(e)
}
