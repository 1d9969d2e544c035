package mta

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// chunkConn is a connection whose reads return data in pieces of at
// most size bytes; writes go nowhere.
type chunkConn struct {
	net.Conn
	data []byte
	size int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.size)], c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *chunkConn) Write(p []byte) (int, error) { return len(p), nil }

func TestGreetingName(t *testing.T) {
	cases := map[string]string{
		"220 mx.example.org ESMTP ready\r\n":         "mx.example.org",
		"220-mx.example.org first\r\n220 second\r\n": "mx.example.org",
		"220 mx.example.org\n":                       "mx.example.org",
		"220 mx.example.org\r\n":                     "mx.example.org",
		"220\r\n":                                    "",
		"220 " + strings.Repeat("x", 1000) + "\r\n":  strings.Repeat("x", maxGreeting-4),
		"220 unfinished":                             "",
	}
	for in, want := range cases {
		for _, size := range []int{1, 3, 4096} {
			w := &wire{Conn: &chunkConn{data: []byte(in), size: size}}
			io.Copy(io.Discard, w)
			if got := w.greetingName(); got != want {
				t.Errorf("%.30q in pieces of %d: %q, want %q", in, size, got, want)
			}
		}
	}
}

// TestWireBoundsReply: a reply without end is cut at maxReply, and a
// write starts the count again.
func TestWireBoundsReply(t *testing.T) {
	w := &wire{Conn: &chunkConn{data: bytes.Repeat([]byte("250-x\r\n"), maxReply), size: 4096}}
	n, err := io.Copy(io.Discard, w)
	if !errors.Is(err, errReplyTooLong) || n != maxReply {
		t.Errorf("read %d bytes, %v", n, err)
	}
	w.Write([]byte("NOOP\r\n"))
	if n, err := w.Read(make([]byte, 10)); n != 10 || err != nil {
		t.Errorf("after a write: %d %v", n, err)
	}
}

// TestWirePendingAndHook: pending bytes come first, and the hook runs
// once, before the next read.
func TestWirePendingAndHook(t *testing.T) {
	w := &wire{Conn: &chunkConn{data: []byte("250 ok\r\n"), size: 100}, pending: []byte(tlsGreeting), greeted: true}
	calls := 0
	w.beforeRead = func() { calls++ }
	b, _ := io.ReadAll(w)
	if string(b) != tlsGreeting+"250 ok\r\n" || calls != 1 {
		t.Errorf("read %q, hook called %d times", b, calls)
	}
}

// FuzzGreeting feeds a server's first bytes through the wire in pieces:
// whatever they are, the greeting kept is the first line, bounded, and
// the name has no space or line end.
func FuzzGreeting(f *testing.F) {
	f.Add([]byte("220 mx.example.org ESMTP\r\n"), uint8(1))
	f.Add([]byte("220-a\r\n220 b\r\n"), uint8(3))
	f.Add([]byte("554 no\n"), uint8(200))
	f.Fuzz(func(t *testing.T, data []byte, size uint8) {
		w := &wire{Conn: &chunkConn{data: data, size: int(size) + 1}}
		n, _ := io.Copy(io.Discard, w)
		if n > maxReply || len(w.greeting) > maxGreeting {
			t.Fatalf("read %d, kept %d", n, len(w.greeting))
		}
		first, _, complete := bytes.Cut(data[:min(len(data), maxReply)], []byte("\n"))
		if complete != w.greeted || !bytes.HasPrefix(first, w.greeting) {
			t.Fatalf("kept %q (greeted %v) of %q", w.greeting, w.greeted, data)
		}
		if name := w.greetingName(); strings.ContainsAny(name, " \r\n") {
			t.Fatalf("name %q", name)
		}
	})
}

// recordConn is a connection that keeps what is written to it.
type recordConn struct {
	net.Conn
	out *bytes.Buffer
}

func (c recordConn) Write(p []byte) (int, error)        { return c.out.Write(p) }
func (c recordConn) SetWriteDeadline(t time.Time) error { return nil }

// sendBody puts on the wire what go-smtp's DotWriter would: the same
// dot-stuffing, the same line ends, the same end of data, whatever the
// body's line ends and wherever a block boundary falls.
func TestSendBodyAsDotWriter(t *testing.T) {
	long := strings.Repeat("x", bodyBlock-1)
	bodies := map[string]string{
		"empty":             "",
		"plain":             "Subject: a\r\n\r\nbody\r\n",
		"dots":              ".\r\n..\r\n.leading\r\nmid.dle\r\n.",
		"bare LF":           "a\nb\n.c\n",
		"bare CR":           "a\rb\r\n\r",
		"no final line end": "Subject: a\r\n\r\nlast",
		"CR at a boundary":  long + "\r\n.after\r\n",
		"CR then no LF":     long + "\rx\r\n",
		"CR then a dot":     long + "\r.x\r\n",
		"dot at a boundary": strings.Repeat("y", bodyBlock) + "\r\n.z\r\n",
		"long lines":        strings.Repeat(long+"abc\r\n", 3) + "." + long,
	}
	for name, body := range bodies {
		var want bytes.Buffer
		dw := textproto.NewWriter(bufio.NewWriter(&want)).DotWriter()
		io.WriteString(dw, body)
		dw.Close()

		var got bytes.Buffer
		c := &client{w: &wire{Conn: recordConn{out: &got}}}
		dc := textproto.NewWriter(bufio.NewWriter(&got)).DotWriter()
		if err := c.sendBody(dc, strings.NewReader(body)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		dc.Close()
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("%s: got %q...\nwant %q...", name, tail(got.Bytes()), tail(want.Bytes()))
		}
	}
	// where it differs from the DotWriter: a CR before a CRLF stays one
	var got bytes.Buffer
	c := &client{w: &wire{Conn: recordConn{out: &got}}}
	dc := textproto.NewWriter(bufio.NewWriter(&got)).DotWriter()
	if err := c.sendBody(dc, strings.NewReader("a\r\r\n.b\r\r")); err != nil {
		t.Fatal(err)
	}
	dc.Close()
	if want := "a\r\r\n..b\r\r\n.\r\n"; got.String() != want {
		t.Errorf("CR before CRLF: got %q, want %q", got.String(), want)
	}
}

func tail(b []byte) []byte { return b[max(0, len(b)-40):] }

// BenchmarkSendBody: a 100 KB message through sendBody and, for
// comparison, through go-smtp's DotWriter as mta once wrote it.
func BenchmarkSendBody(b *testing.B) {
	body := strings.Repeat(strings.Repeat("x", 76)+"\r\n", 100<<10/78)
	b.Run("sendBody", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for range b.N {
			var out bytes.Buffer
			c := &client{w: &wire{Conn: recordConn{out: &out}}}
			dc := textproto.NewWriter(bufio.NewWriter(&out)).DotWriter()
			if err := c.sendBody(dc, strings.NewReader(body)); err != nil {
				b.Fatal(err)
			}
			dc.Close()
		}
	})
	b.Run("DotWriter", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for range b.N {
			var out bytes.Buffer
			dc := textproto.NewWriter(bufio.NewWriter(&out)).DotWriter()
			io.Copy(dc, strings.NewReader(body))
			dc.Close()
		}
	})
}
