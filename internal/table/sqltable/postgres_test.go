package sqltable

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"smtpd/internal/table"
	"smtpd/internal/table/sqltable/pgtest"
)

// TestPostgresDown stops the server under a Table: lookups fail fast
// while it is down, and work again once it is back, on the same Table.
func TestPostgresDown(t *testing.T) {
	srv := newPostgres(t)
	const timeout = 2 * time.Second
	tbl := open(t, Options{Driver: Postgres, DSN: srv.DSN, Queries: queries,
		ConnectTimeout: time.Second, QueryTimeout: timeout})
	check := func(when string) {
		t.Helper()
		for _, c := range lookupCases {
			v, found, err := lookup(tbl, c.service, c.key)
			if err != nil || found != c.found || v != c.value {
				t.Errorf("%s: Lookup(%s, %q) = %q, %v, %v; want %q, %v, nil", when, c.service, c.key, v, found, err, c.value, c.found)
			}
		}
	}
	check("before the stop")

	srv.Stop()
	for _, c := range lookupCases {
		start := time.Now()
		v, found, err := lookup(tbl, c.service, c.key)
		elapsed := time.Since(start)
		if err == nil || found || v != "" {
			t.Errorf("down: Lookup(%s, %q) = %q, %v, %v; want an error", c.service, c.key, v, found, err)
		}
		if elapsed > timeout+time.Second {
			t.Errorf("down: Lookup(%s, %q) took %v, QueryTimeout %v", c.service, c.key, elapsed, timeout)
		}
	}
	_, _, err := lookup(tbl, table.Domain, "example.org")
	t.Logf("down: %v", err)
	if err := tbl.Ping(context.Background()); err == nil {
		t.Error("Ping succeeded while the server is down")
	}

	srv.Start()
	check("after the restart")
}

// TestPostgresReconnect ends the pooled connection on the server's side
// (as a restart does) less than a second after its last use, when the
// pool does not ping it: the lookup must still succeed, on a new
// connection.
func TestPostgresReconnect(t *testing.T) {
	srv := newPostgres(t)
	tbl := open(t, Options{Driver: Postgres, DSN: srv.DSN, Queries: queries, MaxConns: 1})
	for i := range 3 {
		if v, found, err := lookup(tbl, table.Domain, "example.org"); err != nil || !found {
			t.Fatalf("Lookup %d = %q, %v, %v", i, v, found, err)
		}
		srv.MustExec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	}
}

// TestPostgresConnectTimeout points a Table at a server that accepts
// connections and says nothing: the lookup fails within the timeouts.
func TestPostgresConnectTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				<-done
				c.Close()
			}()
		}
	}()
	const connect, query = 300 * time.Millisecond, 5 * time.Second
	tbl := open(t, Options{Driver: Postgres, DSN: fmt.Sprintf("postgres://smtpd@%s/smtpd?sslmode=disable", l.Addr()),
		Queries: queries, ConnectTimeout: connect, QueryTimeout: query})
	start := time.Now()
	v, found, err := lookup(tbl, table.Domain, "example.org")
	elapsed := time.Since(start)
	t.Logf("Lookup from a silent server: %v after %v", err, elapsed)
	if err == nil || found || v != "" {
		t.Errorf("Lookup from a silent server = %q, %v, %v; want an error", v, found, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lookup from a silent server: %v; want context.DeadlineExceeded", err)
	}
	// a connect timeout, and one retry's, not the query's
	if elapsed > 2*connect+time.Second {
		t.Errorf("Lookup from a silent server took %v, ConnectTimeout %v", elapsed, connect)
	}
}

// TestPostgresPassword connects with the password of the Options to a
// server that asks for one (scram-sha-256).
func TestPostgresPassword(t *testing.T) {
	const password = "s3cret 'pass' word"
	srv := pgtest.StartConfig(t, pgtest.Config{Password: password})
	srv.MustExec(schema)
	if strings.Contains(srv.DSN, "s3cret") {
		t.Fatalf("the DSN %q holds the password", srv.DSN)
	}
	tbl := open(t, Options{Driver: Postgres, DSN: srv.DSN, Password: password, Queries: queries})
	if v, found, err := lookup(tbl, table.Userinfo, "alice"); err != nil || !found || v != "1000:1000:/home/alice" {
		t.Errorf("Lookup with the password = %q, %v, %v", v, found, err)
	}
	for _, pw := range []string{"", "wrong"} {
		bad := open(t, Options{Driver: Postgres, DSN: srv.DSN, Password: pw, Queries: queries})
		v, found, err := lookup(bad, table.Userinfo, "alice")
		if err == nil || found || v != "" {
			t.Errorf("Lookup with password %q = %q, %v, %v; want an error", pw, v, found, err)
		} else if strings.Contains(err.Error(), "s3cret") || pw != "" && strings.Contains(err.Error(), pw) {
			t.Errorf("the error tells the password: %v", err)
		} else {
			t.Logf("Lookup with password %q: %v", pw, err)
		}
	}
}

// TestPostgresTypes checks keys and values of types other than text:
// the key goes as text and PostgreSQL converts it, values come back in
// PostgreSQL's text form.
func TestPostgresTypes(t *testing.T) {
	srv := newPostgres(t)
	srv.MustExec(`CREATE TABLE nets (net cidr NOT NULL);
		INSERT INTO nets VALUES ('192.0.2.0/24'), ('2001:db8::/32');
		CREATE TABLE names (addr inet PRIMARY KEY, name text NOT NULL);
		INSERT INTO names VALUES ('192.0.2.25', 'mx.example.org')`)
	tbl := open(t, Options{Driver: Postgres, DSN: srv.DSN, Queries: map[table.Service]string{
		table.Netaddr:  "SELECT net FROM nets WHERE $1 <<= net",
		table.Addrname: "SELECT name FROM names WHERE addr = $1",
		table.Userinfo: "SELECT uid, gid, home FROM users WHERE uid = $1",
	}})
	for _, c := range []lookupCase{
		{table.Netaddr, "192.0.2.77", "192.0.2.0/24", true},
		{table.Netaddr, "2001:db8:1::1", "2001:db8::/32", true},
		{table.Netaddr, "198.51.100.1", "", false},
		{table.Addrname, "192.0.2.25", "mx.example.org", true},
		{table.Userinfo, "1001", "1001:100:/home/bob", true},
	} {
		v, found, err := lookup(tbl, c.service, c.key)
		if err != nil || found != c.found || v != c.value {
			t.Errorf("Lookup(%s, %q) = %q, %v, %v; want %q, %v, nil", c.service, c.key, v, found, err, c.value, c.found)
		}
	}
	// a key that is no inet is an error of the query, not "not found"
	if v, found, err := lookup(tbl, table.Netaddr, "not an address"); err == nil || found {
		t.Errorf("Lookup(netaddr, garbage) = %q, %v, %v; want an error", v, found, err)
	}
	// a query that does not compile fails at lookup (Open does not
	// connect)
	broken := open(t, Options{Driver: Postgres, DSN: srv.DSN, Queries: map[table.Service]string{
		table.Domain: "SELECT domain FROM nosuchtable WHERE domain = $1"}})
	if v, found, err := lookup(broken, table.Domain, "example.org"); err == nil || found {
		t.Errorf("Lookup with a broken query = %q, %v, %v; want an error", v, found, err)
	}
}
