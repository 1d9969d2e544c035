package mta

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Client-side timeouts of RFC 5321 §4.5.3.2.
const (
	// timeoutConnect is not in the RFC: Postfix's value.
	timeoutConnect = 30 * time.Second
	// timeoutCommand is go-smtp's CommandTimeout: the greeting
	// (§4.5.3.2.1), MAIL (.2), RCPT (.3) and the other commands.
	timeoutCommand = 5 * time.Minute
	// timeoutData is the wait for the 354 after DATA (§4.5.3.2.4).
	timeoutData = 2 * time.Minute
	// timeoutBlock is each block of the message (§4.5.3.2.5).
	timeoutBlock = 3 * time.Minute
	// timeoutEnd is go-smtp's SubmissionTimeout: the reply to the final
	// dot (§4.5.3.2.6).
	timeoutEnd = 10 * time.Minute
	// timeoutQuit is ours: nothing depends on the reply to QUIT.
	timeoutQuit = 10 * time.Second
)

// maxReply bounds what a server may send between two of our writes.
// go-smtp bounds a reply line (2000 bytes) but not the lines of a
// reply, and a reply without end would grow until the timeout (OpenSMTPD's
// CVE-2020-8794 was a long reply). 256 KiB is 100 lines of 2000 bytes
// with room for a TLS handshake's certificates.
const maxReply = 256 << 10

// maxGreeting is the longest reply line of RFC 5321 §4.5.3.1.5: what
// is kept of the greeting's first line.
const maxGreeting = 512

// tlsGreeting is what the go-smtp client of a TLS session reads as its
// greeting: after STARTTLS the session starts again as after the 220
// (RFC 3207 §4.2), and go-smtp waits for one.
const tlsGreeting = "220 TLS session\r\n"

var errReplyTooLong = fmt.Errorf("mta: the server sent more than %d bytes in one reply", maxReply)

// wire is the connection under go-smtp's client. It does what the
// client does not: it keeps the first line of the server's greeting,
// which go-smtp reads and drops, for the mail loop check; it bounds
// each reply (maxReply); it runs beforeRead once before the next read,
// for the crash point between the final dot and the remote's reply;
// and it serves pending bytes before the connection's.
type wire struct {
	net.Conn
	pending []byte
	// greeting is the greeting's first line, without its line end,
	// once greeted.
	greeting []byte
	greeted  bool
	// wrote is set at the first write: go-smtp writes nothing before
	// it has read a 220 greeting.
	wrote      bool
	unanswered int // bytes read since our last write
	beforeRead func()
}

func (w *wire) Read(p []byte) (int, error) {
	if f := w.beforeRead; f != nil {
		w.beforeRead = nil
		f()
	}
	if len(w.pending) > 0 {
		n := copy(p, w.pending)
		w.pending = w.pending[n:]
		return n, nil
	}
	if w.unanswered >= maxReply {
		return 0, errReplyTooLong
	}
	if room := maxReply - w.unanswered; len(p) > room {
		p = p[:room]
	}
	n, err := w.Conn.Read(p)
	w.unanswered += n
	if !w.greeted {
		b := p[:n]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b, w.greeted = b[:i], true
		}
		w.greeting = append(w.greeting, b[:min(len(b), maxGreeting-len(w.greeting))]...)
	}
	return n, err
}

func (w *wire) Write(p []byte) (int, error) {
	w.wrote, w.unanswered = true, 0
	return w.Conn.Write(p)
}

// greetingName is the host name the greeting announces: "220 name
// text" or "220-name text" (RFC 5321 §4.2), up to a space or a control
// character.
func (w *wire) greetingName() string {
	if !w.greeted || len(w.greeting) < 4 {
		return ""
	}
	name := string(w.greeting[4:])
	if i := strings.IndexFunc(name, func(r rune) bool { return r <= ' ' }); i >= 0 {
		name = name[:i]
	}
	return name
}

// client is one outbound connection: go-smtp's client over a wire.
type client struct {
	*smtp.Client
	w    *wire
	lmtp bool
	// id names the session in the event lines, as OpenSMTPD's mta
	// session ids do
	id uint64
	// tlsState is set once the session is encrypted, by smtps or
	// STARTTLS.
	tlsState *tls.ConnectionState
}

// newClient starts a session over conn, speaking LMTP (RFC 2033) if
// lmtp is set.
func newClient(conn net.Conn, lmtp bool) *client {
	c := &client{lmtp: lmtp, id: newSessionID()}
	c.attach(&wire{Conn: conn})
	return c
}

func (c *client) attach(w *wire) {
	c.w = w
	if c.lmtp {
		c.Client = smtp.NewClientLMTP(w)
	} else {
		c.Client = smtp.NewClient(w)
	}
	c.CommandTimeout, c.SubmissionTimeout = timeoutCommand, timeoutEnd
}

