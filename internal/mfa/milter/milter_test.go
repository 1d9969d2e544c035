package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// script tells the test milter what to answer at each phase; a nil
// response is continue. eom, if set, makes the modifications and gives
// the final answer (default: continue).
type script struct {
	connect, helo, mail, rcpt, header, eoh, chunk gomilter.Response
	// chunkErr makes the milter fail (and close the connection) at the
	// n-th body chunk, if not zero.
	chunkErr int
	eom      func(m *gomilter.Modifier) (gomilter.Response, error)
}

// record is what the test milter saw.
type record struct {
	mu     sync.Mutex
	events []string
	macros map[string]map[string]string // phase → macros in force
	hdrs   [][2]string
	chunks []int
	body   bytes.Buffer
}

func (r *record) add(phase string, m *gomilter.Modifier, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, strings.TrimSpace(phase+" "+detail))
	if r.macros == nil {
		r.macros = map[string]map[string]string{}
	}
	cp := map[string]string{}
	for k, v := range m.Macros {
		cp[k] = v
	}
	r.macros[phase] = cp
}

func (r *record) seen() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.events, "; ")
}

type testMilter struct {
	sc     *script
	rec    *record
	chunks int
}

func respond(r gomilter.Response) (gomilter.Response, error) {
	if r == nil {
		return gomilter.RespContinue, nil
	}
	return r, nil
}

func (t *testMilter) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	t.rec.add("connect", m, fmt.Sprintf("%s %s %d %v", host, family, port, addr))
	return respond(t.sc.connect)
}

func (t *testMilter) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	t.rec.add("helo", m, name)
	return respond(t.sc.helo)
}

func (t *testMilter) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	t.rec.add("mail", m, from)
	return respond(t.sc.mail)
}

func (t *testMilter) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	t.rec.add("rcpt", m, rcpt)
	return respond(t.sc.rcpt)
}

func (t *testMilter) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	t.rec.add("header", m, name)
	t.rec.mu.Lock()
	t.rec.hdrs = append(t.rec.hdrs, [2]string{name, value})
	t.rec.mu.Unlock()
	return respond(t.sc.header)
}

func (t *testMilter) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	t.rec.add("eoh", m, "")
	return respond(t.sc.eoh)
}

func (t *testMilter) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	t.chunks++
	if t.chunks == t.sc.chunkErr {
		return nil, errors.New("milter gives up")
	}
	t.rec.mu.Lock()
	t.rec.chunks = append(t.rec.chunks, len(chunk))
	t.rec.body.Write(chunk)
	t.rec.mu.Unlock()
	if t.chunks == 1 {
		t.rec.add("body", m, "")
	}
	return respond(t.sc.chunk)
}

func (t *testMilter) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	t.rec.add("eom", m, "")
	if t.sc.eom == nil {
		return gomilter.RespContinue, nil
	}
	return t.sc.eom(m)
}

func (t *testMilter) Abort(m *gomilter.Modifier) error {
	t.rec.add("abort", m, "")
	return nil
}

