package smtp

import (
	"strings"
	"testing"
)

// play notes the lines of a dialogue as the engine's events would:
// "C: " a client line, "S: " a server line, "T" the timeout.
func play(lines []string) *sessionEvents {
	st := &sessionEvents{}
	for _, l := range lines {
		switch {
		case l == "T":
			st.timedOut = true
		case strings.HasPrefix(l, "C: "):
			st.client(l[3:])
		default:
			st.server(l[3:])
		}
	}
	return st
}

// TestFailedCommand plays the lines of dialogues, as the engine reports
// them (SASL responses and AUTH initial responses already masked), and
// checks the command the failure at their end is logged with: never a
// credential, the step of an AUTH exchange as OpenSMTPD names it, DATA
// for a message refused at its end.
func TestFailedCommand(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string // "C: " client, "S: " server
		want  string
	}{
		{"greeting refused", []string{"S: 554 5.7.1 Go away"}, ""},
		{"rcpt", []string{"C: EHLO client.example.org", "S: 250-mx.example.org Hello", "S: 250 HELP", "C: MAIL FROM:<a@example.org>", "S: 250 2.0.0 Ok", "C: RCPT TO:<x@elsewhere.example>", "S: 550 5.7.1 Delivery not authorized"}, "RCPT TO:<x@elsewhere.example>"},
		{"plain initial", []string{"C: AUTH PLAIN ********", "S: 535 5.7.8 Authentication credentials invalid"}, "AUTH PLAIN (...)"},
		{"plain challenge", []string{"C: AUTH PLAIN", "S: 334 ", "C: ********", "S: 535 5.7.8 Authentication credentials invalid"}, "AUTH PLAIN (...)"},
		{"login password", []string{"C: AUTH LOGIN", "S: 334 VXNlcm5hbWU6", "C: ********", "S: 334 UGFzc3dvcmQ6", "C: ********", "S: 535 5.7.8 Authentication credentials invalid"}, "AUTH LOGIN (password)"},
		{"login initial username", []string{"C: AUTH LOGIN ********", "S: 334 UGFzc3dvcmQ6", "C: ********", "S: 535 5.7.8 Authentication credentials invalid"}, "AUTH LOGIN (password)"},
		{"after a login", []string{"C: AUTH LOGIN", "S: 334 VXNlcm5hbWU6", "C: ********", "S: 334 UGFzc3dvcmQ6", "C: ********", "S: 235 2.7.0 Authentication successful", "C: MAIL FROM:<a@example.org>", "S: 553 5.7.1 Sender address not allowed for this user"}, "MAIL FROM:<a@example.org>"},
		{"login bad username", []string{"C: AUTH LOGIN", "S: 334 VXNlcm5hbWU6", "C: ********", "S: 501 5.5.2 Cannot decode base64 response"}, "AUTH LOGIN (username)"},
		{"unknown mechanism", []string{"C: AUTH CRAM-MD5", "S: 504 5.5.4 Unrecognized authentication type"}, "AUTH CRAM-MD5"},
		{"unknown mechanism initial", []string{"C: AUTH xoauth2 ********", "S: 504 5.5.4 Unrecognized authentication type"}, "AUTH XOAUTH2 (...)"},
		{"after auth, a command", []string{"C: AUTH PLAIN ********", "S: 535 5.7.8 Authentication credentials invalid", "C: ********", "S: 500 5.5.1 Command unrecognized"}, "(a line after AUTH)"},
		// a credential the client sent without waiting, unmasked
		{"after a refused auth, a credential", []string{"C: AUTH PLAIN", "S: 504 5.5.4 Unrecognized authentication type", "C: dXNlcgB1c2VyAHNlY3JldA==", "S: 500 5.5.1 Command unrecognized"}, "(a line after AUTH)"},
		{"end of data", []string{"C: DATA", "S: 354 End data with <CR><LF>.<CR><LF>", "C: .", "S: 554 5.7.1 Rejected by a filter"}, "DATA"},
		{"dot as a command", []string{"C: NOOP", "S: 250 2.0.0 Ok", "C: .", "S: 500 5.5.1 Command unrecognized"}, "."},
		{"bdat", []string{"C: BDAT 10 LAST", "S: 552 5.3.4 Message too big"}, "BDAT 10 LAST"},
	} {
		// the failure is logged before it is noted
		st := play(tc.lines[:len(tc.lines)-1])
		if got := st.failedCommand(); got != tc.want {
			t.Errorf("%s: command %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestBadInput: a 500 that answers no line (one too long to read) is
// bad input, not the failure of the command before.
func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		want  bool
	}{
		{"line too long", []string{"C: EHLO x", "S: 250 HELP", "S: 500 5.5.2 Line too long"}, true},
		{"sasl line too long", []string{"C: AUTH PLAIN", "S: 334 ", "S: 500 5.5.6 Authentication exchange line is too long"}, true},
		{"unknown command", []string{"C: EHLO x", "S: 250 HELP", "C: FOO", "S: 500 5.5.1 Command unrecognized"}, false},
		{"greeting refused", []string{"S: 554 5.7.1 Go away"}, false},
		{"lmtp, second recipient", []string{"C: .", "S: 250 2.0.0 Ok", "S: 550 5.1.1 Unknown"}, false},
	} {
		st := play(tc.lines[:len(tc.lines)-1])
		if got := st.badInput(tc.lines[len(tc.lines)-1][3:]); got != tc.want {
			t.Errorf("%s: bad input %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestDisconnectReason(t *testing.T) {
	for _, tc := range []struct {
		name   string
		lines  []string
		ending bool
		want   string
	}{
		{"quit", []string{"C: QUIT", "S: 221 2.0.0 Bye"}, true, "quit"},
		{"too many errors", []string{"C: FOO", "S: 421 4.7.0 mx Too many errors, closing connection"}, true, "quit"},
		{"client hung up", []string{"C: EHLO x", "S: 250 HELP"}, false, "disconnect"},
		{"timeout", []string{"T", "S: 421 4.4.2 mx Timeout, closing connection"}, true, "timeout"},
		{"tls failed", []string{"C: STARTTLS", "S: 220 2.0.0 Ready to start TLS"}, true, `"io-error: TLS handshake failed"`},
	} {
		st := play(tc.lines)
		if got := st.disconnectReason(tc.ending); got != tc.want {
			t.Errorf("%s: reason %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestEventLines(t *testing.T) {
	const id = 0x1c0e5c2c4b1bd6a1
	for _, tc := range []struct{ got, want string }{
		{failedCommandLine(id, "RCPT TO:<x@elsewhere.example>", "550 5.7.1 Delivery not authorized, message refused"),
			`1c0e5c2c4b1bd6a1 smtp failed-command command="RCPT TO:<x@elsewhere.example>" result="550 5.7.1 Delivery not authorized, message refused"`},
		{failedCommandLine(id, "AUTH PLAIN (...)", "535 5.7.8 Authentication credentials invalid"),
			`1c0e5c2c4b1bd6a1 smtp failed-command command="AUTH PLAIN (...)" result="535 5.7.8 Authentication credentials invalid"`},
		{failedCommandLine(id, `RCPT TO:<"a b"@example.org>`, `550 5.1.1 "a b" unknown`),
			`1c0e5c2c4b1bd6a1 smtp failed-command command="RCPT TO:<\"a b\"@example.org>" result="550 5.1.1 \"a b\" unknown"`},
		{failedCommandLine(id, "", "554 5.7.1 Go away"),
			`1c0e5c2c4b1bd6a1 smtp failed-command command="" result="554 5.7.1 Go away"`},
		{authLine(id, "alice", "ok"), "1c0e5c2c4b1bd6a1 smtp authentication user=alice result=ok"},
		{authLine(id, "alice smith", "permfail"), `1c0e5c2c4b1bd6a1 smtp authentication user=alice\040smith result=permfail`},
		{messageLine(id, 0x5e2a7b01, 1234, 2, "ESMTP"), "1c0e5c2c4b1bd6a1 smtp message msgid=5e2a7b01 size=1234 nrcpt=2 proto=ESMTP"},
		{messageLine(id, 0x1, 0, 1, "LMTP"), "1c0e5c2c4b1bd6a1 smtp message msgid=00000001 size=0 nrcpt=1 proto=LMTP"},
		{envelopeLine(id, 0x5e2a7b01c0ffee00, "alice@example.org", "bob@example.net"),
			"1c0e5c2c4b1bd6a1 smtp envelope evpid=5e2a7b01c0ffee00 from=<alice@example.org> to=<bob@example.net>"},
		{envelopeLine(id, 0x5e2a7b01c0ffee00, "", "bob@example.net"),
			"1c0e5c2c4b1bd6a1 smtp envelope evpid=5e2a7b01c0ffee00 from=<> to=<bob@example.net>"},
	} {
		if tc.got != tc.want {
			t.Errorf("got  %s\nwant %s", tc.got, tc.want)
		}
	}
}
