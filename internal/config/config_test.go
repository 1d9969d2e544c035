package config

import (
	"smtpd/internal/address"
	"smtpd/internal/dns"

	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExamples(t *testing.T) {
	paths, _ := filepath.Glob("../../etc/*.conf")
	if len(paths) < 3 {
		t.Fatalf("found %d example configs", len(paths))
	}
	for _, p := range paths {
		if _, err := Load(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "virtuals", "# virtual users\npostmaster@example.org alice\n@example.org catchall\n")
	p := write(t, dir, "smtpd.conf", `
hostname = "mx.example.org"
spool    = "spool"

limits {
  message_size = "10M"
  recipients   = 500
  queue_expire = "5d"
}

table "domains"  { list = ["example.org", "example.net"] }
table "virtuals" { file = "virtuals" }

listen "mx" { address = "127.0.0.1:2525" }

action "local" {
  maildir = "/var/vmail/${dest.domain}/${lower(dest.user)}"
  virtual = table.virtuals
}
action "sink" {
  maildir = "sink"
  virtual = { "@" = "catchall" }
}
action "out" { relay = "smtps://relay.example.net" }

match {
  from   = "any"
  for    = table.domains
  sender = ["@example.com", "bob@example.net"]
  action = action.local
}
match {
  from   = "10.0.0.0/8"
  for    = "example.com"
  action = action.sink
}
match {
  for    = "any"
  action = action.out
}
match {
  from   = "any"
  for    = "any"
  reject = true
}
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.SpoolDir != filepath.Join(dir, "spool") || c.ControlSocket != DefaultControlSocket || c.User != "_smtpd" {
		t.Errorf("globals %+v", c)
	}
	if c.Limits.MessageSize != 10<<20 || c.Limits.Recipients != 500 || c.Limits.QueueExpire != 120*time.Hour || c.Limits.MailsPerSession != 100 {
		t.Errorf("limits %+v", c.Limits)
	}
	if v, ok := c.Table("virtuals").Data.Lookup("@example.org"); !ok || v != "catchall" {
		t.Errorf("virtuals: %q %v", v, ok)
	}
	local := c.Action("local")
	if local.Method != Maildir || local.Virtual != c.Table("virtuals") {
		t.Errorf("local %+v", local)
	}
	got, err := local.Target.Eval(TemplateVars{Dest: address.Address{User: "Bob", Domain: "example.org"}})
	if err != nil || got != "/var/vmail/example.org/bob" {
		t.Errorf("template: %q %v", got, err)
	}
	sink := c.Action("sink")
	if got, _ := sink.Target.Eval(sampleVars); got != filepath.Join(dir, "sink") {
		t.Errorf("relative maildir: %q", got)
	}
	if v, _ := sink.Virtual.Data.Lookup("@"); !sink.Virtual.Inline || v != "catchall" {
		t.Errorf("inline virtual %+v", sink.Virtual)
	}
	if out := c.Action("out"); out.Method != Relay || out.RelayURL.Host != "relay.example.net" {
		t.Errorf("out %+v", out)
	}
	m := c.Matches
	if len(m) != 4 || m[0].For.Table != c.Table("domains") || m[0].From.Kind != CondAny || m[0].Action != local {
		t.Fatalf("match 0 %+v", m[0])
	}
	if _, ok := m[0].Sender.Table.Data.Lookup("bob@example.net"); !ok {
		t.Errorf("sender list")
	}
	if _, ok := m[1].From.Table.Data.Lookup("10.0.0.0/8"); !ok || m[1].For.Kind != CondTable {
		t.Errorf("match 1 %+v", m[1])
	}
	if m[2].From.Kind != CondLocal || m[2].For.Kind != CondAny {
		t.Errorf("match 2 defaults %+v", m[2])
	}
	if !m[3].Reject || m[3].Action != nil {
		t.Errorf("match 3 %+v", m[3])
	}
}

// TestBroken checks that every broken configuration is refused with a
// diagnostic that names the file and the line of the problem.
func TestBroken(t *testing.T) {
	base := `listen "mx" { address = "127.0.0.1:2525" }
action "local" { mbox = true }
`
	tests := []brokenConfig{
		{"unknown table", base + "match {\n  for = table.domians\n  action = action.local\n}\n", 4, `There is no table "domians"`},
		{"unknown action", base + "match {\n  action = action.lcoal\n}\n", 4, `There is no action "lcoal". Defined: local.`},
		{"unknown attribute", base + "match {\n  action = action.local\n  form = \"any\"\n}\n", 5, "Unsupported argument"},
		{"unknown block", base + "server \"x\" {}\n", 3, "Unsupported block type"},
		{"missing required", "listen \"mx\" {\n  tls = \"none\"\n}\n", 1, `The argument "address" is required`},
		{"type error", base + "limits {\n  recipients = \"many\"\n}\n", 4, "a number is required"},
		{"limit too low", base + "limits {\n  recipients = 5\n}\n", 4, "at least 100"},
		{"bad size", base + "limits {\n  message_size = \"35X\"\n}\n", 4, "not a size"},
		{"bad duration", base + "limits {\n  queue_expire = \"soon\"\n}\n", 4, "not a duration"},
		{"duplicate table", base + "table \"t\" { list = [] }\ntable \"t\" { list = [] }\n", 4, "Duplicate table name"},
		{"duplicate action", base + "action \"local\" { mbox = true }\n", 3, "Duplicate action name"},
		{"bad template variable", base + "action \"m\" {\n  maildir = \"/var/mail/${dest.usr}\"\n}\n", 4, `"usr"`},
		{"bad template syntax", base + "action \"m\" {\n  maildir = \"/var/mail/%{dest.user}\"\n}\n", 4, "Invalid template"},
		{"unreadable table file", base + "table \"t\" {\n  file = \"/nonexistent/table\"\n}\n", 4, "no such file"},
		{"two methods", base + "action \"x\" {\n  mbox = true\n  relay = \"mx\"\n}\n", 3, "exactly one of"},
		{"no action", base + "match {\n  for = \"any\"\n}\n", 3, "Missing action"},
		{"action is a string", base + "match {\n  action = \"local\"\n}\n", 4, "Action reference expected"},
		{"table as action", base + "table \"t\" { list = [] }\nmatch {\n  action = table.t\n}\n", 5, "Action reference expected"},
		{"bad tls mode", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  tls = \"yes\"\n}\n", 3, "Invalid TLS mode"},
		{"tls without cert", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  tls = \"smtps\"\n}\n", 1, "needs both cert and key"},
		{"bad address", "listen \"mx\" {\n  address = \"localhost\"\n}\n", 2, "not host:port"},
		{"bad relay", base + "action \"o\" {\n  relay = \"ftp://x\"\n}\n", 4, "not one of smtp"},
		{"password in relay", base + "action \"o\" {\n  relay = \"smtp://u:p@x\"\n}\n", 4, "Password in relay URL"},
		{"relay option on local", base + "action \"o\" {\n  mbox = true\n  helo = \"x\"\n}\n", 5, "relay actions only"},
		{"syntax error", "listen \"mx\" {\n  address = \n}\n", 2, "Invalid expression"},
		{"bad hostname", "hostname = \"bad host\"\n", 1, "not a host name"},
		{"table as number", base + "match {\n  for = 42\n  action = action.local\n}\n", 4, "Table expected"},
		{"auth without tls", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  auth = true\n}\n", 3, "AUTH without TLS"},
		{"auth table without auth", "table \"u\" { map = { a = \"x\" } }\nlisten \"mx\" {\n  address = \"127.0.0.1:25\"\n  auth_table = table.u\n}\n", 2, "does not offer AUTH"},
		{"unnamed filter", base + "filter {\n  from = \"192.0.2.1\"\n}\n", 3, "Missing name for filter"},
		{"unknown filter", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  filters = [filter.dkim]\n}\n", 3, `There is no filter "dkim"`},
		{"filter list of strings", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  filters = [\"dkim\"]\n}\nfilter \"dkim\" { milter = \"unix:/run/dkim.sock\" }\n", 3, "Reference expected"},
		{"filter twice in chain", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  filters = [filter.a, filter.a]\n}\nfilter \"a\" { from = \"192.0.2.1\" }\n", 3, "lists a filter twice"},
		{"command and milter", base + "filter \"x\" {\n  command = \"/bin/cat\"\n  milter = \"unix:/s\"\n}\n", 3, "both command and milter"},
		{"relative command", base + "filter \"x\" {\n  command = \"filter-x -v\"\n}\n", 4, "absolute path"},
		{"unterminated quote", base + "filter \"x\" {\n  command = \"/bin/x 'a b\"\n}\n", 4, "unterminated quote"},
		{"bad milter address", base + "filter \"x\" {\n  milter = \"/run/dkim.sock\"\n}\n", 4, "unix:"},
		{"milter with user", base + "filter \"x\" {\n  milter = \"inet:127.0.0.1:8891\"\n  user = \"nobody\"\n}\n", 5, "A milter runs on its own"},
		{"builtin attribute on command", base + "filter \"x\" {\n  command = \"/bin/cat\"\n  from = \"192.0.2.1\"\n}\n", 5, "belongs to built-in filters"},
		{"timeout on builtin", base + "filter \"x\" {\n  from = \"192.0.2.1\"\n  timeout = \"5s\"\n}\n", 5, "belongs to filters with a command"},
		{"bad failure policy", base + "filter \"x\" {\n  command = \"/bin/cat\"\n  failure = \"ignore\"\n}\n", 5, "Invalid failure policy"},
		{"bad rate", base + "throttle {\n  connect_rate = \"10 per second\"\n}\n", 4, "not a rate"},
		{"bad destination", base + "destination \"bad domain\" {\n  sessions = 2\n}\n", 3, "not a domain name"},
		{"duplicate destination", base + "destination \"a.example\" { sessions = 1 }\ndestination \"A.example\" { sessions = 2 }\n", 4, "Duplicate destination"},
		{"empty overload", base + "overload {\n}\n", 3, "Empty overload block"},
		{"overload low above high", base + "overload {\n  queue_high = 10\n  queue_low = 20\n}\n", 5, "between 0 and queue_high"},
		{"unknown check", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  checks = [\"spf\", \"sender-id\"]\n}\n", 3, "not one of fcrdns"},
		{"dmarc alone", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  checks = [\"dmarc\"]\n}\n", 3, "DMARC without SPF and DKIM"},
		{"dnsbl without lists", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  checks = [\"dnsbl\"]\n}\n", 3, "without lists"},
		{"bad list answer", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  checks = [\"dnsbl\"]\n  dnsbl = [\"zen.example=10.0.0.2\"]\n}\n", 4, "127.0.0.0/8"},
		{"result of a check not made", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  filters = [filter.j]\n}\nfilter \"j\" {\n  spf = [\"fail\"]\n  action = \"junk\"\n}\n", 3, "does not check spf"},
		{"junk at commit", base + "filter \"j\" {\n  dmarc = [\"fail\"]\n  action = \"junk\"\n}\n", 5, "Junk too late"},
		{"unknown result", base + "filter \"j\" {\n  spf = [\"failed\"]\n}\n", 4, "is not a result"},
		{"dkim without key", base + "dkim \"d\" {\n  domain = \"example.org\"\n  selector = \"s1\"\n}\n", 3, `The argument "key" is required`},
		{"dkim headers without from", base + "dkim \"d\" {\n  domain = \"example.org\"\n  selector = \"s1\"\n  key = \"/etc/hostname\"\n  headers = [\"subject\"]\n}\n", 7, "From not signed"},
		{"two sealing keys", base + "dkim \"d\" {\n  domain = \"example.org\"\n  selector = \"s1\"\n  key = \"/etc/hostname\"\n}\naction \"o\" {\n  relay = \"mx\"\n  seal = [dkim.d, dkim.d]\n}\n", 10, "lists a dkim twice"},
		{"unknown dkim key", base + "action \"o\" {\n  relay = \"mx\"\n  sign = [dkim.nope]\n}\n", 5, `There is no dkim "nope"`},
		{"dmarc in a match rule", base + "match {\n  dmarc = [\"fail\"]\n  reject = true\n}\n", 4, "known at the end of the message"},
		{"proxy without trusted", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  proxy_protocol = true\n}\n", 3, "without trusted balancers"},
		{"bad trusted balancer", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  proxy_protocol = true\n  proxy_trusted = [\"balancer\"]\n}\n", 4, "not an IP address or network"},
		{"short srs age", base + "srs {\n  key = \"/etc/hostname\"\n  max_age = \"1h\"\n}\n", 5, "at least a day"},
		{"bad destination tls", base + "destination \"a.example\" {\n  tls = \"dnssec\"\n}\n", 4, "Invalid TLS policy"},
		{"bad report sender", base + "tls_reports {\n  from = \"nobody\"\n}\n", 4, "not a mail address"},
		{"default report sender of a bad hostname", "hostname = \"bad_host\"\n" + base + "tls_reports {\n  enabled = true\n}\n", 1, "not a mail address"},
		{"bad mta-sts port", "mta_sts_port = 0\n" + base, 1, "not a port number"},
		{"etrn on lmtp", "listen \"lm\" {\n  address = \"127.0.0.1:24\"\n  protocol = \"lmtp\"\n  etrn = [\"127.0.0.1\"]\n}\n", 4, "ETRN on an LMTP listener"},
		{"etrn of a missing table", "listen \"mx\" {\n  address = \"127.0.0.1:25\"\n  etrn = table.nope\n}\n", 3, `There is no table "nope"`},
	}
	checkBroken(t, tests)
}

// brokenConfig is a configuration that must not load: its first
// diagnostic is at line, and says want.
type brokenConfig struct {
	name, conf string
	line       int
	want       string
}

// checkBroken loads each configuration and checks that it fails with
// its diagnostic, naming the file and the line.
func checkBroken(t *testing.T, tests []brokenConfig) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := write(t, t.TempDir(), "smtpd.conf", tt.conf)
			_, err := Load(p)
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("loaded: %v", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("no %q in:\n%s", tt.want, msg)
			}
			sub := le.Diags[0].Subject
			if sub == nil || sub.Filename != p || sub.Start.Line != tt.line {
				t.Errorf("first diagnostic at %v, want %s line %d:\n%s", sub, p, tt.line, msg)
			}
			if !strings.Contains(msg, "on "+p+" line ") {
				t.Errorf("message does not name file and line:\n%s", msg)
			}
		})
	}
}

// Named filters of the three kinds, chained by listeners; throttle,
// destination and overload blocks.
func TestFilters(t *testing.T) {
	p := write(t, t.TempDir(), "smtpd.conf", `
listen "mx" {
  address = "127.0.0.1:25"
  filters = [filter.no-dynamic, filter.senderscore, filter.dkim]
}
listen "local" { address = "127.0.0.1:2525" }
filter "no-dynamic" {
  helo_regex = "dynamic"
  action     = "disconnect"
}
filter "senderscore" {
  command = "/usr/libexec/opensmtpd/filter-senderscore -blockBelow 10 -message 'go away'"
  user    = "_smtpf"
  timeout = "5s"
  failure = "proceed"
}
filter "dkim" { milter = "inet:127.0.0.1:8891" }
throttle {
  connect_rate      = "20/s"
  message_rate      = "100/m"
  user_message_rate = "1000/h"
}
destination "gmail.com" {
  sessions     = 3
  message_rate = "60/m"
  tls          = "dane"
}
destination "*" { message_rate = "600/m" }
overload {
  queue_high     = 1000
  spool_free_low = "1G"
}
`)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	chain := cfg.Listeners[0].Filters
	if len(chain) != 3 || chain[0].Name != "no-dynamic" || chain[1].Name != "senderscore" || chain[2].Name != "dkim" || len(cfg.Listeners[1].Filters) != 0 {
		t.Fatalf("chains %v %v", chain, cfg.Listeners[1].Filters)
	}
	nd, ss, dk := chain[0], chain[1], chain[2]
	if nd.Kind != FilterBuiltin || nd.Phase != "helo" || nd.Action != "disconnect" || nd.Code != 421 {
		t.Errorf("built-in %+v", nd)
	}
	if ss.Kind != FilterProc || strings.Join(ss.Command, "|") != "/usr/libexec/opensmtpd/filter-senderscore|-blockBelow|10|-message|go away" ||
		ss.User != "_smtpf" || ss.Timeout != 5*time.Second || ss.Failure != FailProceed {
		t.Errorf("command %+v", ss)
	}
	if dk.Kind != FilterMilter || dk.MilterNetwork != "tcp" || dk.MilterAddress != "127.0.0.1:8891" || dk.Timeout != DefaultFilterTimeout || dk.Failure != FailTempfail {
		t.Errorf("milter %+v", dk)
	}
	if cfg.Filter("dkim") != dk || cfg.Filters[dk.ID] != dk {
		t.Errorf("filter ids")
	}
	if th := cfg.Throttle; th.ConnectRate != (Rate{20, time.Second}) || th.MessageRate != (Rate{100, time.Minute}) || th.UserMessageRate != (Rate{1000, time.Hour}) {
		t.Errorf("throttle %+v", th)
	}
	if d := cfg.DestinationFor("GMAIL.com."); d == nil || d.Sessions != 3 || d.MessageRate.String() != "60/m" || d.TLS != PolicyDANE {
		t.Errorf("gmail %+v", d)
	}
	if d := cfg.DestinationFor("example.org"); d == nil || d.Domain != "*" || d.Sessions != 0 {
		t.Errorf("default destination %+v", d)
	}
	if o := cfg.Overload; o.QueueHigh != 1000 || o.QueueLow != 900 || o.SpoolFreeLow != 1<<30 || o.SpoolFreeHigh != 3<<29 {
		t.Errorf("overload %+v", o)
	}
}

func TestSplitCommand(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{
		{"/bin/x", []string{"/bin/x"}},
		{"  /bin/x  -a\tb ", []string{"/bin/x", "-a", "b"}},
		{`/bin/x "a b" 'c "d"' e\ f ""`, []string{"/bin/x", "a b", `c "d"`, "e f", ""}},
	} {
		got, err := splitCommand(tt.in)
		if err != nil || strings.Join(got, "|") != strings.Join(tt.want, "|") || len(got) != len(tt.want) {
			t.Errorf("%q: %q %v", tt.in, got, err)
		}
	}
	for _, bad := range []string{"", "   ", `/bin/x "a`, `/bin/x \`} {
		if _, err := splitCommand(bad); err == nil {
			t.Errorf("%q split", bad)
		}
	}
}

func TestBrokenTableFile(t *testing.T) {
	dir := t.TempDir()
	tf := write(t, dir, "aliases", "root: alice\nbob\n")
	p := write(t, dir, "smtpd.conf", "table \"aliases\" { file = \"aliases\" }\n")
	_, err := Load(p)
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("loaded: %v", err)
	}
	if sub := le.Diags[0].Subject; sub.Filename != tf || sub.Start.Line != 2 {
		t.Errorf("at %v", sub)
	}
	if !strings.Contains(err.Error(), "on "+tf+" line 2") || !strings.Contains(err.Error(), "list entry in a table of map entries") {
		t.Errorf("message:\n%s", err)
	}
}

func FuzzLoad(f *testing.F) {
	paths, _ := filepath.Glob("../../etc/*.conf")
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Add([]byte("match {\n  from = [\"a\"]\n  action = action.x\n}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "/nonexistent/fuzz.conf")
		if err != nil {
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("not a diagnostic: %v", err)
			}
			return
		}
		for _, m := range c.Matches {
			if (m.Action == nil) == !m.Reject {
				t.Fatalf("match with action %v reject %v", m.Action, m.Reject)
			}
		}
	})
}

