package procfilter

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ProtocolVersion is the filter protocol spoken (config|protocol|0.7).
const ProtocolVersion = "0.7"

const (
	// maxDataLine bounds one message line (without CRLF) handed to a
	// filter: OpenSMTPD's SMTP_LINE_MAX is 65535, so no legitimate line
	// is longer, and a longer one would kill filters built on
	// bufio.Scanner's default 64 KiB token (filter-senderscore).
	maxDataLine = 64 << 10
	// maxLine bounds any protocol line either way: a data line plus the
	// fields in front of it. A filter that writes more without a
	// newline is broken, not a reason to grow a buffer forever.
	maxLine = maxDataLine + 1024
)

// Errors that break a connection. Every error of a broken Conn wraps
// ErrBroken; a timeout also wraps ErrTimeout (which itself wraps
// ErrBroken), so callers can test either with errors.Is.
var (
	ErrBroken  = errors.New("filter broken")
	ErrTimeout = fmt.Errorf("filter timed out: %w", ErrBroken)
)

// The phase and event names below are the tables of lka_filter.c
// (filter_execs, smtp_events). They are switch statements rather than
// maps so that the package holds no mutable state.

// phaseBit returns the bit of a filter phase, in the order of
// allPhases.
func phaseBit(name string) (uint32, bool) {
	i := 0
	switch name {
	case "connect":
		i = 0
	case "helo":
		i = 1
	case "ehlo":
		i = 2
	case "starttls":
		i = 3
	case "auth":
		i = 4
	case "mail-from":
		i = 5
	case "rcpt-to":
		i = 6
	case "data":
		i = 7
	case "data-line":
		i = 8
	case "commit":
		i = 9
	case "rset":
		i = 10
	case "quit":
		i = 11
	case "noop":
		i = 12
	case "help":
		i = 13
	case "wiz":
		i = 14
	default:
		return 0, false
	}
	return 1 << i, true
}

// allPhases lists the filter phases in the order of phaseBit.
func allPhases() []string {
	return []string{"connect", "helo", "ehlo", "starttls", "auth", "mail-from",
		"rcpt-to", "data", "data-line", "commit", "rset", "quit", "noop", "help", "wiz"}
}

// phaseParams says how many parameters a filter request of the phase
// carries: connect has rdns and source; helo, ehlo, auth, mail-from and
// rcpt-to have one; the others have none, but OpenSMTPD still ends their
// line with an empty field ("...|<token>|"), so zero or one (empty) is
// accepted for them.
func phaseParams(phase string) (min, max int) {
	switch phase {
	case "connect":
		return 2, 2
	case "helo", "ehlo", "auth", "mail-from", "rcpt-to":
		return 1, 1
	default:
		return 0, 1
	}
}

// eventInfo returns the bit of a report event and how many parameters
// OpenSMTPD's lka_report_smtp_* functions print for it.
func eventInfo(name string) (bit uint32, min, max int, ok bool) {
	i := 0
	switch name {
	case "link-connect": // rdns|fcrdns|src|dest
		i, min, max = 0, 4, 4
	case "link-disconnect":
		i, min, max = 1, 0, 0
	case "link-greeting": // hostname
		i, min, max = 2, 1, 1
	case "link-identify": // method|identity
		i, min, max = 3, 2, 2
	case "link-tls": // version:cipher:bits
		i, min, max = 4, 1, 1
	case "link-auth": // result|username
		i, min, max = 5, 2, 2
	case "tx-reset": // msgid
		i, min, max = 6, 1, 1
	case "tx-begin": // msgid
		i, min, max = 7, 1, 1
	case "tx-mail": // msgid|result|address
		i, min, max = 8, 3, 3
	case "tx-rcpt": // msgid|result|address
		i, min, max = 9, 3, 3
	case "tx-envelope": // msgid|evpid
		i, min, max = 10, 2, 2
	case "tx-data": // msgid|result
		i, min, max = 11, 2, 2
	case "tx-commit": // msgid|size
		i, min, max = 12, 2, 2
	case "tx-rollback": // msgid
		i, min, max = 13, 1, 1
	case "protocol-client": // command
		i, min, max = 14, 1, 1
	case "protocol-server": // response
		i, min, max = 15, 1, 1
	case "filter-report": // builtin or proc|name|message
		i, min, max = 16, 3, 3
	case "filter-response": // phase|response[|param]
		i, min, max = 17, 2, 3
	case "timeout":
		i, min, max = 18, 0, 0
	default:
		return 0, 0, 0, false
	}
	return 1 << i, min, max, true
}

