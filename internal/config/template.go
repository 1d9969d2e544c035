package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"

	"smtpd/internal/address"
	"smtpd/proto"
)

// TemplateVars are the values a delivery template sees: `dest` is the
// address after alias and virtual expansion, `rcpt` the address given at
// RCPT TO, `sender` the MAIL FROM address, `user` the local account.
type TemplateVars struct {
	Dest, Rcpt, Sender address.Address
	User               proto.Account
}

func addressVal(a address.Address) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{
		"user":    cty.StringVal(a.User),
		"domain":  cty.StringVal(a.Domain),
		"address": cty.StringVal(a.String()),
	})
}

func (v TemplateVars) evalContext() *hcl.EvalContext {
	return &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"dest":   addressVal(v.Dest),
			"rcpt":   addressVal(v.Rcpt),
			"sender": addressVal(v.Sender),
			"user": cty.ObjectVal(map[string]cty.Value{
				"name":      cty.StringVal(v.User.Name),
				"directory": cty.StringVal(v.User.Directory),
				"uid":       cty.NumberIntVal(int64(v.User.UID)),
				"gid":       cty.NumberIntVal(int64(v.User.GID)),
			}),
		},
		Functions: templateFuncs(),
	}
}

// templateFuncs are the functions a delivery template may call.
func templateFuncs() map[string]function.Function {
	return map[string]function.Function{
		"lower":   stdlib.LowerFunc,
		"upper":   stdlib.UpperFunc,
		"substr":  stdlib.SubstrFunc,
		"replace": stdlib.ReplaceFunc,
		"shquote": shquoteFunc(),
	}
}

// sampleVars fill templates when the configuration is checked, so that a
// misspelt variable or a type error shows at load time, not at the first
// delivery.
var sampleVars = TemplateVars{
	Dest:   address.Address{User: "user", Domain: "example.org"},
	Rcpt:   address.Address{User: "user+tag", Domain: "example.org"},
	Sender: address.Address{User: "sender", Domain: "example.net"},
	User:   proto.Account{Name: "user", Directory: "/home/user", UID: 1000, GID: 1000},
}

// Template is a delivery path or command: an HCL string template with
// `${dest.user}`-style interpolations, evaluated for each delivery.
type Template struct {
	expr hcl.Expression
	// Source is the template as written, for messages.
	Source string
	// dir, if set, makes a relative result a path below it: the
	// directory of the configuration file, for path templates.
	dir string
}

func newTemplate(expr hcl.Expression, src []byte, dir string) (*Template, hcl.Diagnostics) {
	t := &Template{expr: expr, Source: string(expr.Range().SliceBytes(src)), dir: dir}
	_, diags := t.eval(sampleVars)
	return t, diags
}

func literalTemplate(s, dir string) *Template {
	t := &Template{Source: s, dir: dir}
	expr, diags := hclsyntax.ParseTemplate([]byte(s), "default", hcl.InitialPos)
	if diags.HasErrors() {
		panic("config: bad built-in template " + s)
	}
	t.expr = expr
	return t
}

func (t *Template) eval(vars TemplateVars) (string, hcl.Diagnostics) {
	v, diags := t.expr.Value(vars.evalContext())
	if diags.HasErrors() {
		return "", diags
	}
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return "", hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Template is not a string",
			Detail:   fmt.Sprintf("The template evaluates to %s, not a string.", v.Type().FriendlyName()),
			Subject:  t.expr.Range().Ptr(),
		}}
	}
	out := v.AsString()
	if t.dir != "" && out != "" && !filepath.IsAbs(out) {
		out = filepath.Join(t.dir, out)
	}
	return out, nil
}

// Eval evaluates the template for one delivery.
func (t *Template) Eval(vars TemplateVars) (string, error) {
	s, diags := t.eval(vars)
	if diags.HasErrors() {
		return "", fmt.Errorf("config: template %s: %s", t.Source, diags.Error())
	}
	return s, nil
}