// hello reads the greeting and introduces us as name (EHLO, HELO if
// that is refused, LHLO in LMTP). greeted reports a 220 greeting,
// whatever became of the rest.
func (c *client) hello(name string) (greeted bool, err error) {
	err = c.Hello(name)
	return c.w.wrote, err
}

// startTLS encrypts the session (RFC 3207); the caller says EHLO again.
// This step is ours, not go-smtp's: v0.25.1 starts TLS only from
// NewClientStartTLS, which says EHLO localhost and gives up when the
// server offers no STARTTLS, so opportunistic TLS would take a second
// connection. The reply is read with net/textproto, and a new go-smtp
// client takes the TLS session. The old client's reader is dropped
// with anything the server sent after its reply, which must not be
// taken for a reply in the TLS session (CVE-2011-0411).
func (c *client) startTLS(cfg *tls.Config) error {
	raw := c.w.Conn
	raw.SetDeadline(time.Now().Add(timeoutCommand))
	if _, err := io.WriteString(c.w, "STARTTLS\r\n"); err != nil {
		return err
	}
	if _, _, err := textproto.NewReader(bufio.NewReader(c.w)).ReadResponse(220); err != nil {
		return err
	}
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	raw.SetDeadline(time.Time{})
	c.attach(&wire{Conn: tc, pending: []byte(tlsGreeting), greeted: true})
	st := tc.ConnectionState()
	c.tlsState = &st
	return nil
}

// bodyBlock is the size of the blocks sendBody reads and writes.
const bodyBlock = 32 << 10

// sendBody writes the message after the 354 of the DATA command dc, as
// go-smtp's DotWriter would: lines that begin with a dot get another
// (RFC 5321 §4.5.2) and bare LFs become CRLF, so that no line of the
// body can end the data early. (One difference: a CR just before a
// line's CRLF goes out as it is, where the DotWriter, which no longer
// sees the pair after a CR, sends it as CR CR CRLF.) It writes a line
// at a time straight to
// the wire (TLS or not), where the DotWriter takes the message a byte
// at a time: half of mta's CPU with 100 KB messages, perf showed. The
// last line's CRLF goes through dc, whose Close then ends the data
// with ".\r\n" alone; a body that does not end with a line end gets
// one from that Close, as from the DotWriter. go-smtp has flushed its
// own buffer with the DATA command, so the bytes keep their order. The
// write deadline is renewed for every block, which go-smtp does not do.
func (c *client) sendBody(dc io.Writer, body io.Reader) error {
	out := bufio.NewWriterSize(blockWriter{c.w, c.w}, bodyBlock)
	in := bufio.NewReaderSize(body, bodyBlock)
	// owed: the CRLF of the last line, not written yet; heldCR: a CR
	// that ended a block, a line end if an LF follows
	lineStart, owed, heldCR := true, false, false
	for {
		chunk, err := in.ReadSlice('\n')
		if len(chunk) > 0 {
			if owed {
				out.WriteString("\r\n")
				owed = false
			}
			if heldCR && chunk[0] != '\n' {
				out.WriteByte('\r')
			}
			if lineStart && chunk[0] == '.' {
				out.WriteByte('.')
			}
			if line, ok := bytes.CutSuffix(chunk, []byte{'\n'}); ok {
				out.Write(bytes.TrimSuffix(line, []byte{'\r'}))
				lineStart, owed, heldCR = true, true, false
			} else {
				data := chunk
				data, heldCR = bytes.CutSuffix(data, []byte{'\r'})
				out.Write(data)
				lineStart = false
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil && err != bufio.ErrBufferFull {
			return err
		}
	}
	// a CR at the very end ends the last line, as with the DotWriter
	owed = owed || heldCR
	if err := out.Flush(); err != nil {
		return err
	}
	c.w.SetWriteDeadline(time.Now().Add(timeoutBlock)) // for the final dot
	if owed {
		_, err := io.WriteString(dc, "\r\n")
		return err
	}
	return nil
}

// blockWriter renews the write deadline of conn for every block.
type blockWriter struct {
	w    io.Writer
	conn net.Conn
}

func (b blockWriter) Write(p []byte) (int, error) {
	b.conn.SetWriteDeadline(time.Now().Add(timeoutBlock))
	return b.w.Write(p)
}

// quit ends the session politely, without waiting long for the reply.
func (c *client) quit() {
	c.CommandTimeout = timeoutQuit
	c.Quit()
	c.Close()
}

// isSMTPError reports a reply of the server, as opposed to a failure
// of the connection, and returns it.
func isSMTPError(err error) (*smtp.SMTPError, bool) {
	var se *smtp.SMTPError
	ok := errors.As(err, &se)
	return se, ok
}
