package mda

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"smtpd/internal/envelope"
)

// CommandTimeout bounds an mda command.
const CommandTimeout = 5 * time.Minute

// The exit codes of sysexits.h that mean "try again later".
const (
	exTempfail = 75
	exOSErr    = 71
)

// deliverCommand runs argv, without a shell, with the message on its
// standard input and the delivery described in its environment. Exit 0
// is success, 75 (EX_TEMPFAIL) and 71 (EX_OSERR) a temporary failure,
// anything else a permanent one.
func deliverCommand(argv []string, env []string, e *envelope.Envelope, body io.Reader) error {
	ctx, cancel := context.WithTimeout(context.Background(), CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &limitedBuffer{&out, 512}, &limitedBuffer{&out, 512}
	pr, pw := io.Pipe()
	cmd.Stdin = pr
	go func() { pw.CloseWithError(writeMessage(pw, e, body)) }()
	err := cmd.Run()
	pr.Close()
	detail := strings.TrimSpace(out.String())
	if detail != "" {
		detail = ": " + detail
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return tempError{fmt.Errorf("mda command timed out after %v", CommandTimeout)}
	case errors.As(err, &exit) && (exit.ExitCode() == exTempfail || exit.ExitCode() == exOSErr):
		return tempError{fmt.Errorf("mda command exited %d%s", exit.ExitCode(), detail)}
	case errors.As(err, &exit):
		return fmt.Errorf("mda command exited %d%s", exit.ExitCode(), detail)
	case errors.Is(err, os.ErrNotExist), errors.Is(err, exec.ErrNotFound):
		return tempError{fmt.Errorf("mda command %s: %w", argv[0], err)}
	}
	return tempError{fmt.Errorf("mda command: %w", err)}
}

// limitedBuffer keeps the first n bytes written to it and drops the rest.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
