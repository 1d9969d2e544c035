package logging

import (
	"bytes"
	"strings"
	"testing"
)

func TestVerboseAndTrace(t *testing.T) {
	var out bytes.Buffer
	l := New("queue", true, false)
	l.out = &out
	l.Debugf("hidden")
	l.SetVerbose(true)
	l.Debugf("shown")
	if got := out.String(); strings.Contains(got, "hidden") || !strings.Contains(got, "queue: shown") {
		t.Errorf("verbose: %q", got)
	}
	if l.SetTrace("nonsense", true) {
		t.Error("unknown subsystem accepted")
	}
	l.SetTrace("smtp", true)
	l.Tracef("smtp", "one")
	l.Tracef("imsg", "two")
	l.SetTrace("all", true)
	l.Tracef("imsg", "three")
	l.SetTrace("all", false)
	l.Tracef("smtp", "four")
	got := out.String()
	for _, want := range []string{"trace smtp: one", "trace imsg: three"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in %q", want, got)
		}
	}
	for _, unwanted := range []string{"two", "four"} {
		if strings.Contains(got, unwanted) {
			t.Errorf("%q logged: %q", unwanted, got)
		}
	}
}
