package mta

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"smtpd/internal/envelope"
	"smtpd/proto"
)

// testServer is a go-smtp server that records what it is sent. It
// refuses recipients by their local part: perm (550 5.1.1), temp (451
// 4.2.1), bare (550 without an enhanced code).
type testServer struct {
	srv  *smtp.Server
	addr string

	mu sync.Mutex
	// sessions are the EHLO names, with " tls" when over TLS.
	sessions []string
	mails    []*testMail
	auths    []string
	// dataErr refuses every message after its final dot.
	dataErr *smtp.SMTPError
}

type testMail struct {
	from     string
	opts     smtp.MailOptions
	rcpts    []string
	rcptOpts []smtp.RcptOptions
	body     string
}

type testSession struct {
	s    *testServer
	mail *testMail
}

func (ts *testSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (ts *testSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		ts.s.mu.Lock()
		ts.s.auths = append(ts.s.auths, user+":"+pass)
		ts.s.mu.Unlock()
		if pass != "s3cret" {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "bad credentials"}
		}
		return nil
	}), nil
}

func (ts *testSession) Mail(from string, opts *smtp.MailOptions) error {
	ts.mail = &testMail{from: from}
	if opts != nil {
		ts.mail.opts = *opts
	}
	return nil
}

func (ts *testSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	switch local, _, _ := strings.Cut(to, "@"); local {
	case "perm":
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	case "temp":
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "try later"}
	case "bare":
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.NoEnhancedCode, Message: "go away"}
	}
	ts.mail.rcpts = append(ts.mail.rcpts, to)
	if opts == nil {
		opts = &smtp.RcptOptions{}
	}
	ts.mail.rcptOpts = append(ts.mail.rcptOpts, *opts)
	return nil
}

func (ts *testSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ts.mail.body = string(b)
	ts.s.mu.Lock()
	defer ts.s.mu.Unlock()
	if ts.s.dataErr != nil {
		return ts.s.dataErr
	}
	ts.s.mails = append(ts.s.mails, ts.mail)
	return nil
}

// LMTPData answers for each recipient: one whose local part is late
// is refused with 452 4.2.2.
func (ts *testSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	err := ts.Data(r)
	for _, rcpt := range ts.mail.rcpts {
		if strings.HasPrefix(rcpt, "late@") {
			status.SetStatus(rcpt, &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "mailbox full"})
		} else {
			status.SetStatus(rcpt, err)
		}
	}
	return nil
}

func (ts *testSession) Reset()        {}
func (ts *testSession) Logout() error { return nil }

