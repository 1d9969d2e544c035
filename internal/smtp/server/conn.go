package server

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// readBufferSize holds the longest line the engine must take whole: a
// SASL response (RFC 4954 §4), or a longer configured command line.
const readBufferSize = 16 << 10

// lineStall is how long a client may pause inside a line that is
// already over the limit. Clients write whole lines; one that stops in
// the middle of an over-long one and waits for an answer is not
// speaking SMTP (an HTTP client, a slow-loris), and is let go after its
// 500 rather than held until the command timeout.
const lineStall = time.Second

// Errors ending a session without a reply of the usual kind.
var (
	errLineTooLong  = errors.New("line too long")
	errShuttingDown = errors.New("server shutting down")
)

// Conn is one SMTP connection, as its Session's hooks see it. Its
// methods may be called from the hooks and from the Report callback,
// which all run on the session's goroutine.
type Conn struct {
	srv *Server
	nc  net.Conn
	// rw is the transport: nc, or the TLS connection over it
	rw  net.Conn
	tls *tls.ConnectionState
	br  *bufio.Reader
	bw  *bufio.Writer
	// end is when the session must be over
	end time.Time
	// lineBuf is reused to format reply lines
	lineBuf []byte
	// bodyBuf is reused to buffer each message to the Session
	bodyBuf *bufio.Writer

	sess  Session
	liner DataLineSession
	id    uint64
	local bool

	helo     string
	extended bool
	authUser string
	errors   int
	tx       *transaction
	txCount  int
	refused  bool // the greeting was a 554: only QUIT is welcome
	quit     bool // end the session after the current reply
	// longLine is set while the rest of an over-long line is to be
	// dropped; stalling shortens the read deadline meanwhile
	longLine, stalling bool

	// mu guards what Shutdown, on another goroutine, looks at
	mu      sync.Mutex
	idle    bool
	closing bool
}

func newConn(s *Server, nc net.Conn) *Conn {
	c := &Conn{srv: s, nc: nc, rw: nc, end: time.Now().Add(s.sessionTimeout())}
	c.br = bufio.NewReaderSize(connReader{c}, max(readBufferSize, s.maxLineLength()+2))
	c.bw = bufio.NewWriterSize(connWriter{c}, 4096)
	return c
}

// RemoteAddr is the client's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// LocalAddr is the address the client connected to.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// NetConn is the connection under the session, for what only the
// daemon knows how to ask of it (the credentials of a local socket).
// Reading or writing it breaks the session.
func (c *Conn) NetConn() net.Conn { return c.nc }

// TLS returns the state of the TLS connection, if there is one.
func (c *Conn) TLS() (tls.ConnectionState, bool) {
	if c.tls == nil {
		return tls.ConnectionState{}, false
	}
	return *c.tls, true
}

// Helo is the name the client gave in HELO or EHLO, "" before it did
// (and again after STARTTLS, RFC 3207 §4.2).
func (c *Conn) Helo() string { return c.helo }

// Extended reports whether the client said EHLO rather than HELO.
func (c *Conn) Extended() bool { return c.extended }

// AuthUser is the user the client authenticated as, "" if none.
func (c *Conn) AuthUser() string { return c.authUser }

// ID is the session identifier the daemon set, 0 if none.
func (c *Conn) ID() uint64 { return c.id }

// SetID sets the session identifier, for the daemon's logs and reports.
func (c *Conn) SetID(id uint64) { c.id = id }

// Local reports whether the session is a local submission.
func (c *Conn) Local() bool { return c.local }

// SetLocal marks the session as a local submission (sendmail): its
// messages may start without a header section, which the daemon then
// completes, where a message from the network is refused with 550 5.7.1
// as OpenSMTPD refuses it.
func (c *Conn) SetLocal(local bool) { c.local = local }

// Disconnect ends the session once the reply to the current command is
// sent.
func (c *Conn) Disconnect() { c.quit = true }

// Ending reports whether the session ends, or ended, because of a reply
// (to QUIT, a 421, a refusal that closes the session) rather than
// because the client went away or a read failed.
func (c *Conn) Ending() bool { return c.quit }

// transaction is what the client declared since MAIL.
type transaction struct {
	n      int
	params MailParams
	rcpts  int
	// body is the message being received by BDAT, nil before the
	// first chunk
	body *body
}

