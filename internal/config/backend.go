package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"smtpd/internal/table"
)

// The kinds of table kept outside smtpd.
const (
	BackendPostgres = "postgres"
	BackendSQLite   = "sqlite"
	BackendLDAP     = "ldap"
	BackendProc     = "proc"
)

// Defaults of external tables.
const (
	DefaultTableTimeout = 5 * time.Second
	DefaultTableCache   = time.Minute
)

// External is where a table kept outside smtpd lives and how it is
// asked: lookup alone opens it.
type External struct {
	// Kind is BackendPostgres, BackendSQLite, BackendLDAP or
	// BackendProc.
	Kind string
	// URL is the PostgreSQL connection string, the SQLite file or the
	// LDAP URL.
	URL string
	// PasswordFile holds the database or bind password.
	PasswordFile string
	// Queries are the query (SQL) or filter (LDAP) of each service;
	// Attributes the LDAP attributes of each.
	Queries    map[table.Service]string
	Attributes map[table.Service][]string
	// LDAP: the search base, the bind DN, StartTLS on ldap://.
	Base, BindDN string
	StartTLS     bool
	// Command is the table program and its arguments (proc tables),
	// run as the daemon's user.
	Command []string
	// Cache is how long answers (found or not) are kept; 0 keeps none.
	// Timeout bounds each lookup.
	Cache, Timeout time.Duration
}

var backendKinds = []string{BackendPostgres, BackendSQLite, BackendLDAP, BackendProc}

// backendTable decodes a table block kept outside smtpd; the attributes of
// the kind were found.
func (d *decoder) backendTable(t *Table, attrs hcl.Attributes, kind string) {
	e := &External{Kind: kind, Cache: DefaultTableCache, Timeout: DefaultTableTimeout}
	t.External = e
	if kind == BackendProc {
		var line string
		if d.decode(attrs, kind, &line) {
			argv, err := splitCommand(line)
			if err == nil && !strings.HasPrefix(argv[0], "/") {
				err = fmt.Errorf("the program must be an absolute path, not %q", argv[0])
			}
			if err != nil {
				d.errorf(attrs[kind].Expr.Range(), "Invalid command", "%v.", err)
			}
			e.Command = argv
		}
	} else if d.decode(attrs, kind, &e.URL) {
		switch kind {
		case BackendSQLite:
			e.URL = d.abs(e.URL)
		case BackendPostgres:
			if u, err := url.Parse(e.URL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
				d.errorf(attrs[kind].Expr.Range(), "Invalid PostgreSQL URL", "%q is not a URL such as \"postgres://smtpd@db.example.org/mail?sslmode=verify-full\".", e.URL)
			} else if _, ok := u.User.Password(); ok {
				d.errorf(attrs[kind].Expr.Range(), "Password in the URL", "Put the password in password_file, which only the lookup process reads.")
			}
		case BackendLDAP:
			if u, err := url.Parse(e.URL); err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") {
				d.errorf(attrs[kind].Expr.Range(), "Invalid LDAP URL", "%q is not an ldap:// or ldaps:// URL.", e.URL)
			}
		}
	}
	if d.path(attrs, "password_file", &e.PasswordFile) && d.reads&readTables != 0 {
		if err := readable(e.PasswordFile); err != nil {
			d.errorf(attrs["password_file"].Expr.Range(), "Unreadable password file", "%v.", err)
		}
	}
	var queries map[string]string
	if d.decode(attrs, "query", &queries) {
		e.Queries = map[table.Service]string{}
		for s, q := range queries {
			if !slices.Contains(table.Services, table.Service(s)) {
				d.errorf(attrs["query"].Expr.Range(), "Unknown service", "%q is not a table service: use %s.", s, serviceNames())
				continue
			}
			e.Queries[table.Service(s)] = q
		}
	}
	var attrLists map[string][]string
	if d.decode(attrs, "attributes", &attrLists) {
		e.Attributes = map[table.Service][]string{}
		for s, a := range attrLists {
			e.Attributes[table.Service(s)] = a
		}
	}
	d.decode(attrs, "base", &e.Base)
	d.decode(attrs, "bind_dn", &e.BindDN)
	d.decode(attrs, "starttls", &e.StartTLS)
	d.duration(attrs, "cache", &e.Cache, true)
	d.duration(attrs, "timeout", &e.Timeout, false)
	switch {
	case kind != BackendProc && len(e.Queries) == 0:
		d.errorf(t.Range, "Table without queries", "Table %q needs query = { SERVICE = \"...\" } for the services it answers (%s).", t.Name, serviceNames())
	case kind == BackendLDAP && e.Base == "":
		d.errorf(t.Range, "LDAP table without base", "Table %q needs the search base, base = \"dc=example,dc=org\".", t.Name)
	}
}

func serviceNames() string {
	var names []string
	for _, s := range table.Services {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}
