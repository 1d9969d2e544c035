// Package procfilter is the daemon's side of the filter protocol 0.7 of
// OpenSMTPD 7.4 and later (smtpd-filters(7)): the line protocol smtpd
// speaks with a filter process over its stdin and stdout. The mfa
// process holds one *Conn per running filter and calls it from every
// session goroutine. Filters written for OpenSMTPD (filter-senderscore,
// filter-dkimsign, filter-rspamd, ...) run against it unchanged.
//
// The formats below were checked against OpenSMTPD 7.8.0p1
// (usr.sbin/smtpd/lka_filter.c, smtp_session.c, smtpd-filters.7, to.c,
// util.c, iobuf.c) and against the Debian builds of filter-senderscore
// and filter-dkimsign. Every line ends with a single LF; nothing strips
// a CR. A "|" is a separator everywhere except in the last field of a
// line, which takes the rest of the line as is.
//
// # Handshake
//
// smtpd writes:
//
//	config|smtpd-version|7.8.0
//	config|protocol|0.7
//	config|smtp-session-timeout|300
//	config|subsystem|smtp-in
//	config|admd|<admd, or the host name>
//	config|ready
//
// The filter answers with any number of
//
//	register|report|smtp-in|<event>     (or * for every event)
//	register|report|smtp-out|<event>    (accepted; we never send smtp-out)
//	register|filter|smtp-in|<phase>     (smtp-in only: smtp-out is fatal)
//
// and then register|ready. Before register|ready any other line, an
// unknown event or phase, or an unknown subsystem is fatal in smtpd;
// here it fails Start. The phases smtpd knows are connect, helo, ehlo,
// starttls, auth, mail-from, rcpt-to, data, data-line, commit, and the
// undocumented rset, quit, noop, help and wiz (filter-senderscore
// registers quit). smtpd never asks help and wiz. The events are
// link-connect, link-disconnect, link-greeting, link-identify, link-tls,
// link-auth, tx-reset, tx-begin, tx-mail, tx-rcpt, tx-envelope, tx-data,
// tx-commit, tx-rollback, protocol-client, protocol-server,
// filter-report, filter-response and timeout.
//
// # Reports (smtpd to filter, no answer)
//
//	report|0.7|<sec>.<usec, 6 digits>|smtp-in|<event>|<sid %016x>|<params>
//
// Events without parameters (link-disconnect, timeout) end after the
// session id, with no "|". The parameters, from lka_report_smtp_*:
//
//	link-connect     rdns|fcrdns|src|dest   fcrdns is pass, fail or error; rdns is
//	                                        "<unknown>" without PTR (the man page says
//	                                        empty); src and dest are
//	                                        a.b.c.d:port, [v6]:port, or unix:<socket>
//	link-disconnect  (none)
//	link-greeting    hostname
//	link-identify    method|identity        method HELO or EHLO
//	link-tls         version:cipher:bits
//	link-auth        result|username        pass, fail or error (0.6 had them swapped)
//	tx-reset         msgid                  %08x, always present in practice
//	tx-begin         msgid
//	tx-mail          msgid|result|address   ok, permfail or tempfail; address without <>
//	tx-rcpt          msgid|result|address
//	tx-envelope      msgid|evpid            evpid %016x
//	tx-data          msgid|result
//	tx-commit        msgid|size
//	tx-rollback      msgid
//	protocol-client  command                the raw line; AUTH secrets shown as ********
//	protocol-server  response
//	filter-report    builtin or proc|name|message
//	filter-response  phase|response[|param] phase "connected" for connect, "tls" for starttls
//	timeout          (none)
//
// smtpd sends an event only to filters that registered it, and only for
// sessions whose listener uses them.
//
// # Filter requests (smtpd to filter, one answer each)
//
//	filter|0.7|<sec>.<usec>|smtp-in|<phase>|<sid %016x>|<token %016x>|<params>
//
// The parameters per phase (smtp_session.c, filter_protocol_query):
//
//	connect     rdns|src   src: a.b.c.d, [v6] or "local", without port
//	helo, ehlo  the name given
//	auth        the whole AUTH argument, e.g. "PLAIN <base64>": mechanism and
//	            initial response
//	mail-from   the address without <> and without ESMTP parameters ("" for <>)
//	rcpt-to     the same
//	starttls, data, commit, rset, quit, noop
//	            none, but the line still ends with "|" and an empty field (the
//	            man page promises a tls-string for starttls; smtpd sends "")
//
// data-line is different: smtpd sends the message as a stream of
// requests with one token, each carrying one line of the DATA input as
// the client sent it, that is dot-stuffed and without its CRLF (smtpd
// puts its own Received header first), and ends the stream with a line
// that is a single ".". Lines are sent as they arrive, answers or not.
//
// # Answers (filter to smtpd)
//
//	filter-result|<sid>|<token>|proceed
//	filter-result|<sid>|<token>|junk
//	filter-result|<sid>|<token>|reject|<reply>
//	filter-result|<sid>|<token>|disconnect|<reply>
//	filter-result|<sid>|<token>|rewrite|<parameter>
//	filter-result|<sid>|<token>|report|<text>
//	filter-dataline|<sid>|<token>|<line>
//	report|<sec>.<usec>|smtp-in|<sid>|<text>
//
// proceed and junk take no parameter; the others need one (it may be
// empty and may contain "|"). junk marks the session, or the
// transaction if one is open, as spam (X-Spam: Yes); at commit it is
// fatal, the message being written already. A reply must be valid for
// smtpd's valid_smtp_response ("Ddd " then text, at least five
// characters) and start with 4 or 5; smtpd replaces a bad one with "421
// Internal server error" and disconnects, here it breaks the filter. A
// reject with 421 is a disconnect. smtpd sends the reply verbatim.
//
// rewrite replaces the command's argument, and smtpd checks it again as
// if the client had sent it: a new name for helo and ehlo, a new
// "<address> [params]" for mail-from and rcpt-to (note the brackets,
// absent from the request), a new AUTH argument; for connect it is
// ignored; for the phases that take no argument (starttls, data, rset,
// quit, commit) the check fails and the client gets a 500 or 501 about
// arguments; noop accepts anything. report proceeds and shows
// the text in the filter-response event (smtpd passes that text to the
// command as its argument, which looks like a bug: callers should
// proceed with the original argument).
//
// For data-line the filter answers with filter-dataline lines, any
// number, when it likes (per line, or all at the end as dkimsign does),
// dot-stuffed like its input, and ends with a single ".". A
// filter-result during a data-line stream, or a filter-dataline outside
// one, is fatal.
//
// A report line is a filter's own report (since OpenSMTPD 6.6): smtpd
// turns it into a filter-report event. Note that it has no protocol
// version, and that lka_report_proc in 7.8.0p1 reads the session id
// from the wrong place (the microseconds), so such reports never reach
// anyone there. We parse the session id from its field.
//
// smtpd treats every malformed line as fatal (fatalx, the daemon
// exits); a filter that exits makes it shut down too. An answer for a
// session that is gone is ignored there. Here a Conn breaks instead
// (Done, Err; the caller restarts the filter) on: end of output, a line
// that does not parse, a line longer than 65 KiB, an answer with a
// token no request is waiting for, a filter-result during data-line or
// a filter-dataline outside it, an early ".", an invalid reply, junk at
// commit, a register line after register|ready, and a request left
// unanswered for Timeout. Requests stay registered until answered even
// when the caller gives up, so a late answer is never mistaken for a
// bogus one.
//
// # What we send
//
// CR, LF and NUL in any field become spaces, so that a client cannot
// end a line early. A "|" in any parameter but the last is refused.
package procfilter
