package proxyproto

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"smtpd/internal/smtp/server"
)

// addrSession is a policy that accepts everything the tests send and
// nothing else (the nil Session panics on the rest).
type addrSession struct{ server.Session }

func (addrSession) Connect() *server.Reply          { return nil }
func (addrSession) Helo(string, bool) *server.Reply { return nil }
func (addrSession) Quit() *server.Reply             { return nil }
func (addrSession) Abort()                          {}
func (addrSession) Close()                          {}

// serveEngine runs the SMTP engine on a proxyproto Listener, as the
// smtp process would, and returns the client addresses its sessions
// start with.
func serveEngine(t *testing.T, trusted []netip.Prefix) (*Listener, <-chan string) {
	t.Helper()
	l := serve(t, &Listener{Trusted: trusted, Timeout: time.Second})
	remotes := make(chan string, 4)
	srv := &server.Server{
		Hostname:       "mx.example",
		CommandTimeout: 5 * time.Second,
		SessionTimeout: 10 * time.Second,
		NewSession: func(c *server.Conn) server.Session {
			remotes <- c.RemoteAddr().String()
			return addrSession{}
		},
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l, remotes
}

func readReply(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a reply: %q, %v", b.String()+line, err)
		}
		b.WriteString(line)
		if len(line) < 4 || line[3] == ' ' {
			return b.String()
		}
	}
}

// TestEngineTrusted: the engine's session starts with the header's
// address, and the command pipelined with the header is answered.
func TestEngineTrusted(t *testing.T) {
	l, remotes := serveEngine(t, loopback)
	c := dial(t, l)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	write(t, c, "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\nEHLO client.example\r\n")
	r := bufio.NewReader(c)
	if got := readReply(t, r); !strings.HasPrefix(got, "220 ") {
		t.Fatalf("greeting %q", got)
	}
	if got := readReply(t, r); !strings.HasPrefix(got, "250") {
		t.Fatalf("EHLO reply %q", got)
	}
	if got := <-remotes; got != "192.0.2.1:56324" {
		t.Errorf("session started with %s", got)
	}
}

// TestEngineTrustedSilent: no greeting before the header (spec 2), and
// none at all without one.
func TestEngineTrustedSilent(t *testing.T) {
	l, remotes := serveEngine(t, loopback)
	c := dial(t, l)
	closedByPeer(t, c, 5*time.Second)
	select {
	case got := <-remotes:
		t.Errorf("a session started, with %s", got)
	default:
	}
}

// TestEngineUntrusted: a direct client is greeted at once, with its own
// address; one that then sends a header is dropped.
func TestEngineUntrusted(t *testing.T) {
	l, remotes := serveEngine(t, elsewhere)
	for _, first := range []string{"EHLO client.example\r\n", "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n"} {
		c := dial(t, l)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		if got := readReply(t, r); !strings.HasPrefix(got, "220 ") {
			t.Fatalf("greeting %q", got)
		}
		if got := <-remotes; got != c.LocalAddr().String() {
			t.Errorf("session started with %s, want %s", got, c.LocalAddr())
		}
		write(t, c, first)
		if strings.HasPrefix(first, "PROXY") {
			// EOF, or a reset if the close found input unread
			var oe *net.OpError
			if rest, err := io.ReadAll(r); len(rest) != 0 || err != nil && !errors.As(err, &oe) {
				t.Errorf("after a header: %q, %v; want the connection closed", rest, err)
			}
			continue
		}
		if got := readReply(t, r); !strings.HasPrefix(got, "250") {
			t.Errorf("EHLO reply %q", got)
		}
	}
}