// startMilter serves sc with go-milter's server on a unix socket.
func startMilter(t *testing.T, sc *script) (string, *record) {
	t.Helper()
	rec := &record{}
	path := filepath.Join(t.TempDir(), "milter.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &testMilter{sc: sc, rec: rec} },
		Actions: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptChangeBody |
			gomilter.OptAddRcpt | gomilter.OptRemoveRcpt | gomilter.OptQuarantine,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return path, rec
}

func dial(t *testing.T, network, path string, timeout time.Duration) *Session {
	t.Helper()
	c := New(Options{Network: network, Address: path, Timeout: timeout, Hostname: "mx.example.org"})
	s, err := c.Session(context.Background())
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

const testMessage = "Received: from client.example.net (client.example.net [192.0.2.1])\r\n" +
	"\tby mx.example.org with ESMTP id 0a1b2c3d;\r\n" +
	"\tMon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"From: A <a@example.org>\r\n" +
	"To: b@example.net\r\n" +
	"X-A: 1\r\n" +
	"X-A: 2\r\n" +
	"Subject: hello\r\n" +
	"\r\n" +
	"body line\r\n" +
	".dot line\r\n"

// transaction runs connect to the end of message; it stops at the first
// phase whose verdict is not continue and reports that phase.
func transaction(t *testing.T, s *Session, msg string, out io.Writer) (string, Verdict, MessageResult, error) {
	t.Helper()
	steps := []struct {
		phase string
		run   func() (Verdict, error)
	}{
		{"connect", func() (Verdict, error) {
			return s.Connect("client.example.net", "192.0.2.1", 2525, FamilyInet)
		}},
		{"helo", func() (Verdict, error) {
			return s.Helo("client.example.net", &TLS{Version: "TLSv1.3", Cipher: "TLS_AES_128_GCM_SHA256", CipherBits: 128})
		}},
		{"mail", func() (Verdict, error) {
			return s.Mail("a@example.org", []string{"BODY=8BITMIME"}, MailMacros{QueueID: "0a1b2c3d", AuthType: "PLAIN", AuthUser: "alice"})
		}},
		{"rcpt", func() (Verdict, error) { return s.Rcpt("b@example.net", nil) }},
		{"data", s.Data},
	}
	for _, st := range steps {
		v, err := st.run()
		if err != nil || v.Action != Continue {
			return st.phase, v, MessageResult{}, err
		}
	}
	res, err := s.Message(strings.NewReader(msg), out)
	return "message", res.Verdict, res, err
}

func TestVerdicts(t *testing.T) {
	custom := gomilter.NewResponseStr('y', "554 5.7.1 Go away")
	multi := gomilter.NewResponseStr('y', "550-5.7.1 line one\r\n550 5.7.1 line two")
	reject := Verdict{Action: Reject, Code: 550, Enhanced: "5.7.1", Text: "Command rejected"}
	tempfail := Verdict{Action: Tempfail, Code: 451, Enhanced: "4.7.1", Text: "Try again later"}
	goAway := Verdict{Action: Reply, Code: 554, Enhanced: "5.7.1", Text: "Go away"}
	tests := []struct {
		name  string
		sc    script
		phase string  // where the transaction stops
		want  Verdict // its verdict
		seen  string  // what the milter saw
	}{
		{"all continue", script{}, "message", Verdict{Action: Continue}, ""},
		{"connect reject", script{connect: gomilter.RespReject}, "connect", reject,
			"connect client.example.net tcp4 2525 192.0.2.1"},
		{"connect custom reply", script{connect: custom}, "connect", goAway, ""},
		{"helo tempfail", script{helo: gomilter.RespTempFail}, "helo", tempfail, ""},
		{"helo accept", script{helo: gomilter.RespAccept}, "helo", Verdict{Action: Accept}, ""},
		{"mail discard", script{mail: gomilter.RespDiscard}, "mail", Verdict{Action: Discard}, ""},
		{"mail custom reply", script{mail: custom}, "mail", goAway, ""},
		{"rcpt reject", script{rcpt: gomilter.RespReject}, "rcpt", reject, ""},
		{"rcpt accept", script{rcpt: gomilter.RespAccept}, "rcpt", Verdict{Action: Accept}, ""},
		{"header tempfail", script{header: gomilter.RespTempFail}, "message", tempfail,
			"connect client.example.net tcp4 2525 192.0.2.1; helo client.example.net; mail a@example.org; rcpt b@example.net; header Received; abort"},
		{"eoh reject", script{eoh: gomilter.RespReject}, "message", reject, ""},
		{"body discard", script{chunk: gomilter.RespDiscard}, "message", Verdict{Action: Discard}, ""},
		{"body accept", script{chunk: gomilter.RespAccept}, "message", Verdict{Action: Accept}, ""},
		{"eom accept", script{eom: func(*gomilter.Modifier) (gomilter.Response, error) { return gomilter.RespAccept, nil }},
			"message", Verdict{Action: Accept}, ""},
		{"eom multi-line reply", script{eom: func(*gomilter.Modifier) (gomilter.Response, error) { return multi, nil }},
			"message", Verdict{Action: Reply, Code: 550, Enhanced: "5.7.1", Text: "line one line two"}, ""},
		{"eom tempfail", script{eom: func(*gomilter.Modifier) (gomilter.Response, error) { return gomilter.RespTempFail, nil }},
			"message", tempfail, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, rec := startMilter(t, &tt.sc)
			s := dial(t, "unix", path, 5*time.Second)
			var out bytes.Buffer
			phase, v, res, err := transaction(t, s, testMessage, &out)
			if err != nil {
				t.Fatalf("%s: %v", phase, err)
			}
			if phase != tt.phase || v != tt.want {
				t.Fatalf("stopped at %s with %+v, want %s with %+v", phase, v, tt.phase, tt.want)
			}
			if res.Changed || out.Len() != 0 {
				t.Errorf("changed %v, out %q", res.Changed, out.String())
			}
			// after a final verdict the milter is not asked again
			switch {
			case phase == "connect":
				if v2, err := s.Helo("x", nil); err != nil || v2 != v {
					t.Errorf("helo after %s: %+v %v", phase, v2, err)
				}
			case phase != "message" && (v.Action == Accept || v.Action == Discard):
				if r, err := s.Message(strings.NewReader(testMessage), &out); err != nil || r.Verdict != v {
					t.Errorf("message after %s: %+v %v", phase, r.Verdict, err)
				}
			}
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			if tt.seen != "" {
				// the milter's goroutine may still be recording
				time.Sleep(50 * time.Millisecond)
				if got := rec.seen(); got != tt.seen {
					t.Errorf("milter saw %q\nwant %q", got, tt.seen)
				}
			}
		})
	}
}

// A rejected recipient leaves the transaction going; RSET (Abort) ends
// it and the next transaction starts afresh.
func TestRcptRejectAndAbort(t *testing.T) {
	rcptReject := gomilter.NewResponseStr('y', "550 5.1.1 No such user")
	path, rec := startMilter(t, &script{rcpt: rcptReject})
	s := dial(t, "unix", path, 5*time.Second)
	must := func(v Verdict, err error) Verdict {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	must(s.Connect("", "", 0, FamilyUnknown))
	must(s.Helo("localhost", nil))
	must(s.Mail("", nil, MailMacros{}))
	if v := must(s.Rcpt("nobody@example.org", nil)); v.Code != 550 || v.Enhanced != "5.1.1" || v.Text != "No such user" {
		t.Fatalf("rcpt: %+v", v)
	}
	if v := must(s.Rcpt("other@example.org", nil)); v.Code != 550 {
		t.Fatalf("second rcpt: %+v", v)
	}
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	if v := must(s.Mail("a@example.org", nil, MailMacros{})); v.Action != Continue {
		t.Fatalf("mail after abort: %+v", v)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	want := "connect localhost unknown 0 <nil>; helo localhost; mail; rcpt nobody@example.org; rcpt other@example.org; abort; mail a@example.org"
	if got := rec.seen(); !strings.HasPrefix(got, want) {
		t.Errorf("milter saw %q\nwant %q", got, want)
	}
}

func TestMacros(t *testing.T) {
	path, rec := startMilter(t, &script{})
	s := dial(t, "unix", path, 5*time.Second)
	if _, _, _, err := transaction(t, s, testMessage, io.Discard); err != nil {
		t.Fatal(err)
	}
	s.Close()
	time.Sleep(50 * time.Millisecond)
	want := map[string]map[string]string{
		"connect": {"j": "mx.example.org", "{daemon_name}": "mx.example.org",
			"_": "client.example.net [192.0.2.1]", "{client_addr}": "192.0.2.1",
			"{client_name}": "client.example.net", "{client_port}": "2525"},
		"helo": {"{tls_version}": "TLSv1.3", "{cipher}": "TLS_AES_128_GCM_SHA256", "{cipher_bits}": "128"},
		"mail": {"{mail_addr}": "a@example.org", "i": "0a1b2c3d", "{auth_type}": "PLAIN", "{auth_authen}": "alice"},
		"rcpt": {"{rcpt_addr}": "b@example.net"},
		"eoh":  {"i": "0a1b2c3d"},
		"eom":  {"i": "0a1b2c3d"},
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for phase, w := range want {
		got := rec.macros[phase]
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s macros: %v\nwant %v", phase, got, w)
		}
	}
	// header values without the leading space, folded with LF
	if rec.hdrs[0][1] != "from client.example.net (client.example.net [192.0.2.1])\n\tby mx.example.org with ESMTP id 0a1b2c3d;\n\tMon, 1 Jan 2024 00:00:00 +0000" ||
		rec.hdrs[1] != [2]string{"From", "A <a@example.org>"} || len(rec.hdrs) != 6 {
		t.Errorf("headers: %q", rec.hdrs)
	}
	if rec.body.String() != "body line\r\n.dot line\r\n" {
		t.Errorf("body %q", rec.body.String())
	}
}

// eom returns an end of message handler that runs mods, then continues.
func eom(mods ...func(m *gomilter.Modifier) error) func(m *gomilter.Modifier) (gomilter.Response, error) {
	return func(m *gomilter.Modifier) (gomilter.Response, error) {
		for _, f := range mods {
			if err := f(m); err != nil {
				return nil, err
			}
		}
		return gomilter.RespContinue, nil
	}
}

func TestModifications(t *testing.T) {
	const (
		received = "Received: from client.example.net (client.example.net [192.0.2.1])\r\n" +
			"\tby mx.example.org with ESMTP id 0a1b2c3d;\r\n" +
			"\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
		from    = "From: A <a@example.org>\r\n"
		to      = "To: b@example.net\r\n"
		xa1     = "X-A: 1\r\n"
		xa2     = "X-A: 2\r\n"
		subject = "Subject: hello\r\n"
		body    = "\r\nbody line\r\n.dot line\r\n"
	)
	add := func(n, v string) func(*gomilter.Modifier) error {
		return func(m *gomilter.Modifier) error { return m.AddHeader(n, v) }
	}
	ins := func(i int, n, v string) func(*gomilter.Modifier) error {
		return func(m *gomilter.Modifier) error { return m.InsertHeader(i, n, v) }
	}
	chg := func(i int, n, v string) func(*gomilter.Modifier) error {
		return func(m *gomilter.Modifier) error { return m.ChangeHeader(i, n, v) }
	}
	repl := func(b string) func(*gomilter.Modifier) error {
		return func(m *gomilter.Modifier) error { return m.ReplaceBody([]byte(b)) }
	}
	tests := []struct {
		name    string
		mods    []func(*gomilter.Modifier) error
		want    string // "" if unchanged
		check   func(t *testing.T, r MessageResult)
		wantErr error
	}{
		{name: "none"},
		{name: "add", mods: []func(*gomilter.Modifier) error{add("X-Added", "yes"), add("X-A", "3")},
			want: received + from + to + xa1 + xa2 + subject + "X-Added: yes\r\nX-A: 3\r\n" + body},
		{name: "add folded", mods: []func(*gomilter.Modifier) error{add("X-Folded", "one\n\ttwo\r\n three")},
			want: received + from + to + xa1 + xa2 + subject + "X-Folded: one\r\n\ttwo\r\n three\r\n" + body},
		{name: "insert at top, middle, past the end",
			mods: []func(*gomilter.Modifier) error{ins(0, "X-Top", "t"), ins(2, "X-Mid", "m"), ins(100, "X-End", "e")},
			want: "X-Top: t\r\n" + received + "X-Mid: m\r\n" + from + to + xa1 + xa2 + subject + "X-End: e\r\n" + body},
		{name: "change second", mods: []func(*gomilter.Modifier) error{chg(2, "x-a", "two")},
			want: received + from + to + xa1 + "X-A: two\r\n" + subject + body},
		{name: "change index 0 is the first", mods: []func(*gomilter.Modifier) error{chg(0, "X-A", "one")},
			want: received + from + to + "X-A: one\r\n" + xa2 + subject + body},
		{name: "change folded field", mods: []func(*gomilter.Modifier) error{chg(1, "Received", "short")},
			want: "Received: short\r\n" + from + to + xa1 + xa2 + subject + body},
		{name: "change missing adds", mods: []func(*gomilter.Modifier) error{chg(1, "X-New", "n")},
			want: received + from + to + xa1 + xa2 + subject + "X-New: n\r\n" + body},
		{name: "delete missing is a no-op", mods: []func(*gomilter.Modifier) error{chg(3, "X-A", "")},
			want: received + from + to + xa1 + xa2 + subject + body},
		{name: "delete in increasing order", mods: []func(*gomilter.Modifier) error{chg(1, "X-A", ""), chg(2, "X-A", "")},
			want: received + from + to + subject + body},
		{name: "delete in decreasing order", mods: []func(*gomilter.Modifier) error{chg(2, "X-A", ""), chg(1, "X-A", "")},
			want: received + from + to + subject + body},
		{name: "insert counts visible fields", mods: []func(*gomilter.Modifier) error{chg(1, "Received", ""), ins(1, "X-I", "i")},
			want: from + "X-I: i\r\n" + to + xa1 + xa2 + subject + body},
		{name: "replace body", mods: []func(*gomilter.Modifier) error{repl("new\nbody\n"), repl("more\r\n\r\nlast")},
			want: received + from + to + xa1 + xa2 + subject + "\r\nnew\r\nbody\r\nmore\r\n\r\nlast\r\n"},
		{name: "replace body with nothing", mods: []func(*gomilter.Modifier) error{repl("")},
			want: received + from + to + xa1 + xa2 + subject + "\r\n"},
		{name: "quarantine", mods: []func(*gomilter.Modifier) error{func(m *gomilter.Modifier) error { return m.Quarantine("virus found") }},
			check: func(t *testing.T, r MessageResult) {
				if r.Quarantine != "virus found" {
					t.Errorf("quarantine %q", r.Quarantine)
				}
			}},
		{name: "envelope", mods: []func(*gomilter.Modifier) error{
			func(m *gomilter.Modifier) error { return m.ChangeFrom("<bounce@example.org>") },
			func(m *gomilter.Modifier) error { return m.AddRecipient("archive@example.org") },
			func(m *gomilter.Modifier) error { return m.DeleteRecipient("b@example.net") },
		},
			check: func(t *testing.T, r MessageResult) {
				if r.NewSender == nil || *r.NewSender != "bounce@example.org" || len(r.NewSenderArgs) != 0 ||
					fmt.Sprint(r.AddRcpts, r.DelRcpts) != "[archive@example.org] [b@example.net]" {
					t.Errorf("envelope %v %v %v", r.NewSender, r.AddRcpts, r.DelRcpts)
				}
			}},
		{name: "bare LF in value", mods: []func(*gomilter.Modifier) error{add("X-Bad", "a\nb")}, wantErr: ErrMalformed},
		{name: "trailing LF in value", mods: []func(*gomilter.Modifier) error{add("X-Bad", "a\n")}, wantErr: ErrMalformed},
		{name: "smuggled header end", mods: []func(*gomilter.Modifier) error{chg(1, "Subject", "x\n\nInjected: yes")}, wantErr: ErrMalformed},
		{name: "whitespace-only folded line", mods: []func(*gomilter.Modifier) error{add("X-Bad", "a\n \n b")}, wantErr: ErrMalformed},
		{name: "bare CR in value", mods: []func(*gomilter.Modifier) error{ins(0, "X-Bad", "a\rb")}, wantErr: ErrMalformed},
		{name: "space in name", mods: []func(*gomilter.Modifier) error{add("X Bad", "a")}, wantErr: ErrMalformed},
		{name: "colon in name", mods: []func(*gomilter.Modifier) error{add("X-Bad:", "a")}, wantErr: ErrMalformed},
		{name: "CRLF in recipient", mods: []func(*gomilter.Modifier) error{
			func(m *gomilter.Modifier) error { return m.AddRecipient("a@example.org>\r\nRCPT TO:<b@example.org") }},
			wantErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, _ := startMilter(t, &script{eom: eom(tt.mods...)})
			s := dial(t, "unix", path, 5*time.Second)
			var out bytes.Buffer
			_, v, res, err := transaction(t, s, testMessage, &out)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err %v, want %v", err, tt.wantErr)
				}
				if out.Len() != 0 {
					t.Fatalf("wrote %q", out.String())
				}
				// the session goes on: a second transaction works
				if err := s.Abort(); err != nil {
					t.Fatal(err)
				}
				if v, err := s.Mail("a@example.org", nil, MailMacros{}); err != nil || v.Action != Continue {
					t.Fatalf("mail after malformed: %+v %v", v, err)
				}
				return
			}
			if err != nil || !v.Proceed() {
				t.Fatalf("verdict %+v, err %v", v, err)
			}
			if res.Changed != (tt.want != "") || out.String() != tt.want {
				t.Errorf("changed %v, got\n%q\nwant\n%q", res.Changed, out.String(), tt.want)
			}
			if tt.check != nil {
				tt.check(t, res)
			}
		})
	}
}

