package mda

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"smtpd/internal/config"
	"smtpd/internal/envelope"
	"smtpd/internal/header"
	"smtpd/internal/privsep"
)

// Bounds of what is kept of an external's output and header.
const (
	// outputTail is how much of the end of an external's standard
	// output and of its standard error is kept: the last line is what
	// the administrator is shown, and it is at the end.
	outputTail = 4 << 10
	// maxErrorLine bounds the stderr line an attempt reports, since
	// every attempt's line goes into the envelope's last error.
	maxErrorLine = 200
	// maxFailureText bounds the text of a failed delivery, an error
	// line per external tried.
	maxFailureText = 2000
	// maxHeader bounds the header read to route a message; a field
	// past it is not seen by the routes.
	maxHeader = 256 << 10
	// externalWaitDelay bounds the wait for the output pipes once the
	// external exited: a background child it left holding them (an ssh
	// ControlPersist master, say) must not hold the delivery.
	externalWaitDelay = 2 * time.Second
)

// attempt is the outcome of running one external once.
type attempt struct {
	// err is nil when the external took the message.
	err       error
	temporary bool
	// line is the last line of its standard error (or of its standard
	// output when it wrote nothing on standard error).
	line    string
	elapsed time.Duration
}

// deliverExternals sends the message on through the externals the
// action chooses for its header, trying each in turn until one exits 0.
// Every external failing, the failure is temporary unless each one
// failed permanently, and its text names each external with its last
// line of standard error, for `smtpctl show queue`. logf is told of
// every attempt.
func deliverExternals(act *config.Action, vars config.TemplateVars, env []string, dir string, e *envelope.Envelope, body *os.File, logf func(string, ...any)) error {
	fields, err := headerFields(body)
	if err != nil {
		return tempError{fmt.Errorf("externals: reading the header: %w", err)}
	}
	list := act.ExternalsFor(func(name string) []string { return fields[strings.ToLower(name)] })
	id := envelope.FormatEvpID(e.ID)
	var tried []string
	permanent := true
	for _, x := range list {
		a := runExternal(x, vars, env, dir, body)
		if a.err == nil {
			said := ""
			if a.line != "" {
				// such as the queue id of the sendmail at the far end
				said = ": " + a.line
			}
			logf("%s: external %s took the message for <%s> in %v%s", id, x.Name, e.Dest, a.elapsed.Round(time.Millisecond), said)
			return nil
		}
		kind := "permanent"
		if a.temporary {
			kind, permanent = "temporary", false
		}
		text := a.err.Error()
		if a.line != "" {
			text += ": " + a.line
		}
		logf("%s: external %s failed for <%s> after %v (%s): %s", id, x.Name, e.Dest, a.elapsed.Round(time.Millisecond), kind, text)
		tried = append(tried, "external "+x.Name+": "+text)
	}
	text := strings.Join(tried, "; ")
	if len(text) > maxFailureText {
		// an envelope field: many externals must not make it huge
		text = strings.ToValidUTF8(text[:maxFailureText], "") + "..."
	}
	err = errors.New(text)
	if permanent {
		return err
	}
	return tempError{err}
}

