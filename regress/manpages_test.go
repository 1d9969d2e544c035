package regress

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// manPages are the manual pages at the root of the repository, which
// must include these.
func manPages(t *testing.T) []string {
	t.Helper()
	var pages []string
	for _, pattern := range []string{"../*.5", "../*.8"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, m...)
	}
	for _, want := range []string{"smtpd.8", "smtpctl.8", "smtpd.conf.5", "aliases.5", "forward.5"} {
		if !slices.Contains(pages, filepath.Join("..", want)) {
			t.Errorf("no manual page %s at the root of the repository", want)
		}
	}
	return pages
}

// TestManPages: mandoc finds nothing to say about any manual page, not
// even a warning.
func TestManPages(t *testing.T) {
	mandoc, err := exec.LookPath("mandoc")
	if err != nil {
		t.Fatalf("mandoc is not installed (make test installs it): %v", err)
	}
	for _, page := range manPages(t) {
		out, err := exec.Command(mandoc, "-T", "lint", "-W", "warning", page).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("mandoc -T lint -W warning %s: %v\n%s", filepath.Base(page), err, out)
		}
	}
}

var (
	// usageGroup is an option of a usage line, [-dnv] or [-f file]: a
	// group of letters, or a letter and its argument.
	usageGroup = regexp.MustCompile(`\[-([A-Za-z0-9]+)[\] ]`)
	// defaultsLine is a flag as flag.PrintDefaults lists it: "  -name".
	defaultsLine = regexp.MustCompile(`^  -([^\s=]+)`)
	// mdocMacro is a macro name inside an mdoc line, such as Ar or Op.
	mdocMacro = regexp.MustCompile(`^(%[A-Z]|[A-Z][a-z]{1,2})$`)
)

// usageFlags runs a program with an option it does not know and returns
// the options its usage message names: in its usage lines and in the
// list flag.PrintDefaults adds. Options are single letters, as the
// manual pages group them ([-dnv]).
func usageFlags(t *testing.T, name string, args ...string) map[string]bool {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader("")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("%s %v: want a failing exit for an unknown option, got %v\n%s", filepath.Base(name), args, err, out)
	}
	if !strings.Contains(string(out), "usage:") {
		t.Fatalf("%s %v printed no usage:\n%s", filepath.Base(name), args, out)
	}
	flags := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if m := defaultsLine.FindStringSubmatch(line); m != nil {
			if len(m[1]) != 1 {
				t.Errorf("%s: option -%s is not a single letter, which the manual's SYNOPSIS groups", filepath.Base(name), m[1])
			}
			flags[m[1]] = true
			continue
		}
		for _, m := range usageGroup.FindAllStringSubmatch(line, -1) {
			for _, letter := range m[1] {
				flags[string(letter)] = true
			}
		}
	}
	if len(flags) == 0 {
		t.Fatalf("%s: no options found in its usage:\n%s", filepath.Base(name), out)
	}
	return flags
}

// synopsisFlags returns the options (.Fl) of each command of a manual
// page's SYNOPSIS, by the name its .Nm line gives; grouped letters
// (.Fl dnv) are options of their own.
func synopsisFlags(t *testing.T, page string) map[string]map[string]bool {
	t.Helper()
	data, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	commands := map[string]map[string]bool{}
	var current map[string]bool
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, ".Sh ") {
			in = strings.TrimSpace(strings.TrimPrefix(line, ".Sh ")) == "SYNOPSIS"
			continue
		}
		if !in || !strings.HasPrefix(line, ".") {
			continue
		}
		words := strings.Fields(line[1:])
		if len(words) >= 2 && words[0] == "Nm" {
			if commands[words[1]] == nil {
				commands[words[1]] = map[string]bool{}
			}
			current = commands[words[1]]
			continue
		}
		for i, w := range words {
			if w != "Fl" || i+1 == len(words) || mdocMacro.MatchString(words[i+1]) {
				continue
			}
			if current == nil {
				t.Fatalf("%s: .Fl before any .Nm in the SYNOPSIS: %q", filepath.Base(page), line)
			}
			for _, letter := range strings.TrimLeft(strings.ReplaceAll(words[i+1], `\-`, "-"), "-") {
				current[string(letter)] = true
			}
		}
	}
	if len(commands) == 0 {
		t.Fatalf("%s: no .Nm in the SYNOPSIS", filepath.Base(page))
	}
	return commands
}

// compareFlags reports the options only the program or only its page
// names.
func compareFlags(t *testing.T, what string, program, page map[string]bool) {
	t.Helper()
	var undocumented, unknown []string
	for f := range program {
		if !page[f] {
			undocumented = append(undocumented, "-"+f)
		}
	}
	for f := range page {
		if !program[f] {
			unknown = append(unknown, "-"+f)
		}
	}
	slices.Sort(undocumented)
	slices.Sort(unknown)
	if len(undocumented) > 0 {
		t.Errorf("%s: options missing from the SYNOPSIS: %s", what, strings.Join(undocumented, " "))
	}
	if len(unknown) > 0 {
		t.Errorf("%s: the SYNOPSIS names options the program does not take: %s", what, strings.Join(unknown, " "))
	}
}

// TestDaemonFlagsDocumented: the options smtpd's usage names are those
// of the SYNOPSIS of smtpd.8, and likewise for smtpctl and its makemap
// personality in smtpctl.8. The sendmail personality prints no usage:
// it ignores the options it does not know, as other mail systems do, so
// its options are not compared.
func TestDaemonFlagsDocumented(t *testing.T) {
	daemon := synopsisFlags(t, "../smtpd.8")
	if daemon["smtpd"] == nil {
		t.Fatal("smtpd.8: no smtpd in the SYNOPSIS")
	}
	compareFlags(t, "smtpd", usageFlags(t, bin.Smtpd, "-Z"), daemon["smtpd"])

	ctl := synopsisFlags(t, "../smtpctl.8")
	for _, name := range []string{"smtpctl", "makemap"} {
		if ctl[name] == nil {
			t.Fatalf("smtpctl.8: no %s in the SYNOPSIS", name)
		}
	}
	compareFlags(t, "smtpctl", usageFlags(t, bin.Smtpctl, "-Z"), ctl["smtpctl"])

	makemap := filepath.Join(t.TempDir(), "makemap")
	if err := os.Symlink(bin.Smtpctl, makemap); err != nil {
		t.Fatal(err)
	}
	compareFlags(t, "makemap", usageFlags(t, makemap, "-Z"), ctl["makemap"])
}
