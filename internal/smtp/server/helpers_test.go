package server

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is the test policy: it records every call of every session
// and keeps the messages, and refuses at the phases it is told to.
type recorder struct {
	mu       sync.Mutex
	calls    []string
	messages []message
	events   []Event
	// refuse maps a phase (connect, helo, starttls, auth, mail, rcpt,
	// data, dataline, commit, rset, noop, help, quit) to its reply
	refuse map[string]*Reply
	// users are the accepted credentials
	users map[string]string
	// local marks sessions as local submissions
	local bool
	// lineHook rewrites data lines, if set
	lineHook func([]byte) []byte
	// writeErr makes the body writer fail
	writeErr error
}

type message struct {
	from  string
	mail  MailParams
	rcpts []string
	rcptP []RcptParams
	body  string
}

func newRecorder() *recorder {
	return &recorder{refuse: map[string]*Reply{}, users: map[string]string{"alice": "secret"}}
}

func (r *recorder) log(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, args...))
}

func (r *recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func (r *recorder) Messages() []message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]message(nil), r.messages...)
}

func (r *recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *recorder) report(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) refusal(phase string) *Reply {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refuse[phase]
}

// testSession is one connection's policy, recording into rec.
type testSession struct {
	rec  *recorder
	c    *Conn
	msg  message
	body bytes.Buffer
}

func (r *recorder) newSession(c *Conn) Session {
	c.SetLocal(r.local)
	s := &testSession{rec: r, c: c}
	if r.lineHook != nil || r.refuse["dataline"] != nil {
		return &lineSession{s}
	}
	return s
}

func (s *testSession) Connect() *Reply {
	s.rec.log("connect")
	return s.rec.refusal("connect")
}

func (s *testSession) Helo(name string, extended bool) *Reply {
	s.rec.log("helo %s %v", name, extended)
	return s.rec.refusal("helo")
}

func (s *testSession) StartTLS() *Reply {
	s.rec.log("starttls")
	return s.rec.refusal("starttls")
}

func (s *testSession) Auth(mech, identity, user, password string) *Reply {
	s.rec.log("auth %s %q %q %q", mech, identity, user, password)
	if r := s.rec.refusal("auth"); r != nil {
		return r
	}
	if s.rec.users[user] != password || identity != "" && identity != user {
		return &Reply{Code: 535, Enhanced: EnhancedCode{5, 7, 8}, Text: "Authentication credentials invalid"}
	}
	return nil
}

func (s *testSession) Mail(from string, p MailParams) *Reply {
	s.rec.log("mail %s %+v", from, p)
	if r := s.rec.refusal("mail"); r != nil {
		return r
	}
	s.msg = message{from: from, mail: p}
	return nil
}

func (s *testSession) Rcpt(to string, p RcptParams) *Reply {
	s.rec.log("rcpt %s %+v", to, p)
	if r := s.rec.refusal("rcpt"); r != nil {
		return r
	}
	s.msg.rcpts = append(s.msg.rcpts, to)
	s.msg.rcptP = append(s.msg.rcptP, p)
	return nil
}

func (s *testSession) Data() (io.Writer, *Reply) {
	s.rec.log("data")
	if r := s.rec.refusal("data"); r != nil {
		return nil, r
	}
	s.body.Reset()
	if s.rec.writeErr != nil {
		return failingWriter{s.rec.writeErr}, nil
	}
	return &s.body, nil
}

type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

func (s *testSession) Commit() *Reply {
	s.rec.log("commit")
	if r := s.rec.refusal("commit"); r != nil {
		return r
	}
	s.msg.body = s.body.String()
	s.rec.mu.Lock()
	s.rec.messages = append(s.rec.messages, s.msg)
	s.rec.mu.Unlock()
	return nil
}

func (s *testSession) Abort() { s.rec.log("abort") }

func (s *testSession) Rset() *Reply {
	s.rec.log("rset")
	return s.rec.refusal("rset")
}

func (s *testSession) Noop() *Reply {
	s.rec.log("noop")
	return s.rec.refusal("noop")
}

func (s *testSession) Help() *Reply {
	s.rec.log("help")
	return s.rec.refusal("help")
}

func (s *testSession) Quit() *Reply {
	s.rec.log("quit")
	return s.rec.refusal("quit")
}

func (s *testSession) Close() { s.rec.log("close") }

// lineSession also sees each data line.
type lineSession struct{ *testSession }

func (s *lineSession) DataLine(line []byte) ([]byte, *Reply) {
	if r := s.rec.refusal("dataline"); r != nil {
		return nil, r
	}
	if s.rec.lineHook == nil {
		return line, nil
	}
	return s.rec.lineHook(line), nil
}

// newTestServer returns a server with the recorder as its policy.
func newTestServer(rec *recorder) *Server {
	return &Server{
		Hostname:       "mx.example.test",
		NewSession:     rec.newSession,
		Report:         rec.report,
		MaxRecipients:  3,
		CommandTimeout: 5 * time.Second,
		SessionTimeout: 20 * time.Second,
	}
}

// serveLoopback runs srv on a loopback listener until the test ends.
func serveLoopback(t testing.TB, srv *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
	})
	return l.Addr().String()
}

// client is a scripted SMTP client.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("send %q: %v", s, err)
	}
}

// reply reads one reply, all its lines.
func (c *client) reply() []string {
	c.t.Helper()
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply after %q: %v", lines, err)
		}
		if !strings.HasSuffix(line, "\r\n") {
			c.t.Fatalf("reply line %q does not end in CRLF", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		lines = append(lines, line)
		if len(line) < 4 || line[3] == ' ' {
			return lines
		}
	}
}

// expect reads a reply and checks that its last line starts with want.
func (c *client) expect(want string) []string {
	c.t.Helper()
	lines := c.reply()
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, want) {
		c.t.Fatalf("got %q, want %q", lines, want)
	}
	return lines
}

// closed checks that the server closed the connection.
func (c *client) closed() {
	c.t.Helper()
	if line, err := c.r.ReadString('\n'); err == nil {
		c.t.Fatalf("connection still open, got %q", line)
	}
}

// script plays a dialogue: "C: " lines are sent, "S: " lines are
// replies whose last line must start with the rest, "C< " lines are
// sent with a bare LF, and "closed" expects the end.
func (c *client) script(s string) {
	c.t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		line = strings.TrimLeft(line, "\t ")
		switch {
		case line == "C:":
			c.send("\r\n")
		case strings.HasPrefix(line, "C: "):
			c.send(line[3:] + "\r\n")
		case strings.HasPrefix(line, "C< "):
			c.send(line[3:] + "\n")
		case strings.HasPrefix(line, "S: "):
			c.expect(line[3:])
		case line == "closed":
			c.closed()
		case line == "":
		default:
			c.t.Fatalf("bad script line %q", line)
		}
	}
}

// checkGoroutines fails if goroutines started during the test are still
// running after it: sessions must end.
func checkGoroutines(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("goroutines left: %d > %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// servePipe serves one session over a pipe with ServeConn, the server
// end wrapped by wrap if set, and returns the client and a channel
// closed when ServeConn returns.
func servePipe(t testing.TB, srv *Server, wrap func(net.Conn) net.Conn) (*client, net.Conn, <-chan struct{}) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close() })
	if wrap != nil {
		b = wrap(b)
	}
	done := make(chan struct{})
	go func() {
		srv.ServeConn(b)
		close(done)
	}()
	a.SetDeadline(time.Now().Add(5 * time.Second))
	return &client{t: t, conn: a, r: bufio.NewReader(a)}, a, done
}
