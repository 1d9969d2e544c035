// Package enqueue is the sendmail interface of the daemon: it takes a
// message from a local program and submits it in a real SMTP session
// that control obtains from smtp for the calling user, or, with the
// daemon down, drops it into the spool's offline/ directory, from which
// the next start injects it as that user.
package enqueue

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"smtpd/internal/config"
	"smtpd/internal/queue"
	"smtpd/internal/safeio"
	"smtpd/proto"
)

// Exit statuses of sendmail, from sysexits(3).
const (
	ExitOK          = 0
	ExitUsage       = 64 // EX_USAGE
	ExitDataErr     = 65 // EX_DATAERR
	ExitNoUser      = 67 // EX_NOUSER
	ExitUnavailable = 69 // EX_UNAVAILABLE
	ExitSoftware    = 70 // EX_SOFTWARE
	ExitIOErr       = 74 // EX_IOERR
	ExitTempFail    = 75 // EX_TEMPFAIL
)

// Error is a failure with the exit status that reports it.
type Error struct {
	Status int
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Client submits mail for a local user.
type Client struct {
	// Socket is the control socket, Spool the spool whose offline/
	// takes messages while the daemon is down.
	Socket, Spool string
	// Hostname completes the user's address.
	Hostname string
	// User is the login name of the caller, FullName the name for a
	// From field we add.
	User, FullName string
	// Debug, if set, receives the SMTP dialogue (-v).
	Debug io.Writer
	// Now is the clock.
	Now func() time.Time
}

// userAddress is the caller's own address.
func (c *Client) userAddress() string { return c.User + "@" + c.Hostname }

// Deliver reads a message from r and submits it as o says. With the
// daemon down the message goes to offline/ and Deliver succeeds.
func (c *Client) Deliver(o Options, r io.Reader) error {
	msg, err := ReadMessage(r, o.IgnoreDots)
	if err != nil {
		return &Error{ExitDataErr, err}
	}
	rcpts := o.Recipients
	if o.FromHeaders {
		more, err := msg.Recipients()
		if err != nil {
			return &Error{ExitDataErr, err}
		}
		rcpts = append(rcpts, more...)
	}
	if len(rcpts) == 0 {
		return &Error{ExitUsage, errors.New("no recipients")}
	}
	sender := o.Sender
	if sender == "" {
		sender = c.userAddress()
	}
	name := o.FullName
	if name == "" {
		name = c.FullName
	}
	msg.Complete(Sender{Address: sender, FullName: name, Hostname: c.Hostname}, c.Now())
	conn, err := c.Session()
	if err != nil {
		var down *daemonDown
		if !errors.As(err, &down) {
			return &Error{ExitTempFail, err}
		}
		if err := c.writeOffline(sender, rcpts, msg); err != nil {
			return &Error{ExitTempFail, fmt.Errorf("%v, and the message cannot be kept in %s: %w", down, filepath.Join(c.Spool, queue.DirOffline), err)}
		}
		return nil
	}
	return c.submit(conn, sender, rcpts, msg)
}

// daemonDown is a control socket nobody listens on.
type daemonDown struct{ err error }

func (d *daemonDown) Error() string { return d.err.Error() }

// Session asks control for an SMTP session in the name of the user and
// returns its socket.
func (c *Client) Session() (net.Conn, error) {
	ch, err := proto.DialControl(c.Socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, &daemonDown{err}
		}
		return nil, err
	}
	defer ch.Close()
	if err := ch.Send(&proto.ControlEnqueue{User: c.User}, 1); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	env, err := ch.Recv()
	if err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	switch m := env.Msg.(type) {
	case *proto.ControlFile:
		f := m.File()
		defer f.Close()
		conn, err := net.FileConn(f)
		if err != nil {
			return nil, fmt.Errorf("session socket: %w", err)
		}
		return conn, nil
	case *proto.ControlError:
		return nil, errors.New(m.Text)
	}
	return nil, fmt.Errorf("control answered %s", env.Type)
}

