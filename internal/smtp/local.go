package smtp

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"smtpd/internal/config"
	"smtpd/proto"
)

// localListenerName names the listener of sessions that local programs
// (sendmail) get through control.
const localListenerName = "local"

// localConn is the server end of a local session, with the user control
// vouched for.
type localConn struct {
	net.Conn
	uid  uint32
	user string
}

// localListener hands the engine the sessions newLocalSession makes.
type localListener struct {
	conns     chan net.Conn
	closeOnce sync.Once
	closed    chan struct{}
}

func newLocalListener() *localListener {
	return &localListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *localListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *localListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *localListener) Addr() net.Addr { return &net.UnixAddr{Name: localListenerName, Net: "unix"} }

// localListenerConfig is the listener local sessions run under: plain
// SMTP (the socket never leaves the host), no AUTH, the global host name.
func localListenerConfig(cfg *config.Config) *config.Listener {
	return &config.Listener{Name: localListenerName, TLS: config.TLSNone, Hostname: cfg.Hostname, Protocol: "smtp"}
}

// newLocalSession makes a socket pair, serves one end as a session of
// the local user, and returns the other end for control to pass on.
func (s *Server) newLocalSession(m *proto.ControlSMTPSession) (*os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("local session: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "local-session"), os.NewFile(uintptr(fds[1]), "local-session")
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return nil, fmt.Errorf("local session: %w", err)
	}
	lc := &localConn{Conn: conn, uid: m.UID, user: m.User}
	if s.paused.Load() {
		io.WriteString(conn, pausedReply)
		conn.Close()
		return theirs, nil
	}
	select {
	case s.local.conns <- lc:
	case <-s.local.closed:
		conn.Close()
	}
	return theirs, nil
}
