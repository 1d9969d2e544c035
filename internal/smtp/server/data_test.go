package server

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// openData starts a session and gets as far as the 354.
func openData(t *testing.T, srv *Server) *client {
	t.Helper()
	c := dial(t, serveLoopback(t, srv))
	c.script(`
		S: 220
		C: EHLO client.example
		S: 250
		C: MAIL FROM:<a@example.org>
		S: 250
		C: RCPT TO:<b@example.org>
		S: 250
		C: DATA
		S: 354`)
	return c
}

// TestSmuggling sends messages where a line ending other than CRLF
// surrounds a dot: none ends the data, the message is refused after the
// real end, the smuggled commands inside are never run, and the session
// stays in sync.
func TestSmuggling(t *testing.T) {
	checkGoroutines(t)
	smuggled := "MAIL FROM:<smuggler@evil.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n"
	for name, body := range map[string]string{
		`\r\n.\n`:         "Subject: x\r\n\r\nbody\r\n.\n" + smuggled,
		`\n.\n`:           "Subject: x\r\n\r\nbody\n.\n" + smuggled,
		`\n.\r\n`:         "Subject: x\r\n\r\nbody\n.\r\n" + smuggled,
		`\r.\r`:           "Subject: x\r\n\r\nbody\r.\r" + smuggled,
		`\r.\r\n`:         "Subject: x\r\n\r\nbody\r.\r\n" + smuggled,
		`\r\n.\r\r\n`:     "Subject: x\r\n\r\nbody\r\n.\r\r\n" + smuggled,
		`\r\n.\r`:         "Subject: x\r\n\r\nbody\r\n.\r" + smuggled,
		`bare LF header`:  "Subject: x\nFrom: a@example.org\r\n\r\nbody\r\n",
		`bare CR header`:  "Subject: x\rFrom: a@example.org\r\n\r\nbody\r\n",
		`bare LF body`:    "Subject: x\r\n\r\nbo\ndy\r\n",
		`bare CR body`:    "Subject: x\r\n\r\nbo\rdy\r\n",
		`CR CR LF`:        "Subject: x\r\n\r\nbody\r\r\n",
		`LF first`:        "\nSubject: x\r\n\r\nbody\r\n",
		`CR at line end`:  "Subject: x\r\n\r\nbody\r",
		`dot LF at start`: ".\n" + smuggled,
	} {
		t.Run(name, func(t *testing.T) {
			rec := newRecorder()
			c := openData(t, newTestServer(rec))
			if !strings.HasSuffix(body, "\r\n") {
				body += "\r\n"
			}
			c.send(body + ".\r\n")
			c.script(`
				S: 550 5.5.2 Bare CR or LF in message, refused: possible SMTP smuggling
				C: RCPT TO:<b@example.org>
				S: 503 5.5.1
				C: NOOP
				S: 250 2.0.0
				C: QUIT
				S: 221`)
			for _, call := range rec.Calls() {
				if strings.Contains(call, "smuggler") || strings.Contains(call, "victim") || call == "commit" {
					t.Errorf("smuggled input ran: %q", rec.Calls())
				}
			}
			if !slices.Contains(rec.Calls(), "abort") {
				t.Errorf("transaction not aborted: %q", rec.Calls())
			}
		})
	}
}