// startServer starts a test server; with tlsOn, it offers STARTTLS.
func startServer(t *testing.T, configure func(*smtp.Server)) *testServer {
	t.Helper()
	s := &testServer{}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		name := c.Hostname()
		if _, ok := c.TLSConnectionState(); ok {
			name += " tls"
		}
		s.mu.Lock()
		s.sessions = append(s.sessions, name)
		s.mu.Unlock()
		return &testSession{s: s}, nil
	}))
	s.srv.Domain = "mx.test"
	s.srv.EnableDSN = true
	s.srv.ReadTimeout, s.srv.WriteTimeout = 10*time.Second, 10*time.Second
	if configure != nil {
		configure(s.srv)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = l.Addr().String()
	go s.srv.Serve(l)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// dial opens a client session to s, up to EHLO.
func (s *testServer) dial(t *testing.T, lmtp bool) *client {
	t.Helper()
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(conn, lmtp)
	t.Cleanup(func() { c.Close() })
	if greeted, err := c.hello("out.example.net"); !greeted || err != nil {
		t.Fatalf("hello: %v %v", greeted, err)
	}
	return c
}

// newTask makes a task of one message to rcpts, its body in a file.
func newTask(t *testing.T, sender, body string, rcpts ...string) *task {
	t.Helper()
	path := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	tk := &task{msgid: 1, body: f}
	for i, r := range rcpts {
		tk.envs = append(tk.envs, &envelope.Envelope{ID: uint64(1)<<32 | uint64(i+1), Sender: sender, Dest: r})
	}
	return tk
}

// result is one envelope's outcome as queue would record it.
type result struct {
	status proto.Status
	text   string
	err    error
}

func collect(results map[string]result) reportFunc {
	return func(e *envelope.Envelope, reply string, err error) {
		r := outcome(reply, err)
		results[e.Dest] = result{r.Status, r.Text, err}
	}
}

// TestSend: per-recipient outcomes, classified where they happen; the
// DSN parameters and the size reach the server; the body arrives as it
// was, with its leading dots and line ends intact after the
// dot-stuffing.
func TestSend(t *testing.T) {
	s := startServer(t, nil)
	c := s.dial(t, false)
	body := "Subject: dots\r\n\r\n.leading dot\r\n..two\r\nbare LF\nlast line without end"
	tk := newTask(t, "author@out.example.net", body, "ok@mx.test", "perm@mx.test", "temp@mx.test", "bare@mx.test", "ok2@mx.test")
	tk.envs[0].Ret, tk.envs[0].EnvID = "HDRS", "id+1=x"
	tk.envs[0].Notify, tk.envs[0].ORcpt = "SUCCESS,FAILURE", "rfc822;orig@mx.test"
	tk.envs[4].Notify = "NEVER,SUCCESS" // not valid: left out
	results := map[string]result{}
	if !send(c, tk, collect(results)) {
		t.Fatal("connection unusable after the task")
	}
	want := map[string]struct {
		status proto.Status
		prefix string
	}{
		"ok@mx.test":   {proto.StatusOK, "250 2.0.0 OK: queued"},
		"ok2@mx.test":  {proto.StatusOK, "250 2.0.0 OK: queued"},
		"perm@mx.test": {proto.StatusPermfail, "550 5.1.1 no such user"},
		"temp@mx.test": {proto.StatusTempfail, "451 4.2.1 try later"},
		"bare@mx.test": {proto.StatusPermfail, "550 5.0.0 go away"},
	}
	for rcpt, w := range want {
		got := results[rcpt]
		if got.status != w.status || !strings.HasPrefix(got.text, w.prefix) {
			t.Errorf("%s: %v %q, want %v %q", rcpt, got.status, got.text, w.status, w.prefix)
		}
		var de *deliveryError
		if w.status != proto.StatusOK && (!errors.As(got.err, &de) || de.Temporary() != (w.status == proto.StatusTempfail)) {
			t.Errorf("%s: error %#v not classified", rcpt, got.err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.mails) != 1 {
		t.Fatalf("%d messages at the server", len(s.mails))
	}
	m := s.mails[0]
	if m.from != "author@out.example.net" || strings.Join(m.rcpts, " ") != "ok@mx.test ok2@mx.test" {
		t.Errorf("envelope %q %q", m.from, m.rcpts)
	}
	if m.opts.Return != smtp.DSNReturnHeaders || m.opts.EnvelopeID != "id+1=x" || m.opts.Size != int64(len(body)) || m.opts.Body != smtp.Body8BitMIME {
		t.Errorf("MAIL options %+v", m.opts)
	}
	o := m.rcptOpts[0]
	if len(o.Notify) != 2 || o.Notify[0] != smtp.DSNNotifySuccess || o.Notify[1] != smtp.DSNNotifyFailure ||
		o.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || o.OriginalRecipient != "orig@mx.test" {
		t.Errorf("RCPT options %+v", o)
	}
	if len(m.rcptOpts[1].Notify) != 0 {
		t.Errorf("invalid NOTIFY sent: %+v", m.rcptOpts[1])
	}
	wantBody := "Subject: dots\r\n\r\n.leading dot\r\n..two\r\nbare LF\r\nlast line without end\r\n"
	if m.body != wantBody {
		t.Errorf("body %q, want %q", m.body, wantBody)
	}
}

// TestSendRefusals: a message refused after its final dot fails for
// every recipient; an internationalised address to a server without
// SMTPUTF8 is returned without a MAIL; the session goes on after both.
func TestSendRefusals(t *testing.T) {
	s := startServer(t, nil)
	s.dataErr = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content refused"}
	c := s.dial(t, false)
	results := map[string]result{}
	if !send(c, newTask(t, "a@out.example.net", "hi\r\n", "x@mx.test", "y@mx.test"), collect(results)) {
		t.Fatal("connection unusable after a refused message")
	}
	for _, r := range []string{"x@mx.test", "y@mx.test"} {
		if got := results[r]; got.status != proto.StatusPermfail || !strings.HasPrefix(got.text, "554 5.6.0 content refused") {
			t.Errorf("%s: %v %q", r, got.status, got.text)
		}
	}
	if !send(c, newTask(t, "a@out.example.net", "hi\r\n", "jörg@mx.test"), collect(results)) {
		t.Fatal("connection unusable after the SMTPUTF8 check")
	}
	if got := results["jörg@mx.test"]; got.status != proto.StatusPermfail || !strings.HasPrefix(got.text, "553 5.6.7 ") {
		t.Errorf("SMTPUTF8: %v %q", got.status, got.text)
	}
}

// TestSendConnectionLost: a server that goes away mid-transaction
// leaves every recipient without a result to retry, and the session
// unusable.
func TestSendConnectionLost(t *testing.T) {
	s := startServer(t, nil)
	c := s.dial(t, false)
	c.w.Conn.Close()
	results := map[string]result{}
	if send(c, newTask(t, "a@out.example.net", "hi\r\n", "x@mx.test"), collect(results)) {
		t.Error("connection still usable")
	}
	if got := results["x@mx.test"]; got.status != proto.StatusTempfail || !strings.HasPrefix(got.text, "451 4.4.2 connection lost at MAIL") {
		t.Errorf("%v %q", got.status, got.text)
	}
}

// TestSendLMTP: over LMTP each recipient has its own reply to the final
// dot (RFC 2033 §4.2).
func TestSendLMTP(t *testing.T) {
	s := startServer(t, func(srv *smtp.Server) { srv.LMTP = true })
	c := s.dial(t, true)
	results := map[string]result{}
	if !send(c, newTask(t, "a@out.example.net", "hi\r\n", "x@mx.test", "late@mx.test"), collect(results)) {
		t.Fatal("connection unusable")
	}
	if got := results["x@mx.test"]; got.status != proto.StatusOK {
		t.Errorf("x@: %v %q", got.status, got.text)
	}
	if got := results["late@mx.test"]; got.status != proto.StatusTempfail || !strings.HasPrefix(got.text, "452 4.2.2 ") {
		t.Errorf("late@: %v %q", got.status, got.text)
	}
}

// TestStartTLS: our STARTTLS step introduces us by our name before and
// after TLS, then the session runs over TLS with AUTH.
func TestStartTLS(t *testing.T) {
	cert := selfSigned(t)
	s := startServer(t, func(srv *smtp.Server) { srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}} })
	c := s.dial(t, false)
	if ok, _ := c.Extension("STARTTLS"); !ok {
		t.Fatal("no STARTTLS offered")
	}
	if err := c.startTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("out.example.net"); err != nil {
		t.Fatal(err)
	}
	if c.tlsState == nil {
		t.Error("no TLS after STARTTLS")
	}
	if !c.SupportsAuth(sasl.Plain) {
		t.Fatal("no AUTH PLAIN over TLS")
	}
	if err := c.Auth(sasl.NewPlainClient("", "alice", "s3cret")); err != nil {
		t.Fatal(err)
	}
	results := map[string]result{}
	send(c, newTask(t, "a@out.example.net", "hi\r\n", "x@mx.test"), collect(results))
	if got := results["x@mx.test"]; got.status != proto.StatusOK {
		t.Errorf("over TLS: %v %q", got.status, got.text)
	}
	c.quit()
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.Join(s.sessions, ",") != "out.example.net,out.example.net tls" {
		t.Errorf("EHLO names at the server: %q", s.sessions)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mx.test"}, DNSNames: []string{"mx.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
