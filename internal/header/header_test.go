package header

import "testing"

func TestIsFieldStart(t *testing.T) {
	for line, want := range map[string]bool{
		"Subject: hi\r\n":  true,
		"X-A:b":            true,
		": no name":        false,
		"Sub ject: x":      false,
		" continued":       false,
		"no colon at all":  false,
		"Caf\xc3\xa9: x\n": false,
	} {
		if got := IsFieldStart([]byte(line)); got != want {
			t.Errorf("IsFieldStart(%q) = %v", line, got)
		}
	}
}