// TestDataContent checks what is stored of what is sent.
func TestDataContent(t *testing.T) {
	checkGoroutines(t)
	longLine := strings.Repeat("x", 1<<20)
	for _, tc := range []struct {
		name, sent, stored string
	}{
		{"empty", "", ""},
		{"header only", "Subject: x\r\n", "Subject: x\r\n"},
		{"no header", "\r\nbody\r\n", "\r\nbody\r\n"},
		{"dot stuffing", "Subject: x\r\n\r\n..\r\n...x\r\n.y\r\nz.\r\n", "Subject: x\r\n\r\n.\r\n..x\r\ny\r\nz.\r\n"},
		{"long line", "Subject: x\r\n\r\n" + longLine + "\r\n", "Subject: x\r\n\r\n" + longLine + "\r\n"},
		{"long header line", "Subject: " + longLine + "\r\n\r\nx\r\n", "Subject: " + longLine + "\r\n\r\nx\r\n"},
		{"continuation", "Subject: x\r\n y\r\n\tz\r\nTo: b\r\n\r\nbody\r\n", "Subject: x\r\n y\r\n\tz\r\nTo: b\r\n\r\nbody\r\n"},
		{"obsolete space before colon", "Subject : x\r\n\r\nbody\r\n", "Subject : x\r\n\r\nbody\r\n"},
		{"8bit", "Subject: caf\xc3\xa9\r\n\r\n\xff\x00\x01\r\n", "Subject: caf\xc3\xa9\r\n\r\n\xff\x00\x01\r\n"},
		{"dot line inside", "Subject: x\r\n\r\na\r\n.\rb\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newRecorder()
			c := openData(t, newTestServer(rec))
			c.send(tc.sent + ".\r\n")
			if tc.name == "dot line inside" {
				c.expect("550 5.5.2")
				return
			}
			c.expect("250 2.0.0")
			m := rec.Messages()
			if len(m) != 1 || m[0].body != tc.stored {
				t.Errorf("stored %d messages: %.80v", len(m), m)
			}
		})
	}
}

// TestHeaderCheck: a message whose header section is not made of
// fields ending at an empty line is refused, as OpenSMTPD refuses it,
// unless it is a local submission.
func TestHeaderCheck(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		body  string
		local bool
		want  string
	}{
		{"Subject: x\r\n\r\nbody\r\n", false, "250 2.0.0"},
		{"just text\r\n", false, "550 5.7.1"},
		{"From someone Mon Jan 1 00:00:00 2024\r\nSubject: x\r\n\r\n", false, "550 5.7.1"},
		{" continued\r\nSubject: x\r\n\r\n", false, "550 5.7.1"},
		{": no name\r\n\r\n", false, "550 5.7.1"},
		{"Subject: x\r\nbody without empty line\r\n", false, "550 5.7.1"},
		{"Subject: x\r\nNoColon\r\n", false, "550 5.7.1"},
		{"Sub\x01ject: x\r\n\r\n", false, "550 5.7.1"},
		{"just text\r\n", true, "250 2.0.0"},
		{"Subject: x\r\nbody without empty line\r\n", true, "250 2.0.0"},
	} {
		rec := newRecorder()
		rec.local = tc.local
		c := openData(t, newTestServer(rec))
		c.send(tc.body + ".\r\n")
		if got := c.reply(); !strings.HasPrefix(got[0], tc.want) {
			t.Fatalf("%q: got %q, want %s", tc.body, got, tc.want)
		}
		c.script("C: NOOP\nS: 250\nC: QUIT\nS: 221")
	}
}

func TestMessageSize(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.MaxMessageBytes = 1000
	head := "Subject: x\r\n\r\n"
	exact := head + strings.Repeat("y", 1000-len(head)-2) + "\r\n"
	c := openData(t, srv)
	c.send(exact + ".\r\n")
	c.expect("250 2.0.0")
	c.script("C: MAIL FROM:<a@example.org> SIZE=1000\nS: 250\nC: RCPT TO:<b@example.org>\nS: 250\nC: DATA\nS: 354")
	c.send(exact + "z\r\n.\r\n")
	c.script(`
		S: 552 5.3.4
		C: RCPT TO:<b@example.org>
		S: 503 5.5.1
		C: MAIL FROM:<a@example.org> SIZE=1001
		S: 552 5.3.4
		C: MAIL FROM:<a@example.org>
		S: 250
		C: RCPT TO:<b@example.org>
		S: 250
		C: DATA
		S: 354`)
	// a single line over the limit, of many megabytes
	c.send(head + strings.Repeat("w", 5<<20) + "\r\n.\r\n")
	c.script("S: 552 5.3.4\nC: QUIT\nS: 221")
	if len(rec.Messages()) != 1 {
		t.Errorf("%d messages", len(rec.Messages()))
	}
}

