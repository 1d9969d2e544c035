package config

import (
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// The phases a built-in filter can act at, in session order.
var filterPhases = []string{"connect", "helo", "mail", "rcpt", "data", "commit"}

// FilterKind says what runs a filter.
type FilterKind string

// The kinds of filter.
const (
	// FilterBuiltin is a check mfa makes itself: conditions on the
	// client, HELO name, sender or recipient, and a verdict.
	FilterBuiltin FilterKind = "builtin"
	// FilterProc is a program speaking OpenSMTPD's filter protocol on
	// its standard input and output (smtpd-filters(7), protocol 0.7).
	FilterProc FilterKind = "command"
	// FilterMilter is a Sendmail milter reached over a socket.
	FilterMilter FilterKind = "milter"
)

// The policies for a filter that fails (exits, hangs, answers garbage).
const (
	FailTempfail = "tempfail"
	FailProceed  = "proceed"
	FailReject   = "reject"
)

// DefaultFilterTimeout bounds each request to a filter process or milter.
const DefaultFilterTimeout = 30 * time.Second

// Filter is a named filter block. Listeners run filters as a chain, in
// the order of their filters attribute: a built-in check, a filter
// process or a milter.
type Filter struct {
	// ID is the filter's place in Config.Filters, the same in every
	// process.
	ID   int
	Name string
	Kind FilterKind

	// Phase is one of connect, helo, mail, rcpt, data and commit; by
	// default the first phase at which all conditions can be checked.
	Phase string
	// From, Helo, Sender and Rcpt are tables of client addresses and
	// networks, HELO names, sender and recipient addresses.
	From, Helo, Sender, Rcpt *Table
	// HeloRegex, SenderRegex and RcptRegex must match, if set.
	HeloRegex, SenderRegex, RcptRegex *regexp.Regexp
	// Results are conditions on the listener's checks: the results
	// (pass, fail, none...) of each check named (spf, fcrdns, dkim,
	// arc, dmarc) for which the filter acts.
	Results map[string][]string
	// Action is reject, tempfail, disconnect or junk.
	Action string
	// Code, Enhanced and Text are the reply.
	Code     int
	Enhanced string
	Text     string

	// Command is the program and its arguments (no shell) of a filter
	// process; User runs it (default: the daemon's user).
	Command []string
	User    string
	// MilterNetwork and MilterAddress are where a milter listens:
	// "unix" and a path, or "tcp" and host:port.
	MilterNetwork, MilterAddress string
	// Timeout bounds each request to a filter process or milter;
	// Failure is what a session waiting on a failed one gets.
	Timeout time.Duration
	Failure string

	Range hcl.Range
}

var filterSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "phase"}, {Name: "from"}, {Name: "helo"}, {Name: "sender"}, {Name: "rcpt"},
	{Name: "helo_regex"}, {Name: "sender_regex"}, {Name: "rcpt_regex"},
	{Name: "action"}, {Name: "message"},
	{Name: "spf"}, {Name: "fcrdns"}, {Name: "dkim"}, {Name: "arc"}, {Name: "dmarc"},
	{Name: "command"}, {Name: "user"}, {Name: "milter"}, {Name: "timeout"}, {Name: "failure"},
}}

// defaultReplies are the replies of the filter actions.
var defaultReplies = map[string]string{
	"reject":     "550 5.7.1 Rejected by local policy",
	"tempfail":   "451 4.7.1 Temporarily rejected by local policy",
	"disconnect": "421 4.7.0 Connection closed by local policy",
	// junk lets the message through, marked as spam
	"junk": "250 2.0.0 Accepted as junk",
}

// resultChecks are the checks whose results filters can test, and the
// earliest phase each result is known at.
var resultChecks = map[string]string{CheckFCrDNS: "connect", CheckSPF: "mail", CheckDKIM: "commit", CheckARC: "commit", CheckDMARC: "commit"}

// checkResults are the results a check can have (RFC 8601 §2.7).
var checkResults = []string{"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy"}

// results decodes the conditions on checks' results of a filter or a
// match rule: for each check named, the results that satisfy it.
// allowed, if not nil, maps the checks that may be tested to "" and the
// others to why they may not.
func (d *decoder) results(attrs hcl.Attributes, allowed map[string]string) map[string][]string {
	var out map[string][]string
	for check := range resultChecks {
		var results []string
		if !d.decode(attrs, check, &results) {
			continue
		}
		if why, ok := allowed[check]; allowed != nil && !ok || why != "" {
			d.errorf(attrs[check].NameRange, "Result not known here", "%s", why)
			continue
		}
		for _, r := range results {
			if indexOf(checkResults, r) < 0 {
				d.errorf(attrs[check].Expr.Range(), "Unknown result", "%q is not a result: use %s.", r, strings.Join(checkResults, ", "))
			}
		}
		if out == nil {
			out = map[string][]string{}
		}
		out[check] = results
	}
	return out
}

