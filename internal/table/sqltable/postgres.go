package sqltable

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"smtpd/internal/table"
)

// pgQuerier asks PostgreSQL through a pgx pool. The queries are
// prepared statements: pgx's default mode (QueryExecModeCacheStatement)
// prepares each SQL text once per connection and keeps it, so a lookup
// costs one round trip, and the key is always a parameter, never SQL.
// Behind a pooler in transaction mode (PgBouncer), which does not keep
// prepared statements, the DSN can say
// default_query_exec_mode=simple_protocol.
type pgQuerier struct {
	pool    *pgxpool.Pool
	queries map[table.Service]string
}

// textResults asks for every column in text form: the value of a
// table is text whatever the column's type (uid as integer, a network
// as inet), and the text form is PostgreSQL's own rendering of it.
var textResults = pgx.QueryResultFormats{pgx.TextFormatCode}

func openPostgres(o Options) (*pgQuerier, error) {
	if o.DSN == "" {
		// pgx would fill everything from the environment and
		// defaults: a table must say where its database is
		return nil, errors.New("sqltable: postgres: empty connection string")
	}
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		// pgconn's message redacts a password in the string
		return nil, fmt.Errorf("sqltable: postgres: %w", err)
	}
	if o.Password != "" {
		// also used for the fallback hosts of a multi-host DSN
		cfg.ConnConfig.Password = o.Password
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	// lazy: pgxpool connects on the first Acquire (MinConns is 0
	// unless the DSN sets pool_min_conns)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("sqltable: postgres: %w", err)
	}
	return &pgQuerier{pool: pool, queries: o.Queries}, nil
}

func (p *pgQuerier) rows(ctx context.Context, service table.Service, key string, ncol, limit int) ([][]*string, error) {
	rows, err := p.query(ctx, service, key, ncol, limit)
	if err != nil && retry(ctx, err) {
		// The pool hands out a connection that was alive when last
		// used, and pings one idle for more than a second; one that
		// died since (a restart of the server) fails the first query.
		// Lookups are read-only, so asking again on a fresh connection
		// is safe, and saves a tempfail per pooled connection after
		// every restart (table-postgres reconnects and retries too).
		rows, err = p.query(ctx, service, key, ncol, limit)
	}
	return rows, err
}

// errColumns marks an error in the shape of a result, which asking
// again does not mend.
type errColumns struct{ error }

func (e errColumns) Unwrap() error { return e.error }

func (p *pgQuerier) query(ctx context.Context, service table.Service, key string, ncol, limit int) ([][]*string, error) {
	rs, err := p.pool.Query(ctx, p.queries[service], textResults, key)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out [][]*string
	for len(out) < limit && rs.Next() {
		raw := rs.RawValues()
		row := make([]*string, len(raw))
		for i, v := range raw {
			if v != nil {
				s := string(v)
				row[i] = &s
			}
		}
		out = append(out, row)
	}
	// Close reads what is left, so that Err covers the whole result
	// even when the loop stopped at limit
	rs.Close()
	if err := rs.Err(); err != nil {
		return nil, err
	}
	if err := checkColumns(service, len(rs.FieldDescriptions()), ncol); err != nil {
		return nil, errColumns{err}
	}
	return out, nil
}

// retry says whether a failed query may succeed on another connection.
func retry(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.As(err, new(errColumns)) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// the server answered: only a connection exception (class
		// 08) or the end of the session (57P01 admin_shutdown,
		// 57P02 crash_shutdown, 57P03 cannot_connect_now, 57P05
		// idle_session_timeout…) concerns the connection rather than
		// the query
		return strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P0")
	}
	// everything else is the connection's: refused, reset, closed
	return true
}

func (p *pgQuerier) ping(ctx context.Context) error {
	return p.pool.Ping(ctx)
}

func (p *pgQuerier) close() {
	p.pool.Close()
}
