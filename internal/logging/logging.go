// Package logging writes the daemon's log lines, to standard error in the
// foreground (-d) or to syslog's mail facility otherwise. Every line
// carries the name of the process that wrote it.
package logging

import (
	"fmt"
	"io"
	"log/syslog"
	"os"
	"sync"
	"time"
)

// Logger writes log lines for one process. It is safe for concurrent use.
type Logger struct {
	name    string
	verbose bool

	mu     sync.Mutex
	out    io.Writer
	syslog *syslog.Writer
}

// New returns a logger for the process name. With foreground set it
// writes to standard error, otherwise to syslog (or standard error if
// syslog cannot be reached).
func New(name string, foreground, verbose bool) *Logger {
	l := &Logger{name: name, verbose: verbose, out: os.Stderr}
	if !foreground {
		if w, err := syslog.New(syslog.LOG_MAIL|syslog.LOG_INFO, "smtpd"); err == nil {
			l.syslog = w
		}
	}
	return l
}

type level int

const (
	levelDebug level = iota
	levelInfo
	levelWarn
)

func (l *Logger) write(lv level, format string, args []any) {
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	if lv == levelDebug && !l.verbose {
		return
	}
	if l.syslog != nil {
		line := l.name + ": " + msg
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
	fmt.Fprintf(l.out, "%s smtpd[%d]: %s: %s\n", time.Now().Format("2006-01-02T15:04:05.000"), os.Getpid(), l.name, msg)
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
