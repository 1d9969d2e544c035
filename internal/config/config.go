// Package config loads smtpd.conf, the daemon's HCL configuration of
// global settings, tables, listeners, actions and match rules
// (smtpd.conf(5)). Every problem is an HCL diagnostic naming the file,
// the line and the offending source.
package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"smtpd/internal/table"
)

// Defaults for the global settings.
const (
	DefaultPath          = "/etc/mail/smtpd.conf"
	DefaultSpoolDir      = "/var/spool/smtpd"
	DefaultControlSocket = "/var/run/smtpd.sock"
	DefaultUser          = "_smtpd"
	DefaultQueueUser     = "_smtpq"
	DefaultEmptyDir      = "/var/empty"
)

// Config is a loaded configuration. Relative paths in the file are
// resolved against the file's directory.
type Config struct {
	// Path is the file the configuration came from.
	Path string

	Hostname      string
	SpoolDir      string
	ControlSocket string
	// User runs smtp, mfa, lookup, mta and control; QueueUser runs queue.
	User, QueueUser string
	// EmptyDir is the chroot of smtp, mfa and control.
	EmptyDir string
	// Resolvers are the DNS servers (host:port); empty means those of
	// /etc/resolv.conf.
	Resolvers []string
	// ListenMetrics is where control serves the counters in the
	// OpenMetrics text format; "" (the default) serves none.
	ListenMetrics string
	// MXPort is the port of mail exchangers: 25 but for tests.
	MXPort int
	// ResolverValidates says the resolvers validate DNSSEC, so their
	// AD bit is trusted (DANE needs it); by default only resolvers on
	// this host are.
	ResolverValidates bool
	// CAFile holds certificate authorities mta trusts besides the
	// system's, for STARTTLS and MTA-STS policy fetches.
	CAFile string
	// MTAStateDir is mta's own directory (its chroot): the MTA-STS
	// policy cache and the TLS-RPT counts.
	MTAStateDir string
	// MTASTSPort is the HTTPS port of MTA-STS policy hosts: 443 but
	// for tests.
	MTASTSPort int
	TLSReports TLSReports

	Limits    Limits
	Tables    []*Table
	Listeners []*Listener
	Actions   []*Action
	Matches   []*Match
	Filters   []*Filter
	// Throttle bounds the rates of inbound clients, Destinations
	// outbound mail per domain, Overload when new mail is refused.
	Throttle     Throttle
	Destinations []*Destination
	Overload     Overload
	// AuthservID names this host in Authentication-Results fields
	// (RFC 8601); the host name by default.
	AuthservID string
	// DKIMKeys are the dkim blocks; SRS is the srs block, or nil.
	DKIMKeys []*DKIMKey
	SRS      *SRS
	// Externals are the external blocks: commands that externals
	// actions send mail on with.
	Externals []*ExternalCommand
}

// Limits bounds what clients and the queue may do.
type Limits struct {
	// MessageSize is the largest message accepted, in bytes.
	MessageSize int64
	// Recipients per transaction; RFC 5321 §4.5.3.1.8 asks for at least 100.
	Recipients int
	// MailsPerSession is the number of transactions in one session.
	MailsPerSession int
	// Sessions is the number of concurrent inbound sessions; 0 derives it
	// from the descriptor limit.
	Sessions int
	// SessionsPerIP is the number of concurrent sessions from one address.
	SessionsPerIP int
	// AuthFailuresPerIP is the number of wrong credentials one address
	// may give within ten minutes before it must wait; high enough
	// that the users behind one NAT do not lock each other out.
	AuthFailuresPerIP int
	// LineLength is the longest line accepted, CRLF included; RFC 5321
	// §4.5.3.1.6 sets 1000 as the minimum a server must take.
	LineLength int
	// CommandTimeout is the server timeout of RFC 5321 §4.5.3.2.7.
	CommandTimeout time.Duration
	// SessionTimeout bounds a whole session, against slow clients.
	SessionTimeout time.Duration
	// QueueExpire is how long a message may stay in the queue.
	QueueExpire time.Duration
	// BounceWarn is the delay after which the sender is told of a delay.
	BounceWarn time.Duration
	// RetryBase is the unit of the retry backoff: the n-th retry comes
	// RetryBase x n² after the failure before it.
	RetryBase time.Duration
	// DrainTimeout is how long a stop (SIGTERM, SIGINT) waits for the
	// sessions receiving a message to finish it, once the listeners are
	// closed and the idle sessions sent away with 421; 0 stops at once,
	// cutting them (their clients retry, nothing acknowledged is lost).
	DrainTimeout time.Duration
}

