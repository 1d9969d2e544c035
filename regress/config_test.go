package regress

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBrokenConfigs: `smtpd -n` refuses each file of testdata/badconf
// with a diagnostic naming the file and line that its first line
// announces ("# want: [FILE:]LINE: text").
func TestBrokenConfigs(t *testing.T) {
	paths, _ := filepath.Glob("testdata/badconf/*.conf")
	if len(paths) < 10 {
		t.Fatalf("only %d broken configurations", len(paths))
	}
	want := regexp.MustCompile(`^# want: (?:([^:]+):)?(\d+): (.+)\n`)
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			abs, _ := filepath.Abs(p)
			data, err := os.ReadFile(abs)
			if err != nil {
				t.Fatal(err)
			}
			m := want.FindSubmatch(data)
			if m == nil {
				t.Fatal("no '# want:' line")
			}
			file := abs
			if len(m[1]) > 0 {
				file = filepath.Join(filepath.Dir(abs), string(m[1]))
			}
			cmd := exec.Command(bin.Smtpd, "-n", "-f", abs)
			out, err := cmd.CombinedOutput()
			if err == nil || cmd.ProcessState.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1:\n%s", err, out)
			}
			if loc := "on " + file + " line " + string(m[2]); !strings.Contains(string(out), loc) {
				t.Errorf("no %q in:\n%s", loc, out)
			}
			if !strings.Contains(string(out), string(m[3])) {
				t.Errorf("no %q in:\n%s", m[3], out)
			}
			if strings.Contains(string(out), "configuration OK") {
				t.Errorf("claims OK:\n%s", out)
			}
		})
	}
}

// TestExampleConfigs: the configurations in etc/ and the examples of
// smtpd.conf(5) pass `smtpd -n`.
func TestExampleConfigs(t *testing.T) {
	paths, _ := filepath.Glob("../etc/*.conf")
	examples := manExamples(t)
	if len(paths) < 4 || len(examples) < 3 {
		t.Fatalf("%d example files, %d man page examples", len(paths), len(examples))
	}
	for i, ex := range examples {
		dir, _ := WriteConfig(t, "")
		_, path := WriteConfig(t, withFiles(t, dir, ex))
		paths = append(paths, path)
		t.Logf("man page example %d: %s", i+1, path)
	}
	for _, p := range paths {
		out, err := exec.Command(bin.Smtpd, "-n", "-f", p).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "configuration OK" {
			t.Errorf("%s: %v\n%s", p, err, out)
		}
	}
}

// withFiles makes the files a man page example names under /etc (a
// certificate and its key, DKIM keys, the SRS secret, tables) in dir,
// and points the example at them.
func withFiles(t *testing.T, dir, ex string) string {
	t.Helper()
	tlsDir := filepath.Join(dir, "tls")
	os.Mkdir(tlsDir, 0o755)
	cert, key := writeCert(t, tlsDir)
	block := ""
	lines := strings.Split(ex, "\n")
	quoted := regexp.MustCompile(`"(/etc/[^"]+)"`)
	for i, line := range lines {
		if f := strings.Fields(line); len(f) > 0 && strings.HasSuffix(line, "{") {
			block = f[0]
		}
		lines[i] = quoted.ReplaceAllStringFunc(line, func(q string) string {
			name := filepath.Join(dir, "etc"+strings.Trim(q, `"`))
			attr := strings.TrimSpace(strings.SplitN(line, "=", 2)[0])
			var src string
			switch {
			case attr == "cert":
				src = cert
			case attr == "key" && block == "listen":
				src = key
			case attr == "key" && block == "dkim" && strings.Contains(name, "ed"):
				src = filepath.Join(dir, "ed.pem")
				ed25519Key(t, dir)
			case attr == "key" && block == "dkim":
				src = filepath.Join(dir, "key.pem")
				dkimKey(t, dir)
			}
			data := []byte("a secret for the examples\n")
			if src != "" {
				var err error
				if data, err = os.ReadFile(src); err != nil {
					t.Fatal(err)
				}
			} else if block == "table" {
				data = nil
			}
			os.MkdirAll(filepath.Dir(name), 0o755)
			if err := os.WriteFile(name, data, 0o600); err != nil {
				t.Fatal(err)
			}
			return `"` + name + `"`
		})
	}
	return strings.Join(lines, "\n")
}

// manExamples returns the literal displays of the EXAMPLES section of
// smtpd.conf.5, each a whole configuration, with mdoc escapes undone.
func manExamples(t *testing.T) []string {
	data, err := os.ReadFile("../smtpd.conf.5")
	if err != nil {
		t.Fatal(err)
	}
	_, examples, ok := strings.Cut(string(data), "\n.Sh EXAMPLES\n")
	if !ok {
		t.Fatal("no EXAMPLES section")
	}
	examples, _, _ = strings.Cut(examples, "\n.Sh ")
	var out []string
	for {
		_, rest, ok := strings.Cut(examples, ".Bd -literal")
		if !ok {
			return out
		}
		rest = rest[strings.Index(rest, "\n")+1:]
		block, after, _ := strings.Cut(rest, "\n.Ed")
		out = append(out, strings.ReplaceAll(block, `\e`, `\`)+"\n")
		examples = after
	}
}

// TestManPageLint: smtpd.conf.5 passes mandoc's lint without warnings
// or errors (style notes aside) and renders.
func TestManPageLint(t *testing.T) {
	out, err := exec.Command("mandoc", "-T", "lint", "-W", "warning", "../smtpd.conf.5").CombinedOutput()
	if err != nil {
		t.Fatalf("mandoc -T lint: %v\n%s", err, out)
	}
	text, err := exec.Command("mandoc", "-T", "markdown", "../smtpd.conf.5").Output()
	if err != nil || !strings.Contains(string(text), "MATCH RULES") {
		t.Fatalf("render: %v", err)
	}
}
