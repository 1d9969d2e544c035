package server

import (
	"crypto/tls"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// TestGoSMTPClient has go-smtp's client complete transactions against
// the engine: STARTTLS, AUTH PLAIN and LOGIN, SMTPUTF8, DSN parameters.
// (go-smtp's client neither pipelines nor sends BDAT; the scripted
// tests cover those.)
func TestGoSMTPClient(t *testing.T) {
	checkGoroutines(t)
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run(mech, func(t *testing.T) {
			rec := newRecorder()
			srv := newTestServer(rec)
			srv.TLSConfig = testTLSConfig(t)
			srv.AuthMechanisms = []string{"PLAIN", "LOGIN"}
			srv.EnableRequireTLS = true
			addr := serveLoopback(t, srv)

			plain, err := gosmtp.Dial(addr)
			if err != nil {
				t.Fatal(err)
			}
			if err := plain.Hello("client.example"); err != nil {
				t.Fatal(err)
			}
			if ok, _ := plain.Extension("AUTH"); ok {
				t.Error("AUTH offered in clear text")
			}
			if err := plain.Quit(); err != nil {
				t.Error(err)
			}

			c, err := gosmtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for _, ext := range []string{"PIPELINING", "CHUNKING", "SMTPUTF8", "DSN", "8BITMIME", "ENHANCEDSTATUSCODES", "REQUIRETLS"} {
				if ok, _ := c.Extension(ext); !ok {
					t.Errorf("%s not offered", ext)
				}
			}
			if size, ok := c.MaxMessageSize(); !ok || size != DefaultMaxMessageBytes {
				t.Errorf("SIZE %d %v", size, ok)
			}
			bad := sasl.NewPlainClient("", "alice", "wrong")
			good := sasl.NewPlainClient("", "alice", "secret")
			if mech == "LOGIN" {
				bad, good = sasl.NewLoginClient("alice", "wrong"), sasl.NewLoginClient("alice", "secret")
			}
			var se *gosmtp.SMTPError
			if err := c.Auth(bad); !errors.As(err, &se) || se.Code != 535 {
				t.Errorf("wrong password: %v", err)
			}
			if err := c.Auth(good); err != nil {
				t.Fatalf("auth: %v", err)
			}
			authID := "alice@example.org"
			if err := c.Mail("sender@example.org", &gosmtp.MailOptions{
				Size: 1234, UTF8: true, RequireTLS: true, Return: gosmtp.DSNReturnHeaders,
				EnvelopeID: "env+id=1", Auth: &authID,
			}); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt("δοκιμή@παράδειγμα.δοκιμή", &gosmtp.RcptOptions{
				Notify:                []gosmtp.DSNNotify{gosmtp.DSNNotifySuccess, gosmtp.DSNNotifyFailure},
				OriginalRecipientType: gosmtp.DSNAddressTypeRFC822,
				OriginalRecipient:     "orig@example.org",
			}); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt("Postmaster", nil); err != nil {
				t.Fatal(err)
			}
			w, err := c.Data()
			if err != nil {
				t.Fatal(err)
			}
			body := "Subject: héllo\r\n\r\n.leading dot\r\nline\nwith bare LF made CRLF by the client\r\n"
			if _, err := w.Write([]byte(body)); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			// a second transaction on the same session
			if err := c.SendMail("", []string{"b@example.org"}, strings.NewReader("Subject: again\r\n\r\nx\r\n")); err != nil {
				t.Fatal(err)
			}
			if err := c.Noop(); err != nil {
				t.Error(err)
			}
			if err := c.Quit(); err != nil {
				t.Error(err)
			}
			m := rec.Messages()
			if len(m) != 2 {
				t.Fatalf("%d messages", len(m))
			}
			want := MailParams{Size: 1234, Body: Body8BitMIME, SMTPUTF8: true, RequireTLS: true, Ret: "HDRS", EnvID: "env+id=1", Auth: "alice@example.org"}
			if m[0].from != "sender@example.org" || m[0].mail != want {
				t.Errorf("MAIL: %q %+v", m[0].from, m[0].mail)
			}
			wantRcpt := RcptParams{Notify: []string{"SUCCESS", "FAILURE"}, ORcptType: "RFC822", ORcpt: "orig@example.org"}
			if !reflect.DeepEqual(m[0].rcpts, []string{"δοκιμή@παράδειγμα.δοκιμή", "Postmaster"}) || !reflect.DeepEqual(m[0].rcptP[0], wantRcpt) {
				t.Errorf("RCPT: %q %+v", m[0].rcpts, m[0].rcptP)
			}
			if want := strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\n", "\r\n"); m[0].body != want {
				t.Errorf("body %q, want %q", m[0].body, want)
			}
			if m[1].from != "" || m[1].body != "Subject: again\r\n\r\nx\r\n" {
				t.Errorf("second message: %+v", m[1])
			}
		})
	}
}

// TestGoSMTPClientReset: after Reset, go-smtp's client says EHLO again
// before its next command; between transactions that EHLO is accepted
// (RFC 5321 §4.1.4), or every go-smtp program would fail after its
// first RSET.
func TestGoSMTPClientReset(t *testing.T) {
	rec := newRecorder()
	c, err := gosmtp.Dial(serveLoopback(t, newTestServer(rec)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop(); err != nil {
		t.Errorf("NOOP after Reset: %v", err)
	}
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Errorf("MAIL after Reset: %v", err)
	}
}
