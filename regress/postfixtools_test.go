package regress

import (
	"os"
	"path/filepath"
	"testing"
)

// postfixTool returns the path of a program of Debian's postfix package
// as `make postfix-tools` extracts it into var/postfix (not installed),
// and the environment to run it with: its shared libraries, from the
// package, as LD_LIBRARY_PATH, and MAIL_CONFIG, a directory of its own
// with a minimal main.cf. It fails the test if the program is missing.
func postfixTool(t *testing.T, name string) (path string, env []string) {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(root, "var", "postfix", "usr", "sbin", name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s: %v (run make postfix-tools, as root: it extracts Debian's postfix package into var/postfix)", name, err)
	}
	conf := t.TempDir()
	// The Postfix programs check at start that mail_owner and
	// setgid_group name a user and a group of the system, distinct
	// from default_privs (nobody) and from each other; postfix and
	// postdrop exist only where the package is installed, daemon and
	// mail in every Debian system (base-passwd).
	mainCF := "mail_owner = daemon\nsetgid_group = mail\n"
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatal(err)
	}
	env = append(os.Environ(),
		"LD_LIBRARY_PATH="+filepath.Join(root, "var", "postfix", "usr", "lib", "postfix"),
		"MAIL_CONFIG="+conf)
	return path, env
}