// Argv evaluates a command template into its arguments without a shell:
// the template's literal text is split into words at white space (single
// and double quotes group, a backslash escapes), and each interpolated
// value goes whole into the word it is written in, whatever it contains.
// An address such as "<;sleep 66;>" can so never become a command
// (CVE-2020-7247). Functions see the values themselves, so that
// ${shquote(sender.address)} quotes an address for the shell that runs
// a command on the far side of ssh.
func (t *Template) Argv(vars TemplateVars) ([]string, error) {
	var parts []hclsyntax.Expression
	switch e := t.expr.(type) {
	case *hclsyntax.TemplateExpr:
		parts = e.Parts
	case *hclsyntax.TemplateWrapExpr:
		parts = []hclsyntax.Expression{e}
	default:
		// not a quoted template: no literal text to split apart from
		// the values
		return t.argvMarked(vars)
	}
	ctx := vars.evalContext()
	var w wordSplitter
	for _, p := range parts {
		if lit, ok := p.(*hclsyntax.LiteralValueExpr); ok && lit.Val.Type() == cty.String {
			w.text(lit.Val.AsString())
			continue
		}
		v, diags := p.Value(ctx)
		if diags.HasErrors() {
			return nil, fmt.Errorf("config: template %s: %s", t.Source, diags.Error())
		}
		if v.IsNull() || !v.IsWhollyKnown() {
			return nil, fmt.Errorf("config: template %s: a value is null", t.Source)
		}
		sv, err := convert.Convert(v, cty.String)
		if err != nil {
			return nil, fmt.Errorf("config: template %s: %v", t.Source, err)
		}
		w.value(sv.AsString())
	}
	words, err := w.words()
	if err != nil {
		return nil, fmt.Errorf("config: command %s: %w", t.Source, err)
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("config: command %s is empty", t.Source)
	}
	return words, nil
}

// argvMarked is Argv for an expression that is not a quoted template:
// the values are evaluated as markers, the result split, and the
// markers replaced by the values, which so stay inside their words.
func (t *Template) argvMarked(vars TemplateVars) ([]string, error) {
	var values []string
	mark := func(s string) string {
		values = append(values, s)
		return fmt.Sprintf("\x00%d\x00", len(values)-1)
	}
	marked := TemplateVars{
		Dest:   address.Address{User: mark(vars.Dest.User), Domain: mark(vars.Dest.Domain)},
		Rcpt:   address.Address{User: mark(vars.Rcpt.User), Domain: mark(vars.Rcpt.Domain)},
		Sender: address.Address{User: mark(vars.Sender.User), Domain: mark(vars.Sender.Domain)},
		User:   proto.Account{Name: mark(vars.User.Name), Directory: mark(vars.User.Directory), UID: vars.User.UID, GID: vars.User.GID},
	}
	dir := t.dir
	t.dir = ""
	s, diags := t.eval(marked)
	t.dir = dir
	if diags.HasErrors() {
		return nil, fmt.Errorf("config: template %s: %s", t.Source, diags.Error())
	}
	words, err := SplitWords(s)
	if err != nil {
		return nil, fmt.Errorf("config: command %s: %w", t.Source, err)
	}
	for i, w := range words {
		var b strings.Builder
		for j, part := range strings.Split(w, "\x00") {
			if j%2 == 1 {
				n, _ := strconv.Atoi(part)
				b.WriteString(values[n])
			} else {
				b.WriteString(part)
			}
		}
		words[i] = b.String()
	}
	if len(words) == 0 {
		return nil, fmt.Errorf("config: command %s is empty", t.Source)
	}
	return words, nil
}

// SplitWords splits a command line into words as a shell would, with
// quotes and backslashes but nothing else: no variables, globs or
// redirections.
func SplitWords(s string) ([]string, error) {
	var w wordSplitter
	w.text(s)
	return w.words()
}

// wordSplitter splits text into words as SplitWords does, with values
// put into the current word as they are.
type wordSplitter struct {
	out     []string
	cur     strings.Builder
	inWord  bool
	quote   rune
	escaped bool
}

func (w *wordSplitter) text(s string) {
	for _, c := range s {
		switch {
		case w.escaped:
			w.cur.WriteRune(c)
			w.escaped = false
		case c == '\\' && w.quote != '\'':
			w.escaped, w.inWord = true, true
		case w.quote != 0 && c == w.quote:
			w.quote = 0
		case w.quote != 0:
			w.cur.WriteRune(c)
		case c == '\'' || c == '"':
			w.quote, w.inWord = c, true
		case c == ' ' || c == '\t' || c == '\n':
			if w.inWord {
				w.out = append(w.out, w.cur.String())
				w.cur.Reset()
				w.inWord = false
			}
		default:
			w.cur.WriteRune(c)
			w.inWord = true
		}
	}
}

// value adds s to the current word, which it makes a word even if s is
// empty; a backslash just before it escapes nothing.
func (w *wordSplitter) value(s string) {
	w.escaped = false
	w.cur.WriteString(s)
	w.inWord = true
}

func (w *wordSplitter) words() ([]string, error) {
	if w.quote != 0 || w.escaped {
		return nil, errors.New("unterminated quote or escape")
	}
	if w.inWord {
		w.out = append(w.out, w.cur.String())
		w.cur.Reset()
		w.inWord = false
	}
	return w.out, nil
}

// ShellQuote quotes s as one word for a POSIX shell: in single quotes,
// each single quote of s ending the quoted part, escaped with a
// backslash, and starting the next. It is the shquote function of
// templates.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// shquoteFunc is the template function shquote(s), ShellQuote.
func shquoteFunc() function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "s", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(ShellQuote(args[0].AsString())), nil
		},
	})
}
