package server

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// openTx starts a session and a transaction with one recipient.
func openTx(t *testing.T, srv *Server, mailParams string) *client {
	t.Helper()
	c := dial(t, serveLoopback(t, srv))
	c.script(`
		S: 220
		C: EHLO client.example
		S: 250
		C: MAIL FROM:<a@example.org>` + mailParams + `
		S: 250
		C: RCPT TO:<b@example.org>
		S: 250`)
	return c
}

func bdat(chunk string, last bool) string {
	s := "BDAT " + strconv.Itoa(len(chunk))
	if last {
		s += " LAST"
	}
	return s + "\r\n" + chunk
}

func TestBDAT(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		name   string
		params string
		chunks []string
		want   []string
		stored string
	}{
		{name: "one chunk", chunks: []string{"Subject: x\r\n\r\nbody\r\n"}, want: []string{"250 2.0.0 Message accepted"}, stored: "Subject: x\r\n\r\nbody\r\n"},
		{name: "empty", chunks: []string{""}, want: []string{"250 2.0.0 Message accepted"}, stored: ""},
		{
			name:   "several chunks",
			chunks: []string{"Subject: x\r", "\n\r\nline one\r\n", "", "line two\r\n"},
			want:   []string{"250 2.0.0 11 octets", "250 2.0.0 13 octets", "250 2.0.0 0 octets", "250 2.0.0 Message accepted"},
			stored: "Subject: x\r\n\r\nline one\r\nline two\r\n",
		},
		{
			name:   "dots and commands are data",
			chunks: []string{"Subject: x\r\n\r\n.\r\nMAIL FROM:<evil@example.org>\r\n", ".\r\n"},
			want:   []string{"250 2.0.0", "250 2.0.0 Message accepted"},
			stored: "Subject: x\r\n\r\n.\r\nMAIL FROM:<evil@example.org>\r\n.\r\n",
		},
		{name: "no final CRLF", chunks: []string{"Subject: x\r\n\r\nbody"}, want: []string{"250 2.0.0 Message accepted"}, stored: "Subject: x\r\n\r\nbody"},
		{name: "bare LF", chunks: []string{"Subject: x\r\n\r\nbo\ndy\r\n", "more\r\n"}, want: []string{"550 5.5.2", "503 5.5.1"}},
		{name: "bare CR at end", chunks: []string{"Subject: x\r\n\r\nbody\r"}, want: []string{"550 5.5.2"}},
		{name: "no header", chunks: []string{"hello\r\n"}, want: []string{"550 5.7.1"}},
		{name: "binarymime", params: " BODY=BINARYMIME", chunks: []string{"Subject: x\r\n\r\n\x00\n\r\xff", "\r"}, want: []string{"250 2.0.0", "250 2.0.0 Message accepted"}, stored: "Subject: x\r\n\r\n\x00\n\r\xff\r"},
		{name: "over the size", chunks: []string{strings.Repeat("x", 600), strings.Repeat("y", 600)}, want: []string{"250 2.0.0", "552 5.3.4"}},
		{name: "over the size at once", chunks: []string{"Subject: x\r\n\r\n" + strings.Repeat("x", 1001), "pipelined\r\n"}, want: []string{"552 5.3.4", "503 5.5.1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			srv := newTestServer(rec)
			srv.MaxMessageBytes = 1000
			srv.EnableBinaryMIME = true
			c := openTx(t, srv, tc.params)
			// all chunks pipelined in one write
			var all strings.Builder
			for i, ch := range tc.chunks {
				all.WriteString(bdat(ch, i == len(tc.chunks)-1))
			}
			c.send(all.String())
			for _, w := range tc.want {
				c.expect(w)
			}
			c.script("C: NOOP\nS: 250 2.0.0\nC: QUIT\nS: 221")
			m := rec.Messages()
			if tc.stored == "" && !strings.HasPrefix(tc.want[len(tc.want)-1], "250") {
				if len(m) != 0 {
					t.Errorf("refused message stored: %q", m[0].body)
				}
				return
			}
			if len(m) != 1 || m[0].body != tc.stored {
				t.Errorf("stored %+v", m)
			}
		})
	}
}

func TestBDATSequence(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	c := dial(t, serveLoopback(t, srv))
	c.script("S: 220\nC: EHLO client.example\nS: 250")
	// refused chunks are read and dropped, never taken for commands
	c.send(bdat("MAIL FROM:<evil@example.org>\r\n", false))
	c.expect("503 5.5.1")
	c.send("BDAT nonsense\r\n")
	c.expect("501 5.5.4")
	c.script("C: MAIL FROM:<a@example.org>\nS: 250")
	c.send(bdat("RCPT TO:<evil@example.org>\r\n", true))
	c.expect("503 5.5.1")
	c.script("C: RCPT TO:<b@example.org>\nS: 250")
	c.send(bdat("Subject: x\r\n", false))
	c.expect("250 2.0.0")
	c.script(`
		C: DATA
		S: 503 5.5.1
		C: RCPT TO:<c@example.org>
		S: 503 5.5.1
		C: MAIL FROM:<a@example.org>
		S: 503 5.5.1`)
	c.send(bdat("\r\nbody\r\n", true))
	c.expect("250 2.0.0 Message accepted")
	c.send(bdat("more", true))
	c.expect("503 5.5.1")
	// RSET in the middle of chunks
	c.script("C: MAIL FROM:<a@example.org>\nS: 250\nC: RCPT TO:<b@example.org>\nS: 250")
	c.send(bdat("Subject: x\r\n", false))
	c.script("S: 250\nC: RSET\nS: 250\nC: DATA\nS: 503 5.5.1")
	c.script("C: QUIT\nS: 221")
	for _, call := range rec.Calls() {
		if strings.Contains(call, "evil") {
			t.Errorf("chunk content ran as a command: %q", call)
		}
	}
	if m := rec.Messages(); len(m) != 1 || m[0].body != "Subject: x\r\n\r\nbody\r\n" {
		t.Errorf("messages: %+v", m)
	}
	if calls := rec.Calls(); !slices.Contains(calls, "abort") {
		t.Errorf("RSET did not abort: %q", calls)
	}
}

func TestBDATBinaryMIMERefusesDATA(t *testing.T) {
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.EnableBinaryMIME = true
	c := openTx(t, srv, " BODY=BINARYMIME")
	c.script("C: DATA\nS: 503 5.5.1")
	c.send(bdat("Subject: x\r\n\r\n\x00", true))
	c.script("S: 250 2.0.0\nC: QUIT\nS: 221")
}

func TestBDATDataRefused(t *testing.T) {
	rec := newRecorder()
	rec.refuse["data"] = &Reply{Code: 451, Enhanced: EnhancedCode{4, 3, 0}, Text: "queue unavailable"}
	c := openTx(t, newTestServer(rec), "")
	c.send(bdat("RCPT TO:<evil@example.org>\r\n", false) + bdat("NOOP\r\n", true))
	c.script("S: 451 4.3.0 queue unavailable\nS: 503 5.5.1\nC: NOOP\nS: 250\nC: QUIT\nS: 221")
	for _, call := range rec.Calls() {
		if strings.Contains(call, "evil") {
			t.Errorf("chunk content ran as a command: %q", call)
		}
	}
}

// TestBDATTooManyErrors: at the error that ends the session, a chunk is
// not waited for.
func TestBDATTooManyErrors(t *testing.T) {
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.MaxErrors = 1
	c := dial(t, serveLoopback(t, srv))
	c.script("S: 220\nC: FOO\nS: 500\nC: BDAT 99999999999999999999\nS: 421 4.7.0\nclosed")
}
