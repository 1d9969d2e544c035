package server

import (
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestCommands plays one short dialogue per behaviour and checks the
// exact reply codes, and that the session is still in sync after each.
func TestCommands(t *testing.T) {
	checkGoroutines(t)
	long := strings.Repeat("a", 65)
	line512 := "NOOP " + strings.Repeat("x", 512-7) // 512 with CRLF
	line513 := "NOOP " + strings.Repeat("x", 513-7)
	for _, tc := range []struct {
		name   string
		srv    func(*Server)
		script string
	}{
		{name: "helo", script: `
			C: HELO client.example
			S: 250 mx.example.test Hello client.example [127.0.0.1]
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0`},
		{name: "helo without name", script: `
			C: HELO
			S: 501 5.5.4
			C: EHLO
			S: 501 5.5.4
			C: EHLO a.example
			S: 250 HELP`},
		{name: "helo invalid", script: `
			C: EHLO two words
			S: 501 5.5.4
			C: EHLO trailing.dot.
			S: 501 5.5.4
			C: EHLO [192.0.2.1]
			S: 250 HELP`},
		{name: "second helo", script: `
			C: EHLO a.example
			S: 250 HELP
			C: EHLO a.example
			S: 250 HELP
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: EHLO a.example
			S: 503 5.5.1
			C: HELO a.example
			S: 503 5.5.1
			C: RCPT TO:<b@example.org>
			S: 250 2.1.5`},
		{name: "ehlo extensions", script: `
			C: EHLO a.example
			S: 250 HELP`},
		{name: "mail before helo", script: `
			C: MAIL FROM:<a@example.org>
			S: 503 5.5.1
			C: RCPT TO:<b@example.org>
			S: 503 5.5.1`},
		{name: "mail syntax", script: `
			C: EHLO a.example
			S: 250 HELP
			C: MAIL <a@example.org>
			S: 501 5.5.4
			C: MAIL FROM:a@example.org
			S: 553 5.1.0
			C: MAIL FROM:<a@example.org> (comment)
			S: 501 5.5.4
			C: MAIL FROM:<(comment)a@example.org>
			S: 553 5.1.0
			C: MAIL FROM:<"a b"@example.org>
			S: 553 5.1.0
			C: MAIL FROM:<` + long + `@example.org>
			S: 553 5.1.0
			C: MAIL FROM: <a@example.org>
			S: 250 2.0.0`},
		{name: "mail parameters", script: `
			C: EHLO a.example
			S: 250 HELP
			C: MAIL FROM:<a@example.org> FOO=1
			S: 555 5.5.4
			C: MAIL FROM:<a@example.org> SIZE=1k
			S: 501 5.5.4
			C: MAIL FROM:<a@example.org> SIZE=99999999999999999999
			S: 552 5.3.4
			C: MAIL FROM:<a@example.org> SIZE=36700161
			S: 552 5.3.4
			C: MAIL FROM:<a@example.org> SMTPUTF8=yes
			S: 501 5.5.4
			C: MAIL FROM:<a@example.org> BODY=BINARYMIME
			S: 555 5.5.4
			C: MAIL FROM:<a@example.org> REQUIRETLS
			S: 555 5.5.4
			C: MAIL FROM:<a@example.org> RET=SOME
			S: 501 5.5.4
			C: MAIL FROM:<a@example.org> SIZE=1 SIZE=1
			S: 501 5.5.4
			C: MAIL FROM:<a@example.org> SIZE=36700160 BODY=8BITMIME RET=HDRS ENVID=x+2By AUTH=<>
			S: 250 2.0.0`},
		{name: "null sender", script: `
			C: EHLO a.example
			S: 250 HELP
			C: MAIL FROM:<>
			S: 250 2.0.0
			C: RCPT TO:<>
			S: 501 5.1.3`},
		{name: "nested mail", script: `
			C: EHLO a.example
			S: 250 HELP
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: MAIL FROM:<a@example.org>
			S: 503 5.5.1
			C: RCPT TO:<b@example.org>
			S: 250 2.1.5`},
		{name: "utf8 addresses", script: `
			C: EHLO a.example
			S: 250 HELP
			C: MAIL FROM:<dé@example.org>
			S: 550 5.6.7
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: RCPT TO:<dé@example.org>
			S: 553 5.6.7
			C: RSET
			S: 250 2.0.0
			C: MAIL FROM:<dé@exämple.org> SMTPUTF8
			S: 250 2.0.0
			C: RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>
			S: 250 2.1.5`},
		{name: "rcpt before mail", script: `
			C: EHLO a.example
			S: 250 HELP
			C: RCPT TO:<b@example.org>
			S: 503 5.5.1`},
		{name: "rcpt syntax", script: `
			C: EHLO a.example
			S: 250 HELP
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: RCPT <b@example.org>
			S: 501 5.5.4
			C: RCPT TO:b@example.org
			S: 501 5.1.3
			C: RCPT TO:<b@example.org
			S: 501 5.1.3
			C: RCPT TO:<"b,c"@example.org>
			S: 501 5.1.3
			C: RCPT TO:<b@` + strings.Repeat("x", 256) + `>
			S: 501 5.1.3
			C: RCPT TO:<b@example.org> X-FOO=1
			S: 555 5.5.4
			C: RCPT TO:<b@example.org> NOTIFY=NEVER,DELAY
			S: 501 5.5.4
			C: RCPT TO:<b@example.org> ORCPT=rfc822
			S: 501 5.5.4
			C: RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+40example.org
			S: 250 2.1.5`},
		{name: "postmaster and source routes", script: `
			C: EHLO a.example
			S: 250 HELP
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: RCPT TO:<Postmaster>
			S: 250 2.1.5
			C: RCPT TO:<pOsTmAsTeR>
			S: 250 2.1.5
			C: RCPT TO:<@a.example,@b.example:c@d.example>
			S: 250 2.1.5`},
		{name: "quoted local parts", script: `
			C: EHLO a.example
			S: 250 HELP
			C: MAIL FROM:<"a.b"@example.org>
			S: 250 2.0.0
			C: RCPT TO:<"c@elsewhere.example"@example.org>
			S: 250 2.1.5
			C: RCPT TO:<"c d"@example.org>
			S: 501 5.1.3
			C: RCPT TO:<"c;d"@example.org>
			S: 501 5.1.3
			C: RCPT TO:<"c\@d"@example.org>
			S: 501 5.1.3`},
		{name: "too many recipients", script: `
			C: EHLO a.example
			S: 250 HELP
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: RCPT TO:<b1@example.org>
			S: 250 2.1.5
			C: RCPT TO:<b2@example.org>
			S: 250 2.1.5
			C: RCPT TO:<b3@example.org>
			S: 250 2.1.5
			C: RCPT TO:<b4@example.org>
			S: 452 4.5.3
			C: DATA
			S: 354
			C: Subject: x
			C:
			C: .
			S: 250 2.0.0`},
		{name: "data sequence", script: `
			C: EHLO a.example
			S: 250 HELP
			C: DATA
			S: 503 5.5.1
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: DATA
			S: 503 5.5.1
			C: RCPT TO:<b@example.org>
			S: 250 2.1.5
			C: DATA now
			S: 501 5.5.4
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
			C: DATA
			S: 503 5.5.1`},
		{name: "rset", script: `
			C: RSET
			S: 250 2.0.0
			C: RSET now
			S: 501 5.5.4
			C: EHLO a.example
			S: 250 HELP
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: RSET
			S: 250 2.0.0
			C: RCPT TO:<b@example.org>
			S: 503 5.5.1`},
		{name: "noop help quit", script: `
			C: NOOP
			S: 250 2.0.0
			C: NOOP with an argument
			S: 250 2.0.0
			C: HELP
			S: 214 2.0.0
			C: HELP MAIL
			S: 214 2.0.0
			C: QUIT now
			S: 501 5.5.4
			C: QUIT
			S: 221 2.0.0
			closed`},
		{name: "vrfy expn", script: `
			C: VRFY alice
			S: 252 2.5.0
			C: EXPN staff
			S: 252 2.5.0
			C: VRFY
			S: 501 5.5.4`},
		{name: "unknown commands", script: `
			C: FOO
			S: 500 5.5.1
			C:
			S: 500 5.5.1
			C: TURN
			S: 502 5.5.1
			C: ETRN example.org
			S: 502 5.5.1
			C: NOOP
			S: 250 2.0.0`},
		{name: "control characters", script: `
			C: NOOP a` + "\x00" + `b
			S: 500 5.5.2
			C: EHLO a` + "\r" + `b
			S: 500 5.5.2
			C: NOOP
			S: 250 2.0.0`},
		{name: "bare LF commands", script: `
			C< NOOP
			S: 250 2.0.0
			C< EHLO a.example
			S: 250 HELP`},
		{name: "long lines", script: `
			C: ` + line512 + `
			S: 250 2.0.0
			C: ` + line513 + `
			S: 500 5.5.2
			C: NOOP ` + strings.Repeat("y", 100000) + `
			S: 500 5.5.2
			C: NOOP
			S: 250 2.0.0`},
		{name: "starttls unavailable", script: `
			C: EHLO a.example
			S: 250 HELP
			C: STARTTLS
			S: 502 5.5.1
			C: STARTTLS now
			S: 501 5.5.4`},
		{name: "auth unavailable", script: `
			C: EHLO a.example
			S: 250 HELP
			C: AUTH PLAIN
			S: 502 5.5.1`},
		{name: "auth needs tls", srv: func(s *Server) { s.AuthMechanisms = []string{"PLAIN"} }, script: `
			C: EHLO a.example
			S: 250 HELP
			C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
			S: 538 5.7.11
			C: AUTH CRAM-MD5
			S: 504 5.5.4`},
		{name: "auth sequence", srv: func(s *Server) { s.AuthMechanisms = []string{"PLAIN", "LOGIN"}; s.AllowInsecureAuth = true }, script: `
			C: AUTH PLAIN
			S: 503 5.5.1
			C: EHLO a.example
			S: 250 HELP
			C: AUTH
			S: 501 5.5.4
			C: AUTH GSSAPI
			S: 504 5.5.4
			C: MAIL FROM:<a@example.org>
			S: 250 2.0.0
			C: AUTH PLAIN
			S: 503 5.5.1
			C: RSET
			S: 250 2.0.0
			C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
			S: 235 2.7.0
			C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
			S: 503 5.5.1
			C: MAIL FROM:<a@example.org> AUTH=alice+40example.org
			S: 250 2.0.0`},
		{name: "auth plain errors", srv: func(s *Server) { s.AuthMechanisms = []string{"plain"}; s.AllowInsecureAuth = true }, script: `
			C: EHLO a.example
			S: 250 HELP
			C: AUTH PLAIN not-base64!
			S: 501 5.5.2
			C: AUTH PLAIN ` + b64("alice\x00secret") + `
			S: 501 5.5.2
			C: AUTH PLAIN ` + b64("\x00alice\x00") + `
			S: 501 5.5.2
			C: AUTH PLAIN ` + b64("\x00ali\nce\x00secret") + `
			S: 501 5.5.2
			C: AUTH PLAIN =
			S: 501 5.5.2
			C: AUTH PLAIN
			S: 334
			C: *
			S: 501 5.0.0
			C: AUTH PLAIN
			S: 334
			C: ` + strings.Repeat("QUFB", 4000) + `
			S: 500 5.5.6
			C: AUTH PLAIN ` + b64("\x00alice\x00wrong") + `
			S: 535 5.7.8
			C: AUTH PLAIN
			S: 334
			C: ` + b64("alice\x00alice\x00secret") + `
			S: 235 2.7.0`},
		{name: "auth login", srv: func(s *Server) { s.AuthMechanisms = []string{"LOGIN"}; s.AllowInsecureAuth = true }, script: `
			C: EHLO a.example
			S: 250 HELP
			C: AUTH LOGIN
			S: 334 VXNlcm5hbWU6
			C: ` + b64("alice") + `
			S: 334 UGFzc3dvcmQ6
			C: *
			S: 501 5.0.0
			C: AUTH LOGIN ` + b64("alice") + `
			S: 334 UGFzc3dvcmQ6
			C: %%%
			S: 501 5.5.2
			C: AUTH LOGIN
			S: 334 VXNlcm5hbWU6
			C: =
			S: 334 UGFzc3dvcmQ6
			C: ` + b64("secret") + `
			S: 501 5.5.2
			C: AUTH LOGIN ` + b64("alice") + `
			S: 334 UGFzc3dvcmQ6
			C: ` + b64("secret") + `
			S: 235 2.7.0`},
		{name: "http", script: `
			C: GET / HTTP/1.1
			S: 500 5.5.1
			closed`},
		{name: "http post", script: `
			C: POST /form HTTP/1.1
			S: 500 5.5.1
			closed`},
		{name: "http connect", script: `
			C: EHLO a.example
			S: 250 HELP
			C: CONNECT mx.example.test:25 HTTP/1.1
			S: 500 5.5.1
			closed`},
		{name: "too many errors", srv: func(s *Server) { s.MaxErrors = 3 }, script: `
			C: FOO
			S: 500 5.5.1
			C: BAR
			S: 500 5.5.1
			C: MAIL FROM:<a@b>
			S: 503 5.5.1
			C: BAZ
			S: 421 4.7.0
			closed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			srv := newTestServer(rec)
			if tc.srv != nil {
				tc.srv(srv)
			}
			c := dial(t, serveLoopback(t, srv))
			c.expect("220 mx.example.test ESMTP smtpd")
			c.script(tc.script)
			if !strings.HasSuffix(strings.TrimSpace(tc.script), "closed") {
				c.script("C: QUIT\nS: 221 2.0.0\nclosed")
			}
		})
	}
}

func TestEHLOReply(t *testing.T) {
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.MaxMessageBytes = 1000
	srv.AuthMechanisms = []string{"PLAIN", "LOGIN", "CRAM-MD5"}
	srv.AllowInsecureAuth = true
	srv.EnableBinaryMIME = true
	c := dial(t, serveLoopback(t, srv))
	c.expect("220 ")
	c.send("EHLO client.example\r\n")
	got := c.reply()
	want := []string{
		"250-mx.example.test Hello client.example [127.0.0.1], pleased to meet you",
		"250-PIPELINING",
		"250-8BITMIME",
		"250-ENHANCEDSTATUSCODES",
		"250-CHUNKING",
		"250-BINARYMIME",
		"250-SMTPUTF8",
		"250-DSN",
		"250-SIZE 1000",
		"250-AUTH PLAIN LOGIN",
		"250 HELP",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("EHLO reply:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	c.script(`
		C: AUTH PLAIN ` + b64("\x00alice\x00secret") + `
		S: 235 2.7.0
		C: QUIT
		S: 221`)
}

// TestSessionCalls checks what the Session is told, with what.
func TestSessionCalls(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.AuthMechanisms = []string{"PLAIN"}
	srv.AllowInsecureAuth = true
	c := dial(t, serveLoopback(t, srv))
	c.script(`
		S: 220
		C: EHLO client.example
		S: 250 HELP
		C: AUTH PLAIN ` + b64("alice\x00alice\x00secret") + `
		S: 235
		C: MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=id+2B1 AUTH=alice+40example.org SMTPUTF8
		S: 250
		C: RCPT TO:<B@Example.org> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40example.org
		S: 250
		C: RCPT TO:<"c"@example.org>
		S: 250
		C: DATA
		S: 354
		C: Subject: hello
		C:
		C: ..dot
		C: .
		S: 250 2.0.0 Message accepted for delivery
		C: MAIL FROM:<>
		S: 250
		C: RSET
		S: 250
		C: NOOP
		S: 250
		C: HELP
		S: 214
		C: QUIT
		S: 221
		closed`)
	c.conn.Close()
	srv.Shutdown(t.Context())
	want := []string{
		"connect",
		"helo client.example true",
		`auth PLAIN "alice" "alice" "secret"`,
		"mail a@example.org {Size:100 Body:8BITMIME SMTPUTF8:true RequireTLS:false Ret:HDRS EnvID:id+1 Auth:alice@example.org}",
		"rcpt B@Example.org {Notify:[SUCCESS DELAY] ORcptType:rfc822 ORcpt:b@example.org}",
		"rcpt c@example.org {Notify:[] ORcptType: ORcpt:}",
		"data",
		"commit",
		"mail  {Size:0 Body: SMTPUTF8:false RequireTLS:false Ret: EnvID: Auth:}",
		"rset",
		"abort",
		"noop",
		"help",
		"quit",
		"close",
	}
	if got := rec.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	msgs := rec.Messages()
	if len(msgs) != 1 || msgs[0].body != "Subject: hello\r\n\r\n.dot\r\n" {
		t.Errorf("messages: %+v", msgs)
	}
}

// TestRefusalAtEachPhase gives a policy that refuses at one phase at a
// time: the refusal must show at exactly that command, after normal
// replies to all before it, and the session must stay in sync.
func TestRefusalAtEachPhase(t *testing.T) {
	checkGoroutines(t)
	type step struct {
		phase, send, want string
	}
	steps := []step{
		{"connect", "", "220 mx.example.test"},
		{"helo", "EHLO client.example\r\n", "250 HELP"},
		{"starttls", "STARTTLS\r\n", "220 2.0.0"},
		{"", "EHLO client.example\r\n", "250 HELP"},
		{"auth", "AUTH PLAIN " + b64("\x00alice\x00secret") + "\r\n", "235 2.7.0"},
		{"mail", "MAIL FROM:<a@example.org>\r\n", "250 2.0.0"},
		{"rcpt", "RCPT TO:<b@example.org>\r\n", "250 2.1.5"},
		{"data", "DATA\r\n", "354 "},
		{"dataline", "Subject: x\r\n\r\nbody\r\n.\r\n", "250 2.0.0"},
		{"commit", "", ""},
		{"rset", "RSET\r\n", "250 2.0.0"},
		{"noop", "NOOP\r\n", "250 2.0.0"},
		{"help", "HELP\r\n", "214 2.0.0"},
		{"quit", "QUIT\r\n", "221 2.0.0"},
	}
	for _, phase := range []string{"connect", "helo", "starttls", "auth", "mail", "rcpt", "data", "dataline", "commit", "rset", "noop", "help", "quit"} {
		t.Run(phase, func(t *testing.T) {
			rec := newRecorder()
			refusal := &Reply{Code: 550, Enhanced: EnhancedCode{5, 7, 1}, Text: "refused at " + phase}
			wantRefusal := "550 5.7.1 refused at " + phase
			if phase == "connect" {
				wantRefusal = "554 5.7.1 refused at " + phase
			}
			rec.refuse[phase] = refusal
			srv := newTestServer(rec)
			srv.TLSConfig = testTLSConfig(t)
			srv.AuthMechanisms = []string{"PLAIN"}
			c := dial(t, serveLoopback(t, srv))
			for i, s := range steps {
				if s.phase == "commit" {
					// the end of data answers for both dataline and commit
					continue
				}
				c.send(s.send)
				refused := s.phase == phase || phase == "commit" && s.phase == "dataline"
				if refused {
					c.expect(wantRefusal)
					break
				}
				c.expect(s.want)
				if s.phase == "starttls" {
					c.startTLS()
				}
				if i == len(steps)-1 {
					t.Fatalf("no refusal at %s", phase)
				}
			}
			// still in sync
			switch phase {
			case "connect":
				c.script("C: EHLO client.example\nS: 503 5.5.1\nC: QUIT\nS: 221\nclosed")
			case "quit":
				c.script("C: NOOP\nS: 250 2.0.0\nC: QUIT\nS: " + wantRefusal)
			case "noop":
				c.script("C: RSET\nS: 250 2.0.0\nC: QUIT\nS: 221\nclosed")
			default:
				c.script("C: NOOP\nS: 250 2.0.0\nC: QUIT\nS: 221\nclosed")
			}
			if phase == "dataline" || phase == "commit" {
				if n := len(rec.Messages()); n != 0 {
					t.Errorf("%d messages kept", n)
				}
			}
		})
	}
}

// TestHookReplies checks that replies from the Session pass through:
// temporary failures, 2xx texts, disconnections, invalid codes.
func TestHookReplies(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		name, phase string
		reply       *Reply
		script      string
	}{
		{"tempfail passes through", "rcpt", &Reply{Code: 451, Enhanced: EnhancedCode{4, 3, 0}, Text: "lookup failed"}, `
			C: RCPT TO:<b@example.org>
			S: 451 4.3.0 lookup failed
			C: NOOP
			S: 250`},
		{"commit text", "commit", &Reply{Code: 250, Text: "0badcafe Message accepted"}, `
			C: RCPT TO:<b@example.org>
			S: 250
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0 0badcafe Message accepted`},
		{"disconnect", "rcpt", &Reply{Code: 550, Text: "go away", Disconnect: true}, `
			C: RCPT TO:<b@example.org>
			S: 550 5.0.0 go away
			closed`},
		{"421 disconnects", "rcpt", &Reply{Code: 421, Enhanced: EnhancedCode{4, 7, 0}, Text: "later"}, `
			C: RCPT TO:<b@example.org>
			S: 421 4.7.0 later
			closed`},
		{"invalid code", "rcpt", &Reply{Code: 354, Text: "go on"}, `
			C: RCPT TO:<b@example.org>
			S: 451 4.3.0
			C: NOOP
			S: 250`},
		{"multi-line", "rcpt", &Reply{Code: 550, Enhanced: EnhancedCode{5, 1, 1}, Text: "no such user\nreally\r\n"}, `
			C: RCPT TO:<b@example.org>
			S: 550 5.1.1
			C: NOOP
			S: 250`},
		{"data tempfail", "data", &Reply{Code: 452, Enhanced: EnhancedCode{4, 3, 1}, Text: "disk full"}, `
			C: RCPT TO:<b@example.org>
			S: 250
			C: DATA
			S: 452 4.3.1 disk full
			C: DATA
			S: 452 4.3.1
			C: RSET
			S: 250`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			rec.refuse[tc.phase] = tc.reply
			c := dial(t, serveLoopback(t, newTestServer(rec)))
			c.script("S: 220\nC: EHLO a.example\nS: 250\nC: MAIL FROM:<a@example.org>\nS: 250\n" + tc.script)
		})
	}
}

func TestMultilineReplyFormat(t *testing.T) {
	rec := newRecorder()
	rec.refuse["rcpt"] = &Reply{Code: 550, Enhanced: EnhancedCode{5, 1, 1}, Text: "no such user\r\nsee\x1b[1m http://x\n" + strings.Repeat("z", 600) + "\r\n"}
	c := dial(t, serveLoopback(t, newTestServer(rec)))
	c.script("S: 220\nC: EHLO a.example\nS: 250\nC: MAIL FROM:<a@example.org>\nS: 250")
	c.send("RCPT TO:<b@example.org>\r\n")
	got := c.reply()
	want := []string{"550-5.1.1 no such user", "550-5.1.1 see?[1m http://x", "550 5.1.1 " + strings.Repeat("z", 510-len("550 5.1.1 "))}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestConnectRefused(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		reply  *Reply
		script string
	}{
		{&Reply{Code: 550, Text: "blocked"}, `
			S: 554 5.0.0 blocked
			C: NOOP
			S: 503 5.5.1
			C: QUIT
			S: 221
			closed`},
		{&Reply{Code: 451, Enhanced: EnhancedCode{4, 7, 0}, Text: "busy"}, `
			S: 421 4.7.0 busy
			closed`},
		{&Reply{Code: 554, Text: "bye", Disconnect: true}, `
			S: 554 5.0.0 bye
			closed`},
	} {
		rec := newRecorder()
		rec.refuse["connect"] = tc.reply
		c := dial(t, serveLoopback(t, newTestServer(rec)))
		c.script(tc.script)
	}
}

// TestEarlyTalker: input sent before the greeting is read after it, as
// OpenSMTPD reads it.
func TestEarlyTalker(t *testing.T) {
	rec := newRecorder()
	block := make(chan struct{})
	srv := newTestServer(rec)
	srv.NewSession = func(c *Conn) Session {
		<-block
		return rec.newSession(c)
	}
	c := dial(t, serveLoopback(t, srv))
	c.send("EHLO early.example\r\nNOOP\r\n")
	close(block)
	c.script("S: 220\nS: 250 HELP\nS: 250 2.0.0\nC: QUIT\nS: 221")
}

// TestPipelining sends a whole transaction at once: the replies come
// in order, and all at once, since the server holds them until it has
// read all input.
func TestPipelining(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	c := dial(t, serveLoopback(t, newTestServer(rec)))
	c.script("S: 220\nC: EHLO a.example\nS: 250")
	c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<bad>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n")
	c.script("S: 250 2.0.0\nS: 250 2.1.5\nS: 250 2.1.5\nS: 250 2.1.5\nS: 354")
	c.send("Subject: x\r\n\r\nbody\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<d@example.org>\r\nDATA\r\n")
	c.script("S: 250 2.0.0\nS: 250 2.0.0\nS: 250 2.1.5\nS: 354\nC: .\nS: 250\nC: QUIT\nS: 221")
	msgs := rec.Messages()
	if len(msgs) != 2 || !reflect.DeepEqual(msgs[0].rcpts, []string{"b@example.org", "bad", "c@example.org"}) {
		t.Errorf("messages: %+v", msgs)
	}
}

// TestReport checks that the Report callback sees every line of a
// session, in order, and the link and transaction events among them.
func TestReport(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.AuthMechanisms = []string{"PLAIN"}
	srv.AllowInsecureAuth = true
	c := dial(t, serveLoopback(t, srv))
	var seen []string
	sent := []string{
		"EHLO client.example",
		"AUTH PLAIN " + b64("\x00alice\x00secret"),
		"MAIL FROM:<a@example.org>",
		"RCPT TO:<b@example.org>",
		"RCPT TO:<c@example.org>",
		"RCPT TO:<d@example.org>",
		"RCPT TO:<e@example.org>",
		"DATA",
		"QUIT",
	}
	for _, l := range c.reply() {
		seen = append(seen, "S "+l)
	}
	for _, cmd := range sent {
		c.send(cmd + "\r\n")
		if cmd == "AUTH PLAIN "+b64("\x00alice\x00secret") {
			cmd = "AUTH PLAIN ********"
		}
		seen = append(seen, "C "+cmd)
		for _, l := range c.reply() {
			seen = append(seen, "S "+l)
		}
		if cmd == "DATA" {
			c.send("Subject: x\r\n\r\nhi\r\n.\r\n")
			seen = append(seen, "C .")
			for _, l := range c.reply() {
				seen = append(seen, "S "+l)
			}
		}
	}
	c.closed()
	srv.Shutdown(t.Context())
	var lines, events []string
	var prev Event
	for _, e := range rec.Events() {
		if e.Time.Before(prev.Time) {
			t.Errorf("event %s before %s", e.Kind, prev.Kind)
		}
		prev = e
		switch e.Kind {
		case EventProtocolClient:
			lines = append(lines, "C "+e.Line)
		case EventProtocolServer:
			lines = append(lines, "S "+e.Line)
		default:
			events = append(events, strings.Join(strings.Fields(strings.Join([]string{e.Kind, e.Method, e.Text, e.Result}, " ")), " "))
			if e.Kind == EventTxCommit && e.Size != int64(len("Subject: x\r\n\r\nhi\r\n")) {
				t.Errorf("tx-commit size %d", e.Size)
			}
		}
	}
	if !reflect.DeepEqual(lines, seen) {
		t.Errorf("reported lines:\n%s\nclient saw:\n%s", strings.Join(lines, "\n"), strings.Join(seen, "\n"))
	}
	wantEvents := []string{
		"link-connect",
		"link-greeting mx.example.test",
		"link-identify EHLO client.example",
		"link-auth alice pass",
		"tx-begin",
		"tx-mail a@example.org ok",
		"tx-rcpt b@example.org ok",
		"tx-rcpt c@example.org ok",
		"tx-rcpt d@example.org ok",
		"tx-data ok",
		"tx-commit",
		"tx-reset",
		"link-disconnect",
	}
	if !reflect.DeepEqual(events, wantEvents) {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(wantEvents, "\n"))
	}
}

func TestSessionIdentity(t *testing.T) {
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.AuthMechanisms = []string{"PLAIN"}
	srv.AllowInsecureAuth = true
	got := make(chan string, 1)
	srv.NewSession = func(c *Conn) Session {
		c.SetID(0x1234)
		return &identitySession{testSession{rec: rec, c: c}, got}
	}
	c := dial(t, serveLoopback(t, srv))
	c.script("S: 220\nC: HELO client.example\nS: 250\nC: AUTH PLAIN " + b64("\x00alice\x00secret") + "\nS: 235\nC: MAIL FROM:<a@b.example>\nS: 250\nC: QUIT\nS: 221")
	if s := <-got; s != "1234 client.example false alice 127.0.0.1 false true" {
		t.Errorf("Conn at MAIL: %s", s)
	}
}

type identitySession struct {
	testSession
	got chan string
}

func (s *identitySession) Mail(from string, p MailParams) *Reply {
	c := s.c
	_, tlsOn := c.TLS()
	host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	s.got <- fmt.Sprintf("%x %s %v %s %s %v %v", c.ID(), c.Helo(), c.Extended(), c.AuthUser(), host, tlsOn, c.LocalAddr() != nil && c.NetConn() != nil)
	return nil
}

// disconnectingSession closes the session from a hook that accepts.
type disconnectingSession struct{ testSession }

func (s *disconnectingSession) Rcpt(to string, p RcptParams) *Reply {
	s.c.Disconnect()
	return nil
}

func TestConnDisconnect(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.NewSession = func(c *Conn) Session { return &disconnectingSession{testSession{rec: rec, c: c}} }
	c := dial(t, serveLoopback(t, srv))
	c.send("EHLO a.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nNOOP\r\n")
	c.script("S: 220\nS: 250\nS: 250\nS: 250 2.1.5\nclosed")
	waitCalls(t, rec, "close")
	if calls := rec.Calls(); !slices.Contains(calls, "abort") || slices.Contains(calls, "noop") {
		t.Errorf("calls: %q", calls)
	}
}

// countingConn counts the writes to a connection.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes []string
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, string(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// TestRepliesBatched: the replies to pipelined commands go out in one
// write, once the server has read all the commands it was sent.
func TestRepliesBatched(t *testing.T) {
	checkGoroutines(t)
	srv := newTestServer(newRecorder())
	var conn *countingConn
	c, a, done := servePipe(t, srv, func(b net.Conn) net.Conn {
		conn = &countingConn{Conn: b}
		return conn
	})
	c.expect("220")
	go io.WriteString(a, "EHLO a.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<c@example.org>\r\nNOOP\r\n")
	c.script("S: 250 HELP\nS: 250 2.0.0\nS: 250 2.1.5\nS: 250 2.1.5\nS: 250 2.0.0")
	go io.WriteString(a, "QUIT\r\n")
	c.script("S: 221\nclosed")
	<-done
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if len(conn.writes) != 3 || strings.Count(conn.writes[1], "\r\n") != 13 {
		t.Errorf("writes: %q", conn.writes)
	}
}

// TestUnterminatedLongLine: a line over the limit gets its 500 at once,
// without waiting for its end; the rest is dropped when it comes, but a
// client that stops inside the line and waits is let go.
func TestUnterminatedLongLine(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.MaxLineLength = 1000
	c := dial(t, serveLoopback(t, srv))
	c.script("S: 220\nC: EHLO a.example\nS: 250")
	// the rest of the line comes in pieces, quickly enough
	c.send(strings.Repeat("x", 3000))
	c.expect("500 5.5.2")
	c.send(strings.Repeat("y", 2000))
	time.Sleep(300 * time.Millisecond)
	c.send(strings.Repeat("z", 2000) + "\r\nNOOP\r\n")
	c.expect("250 2.0.0")
	// no end at all
	start := time.Now()
	c.send(strings.Repeat("x", 5000))
	c.expect("500 5.5.2")
	c.closed()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v", d)
	}
}

// TestAuthMaskedWithTabs: a tab between AUTH, the mechanism and the
// initial response does not carry the credential past the mask of the
// reported command line.
func TestAuthMaskedWithTabs(t *testing.T) {
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.AuthMechanisms = []string{"PLAIN"}
	srv.AllowInsecureAuth = true
	c := dial(t, serveLoopback(t, srv))
	c.reply()
	secret := b64("\x00alice\x00secret")
	for _, cmd := range []string{"EHLO client.example", "AUTH\tPLAIN " + secret, "AUTH PLAIN\t" + secret, "QUIT"} {
		c.send(cmd + "\r\n")
		c.reply()
	}
	c.closed()
	srv.Shutdown(t.Context())
	for _, e := range rec.Events() {
		if strings.Contains(e.Line, secret) {
			t.Errorf("credential in a reported line: %s %q", e.Kind, e.Line)
		}
	}
}
