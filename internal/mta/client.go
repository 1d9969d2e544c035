package mta

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"smtpd/internal/monkey"
)

// Client-side timeouts of RFC 5321 §4.5.3.2.
const (
	timeoutConnect  = 30 * time.Second
	timeoutGreeting = 5 * time.Minute
	timeoutCommand  = 5 * time.Minute
	timeoutData     = 2 * time.Minute  // the 354 after DATA
	timeoutBlock    = 3 * time.Minute  // each data block
	timeoutEnd      = 10 * time.Minute // the reply to the final dot
)

// Limits of what the client reads: a reply line and a reply's lines.
const (
	maxReplyLine  = 2048
	maxReplyLines = 100
)

// Reply is a server reply: its code and lines of text.
type Reply struct {
	Code  int
	Lines []string
}

func (r *Reply) String() string { return fmt.Sprintf("%d %s", r.Code, strings.Join(r.Lines, " ")) }

// Permanent reports a 5xx reply.
func (r *Reply) Permanent() bool { return r.Code/100 == 5 }

// errBadReply is a reply that does not follow RFC 5321 §4.2.
var errBadReply = errors.New("mta: malformed reply")

// readReply reads one reply, all its lines, defensively: lines are
// bounded, all must carry the same code, and a reply may not have more
// than maxReplyLines lines (CVE-2020-8794 was an out-of-bounds read in
// this place of OpenSMTPD).
func readReply(r *bufio.Reader) (*Reply, error) {
	rep := &Reply{}
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return nil, fmt.Errorf("%w: line longer than %d bytes", errBadReply, r.Size())
		}
		if err != nil {
			return nil, err
		}
		s := strings.TrimRight(string(line), "\r\n")
		if len(s) < 3 {
			return nil, fmt.Errorf("%w: %q", errBadReply, s)
		}
		code, err := strconv.Atoi(s[:3])
		if err != nil || code < 200 || code > 599 {
			return nil, fmt.Errorf("%w: %q", errBadReply, s)
		}
		if rep.Code != 0 && code != rep.Code {
			return nil, fmt.Errorf("%w: code changed in a multi-line reply", errBadReply)
		}
		rep.Code = code
		more := len(s) > 3 && s[3] == '-'
		if len(s) > 3 && s[3] != '-' && s[3] != ' ' {
			return nil, fmt.Errorf("%w: %q", errBadReply, s)
		}
		text := ""
		if len(s) > 4 {
			text = s[4:]
		}
		rep.Lines = append(rep.Lines, text)
		if !more {
			return rep, nil
		}
		if len(rep.Lines) >= maxReplyLines {
			return nil, fmt.Errorf("%w: more than %d lines", errBadReply, maxReplyLines)
		}
	}
}

// client is one SMTP client connection.
type client struct {
	conn net.Conn
	r    *bufio.Reader
	ext  map[string]string
	tls  bool
	// greeting is the server's name from its 220 line.
	greeting string
}

func newClient(conn net.Conn) *client {
	return &client{conn: conn, r: bufio.NewReaderSize(conn, maxReplyLine)}
}

// validArg refuses what could smuggle a second command into ours.
func validArg(s string) error {
	if strings.ContainsAny(s, "\r\n\x00") {
		return errors.New("mta: CR, LF or NUL in a command argument")
	}
	return nil
}

// cmd sends one command line and reads the reply.
func (c *client) cmd(timeout time.Duration, format string, args ...any) (*Reply, error) {
	line := fmt.Sprintf(format, args...)
	if err := validArg(line); err != nil {
		return nil, err
	}
	c.conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		return nil, err
	}
	return readReply(c.r)
}

// greet reads the 220 greeting.
func (c *client) greet() (*Reply, error) {
	c.conn.SetDeadline(time.Now().Add(timeoutGreeting))
	rep, err := readReply(c.r)
	if err == nil && len(rep.Lines) > 0 {
		c.greeting, _, _ = strings.Cut(rep.Lines[0], " ")
	}
	return rep, err
}