// allEvents is the bit set of every report event (register|report|...|*).
const allEvents = 1<<19 - 1

// msgKind is what a line from the filter is.
type msgKind int

const (
	msgRegisterReady msgKind = iota + 1
	msgRegisterReport
	msgRegisterFilter
	msgResult
	msgDataline
	msgReport
)

// message is one parsed line from a filter.
type message struct {
	kind msgKind
	// register|report and register|filter: the subsystem (smtp-in or
	// smtp-out) and the event ("*" for all) or phase.
	subsystem, name string
	// filter-result and filter-dataline; report has only sid.
	sid, token uint64
	// filter-result: the decision; param is its parameter if hasParam.
	verb     string
	param    string
	hasParam bool
	// report: the time, usec in [0, 999999].
	sec, usec int64
}

// parseLine parses one line from a filter (without its newline), as
// strictly as lka_filter.c: the caller treats any error as fatal for
// the filter.
func parseLine(line string) (message, error) {
	verb, rest, _ := strings.Cut(line, "|")
	switch verb {
	case "register":
		return parseRegister(rest, line)
	case "filter-result", "filter-dataline":
		return parseAnswer(verb, rest)
	case "report":
		return parseReport(rest)
	}
	return message{}, errors.New("unknown message type")
}

func parseRegister(rest, line string) (message, error) {
	if line == "register|ready" {
		return message{kind: msgRegisterReady}, nil
	}
	stream, rest, _ := strings.Cut(rest, "|")
	if stream == "ready" {
		return message{}, errors.New("text after register|ready")
	}
	subsystem, name, ok := strings.Cut(rest, "|")
	if !ok {
		return message{}, errors.New("register line without subsystem and name")
	}
	switch stream {
	case "report":
		// lka_report_register_hook: smtp-in or smtp-out, case
		// sensitive; the name is an event or "*" for all of them
		if subsystem != "smtp-in" && subsystem != "smtp-out" {
			return message{}, fmt.Errorf("unknown subsystem %q", subsystem)
		}
		if _, _, _, ok := eventInfo(name); !ok && name != "*" {
			return message{}, fmt.Errorf("unknown report event %q", name)
		}
		return message{kind: msgRegisterReport, subsystem: subsystem, name: name}, nil
	case "filter":
		// lka_filter_register_hook compares the subsystem with
		// strncasecmp and knows only smtp-in: smtp-out is fatal there
		if !strings.EqualFold(subsystem, "smtp-in") {
			return message{}, fmt.Errorf("filters exist only for smtp-in, not %q", subsystem)
		}
		if _, ok := phaseBit(name); !ok {
			return message{}, fmt.Errorf("unknown filter phase %q", name)
		}
		return message{kind: msgRegisterFilter, subsystem: "smtp-in", name: name}, nil
	}
	return message{}, fmt.Errorf("unknown register stream %q", stream)
}

// parseAnswer parses what follows "filter-result|" or
// "filter-dataline|": <sid>|<token>|<rest>.
func parseAnswer(verb, rest string) (message, error) {
	sidText, rest, ok := strings.Cut(rest, "|")
	if !ok {
		return message{}, errors.New("missing token")
	}
	sid, ok := parseHex64(sidText)
	if !ok {
		return message{}, fmt.Errorf("invalid session id %q", sidText)
	}
	tokenText, rest, ok := strings.Cut(rest, "|")
	if !ok {
		if verb == "filter-dataline" {
			return message{}, errors.New("missing line after token")
		}
		return message{}, errors.New("missing decision after token")
	}
	token, ok := parseHex64(tokenText)
	if !ok {
		return message{}, fmt.Errorf("invalid token %q", tokenText)
	}
	m := message{sid: sid, token: token}
	if verb == "filter-dataline" {
		// the line is the whole remainder, "|" included
		m.kind, m.param, m.hasParam = msgDataline, rest, true
		return m, nil
	}
	m.kind = msgResult
	m.verb, m.param, m.hasParam = strings.Cut(rest, "|")
	switch m.verb {
	case "proceed", "junk":
		if m.hasParam {
			// "proceed|x" falls through to "Invalid directive" in
			// lka_filter_process_response
			return message{}, fmt.Errorf("decision %q takes no parameter", m.verb)
		}
	case "rewrite", "reject", "disconnect", "report":
		if !m.hasParam {
			return message{}, fmt.Errorf("decision %q without parameter", m.verb)
		}
	default:
		return message{}, fmt.Errorf("unknown decision %q", m.verb)
	}
	return m, nil
}

