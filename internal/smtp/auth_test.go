package smtp

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestLoginServer(t *testing.T) {
	check := func(user, password string) error {
		if user == "alice" && password == "s3cret" {
			return nil
		}
		return errAuthInvalid
	}
	for _, tt := range []struct {
		name      string
		responses [][]byte
		wantErr   error
	}{
		{"challenges", [][]byte{nil, []byte("alice"), []byte("s3cret")}, nil},
		{"initial response", [][]byte{[]byte("alice"), []byte("s3cret")}, nil},
		{"wrong password", [][]byte{nil, []byte("alice"), []byte("guess")}, errAuthInvalid},
		{"empty user", [][]byte{nil, []byte(""), []byte("s3cret")}, errAuthInvalid},
		{"NUL in password", [][]byte{nil, []byte("alice"), []byte("s3\x00cret")}, errAuthInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := &loginServer{check: check}
			var done bool
			var err error
			for i, r := range tt.responses {
				var challenge []byte
				challenge, done, err = l.Next(r)
				if i < len(tt.responses)-1 && (done || err != nil || len(challenge) == 0) {
					t.Fatalf("step %d: challenge %q done %v err %v", i, challenge, done, err)
				}
			}
			if !errors.Is(err, tt.wantErr) || (err == nil) != done {
				t.Errorf("end: done %v err %v, want err %v", done, err, tt.wantErr)
			}
			if _, _, err := l.Next([]byte("more")); err == nil {
				t.Error("a finished exchange took another response")
			}
		})
	}
}

func TestAuthFailures(t *testing.T) {
	now := time.Unix(1e9, 0)
	a := newAuthFailures()
	a.now = func() time.Time { return now }
	for range authFailureLimit - 1 {
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
