package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// Defaults for the Server's zero values.
const (
	// DefaultMaxMessageBytes is OpenSMTPD's default message size limit
	// (35 MiB); RFC 5321 §4.5.3.1.7 asks for at least 64K.
	DefaultMaxMessageBytes = 35 << 20
	// DefaultMaxRecipients is OpenSMTPD's; RFC 5321 §4.5.3.1.8 asks
	// for at least 100.
	DefaultMaxRecipients = 1000
	// DefaultMaxLineLength is the command line limit of RFC 5321
	// §4.5.3.1.4, CRLF included.
	DefaultMaxLineLength = 512
	// DefaultMaxErrors is Postfix's soft error limit: enough for a
	// confused client to recover, too few for a scan.
	DefaultMaxErrors = 10
	// DefaultCommandTimeout is the server timeout of RFC 5321
	// §4.5.3.2.7.
	DefaultCommandTimeout = 5 * time.Minute
	// DefaultSessionTimeout bounds a whole session, so that a client
	// trickling bytes cannot hold one forever (chasquid's 20 minutes).
	DefaultSessionTimeout = 20 * time.Minute
	// DefaultGreeting follows the host name in the greeting.
	DefaultGreeting = "ESMTP smtpd"
)

// maxAuthLine is the longest SASL response line a server must take:
// 12288 octets of base64 (RFC 4954 §4), plus CRLF.
const maxAuthLine = 12288 + 2

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = errors.New("smtp server: closed")

// Server serves SMTP sessions. Its lifecycle is net/http's: Serve on
// listeners, then Shutdown or Close. The zero value of every limit is a
// safe default; fields must not change once serving.
type Server struct {
	// Hostname names the server in the greeting and in the reply to
	// HELO and EHLO; "localhost" if empty.
	Hostname string
	// Greeting follows the host name in the 220 greeting; DefaultGreeting
	// if empty.
	Greeting string
	// TLSConfig enables STARTTLS (RFC 3207), or serves TLS from the
	// first byte with ImplicitTLS (RFC 8314). Nil: no TLS.
	TLSConfig   *tls.Config
	ImplicitTLS bool
	// AuthMechanisms lists the SASL mechanisms offered, of PLAIN and
	// LOGIN; they are offered only under TLS unless AllowInsecureAuth.
	AuthMechanisms    []string
	AllowInsecureAuth bool
	// EnableBinaryMIME offers BODY=BINARYMIME (RFC 3030 §3); whoever
	// relays the messages must then be able to send binary bodies.
	EnableBinaryMIME bool
	// EnableRequireTLS offers REQUIRETLS under TLS (RFC 8689); whoever
	// relays the messages must then honour it.
	EnableRequireTLS bool
	// EnableETRN offers ETRN (RFC 1985) to sessions whose policy is an
	// ETRNSession; others answer it 502 as when it is off. Not with
	// LMTP.
	EnableETRN bool
	// LMTP serves LMTP (RFC 2033) instead of SMTP: LHLO instead of
	// HELO and EHLO, and one reply per recipient at the end of a
	// message.
	LMTP bool
	// MaxMessageBytes is the message size limit, offered as SIZE (RFC
	// 1870).
	MaxMessageBytes int64
	// MaxRecipients is the number of recipients of one transaction;
	// past it RCPT gets 452 4.5.3 (RFC 5321 §4.5.3.1.10).
	MaxRecipients int
	// MaxLineLength bounds command lines, CRLF included; message lines
	// are not bounded. Longer lines get 500 5.5.2 (RFC 5321 §4.5.3.1.4).
	MaxLineLength int
	// MaxErrors is the number of protocol errors a session may make;
	// the next one gets 421 and the session ends.
	MaxErrors int
	// CommandTimeout bounds the wait for each command and each read or
	// write within one; SessionTimeout bounds a whole session.
	CommandTimeout, SessionTimeout time.Duration
	// NewSession gives the policy of one connection. It is called
	// once the connection is accepted (and, with ImplicitTLS, its
	// handshake done), before the greeting.
	NewSession func(c *Conn) Session
	// Report, if set, sees every line in and out and the link and
	// transaction events, in order, on the session's goroutine.
	Report func(Event)

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*Conn]struct{}
}

func (s *Server) hostname() string {
	if s.Hostname == "" {
		return "localhost"
	}
	return s.Hostname
}

func (s *Server) greeting() string {
	if s.Greeting == "" {
		return DefaultGreeting
	}
	return s.Greeting
}

func (s *Server) maxMessageBytes() int64 {
	if s.MaxMessageBytes <= 0 {
		return DefaultMaxMessageBytes
	}
	return s.MaxMessageBytes
}

func (s *Server) maxRecipients() int {
	if s.MaxRecipients <= 0 {
		return DefaultMaxRecipients
	}
	return s.MaxRecipients
}

func (s *Server) maxLineLength() int {
	if s.MaxLineLength <= 0 {
		return DefaultMaxLineLength
	}
	return s.MaxLineLength
}

func (s *Server) maxErrors() int {
	if s.MaxErrors <= 0 {
		return DefaultMaxErrors
	}
	return s.MaxErrors
}

func (s *Server) commandTimeout() time.Duration {
	if s.CommandTimeout <= 0 {
		return DefaultCommandTimeout
	}
	return s.CommandTimeout
}

func (s *Server) sessionTimeout() time.Duration {
	if s.SessionTimeout <= 0 {
		return DefaultSessionTimeout
	}
	return s.SessionTimeout
}

// Serve accepts connections on l and serves each in its own goroutine,
// until l fails or the server is shut down; then it closes l and
// returns the error, ErrServerClosed after Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	if !s.track(l) {
		l.Close()
		return ErrServerClosed
	}
	defer s.untrack(l)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if !temporary(err) {
				l.Close()
				return err
			}
			// out of descriptors or buffers: wait for some to be
			// freed, as net/http does
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go s.ServeConn(nc)
	}
}

// temporary reports whether an Accept error may go away by itself.
func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// ServeConn serves one session on nc and returns when it ends; the
// daemon's local sessions come this way. nc is closed at the end.
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(s, nc)
	if !s.track(c) {
		nc.Close()
		return
	}
	defer s.untrack(c)
	c.serve()
}

// track registers a listener or a connection; it fails once the
// server is shut down.
func (s *Server) track(v any) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	switch v := v.(type) {
	case net.Listener:
		if s.listeners == nil {
			s.listeners = map[net.Listener]struct{}{}
		}
		s.listeners[v] = struct{}{}
	case *Conn:
		if s.conns == nil {
			s.conns = map[*Conn]struct{}{}
		}
		s.conns[v] = struct{}{}
	}
	return true
}

func (s *Server) untrack(v any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch v := v.(type) {
	case net.Listener:
		delete(s.listeners, v)
	case *Conn:
		delete(s.conns, v)
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// closeListeners marks the server closed and closes its listeners.
func (s *Server) closeListeners() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var err error
	for l := range s.listeners {
		if e := l.Close(); e != nil && err == nil {
			err = e
		}
		delete(s.listeners, l)
	}
	return err
}

// Shutdown stops the server gracefully: it closes the listeners, ends
// each session that waits for a command with 421 4.3.2, lets the others
// finish what they are doing (a message being received, a hook), and
// waits until all have ended or ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.closeListeners()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		for c := range s.conns {
			c.shutdown()
		}
		s.mu.Unlock()
		if n == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Sessions is the number of sessions being served, for the daemon's
// account of a Shutdown.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close stops the server at once: it closes the listeners and every
// connection.
func (s *Server) Close() error {
	err := s.closeListeners()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
	}
	return err
}
