package lookup

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "modernc.org/sqlite"

	"smtpd/internal/config"
	"smtpd/internal/table"
	"smtpd/internal/table/ldaptable/ldaptest"
	"smtpd/internal/table/sqltable/pgtest"
	"smtpd/proto"
)

// The same data in PostgreSQL, SQLite and a directory (slapd) give the
// same answers to the rules and expansions: domains, virtual users,
// aliases to other addresses, strangers refused.
// backendFixtures starts PostgreSQL and slapd and makes an SQLite file
// with the same domains and virtual users, and returns the table blocks
// of each (tables "domains" and "vusers").
func backendFixtures(tb testing.TB) []struct{ name, tables string } {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Fatal("the PostgreSQL and slapd servers of this test need root: run it as root (make test does in CI)")
	}
	schema := `CREATE TABLE domains (domain text PRIMARY KEY);
CREATE TABLE virtuals (address text, dest text);
INSERT INTO domains VALUES ('example.test');
INSERT INTO virtuals VALUES ('alice@example.test', 'vmail'), ('team@example.test', 'alice@example.test'), ('team@example.test', 'bob@example.test'), ('bob@example.test', 'vmail');`
	db := pgtest.Start(tb)
	db.MustExec(schema + "\nGRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC;")
	file := filepath.Join(tb.TempDir(), "smtpd.sqlite")
	lite, err := sql.Open("sqlite", file)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := lite.Exec(schema); err != nil {
		tb.Fatal(err)
	}
	lite.Close()
	dir := ldaptest.Start(tb, `dn: ou=domains,dc=example,dc=test
objectClass: organizationalUnit
ou: domains`, `dn: dc=example-test,ou=domains,dc=example,dc=test
objectClass: domain
objectClass: domainRelatedObject
dc: example-test
associatedDomain: example.test`, `dn: ou=virtuals,dc=example,dc=test
objectClass: organizationalUnit
ou: virtuals`, `dn: cn=alice@example.test,ou=virtuals,dc=example,dc=test
objectClass: nisMailAlias
cn: alice@example.test
rfc822MailMember: vmail`, `dn: cn=bob@example.test,ou=virtuals,dc=example,dc=test
objectClass: nisMailAlias
cn: bob@example.test
rfc822MailMember: vmail`, `dn: cn=team@example.test,ou=virtuals,dc=example,dc=test
objectClass: nisMailAlias
cn: team@example.test
rfc822MailMember: alice@example.test
rfc822MailMember: bob@example.test`)
	pw := filepath.Join(tb.TempDir(), "ldap.password")
	if err := os.WriteFile(pw, []byte(dir.BindPassword+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	sqlTables := func(kind, url string) string {
		return `
table "domains" {
  ` + kind + ` = "` + url + `"
  query = { domain = "SELECT domain FROM domains WHERE domain = $1" }
}
table "vusers" {
  ` + kind + ` = "` + url + `"
  query = { alias = "SELECT dest FROM virtuals WHERE address = $1" }
}`
	}
	return []struct{ name, tables string }{
		{"postgres", sqlTables("postgres", db.DSN)},
		{"sqlite", sqlTables("sqlite", file)},
		{"ldap", `
table "domains" {
  ldap          = "` + dir.URL + `"
  base          = "` + dir.Base + `"
  bind_dn       = "` + dir.BindDN + `"
  password_file = "` + pw + `"
  query         = { domain = "(associatedDomain=%s)" }
  attributes    = { domain = ["associatedDomain"] }
}
table "vusers" {
  ldap          = "` + dir.URL + `"
  base          = "` + dir.Base + `"
  bind_dn       = "` + dir.BindDN + `"
  password_file = "` + pw + `"
  query         = { alias = "(&(objectClass=nisMailAlias)(cn=%s))" }
  attributes    = { alias = ["rfc822MailMember"] }
}`},
	}
}

func TestBackendsAgree(t *testing.T) {
	for _, b := range backendFixtures(t) {
		t.Run(b.name, func(t *testing.T) {
			cfg := virtualConfig(t, b.tables)
			r := NewResolver(cfg)
			var err error
			if r.Backends, err = openBackends(cfg); err != nil {
				t.Fatal(err)
			}
			for _, bt := range r.Backends {
				defer bt.b.Close()
			}
			sess := proto.Session{Remote: "192.0.2.1"}
			for _, tt := range []struct {
				rcpt   string
				status proto.Status
				dests  int
			}{
				{"alice@example.test", proto.StatusOK, 1},
				{"team@example.test", proto.StatusOK, 1}, // both members are the vmail user
				{"carol@example.test", proto.StatusPermfail, 0},
				{"alice@elsewhere.test", proto.StatusPermfail, 0},
			} {
				res := r.Expand(sess, tt.rcpt)
				if res.Status != tt.status || len(res.Destinations) != tt.dests {
					t.Errorf("%s: %+v", tt.rcpt, res)
				}
			}
			if got := r.ShowTable("vusers", "alias", "alice@example.test"); got != "vmail" {
				t.Errorf("show table: %q", got)
			}
		})
	}
}

// BenchmarkBackendTables: lookups per second of a virtual user in each
// backend, through the table cache and without it.
func BenchmarkBackendTables(b *testing.B) {
	script, err := filepath.Abs(filepath.Join("..", "..", "regress", "testdata", "tables", "vusers.py"))
	if err != nil {
		b.Fatal(err)
	}
	proc := struct{ name, tables string }{"proc", `
table "domains" {
  proc = "/usr/bin/python3 ` + script + `"
}
table "vusers" {
  proc = "/usr/bin/python3 ` + script + `"
}`}
	for _, fx := range append(backendFixtures(b), proc) {
		for _, cache := range []string{"0s", "1m"} {
			b.Run(fx.name+"/cache="+cache, func(b *testing.B) {
				tables := strings.ReplaceAll(fx.tables, "\n}", "\n  cache = \""+cache+"\"\n}")
				cfg, err := config.Parse([]byte("listen \"mx\" { address = \"127.0.0.1:25\" }\n"+tables), "/etc/mail/smtpd.conf")
				if err != nil {
					b.Fatal(err)
				}
				r := NewResolver(cfg)
				if r.Backends, err = openBackends(cfg); err != nil {
					b.Fatal(err)
				}
				if err := openProcTables(cfg, b.Logf, r.Backends); err != nil {
					b.Fatal(err)
				}
				vusers := cfg.Table("vusers")
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, found, err := r.tableLookup(vusers, table.Alias, "alice@example.test"); err != nil || !found {
							b.Errorf("%v %v", found, err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
				for _, bt := range r.Backends {
					bt.b.Close()
				}
			})
		}
	}
}
