package lookup

import (
	"fmt"
	"os"
	"testing"

	"smtpd/internal/config"
	"smtpd/internal/privsep"
	"smtpd/proto"
)

func resolver(t *testing.T, conf string) *Resolver {
	t.Helper()
	cfg, err := config.Parse([]byte(conf), "/etc/mail/smtpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	r := NewResolver(cfg)
	r.Passwd = func(name string) (proto.Account, error) {
		switch name {
		case "a", "b", "c", "sink", "alice", "root":
			return proto.Account{Name: name, Directory: "/home/" + name, UID: 1000, GID: 1000}, nil
		case "broken":
			return proto.Account{}, fmt.Errorf("passwd unreadable")
		}
		return proto.Account{}, fmt.Errorf("%w %q", privsep.ErrNoUser, name)
	}
	return r
}

var remote = proto.Session{Remote: "192.0.2.1", Helo: "client.example.net", Sender: "x@example.net"}

// TestVirtualOrder walks every step of the virtual lookup order: each
// case removes the key that matched before.
func TestVirtualOrder(t *testing.T) {
	keys := []struct{ key, user string }{
		{"b+tag@example.org", "a"},
		{"b@example.org", "b"},
		{"b+tag", "c"},
		{"b", "alice"},
		{"@example.org", "root"},
		{"@", "sink"},
	}
	for i := range keys {
		conf := "action \"v\" {\n  maildir = \"/m/${dest.user}\"\n  virtual = {\n"
		for _, k := range keys[i:] {
			conf += fmt.Sprintf("    %q = %q\n", k.key, k.user)
		}
		conf += "  }\n}\nmatch {\n  from = \"any\"\n  for = \"any\"\n  action = action.v\n}\n"
		r := resolver(t, conf)
		res := r.Expand(remote, "B+Tag@Example.ORG")
		if res.Status != proto.StatusOK || len(res.Destinations) != 1 || res.Destinations[0].User != keys[i].user {
			t.Errorf("with %q first: %+v", keys[i].key, res)
		}
	}
}

func TestVirtualExamples(t *testing.T) {
	r := resolver(t, `
action "v" {
  maildir = "/m/${dest.user}"
  virtual = { "@example.org" = "a", "b@example.org" = "b" }
}
action "sink" {
  maildir = "/var/mail/sink"
  virtual = { "@" = "sink" }
}
match {
  from   = "any"
  for    = "example.org"
  action = action.v
}
match {
  from   = "any"
  for    = "any"
  action = action.sink
}
`)
	for rcpt, want := range map[string]string{
		"b@example.org":      "b",
		"B+list@example.org": "b",
		"c@example.org":      "a",
		"anyone@other.test":  "sink",
		"z@sub.example.org":  "sink",
	} {
		res := r.Expand(remote, rcpt)
		if res.Status != proto.StatusOK || len(res.Destinations) != 1 || res.Destinations[0].User != want {
			t.Errorf("%s: %+v, want %s", rcpt, res, want)
		}
	}
}

func TestRulesAndAliases(t *testing.T) {
	r := resolver(t, `
hostname = "mx.example.org"
table "aliases" {
  map = {
    postmaster = "root"
    team       = "a, b, team-ext@example.org"
    team-ext   = "c"
    loop1      = "loop2@example.org"
    loop2      = "loop1@example.org, a"
    gone       = "error:550 This user left"
    later      = "error:451 Mailbox moving"
    ghost      = "nobody-here"
  }
}
action "local" {
  mbox  = true
  alias = table.aliases
}
action "out" { relay = "mx" }
match {
  from   = "any"
  for    = ["example.org", "mx.example.org"]
  action = action.local
}
match {
  from   = "10.0.0.0/8"
  for    = "any"
  action = action.out
}
match {
  from   = "any"
  sender = "@spam.test"
  for    = "any"
  reject = true
}
`)
	tests := []struct {
		sess   proto.Session
		rcpt   string
		status proto.Status
		code   uint32
		users  []string
	}{
		{remote, "a@example.org", proto.StatusOK, 0, []string{"a"}},
		{remote, "postmaster@example.org", proto.StatusOK, 0, []string{"root"}},
		{remote, "postmaster", proto.StatusOK, 0, []string{"root"}},
		{remote, "team@example.org", proto.StatusOK, 0, []string{"a", "b", "c"}},
		{remote, "loop1@example.org", proto.StatusOK, 0, []string{"a"}},
		{remote, "gone@example.org", proto.StatusPermfail, 550, nil},
		{remote, "later@example.org", proto.StatusPermfail, 451, nil},
		{remote, "ghost@example.org", proto.StatusPermfail, 550, nil},
		{remote, "nobody@example.org", proto.StatusPermfail, 550, nil},
		{remote, "broken@example.org", proto.StatusTempfail, 451, nil},
		{remote, "x@elsewhere.test", proto.StatusPermfail, 550, nil},
		{proto.Session{Remote: "10.1.2.3"}, "x@elsewhere.test", proto.StatusOK, 0, []string{""}},
		{proto.Session{Remote: "192.0.2.9", Sender: "eve@spam.test"}, "x@elsewhere.test", proto.StatusPermfail, 550, nil},
		{remote, "bad address@example.org", proto.StatusPermfail, 553, nil},
	}
	for _, tt := range tests {
		res := r.Expand(tt.sess, tt.rcpt)
		if res.Status != tt.status || res.Reply.Code != tt.code {
			t.Errorf("%s: %+v", tt.rcpt, res)
			continue
		}
		var users []string
		for _, d := range res.Destinations {
			users = append(users, d.User)
		}
		if fmt.Sprint(users) != fmt.Sprint(tt.users) {
			t.Errorf("%s: users %v, want %v", tt.rcpt, users, tt.users)
		}
	}
	if res := r.Expand(remote, "x@elsewhere.test"); res.Reply.Text != "Relay denied for <x@elsewhere.test>" {
		t.Errorf("relay: %+v", res.Reply)
	}
}

func TestAliasTargets(t *testing.T) {
	dir := t.TempDir()
	list := dir + "/list"
	os.WriteFile(list, []byte("# staff\nb\n c@example.org, |/usr/bin/log staff\n:include:"+dir+"/nested\n"), 0o644)
	os.WriteFile(dir+"/nested", []byte("a\n:include:"+list+"\n"), 0o644)
	r := resolver(t, `
table "aliases" {
  map = {
    prog    = "\"|/usr/bin/vacation -a x, y\", /var/spool/archive"
    staff   = ":include:`+list+`"
    missing = ":include:/nonexistent/list"
    Postmaster = "root"
    root    = "root, a"
  }
}
action "local" {
  mbox  = true
  alias = table.aliases
}
match {
  from   = "any"
  for    = "example.org"
  action = action.local
}
`)
	r.Passwd = func(name string) (proto.Account, error) {
		if name == "nobody" || len(name) == 1 {
			return proto.Account{Name: name}, nil
		}
		return proto.Account{}, fmt.Errorf("%w %q", privsep.ErrNoUser, name)
	}
	res := r.Expand(remote, "prog@example.org")
	if res.Status != proto.StatusOK || len(res.Destinations) != 2 {
		t.Fatalf("%+v", res)
	}
	if d := res.Destinations[0]; d.Target != "|/usr/bin/vacation -a x, y" || d.User != "nobody" || d.Dest != "prog@example.org" {
		t.Errorf("%+v", d)
	}
	if d := res.Destinations[1]; d.Target != "/var/spool/archive" {
		t.Errorf("%+v", d)
	}
	res = r.Expand(remote, "staff@example.org")
	var got []string
	for _, d := range res.Destinations {
		got = append(got, d.User+d.Target)
	}
	if res.Status != proto.StatusOK || fmt.Sprint(got) != "[b c nobody|/usr/bin/log staff a]" {
		t.Errorf("%+v: %v", res, got)
	}
	if res := r.Expand(remote, "missing@example.org"); res.Status != proto.StatusTempfail {
		t.Errorf("unreadable include: %+v", res)
	}
	// a key with capitals answers its lowercase form, and a bare name
	// is expanded through the aliases again, root: root ending the loop
	r.Passwd = func(name string) (proto.Account, error) { return proto.Account{Name: name}, nil }
	res = r.Expand(remote, "postmaster@example.org")
	got = nil
	for _, d := range res.Destinations {
		got = append(got, d.User)
	}
	if res.Status != proto.StatusOK || fmt.Sprint(got) != "[root a]" {
		t.Errorf("postmaster -> root -> root, a: %+v: %v", res, got)
	}
}

func TestForward(t *testing.T) {
	r := resolver(t, `
action "local" { mbox = true }
match {
  from   = "any"
  for    = "example.org"
  action = action.local
}
`)
	forwards := map[string]string{
		"a": "\\a, b, x@example.org, \"|/usr/bin/procmail -t\"\n# comment\n/home/a/archive\n",
		"b": "c\n",
		"c": "b\n", // a loop back to b
		// the user's own name keeps a copy, as \\d does
		"d": "d, x@example.org\n",
	}
	r.Forward = func(acct proto.Account) ([]string, error) {
		if acct.Name == "broken" {
			return nil, fmt.Errorf("unreadable")
		}
		return ParseForward([]byte(forwards[acct.Name])), nil
	}
	r.Passwd = func(name string) (proto.Account, error) {
		if name == "x" || name == "broken" || len(name) == 1 {
			return proto.Account{Name: name, Directory: "/home/" + name}, nil
		}
		return proto.Account{}, fmt.Errorf("%w %q", privsep.ErrNoUser, name)
	}
	res := r.Expand(remote, "a@example.org")
	var got []string
	for _, d := range res.Destinations {
		got = append(got, d.User+":"+d.Target)
	}
	if res.Status != proto.StatusOK || fmt.Sprint(got) != "[a: x: a:|/usr/bin/procmail -t a:/home/a/archive]" {
		t.Errorf("%+v\n%v", res, got)
	}
	if res := r.Expand(remote, "broken@example.org"); res.Status != proto.StatusTempfail {
		t.Errorf("unreadable .forward: %+v", res)
	}
	res = r.Expand(remote, "d@example.org")
	got = nil
	for _, d := range res.Destinations {
		got = append(got, d.User+":"+d.Dest)
	}
	if res.Status != proto.StatusOK || fmt.Sprint(got) != "[d:d@example.org x:x@example.org]" {
		t.Errorf("own name in .forward: %+v\n%v", res, got)
	}
}

// Addresses that an alias gives match as mail from this host: a
// forwarding host needs no rule that would relay for anyone.
func TestExpandedMatchAsLocal(t *testing.T) {
	cfg, err := config.Parse([]byte(`
listen "mx" { address = "127.0.0.1:25" }
table "aliases" { map = { fwd = "someone@far.example" } }
action "local" {
  maildir  = "/var/mail/x"
  alias    = table.aliases
  userbase = { fwd = "1000:1000:/home/fwd" }
}
action "out" { relay = "mx" }
match {
  from   = "any"
  for    = "example.org"
  action = action.local
}
match {
  from   = "local"
  for    = "any"
  action = action.out
}
`), "/etc/mail/smtpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	r := NewResolver(cfg)
	remote := proto.Session{Remote: "192.0.2.7"}
	res := r.Expand(remote, "fwd@example.org")
	if res.Status != proto.StatusOK || len(res.Destinations) != 1 || res.Destinations[0].Action != "out" || res.Destinations[0].Dest != "someone@far.example" {
		t.Errorf("alias to another domain: %+v", res)
	}
	if res := r.Expand(remote, "someone@far.example"); res.Status != proto.StatusPermfail || res.Reply.Code != 550 {
		t.Errorf("direct relaying from outside: %+v", res)
	}
}