// builtinAttrs and externalAttrs are the attributes of each kind.
var (
	builtinAttrs  = []string{"phase", "from", "helo", "sender", "rcpt", "helo_regex", "sender_regex", "rcpt_regex", "action", "message", "spf", "fcrdns", "dkim", "arc", "dmarc"}
	externalAttrs = []string{"user", "timeout", "failure"}
)

func (d *decoder) filter(b *hcl.Block) {
	f := &Filter{ID: len(d.cfg.Filters), Name: b.Labels[0], Kind: FilterBuiltin, Range: b.DefRange, Action: "reject"}
	d.cfg.Filters = append(d.cfg.Filters, f)
	content, diags := b.Body.Content(filterSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	_, isCommand := attrs["command"]
	_, isMilter := attrs["milter"]
	switch {
	case isCommand && isMilter:
		d.errorf(b.DefRange, "Filter of two kinds", "Filter %q has both command and milter; a filter is one or the other.", f.Name)
		return
	case isCommand || isMilter:
		for _, name := range builtinAttrs {
			if a, ok := attrs[name]; ok {
				d.errorf(a.NameRange, "Not for this kind of filter", "%s belongs to built-in filters; filter %q runs a %s.", name, f.Name, map[bool]string{true: "program", false: "milter"}[isCommand])
			}
		}
		d.external(f, attrs, isCommand)
	default:
		for _, name := range externalAttrs {
			if a, ok := attrs[name]; ok {
				d.errorf(a.NameRange, "Not for this kind of filter", "%s belongs to filters with a command or a milter; filter %q is built in.", name, f.Name)
			}
		}
		d.builtin(f, attrs)
	}
}

// external decodes a filter process or a milter.
func (d *decoder) external(f *Filter, attrs hcl.Attributes, isCommand bool) {
	f.Timeout, f.Failure, f.User = DefaultFilterTimeout, FailTempfail, d.cfg.User
	if isCommand {
		f.Kind = FilterProc
		var line string
		if d.decode(attrs, "command", &line) {
			argv, err := splitCommand(line)
			if err == nil && !filepath.IsAbs(argv[0]) {
				err = fmt.Errorf("the program must be an absolute path, not %q", argv[0])
			}
			if err != nil {
				d.errorf(attrs["command"].Expr.Range(), "Invalid command", "%v.", err)
			}
			f.Command = argv
		}
		if d.decode(attrs, "user", &f.User) && f.User == "" {
			d.errorf(attrs["user"].Expr.Range(), "Empty user name", "user must name a user.")
		}
	} else {
		f.Kind = FilterMilter
		if a, ok := attrs["user"]; ok {
			d.errorf(a.NameRange, "Not for a milter", "A milter runs on its own; user is for filter processes that smtpd starts.")
		}
		var where string
		if d.decode(attrs, "milter", &where) {
			var err error
			if f.MilterNetwork, f.MilterAddress, err = parseMilterAddress(where); err != nil {
				d.errorf(attrs["milter"].Expr.Range(), "Invalid milter address", "%v.", err)
			}
		}
	}
	d.duration(attrs, "timeout", &f.Timeout, false)
	if d.decode(attrs, "failure", &f.Failure) {
		switch f.Failure {
		case FailTempfail, FailProceed, FailReject:
		default:
			d.errorf(attrs["failure"].Expr.Range(), "Invalid failure policy", "failure must be \"tempfail\", \"proceed\" or \"reject\", not %q.", f.Failure)
		}
	}
}

// parseMilterAddress reads "unix:/path" or "inet:host:port" (also
// "inet6:[addr]:port" and "tcp:host:port"), Postfix's and Sendmail's
// spellings.
func parseMilterAddress(s string) (network, address string, err error) {
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("%q is not unix:/path or inet:host:port", s)
	}
	switch scheme {
	case "unix", "local":
		if !filepath.IsAbs(rest) {
			return "", "", fmt.Errorf("the socket must be an absolute path, not %q", rest)
		}
		return "unix", rest, nil
	case "inet", "inet6", "tcp":
		if _, port, err := net.SplitHostPort(rest); err != nil || port == "" {
			return "", "", fmt.Errorf("%q is not host:port", rest)
		}
		return "tcp", rest, nil
	}
	return "", "", fmt.Errorf("%q: the address must start with unix: or inet:", s)
}

