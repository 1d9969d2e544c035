// Package proctable runs table programs: the tables of OpenSMTPD 7.6
// and later that are external processes speaking the line protocol of
// smtpd-tables(7), protocol 0.1, on their standard input and output.
// Programs written for OpenSMTPD (table-ldap, table-sql and the like of
// OpenSMTPD-extras after 7.6, or a script) run against it unchanged.
// The lookup process holds a *Table per such table; it is not
// chrooted, so the Table starts the program itself.
//
// The formats were checked against OpenSMTPD's table_proc.c (1.23) and
// smtpd-tables.7 (1.6). Every line ends with a single LF.
//
// # Handshake
//
// smtpd writes
//
//	config|smtpd-version|7.8.0
//	config|protocol|0.1
//	config|tablename|<name>
//	config|ready
//
// and the program answers with one or more register|<service> lines,
// then register|ready. A service is one of alias, domain, credentials,
// netaddr, userinfo, source, mailaddr, addrname, mailaddrmap,
// relayhost, string, regex, auth. Any other line, an unknown service,
// no service at all or the end of output fails the start, as they are
// fatal in OpenSMTPD.
//
// # Requests and answers
//
//	table|0.1|<sec>.<usec>|<name>|lookup|<service>|<id>|<key>
//	table|0.1|<sec>.<usec>|<name>|check|<service>|<id>|<key>
//	table|0.1|<sec>.<usec>|<name>|update|<id>
//
// The id is %08x. The key is the last field and may contain "|"; a key
// with CR, LF or NUL is refused without being sent (a CR or LF would
// let whoever chose the key, often an SMTP client, inject a request).
// The answers:
//
//	lookup-result|<id>|found|<value>   (the value is not empty)
//	lookup-result|<id>|not-found
//	check-result|<id>|found
//	check-result|<id>|not-found
//	update-result|<id>|ok
//	<op>-result|<id>|error|<message>   (or just "error")
//
// OpenSMTPD asks check where it only wants to know whether a key is in
// a set, and lookup where it needs the value. Lookup follows it per
// service: check for domain, netaddr, mailaddr (and string, regex,
// auth), lookup for alias, credentials, userinfo, addrname,
// mailaddrmap (and relayhost). source is only fetched there (round
// robin, which table.Backend has no call for); as table.Source is a
// set of addresses, it is a check here. fetch is never sent.
//
// # One request at a time
//
// smtpd-tables(7) calls the protocol asynchronous, but table_proc.c
// sends one request and reads its answer before the next, asserting
// the id; programs written against it may rely on that. So does a
// Table: concurrent calls take turns, one request on the wire at a
// time. A table program answers from memory or a local database, so
// the queue is short; a slow one is what Timeout is for.
//
// # Failures
//
// OpenSMTPD treats a malformed answer, and the end of the program, as
// fatal: the daemon exits. Here the program is expendable instead.
// When it exits, hangs past Timeout, or writes a line that is not the
// answer asked for (another op or id, an unknown result, a found
// lookup without value, a line longer than 64 KiB), that call returns
// an error wrapping ErrBroken (ErrTimeout, ErrProtocol) and the program
// is killed, with its process group, and started again in the
// background after a backoff: 1s, doubling up to 60s, back to 1s after
// a run of a minute. Until it is back every call fails at once with
// ErrRestarting. The caller turns both into a temporary failure.
//
// An answer "error" is no failure of the program: it said it cannot
// tell (its database is down). The call returns ErrFailure and the
// program keeps running, as in OpenSMTPD. Restarting it would also
// let anyone who can make a key fail (an SMTP client choosing a
// recipient) take the table down for everyone.
//
// The program's standard error goes to Options.Log, a line at a time.
package proctable
