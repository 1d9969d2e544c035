package smtp

import (
	"fmt"
	"testing"
	"time"
)

func TestAuthFailures(t *testing.T) {
	now := time.Unix(1e9, 0)
	const limit = 5
	a := newAuthFailures(limit)
	a.now = func() time.Time { return now }
	for range limit - 1 {
		a.add("192.0.2.1")
	}
	if a.blocked("192.0.2.1") {
		t.Fatal("blocked before the limit")
	}
	a.add("192.0.2.1")
	if !a.blocked("192.0.2.1") || a.blocked("192.0.2.2") {
		t.Fatal("the limit does not block that address alone")
	}
	now = now.Add(authFailureWindow + time.Second)
	if a.blocked("192.0.2.1") || len(a.byIP) != 0 {
		t.Fatalf("old failures kept: %v", a.byIP)
	}
	// addresses that never come back are swept once the table is large
	for i := range maxAuthFailureAddresses {
		a.add(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255))
	}
	now = now.Add(authFailureWindow + time.Second)
	a.add("192.0.2.9")
	if len(a.byIP) != 1 {
		t.Errorf("%d addresses kept, want 1", len(a.byIP))
	}
}