// splitCommand splits a command line into words at blanks; single and
// double quotes group words, backslash escapes a character. No shell
// runs the command, so nothing else is special.
func splitCommand(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quote, escaped := false, rune(0), false
	for _, r := range line {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped, inWord = true, true
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	switch {
	case quote != 0 || escaped:
		return nil, fmt.Errorf("unterminated quote or escape in %q", line)
	case inWord:
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("the command is empty")
	}
	return words, nil
}

// builtin decodes a built-in filter.
func (d *decoder) builtin(f *Filter, attrs hcl.Attributes) {
	what := fmt.Sprintf("filter %s", f.Name)
	table := func(name string) *Table {
		if c := d.cond(attrs, name, what, 0, nil); c != nil {
			return c.Table
		}
		return nil
	}
	f.From, f.Helo, f.Sender, f.Rcpt = table("from"), table("helo"), table("sender"), table("rcpt")
	f.HeloRegex = d.regex(attrs, "helo_regex")
	f.SenderRegex = d.regex(attrs, "sender_regex")
	f.RcptRegex = d.regex(attrs, "rcpt_regex")
	earliest := "connect"
	switch {
	case f.Rcpt != nil || f.RcptRegex != nil:
		earliest = "rcpt"
	case f.Sender != nil || f.SenderRegex != nil:
		earliest = "mail"
	case f.Helo != nil || f.HeloRegex != nil:
		earliest = "helo"
	}
	f.Results = d.results(attrs, nil)
	for check := range f.Results {
		if phase := resultChecks[check]; indexOf(filterPhases, phase) > indexOf(filterPhases, earliest) {
			earliest = phase
		}
	}
	f.Phase = earliest
	if d.decode(attrs, "phase", &f.Phase) {
		idx := indexOf(filterPhases, f.Phase)
		switch {
		case idx < 0:
			d.errorf(attrs["phase"].Expr.Range(), "Invalid phase", "phase must be one of %s, not %q.", strings.Join(filterPhases, ", "), f.Phase)
		case idx < indexOf(filterPhases, earliest):
			d.errorf(attrs["phase"].Expr.Range(), "Phase too early", "The conditions of this filter are known at the %s phase at the earliest.", earliest)
		case earliest == "rcpt" && f.Phase != "rcpt":
			d.errorf(attrs["phase"].Expr.Range(), "Recipient condition out of phase", "Recipients are checked one by one at the rcpt phase.")
		}
	}
	if d.decode(attrs, "action", &f.Action) && defaultReplies[f.Action] == "" {
		d.errorf(attrs["action"].Expr.Range(), "Invalid filter action", "action must be \"reject\", \"tempfail\", \"disconnect\" or \"junk\", not %q.", f.Action)
		return
	}
	if f.Action == "junk" && f.Phase == "commit" {
		// the spam mark goes in front of the message as it is received
		d.errorf(attrs["action"].Expr.Range(), "Junk too late", "A filter can mark mail as junk up to the data phase; at commit it can reject or tempfail.")
	}
	msg := defaultReplies[f.Action]
	custom := d.decode(attrs, "message", &msg)
	code, enhanced, text, err := parseReply(msg)
	if err == nil {
		switch {
		case f.Action == "reject" && code/100 != 5, f.Action == "tempfail" && code/100 != 4:
			err = fmt.Errorf("a %s reply needs a %dxx code", f.Action, map[string]int{"reject": 5, "tempfail": 4}[f.Action])
		}
	}
	if err != nil && custom {
		d.errorf(attrs["message"].Expr.Range(), "Invalid message", "%v.", err)
	}
	f.Code, f.Enhanced, f.Text = code, enhanced, text
}

// NeedsMFA reports whether the configuration gives the mfa process
// work: a filter, a check of mail authentication on a listener, or an
// action that signs or seals with DKIM. Without any, the daemon runs
// without it, a process fewer.
func (c *Config) NeedsMFA() bool {
	if len(c.Filters) > 0 {
		return true
	}
	for _, l := range c.Listeners {
		if len(l.Checks) > 0 {
			return true
		}
	}
	for _, a := range c.Actions {
		if len(a.Sign) > 0 || a.Seal != nil {
			return true
		}
	}
	return false
}

// Filter returns the named filter, or nil.
func (c *Config) Filter(name string) *Filter {
	for _, f := range c.Filters {
		if f.Name == name {
			return f
		}
	}
	return nil
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// parseReply reads "550 5.7.1 text" (the enhanced code is optional).
func parseReply(s string) (code int, enhanced, text string, err error) {
	f := strings.SplitN(strings.TrimSpace(s), " ", 3)
	code, err = strconv.Atoi(f[0])
	if err != nil || code < 400 || code > 599 {
		return 0, "", "", fmt.Errorf("%q does not start with a 4xx or 5xx code", s)
	}
	rest := f[1:]
	if len(rest) > 0 && regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`).MatchString(rest[0]) {
		enhanced, rest = rest[0], rest[1:]
	}
	text = strings.Join(rest, " ")
	if strings.ContainsAny(text, "\r\n") {
		return 0, "", "", fmt.Errorf("the text must be one line")
	}
	return code, enhanced, text, nil
}

func (d *decoder) regex(attrs hcl.Attributes, name string) *regexp.Regexp {
	var s string
	if !d.decode(attrs, name, &s) {
		return nil
	}
	re, err := regexp.Compile(s)
	if err != nil {
		d.errorf(attrs[name].Expr.Range(), "Invalid regular expression", "%v.", err)
		return nil
	}
	return re
}
