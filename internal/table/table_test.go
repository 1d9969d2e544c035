package table

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := []struct {
		in   string
		kind Kind
		want map[string]string
	}{
		{"", List, map[string]string{}},
		{"# only a comment\n\n", List, map[string]string{}},
		{"example.org\n  example.net  \n", List, map[string]string{"example.org": "", "example.net": ""}},
		{"root: alice, bob\npostmaster alice\n", Map, map[string]string{"root": "alice, bob", "postmaster": "alice"}},
		{"k\tv1  v2\n", Map, map[string]string{"k": "v1  v2"}},
		{"@example.org catchall\r\n", Map, map[string]string{"@example.org": "catchall"}},
	}
	for _, tt := range good {
		s, err := Parse([]byte(tt.in))
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if s.Kind != tt.kind || s.Len() != len(tt.want) {
			t.Errorf("%q: kind %s len %d", tt.in, s.Kind, s.Len())
		}
		for k, v := range tt.want {
			if got, ok := s.Lookup(k); !ok || got != v {
				t.Errorf("%q: %s = %q, %v", tt.in, k, got, ok)
			}
		}
	}
	bad := []struct {
		in   string
		line int
		msg  string
	}{
		{"a b\nc\n", 2, "list entry in a table of map entries"},
		{"a\n# x\nb c\n", 3, "map entry"},
		{"a b\na c\n", 2, "twice"},
		{"root:\n", 1, "no value"},
		{": x\n", 1, "empty key"},
		{"a\x00b\n", 1, "NUL"},
		{"a " + strings.Repeat("x", MaxLine+1) + "\n", 1, "too long"},
	}
	for _, tt := range bad {
		_, err := Parse([]byte(tt.in))
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != tt.line || !strings.Contains(pe.Msg, tt.msg) {
			t.Errorf("%.20q: got %v, want line %d %q", tt.in, err, tt.line, tt.msg)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("root: alice\n# c\nbob x y\n"))
	f.Add([]byte("a\nb\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		for _, k := range s.Keys() {
			if k == "" || strings.ContainsAny(k, " \t\n") {
				t.Fatalf("bad key %q", k)
			}
			v, _ := s.Lookup(k)
			if (s.Kind == Map) != (v != "") {
				t.Fatalf("kind %s with value %q", s.Kind, v)
			}
		}
	})
}

// Keys with capitals answer their lowercase form, ASCII letters only;
// an exact key wins over a folded one.
func TestFoldedKeys(t *testing.T) {
	s := NewMap(map[string]string{"Postmaster": "root", "k": "exact", "KELVIN": "kelvin"})
	for key, want := range map[string]string{"postmaster": "root", "Postmaster": "root", "k": "exact", "kelvin": "kelvin", "\u212aelvin": ""} {
		if got, _ := s.Lookup(key); got != want {
			t.Errorf("Lookup(%q) = %q, want %q", key, got, want)
		}
	}
}