// DefaultLimits are the limits of an empty limits block.
func DefaultLimits() Limits {
	return Limits{
		MessageSize:       35 << 20,
		Recipients:        1000,
		MailsPerSession:   100,
		SessionsPerIP:     50,
		AuthFailuresPerIP: 20,
		LineLength:        4096,
		CommandTimeout:    5 * time.Minute,
		SessionTimeout:    30 * time.Minute,
		QueueExpire:       4 * 24 * time.Hour,
		BounceWarn:        4 * time.Hour,
		RetryBase:         time.Minute,
		DrainTimeout:      30 * time.Second,
	}
}

// Table is a named table block, or an inline list or map written in a
// match rule or an action.
type Table struct {
	// ID is the table's place in Config.Tables, the same in every
	// process: others name a table to lookup by it.
	ID   int
	Name string
	// Inline is set for tables written in place rather than in a block.
	Inline bool
	// File is the table file, or "" for inline data.
	File string
	Data *table.Static
	// External, if set, is a table kept outside smtpd (a database, a
	// directory, a program); Data is then empty.
	External *External
	// Range is where the table is defined.
	Range hcl.Range
}

// LoadError is a configuration that could not be loaded. Its message is
// the rendered diagnostics, with file, line and source snippet.
type LoadError struct {
	Diags hcl.Diagnostics
	files map[string]*hcl.File
}

func (e *LoadError) Error() string {
	var b bytes.Buffer
	w := hcl.NewDiagnosticTextWriter(&b, e.files, 78, false)
	w.WriteDiagnostics(e.Diags)
	return strings.TrimRight(b.String(), "\n")
}

// Lines are the diagnostics a line each, for a log: file and line, then
// what is wrong.
func (e *LoadError) Lines() []string {
	lines := make([]string, 0, len(e.Diags))
	for _, d := range e.Diags {
		what := d.Summary
		if d.Detail != "" {
			what += ": " + d.Detail
		}
		if d.Severity == hcl.DiagWarning {
			what = "warning: " + what
		}
		if d.Subject != nil {
			what = fmt.Sprintf("%s:%d: %s", d.Subject.Filename, d.Subject.Start.Line, what)
		}
		lines = append(lines, what)
	}
	return lines
}

// reads are the files a load reads besides the configuration, so that
// each process reads only what it owns (DESIGN.md, data ownership).
type reads uint8

const (
	// readTables reads table files and keeps the data of all tables.
	readTables reads = 1 << iota
	// readKeys loads the certificates and private keys of the
	// listeners to check them.
	readKeys
)

// Load reads and checks the configuration at path with everything it
// names: a check (smtpd -n) and the start that detaches use it.
func Load(path string) (*Config, error) { return load(path, readTables|readKeys) }

// LoadTables is Load for lookup, which holds the tables but no private
// key.
func LoadTables(path string) (*Config, error) { return load(path, readTables) }

// LoadWithoutTables is Load for every process but lookup, which alone
// holds table contents (DESIGN.md, data ownership): table files are not
// read, the data of inline tables is dropped once checked, and every
// Table is left with a nil Data, so that a process that should have
// asked lookup fails loudly instead of finding nothing. Certificate keys
// are not loaded to check them either: smtp and mta load their own.
func LoadWithoutTables(path string) (*Config, error) { return load(path, 0) }

func load(path string, r reads) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	src, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(src, abs, r)
}

// Parse checks the configuration src, read from the absolute path.
// Relative paths in it are resolved against the directory of path.
func Parse(src []byte, path string) (*Config, error) { return parse(src, path, readTables|readKeys) }

func parse(src []byte, path string, r reads) (*Config, error) {
	abs := filepath.Clean(path)
	parser := hclparse.NewParser()
	f, diags := parser.ParseHCL(src, abs)
	files := parser.Files()
	if diags.HasErrors() {
		return nil, &LoadError{diags, files}
	}
	d := &decoder{
		cfg:   &Config{Path: abs},
		dir:   filepath.Dir(abs),
		src:   f.Bytes,
		files: files,

		reads: r,
	}
	d.file(f.Body)
	if d.diags.HasErrors() {
		return nil, &LoadError{d.diags, files}
	}
	if r&readTables == 0 {
		for _, t := range d.cfg.Tables {
			t.Data = nil
		}
	}
	return d.cfg, nil
}

// Table returns the named table block, or nil.
func (c *Config) Table(name string) *Table {
	for _, t := range c.Tables {
		if !t.Inline && t.Name == name {
			return t
		}
	}
	return nil
}

// Action returns the named action, or nil.
func (c *Config) Action(name string) *Action {
	for _, a := range c.Actions {
		if a.Name == name {
			return a
		}
	}
	return nil
}

func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}
