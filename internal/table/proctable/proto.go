package proctable

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"smtpd/internal/table"
)

// ProtocolVersion is the table protocol spoken (config|protocol|0.1).
const ProtocolVersion = "0.1"

// maxLine bounds a line either way. OpenSMTPD's getline has no bound;
// a program that writes more without a newline is broken, and an alias
// list of 64 KiB is already absurd.
const maxLine = 64 << 10

// The operations of a request (smtpd-tables(7)). fetch is OpenSMTPD's
// round robin over source and relayhost tables; table.Backend has no
// such call, so we never send it.
const (
	opLookup = "lookup"
	opCheck  = "check"
	opUpdate = "update"
)

// The service names are table_service_name's in OpenSMTPD's table.c.
// The functions below are switch statements rather than maps so that
// the package holds no mutable state.

// serviceBit returns the bit of a service name a program may register.
// OpenSMTPD accepts every K_* kind but K_NONE, including the ones
// table.Backend's callers do not ask (string, regex, auth, relayhost):
// a program written for OpenSMTPD registers them and must still start.
func serviceBit(name string) (uint16, bool) {
	i := 0
	switch name {
	case "alias":
		i = 0
	case "domain":
		i = 1
	case "credentials":
		i = 2
	case "netaddr":
		i = 3
	case "userinfo":
		i = 4
	case "source":
		i = 5
	case "mailaddr":
		i = 6
	case "addrname":
		i = 7
	case "mailaddrmap":
		i = 8
	case "relayhost":
		i = 9
	case "string":
		i = 10
	case "regex":
		i = 11
	case "auth":
		i = 12
	default:
		return 0, false
	}
	return 1 << i, true
}

// allServices lists the service names in the order of serviceBit.
func allServices() []string {
	return []string{"alias", "domain", "credentials", "netaddr", "userinfo", "source",
		"mailaddr", "addrname", "mailaddrmap", "relayhost", "string", "regex", "auth"}
}

// serviceOp says which request asks a service. OpenSMTPD sends check
// (table_match, no value wanted) where smtpd only asks whether a key is
// in a set: domain, netaddr, mailaddr, string and regex in ruleset.c and
// lka_filter.c, auth in lka.c. It sends lookup where it needs the
// value: alias, credentials, userinfo, addrname, mailaddrmap and
// relayhost. source is only ever fetched there; table.Service documents
// it as a set of addresses, so it is a check here.
func serviceOp(s table.Service) (string, bool) {
	switch s {
	case table.Domain, table.Netaddr, table.Source, table.Mailaddr, "string", "regex", "auth":
		return opCheck, true
	case table.Alias, table.Credentials, table.Userinfo, table.Addrname, table.Mailaddrmap, "relayhost":
		return opLookup, true
	}
	return "", false
}

// validField reports whether s may be a field other than the last of a
// line: no separator, no line end, no NUL.
func validField(s string) bool {
	return s != "" && !strings.ContainsAny(s, "|\r\n\x00")
}

// validKey reports whether s may be the last field of a request. A "|"
// is a plain character there (smtpd-tables(7)); a CR or LF would end
// the line early and let the key's author inject a request, and a NUL
// cannot pass through OpenSMTPD's C strings.
func validKey(s string) bool {
	return !strings.ContainsAny(s, "\r\n\x00")
}

// appendTime appends "<sec>.<usec, 6 digits>" as table_proc_send does.
func appendTime(b []byte, t time.Time) []byte {
	b = strconv.AppendInt(b, t.Unix(), 10)
	b = append(b, '.')
	us := strconv.Itoa(t.Nanosecond() / 1000)
	b = append(b, "000000"[len(us):]...)
	return append(b, us...)
}

// formatID is the request id, %08x as table_proc_nextid.
func formatID(id uint32) string {
	s := strconv.FormatUint(uint64(id), 16)
	return "00000000"[len(s):] + s
}

