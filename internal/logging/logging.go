// Package logging writes the daemon's log lines, to standard error in the
// foreground (-d) or to syslog's mail facility otherwise. Every line
// carries the name of the process that wrote it.
package logging

import (
	"bufio"
	"fmt"
	"io"
	"log/syslog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Subsystems are what `smtpctl trace` can trace: every IPC frame
// received, the SMTP dialogues of the smtp process, the scheduler's
// decisions, recipient expansions.
var Subsystems = []string{"imsg", "smtp", "scheduler", "expand"}

// Logger writes log lines for one process. It is safe for concurrent use.
type Logger struct {
	name    string
	verbose atomic.Bool
	// traced has a bit per entry of Subsystems
	traced atomic.Uint32

	mu     sync.Mutex
	out    io.Writer
	syslog *syslog.Writer
}

// New returns a logger for the process name. With foreground set it
// writes to standard error, otherwise to syslog (or standard error if
// syslog cannot be reached).
func New(name string, foreground, verbose bool) *Logger {
	l := &Logger{name: name, out: os.Stderr}
	l.verbose.Store(verbose)
	if !foreground {
		if w, err := syslog.New(syslog.LOG_MAIL|syslog.LOG_INFO, "smtpd"); err == nil {
			l.syslog = w
		}
	}
	return l
}

// NewWriter returns a logger for the process name that writes to w,
// for tests.
func NewWriter(name string, w io.Writer, verbose bool) *Logger {
	l := &Logger{name: name, out: w}
	l.verbose.Store(verbose)
	return l
}

type level int

const (
	levelDebug level = iota
	levelInfo
	levelWarn
)

func (l *Logger) write(lv level, format string, args []any) {
	l.writeAs(l.name, lv, format, args)
}

// writeAs writes a line under name, the process name that comes before
// the message; none if it is empty.
func (l *Logger) writeAs(name string, lv level, format string, args []any) {
	if lv == levelDebug && !l.verbose.Load() {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if name != "" {
		msg = name + ": " + msg
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.syslog != nil {
		line := msg
		switch lv {
		case levelDebug:
			l.syslog.Debug(line)
		case levelInfo:
			l.syslog.Info(line)
		default:
			l.syslog.Warning(line)
		}
		return
	}
	fmt.Fprintf(l.out, "%s smtpd[%d]: %s\n", time.Now().Format("2006-01-02T15:04:05.000"), os.Getpid(), msg)
}

// SetVerbose turns debug lines on or off (smtpctl log verbose|brief).
func (l *Logger) SetVerbose(on bool) { l.verbose.Store(on) }

// SetTrace turns tracing of a subsystem, or of "all", on or off; it
// reports false for an unknown subsystem.
func (l *Logger) SetTrace(subsystem string, on bool) bool {
	var bits uint32
	if subsystem == "all" {
		bits = 1<<len(Subsystems) - 1
	} else if i := slices.Index(Subsystems, subsystem); i >= 0 {
		bits = 1 << i
	} else {
		return false
	}
	for {
		old := l.traced.Load()
		next := old &^ bits
		if on {
			next = old | bits
		}
		if l.traced.CompareAndSwap(old, next) {
			return true
		}
	}
}

// Tracing reports whether subsystem is traced.
func (l *Logger) Tracing(subsystem string) bool {
	i := slices.Index(Subsystems, subsystem)
	return i >= 0 && l.traced.Load()&(1<<i) != 0
}

// Tracef logs a line if subsystem is traced.
func (l *Logger) Tracef(subsystem, format string, args ...any) {
	if l.Tracing(subsystem) {
		l.write(levelInfo, "trace "+subsystem+": "+format, args)
	}
}

// Debugf logs a line shown only in verbose mode.
func (l *Logger) Debugf(format string, args ...any) { l.write(levelDebug, format, args) }

// Infof logs an informational line.
func (l *Logger) Infof(format string, args ...any) { l.write(levelInfo, format, args) }

// Warnf logs a problem that the process survives.
func (l *Logger) Warnf(format string, args ...any) { l.write(levelWarn, format, args) }

// Fatalf logs a problem and exits with status 1. Processes share their
// fate: the parent stops the others when one exits.
func (l *Logger) Fatalf(format string, args ...any) {
	l.write(levelWarn, "fatal: "+format, args)
	os.Exit(1)
}

// MaxProgramLine bounds a line another program (a filter, a table
// program) writes on its standard error.
const MaxProgramLine = 4096

// ProgramOutput logs each line of r, another program's standard error,
// through logf with prefix, until r ends, then closes it. Control
// characters become '?', so that a line stays one log line; past a
// line longer than MaxProgramLine the rest is drained unlogged, so that
// the program never blocks on its standard error.
func ProgramOutput(r io.ReadCloser, prefix string, logf func(format string, args ...any)) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), MaxProgramLine)
	for sc.Scan() {
		b := sc.Bytes()
		for i, c := range b {
			if c < ' ' && c != '\t' {
				b[i] = '?'
			}
		}
		logf("%s: %s", prefix, b)
	}
	if sc.Err() != nil {
		logf("%s: standard error: %v", prefix, sc.Err())
		io.Copy(io.Discard, r)
	}
}
