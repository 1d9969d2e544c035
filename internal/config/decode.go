package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
	"smtpd/internal/address"
	"smtpd/internal/table"
)

// Table and action references (`table.domains`, `action.local`) evaluate
// to capsules holding the *Table or *Action, so a reference can never be
// confused with a string and a misspelt name is an HCL diagnostic.
var (
	tableRefType  = cty.Capsule("table", reflect.TypeOf(Table{}))
	actionRefType = cty.Capsule("action", reflect.TypeOf(Action{}))
	filterRefType = cty.Capsule("filter", reflect.TypeOf(Filter{}))
)

type decoder struct {
	cfg   *Config
	dir   string
	src   []byte
	files map[string]*hcl.File
	diags hcl.Diagnostics
	ctx   *hcl.EvalContext
	// reads says which files besides the configuration are read.
	reads reads
}

var fileSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "hostname"}, {Name: "spool"}, {Name: "control_socket"},
		{Name: "user"}, {Name: "queue_user"}, {Name: "empty_dir"},
		{Name: "resolver"}, {Name: "mx_port"}, {Name: "listen_metrics"}, {Name: "authserv_id"},
		{Name: "resolver_validates"}, {Name: "ca_file"}, {Name: "mta_state_dir"}, {Name: "mta_sts_port"},
	},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "limits"},
		{Type: "table", LabelNames: []string{"name"}},
		{Type: "listen", LabelNames: []string{"name"}},
		{Type: "action", LabelNames: []string{"name"}},
		{Type: "match"},
		{Type: "filter", LabelNames: []string{"name"}},
		{Type: "throttle"},
		{Type: "destination", LabelNames: []string{"domain"}},
		{Type: "overload"},
		{Type: "dkim", LabelNames: []string{"name"}},
		{Type: "srs"},
		{Type: "tls_reports"},
		{Type: "external", LabelNames: []string{"name"}},
	},
}

func (d *decoder) errorf(rng hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng.Ptr(),
	})
}

// decode decodes an attribute into dst (a pointer) if it is present.
func (d *decoder) decode(attrs hcl.Attributes, name string, dst any) bool {
	a, ok := attrs[name]
	if !ok {
		return false
	}
	diags := gohcl.DecodeExpression(a.Expr, d.ctx, dst)
	d.diags = append(d.diags, diags...)
	return !diags.HasErrors()
}

// abs resolves a path against the configuration's directory.
func (d *decoder) abs(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(d.dir, p)
}

// path decodes a file path attribute, resolved against the config's
// directory.
func (d *decoder) path(attrs hcl.Attributes, name string, dst *string) bool {
	if !d.decode(attrs, name, dst) {
		return false
	}
	if *dst == "" {
		d.errorf(attrs[name].Expr.Range(), "Empty path", "%s must not be empty.", name)
		return false
	}
	*dst = d.abs(*dst)
	return true
}

