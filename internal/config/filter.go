package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// The phases a filter can act at, in session order.
var filterPhases = []string{"connect", "helo", "mail", "rcpt", "data", "commit"}

// Filter is a filter block: a built-in check mfa makes at one phase of
// every SMTP session. When all its conditions hold, the session is
// refused as Action says.
type Filter struct {
	// Phase is one of connect, helo, mail, rcpt, data and commit; by
	// default the first phase at which all conditions can be checked.
	Phase string
	// From, Helo, Sender and Rcpt are tables of client addresses and
	// networks, HELO names, sender and recipient addresses.
	From, Helo, Sender, Rcpt *Table
	// HeloRegex, SenderRegex and RcptRegex must match, if set.
	HeloRegex, SenderRegex, RcptRegex *regexp.Regexp
	// Action is reject, tempfail or disconnect.
	Action string
	// Code, Enhanced and Text are the reply.
	Code     int
	Enhanced string
	Text     string
	Range    hcl.Range
}

var filterSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "phase"}, {Name: "from"}, {Name: "helo"}, {Name: "sender"}, {Name: "rcpt"},
	{Name: "helo_regex"}, {Name: "sender_regex"}, {Name: "rcpt_regex"},
	{Name: "action"}, {Name: "message"},
}}

// defaultReplies are the replies of the filter actions.
var defaultReplies = map[string]string{
	"reject":     "550 5.7.1 Rejected by local policy",
	"tempfail":   "451 4.7.1 Temporarily rejected by local policy",
	"disconnect": "421 4.7.0 Connection closed by local policy",
}

func (d *decoder) filter(b *hcl.Block) {
	f := &Filter{Range: b.DefRange, Action: "reject"}
	d.cfg.Filters = append(d.cfg.Filters, f)
	content, diags := b.Body.Content(filterSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	what := fmt.Sprintf("filter at line %d", b.DefRange.Start.Line)
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
		d.errorf(attrs["action"].Expr.Range(), "Invalid filter action", "action must be \"reject\", \"tempfail\" or \"disconnect\", not %q.", f.Action)
		return
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
