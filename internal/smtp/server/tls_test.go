package server

import (
	"bufio"
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"smtpd/internal/testcert"
)

func testTLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	certFile, keyFile := testcert.Write(t, t.TempDir())
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
}

// startTLS upgrades the client's connection after a 220 to STARTTLS.
func (c *client) startTLS() {
	c.t.Helper()
	if n := c.r.Buffered(); n > 0 {
		b, _ := c.r.Peek(n)
		c.t.Fatalf("clear text after 220: %q", b)
	}
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.example.test"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("handshake: %v", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
}

func TestStartTLS(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.TLSConfig = testTLSConfig(t)
	srv.AuthMechanisms = []string{"PLAIN", "LOGIN"}
	srv.EnableRequireTLS = true
	c := dial(t, serveLoopback(t, srv))
	c.script("S: 220\nC: STARTTLS\nS: 503 5.5.1")
	c.send("EHLO client.example\r\n")
	ehlo := c.reply()
	if !slices.Contains(ehlo, "250-STARTTLS") || strings.Contains(strings.Join(ehlo, "\n"), "AUTH") || slices.Contains(ehlo, "250-REQUIRETLS") {
		t.Errorf("EHLO before TLS: %q", ehlo)
	}
	c.script(`
		C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
		S: 538 5.7.11
		C: MAIL FROM:<a@example.org> REQUIRETLS
		S: 555 5.5.4
		C: MAIL FROM:<a@example.org>
		S: 250
		C: STARTTLS
		S: 503 5.5.1
		C: RSET
		S: 250`)
	// commands pipelined after STARTTLS in clear text are never run
	c.send("STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.org>\r\n")
	c.expect("220 2.0.0")
	c.startTLS()
	c.script("C: RCPT TO:<b@example.org>\nS: 503 5.5.1\nC: MAIL FROM:<a@example.org>\nS: 503 5.5.1")
	c.send("EHLO client.example\r\n")
	ehlo = c.reply()
	if slices.Contains(ehlo, "250-STARTTLS") || !slices.Contains(ehlo, "250-AUTH PLAIN LOGIN") || !slices.Contains(ehlo, "250-REQUIRETLS") {
		t.Errorf("EHLO under TLS: %q", ehlo)
	}
	c.script(`
		C: STARTTLS
		S: 503 5.5.1
		C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
		S: 235 2.7.0
		C: MAIL FROM:<a@example.org> REQUIRETLS
		S: 250
		C: RCPT TO:<b@example.org>
		S: 250
		C: DATA
		S: 354
		C: Subject: secret
		C:
		C: .
		S: 250
		C: QUIT
		S: 221`)
	for _, call := range rec.Calls() {
		if strings.Contains(call, "evil") || strings.Contains(call, "victim") {
			t.Errorf("pipelined clear text ran: %s", call)
		}
	}
	if m := rec.Messages(); len(m) != 1 || !m[0].mail.RequireTLS {
		t.Errorf("messages: %+v", m)
	}
	var tlsEvents int
	for _, e := range rec.Events() {
		if e.Kind == EventLinkTLS {
			tlsEvents++
			if _, ok := e.Conn.TLS(); !ok {
				t.Error("link-tls without TLS state")
			}
		}
	}
	if tlsEvents != 1 {
		t.Errorf("%d link-tls events", tlsEvents)
	}
}

func TestStartTLSInTransaction(t *testing.T) {
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.TLSConfig = testTLSConfig(t)
	c := dial(t, serveLoopback(t, srv))
	c.script(`
		S: 220
		C: EHLO client.example
		S: 250
		C: MAIL FROM:<a@example.org>
		S: 250
		C: STARTTLS
		S: 503 5.5.1
		C: QUIT
		S: 221`)
}

func TestStartTLSHandshakeFailure(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.TLSConfig = testTLSConfig(t)
	c := dial(t, serveLoopback(t, srv))
	c.script("S: 220\nC: EHLO client.example\nS: 250\nC: STARTTLS\nS: 220\nC: this is no client hello\nclosed")
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(rec.Calls(), "close") {
		if time.Now().After(deadline) {
			t.Fatalf("session not closed: %q", rec.Calls())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestImplicitTLS(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.TLSConfig = testTLSConfig(t)
	srv.ImplicitTLS = true
	srv.AuthMechanisms = []string{"PLAIN"}
	addr := serveLoopback(t, srv)
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect("220 mx.example.test")
	c.send("EHLO client.example\r\n")
	if ehlo := c.reply(); slices.Contains(ehlo, "250-STARTTLS") || !slices.Contains(ehlo, "250-AUTH PLAIN") {
		t.Errorf("EHLO: %q", ehlo)
	}
	c.script("C: STARTTLS\nS: 503 5.5.1\nC: AUTH PLAIN " + b64("\x00alice\x00secret") + "\nS: 235\nC: QUIT\nS: 221\nclosed")
	waitCalls(t, rec, "close")
	var kinds []string
	for _, e := range rec.Events() {
		if strings.HasPrefix(e.Kind, "link-") {
			kinds = append(kinds, e.Kind)
		}
	}
	if want := []string{EventLinkConnect, EventLinkTLS, EventLinkGreeting, EventLinkIdentify, EventLinkAuth, EventLinkDisconnect}; !slices.Equal(kinds, want) {
		t.Errorf("link events %q, want %q", kinds, want)
	}

	// a client that does not speak TLS gets nothing
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.SetDeadline(time.Now().Add(10 * time.Second))
	plain.Write([]byte("EHLO client.example\r\n"))
	if b, err := bufio.NewReader(plain).ReadString('\n'); err == nil {
		t.Errorf("clear text client got %q", b)
	}
}
