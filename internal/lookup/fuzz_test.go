package lookup

import (
	"fmt"
	"strings"
	"testing"

	"smtpd/internal/privsep"
	"smtpd/internal/table"
	"smtpd/proto"
)

func FuzzParseForward(f *testing.F) {
	f.Add([]byte("# me\nalice@example.org, \"|/usr/bin/vacation alice\"\n\\alice\n"))
	f.Add([]byte("\"unterminated, a\n,,,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, e := range ParseForward(data) {
			if e == "" || strings.ContainsAny(e, "\n") {
				t.Fatalf("entry %q from %q", e, data)
			}
		}
	})
}

// FuzzAliases expands a recipient through an alias table read from
// fuzzed file content: whatever the aliases say (loops, nesting,
// programs, errors), the expansion ends with a well-formed answer.
func FuzzAliases(f *testing.F) {
	f.Add([]byte("a: b, c\nb: a\nc: |/bin/true\n"), "a")
	f.Add([]byte("a: error:550 5.1.1 gone\n"), "a")
	f.Add([]byte("a: a\n"), "a")
	f.Add([]byte("a: b@example.org, \\\\a, /tmp/x\n"), "a")
	f.Fuzz(func(t *testing.T, data []byte, user string) {
		aliases, err := table.Parse(data)
		if err != nil {
			return
		}
		r := resolver(t, `
table "aliases" { map = { placeholder = "x" } }
action "local" {
  mbox  = true
  alias = table.aliases
}
match {
  from   = "any"
  for    = "any"
  action = action.local
}
`)
		r.Config.Tables[0].Data = aliases
		r.Passwd = func(name string) (proto.Account, error) {
			if len(name) == 1 {
				return proto.Account{Name: name, Directory: "/home/" + name}, nil
			}
			return proto.Account{}, fmt.Errorf("%w %q", privsep.ErrNoUser, name)
		}
		res := r.Expand(proto.Session{Local: true}, user+"@localhost")
		switch res.Status {
		case proto.StatusOK:
			if len(res.Destinations) == 0 {
				t.Fatalf("%q: OK without destinations", user)
			}
		case proto.StatusTempfail, proto.StatusPermfail:
			if res.Reply.Code < 400 || res.Reply.Code > 599 {
				t.Fatalf("%q: status %d with reply %+v", user, res.Status, res.Reply)
			}
		default:
			t.Fatalf("%q: status %d", user, res.Status)
		}
	})
}
