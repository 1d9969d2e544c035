// Package sqltable answers table lookups from a SQL database, PostgreSQL
// or SQLite, with one query per service, as OpenSMTPD's table-postgres
// and table-sqlite do. A Table is a table.Backend.
//
// A query takes the key as its single parameter ($1; SQLite also takes
// ?) and returns the columns of its service:
//
//	alias        1 column; all rows, joined with ", "
//	domain       1 column; found when a row exists
//	credentials  2 columns, user and password: "user:password"
//	netaddr      1 column
//	userinfo     3 columns, uid, gid and home: "uid:gid:home"
//	source       1 column
//	mailaddr     1 column
//	addrname     1 column
//	mailaddrmap  1 column; all rows, joined with ", "
//
// For the services of one value only the first row counts, so their
// queries should make it unique or ordered.
//
// Lookups never write, and the database user should only be able to
// SELECT. A failure (database down, timeout, bad query, a result that
// does not fit the service) is an error, never "not found": the caller
// turns it into a temporary failure.
package sqltable

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"smtpd/internal/table"
)

// The drivers.
const (
	Postgres = "postgres"
	SQLite   = "sqlite"
)

// Defaults of the zero Options.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultQueryTimeout   = 5 * time.Second
)

// maxValue and maxRows bound a joined value: a query that returns the
// whole table by mistake fails instead of filling the memory of the
// lookup process and the imsg that carries the answer.
const (
	maxValue = 1 << 20
	maxRows  = 1 << 16
)

// ErrNoQuery is wrapped by the error of a lookup for a service the
// table has no query for.
var ErrNoQuery = errors.New("sqltable: no query for the service")

// Options say which database a Table asks and how.
type Options struct {
	// Driver is Postgres or SQLite.
	Driver string
	// DSN is, for PostgreSQL, a connection string (a postgres:// URL
	// or key=value words) read by pgx: sslmode=verify-full,
	// sslrootcert, connect_timeout and the like work as in libpq. For
	// SQLite it is the path of the database file, or a file: URI;
	// the file is opened read-only.
	DSN string
	// Password is the PostgreSQL password, read by the caller from a
	// file. It goes into the connection configuration only: neither
	// the DSN nor any error message carries it. SQLite has none.
	Password string
	// Queries are the SQL of each service the table answers.
	Queries map[table.Service]string
	// ConnectTimeout bounds each attempt to connect to PostgreSQL;
	// 0 means DefaultConnectTimeout, unless the DSN sets
	// connect_timeout.
	ConnectTimeout time.Duration
	// QueryTimeout bounds a whole lookup: waiting for a pooled
	// connection, connecting, the query, one retry after a lost
	// connection. For SQLite it is also the busy timeout, how long a
	// lookup waits for a writer's lock. 0 means DefaultQueryTimeout.
	QueryTimeout time.Duration
	// MaxConns caps the connections to PostgreSQL; 0 leaves pgx's
	// default (4, or the number of CPUs if more) or the DSN's
	// pool_max_conns.
	MaxConns int32
}

// querier runs the queries of a backend. rows returns at most limit
// rows of the query of service, each of exactly ncol columns as text; a
// NULL is nil.
type querier interface {
	rows(ctx context.Context, service table.Service, key string, ncol, limit int) ([][]*string, error)
	ping(ctx context.Context) error
	close()
}

// Table is a table kept in a SQL database. It is safe for concurrent
// use.
type Table struct {
	driver       string
	queryTimeout time.Duration
	services     map[table.Service]bool
	q            querier
}

var _ table.Backend = (*Table)(nil)

