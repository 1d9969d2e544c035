package proto

import (
	"errors"
	"testing"
	"time"
)

// TestLifecycleStrict: a drain time is never negative, and the
// certificates go from the parent to smtp only.
func TestLifecycleStrict(t *testing.T) {
	var w Writer
	w.I64(int64(-time.Second))
	payload, _ := w.Payload()
	if _, err := Decode(ProcParent, ProcSMTP, Header{Type: TypeParentDrain}, payload, nil); !errors.Is(err, ErrBadFrame) {
		t.Errorf("negative drain time: got %v, want %v", err, ErrBadFrame)
	}
	for _, p := range []Proc{ProcMFA, ProcQueue, ProcMTA, ProcLookup, ProcControl} {
		if Accepts(ProcParent, p, TypeParentListenerCertificate) {
			t.Errorf("%s accepts listener certificates", p)
		}
	}
	if Accepts(ProcControl, ProcSMTP, TypeParentDrain) || Accepts(ProcQueue, ProcParent, TypeSMTPDrained) {
		t.Error("a drain is the parent's and smtp's business only")
	}
}
