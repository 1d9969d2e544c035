// Package server is the SMTP server engine of the smtp process: the
// command parser, the state machine, the reply writer, the DATA and
// BDAT readers, STARTTLS, AUTH PLAIN and LOGIN, limits and timeouts.
//
// The daemon's policy plugs in as a Session, one per connection, with
// one method per phase of the dialogue (connect, helo, starttls, auth,
// mail, rcpt, data, each data line, commit, rset, noop, help, quit),
// the phases of OpenSMTPD's filter protocol; a Report callback sees
// every line in and out and the link and transaction events, so that a
// filter layer can sit on the engine.
//
// The dialogue follows RFC 5321 and the extensions it offers
// (PIPELINING RFC 2920, 8BITMIME RFC 6152, SIZE RFC 1870, DSN RFC 3461,
// ENHANCEDSTATUSCODES RFC 2034, CHUNKING and BINARYMIME RFC 3030,
// SMTPUTF8 RFC 6531, STARTTLS RFC 3207, AUTH RFC 4954, REQUIRETLS RFC
// 8689, and ETRN RFC 1985 where the policy serves it). Where the RFCs leave room it behaves as OpenSMTPD 7.x, where
// OpenSMTPD breaks an RFC requirement it follows the RFC. No property of
// the client's input is answered with a temporary failure: 4xx replies
// come from the Session (the daemon's own troubles), from limits the
// RFCs make temporary (too many recipients), and from 421 at the end of
// a session.
package server
