package config

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"smtpd/internal/address"
	"smtpd/proto"
)

const externalsConf = `
external "home" {
  command   = "ssh -C -o BatchMode=yes relay.example.org /usr/sbin/sendmail -oi -f ${sender.address} -- ${dest.address}"
  timeout   = "90s"
  temporary = [1, 255]
}
external "work" { command = "/usr/local/bin/send-work '${sender.address}'" }
external "backup" { command = "/usr/bin/msmtp -- ${dest.address}" }

action "out" {
  externals = [external.home, external.backup]
  user      = "alice"
  route {
    header    = "From"
    regex     = "@work\\.example\\.org>?$"
    externals = [external.work, external.home]
  }
  route {
    header    = "x-route"
    regex     = "(?i)^backup$"
    externals = [external.backup]
  }
}

match {
  for    = "any"
  action = action.out
}
`

func TestExternals(t *testing.T) {
	p := write(t, t.TempDir(), "smtpd.conf", externalsConf)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Externals) != 3 {
		t.Fatalf("%d externals", len(cfg.Externals))
	}
	home, work, backup := cfg.Externals[0], cfg.Externals[1], cfg.Externals[2]
	if home.Timeout != 90*time.Second || work.Timeout != DefaultExternalTimeout {
		t.Errorf("timeouts %v %v", home.Timeout, work.Timeout)
	}
	for code, want := range map[int]bool{75: true, 1: true, 255: true, 2: false, 69: false} {
		if home.IsTemporary(code) != want {
			t.Errorf("home: exit %d temporary %v", code, !want)
		}
	}
	if work.IsTemporary(1) || !work.IsTemporary(75) {
		t.Error("work: only 75 is temporary")
	}
	vars := TemplateVars{
		Dest:   address.Address{User: "bob+x", Domain: "example.net"},
		Rcpt:   address.Address{User: "bob+x", Domain: "example.net"},
		Sender: address.Address{User: "a;rm -rf /", Domain: "example.org"},
		User:   proto.Account{Name: "alice"},
	}
	argv, err := home.Command.Argv(vars)
	want := []string{"ssh", "-C", "-o", "BatchMode=yes", "relay.example.org", "/usr/sbin/sendmail", "-oi", "-f", "a;rm -rf /@example.org", "--", "bob+x@example.net"}
	if err != nil || !slices.Equal(argv, want) {
		t.Errorf("argv %q %v", argv, err)
	}
	a := cfg.Action("out")
	if a.Method != Externals || a.User != "alice" || !slices.Equal(a.Externals, []*ExternalCommand{home, backup}) || len(a.Routes) != 2 {
		t.Fatalf("action %+v", a)
	}
	for _, tt := range []struct {
		fields map[string][]string
		want   []*ExternalCommand
	}{
		{map[string][]string{"from": {"Alice <alice@work.example.org>"}}, []*ExternalCommand{work, home}},
		{map[string][]string{"from": {"alice@home.example.org"}}, []*ExternalCommand{home, backup}},
		{map[string][]string{"from": {"alice@work.example.org.evil"}}, []*ExternalCommand{home, backup}},
		{map[string][]string{"x-route": {"other", "BACKUP"}}, []*ExternalCommand{backup}},
		// the first route that matches wins
		{map[string][]string{"from": {"a@work.example.org"}, "x-route": {"backup"}}, []*ExternalCommand{work, home}},
		{nil, []*ExternalCommand{home, backup}},
	} {
		got := a.ExternalsFor(func(name string) []string { return tt.fields[strings.ToLower(name)] })
		if !slices.Equal(got, tt.want) {
			t.Errorf("%v: got %d externals", tt.fields, len(got))
		}
	}
	// the longest list runs to 90s + 5m; the parent waits that long
	if got := a.ExternalsTimeout(); got != 90*time.Second+DefaultExternalTimeout {
		t.Errorf("ExternalsTimeout %v", got)
	}
}