// submit sends one message in an SMTP session. A refused recipient
// stops the transaction: nothing is sent, and the caller learns why.
func (c *Client) submit(conn net.Conn, sender string, rcpts []string, msg io.WriterTo) error {
	sc := gosmtp.NewClient(conn)
	sc.DebugWriter = c.Debug
	defer sc.Close()
	if err := sc.Hello(c.Hostname); err != nil {
		return smtpError("greeting", err)
	}
	if err := sc.Mail(sender, nil); err != nil {
		return smtpError("sender <"+sender+">", err)
	}
	for _, r := range rcpts {
		if err := sc.Rcpt(r, nil); err != nil {
			e := smtpError("recipient <"+r+">", err)
			if e.Status == ExitUnavailable {
				e.Status = ExitNoUser
			}
			return e
		}
	}
	w, err := sc.Data()
	if err != nil {
		return smtpError("data", err)
	}
	if _, err := msg.WriteTo(w); err != nil {
		return &Error{ExitIOErr, fmt.Errorf("sending the message: %w", err)}
	}
	if err := w.Close(); err != nil {
		return smtpError("message", err)
	}
	sc.Quit()
	return nil
}

// smtpError classifies a failed SMTP step: 5xx permanent, the rest
// temporary.
func smtpError(step string, err error) *Error {
	var se *gosmtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 {
		return &Error{ExitUnavailable, fmt.Errorf("%s refused: %w", step, err)}
	}
	return &Error{ExitTempFail, fmt.Errorf("%s: %w", step, err)}
}

// offlineMagic starts every file of offline/.
const offlineMagic = "smtpd-offline 1\n"

// writeOffline keeps a message in offline/ for the next start, through
// safeio.WriteFile: written under a hidden name, which the daemon skips,
// so that it never injects half a message, and durable before sendmail
// says it is kept. The file is created by the caller, so it is the
// user's, mode 0600, in a sticky directory: no other user can read or
// replace it.
func (c *Client) writeOffline(sender string, rcpts []string, msg io.WriterTo) error {
	dir := filepath.Join(c.Spool, queue.DirOffline)
	b := make([]byte, 8)
	rand.Read(b)
	name := fmt.Sprintf("%d.%s", c.Now().Unix(), hex.EncodeToString(b))
	return safeio.WriteFile(filepath.Join(dir, "."+name), filepath.Join(dir, name), 0o600, func(f *os.File) error {
		w := bufio.NewWriter(f)
		fmt.Fprintf(w, "%ssender: %s\n", offlineMagic, sender)
		for _, r := range rcpts {
			fmt.Fprintf(w, "rcpt: %s\n", r)
		}
		w.WriteString("\n")
		if _, err := msg.WriteTo(w); err != nil {
			return err
		}
		return w.Flush()
	})
}

// Inject submits a message that writeOffline kept, read from r.
func (c *Client) Inject(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64*1024)
	magic, err := br.ReadString('\n')
	if err != nil || magic != offlineMagic {
		return &Error{ExitDataErr, errors.New("not an offline message")}
	}
	var sender string
	var rcpts []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return &Error{ExitDataErr, fmt.Errorf("offline message: %w", err)}
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			break
		}
		key, value, _ := strings.Cut(line, ": ")
		switch key {
		case "sender":
			sender = value
		case "rcpt":
			rcpts = append(rcpts, value)
		default:
			return &Error{ExitDataErr, fmt.Errorf("offline message: unknown line %q", line)}
		}
	}
	if len(rcpts) == 0 {
		return &Error{ExitDataErr, errors.New("offline message without recipients")}
	}
	conn, err := c.Session()
	if err != nil {
		return &Error{ExitTempFail, err}
	}
	return c.submit(conn, sender, rcpts, br)
}

// SMTP connects standard input and output to an SMTP session (-bs).
func (c *Client) SMTP(in io.Reader, out io.Writer) error {
	conn, err := c.Session()
	if err != nil {
		return &Error{ExitTempFail, err}
	}
	defer conn.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, conn)
		done <- err
	}()
	go func() {
		io.Copy(conn, in)
		if uc, ok := conn.(*net.UnixConn); ok {
			uc.CloseWrite()
		}
	}()
	if err := <-done; err != nil {
		return &Error{ExitIOErr, err}
	}
	return nil
}

// NewClient returns a client for the calling user under cfg.
func NewClient(cfg *config.Config) (*Client, error) {
	u, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("who are you? %w", err)
	}
	name, _, _ := strings.Cut(u.Name, ",") // the GECOS field's first part
	return &Client{
		Socket: cfg.ControlSocket, Spool: cfg.SpoolDir, Hostname: cfg.Hostname,
		User: u.Username, FullName: name, Now: time.Now,
	}, nil
}
