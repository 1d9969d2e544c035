package lookup

import (
	"context"
	"errors"
	"sync"
	"testing"

	"smtpd/internal/config"
	"smtpd/internal/table"
	"smtpd/proto"
)

// fakeBackend answers from a map of "service key" and can be made to
// fail, as a database that is down.
type fakeBackend struct {
	mu      sync.Mutex
	values  map[string]string
	down    bool
	lookups int
}

func (f *fakeBackend) Lookup(_ context.Context, s table.Service, key string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	if f.down {
		return "", false, errors.New("connection refused")
	}
	v, ok := f.values[string(s)+" "+key]
	return v, ok, nil
}

func (f *fakeBackend) Close() error { return nil }

func (f *fakeBackend) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// virtualConfig is a configuration whose tables are tables (one of
// domains, one of virtual users), delivering to a virtual user's
// maildir.
func virtualConfig(t *testing.T, tables string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(`
listen "mx" { address = "127.0.0.1:25" }
`+tables+`
action "local" {
  maildir  = "/var/mail/x"
  virtual  = table.vusers
  userbase = { vmail = "2000:2000:/var/vmail" }
}
match {
  from   = "any"
  for    = table.domains
  action = action.local
}
`), "/etc/mail/smtpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Tables kept outside smtpd answer the rules and expansions like file
// tables; while they cannot answer, recipients are refused for now,
// never for good; answers are cached for the table's TTL, and smtpctl
// update table forgets them.
func TestBackendTables(t *testing.T) {
	cfg := virtualConfig(t, `
table "domains" {
  sqlite = "/var/db/smtpd.sqlite"
  query  = { domain = "SELECT 1 FROM domains WHERE domain = ?" }
  cache  = "1h"
}
table "vusers" {
  sqlite = "/var/db/smtpd.sqlite"
  query  = { alias = "SELECT dest FROM virtuals WHERE address = ?" }
  cache  = "0s"
}
`)
	domains := &fakeBackend{values: map[string]string{"domain example.org": "1"}}
	vusers := &fakeBackend{values: map[string]string{"alias alice@example.org": "vmail"}}
	r := NewResolver(cfg)
	r.Backends = map[int]*backendTable{}
	for _, tb := range cfg.Tables {
		switch tb.Name {
		case "domains":
			r.Backends[tb.ID] = newBackendTable(domains, tb.External)
		case "vusers":
			r.Backends[tb.ID] = newBackendTable(vusers, tb.External)
		}
	}
	sess := proto.Session{Remote: "192.0.2.1"}
	expand := func(rcpt string) proto.LookupExpandResult { return r.Expand(sess, rcpt) }
	if res := expand("alice@example.org"); res.Status != proto.StatusOK || res.Destinations[0].User != "vmail" {
		t.Errorf("alice: %+v", res)
	}
	if res := expand("bob@example.org"); res.Status != proto.StatusPermfail || res.Reply.Code != 550 {
		t.Errorf("bob: %+v", res)
	}
	// the virtual table is down: a temporary failure, never 5xx
	vusers.set(func() { vusers.down = true })
	if res := expand("alice@example.org"); res.Status != proto.StatusTempfail || res.Reply.Code != 451 {
		t.Errorf("virtual table down: %+v", res)
	}
	// the domains are cached: their table going down costs nothing yet
	domains.set(func() { domains.down = true })
	vusers.set(func() { vusers.down = false })
	if res := expand("alice@example.org"); res.Status != proto.StatusOK {
		t.Errorf("cached domain: %+v", res)
	}
	// update table forgets the cache: now the domain table's failure shows
	if err := r.Reload("domains"); err != nil {
		t.Fatal(err)
	}
	if res := expand("alice@example.org"); res.Status != proto.StatusTempfail {
		t.Errorf("domains down after update: %+v", res)
	}
	domains.set(func() { domains.down = false })
	before := domains.lookups
	for range 3 {
		expand("alice@example.org")
	}
	if n := domains.lookups - before; n != 1 {
		t.Errorf("%d lookups of a cached domain, want 1", n)
	}
	// a new user is seen at once by an uncached table
	vusers.set(func() { vusers.values["alias carol@example.org"] = "vmail" })
	if res := expand("carol@example.org"); res.Status != proto.StatusOK {
		t.Errorf("carol: %+v", res)
	}
}

// mfa's and mta's questions about a table that cannot answer get a
// temporary failure, never an error that would stop lookup.
func TestBackendDownAnswers(t *testing.T) {
	cfg, err := config.Parse([]byte(`
listen "mx" { address = "127.0.0.1:25" }
table "t" {
  sqlite = "/var/db/smtpd.sqlite"
  query  = { mailaddr = "SELECT 1 FROM t WHERE a = ?", credentials = "SELECT u, p FROM t WHERE l = ?" }
}
`), "/etc/mail/smtpd.conf")
	if err != nil {
		t.Fatal(err)
	}
	r := NewResolver(cfg)
	r.Backends = map[int]*backendTable{0: newBackendTable(&fakeBackend{down: true}, cfg.Tables[0].External)}
	if a, err := r.tableAnswer(&proto.MFATableQuery{Table: 0, Kind: proto.TableKeyAddress, Key: "a@example.org"}); err != nil || a.Status != proto.StatusTempfail {
		t.Errorf("filter table: %+v %v", a, err)
	}
	if a, err := r.credentialsAnswer(&proto.MTACredentialsQuery{Table: 0, Label: "relay"}); err != nil || a.Status != proto.StatusTempfail {
		t.Errorf("credentials: %+v %v", a, err)
	}
}
