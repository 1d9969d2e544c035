package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDrainTimeout: drain_timeout is 30s by default, may be 0 (stop at
// once), and must be a duration.
func TestDrainTimeout(t *testing.T) {
	const listen = "listen \"mx\" { address = \"127.0.0.1:25\" }\n"
	tests := []struct {
		limits string
		want   time.Duration
		err    string
	}{
		{"", 30 * time.Second, ""},
		{"limits {\n  drain_timeout = \"2m\"\n}\n", 2 * time.Minute, ""},
		{"limits {\n  drain_timeout = \"0\"\n}\n", 0, ""},
		{"limits {\n  drain_timeout = \"0s\"\n}\n", 0, ""},
		{"limits {\n  drain_timeout = \"-5s\"\n}\n", 0, "not a duration"},
		{"limits {\n  drain_timeout = \"soon\"\n}\n", 0, "not a duration"},
	}
	for _, tt := range tests {
		p := write(t, t.TempDir(), "smtpd.conf", tt.limits+listen)
		cfg, err := Load(p)
		if tt.err != "" {
			var le *LoadError
			if !errors.As(err, &le) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: got %v, want an error with %q", tt.limits, err, tt.err)
			} else if line := le.Diags[0].Subject.Start.Line; line != 2 {
				t.Errorf("%q: error at line %d, want 2", tt.limits, line)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.limits, err)
			continue
		}
		if cfg.Limits.DrainTimeout != tt.want {
			t.Errorf("%q: drain timeout %v, want %v", tt.limits, cfg.Limits.DrainTimeout, tt.want)
		}
	}
}

// TestChanges: what a reload cannot apply is named by top-level part;
// comments, layout, attribute order and a listener's certificate files
// do not count.
func TestChanges(t *testing.T) {
	const base = `
hostname = "mx.example.test"
limits {
  retry_base = "1s"
  sessions   = 10
}
table "domains" { list = ["example.test"] }
listen "mx" {
  address = "127.0.0.1:25"
  tls     = "starttls"
  cert    = "a.pem"
  key     = "a.key"
}
action "local" { maildir = "mail" }
match {
  for    = table.domains
  action = action.local
}
`
	tests := []struct {
		name string
		edit func(string) string
		want []string
	}{
		{"same", func(s string) string { return s }, nil},
		{"layout and comments", func(s string) string {
			s = strings.Replace(s, `  sessions   = 10`, "  # fewer\n  sessions = 10 // still", 1)
			return strings.Replace(s, `table "domains" { list = ["example.test"] }`, "table \"domains\" {\n  list = [\n    \"example.test\",\n  ]\n}", 1)
		}, nil},
		{"attribute order", func(s string) string {
			return strings.Replace(s, "  retry_base = \"1s\"\n  sessions   = 10\n", "  sessions = 10\n  retry_base = \"1s\"\n", 1)
		}, nil},
		{"new certificate files", func(s string) string {
			return strings.NewReplacer(`"a.pem"`, `"b.pem"`, `"a.key"`, `"b.key"`).Replace(s)
		}, nil},
		{"listener address", func(s string) string { return strings.Replace(s, "127.0.0.1:25", "127.0.0.1:2525", 1) }, []string{`listen "mx"`}},
		{"limits and hostname", func(s string) string {
			s = strings.Replace(s, "sessions   = 10", "sessions = 20", 1)
			return strings.Replace(s, `"mx.example.test"`, `"mx2.example.test"`, 1)
		}, []string{"hostname", "limits"}},
		{"new action and rule", func(s string) string {
			return s + "action \"out\" { relay = \"mx\" }\nmatch {\n  for = \"any\"\n  action = action.out\n}\n"
		}, []string{`action "out"`, "match"}},
		{"removed setting", func(s string) string { return strings.Replace(s, "hostname = \"mx.example.test\"\n", "", 1) }, []string{"hostname"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Changes([]byte(base), []byte(tt.edit(base))); !slices.Equal(got, tt.want) {
				t.Errorf("changes %q, want %q", got, tt.want)
			}
		})
	}
	if got := Changes([]byte(base), []byte("listen {")); got != nil {
		t.Errorf("changes against a broken file: %q", got)
	}
}