// parseReport parses what follows "report|" in a report a filter sends
// itself: <sec>.<usec>|smtp-in|<sid>|<text>.
func parseReport(rest string) (message, error) {
	stamp, rest, ok := strings.Cut(rest, "|")
	if !ok {
		return message{}, errors.New("report without time")
	}
	secText, usecText, ok := strings.Cut(stamp, ".")
	// lka_report_proc wants exactly six digits of microseconds
	if !ok || !isDigits(secText) || len(usecText) != 6 || !isDigits(usecText) {
		return message{}, fmt.Errorf("invalid report time %q", stamp)
	}
	sec, err := strconv.ParseInt(secText, 10, 64)
	if err != nil {
		return message{}, fmt.Errorf("invalid report time %q", stamp)
	}
	usec, _ := strconv.ParseInt(usecText, 10, 64)
	subsystem, rest, ok := strings.Cut(rest, "|")
	if !ok || subsystem != "smtp-in" {
		// smtp-out is compiled out (#if 0) in lka_report_proc
		return message{}, fmt.Errorf("invalid report subsystem %q", subsystem)
	}
	sidText, text, ok := strings.Cut(rest, "|")
	if !ok {
		return message{}, errors.New("report without text")
	}
	sid, ok := parseHex64(sidText)
	if !ok {
		return message{}, fmt.Errorf("invalid session id %q", sidText)
	}
	return message{kind: msgReport, sid: sid, sec: sec, usec: usec, param: text, hasParam: true}, nil
}

// String formats m canonically, so that parseLine(m.String()) == m.
func (m message) String() string {
	switch m.kind {
	case msgRegisterReady:
		return "register|ready"
	case msgRegisterReport:
		return "register|report|" + m.subsystem + "|" + m.name
	case msgRegisterFilter:
		return "register|filter|" + m.subsystem + "|" + m.name
	case msgDataline:
		return fmt.Sprintf("filter-dataline|%016x|%016x|%s", m.sid, m.token, m.param)
	case msgResult:
		s := fmt.Sprintf("filter-result|%016x|%016x|%s", m.sid, m.token, m.verb)
		if m.hasParam {
			s += "|" + m.param
		}
		return s
	case msgReport:
		return fmt.Sprintf("report|%d.%06d|smtp-in|%016x|%s", m.sec, m.usec, m.sid, m.param)
	}
	return ""
}

// parseHex64 parses a session id or token. OpenSMTPD uses strtoull
// (which would also take signs, blanks and 0x); filters echo the
// %016x we sent, so accept 1 to 16 hex digits and nothing else.
func parseHex64(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > 16 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 16, 64)
	return v, err == nil
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Action is a filter's decision on a filter request.
type Action int

// The decisions of filter-result.
const (
	Proceed    Action = iota // go on (also when the phase is not registered)
	Junk                     // mark the session or transaction as spam (X-Spam: Yes)
	Reject                   // reply Code/Enhanced/Text (Param has the line as sent)
	Disconnect               // reply and close; also reject with 421
	Rewrite                  // replace the command's parameter with Param
	Report                   // proceed; Param is text for a filter-response report
)

