package policytxt

import "testing"

func TestSyntax(t *testing.T) {
	for _, c := range []struct {
		s           string
		name, value bool
	}{
		{"id", true, true},
		{"a_b-c.d", true, true},
		{"_x", false, true},
		{"", false, false},
		{"0123456789012345678901234567890123", false, true},
		{"a b", false, false},
		{"x=y", false, false},
		{"x;y", false, false},
		{"mailto:a@b,https://c/d", false, true},
		{"caf\xc3\xa9", false, false},
	} {
		if got := ValidName(c.s); got != c.name {
			t.Errorf("ValidName(%q) = %v", c.s, got)
		}
		if got := ValidValue(c.s); got != c.value {
			t.Errorf("ValidValue(%q) = %v", c.s, got)
		}
	}
}
