package lookup

import (
	"strings"
	"testing"

	"smtpd/proto"
)

// TestExpandExternals: a recipient of an externals action is delivered
// by the action's user, with its local part kept whole (tag and case), also when an
// alias of a local action leads to it; a user that does not exist is a
// temporary failure, a problem of the configuration, not a refusal of
// the recipient.
func TestExpandExternals(t *testing.T) {
	conf := `
external "ssh" { command = "/usr/bin/ssh relay /usr/sbin/sendmail -- ${shquote(dest.address)}" }
action "out" {
  externals = [external.ssh]
  user      = "USER"
}
action "local" {
  mbox  = true
  alias = { team = "alice, Bob+Tag@Remote.example" }
}
match {
  from   = "any"
  for    = "local"
  action = action.local
}
match {
  from   = "any"
  for    = "any"
  action = action.out
}
`
	r := resolver(t, strings.ReplaceAll(conf, "USER", "alice"))
	res := r.Expand(proto.Session{Remote: "127.0.0.1", Local: true, Sender: "a@localhost"}, "Carol+x@Example.NET")
	if res.Status != proto.StatusOK || len(res.Destinations) != 1 {
		t.Fatalf("%+v", res)
	}
	if d := res.Destinations[0]; d.Kind != "mda" || d.Action != "out" || d.User != "alice" || d.Dest != "Carol+x@example.net" || d.Target != "" {
		t.Errorf("destination %+v", d)
	}
	res = r.Expand(proto.Session{Remote: "127.0.0.1", Local: true, Sender: "a@localhost"}, "team@localhost")
	var out []proto.Destination
	for _, d := range res.Destinations {
		if d.Action == "out" {
			out = append(out, d)
		}
	}
	if res.Status != proto.StatusOK || len(out) != 1 || out[0].Dest != "Bob+Tag@remote.example" || out[0].User != "alice" {
		t.Errorf("through the alias: %+v", res)
	}
	r = resolver(t, strings.ReplaceAll(conf, "USER", "nobody-here"))
	if res := r.Expand(remote, "carol@example.net"); res.Status != proto.StatusTempfail {
		t.Errorf("unknown user: %+v", res)
	}
}
