package sqltable

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	// the pure Go driver "sqlite": no cgo, so smtpd stays one static
	// binary
	_ "modernc.org/sqlite"

	"smtpd/internal/table"
)

// sqliteQuerier asks a SQLite file through database/sql. Each query is
// prepared once at Open (database/sql prepares it again on each new
// connection by itself); SQLite takes $1 as the first parameter as well
// as ?.
type sqliteQuerier struct {
	db    *sql.DB
	stmts map[table.Service]*sql.Stmt
}

// sqliteIdle is how long an idle connection is kept. A connection
// holds the file it opened: closing idle ones lets a database replaced
// by a rename (how table files are usually rebuilt) be seen soon.
const sqliteIdle = time.Minute

func openSQLite(ctx context.Context, o Options) (*sqliteQuerier, error) {
	if o.DSN == "" {
		return nil, fmt.Errorf("sqltable: sqlite: no database file")
	}
	db, err := sql.Open("sqlite", sqliteDSN(o.DSN, o.QueryTimeout))
	if err != nil {
		return nil, fmt.Errorf("sqltable: sqlite: %w", err)
	}
	db.SetConnMaxIdleTime(sqliteIdle)
	db.SetMaxIdleConns(4)
	q := &sqliteQuerier{db: db, stmts: map[table.Service]*sql.Stmt{}}
	ctx, cancel := context.WithTimeout(ctx, o.QueryTimeout)
	defer cancel()
	for s, text := range o.Queries {
		st, err := db.PrepareContext(ctx, text)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("sqltable: sqlite: %s query: %w", s, err)
		}
		q.stmts[s] = st
	}
	return q, nil
}

// sqliteDSN makes the modernc DSN of a file path or file: URI: a URI
// that opens read-only (mode=ro: no write, and no creating the file
// when it is missing) and waits busy for a writer's lock.
func sqliteDSN(dsn string, busy time.Duration) string {
	base, query := dsn, ""
	if strings.HasPrefix(dsn, "file:") {
		base, query, _ = strings.Cut(dsn, "?")
	} else {
		// in a URI, ? starts the query, # a fragment and % an escape;
		// Clean turns a leading // (an authority) into /
		r := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")
		base = "file:" + r.Replace(filepath.Clean(dsn))
	}
	v, err := url.ParseQuery(query)
	if err != nil {
		// SQLite reads the URI itself and will complain at Open
		v = url.Values{}
	}
	v.Set("mode", "ro")
	v.Set("_busy_timeout", strconv.FormatInt(busy.Milliseconds(), 10))
	return base + "?" + v.Encode()
}

func (q *sqliteQuerier) rows(ctx context.Context, service table.Service, key string, ncol, limit int) ([][]*string, error) {
	rs, err := q.stmts[service].QueryContext(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	cols, err := rs.Columns()
	if err != nil {
		return nil, err
	}
	if err := checkColumns(service, len(cols), ncol); err != nil {
		return nil, err
	}
	vals := make([]sql.NullString, ncol)
	ptrs := make([]any, ncol)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var out [][]*string
	for len(out) < limit && rs.Next() {
		// NullString takes integers and blobs too, in their text form
		if err := rs.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make([]*string, ncol)
		for i, v := range vals {
			if v.Valid {
				s := v.String
				row[i] = &s
			}
		}
		out = append(out, row)
	}
	if err := rs.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func (q *sqliteQuerier) ping(ctx context.Context) error {
	return q.db.PingContext(ctx)
}

func (q *sqliteQuerier) close() {
	for _, st := range q.stmts {
		st.Close()
	}
	q.db.Close()
}