// Open returns a Table for o. It checks the options and, for SQLite,
// opens the file and prepares the queries: a missing file or a query
// that does not compile is a mistake of the configuration. It does not
// connect to PostgreSQL, which may be down when smtpd starts and come
// back later; Ping does.
func Open(ctx context.Context, o Options) (*Table, error) {
	if len(o.Queries) == 0 {
		return nil, errors.New("sqltable: no queries")
	}
	t := &Table{driver: o.Driver, queryTimeout: o.QueryTimeout, services: map[table.Service]bool{}}
	if t.queryTimeout <= 0 {
		t.queryTimeout = DefaultQueryTimeout
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	o.QueryTimeout = t.queryTimeout
	for s, sql := range o.Queries {
		if !slices.Contains(table.Services, s) {
			return nil, fmt.Errorf("sqltable: unknown service %q", s)
		}
		if strings.TrimSpace(sql) == "" {
			return nil, fmt.Errorf("sqltable: empty query for %s", s)
		}
		t.services[s] = true
	}
	var err error
	switch o.Driver {
	case Postgres:
		t.q, err = openPostgres(o)
	case SQLite:
		t.q, err = openSQLite(ctx, o)
	default:
		return nil, fmt.Errorf("sqltable: unknown driver %q: use %q or %q", o.Driver, Postgres, SQLite)
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// columns is the number of columns the query of each service returns.
func columns(s table.Service) int {
	switch s {
	case table.Credentials:
		return 2
	case table.Userinfo:
		return 3
	}
	return 1
}

// multiRow says whether all rows of a service make its value.
func multiRow(s table.Service) bool {
	return s == table.Alias || s == table.Mailaddrmap
}

// Lookup returns the value of key for service. The lookup is bounded
// by the QueryTimeout as well as by ctx.
func (t *Table) Lookup(ctx context.Context, service table.Service, key string) (string, bool, error) {
	if !t.services[service] {
		return "", false, fmt.Errorf("%w: %s", ErrNoQuery, service)
	}
	ctx, cancel := context.WithTimeout(ctx, t.queryTimeout)
	defer cancel()
	limit := 1
	if multiRow(service) {
		// one more than allowed, to tell "too many" from "just enough"
		limit = maxRows + 1
	}
	rows, err := t.q.rows(ctx, service, key, columns(service), limit)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			// a driver may report the interrupted query in its own
			// words; the caller tells a timeout by the context's error
			err = fmt.Errorf("%w: %w", cerr, err)
		}
		return "", false, fmt.Errorf("sqltable: %s: %s lookup: %w", t.driver, service, err)
	}
	if len(rows) == 0 {
		return "", false, nil
	}
	if len(rows) > maxRows {
		err = fmt.Errorf("more than %d rows", maxRows)
	}
	var v string
	if err == nil {
		v, err = format(service, rows)
	}
	if err != nil {
		return "", false, fmt.Errorf("sqltable: %s: %s lookup: %w", t.driver, service, err)
	}
	return v, true, nil
}

// format makes the value of service from rows, which are not empty.
func format(service table.Service, rows [][]*string) (string, error) {
	if service == table.Domain {
		// a set: the row is the answer, whatever its column holds
		if rows[0][0] == nil {
			return "", nil
		}
		return *rows[0][0], nil
	}
	var b strings.Builder
	for i, row := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		for j, col := range row {
			if col == nil {
				// NULL has no text form; an empty value would be a
				// wrong answer rather than no answer
				return "", fmt.Errorf("column %d of row %d is NULL", j+1, i+1)
			}
			if j > 0 {
				b.WriteByte(':')
			}
			b.WriteString(*col)
		}
		if b.Len() > maxValue {
			return "", fmt.Errorf("value longer than %d bytes", maxValue)
		}
	}
	return b.String(), nil
}

// Ping checks that the database answers, within the QueryTimeout.
func (t *Table) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.queryTimeout)
	defer cancel()
	if err := t.q.ping(ctx); err != nil {
		return fmt.Errorf("sqltable: %s: %w", t.driver, err)
	}
	return nil
}

// Close closes the connections. Lookups in progress finish first.
func (t *Table) Close() error {
	t.q.close()
	return nil
}

// checkColumns is the check both backends make of a query's result.
func checkColumns(service table.Service, got, want int) error {
	if got != want {
		return fmt.Errorf("%s needs %d %s, the query returns %d", service, want, plural(want, "column"), got)
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