// runExternal runs x once: without a shell, its standard input the
// message file from its start, streamed through a pipe (the message is
// never held in memory, and the program reads it at its own pace), its standard
// output and error drained as it writes them into bounded buffers (a
// program that writes a lot never blocks on a full pipe), in a process
// group of its own that is killed at x's timeout.
func runExternal(x *config.ExternalCommand, vars config.TemplateVars, env []string, dir string, body *os.File) attempt {
	start := time.Now()
	argv, err := x.Command.Argv(vars)
	if err != nil {
		return attempt{err: err, temporary: true}
	}
	if argv[0], err = lookPath(argv[0], env); err != nil {
		// a program missing now may be installed later: retried
		return attempt{err: err, temporary: true}
	}
	fi, err := body.Stat()
	if err != nil {
		return attempt{err: fmt.Errorf("message: %w", err), temporary: true}
	}
	var stdout, stderr tailBuffer
	cmd := privsep.ProgramCommand(argv, nil, nil)
	// a pipe fed by positioned reads of the file, not the file itself:
	// the offset of the one description is shared, and a process an
	// earlier external left behind could move it under this one
	cmd.Stdin = io.NewSectionReader(body, 0, fi.Size())
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = env
	if dir != "" {
		cmd.Dir = dir
	}
	cmd.WaitDelay = externalWaitDelay
	if err := cmd.Start(); err != nil {
		return attempt{err: err, temporary: true, elapsed: time.Since(start)}
	}
	// the whole group: ssh started by a wrapper script, and whatever
	// else the program started, ends with it
	timedOut := make(chan struct{})
	timer := time.AfterFunc(x.Timeout, func() {
		close(timedOut)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	err = cmd.Wait()
	timer.Stop()
	// what the program left running in its group goes with it: it
	// could still send the message, or read the next one's input
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	a := attempt{err: err, elapsed: time.Since(start), line: lastLine(stderr.Bytes())}
	if a.line == "" {
		a.line = lastLine(stdout.Bytes())
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case isClosed(timedOut):
		a.err, a.temporary = fmt.Errorf("timed out after %v", x.Timeout), true
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			a.err, a.temporary = fmt.Errorf("killed by signal %d (%v)", ws.Signal(), ws.Signal()), true
		} else {
			a.err, a.temporary = fmt.Errorf("exited %d", exit.ExitCode()), x.IsTemporary(exit.ExitCode())
		}
	case errors.Is(err, exec.ErrWaitDelay):
		// the program exited 0 but left its output open in a child
		a.err = nil
	default:
		a.temporary = true
	}
	return a
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// lookPath finds a program named without a slash in the PATH of env,
// as a shell would; one with a slash is taken as it is.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := ""
	for _, v := range env {
		if p, ok := strings.CutPrefix(v, "PATH="); ok {
			path = p
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in %s", name, path)
}

// tailBuffer keeps the last outputTail bytes written to it. Each
// stream has its own, written by one goroutine of exec and read once
// the command has finished, so it needs no lock.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if n >= outputTail {
		t.b = append(t.b[:0], p[n-outputTail:]...)
		return n, nil
	}
	if over := len(t.b) + n - outputTail; over > 0 {
		t.b = t.b[:copy(t.b, t.b[over:])]
	}
	t.b = append(t.b, p...)
	return n, nil
}

func (t *tailBuffer) Bytes() []byte { return t.b }

// lastLine is the last line of output that is not blank, made fit for
// an envelope field and cut to maxErrorLine bytes.
func lastLine(b []byte) string {
	s := strings.TrimRight(string(b), " \t\r\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.TrimSpace(envelope.CleanText(s))
	if len(s) > maxErrorLine {
		s = strings.ToValidUTF8(s[:maxErrorLine], "") + "..."
	}
	return s
}

// headerFields reads the header of the message in r, at most
// maxHeader bytes of it, into the values of its fields by lower-case
// name, unfolded (the line breaks of folding removed) and trimmed. It
// reads with ReadAt, leaving the file's offset alone.
func headerFields(r io.ReaderAt) (map[string][]string, error) {
	br := bufio.NewReader(io.NewSectionReader(r, 0, maxHeader))
	fields := map[string][]string{}
	name := ""
	var value strings.Builder
	flush := func() {
		if name != "" {
			fields[name] = append(fields[name], strings.TrimSpace(value.String()))
		}
		name = ""
		value.Reset()
	}
	defer flush()
	for {
		line, err := br.ReadString('\n')
		if err != nil && err != io.EOF {
			return nil, err
		}
		text := strings.TrimRight(line, "\r\n")
		switch {
		case text == "":
			// the blank line that ends the header, or the end
			return fields, nil
		case text[0] == ' ' || text[0] == '\t':
			if name != "" {
				value.WriteString(text)
			}
		case header.IsFieldStart([]byte(text)):
			flush()
			n, v, _ := strings.Cut(text, ":")
			name = strings.ToLower(n)
			value.WriteString(v)
		default:
			// not a header line: the body starts without a blank line
			return fields, nil
		}
		if err == io.EOF {
			return fields, nil
		}
	}
}