func TestArgv(t *testing.T) {
	c, err := Parse([]byte(`action "m" { mda = "/usr/bin/deliver -f '${sender.address}' --to ${dest.user} \"a b\" x\\ y" }`), "/etc/smtpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	vars := TemplateVars{Dest: address.Address{User: "bob", Domain: "example.org"}, Sender: address.Address{User: "<;sleep 66;>", Domain: "evil example"}}
	argv, err := c.Action("m").Target.Argv(vars)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/usr/bin/deliver", "-f", "<;sleep 66;>@evil example", "--to", "bob", "a b", "x y"}
	if strings.Join(argv, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", argv, want)
	}
	for _, bad := range []string{`"unterminated`, `trailing\`} {
		if _, err := SplitWords(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestLoadWithoutTables: every process but lookup loads the
// configuration without reading a table file (a local delivery runs as
// the recipient, who may not read them) and without keeping the data of
// inline tables either.
func TestLoadWithoutTables(t *testing.T) {
	dir := t.TempDir()
	p := write(t, dir, "smtpd.conf", "table \"secrets\" { file = \"/nonexistent/secrets\" }\ntable \"inline\" { map = { alice = \"s3cret\" } }\n")
	if _, err := Load(p); err == nil {
		t.Fatal("Load read a missing table file")
	}
	c, err := LoadWithoutTables(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"secrets", "inline"} {
		if tb := c.Table(name); tb == nil || tb.Data != nil {
			t.Errorf("table %s: %+v, want no data", name, tb)
		}
	}
}

// The outbound TLS settings: resolvers on this host are trusted to
// validate DNSSEC, others not unless said; mta's state directory sits
// beside the spool; TLS reports are on with the host's names.
func TestOutboundTLSSettings(t *testing.T) {
	base := "hostname = \"mx.example.org\"\nspool = \"/var/spool/smtpd\"\nlisten \"mx\" { address = \"127.0.0.1:25\" }\n"
	tests := []struct {
		name, conf string
		check      func(*Config) bool
	}{
		{"defaults", base, func(c *Config) bool {
			// with no resolver, those of resolv.conf decide
			servers, _ := dns.SystemServers()
			return c.ResolverValidates == dns.ValidatingServers(servers) && c.MTAStateDir == "/var/spool/smtpd-mta" && c.MTASTSPort == 443 && c.CAFile == "" &&
				c.TLSReports == TLSReports{Enabled: true, Organization: "mx.example.org", Contact: "postmaster@mx.example.org", From: "noreply-tlsrpt@mx.example.org"}
		}},
		{"local resolver", base + "resolver = [\"127.0.0.1\", \"[::1]:53\"]\n", func(c *Config) bool { return c.ResolverValidates }},
		{"remote resolver said not to validate", base + "resolver = [\"127.0.0.1\"]\nresolver_validates = false\n", func(c *Config) bool { return !c.ResolverValidates }},
		{"remote resolver", base + "resolver = [\"127.0.0.1\", \"192.0.2.53\"]\n", func(c *Config) bool { return !c.ResolverValidates }},
		{"remote resolver said to validate", base + "resolver = [\"192.0.2.53\"]\nresolver_validates = true\n", func(c *Config) bool { return c.ResolverValidates }},
		{"state dir and reports", base + "mta_state_dir = \"/var/lib/smtpd\"\ntls_reports {\n  enabled = false\n  organization = \"Example\"\n}\n", func(c *Config) bool {
			return c.MTAStateDir == "/var/lib/smtpd" && !c.TLSReports.Enabled && c.TLSReports.Organization == "Example"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(write(t, t.TempDir(), "smtpd.conf", tt.conf))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg) {
				t.Errorf("resolver_validates %v, mta_state_dir %q, mta_sts_port %d, ca_file %q, tls_reports %+v",
					cfg.ResolverValidates, cfg.MTAStateDir, cfg.MTASTSPort, cfg.CAFile, cfg.TLSReports)
			}
		})
	}
}

// TestETRN: a listener's etrn attribute is a table of client addresses
// and networks, by reference or inline; without it ETRN is off.
func TestETRN(t *testing.T) {
	p := write(t, t.TempDir(), "smtpd.conf", `
table "sites" { list = ["192.0.2.7", "2001:db8::/32"] }
listen "mx" {
  address = "127.0.0.1:25"
  etrn    = table.sites
}
listen "inline" {
  address = "127.0.0.1:26"
  etrn    = ["10.0.0.0/8"]
}
listen "off" { address = "127.0.0.1:27" }
`)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Listeners[0]; l.ETRN == nil || l.ETRN.Name != "sites" {
		t.Errorf("mx etrn = %+v, want table sites", l.ETRN)
	}
	if l := cfg.Listeners[1]; l.ETRN == nil || !l.ETRN.Inline {
		t.Errorf("inline etrn = %+v, want an inline table", l.ETRN)
	}
	if l := cfg.Listeners[2]; l.ETRN != nil {
		t.Errorf("off etrn = %+v, want none", l.ETRN)
	}
}

func TestNeedsMFA(t *testing.T) {
	key := &DKIMKey{Name: "k"}
	for _, c := range []struct {
		name string
		cfg  Config
		want bool
	}{
		{"nothing", Config{Listeners: []*Listener{{Name: "mx"}}, Actions: []*Action{{Name: "local"}}}, false},
		{"a filter", Config{Filters: []*Filter{{Name: "f", Kind: FilterBuiltin}}}, true},
		{"checks on a listener", Config{Listeners: []*Listener{{Name: "mx", Checks: []string{CheckSPF}}}}, true},
		{"an action that signs", Config{Actions: []*Action{{Name: "relay", Sign: []*DKIMKey{key}}}}, true},
		{"an action that seals", Config{Actions: []*Action{{Name: "relay", Seal: key}}}, true},
	} {
		if got := c.cfg.NeedsMFA(); got != c.want {
			t.Errorf("%s: NeedsMFA %v, want %v", c.name, got, c.want)
		}
	}
}

// A load error's lines name file and line on one line each, with what
// is wrong, as the log of a reload shows them.
func TestLoadErrorLines(t *testing.T) {
	path := write(t, t.TempDir(), "smtpd.conf", "limits {\n  drain_timeout = \"soon\"\n}\n")
	_, err := LoadWithoutTables(path)
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("loaded: %v", err)
	}
	want := path + `:2: Invalid duration: "soon" is not a duration such as 4d, 4h or 90s.`
	if got := le.Lines(); len(got) != 1 || got[0] != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
