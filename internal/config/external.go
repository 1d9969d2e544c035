package config

import (
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// ExternalCommand is an external block: a program that sends a message
// on, such as `ssh relay.example.org /usr/sbin/sendmail -oi -- ADDR`,
// after extsmail's externals. An action with `externals` delivers by
// running them in order until one succeeds, so that a laptop whose
// network comes and goes sends its mail through whichever way works.
type ExternalCommand struct {
	Name string
	// Command is the command line, a template evaluated per delivery
	// with the variables of the other delivery templates (sender, rcpt,
	// dest, user) and split into arguments without a shell (Argv).
	Command *Template
	// Timeout bounds one attempt; the program's process group is then
	// killed and the attempt counts as a temporary failure.
	Timeout time.Duration
	// Temporary are the exit codes counted as temporary failures besides
	// 75 (EX_TEMPFAIL); every other non-zero code is permanent.
	Temporary []int
	Range     hcl.Range
}

// DefaultExternalTimeout bounds an attempt of an external without a
// timeout: long enough for ssh to connect over a slow link and for the
// remote sendmail to take a large message.
const DefaultExternalTimeout = 5 * time.Minute

// exTempfail is EX_TEMPFAIL of sysexits.h, temporary for every external.
const exTempfail = 75

// IsTemporary reports whether the exit code of a finished attempt is a
// temporary failure: 75 or one of the external's own temporary codes.
func (x *ExternalCommand) IsTemporary(code int) bool {
	return code == exTempfail || slices.Contains(x.Temporary, code)
}

// Route is a route block of an externals action: the messages with a
// Header field whose value matches Regex go through Externals instead
// of the action's own list.
type Route struct {
	// Header is the field name, compared without regard to case.
	Header    string
	Regex     *regexp.Regexp
	Externals []*ExternalCommand
	Range     hcl.Range
}

// externalRefType is the type of external.NAME references.
var externalRefType = cty.Capsule("external", reflect.TypeOf(ExternalCommand{}))

var externalSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "command", Required: true}, {Name: "timeout"}, {Name: "temporary"},
}}

var routeSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "header", Required: true}, {Name: "regex", Required: true}, {Name: "externals", Required: true},
}}

func (d *decoder) externalBlock(b *hcl.Block) {
	x := &ExternalCommand{Name: b.Labels[0], Timeout: DefaultExternalTimeout, Range: b.DefRange}
	d.cfg.Externals = append(d.cfg.Externals, x)
	content, diags := b.Body.Content(externalSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	if a := attrs["command"]; a != nil {
		t, diags := newTemplate(a.Expr, d.src, "")
		d.diags = append(d.diags, diags...)
		if !diags.HasErrors() {
			// split once with sample values, so that an unterminated
			// quote or an empty command shows now, not at a delivery
			if _, err := t.Argv(sampleVars); err != nil {
				d.errorf(a.Expr.Range(), "Invalid command", "External %q: %v.", x.Name, err)
			} else {
				x.Command = t
			}
		}
	}
	d.duration(attrs, "timeout", &x.Timeout, false)
	if d.decode(attrs, "temporary", &x.Temporary) {
		for _, c := range x.Temporary {
			if c < 1 || c > 255 {
				d.errorf(attrs["temporary"].Expr.Range(), "Invalid exit code", "%d is not an exit code of a failure (1 to 255).", c)
				break
			}
		}
	}
}

func (d *decoder) externalRefs() cty.Value {
	m := map[string]cty.Value{}
	for _, x := range d.cfg.Externals {
		m[x.Name] = cty.CapsuleVal(externalRefType, x)
	}
	return cty.ObjectVal(m)
}

// externalList evaluates a list of external references, which must
// not be empty: a delivery needs a way out.
func (d *decoder) externalList(attrs hcl.Attributes, name string) []*ExternalCommand {
	a := attrs[name]
	if a == nil {
		return nil
	}
	before := len(d.diags)
	list := refList[ExternalCommand](d, attrs, name, externalRefType, "external")
	if len(list) == 0 && len(d.diags) == before {
		d.errorf(a.Expr.Range(), "Empty externals", "%s must list at least one external, such as [external.NAME].", name)
	}
	return list
}

// actionExternals decodes what an externals action has beside its
// common attributes: the default list and the route blocks.
func (d *decoder) actionExternals(a *Action, attrs hcl.Attributes, blocks hcl.Blocks) {
	a.Externals = d.externalList(attrs, string(Externals))
	// the recipients are somewhere else: no local account to run the
	// commands as can be derived from them, so it is named
	if attrs["user"] == nil {
		d.errorf(a.Range, "Missing user", "Action %q runs external commands: name the account they run as with user = \"NAME\".", a.Name)
	}
	for _, opt := range []string{"alias", "virtual"} {
		if attrs[opt] != nil {
			d.errorf(attrs[opt].NameRange, "Local option in an externals action", "%s applies to local deliveries; an externals action sends mail on.", opt)
		}
	}
	for _, b := range blocks {
		content, diags := b.Body.Content(routeSchema)
		d.diags = append(d.diags, diags...)
		r := Route{Range: b.DefRange}
		if d.decode(content.Attributes, "header", &r.Header) {
			if r.Header == "" || strings.ContainsAny(r.Header, ": \t") {
				d.errorf(content.Attributes["header"].Expr.Range(), "Invalid header name", "%q is not a header field name such as \"From\".", r.Header)
			}
		}
		var expr string
		if d.decode(content.Attributes, "regex", &expr) {
			re, err := regexp.Compile(expr)
			if err != nil {
				d.errorf(content.Attributes["regex"].Expr.Range(), "Invalid regex", "%v.", err)
			}
			r.Regex = re
		}
		r.Externals = d.externalList(content.Attributes, "externals")
		a.Routes = append(a.Routes, r)
	}
}

// routesOutside reports route blocks in an action that is not an
// externals action.
func (d *decoder) routesOutside(a *Action, blocks hcl.Blocks) {
	for _, b := range blocks {
		d.errorf(b.DefRange, "Route without externals", "Action %q delivers with %s; route blocks choose among externals.", a.Name, a.Method)
	}
}

// ExternalsFor returns the externals a message goes through: those of
// the first route whose header field matches, in the order of the
// routes, else the action's own. fields returns the values of the
// message's header fields of a name, unfolded.
func (a *Action) ExternalsFor(fields func(name string) []string) []*ExternalCommand {
	for _, r := range a.Routes {
		for _, v := range fields(r.Header) {
			if r.Regex.MatchString(v) {
				return r.Externals
			}
		}
	}
	return a.Externals
}

// ExternalsTimeout is the longest a delivery of an externals action
// can take, each external of its longest list running to its timeout;
// 0 for other actions. The parent waits that long for the result.
func (a *Action) ExternalsTimeout() time.Duration {
	sum := func(list []*ExternalCommand) time.Duration {
		var t time.Duration
		for _, x := range list {
			t += x.Timeout
		}
		return t
	}
	longest := sum(a.Externals)
	for _, r := range a.Routes {
		longest = max(longest, sum(r.Externals))
	}
	return longest
}