func (d *decoder) file(body hcl.Body) {
	content, diags := body.Content(fileSchema)
	d.diags = append(d.diags, diags...)
	cfg := d.cfg
	cfg.SpoolDir, cfg.ControlSocket, cfg.EmptyDir = DefaultSpoolDir, DefaultControlSocket, DefaultEmptyDir
	cfg.User, cfg.QueueUser = DefaultUser, DefaultQueueUser
	cfg.Limits = DefaultLimits()
	cfg.MXPort = 25
	if d.decode(content.Attributes, "mx_port", &cfg.MXPort) && (cfg.MXPort < 1 || cfg.MXPort > 65535) {
		d.errorf(content.Attributes["mx_port"].Expr.Range(), "Invalid port", "%d is not a port number.", cfg.MXPort)
	}
	if d.decode(content.Attributes, "resolver", &cfg.Resolvers) {
		for i, r := range cfg.Resolvers {
			if _, _, err := net.SplitHostPort(r); err != nil {
				r = net.JoinHostPort(r, "53")
			}
			if _, err := netip.ParseAddrPort(r); err != nil {
				d.errorf(content.Attributes["resolver"].Expr.Range(), "Invalid resolver", "%q is not an IP address with an optional port.", cfg.Resolvers[i])
			}
			cfg.Resolvers[i] = r
		}
	}

	attrs := content.Attributes
	if d.decode(attrs, "listen_metrics", &cfg.ListenMetrics) {
		if _, err := netip.ParseAddrPort(cfg.ListenMetrics); err != nil {
			d.errorf(attrs["listen_metrics"].Expr.Range(), "Invalid metrics address", "%q is not an IP address and port, such as \"127.0.0.1:9125\".", cfg.ListenMetrics)
		}
	}
	if d.decode(attrs, "hostname", &cfg.Hostname) && !address.IsHostname(cfg.Hostname) {
		d.errorf(attrs["hostname"].Expr.Range(), "Invalid hostname", "%q is not a host name.", cfg.Hostname)
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	cfg.AuthservID = cfg.Hostname
	if d.decode(attrs, "authserv_id", &cfg.AuthservID) && (cfg.AuthservID == "" || strings.ContainsAny(cfg.AuthservID, " \t\r\n;()\"")) {
		d.errorf(attrs["authserv_id"].Expr.Range(), "Invalid authserv-id", "%q is not a single token such as a host name (RFC 8601 §2.5).", cfg.AuthservID)
	}
	d.path(attrs, "spool", &cfg.SpoolDir)
	d.path(attrs, "control_socket", &cfg.ControlSocket)
	d.path(attrs, "empty_dir", &cfg.EmptyDir)
	for _, name := range []string{"user", "queue_user"} {
		dst := &cfg.User
		if name == "queue_user" {
			dst = &cfg.QueueUser
		}
		if d.decode(attrs, name, dst) && *dst == "" {
			d.errorf(attrs[name].Expr.Range(), "Empty user name", "%s must name a user.", name)
		}
	}

	byType := map[string][]*hcl.Block{}
	for _, b := range content.Blocks {
		byType[b.Type] = append(byType[b.Type], b)
	}
	d.single(byType["limits"], d.limits)
	d.outboundTLS(attrs, byType["tls_reports"])
	// Two passes: all table blocks first, so references work whatever
	// the order of the blocks, then actions, then what refers to them.
	d.named(byType["table"], "table")
	for _, b := range byType["table"] {
		d.table(b)
	}
	d.ctx = &hcl.EvalContext{Variables: map[string]cty.Value{"table": d.tableRefs()}}
	d.named(byType["dkim"], "dkim key")
	for _, b := range byType["dkim"] {
		d.dkim(b)
	}
	d.ctx.Variables["dkim"] = d.dkimRefs()
	d.single(byType["srs"], d.srs)
	d.named(byType["external"], "external")
	for _, b := range byType["external"] {
		d.externalBlock(b)
	}
	d.ctx.Variables["external"] = d.externalRefs()
	d.named(byType["action"], "action")
	for _, b := range byType["action"] {
		d.action(b)
	}
	d.ctx.Variables["action"] = d.actionRefs()
	d.named(byType["filter"], "filter")
	for _, b := range byType["filter"] {
		d.filter(b)
	}
	d.ctx.Variables["filter"] = d.filterRefs()
	d.named(byType["listen"], "listener")
	for _, b := range byType["listen"] {
		d.listener(b)
	}
	for _, b := range byType["match"] {
		d.match(b)
	}
	d.single(byType["throttle"], d.throttle)
	d.single(byType["overload"], d.overload)
	for _, b := range byType["destination"] {
		d.destination(b)
	}
}

// single decodes a block that may appear once.
func (d *decoder) single(blocks []*hcl.Block, decode func(*hcl.Block)) {
	if len(blocks) == 0 {
		return
	}
	for _, extra := range blocks[1:] {
		d.errorf(extra.DefRange, "Duplicate "+extra.Type+" block", "Only one %s block is allowed; the first is at line %d.", extra.Type, blocks[0].DefRange.Start.Line)
	}
	decode(blocks[0])
}

// named reports blocks that reuse a name.
func (d *decoder) named(blocks []*hcl.Block, kind string) {
	first := map[string]*hcl.Block{}
	for _, b := range blocks {
		name := b.Labels[0]
		if name == "" || strings.ContainsAny(name, " \t.") {
			d.errorf(b.LabelRanges[0], "Invalid "+kind+" name", "%q is not a valid name: use letters, digits, - and _.", name)
		}
		if prev, dup := first[name]; dup {
			d.errorf(b.LabelRanges[0], "Duplicate "+kind+" name", "There is already %s %s named %q, at line %d.", article(kind), kind, name, prev.DefRange.Start.Line)
			continue
		}
		first[name] = b
	}
}

func article(noun string) string {
	if strings.ContainsRune("aeiou", rune(noun[0])) {
		return "an"
	}
	return "a"
}

func (d *decoder) tableRefs() cty.Value {
	m := map[string]cty.Value{}
	for _, t := range d.cfg.Tables {
		if !t.Inline {
			m[t.Name] = cty.CapsuleVal(tableRefType, t)
		}
	}
	return cty.ObjectVal(m)
}

func (d *decoder) filterRefs() cty.Value {
	m := map[string]cty.Value{}
	for _, f := range d.cfg.Filters {
		m[f.Name] = cty.CapsuleVal(filterRefType, f)
	}
	return cty.ObjectVal(m)
}

func (d *decoder) actionRefs() cty.Value {
	m := map[string]cty.Value{}
	for _, a := range d.cfg.Actions {
		m[a.Name] = cty.CapsuleVal(actionRefType, a)
	}
	return cty.ObjectVal(m)
}

var limitsSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "message_size"}, {Name: "recipients"}, {Name: "mails_per_session"},
	{Name: "sessions"}, {Name: "sessions_per_ip"}, {Name: "auth_failures_per_ip"}, {Name: "line_length"},
	{Name: "command_timeout"}, {Name: "session_timeout"},
	{Name: "queue_expire"}, {Name: "bounce_warn"}, {Name: "retry_base"},
	{Name: "drain_timeout"},
}}

