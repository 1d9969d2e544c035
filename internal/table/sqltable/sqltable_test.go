package sqltable

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"smtpd/internal/table"
	"smtpd/internal/table/sqltable/pgtest"
)

// schema is the test database of both backends, in the SQL they share.
const schema = `
CREATE TABLE domains (domain TEXT PRIMARY KEY);
CREATE TABLE virtuals (email TEXT NOT NULL, destination TEXT NOT NULL);
CREATE TABLE users (username TEXT PRIMARY KEY, password TEXT NOT NULL,
	uid INTEGER NOT NULL, gid INTEGER NOT NULL, home TEXT NOT NULL);
CREATE TABLE senders (username TEXT NOT NULL, address TEXT NOT NULL);
CREATE TABLE networks (addr TEXT PRIMARY KEY);
CREATE TABLE sources (addr TEXT PRIMARY KEY);
CREATE TABLE hosts (addr TEXT PRIMARY KEY, name TEXT);

INSERT INTO domains VALUES ('example.org'), ('example.net');
INSERT INTO virtuals VALUES
	('postmaster@example.org', 'bob@example.org'),
	('postmaster@example.org', 'alice@example.org'),
	('abuse@example.org', 'alice@example.org'),
	('alice@example.org', 'alice');
INSERT INTO users VALUES
	('alice', '$2b$08$ANGFKBL.BnDLL0bUq5Me8O7XdxRBCQPqRvDNO8FO6YP.8l.mUmsU2', 1000, 1000, '/home/alice'),
	('bob', 'secret', 1001, 100, '/home/bob');
INSERT INTO senders VALUES
	('alice', 'postmaster@example.org'),
	('alice', 'alice@example.org'),
	('bob', 'bob@example.org');
INSERT INTO networks VALUES ('192.0.2.1'), ('2001:db8::1');
INSERT INTO sources VALUES ('192.0.2.25');
INSERT INTO hosts VALUES ('192.0.2.25', 'mx.example.org'), ('192.0.2.26', NULL);
`

// queries are those of both backends: $1 is the key in both.
var queries = map[table.Service]string{
	table.Alias:       "SELECT destination FROM virtuals WHERE email = $1 ORDER BY destination",
	table.Domain:      "SELECT domain FROM domains WHERE domain = $1",
	table.Credentials: "SELECT username, password FROM users WHERE username = $1",
	table.Netaddr:     "SELECT addr FROM networks WHERE addr = $1",
	table.Userinfo:    "SELECT uid, gid, home FROM users WHERE username = $1",
	table.Source:      "SELECT addr FROM sources WHERE addr = $1",
	table.Mailaddr:    "SELECT address FROM senders WHERE address = $1",
	table.Addrname:    "SELECT name FROM hosts WHERE addr = $1",
	table.Mailaddrmap: "SELECT address FROM senders WHERE username = $1 ORDER BY address",
}

type lookupCase struct {
	service table.Service
	key     string
	value   string
	found   bool
}

var lookupCases = []lookupCase{
	{table.Alias, "postmaster@example.org", "alice@example.org, bob@example.org", true},
	{table.Alias, "alice@example.org", "alice", true},
	{table.Alias, "nobody@example.org", "", false},
	{table.Alias, "x' OR '1'='1", "", false},
	{table.Domain, "example.org", "example.org", true},
	{table.Domain, "example.com", "", false},
	{table.Credentials, "alice", "alice:$2b$08$ANGFKBL.BnDLL0bUq5Me8O7XdxRBCQPqRvDNO8FO6YP.8l.mUmsU2", true},
	{table.Credentials, "bob", "bob:secret", true},
	{table.Credentials, "mallory", "", false},
	{table.Netaddr, "192.0.2.1", "192.0.2.1", true},
	{table.Netaddr, "2001:db8::1", "2001:db8::1", true},
	{table.Netaddr, "198.51.100.1", "", false},
	{table.Userinfo, "alice", "1000:1000:/home/alice", true},
	{table.Userinfo, "bob", "1001:100:/home/bob", true},
	{table.Userinfo, "carol", "", false},
	{table.Source, "192.0.2.25", "192.0.2.25", true},
	{table.Source, "192.0.2.26", "", false},
	{table.Mailaddr, "alice@example.org", "alice@example.org", true},
	{table.Mailaddr, "mallory@example.org", "", false},
	{table.Addrname, "192.0.2.25", "mx.example.org", true},
	{table.Addrname, "192.0.2.27", "", false},
	{table.Mailaddrmap, "alice", "alice@example.org, postmaster@example.org", true},
	{table.Mailaddrmap, "bob", "bob@example.org", true},
	{table.Mailaddrmap, "carol", "", false},
}

// newPostgres starts a server with the test schema.
func newPostgres(t testing.TB) *pgtest.Server {
	t.Helper()
	srv := pgtest.Start(t)
	srv.MustExec(schema)
	return srv
}

// newSQLite makes a database file with the test schema.
func newSQLite(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tables.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(schema); err != nil {
		t.Fatal(err)
	}
	return path
}