func (a Action) String() string {
	switch a {
	case Proceed:
		return "proceed"
	case Junk:
		return "junk"
	case Reject:
		return "reject"
	case Disconnect:
		return "disconnect"
	case Rewrite:
		return "rewrite"
	case Report:
		return "report"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// Result is a filter's answer to a filter request.
type Result struct {
	Action Action
	// Reject and Disconnect: the reply, parsed from "550 5.7.1 text" or
	// "550 text".
	Code     int
	Enhanced string
	Text     string
	// Rewrite and Report: the parameter. Reject and Disconnect: the
	// whole reply line, which OpenSMTPD sends to the client verbatim.
	Param string
}

// result turns a filter-result into a Result for a request of phase.
// An error means the filter broke the protocol.
func result(phase string, m message) (Result, error) {
	switch m.verb {
	case "proceed":
		return Result{Action: Proceed}, nil
	case "junk":
		// lka_filter_process_response: fatal, the message is already
		// written with or without X-Spam when commit is asked
		if phase == "commit" {
			return Result{}, errors.New("junk at commit")
		}
		return Result{Action: Junk}, nil
	case "rewrite":
		return Result{Action: Rewrite, Param: m.param}, nil
	case "report":
		return Result{Action: Report, Param: m.param}, nil
	case "reject", "disconnect":
		code, enhanced, text, ok := parseReply(m.param)
		if !ok || code/100 != 4 && code/100 != 5 {
			// OpenSMTPD (smtp_session.c) replaces such a reply with
			// "421 Internal server error" and drops the client; we
			// are stricter and give up on the filter
			return Result{}, fmt.Errorf("%s with invalid reply %q (want 4xx or 5xx)", m.verb, m.param)
		}
		a := Reject
		if m.verb == "disconnect" || code == 421 {
			a = Disconnect
		}
		return Result{Action: a, Code: code, Enhanced: enhanced, Text: text, Param: m.param}, nil
	}
	return Result{}, fmt.Errorf("unknown decision %q", m.verb)
}

// parseReply splits "550 5.7.1 text" or "550 text". The validity test
// is OpenSMTPD's valid_smtp_response: at least five characters, a code
// from 200 to 599 and a space after it.
func parseReply(s string) (code int, enhanced, text string, ok bool) {
	if len(s) < 5 || s[0] < '2' || s[0] > '5' || !isDigits(s[1:3]) || s[3] != ' ' {
		return 0, "", "", false
	}
	code, _ = strconv.Atoi(s[:3])
	text = s[4:]
	word, after, _ := strings.Cut(text, " ")
	if isEnhanced(word) {
		enhanced, text = word, strings.TrimLeft(after, " ")
	}
	return code, enhanced, text, true
}

// isEnhanced tells whether s is an RFC 3463 status code: class.subject.detail.
func isEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || !strings.Contains("245", parts[0]) {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 || !isDigits(p) {
			return false
		}
	}
	return true
}

// appendTime appends OpenSMTPD's "%lld.%06ld" timestamp.
func appendTime(b []byte, t time.Time) []byte {
	b = strconv.AppendInt(b, t.Unix(), 10)
	b = append(b, '.')
	usec := t.Nanosecond() / 1000
	for d := 100000; d > 0; d /= 10 {
		b = append(b, byte('0'+usec/d%10))
	}
	return b
}

// appendHex appends v as %016x.
func appendHex(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[v>>uint(shift)&0xf])
	}
	return b
}

// appendField appends one field, with the bytes that would end or
// split a protocol line replaced by a space: LF ends a line, and CR
// ends one for readers with universal newlines (Python's text mode);
// NUL cuts the line short in C filters. OpenSMTPD never has LF in a
// field (it splits the client's input on LF) and relies on C strings
// for NUL; replacing rather than refusing keeps the session going
// while making sure a client cannot inject a line.
func appendField[T ~string | ~[]byte](b []byte, s T) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\r' || c == '\n' || c == 0 {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

// checkParams refuses a "|" anywhere but in the last parameter, where
// the protocol allows it.
func checkParams(params []string) error {
	for i, p := range params {
		if i < len(params)-1 && strings.Contains(p, "|") {
			return fmt.Errorf("parameter %d (%q) contains \"|\", allowed only in the last one", i+1, p)
		}
	}
	return nil
}

// appendParams appends "|p1|p2...", after checkParams.
func appendParams(b []byte, params []string) []byte {
	for _, p := range params {
		b = append(b, '|')
		b = appendField(b, p)
	}
	return b
}
