package lookup

import (
	"context"
	"fmt"
	"os"
	"strings"

	"smtpd/internal/config"
	"smtpd/internal/table"
	"smtpd/internal/table/ldaptable"
	"smtpd/internal/table/sqltable"
)

// openBackends opens the tables kept outside smtpd. It runs before
// lookup drops its privileges, since the password files are for root's
// eyes; connections are made as needed afterwards.
func openBackends(cfg *config.Config) (map[int]*backendTable, error) {
	out := map[int]*backendTable{}
	for _, t := range cfg.Tables {
		e := t.External
		if e == nil {
			continue
		}
		var password string
		if e.PasswordFile != "" {
			data, err := os.ReadFile(e.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("table %s: %w", t.Name, err)
			}
			password = strings.TrimRight(string(data), "\r\n")
		}
		switch e.Kind {
		case config.BackendPostgres, config.BackendSQLite:
			b, err := sqltable.Open(context.Background(), sqltable.Options{
				Driver: e.Kind, DSN: e.URL, Password: password, Queries: e.Queries,
				QueryTimeout: e.Timeout, ConnectTimeout: e.Timeout,
			})
			if err != nil {
				return nil, fmt.Errorf("table %s: %w", t.Name, err)
			}
			out[t.ID] = newBackendTable(b, e)
		case config.BackendLDAP:
			queries := map[table.Service]ldaptable.Query{}
			for svc, filter := range e.Queries {
				queries[svc] = ldaptable.Query{Filter: filter, Attributes: e.Attributes[svc]}
			}
			b, err := ldaptable.Open(ldaptable.Options{
				URL: e.URL, StartTLS: e.StartTLS, BindDN: e.BindDN, BindPassword: password,
				Base: e.Base, Queries: queries, Timeout: e.Timeout,
			})
			if err != nil {
				return nil, fmt.Errorf("table %s: %w", t.Name, err)
			}
			out[t.ID] = newBackendTable(b, e)
		default:
			return nil, fmt.Errorf("table %s: %s tables are not supported yet", t.Name, e.Kind)
		}
	}
	return out, nil
}
