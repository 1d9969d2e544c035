package procfilter

import (
	"bufio"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// fake is the filter end of a pipe, driven by the test.
type fake struct {
	t      *testing.T
	in     *bufio.Reader
	wmu    sync.Mutex
	out    io.Writer
	closer func()
	config chan []string // the config lines, once config|ready is read
	lines  chan string   // what smtpd sent after the handshake, without handler
}

// send writes lines to the Conn; errors are ignored since some tests
// break the Conn on purpose.
func (f *fake) send(lines ...string) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	for _, l := range lines {
		f.out.Write([]byte(l + "\n"))
	}
}

// next is the next line smtpd sent, for tests without handler.
func (f *fake) next() string {
	f.t.Helper()
	select {
	case l, ok := <-f.lines:
		if !ok {
			f.t.Fatal("filter input closed")
		}
		return l
	case <-time.After(5 * time.Second):
		f.t.Fatal("nothing sent to the filter")
	}
	return ""
}

// nothing checks that smtpd sent nothing for a moment.
func (f *fake) nothing() {
	f.t.Helper()
	select {
	case l := <-f.lines:
		f.t.Fatalf("unexpected line to the filter: %q", l)
	case <-time.After(50 * time.Millisecond):
	}
}

// fieldsOf splits a filter request into its fields: [filter 0.7 time
// smtp-in phase sid token params].
func fieldsOf(line string) []string { return strings.SplitN(line, "|", 8) }

// answer makes the filter-result for a request line.
func answer(req, decision string) string {
	f := fieldsOf(req)
	return "filter-result|" + f[5] + "|" + f[6] + "|" + decision
}

// netPipe gives a synchronous pipe: a write waits for the reader, the
// harshest test for deadlocks.
func netPipe() (ours io.ReadWriteCloser, in io.Reader, out io.Writer, closer func()) {
	a, b := net.Pipe()
	return a, b, b, func() { b.Close() }
}

// osPipes gives two kernel pipes, as exec.Cmd would.
type pipeRW struct {
	io.Reader
	io.Writer
	closers []io.Closer
}

func (p pipeRW) Close() error {
	for _, c := range p.closers {
		c.Close()
	}
	return nil
}

func osPipes(t *testing.T) (ours io.ReadWriteCloser, in io.Reader, out io.Writer, closer func()) {
	r1, w1, err := os.Pipe() // filter -> smtpd
	if err != nil {
		t.Fatal(err)
	}
	r2, w2, err := os.Pipe() // smtpd -> filter
	if err != nil {
		t.Fatal(err)
	}
	return pipeRW{r1, w2, []io.Closer{r1, w2}}, r2, w1, func() { r2.Close(); w1.Close() }
}

func testOptions() Options {
	return Options{
		Name:           "test",
		SMTPDVersion:   "7.8.0",
		SessionTimeout: 300 * time.Second,
		Admd:           "mx.example.org",
		Timeout:        5 * time.Second,
	}
}

// startFake starts a Conn against a fake filter that registers regs
// then ready (unless regs ends with something else) and hands each line
// it receives to handler, or to f.lines without one.
func startFake(t *testing.T, o Options, regs []string, handler func(f *fake, line string)) (*Conn, *fake, error) {
	t.Helper()
	ours, in, out, closer := netPipe()
	return startFakeOn(t, o, regs, handler, ours, in, out, closer)
}

func startFakeOn(t *testing.T, o Options, regs []string, handler func(f *fake, line string),
	ours io.ReadWriteCloser, in io.Reader, out io.Writer, closer func()) (*Conn, *fake, error) {
	t.Helper()
	f := &fake{
		t:      t,
		in:     bufio.NewReaderSize(in, 1<<20),
		out:    out,
		closer: closer,
		config: make(chan []string, 1),
		lines:  make(chan string, 1024),
	}
	go func() {
		defer close(f.lines)
		var config []string
		for {
			l, err := f.in.ReadString('\n')
			if err != nil {
				return
			}
			config = append(config, strings.TrimSuffix(l, "\n"))
			if l == "config|ready\n" {
				break
			}
		}
		f.config <- config
		f.send(regs...)
		for {
			l, err := f.in.ReadString('\n')
			if err != nil {
				return
			}
			l = strings.TrimSuffix(l, "\n")
			if handler != nil {
				handler(f, l)
			} else {
				f.lines <- l
			}
		}
	}()
	c, err := Start(ours, o)
	t.Cleanup(func() {
		if c != nil {
			c.Close()
		}
		ours.Close()
		closer()
	})
	return c, f, err
}

// mustStart is startFake for tests where the handshake must work.
func mustStart(t *testing.T, regs []string, handler func(f *fake, line string)) (*Conn, *fake) {
	t.Helper()
	c, f, err := startFake(t, testOptions(), append(regs, "register|ready"), handler)
	if err != nil {
		t.Fatal(err)
	}
	return c, f
}

// waitBroken waits for the Conn to break.
func waitBroken(t *testing.T, c *Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Conn not broken")
	}
}
