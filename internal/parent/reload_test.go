package parent

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"smtpd/internal/config"
)

// TestDiagnostic: a configuration problem logged on SIGHUP names its
// file and line on one line, with what is wrong.
func TestDiagnostic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "smtpd.conf")
	if err := os.WriteFile(path, []byte("limits {\n  drain_timeout = \"soon\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := config.LoadWithoutTables(path)
	var le *config.LoadError
	if !errors.As(err, &le) {
		t.Fatalf("loaded: %v", err)
	}
	want := path + `:2: Invalid duration: "soon" is not a duration such as 4d, 4h or 90s.`
	if got := diagnostic(le.Diags[0]); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}
