package lookup

import (
	"context"
	"fmt"
	"os"
	"strings"

	"smtpd/internal/config"
	"smtpd/internal/table"
	"smtpd/internal/table/ldaptable"
	"smtpd/internal/table/proctable"
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
		case config.BackendProc:
			// started by openProcTables, once lookup runs as its user
		}
	}
	return out, nil
}

// openProcTables starts the table programs of the configuration. It
// runs once lookup dropped its privileges: the programs run as its
// user, never as root.
func openProcTables(cfg *config.Config, log func(string, ...any), out map[int]*backendTable) error {
	for _, t := range cfg.Tables {
		e := t.External
		if e == nil || e.Kind != config.BackendProc {
			continue
		}
		name := t.Name
		b, err := proctable.Start(proctable.Options{
			Name: name, Command: e.Command, Timeout: e.Timeout,
			Log: func(format string, args ...any) { log("table %s: "+format, append([]any{name}, args...)...) },
		})
		if err != nil {
			return fmt.Errorf("table %s: %w", name, err)
		}
		out[t.ID] = newBackendTable(b, e)
	}
	return nil
}
