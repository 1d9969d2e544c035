// Package table holds the lookup tables of the configuration: inline
// lists and maps, and files of "key value" lines.
package table

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Kind says whether a table is a list of keys or a map of keys to values.
type Kind int

// The kinds of table.
const (
	List Kind = iota + 1
	Map
)

func (k Kind) String() string {
	switch k {
	case List:
		return "list"
	case Map:
		return "map"
	}
	return "empty"
}

// Static is a table held in memory. Keys are compared as given, then
// without regard to case: callers look up normalised (lowercase) keys,
// and an aliases file's "Postmaster:" must still answer "postmaster".
type Static struct {
	Kind   Kind
	values map[string]string
	// folded holds the keys with capitals, lowercased (the first of
	// those that fold alike wins)
	folded map[string]string
}

// NewList returns a list table of keys.
func NewList(keys []string) *Static {
	s := &Static{Kind: List, values: make(map[string]string, len(keys))}
	for _, k := range keys {
		s.values[k] = ""
	}
	return s.fold()
}

// NewMap returns a map table.
func NewMap(m map[string]string) *Static {
	s := &Static{Kind: Map, values: make(map[string]string, len(m))}
	for k, v := range m {
		s.values[k] = v
	}
	return s.fold()
}

// Lookup returns the value of key, and whether key is in the table.
func (s *Static) Lookup(key string) (string, bool) {
	if v, ok := s.values[key]; ok {
		return v, true
	}
	v, ok := s.folded[asciiLower(key)]
	return v, ok
}

// asciiLower lowercases ASCII letters only: Unicode case folding would
// let "\u212A" (the Kelvin sign) find a key "k".
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// fold indexes the keys with capitals by their lowercase form, once
// the table is built.
func (s *Static) fold() *Static {
	keys := make([]string, 0, len(s.values))
	for k := range s.values {
		if k != asciiLower(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if s.folded == nil {
			s.folded = map[string]string{}
		}
		if _, ok := s.folded[asciiLower(k)]; !ok {
			s.folded[asciiLower(k)] = s.values[k]
		}
	}
	return s
}

// Len returns the number of entries.
func (s *Static) Len() int { return len(s.values) }

// Keys returns the keys in sorted order.
func (s *Static) Keys() []string {
	keys := make([]string, 0, len(s.values))
	for k := range s.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ParseError is a problem on one line of a table file.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// MaxLine bounds a line of a table file; longer lines are refused rather
// than silently cut.
const MaxLine = 64 * 1024

// Parse reads a table file. Each line is a key alone (a list) or a key,
// an optional colon, white space and a value (a map, as aliases(5) and
// makemap(8) files are). Empty lines and lines starting with '#' are
// skipped. A file mixing keys with and without values, or naming a key
// twice, is refused with the line of the problem.
func Parse(data []byte) (*Static, error) {
	s := &Static{values: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), MaxLine)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		if strings.ContainsRune(text, 0) {
			return nil, &ParseError{line, "NUL byte"}
		}
		key, value := text, ""
		if i := strings.IndexAny(text, " \t"); i >= 0 {
			key, value = text[:i], strings.TrimSpace(text[i:])
		}
		hasColon := strings.HasSuffix(key, ":")
		key = strings.TrimSuffix(key, ":")
		if key == "" {
			return nil, &ParseError{line, "empty key"}
		}
		kind := List
		if value != "" || hasColon {
			kind = Map
			if value == "" {
				return nil, &ParseError{line, fmt.Sprintf("key %q has no value", key)}
			}
		}
		if s.Kind != 0 && s.Kind != kind {
			return nil, &ParseError{line, fmt.Sprintf("%s entry in a table of %s entries", kind, s.Kind)}
		}
		s.Kind = kind
		if _, dup := s.values[key]; dup {
			return nil, &ParseError{line, fmt.Sprintf("key %q appears twice", key)}
		}
		s.values[key] = value
	}
	if err := sc.Err(); err != nil {
		return nil, &ParseError{line + 1, err.Error()}
	}
	if s.Kind == 0 {
		s.Kind = List
	}
	return s.fold(), nil
}

// HasIP reports whether ip is a key of the table, or inside a network
// (CIDR) that is.
func (s *Static) HasIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	for k := range s.values {
		if p, err := netip.ParsePrefix(k); err == nil && p.Contains(ip) {
			return true
		}
		if a, err := netip.ParseAddr(k); err == nil && a.Unmap() == ip {
			return true
		}
	}
	return false
}

// HasAddress reports whether a mail address is a key of the table,
// itself or by its "@domain"; comparison is case-insensitive.
func (s *Static) HasAddress(addr string) bool {
	addr = strings.ToLower(addr)
	if _, ok := s.values[addr]; ok {
		return true
	}
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		_, ok := s.values[addr[i:]]
		return ok
	}
	return false
}