func (d *decoder) limits(b *hcl.Block) {
	content, diags := b.Body.Content(limitsSchema)
	d.diags = append(d.diags, diags...)
	attrs, l := content.Attributes, &d.cfg.Limits
	var size string
	if d.decode(attrs, "message_size", &size) {
		v, err := parseSize(size)
		if err != nil {
			d.errorf(attrs["message_size"].Expr.Range(), "Invalid size", "%v.", err)
		}
		l.MessageSize = v
	}
	ints := []struct {
		name string
		dst  *int
		min  int
	}{
		{"recipients", &l.Recipients, 100},
		{"mails_per_session", &l.MailsPerSession, 1},
		{"sessions", &l.Sessions, 0},
		{"sessions_per_ip", &l.SessionsPerIP, 1},
		{"auth_failures_per_ip", &l.AuthFailuresPerIP, 1},
		{"line_length", &l.LineLength, 1000},
	}
	for _, i := range ints {
		if d.decode(attrs, i.name, i.dst) && *i.dst < i.min {
			d.errorf(attrs[i.name].Expr.Range(), "Limit too low", "%s must be at least %d.", i.name, i.min)
		}
	}
	durs := []struct {
		name string
		dst  *time.Duration
	}{
		{"command_timeout", &l.CommandTimeout},
		{"session_timeout", &l.SessionTimeout},
		{"queue_expire", &l.QueueExpire},
		{"bounce_warn", &l.BounceWarn},
		{"retry_base", &l.RetryBase},
	}
	for _, dur := range durs {
		d.duration(attrs, dur.name, dur.dst, false)
	}
	// unlike the other durations drain_timeout may be 0: a stop that
	// does not wait for the sessions, as before the drain existed
	d.duration(attrs, "drain_timeout", &l.DrainTimeout, true)
}

// duration decodes a duration attribute into dst if it is present: more
// than zero, or with zeroOK at least zero.
func (d *decoder) duration(attrs hcl.Attributes, name string, dst *time.Duration, zeroOK bool) {
	var s string
	if !d.decode(attrs, name, &s) {
		return
	}
	v, err := parseDuration(s)
	switch {
	case err == nil && v < 0 && zeroOK:
		err = fmt.Errorf("%s must not be negative", name)
	case err == nil && v <= 0 && !zeroOK:
		err = fmt.Errorf("%s must be more than zero", name)
	}
	if err != nil {
		d.errorf(attrs[name].Expr.Range(), "Invalid duration", "%v.", err)
	}
	*dst = v
}

var tableSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "list"}, {Name: "map"}, {Name: "file"},
	{Name: "postgres"}, {Name: "sqlite"}, {Name: "ldap"}, {Name: "proc"},
	{Name: "password_file"}, {Name: "query"}, {Name: "attributes"}, {Name: "base"}, {Name: "bind_dn"},
	{Name: "starttls"}, {Name: "cache"}, {Name: "timeout"},
}}

func (d *decoder) table(b *hcl.Block) {
	t := &Table{Name: b.Labels[0], Range: b.DefRange, ID: len(d.cfg.Tables)}
	d.cfg.Tables = append(d.cfg.Tables, t)
	content, diags := b.Body.Content(tableSchema)
	d.diags = append(d.diags, diags...)
	attrs := content.Attributes
	for _, kind := range backendKinds {
		if attrs[kind] != nil {
			t.Data = table.NewList(nil)
			d.backendTable(t, attrs, kind)
			return
		}
	}
	if len(attrs) != 1 || attrs["list"] == nil && attrs["map"] == nil && attrs["file"] == nil {
		d.errorf(b.DefRange, "Invalid table", "Table %q needs exactly one of list, map, file, postgres, sqlite, ldap or proc.", t.Name)
		t.Data = table.NewList(nil)
		return
	}
	switch {
	case attrs["list"] != nil:
		var list []string
		d.decode(attrs, "list", &list)
		t.Data = table.NewList(list)
	case attrs["map"] != nil:
		var m map[string]string
		d.decode(attrs, "map", &m)
		t.Data = table.NewMap(m)
	default:
		t.Data = table.NewList(nil)
		if d.path(attrs, "file", &t.File) {
			d.tableFile(t, attrs["file"].Expr.Range())
		}
	}
}