// hello sends EHLO, or HELO if EHLO is refused, and records the
// extensions.
func (c *client) hello(name string) (*Reply, error) {
	rep, err := c.cmd(timeoutCommand, "EHLO %s", name)
	if err != nil {
		return nil, err
	}
	c.ext = map[string]string{}
	if rep.Code == 250 {
		for _, l := range rep.Lines[1:] {
			k, v, _ := strings.Cut(l, " ")
			c.ext[strings.ToUpper(k)] = v
		}
		return rep, nil
	}
	return c.cmd(timeoutCommand, "HELO %s", name)
}

// startTLS upgrades the connection; EHLO must be sent again after it.
func (c *client) startTLS(cfg *tls.Config) error {
	rep, err := c.cmd(timeoutCommand, "STARTTLS")
	if err != nil {
		return err
	}
	if rep.Code != 220 {
		return &replyError{rep}
	}
	tc := tls.Client(c.conn, cfg)
	tc.SetDeadline(time.Now().Add(timeoutCommand))
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("mta: TLS handshake: %w", err)
	}
	// anything the server sent before the handshake is discarded with
	// the old reader (CVE-2011-0411)
	c.conn, c.r, c.tls = tc, bufio.NewReaderSize(tc, maxReplyLine), true
	return nil
}

// auth authenticates with PLAIN or LOGIN (RFC 4954), only over TLS.
func (c *client) auth(user, pass string) error {
	if !c.tls {
		return errors.New("mta: refusing to send credentials without TLS")
	}
	mechs := strings.Fields(strings.ToUpper(c.ext["AUTH"]))
	has := func(m string) bool {
		for _, x := range mechs {
			if x == m {
				return true
			}
		}
		return false
	}
	b64 := base64.StdEncoding.EncodeToString
	switch {
	case has("PLAIN"):
		rep, err := c.cmd(timeoutCommand, "AUTH PLAIN %s", b64([]byte("\x00"+user+"\x00"+pass)))
		return authResult(rep, err)
	case has("LOGIN"):
		rep, err := c.cmd(timeoutCommand, "AUTH LOGIN")
		if err != nil || rep.Code != 334 {
			return authResult(rep, err)
		}
		if rep, err = c.cmd(timeoutCommand, "%s", b64([]byte(user))); err != nil || rep.Code != 334 {
			return authResult(rep, err)
		}
		rep, err = c.cmd(timeoutCommand, "%s", b64([]byte(pass)))
		return authResult(rep, err)
	}
	return fmt.Errorf("mta: server offers no AUTH PLAIN or LOGIN (%q)", c.ext["AUTH"])
}

func authResult(rep *Reply, err error) error {
	if err != nil {
		return err
	}
	if rep.Code != 235 {
		return &replyError{rep}
	}
	return nil
}

// replyError is a reply that failed a step.
type replyError struct{ rep *Reply }

func (e *replyError) Error() string { return e.rep.String() }

// data sends the message body, dot-stuffed, and returns the reply to the
// final dot. The body is CRLF text as the spool keeps it.
func (c *client) data(body io.Reader) (*Reply, error) {
	rep, err := c.cmd(timeoutData, "DATA")
	if err != nil {
		return nil, err
	}
	if rep.Code != 354 {
		return rep, nil
	}
	w := bufio.NewWriterSize(&deadlineWriter{c.conn}, 64*1024)
	br := bufio.NewReaderSize(body, 64*1024)
	atLineStart := true
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if atLineStart && chunk[0] == '.' {
				w.WriteByte('.')
			}
			w.Write(chunk)
			atLineStart = chunk[len(chunk)-1] == '\n'
		}
		if err == io.EOF {
			break
		}
		if err != nil && err != bufio.ErrBufferFull {
			return nil, err
		}
	}
	if !atLineStart {
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
	if err := w.Flush(); err != nil {
		return nil, err
	}
	monkey.Crash("mta.before-250")
	c.conn.SetDeadline(time.Now().Add(timeoutEnd))
	return readReply(c.r)
}

// deadlineWriter renews the write deadline for every block.
type deadlineWriter struct{ conn net.Conn }

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.conn.SetWriteDeadline(time.Now().Add(timeoutBlock))
	return d.conn.Write(p)
}

func (c *client) quit() {
	c.cmd(10*time.Second, "QUIT")
	c.conn.Close()
}