func TestDataLine(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	var lines []string
	rec.lineHook = func(line []byte) []byte {
		lines = append(lines, string(line))
		if bytes.HasPrefix(line, []byte("X-Drop:")) {
			return nil
		}
		if bytes.HasPrefix(line, []byte("Subject:")) {
			return []byte("Subject: rewritten\r\nX-Added: yes\r\n")
		}
		return line
	}
	c := openData(t, newTestServer(rec))
	long := strings.Repeat("L", MaxDataLine+10)
	c.send("Subject: x\r\nX-Drop: me\r\n\r\n..dot\r\n" + long + "\r\nlast\r\n.\r\n")
	c.expect("250 2.0.0")
	want := "Subject: rewritten\r\nX-Added: yes\r\n\r\n.dot\r\n" + long + "\r\nlast\r\n"
	if m := rec.Messages(); len(m) != 1 || m[0].body != want {
		t.Errorf("stored %.200v", m)
	}
	wantLines := []string{"Subject: x\r\n", "X-Drop: me\r\n", "\r\n", ".dot\r\n", long[:MaxDataLine], long[MaxDataLine:] + "\r\n", "last\r\n"}
	if !slices.Equal(lines, wantLines) {
		t.Errorf("lines: %.100q", lines)
	}

	// a refusal from DataLine comes after the real end
	rec.refuse["dataline"] = &Reply{Code: 554, Enhanced: EnhancedCode{5, 7, 0}, Text: "filtered"}
	c.script("C: MAIL FROM:<a@example.org>\nS: 250\nC: RCPT TO:<b@example.org>\nS: 250\nC: DATA\nS: 354")
	c.send("Subject: x\r\n\r\nMAIL FROM:<x@y>\r\n.\r\n")
	c.script("S: 554 5.7.0 filtered\nC: QUIT\nS: 221")
}

func TestDataWriterFailure(t *testing.T) {
	checkGoroutines(t)
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("disk full"), "451 4.3.0"},
		{&Reply{Code: 452, Enhanced: EnhancedCode{4, 3, 1}, Text: "quota"}, "452 4.3.1 quota"},
		{&Reply{Code: 554, Enhanced: EnhancedCode{5, 7, 1}, Text: "virus"}, "554 5.7.1 virus"},
	} {
		rec := newRecorder()
		rec.writeErr = tc.err
		c := openData(t, newTestServer(rec))
		c.send("Subject: x\r\n\r\n" + strings.Repeat("body\r\n", 20000) + ".\r\n")
		c.script("S: " + tc.want + "\nC: NOOP\nS: 250\nC: QUIT\nS: 221")
	}
}

func TestDataConnectionLost(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	c := openData(t, srv)
	c.send("Subject: x\r\n\r\npartial")
	c.conn.Close()
	waitCalls(t, rec, "close")
	if calls := rec.Calls(); !slices.Contains(calls, "abort") || slices.Contains(calls, "commit") {
		t.Errorf("calls: %q", calls)
	}
}

func TestTimeouts(t *testing.T) {
	checkGoroutines(t)
	rec := newRecorder()
	srv := newTestServer(rec)
	srv.CommandTimeout = 200 * time.Millisecond
	c := openData(t, srv)
	c.send("Subject: x\r\n")
	c.script("S: 421 4.4.2\nclosed")
	waitCalls(t, rec, "close")

	// the session limit holds even for a client that keeps talking
	srv = newTestServer(rec)
	srv.SessionTimeout = 300 * time.Millisecond
	c = dial(t, serveLoopback(t, srv))
	c.expect("220")
	start := time.Now()
	for time.Since(start) < 2*time.Second {
		c.send("NOOP\r\n")
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "421 4.4.2") {
			c.closed()
			found := false
			for _, e := range rec.Events() {
				found = found || e.Kind == EventTimeout
			}
			if !found {
				t.Error("no timeout event")
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("session outlived its limit")
}

func waitCalls(t testing.TB, rec *recorder, call string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(rec.Calls(), call) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in %q", call, rec.Calls())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