// deadline is the time limit of the next read or write.
func (c *Conn) deadline() time.Time {
	d := c.srv.commandTimeout()
	if c.stalling {
		d = lineStall
	}
	t := time.Now().Add(d)
	if t.After(c.end) {
		return c.end
	}
	return t
}

// connReader reads from the transport, first sending the replies held
// back: a read that needs the network means the client's input is
// drained, which is when replies to pipelined commands must go out (RFC
// 2920).
type connReader struct{ c *Conn }

func (r connReader) Read(p []byte) (int, error) {
	c := r.c
	if err := c.bw.Flush(); err != nil {
		return 0, err
	}
	if err := c.nc.SetReadDeadline(c.deadline()); err != nil {
		return 0, err
	}
	c.mu.Lock()
	stop := c.closing && c.idle
	c.mu.Unlock()
	if stop {
		return 0, errShuttingDown
	}
	return c.rw.Read(p)
}

type connWriter struct{ c *Conn }

func (w connWriter) Write(p []byte) (int, error) {
	c := w.c
	if err := c.nc.SetWriteDeadline(c.deadline()); err != nil {
		return 0, err
	}
	return c.rw.Write(p)
}

// setIdle marks the session as waiting for a command, which Shutdown
// may interrupt.
func (c *Conn) setIdle(idle bool) {
	c.mu.Lock()
	c.idle = idle
	c.mu.Unlock()
}

// shutdown asks the session to end at its next command; one waiting for
// a command now is woken.
func (c *Conn) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	if c.idle {
		// the lock orders this against connReader's own deadline:
		// either it sees closing, or this deadline comes after its
		c.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// readLine reads a line ending in LF, and returns it without its CRLF
// or LF: commands may end in a bare LF, as OpenSMTPD accepts them. A
// line longer than limit, line ending included, gives errLineTooLong as
// soon as limit octets are in without a line end: the caller answers at
// once, then drops the rest with skipRest.
func (c *Conn) readLine(limit int) (string, error) {
	for n := 0; ; {
		data, _ := c.br.Peek(c.br.Buffered())
		if i := bytes.IndexByte(data[n:], '\n'); i >= 0 {
			end := n + i + 1
			if end > limit {
				c.br.Discard(end)
				return "", errLineTooLong
			}
			line := data[:end-1]
			if k := len(line) - 1; k >= 0 && line[k] == '\r' {
				line = line[:k]
			}
			s := string(line)
			c.br.Discard(end)
			return s, nil
		}
		if len(data) >= limit {
			c.br.Discard(len(data))
			c.longLine = true
			return "", errLineTooLong
		}
		n = len(data)
		// the buffer holds more than limit, so there is room
		if _, err := c.br.Peek(n + 1); err != nil {
			return "", err
		}
	}
}

// skipRest drops the rest of an over-long line, once its reply is
// written, and reports whether the session may go on: not if the
// connection fails, nor if the client stalls inside the line.
func (c *Conn) skipRest() bool {
	if !c.longLine {
		return true
	}
	c.stalling = true
	defer func() { c.stalling = false }()
	for {
		data, err := c.br.Peek(max(1, c.br.Buffered()))
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				c.report(Event{Kind: EventTimeout})
			}
			c.quit = true
			return false
		}
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			c.br.Discard(i + 1)
			c.longLine = false
			return true
		}
		c.br.Discard(len(data))
	}
}

// readCommand waits for the next command line. Before the client sends
// anything more, a shutting down server may end the session here.
func (c *Conn) readCommand() (string, error) {
	if c.br.Buffered() == 0 {
		c.setIdle(true)
		defer c.setIdle(false)
	}
	return c.readLine(c.srv.maxLineLength())
}

// endOnError says goodbye after a read failed, where something can
// still be said: a timeout or a shutdown gets a 421 (RFC 5321 §3.8,
// §4.5.3.2), a closed connection nothing.
func (c *Conn) endOnError(err error) {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	switch {
	case closing && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, errShuttingDown)):
		c.writeReply(421, codeShutdown, c.srv.hostname()+" Service shutting down, closing connection")
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.report(Event{Kind: EventTimeout})
		c.writeReply(421, codeTimeout, c.srv.hostname()+" Timeout, closing connection")
	default:
		return
	}
	// the write gets a deadline of its own: the session's may be past
	c.end = time.Now().Add(time.Second)
	c.bw.Flush()
}
