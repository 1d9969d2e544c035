package server

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

func TestShutdownIdle(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.CommandTimeout = time.Minute
	c := dial(t, serveLoopback(t, srv))
	c.script("S: 220\nC: EHLO client.example\nS: 250")
	start := time.Now()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	c.script("S: 421 4.3.2\nclosed")
	if _, err := net.Dial("tcp", c.conn.RemoteAddr().String()); err == nil {
		t.Error("listener still open")
	}
}

// TestShutdownBusy: a session receiving a message finishes it, then
// ends at its next command.
func TestShutdownBusy(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	c := openData(t, srv)
	c.send("Subject: x\r\n\r\nhalf")
	done := make(chan error)
	go func() { done <- srv.Shutdown(context.Background()) }()
	time.Sleep(100 * time.Millisecond)
	c.send(" of it\r\n.\r\n")
	c.script("S: 250 2.0.0\nS: 421 4.3.2\nclosed")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m := rec.Messages(); len(m) != 1 {
		t.Errorf("%d messages", len(m))
	}
}

// blockingSession holds its Mail hook until released.
type blockingSession struct {
	testSession
	release chan struct{}
}

func (s *blockingSession) Mail(from string, p MailParams) *Reply {
	<-s.release
	return nil
}

func TestShutdownTimeoutThenClose(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	release := make(chan struct{})
	srv.NewSession = func(c *Conn) Session { return &blockingSession{testSession{rec: rec, c: c}, release} }
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error)
	go func() { served <- srv.Serve(l) }()
	c := dial(t, l.Addr().String())
	c.script("S: 220\nC: EHLO client.example\nS: 250")
	c.send("MAIL FROM:<a@example.org>\r\n")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != ErrServerClosed {
		t.Errorf("Serve: %v", err)
	}
	srv.Close()
	c.closed()
	close(release)
	if err := srv.Serve(l); err != ErrServerClosed {
		t.Errorf("Serve after Close: %v", err)
	}
	a, b := net.Pipe()
	defer a.Close()
	srv.ServeConn(b)
	if _, err := a.Read(make([]byte, 1)); err == nil {
		t.Error("ServeConn after Close served")
	}
}

// TestServeConn serves a local submission over a pipe, as the daemon
// serves sendmail: a message without a header is accepted.
func TestServeConn(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	rec.local = true
	srv := newTestServer(rec)
	c, a, done := servePipe(t, srv, nil)
	c.expect("220")
	go io.WriteString(a, "HELO localhost\r\nMAIL FROM:<user>\r\nRCPT TO:<root>\r\nDATA\r\n")
	c.script("S: 250\nS: 250\nS: 250\nS: 354")
	go io.WriteString(a, "no header at all\r\n.\r\nQUIT\r\n")
	c.script("S: 250 2.0.0\nS: 221\nclosed")
	<-done
	if m := rec.Messages(); len(m) != 1 || m[0].from != "user" || !slices.Equal(m[0].rcpts, []string{"root"}) {
		t.Errorf("messages: %+v", m)
	}
}

func TestServeListenerError(t *testing.T) {
	srv := newTestServer(newRecorder())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := srv.Serve(l); err == nil || err == ErrServerClosed {
		t.Errorf("Serve on a closed listener: %v", err)
	}
}