// newDSN returns the DSN of a test database for driver.
func newDSN(t testing.TB, driver string) string {
	t.Helper()
	if driver == Postgres {
		return newPostgres(t).DSN
	}
	return newSQLite(t)
}

func open(t testing.TB, o Options) *Table {
	t.Helper()
	tbl, err := Open(context.Background(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { tbl.Close() })
	return tbl
}

// lookup is Lookup with a fresh context.
func lookup(tbl *Table, service table.Service, key string) (string, bool, error) {
	return tbl.Lookup(context.Background(), service, key)
}

var drivers = []string{Postgres, SQLite}

// TestLookup runs the same lookups against both backends.
func TestLookup(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			tbl := open(t, Options{Driver: driver, DSN: newDSN(t, driver), Queries: queries})
			if err := tbl.Ping(context.Background()); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			for _, c := range lookupCases {
				v, found, err := lookup(tbl, c.service, c.key)
				if err != nil || found != c.found || v != c.value {
					t.Errorf("Lookup(%s, %q) = %q, %v, %v; want %q, %v, nil", c.service, c.key, v, found, err, c.value, c.found)
				}
			}
		})
	}
}

// TestLookupErrors checks that what is not an answer is an error, never
// "not found".
func TestLookupErrors(t *testing.T) {
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			dsn := newDSN(t, driver)
			tbl := open(t, Options{Driver: driver, DSN: dsn, Queries: map[table.Service]string{
				table.Domain: queries[table.Domain],
				// two columns, a service of one
				table.Alias: "SELECT email, destination FROM virtuals WHERE email = $1",
				// one column, a service of two; no row, still wrong
				table.Credentials: "SELECT username FROM users WHERE username = $1",
				table.Addrname:    queries[table.Addrname],
				// NULL is no value, and no answer either
				table.Mailaddrmap: "SELECT NULL FROM senders WHERE username = $1",
			}})
			cases := []struct {
				service table.Service
				key     string
			}{
				{table.Alias, "postmaster@example.org"},
				{table.Credentials, "alice"},
				{table.Credentials, "mallory"},
				{table.Addrname, "192.0.2.26"},
				{table.Mailaddrmap, "alice"},
				{table.Netaddr, "192.0.2.1"},
			}
			for _, c := range cases {
				v, found, err := lookup(tbl, c.service, c.key)
				if err == nil || found || v != "" {
					t.Errorf("Lookup(%s, %q) = %q, %v, %v; want an error", c.service, c.key, v, found, err)
				} else {
					t.Logf("Lookup(%s, %q): %v", c.service, c.key, err)
				}
			}
			if _, _, err := lookup(tbl, table.Netaddr, "192.0.2.1"); !errors.Is(err, ErrNoQuery) {
				t.Errorf("Lookup of a service without query: %v, want ErrNoQuery", err)
			}
			// a domain is a set: its value does not matter, NULL
			// included
			nullDomain := open(t, Options{Driver: driver, DSN: dsn, Queries: map[table.Service]string{
				table.Domain: "SELECT NULL FROM domains WHERE domain = $1"}})
			if v, found, err := lookup(nullDomain, table.Domain, "example.org"); err != nil || !found {
				t.Errorf("Lookup(domain) with a NULL column = %q, %v, %v; want found", v, found, err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, found, err := tbl.Lookup(ctx, table.Domain, "example.org"); !errors.Is(err, context.Canceled) || found {
				t.Errorf("Lookup with a canceled context: %v, %v; want context.Canceled", found, err)
			}
		})
	}
}

