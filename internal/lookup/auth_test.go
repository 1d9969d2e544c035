package lookup

import (
	"testing"

	"github.com/GehirnInc/crypt/sha512_crypt"
	"golang.org/x/crypto/bcrypt"

	"smtpd/internal/testcert"
)

func TestCheckPassword(t *testing.T) {
	bc, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := sha512_crypt.New().Generate([]byte("secret"), []byte("$6$saltsalt$"))
	if err != nil {
		t.Fatal(err)
	}
	cert, key := testcert.Write(t, t.TempDir())
	r := resolver(t, `
table "users" {
  map = {
    alice = "`+string(bc)+`"
    bob   = "`+sc+`"
    carol = "plain-text"
  }
}
table "senders" {
  map = { alice = "alice@example.org, @example.net" }
}
listen "sub" {
  address = "127.0.0.1:587"
  tls = "starttls"
  cert = "`+cert+`"
  key = "`+key+`"
  auth = true
  auth_table = table.users
  senders = table.senders
}
action "local" {
  maildir = true
}
match {
  action = action.local
}
`)
	for _, tt := range []struct {
		user, password string
		ok, fault      bool
	}{
		{"alice", "secret", true, false},
		{"alice", "Secret", false, false},
		{"bob", "secret", true, false},
		{"bob", "secre", false, false},
		{"nobody", "secret", false, false},
		{"carol", "plain-text", false, true},
	} {
		ok, err := r.CheckPassword("sub", tt.user, tt.password)
		if ok != tt.ok || (err != nil) != tt.fault {
			t.Errorf("CheckPassword(%s, %s) = %v, %v; want %v, fault %v", tt.user, tt.password, ok, err, tt.ok, tt.fault)
		}
	}
	if _, err := r.CheckPassword("nosuch", "alice", "secret"); err == nil {
		t.Error("a listener without auth_table checked a password")
	}
	for _, tt := range []struct {
		user, sender string
		ok           bool
	}{
		{"alice", "alice@example.org", true},
		{"alice", "Alice@Example.org", true},
		{"alice", "anyone@example.net", true},
		{"alice", "bob@example.org", false},
		{"bob", "bob@example.org", false},
	} {
		if got, err := r.SenderAllowed("sub", tt.user, tt.sender); got != tt.ok || err != nil {
			t.Errorf("SenderAllowed(%s, %s) = %v, want %v", tt.user, tt.sender, got, tt.ok)
		}
	}
}

// TestETRNAllowed: the etrn table of a listener holds the addresses and
// networks of the clients that may use ETRN; other listeners allow none.
func TestETRNAllowed(t *testing.T) {
	r := resolver(t, `
table "sites" { list = ["192.0.2.7", "2001:db8::/32"] }
listen "mx" {
  address = "127.0.0.1:25"
  etrn    = table.sites
}
listen "plain" { address = "127.0.0.1:26" }
action "local" {
  maildir = true
}
match {
  action = action.local
}
`)
	for _, tt := range []struct {
		listener, remote string
		ok               bool
	}{
		{"mx", "192.0.2.7", true},
		{"mx", "::ffff:192.0.2.7", true},
		{"mx", "2001:db8::25", true},
		{"mx", "192.0.2.8", false},
		{"mx", "not an address", false},
		{"mx", "", false},
		{"plain", "192.0.2.7", false},
		{"nosuch", "192.0.2.7", false},
	} {
		if got, err := r.ETRNAllowed(tt.listener, tt.remote); got != tt.ok || err != nil {
			t.Errorf("ETRNAllowed(%s, %q) = %v, %v; want %v", tt.listener, tt.remote, got, err, tt.ok)
		}
	}
}
