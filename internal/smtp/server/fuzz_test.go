package server

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fuzzSession accepts everything and keeps nothing.
type fuzzSession struct{}

func (fuzzSession) Connect() *Reply                { return nil }
func (fuzzSession) Helo(string, bool) *Reply       { return nil }
func (fuzzSession) StartTLS() *Reply               { return nil }
func (fuzzSession) Mail(string, MailParams) *Reply { return nil }
func (fuzzSession) Rcpt(string, RcptParams) *Reply { return nil }
func (fuzzSession) Data() (io.Writer, *Reply)      { return io.Discard, nil }
func (fuzzSession) Commit() *Reply                 { return nil }
func (fuzzSession) Abort()                         {}
func (fuzzSession) Rset() *Reply                   { return nil }
func (fuzzSession) Noop() *Reply                   { return nil }
func (fuzzSession) Help() *Reply                   { return nil }
func (fuzzSession) Quit() *Reply                   { return nil }
func (fuzzSession) Close()                         {}

func (fuzzSession) Auth(mech, identity, user, password string) *Reply {
	if user == "alice" && password == "secret" {
		return nil
	}
	return &Reply{Code: 535, Enhanced: EnhancedCode{5, 7, 8}, Text: "Authentication credentials invalid"}
}

// fuzzLineSession also passes every data line through.
type fuzzLineSession struct{ fuzzSession }

func (fuzzLineSession) DataLine(line []byte) ([]byte, *Reply) { return line, nil }

var (
	// replyLine is what every line the server writes looks like
	replyLine = regexp.MustCompile(`^([2-5][0-9][0-9])([ -])(.*)$`)
	// enhancedCode starts the text of a reply line that has one
	enhancedCode = regexp.MustCompile(`^([245])\.[0-9]{1,3}\.[0-9]{1,3} `)
)

// checkTranscript checks what a server wrote in a session: a greeting
// first, then only well-formed replies, each with an enhanced code of
// its class except where RFC 2034 has none; and no 4xx but those that
// the RFCs make temporary whatever the input (421 closing, 452 too many
// recipients).
func checkTranscript(t *testing.T, out []byte) {
	t.Helper()
	if !bytes.HasPrefix(out, []byte("220 mx.example.test ESMTP smtpd\r\n")) {
		t.Fatalf("no greeting: %.200q", out)
	}
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		t.Fatalf("output ends in a partial line: %.200q", out[max(0, len(out)-200):])
	}
	var code string
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\r\n"), "\r\n") {
		m := replyLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("malformed reply line %q", line)
		}
		if code != "" && m[1] != code {
			t.Fatalf("multi-line reply changes code at %q", line)
		}
		code = m[1]
		if m[2] == " " {
			code = ""
		}
		bare := m[1] == "220" || m[1] == "354" || m[1] == "334" || m[1] == "250" && !enhancedCode.MatchString(m[3])
		if !bare {
			e := enhancedCode.FindStringSubmatch(m[3])
			if e == nil || e[1] != m[1][:1] {
				t.Fatalf("reply without a matching enhanced code: %q", line)
			}
		}
		if m[1][0] == '4' && m[1] != "421" && m[1] != "452" {
			t.Fatalf("temporary failure for the client's input: %q", line)
		}
		if len(line)+2 > maxReplyLine {
			t.Fatalf("reply line too long: %d", len(line))
		}
	}
}

// FuzzSession plays a byte stream as a client, then ends any message
// and quits: the server must greet, answer only with well-formed
// replies, end the session, and leave no goroutine behind.
func FuzzSession(f *testing.F) {
	for _, seed := range []string{
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n",
		"HELO a\r\nRCPT TO:<x@y>\r\nDATA\r\n",
		"EHLO a\r\nMAIL FROM:<a@b> SIZE=99999999999999999999\r\n",
		"EHLO a\r\nMAIL FROM:<a@b> SMTPUTF8 RET=HDRS ENVID=x+2B\r\nRCPT TO:<δ@d> NOTIFY=NEVER ORCPT=rfc822;c+40d\r\nDATA\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\n.\nMAIL FROM:<e@f>\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 5\r\nhelloBDAT 3 LAST\r\nabc",
		"EHLO a\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nAUTH LOGIN\r\nYWxpY2U=\r\n*\r\n",
		"EHLO a\r\nSTARTTLS\r\n\x16\x03\x01\x00\x05hello",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"\x00\xff\r\n\r\nRSET x\r\nNOOP x\r\nVRFY y\r\nHELP\r\n" + strings.Repeat("A", 600) + "\r\n",
		"EHLO a\r\nMAIL FROM:<@x,@y:a@b> BODY=8BITMIME\r\nRCPT TO:<Postmaster>\r\nRCPT TO:<p>\r\nRCPT TO:<q>\r\nRCPT TO:<r>\r\nRCPT TO:<s>\r\n",
	} {
		f.Add([]byte(seed))
	}
	tlsConfig := testTLSConfig(f)
	newServer := func(lines bool) *Server {
		return &Server{
			Hostname:          "mx.example.test",
			TLSConfig:         tlsConfig,
			AuthMechanisms:    []string{"PLAIN", "LOGIN"},
			AllowInsecureAuth: true,
			EnableBinaryMIME:  true,
			MaxMessageBytes:   4096,
			MaxRecipients:     3,
			CommandTimeout:    200 * time.Millisecond,
			SessionTimeout:    time.Second,
			NewSession: func(*Conn) Session {
				if lines {
					return fuzzLineSession{}
				}
				return fuzzSession{}
			},
		}
	}
	servers := [2]*Server{newServer(false), newServer(true)}
	f.Fuzz(func(t *testing.T, input []byte) {
		srv := servers[len(input)%2]
		goroutines := runtime.NumGoroutine()
		client, server := net.Pipe()
		defer client.Close()
		served := make(chan struct{})
		go func() {
			srv.ServeConn(server)
			close(served)
		}()
		output := make(chan []byte)
		go func() {
			out, _ := io.ReadAll(bufio.NewReader(client))
			output <- out
		}()
		written := make(chan struct{})
		go func() {
			client.Write(input)
			client.Write([]byte("\r\n.\r\nQUIT\r\n"))
			close(written)
		}()
		var out []byte
		select {
		case out = <-output:
		case <-time.After(10 * time.Second):
			t.Fatalf("session did not end for %q", input)
		}
		select {
		case <-served:
		case <-time.After(5 * time.Second):
			t.Fatalf("ServeConn did not return for %q", input)
		}
		client.Close()
		<-written
		checkTranscript(t, out)
		for deadline := time.Now().Add(time.Second); runtime.NumGoroutine() > goroutines; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines left for %q", runtime.NumGoroutine()-goroutines, input)
			}
		}
	})
}