// TestQueryTimeout checks that a slow query ends at the QueryTimeout,
// with an error that says so.
func TestQueryTimeout(t *testing.T) {
	slow := map[string]string{
		Postgres: "SELECT $1::text FROM pg_sleep(10)",
		SQLite: `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10000000000)
			SELECT $1 || max(x) FROM c`,
	}
	for _, driver := range drivers {
		t.Run(driver, func(t *testing.T) {
			const timeout = 300 * time.Millisecond
			tbl := open(t, Options{Driver: driver, DSN: newDSN(t, driver), QueryTimeout: timeout,
				Queries: map[table.Service]string{table.Domain: slow[driver]}})
			start := time.Now()
			v, found, err := lookup(tbl, table.Domain, "example.org")
			elapsed := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) || found || v != "" {
				t.Errorf("slow Lookup = %q, %v, %v; want context.DeadlineExceeded", v, found, err)
			}
			if elapsed > timeout+2*time.Second {
				t.Errorf("slow Lookup took %v, QueryTimeout %v", elapsed, timeout)
			}
			t.Logf("slow Lookup: %v after %v", err, elapsed)
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.db")
	for _, o := range []Options{
		{Driver: "mysql", DSN: "x", Queries: queries},
		{Driver: SQLite, DSN: missing},
		{Driver: SQLite, DSN: missing, Queries: map[table.Service]string{"relayhost": "SELECT 1"}},
		{Driver: SQLite, DSN: missing, Queries: map[table.Service]string{table.Domain: " "}},
		{Driver: SQLite, DSN: missing, Queries: queries},
		{Driver: SQLite, DSN: "", Queries: queries},
		{Driver: Postgres, DSN: "", Queries: queries},
		{Driver: Postgres, DSN: "postgres://x@127.0.0.1:notaport/db", Queries: queries},
	} {
		if tbl, err := Open(context.Background(), o); err == nil {
			tbl.Close()
			t.Errorf("Open(%+v) succeeded", o)
		} else {
			t.Logf("Open(%s, %q): %v", o.Driver, o.DSN, err)
		}
	}
	if m, _ := filepath.Glob(missing + "*"); len(m) > 0 {
		t.Errorf("read-only Open created %v", m)
	}
}

// TestSQLiteReadOnly checks that a query cannot write the file.
func TestSQLiteReadOnly(t *testing.T) {
	path := newSQLite(t)
	tbl := open(t, Options{Driver: SQLite, DSN: path, Queries: map[table.Service]string{
		table.Domain: "INSERT INTO domains VALUES ($1) RETURNING domain"}})
	if v, found, err := lookup(tbl, table.Domain, "example.com"); err == nil || found {
		t.Errorf("writing Lookup = %q, %v, %v; want an error", v, found, err)
	} else if !strings.Contains(err.Error(), "readonly") {
		t.Errorf("writing Lookup: %v; want a read-only error", err)
	}
	ro := open(t, Options{Driver: SQLite, DSN: path, Queries: queries})
	if _, found, err := lookup(ro, table.Domain, "example.com"); err != nil || found {
		t.Errorf("example.com was written: %v, %v", found, err)
	}
}

// TestSQLiteBusy checks that a lookup waits for a writer's lock up to
// the QueryTimeout, then fails instead of answering "not found".
func TestSQLiteBusy(t *testing.T) {
	path := newSQLite(t)
	const timeout = 300 * time.Millisecond
	tbl := open(t, Options{Driver: SQLite, DSN: "file:" + path + "?cache=private", Queries: queries, QueryTimeout: timeout})
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	writer, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	// in a rollback-journal file, an exclusive transaction keeps
	// readers out until it ends
	if _, err := writer.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v, found, err := lookup(tbl, table.Domain, "example.org")
	elapsed := time.Since(start)
	t.Logf("Lookup while locked: %q, %v, %v after %v", v, found, err, elapsed)
	if err == nil || found {
		t.Errorf("Lookup while locked = %q, %v, %v; want an error", v, found, err)
	}
	if elapsed > timeout+2*time.Second {
		t.Errorf("Lookup while locked took %v, QueryTimeout %v", elapsed, timeout)
	}
	if _, err := writer.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if v, found, err := lookup(tbl, table.Domain, "example.org"); err != nil || !found {
		t.Errorf("Lookup after the lock = %q, %v, %v", v, found, err)
	}
}

func TestSQLiteDSN(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/var/db/tables.db", "file:/var/db/tables.db?_busy_timeout=5000&mode=ro"},
		{"//var/db/a?b#c%d.db", "file:/var/db/a%3fb%23c%25d.db?_busy_timeout=5000&mode=ro"},
		{"file:/var/db/t.db?mode=rw&cache=shared", "file:/var/db/t.db?_busy_timeout=5000&cache=shared&mode=ro"},
	} {
		if got := sqliteDSN(c.in, 5*time.Second); got != c.want {
			t.Errorf("sqliteDSN(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestLimits checks the bounds of a value, and that a service of one
// value takes the first row.
func TestLimits(t *testing.T) {
	tbl := open(t, Options{Driver: SQLite, DSN: newSQLite(t), Queries: map[table.Service]string{
		// maxRows+1 rows of one byte
		table.Alias: `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x <= 65536)
			SELECT 'a' FROM c WHERE $1 <> ''`,
		// two rows of 600000 bytes
		table.Mailaddrmap: `SELECT printf('%600000s', address) FROM senders WHERE username = $1`,
		// the first of several rows
		table.Mailaddr: "SELECT address FROM senders WHERE username = $1 ORDER BY address DESC",
	}})
	for _, s := range []table.Service{table.Alias, table.Mailaddrmap} {
		if v, found, err := lookup(tbl, s, "alice"); err == nil || found {
			t.Errorf("Lookup(%s) of a huge value = %d bytes, %v, %v; want an error", s, len(v), found, err)
		} else {
			t.Logf("Lookup(%s): %v", s, err)
		}
	}
	if v, found, err := lookup(tbl, table.Mailaddrmap, "bob"); err != nil || !found || len(v) != 600000 {
		t.Errorf("Lookup(mailaddrmap) of 600000 bytes = %d bytes, %v, %v", len(v), found, err)
	}
	if v, found, err := lookup(tbl, table.Mailaddr, "alice"); err != nil || !found || v != "postmaster@example.org" {
		t.Errorf("Lookup(mailaddr) of two rows = %q, %v, %v; want the first", v, found, err)
	}
}