func TestBrokenExternals(t *testing.T) {
	base := `listen "mx" { address = "127.0.0.1:2525" }
external "a" { command = "/bin/true" }
`
	act := func(body string) string { return base + "action \"o\" {\n  user = \"alice\"\n" + body + "}\n" }
	tests := []brokenConfig{
		{"unknown external", act("  externals = [external.b]\n"), 5, `There is no external "b". Defined: a.`},
		{"empty list", act("  externals = []\n"), 5, "at least one external"},
		{"string list", act("  externals = [\"a\"]\n"), 5, "Reference expected"},
		{"listed twice", act("  externals = [external.a, external.a]\n"), 5, "lists a external twice"},
		{"no user", base + "action \"o\" {\n  externals = [external.a]\n}\n", 3, "Missing user"},
		{"alias", act("  externals = [external.a]\n  alias = { a = \"b\" }\n"), 6, "applies to local deliveries"},
		{"relay option", act("  externals = [external.a]\n  helo = \"x\"\n"), 6, "relay actions only"},
		{"with mbox", act("  externals = [external.a]\n  mbox = true\n"), 3, "exactly one of"},
		{"bad regex", act("  externals = [external.a]\n  route {\n    header = \"From\"\n    regex = \"(work\"\n    externals = [external.a]\n  }\n"), 8, "Invalid regex"},
		{"route without regex", act("  externals = [external.a]\n  route {\n    header = \"From\"\n    externals = [external.a]\n  }\n"), 6, `The argument "regex" is required`},
		{"route to unknown", act("  externals = [external.a]\n  route {\n    header = \"From\"\n    regex = \"x\"\n    externals = [external.c]\n  }\n"), 9, `There is no external "c"`},
		{"route empty", act("  externals = [external.a]\n  route {\n    header = \"From\"\n    regex = \"x\"\n    externals = []\n  }\n"), 9, "at least one external"},
		{"bad header name", act("  externals = [external.a]\n  route {\n    header = \"From:\"\n    regex = \"x\"\n    externals = [external.a]\n  }\n"), 7, "not a header field name"},
		{"route in mbox action", base + "action \"m\" {\n  mbox = true\n  route {\n    header = \"From\"\n    regex = \"x\"\n    externals = [external.a]\n  }\n}\n", 5, "Route without externals"},
		{"bad timeout", base + "external \"t\" {\n  command = \"/bin/true\"\n  timeout = \"soon\"\n}\n", 5, "not a duration"},
		{"zero timeout", base + "external \"t\" {\n  command = \"/bin/true\"\n  timeout = \"0s\"\n}\n", 5, "more than zero"},
		{"bad exit code", base + "external \"t\" {\n  command = \"/bin/true\"\n  temporary = [0]\n}\n", 5, "not an exit code"},
		{"no command", base + "external \"t\" {\n  timeout = \"1m\"\n}\n", 3, `The argument "command" is required`},
		{"empty command", base + "external \"t\" {\n  command = \"  \"\n}\n", 4, "empty"},
		{"unterminated quote", base + "external \"t\" {\n  command = \"/bin/x 'a b\"\n}\n", 4, "unterminated quote"},
		{"bad variable", base + "external \"t\" {\n  command = \"/bin/x ${rcpt}\"\n}\n", 4, "string"},
		{"misspelt variable", base + "external \"t\" {\n  command = \"/bin/x ${sender.adress}\"\n}\n", 4, `"adress"`},
		{"duplicate external", base + "external \"a\" { command = \"/bin/false\" }\n", 3, "Duplicate external name"},
	}
	checkBroken(t, tests)
}

// TestShellQuote: ssh hands its arguments to a shell on the far side,
// so that an address must reach it quoted; shquote and the other
// functions see the values themselves in a command.
func TestShellQuote(t *testing.T) {
	c, err := Parse([]byte(`external "x" { command = "ssh relay /usr/sbin/sendmail -f ${shquote(sender.address)} -- ${shquote(lower(dest.address))} ${upper(dest.user)}" }`), "/etc/smtpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	evil := "a'b;`reboot`$(id) \"c\"\\"
	vars := TemplateVars{Dest: address.Address{User: "Bob", Domain: "Example.NET"}, Sender: address.Address{User: evil, Domain: "example.org"}}
	argv, err := c.Externals[0].Command.Argv(vars)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ssh", "relay", "/usr/sbin/sendmail", "-f", ShellQuote(evil + "@example.org"), "--", "'bob@example.net'", "BOB"}
	if !slices.Equal(argv, want) {
		t.Fatalf("argv %q, want %q", argv, want)
	}
	// what the remote shell makes of the word is the address again
	out, err := exec.Command("/bin/sh", "-c", "printf %s "+argv[4]).Output()
	if err != nil || string(out) != evil+"@example.org" {
		t.Errorf("the shell read %q (%v)", out, err)
	}
}
