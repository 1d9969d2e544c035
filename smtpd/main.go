// Command smtpd is the mail transfer agent. Started by an administrator
// it is the parent process; the parent starts its children as
// `smtpd -x NAME`. See smtpd.conf(5) for the configuration.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/control"
	"smtpd/internal/enqueue"
	"smtpd/internal/logging"
	"smtpd/internal/lookup"
	"smtpd/internal/mda"
	"smtpd/internal/mfa"
	"smtpd/internal/mta"
	"smtpd/internal/parent"
	"smtpd/internal/privsep"
	"smtpd/internal/queue"
	"smtpd/internal/smtp"
	"smtpd/proto"
)

// detachedEnv marks the copy of the parent that runs detached from the
// terminal.
const detachedEnv = "SMTPD_DETACHED"

func main() {
	fs := flag.NewFlagSet("smtpd", flag.ContinueOnError)
	foreground := fs.Bool("d", false, "stay in the foreground and log to standard error")
	cfgPath := fs.String("f", config.DefaultPath, "configuration `file`")
	check := fs.Bool("n", false, "check the configuration and exit")
	verbose := fs.Bool("v", false, "verbose logging")
	childName := fs.String("x", "", "run as the child process `NAME` (for the parent's use)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: smtpd [-dnv] [-f file]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		os.Exit(2)
	}
	if *childName == "offline" {
		os.Exit(injectOffline(*cfgPath))
	}
	if *childName != "" {
		runChild(*childName, *cfgPath, *foreground, *verbose)
		return
	}
	// The daemon's parent reads no table: lookup alone holds them. A
	// check, and the start that detaches, read them all to report any
	// problem on the terminal; that process then exits.
	load := config.LoadWithoutTables
	if *check || !*foreground && os.Getenv(detachedEnv) == "" {
		load = config.Load
	}
	cfg, err := load(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "smtpd: %v\n", err)
		var le *config.LoadError
		if errors.As(err, &le) {
			fmt.Fprintln(os.Stderr, "smtpd: configuration has errors")
		}
		os.Exit(1)
	}
	if *check {
		fmt.Println("configuration OK")
		return
	}
	if !*foreground && os.Getenv(detachedEnv) == "" {
		os.Exit(detach())
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "smtpd: %v\n", err)
		os.Exit(1)
	}
	log := logging.New("parent", *foreground, *verbose)
	privsep.TuneRuntime(proto.ProcParent)
	os.Exit(parent.Run(cfg, parent.Options{
		Executable:   exe,
		Argv0:        os.Args[0],
		Foreground:   *foreground,
		Verbose:      *verbose,
		SetupTimeout: 10 * time.Second,
		StopTimeout:  5 * time.Second,
		Started:      reportStart(*foreground),
	}, log))
}

// reportStart tells the start that detached (detach) whether the
// daemon serves: "ready", or why not, on the descriptor it passed.
func reportStart(foreground bool) func(error) {
	if foreground || os.Getenv(detachedEnv) == "" {
		return nil
	}
	// not for the children: one holding it would keep the start
	// waiting for the end of the pipe
	syscall.CloseOnExec(startFD)
	return func(err error) {
		w := os.NewFile(startFD, "start")
		if err != nil {
			fmt.Fprintf(w, "%v", err)
		} else {
			fmt.Fprint(w, startReady)
		}
		w.Close()
	}
}

// startFD is the descriptor on which the detached daemon says whether
// it started; startReady is what it writes when it serves.
const (
	startFD    = 3
	startReady = "ready"
)

// detach starts the parent again in a session of its own, away from the
// terminal, and waits until it serves or fails to: the configuration was
// checked already, and what fails later (a port in use, a missing user)
// reaches the terminal and the exit status too, not only syslog.
func detach() int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "smtpd: %v\n", err)
		return 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "smtpd: %v\n", err)
		return 1
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), detachedEnv+"=1")
	cmd.ExtraFiles = []*os.File{w} // startFD
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "smtpd: %v\n", err)
		return 1
	}
	// the daemon's setup is bounded (SetupTimeout), and a daemon that
	// dies closes the pipe: this read ends
	said, _ := io.ReadAll(io.LimitReader(r, 4096))
	r.Close()
	if string(said) == startReady {
		cmd.Process.Release()
		return 0
	}
	if len(said) == 0 {
		said = []byte("the daemon exited during its start; the mail log says why")
	}
	fmt.Fprintf(os.Stderr, "smtpd: %s\n", said)
	cmd.Wait()
	return 1
}

// injectOffline is `smtpd -x offline`, which the parent runs as the
// owner of a message sendmail left in offline/, with the file on
// standard input: it submits the message as that user.
func injectOffline(cfgPath string) int {
	cfg, err := config.LoadWithoutTables(cfgPath)
	if err == nil {
		var client *enqueue.Client
		if client, err = enqueue.NewClient(cfg); err == nil {
			err = client.Inject(os.Stdin)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "smtpd: offline message: %v\n", err)
		var e *enqueue.Error
		if errors.As(err, &e) {
			return e.Status
		}
		return 1
	}
	return 0
}

// runChild is `smtpd -x NAME`: the common start of every child, then the
// process's own loop.
func runChild(name, cfgPath string, foreground, verbose bool) {
	proc, err := proto.ParseProc(name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "smtpd: -x: %v\n", err)
		os.Exit(2)
	}
	c, err := privsep.Attach(proc, cfgPath, foreground, verbose)
	if err != nil {
		logging.New(name, foreground, verbose).Fatalf("%v", err)
	}
	if proc == proto.ProcMDA {
		// started as the recipient by the parent: nothing to drop
		mda.Run(c)
		return
	}
	var srv *smtp.Server
	var relay *mta.MTA
	var filters *mfa.MFA
	var tables *lookup.Lookup
	switch proc {
	case proto.ProcLookup:
		// the SRS secrets are readable by root only
		if tables, err = lookup.New(c); err != nil {
			c.Log.Fatalf("%v", err)
		}
	case proto.ProcMFA:
		// DKIM keys are readable by root only, resolv.conf is out of
		// sight after the chroot
		if filters, err = mfa.New(c); err != nil {
			c.Log.Fatalf("%v", err)
		}
	case proto.ProcSMTP:
		// certificates and keys are readable by root only
		if srv, err = smtp.New(c); err != nil {
			c.Log.Fatalf("%v", err)
		}
	case proto.ProcMTA:
		// certificate authorities are out of sight after the chroot
		relay = mta.New(c)
	}
	if err := c.Drop(); err != nil {
		c.Log.Fatalf("%v", err)
	}
	if err := c.ReceiveSetup(); err != nil {
		c.Log.Fatalf("%v", err)
	}
	switch proc {
	case proto.ProcControl:
		control.Run(c)
	case proto.ProcSMTP:
		srv.Run()
	case proto.ProcQueue:
		queue.Run(c)
	case proto.ProcLookup:
		tables.Run()
	case proto.ProcMFA:
		filters.Run()
	case proto.ProcMTA:
		relay.Run()
	}
}
