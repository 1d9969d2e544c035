package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"smtpd/internal/config"
	"smtpd/internal/enqueue"
	"smtpd/internal/table"
)

// personality runs the program under the name it was called by: the
// sendmail interface an operating system expects of its mail system.
// It returns false for smtpctl itself.
func personality(name string, args []string, stdin io.Reader, stdout, stderr io.Writer) (int, bool) {
	switch name {
	case "sendmail", "send-mail":
		return sendmail(name, args, stdin, stdout, stderr), true
	case "mailq":
		return sendmail(name, append([]string{"-bp"}, args...), stdin, stdout, stderr), true
	case "newaliases":
		return sendmail(name, append([]string{"-bi"}, args...), stdin, stdout, stderr), true
	case "makemap":
		return makemap(args, stdout, stderr), true
	}
	return 0, false
}

// sendmail is sendmail(8): enqueue a message, speak SMTP on standard
// input (-bs), list the queue (-bp) or reload aliases (-bi).
func sendmail(name string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(status int, err error) int {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return status
	}
	opts, err := enqueue.ParseArgs(args)
	if err != nil {
		return fail(enqueue.ExitUsage, err)
	}
	cfg, err := loadConfig(opts.Config)
	if err != nil {
		return fail(enqueue.ExitSoftware, err)
	}
	env := &cmdEnv{socket: cfg.ControlSocket, spool: cfg.SpoolDir}
	switch opts.Mode {
	case enqueue.ModeQueue:
		if err := showQueue(env, stdout); err != nil {
			return fail(1, err)
		}
		return 0
	case enqueue.ModeAliases:
		if err := newaliases(cfg, env, stdout); err != nil {
			return fail(1, err)
		}
		return 0
	}
	client, err := enqueue.NewClient(cfg)
	if err != nil {
		return fail(enqueue.ExitSoftware, err)
	}
	if opts.Verbose {
		client.Debug = stderr
	}
	if opts.Mode == enqueue.ModeSMTP {
		err = client.SMTP(stdin, stdout)
	} else {
		err = client.Deliver(opts, stdin)
	}
	var e *enqueue.Error
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return fail(e.Status, err)
	}
	return fail(enqueue.ExitTempFail, err)
}

// loadConfig reads the configuration at path, or the default one, or
// returns the defaults if there is none. Table files and keys are not
// read: an ordinary user may run sendmail.
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		if _, err := os.Stat(config.DefaultPath); err != nil {
			return config.Parse(nil, config.DefaultPath)
		}
		path = config.DefaultPath
	}
	return config.LoadWithoutTables(path)
}

// newaliases reloads the alias tables of the running daemon; aliases are
// read from their files, so there is no database to rebuild.
func newaliases(cfg *config.Config, env *cmdEnv, out io.Writer) error {
	seen := map[string]bool{}
	for _, a := range cfg.Actions {
		t := a.Alias
		if t == nil || t.File == "" || seen[t.Name] {
			continue
		}
		seen[t.Name] = true
		if err := updateTable(env.socket, t.Name, out); err != nil {
			return err
		}
	}
	if len(seen) == 0 {
		fmt.Fprintln(out, "no alias table files to reload")
	}
	return nil
}

// makemap checks a table file and, with -o, writes it out in canonical
// form: one entry per line, sorted. Tables are read as text, so there is
// no database to build.
func makemap(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("makemap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kind := fs.String("t", "", "table `type`: aliases (a map) or set (a list)")
	out := fs.String("o", "", "write the checked table to `file`")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: makemap [-t aliases|set] [-o file] file")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fs.Usage()
		return 64
	}
	path := fs.Arg(0)
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "makemap: %v\n", err)
		return 1
	}
	t, err := table.Parse(data)
	if err == nil {
		switch {
		case *kind == "aliases" && t.Kind != table.Map && t.Len() > 0:
			err = errors.New("aliases need a value for each key")
		case *kind == "set" && t.Kind != table.List:
			err = errors.New("a set has keys without values")
		case *kind != "" && *kind != "aliases" && *kind != "set":
			err = fmt.Errorf("unknown type %q", *kind)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "makemap: %s: %v\n", path, err)
		return 1
	}
	if *out == "" {
		fmt.Fprintf(stdout, "%s: %d entries (%s)\n", path, t.Len(), t.Kind)
		return 0
	}
	if err := writeTable(*out, t); err != nil {
		fmt.Fprintf(stderr, "makemap: %v\n", err)
		return 1
	}
	return 0
}

// writeTable replaces path with t, sorted, through a temporary file.
func writeTable(path string, t *table.Static) error {
	keys := t.Keys()
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v, _ := t.Lookup(k)
		if v == "" {
			fmt.Fprintln(&b, k)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", k, v)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(b.String()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