// tableFile loads a table file; its problems point into the table file,
// whose lines then show in the diagnostic like the config's own.
func (d *decoder) tableFile(t *Table, rng hcl.Range) {
	if d.reads&readTables == 0 {
		return
	}
	data, err := os.ReadFile(t.File)
	if err != nil {
		d.errorf(rng, "Unreadable table file", "Table %q: %v.", t.Name, err)
		return
	}
	s, err := table.Parse(data)
	if err != nil {
		pe, _ := err.(*table.ParseError)
		d.files[t.File] = &hcl.File{Bytes: data}
		pos := hcl.Pos{Line: pe.Line, Column: 1}
		d.errorf(hcl.Range{Filename: t.File, Start: pos, End: pos}, "Invalid table file", "Table %q: %s.", t.Name, pe.Msg)
		return
	}
	t.Data = s
}

// refsKnown reports references to tables or actions that do not exist,
// with the names that do, before HCL would report a less helpful
// "Unsupported attribute".
func (d *decoder) refsKnown(expr hcl.Expression) bool {
	ok := true
	for _, tr := range expr.Variables() {
		root := tr.RootName()
		refs, isRef := d.ctx.Variables[root]
		if (root != "table" && root != "action" && root != "filter" && root != "dkim" && root != "external") || len(tr) < 2 {
			continue
		}
		attr, isAttr := tr[1].(hcl.TraverseAttr)
		if !isAttr {
			continue
		}
		var names []string
		if isRef {
			for name := range refs.Type().AttributeTypes() {
				names = append(names, name)
			}
		}
		if slices.Contains(names, attr.Name) {
			continue
		}
		slices.Sort(names)
		detail := fmt.Sprintf("There is no %s %q.", root, attr.Name)
		if len(names) > 0 {
			detail += fmt.Sprintf(" Defined: %s.", strings.Join(names, ", "))
		}
		if root == "action" && !isRef {
			detail = "An action cannot refer to another action."
		}
		d.errorf(tr.SourceRange(), "Unknown "+root, "%s", detail)
		ok = false
	}
	return ok
}

// refValue evaluates an attribute that may hold references to blocks
// (table.NAME, filter.NAME...), once the references are known to
// exist; false if it is absent or has an error, which is reported.
func (d *decoder) refValue(attrs hcl.Attributes, name string) (*hcl.Attribute, cty.Value, bool) {
	a, ok := attrs[name]
	if !ok || !d.refsKnown(a.Expr) {
		return nil, cty.NilVal, false
	}
	v, diags := a.Expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	return a, v, !diags.HasErrors()
}

// tableRef evaluates an attribute that names a table: a reference such
// as table.aliases, or an inline list or map, which becomes an anonymous
// table called what.
func (d *decoder) tableRef(attrs hcl.Attributes, name, what string) *Table {
	a, v, ok := d.refValue(attrs, name)
	if !ok {
		return nil
	}
	if v.Type() == tableRefType {
		return v.EncapsulatedValue().(*Table)
	}
	return d.inlineTable(a, v, what)
}

func (d *decoder) inlineTable(a *hcl.Attribute, v cty.Value, what string) *Table {
	t := &Table{Name: what, Inline: true, Range: a.Expr.Range()}
	ty := v.Type()
	var err error
	switch {
	case v.IsNull() || !v.IsWhollyKnown():
	case ty.IsTupleType() || ty.IsListType() || ty.IsSetType():
		var list []string
		if err = decodeValue(v, cty.List(cty.String), &list); err == nil {
			t.Data = table.NewList(list)
		}
	case ty.IsObjectType() || ty.IsMapType():
		var m map[string]string
		if err = decodeValue(v, cty.Map(cty.String), &m); err == nil {
			t.Data = table.NewMap(m)
		}
	}
	if t.Data == nil {
		detail := fmt.Sprintf("%s must be a table reference such as table.NAME, a list or a map; this is %s.", a.Name, ty.FriendlyName())
		if err != nil {
			detail = fmt.Sprintf("%s: %v.", a.Name, err)
		}
		d.errorf(a.Expr.Range(), "Table expected", "%s", detail)
		return nil
	}
	t.ID = len(d.cfg.Tables)
	d.cfg.Tables = append(d.cfg.Tables, t)
	return t
}

// decodeValue converts v to ty and stores it in dst.
func decodeValue(v cty.Value, ty cty.Type, dst any) error {
	cv, err := convert.Convert(v, ty)
	if err != nil {
		return err
	}
	return gocty.FromCtyValue(cv, dst)
}
