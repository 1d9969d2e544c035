package regress

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// bin holds the binaries built once for all tests of this package.
var bin Binaries

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "smtpd-regress-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// as root, children started from here must be able to exec the binaries
	os.Chmod(dir, 0o755)
	root, _ := filepath.Abs("..")
	bin, err = Build(root, dir, buildTags...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