// limitedReader is a spool file that records the largest read asked of
// it: the body must be streamed, never read whole.
type limitedReader struct {
	io.ReadSeeker
	max int
}

func (r *limitedReader) Read(p []byte) (int, error) {
	r.max = max(r.max, len(p))
	return r.ReadSeeker.Read(p)
}

func TestLargeBodyStreamed(t *testing.T) {
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nSubject: big\r\n\r\n")
	for i := 0; b.Len() < 5<<20; i++ {
		fmt.Fprintf(&b, "line %d of a large message, with some padding to make it longer.\r\n", i)
	}
	msg := b.String()
	bodyStart := strings.Index(msg, "\r\n\r\n") + 4

	path, rec := startMilter(t, &script{eom: eom(func(m *gomilter.Modifier) error { return m.AddHeader("X-Scanned", "yes") })})
	s := dial(t, "unix", path, 10*time.Second)
	for _, step := range []func() (Verdict, error){
		func() (Verdict, error) { return s.Connect("", "", 0, FamilyUnknown) },
		func() (Verdict, error) { return s.Mail("a@example.org", nil, MailMacros{QueueID: "0a1b2c3d"}) },
		func() (Verdict, error) { return s.Rcpt("b@example.net", nil) },
	} {
		if _, err := step(); err != nil {
			t.Fatal(err)
		}
	}
	in := &limitedReader{ReadSeeker: strings.NewReader(msg)}
	var out bytes.Buffer
	res, err := s.Message(in, &out)
	if err != nil || !res.Verdict.Proceed() || !res.Changed {
		t.Fatalf("%+v %v", res, err)
	}
	want := msg[:bodyStart-2] + "X-Scanned: yes\r\n" + msg[bodyStart-2:]
	if out.String() != want {
		t.Fatalf("output differs from the expected message (%d bytes, want %d)", out.Len(), len(want))
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.body.String() != msg[bodyStart:] {
		t.Errorf("milter got a body of %d bytes, want %d", rec.body.Len(), len(msg)-bodyStart)
	}
	wantChunks := (len(msg) - bodyStart + chunkSize - 1) / chunkSize
	if len(rec.chunks) != wantChunks {
		t.Errorf("%d chunks, want %d", len(rec.chunks), wantChunks)
	}
	for _, n := range rec.chunks {
		if n > 64<<10 {
			t.Fatalf("chunk of %d bytes", n)
		}
	}
	if in.max > 64<<10 {
		t.Errorf("read %d bytes at once from the spool", in.max)
	}
}

func TestHangingMilter(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	path, _ := startMilter(t, &script{eom: func(*gomilter.Modifier) (gomilter.Response, error) {
		<-release
		return gomilter.RespContinue, nil
	}})
	const timeout = 300 * time.Millisecond
	s := dial(t, "unix", path, timeout)
	start := time.Now()
	_, _, _, err := transaction(t, s, testMessage, io.Discard)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > timeout+time.Second {
		t.Errorf("gave up after %v, timeout %v", d, timeout)
	}
	// the session is dead: later calls fail at once
	if err := s.Abort(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("abort: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

func TestMilterClosesMidMessage(t *testing.T) {
	path, _ := startMilter(t, &script{chunkErr: 3})
	s := dial(t, "unix", path, 5*time.Second)
	msg := "Subject: x\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 1<<16)
	_, _, _, err := transaction(t, s, msg, io.Discard)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err %v", err)
	}
	if _, err := s.Mail("a@example.org", nil, MailMacros{}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("mail after failure: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	for _, o := range []Options{
		{Network: "unix", Address: filepath.Join(t.TempDir(), "none.sock")},
		{Network: "tcp", Address: "127.0.0.1:1"},
	} {
		o.Timeout = time.Second
		if _, err := New(o).Session(context.Background()); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s %s: %v", o.Network, o.Address, err)
		}
	}
	// a milter that accepts but never negotiates: the timeout, or ctx
	path := filepath.Join(t.TempDir(), "mute.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	start := time.Now()
	if _, err := New(Options{Network: "unix", Address: path, Timeout: 200 * time.Millisecond}).Session(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("mute milter: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := New(Options{Network: "unix", Address: path, Timeout: time.Hour}).Session(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled negotiation: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestReplyText(t *testing.T) {
	tests := []struct {
		code           int
		text           string
		enhanced, line string
	}{
		{550, "5.7.1 Blocked", "5.7.1", "Blocked"},
		{451, "Greylisted, retry later", "4.7.1", "Greylisted, retry later"},
		{550, "4.7.1 wrong class", "5.7.1", "4.7.1 wrong class"},
		{550, "5.7.1 one\r\n550-5.7.1 two\r\n550 5.7.1 three", "5.7.1", "one two three"},
		{554, "", "5.7.1", "Command rejected"},
		{421, "4.3.2 bye\x01now", "4.3.2", "bye now"},
	}
	for _, tt := range tests {
		e, l := replyText(tt.code, tt.text)
		if e != tt.enhanced || l != tt.line {
			t.Errorf("%d %q: %q %q, want %q %q", tt.code, tt.text, e, l, tt.enhanced, tt.line)
		}
	}
}

func TestReadHeader(t *testing.T) {
	tests := []struct {
		name, msg string
		fields    []string
		body      string
	}{
		{"usual", "A: 1\r\nB: 2\r\n\tfolded\r\n\r\nbody\r\n", []string{"A", "B"}, "body\r\n"},
		{"no body", "A: 1\r\n", []string{"A"}, ""},
		{"no final line end", "A: 1", []string{"A"}, ""},
		{"no empty line", "A: 1\r\nnot a field\r\nmore\r\n", []string{"A"}, "not a field\r\nmore\r\n"},
		{"body only", "\r\nbody\r\n", nil, "body\r\n"},
		{"continuation first", " x\r\nA: 1\r\n", nil, " x\r\nA: 1\r\n"},
		{"name with space", "Bad Name: 1\r\n", nil, "Bad Name: 1\r\n"},
		{"long body line", "A: 1\r\n" + strings.Repeat("x", 70000) + "\r\n", []string{"A"}, strings.Repeat("x", 70000) + "\r\n"},
	}
	for _, tt := range tests {
		r := strings.NewReader(tt.msg)
		h, err := readHeader(r)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var names []string
		for _, f := range h.fields {
			names = append(names, f.name)
		}
		if fmt.Sprint(names) != fmt.Sprint(tt.fields) || tt.msg[h.bodyOffset:] != tt.body {
			t.Errorf("%s: fields %v body %q", tt.name, names, tt.msg[h.bodyOffset:])
		}
	}
	if _, err := readHeader(strings.NewReader("A: " + strings.Repeat("x", 70000) + "\r\n")); !errors.Is(err, ErrMalformed) {
		t.Errorf("long field: %v", err)
	}
	long := "A: 1\r\n" + strings.Repeat(" folded continuation line of some length\r\n", 2000)
	if _, err := readHeader(strings.NewReader(long)); !errors.Is(err, ErrMalformed) {
		t.Errorf("long folded field: %v", err)
	}
}