// appendRequest appends one request line with its newline:
//
//	table|0.1|<time>|<table>|<op>|<service>|<id>|<key>  (lookup, check)
//	table|0.1|<time>|<table>|update|<id>
func appendRequest(b []byte, t time.Time, tableName, op, service, id, key string) []byte {
	b = append(b, "table|"+ProtocolVersion+"|"...)
	b = appendTime(b, t)
	b = append(b, '|')
	b = append(b, tableName...)
	b = append(b, '|')
	b = append(b, op...)
	b = append(b, '|')
	if op != opUpdate {
		b = append(b, service...)
		b = append(b, '|')
		b = append(b, id...)
		b = append(b, '|')
		b = append(b, key...)
	} else {
		b = append(b, id...)
	}
	return append(b, '\n')
}

// appendHandshake appends the config lines of table_proc_open.
func appendHandshake(b []byte, version, tableName string) []byte {
	b = append(b, "config|smtpd-version|"...)
	b = append(b, version...)
	b = append(b, "\nconfig|protocol|"+ProtocolVersion+"\nconfig|tablename|"...)
	b = append(b, tableName...)
	return append(b, "\nconfig|ready\n"...)
}

// parseRegister parses one line of the program before register|ready:
// the bit of the service it registers, or ready. Anything else is an
// error, as it is fatal in table_proc_open.
func parseRegister(line string) (bit uint16, ready bool, err error) {
	name, ok := strings.CutPrefix(line, "register|")
	if !ok {
		return 0, false, errors.New("not a register line before register|ready")
	}
	if name == "ready" {
		return 0, true, nil
	}
	bit, ok = serviceBit(name)
	if !ok {
		return 0, false, errors.New("unknown service")
	}
	return bit, false, nil
}

// replyKind is what an answer says.
type replyKind int

const (
	replyFound    replyKind = iota + 1 // lookup, check: found (value for lookup)
	replyNotFound                      // lookup, check: not-found
	replyOK                            // update: ok
	replyError                         // any: error, with an optional message
)

// reply is one parsed answer.
type reply struct {
	kind replyKind
	// value of a found lookup (never empty), or the message of an
	// error (may be empty: "error" alone is valid)
	text string
}

// parseReply parses the program's answer to request op with id, a line
// without its newline:
//
//	lookup-result|<id>|found|<value>   value not empty, "|" allowed
//	lookup-result|<id>|not-found
//	check-result|<id>|found            "found|<anything>" also, ignored
//	check-result|<id>|not-found
//	update-result|<id>|ok
//	<op>-result|<id>|error[|<message>]
//
// As in table_proc_recv any other line is an error, which OpenSMTPD
// makes fatal: a wrong op or id means the program answered something
// else than what was asked. We are strict where table_proc.c only
// compares prefixes ("foundx", "errorx"): such a line comes from a
// broken program, and guessing what it meant would hide that.
func parseReply(line, op, id string) (reply, error) {
	rest, ok := strings.CutPrefix(line, op+"-result|")
	if !ok {
		return reply{}, errors.New("not a " + op + "-result line")
	}
	rest, ok = strings.CutPrefix(rest, id)
	if !ok || (rest != "" && rest[0] != '|') {
		return reply{}, errors.New("not the id of the request " + id)
	}
	if rest == "" {
		return reply{}, errors.New("no result")
	}
	rest = rest[1:]
	if rest == "error" {
		return reply{kind: replyError}, nil
	}
	if msg, ok := strings.CutPrefix(rest, "error|"); ok {
		return reply{kind: replyError, text: msg}, nil
	}
	switch op {
	case opUpdate:
		if rest == "ok" {
			return reply{kind: replyOK}, nil
		}
	case opCheck, opLookup:
		if rest == "not-found" {
			return reply{kind: replyNotFound}, nil
		}
		if op == opCheck && rest == "found" {
			return reply{kind: replyFound}, nil
		}
		if v, ok := strings.CutPrefix(rest, "found|"); ok {
			if op == opCheck {
				return reply{kind: replyFound}, nil
			}
			if v == "" {
				// table_proc_lookup: "empty response" is fatal
				return reply{}, errors.New("found with an empty value")
			}
			return reply{kind: replyFound, text: v}, nil
		}
	}
	return reply{}, errors.New("unknown result")
}
