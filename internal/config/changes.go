package config

import (
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Changes compares two versions of a configuration file and names the
// top-level parts that differ: a setting by its name ("hostname"), a
// block by its type and label (`listen "mx"`, `limits`), all match
// rules together as "match" since their order matters. Comments, layout
// and the order of the attributes within a block do not count, nor the
// cert and key of a listener, which a reload (SIGHUP) applies. A daemon
// reloading its configuration logs them: they need a restart. Either
// version that does not parse gives nil.
func Changes(oldSrc, newSrc []byte) []string {
	before, ok1 := topLevelParts(oldSrc)
	after, ok2 := topLevelParts(newSrc)
	if !ok1 || !ok2 {
		return nil
	}
	var out []string
	for k, v := range before {
		if w, ok := after[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// topLevelParts maps each part of the configuration src to a canonical
// text of its content.
func topLevelParts(src []byte) (map[string]string, bool) {
	f, diags := hclsyntax.ParseConfig(src, "", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, false
	}
	body, ok := f.Body.(*hclsyntax.Body)
	if !ok {
		return nil, false
	}
	parts := map[string]string{}
	for name, a := range body.Attributes {
		parts[name] = canonicalTokens(a.Expr.Range().SliceBytes(src))
	}
	var matches []string
	for _, b := range body.Blocks {
		text := canonicalBody(b.Body, src, b.Type == "listen")
		if b.Type == "match" {
			matches = append(matches, text)
			continue
		}
		// a duplicate block is an error the load reports; here it is
		// one part all the same
		parts[blockName(b)] += text
	}
	if matches != nil {
		parts["match"] = strings.Join(matches, "\n")
	}
	return parts, true
}

// canonicalBody is the content of a block: its attributes sorted by
// name, then its blocks in order. A listener's cert and key are left
// out (skipKeys).
func canonicalBody(b *hclsyntax.Body, src []byte, skipKeys bool) string {
	var attrs []string
	for name, a := range b.Attributes {
		if skipKeys && (name == "cert" || name == "key") {
			continue
		}
		attrs = append(attrs, name+" = "+canonicalTokens(a.Expr.Range().SliceBytes(src)))
	}
	slices.Sort(attrs)
	for _, nb := range b.Blocks {
		attrs = append(attrs, blockName(nb)+" {"+canonicalBody(nb.Body, src, false)+"}")
	}
	return strings.Join(attrs, "; ")
}

// blockName is a block's type and quoted labels: `listen "mx"`.
func blockName(b *hclsyntax.Block) string {
	name := b.Type
	for _, l := range b.Labels {
		name += " " + strconv.Quote(l)
	}
	return name
}

// canonicalTokens is an expression's tokens without comments, line
// breaks and trailing commas, one space apart.
func canonicalTokens(expr []byte) string {
	all, _ := hclsyntax.LexExpression(expr, "", hcl.InitialPos)
	var tokens hclsyntax.Tokens
	for _, t := range all {
		switch t.Type {
		case hclsyntax.TokenComment, hclsyntax.TokenNewline, hclsyntax.TokenEOF:
			continue
		}
		tokens = append(tokens, t)
	}
	var b strings.Builder
	for i, t := range tokens {
		if t.Type == hclsyntax.TokenComma && i+1 < len(tokens) &&
			(tokens[i+1].Type == hclsyntax.TokenCBrack || tokens[i+1].Type == hclsyntax.TokenCBrace) {
			continue
		}
		b.Write(t.Bytes)
		b.WriteByte(' ')
	}
	return b.String()
}
