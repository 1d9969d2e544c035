// Command passfilter is the bench's pass-through filter: it takes part in
// every step of a session and changes nothing, so that what the bench
// measures with it is the cost of the filter protocol on the daemon's
// side (plus the little this program does), not of any filtering.
//
// Usage:
//
//	passfilter -proc          OpenSMTPD's filter protocol 0.7 on stdin and stdout
//	passfilter -milter ADDR   a milter on ADDR, unix:/path or inet:127.0.0.1:PORT
//
// With -proc it registers the phases connect, helo, ehlo, mail-from,
// rcpt-to, data, data-line and commit and a few report events, answers
// proceed to every request and echoes every data line back as it came
// (dot-stuffed, the message ended by "."). It reads and writes through
// buffers, flushing only when its input has nothing more buffered, and
// allocates nothing per line, so that it costs far less than the daemon
// it is put in front of.
//
// With -milter it serves go-milter's server (milter protocol 2), asks
// for no modification actions and skips no step: it receives connect,
// HELO, MAIL, RCPT, every header, the end of headers and the body, and
// answers continue to each and accept at the end of the message.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/signal"
	"strings"
	"syscall"

	milter "github.com/emersion/go-milter"
)

func main() {
	proc := flag.Bool("proc", false, "speak the filter protocol 0.7 on stdin and stdout")
	addr := flag.String("milter", "", "serve a milter on `ADDR` (unix:/path or inet:host:port)")
	flag.Parse()
	var err error
	switch {
	case *proc && *addr == "":
		err = runProc(os.Stdin, os.Stdout)
	case !*proc && *addr != "":
		err = runMilter(*addr)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "passfilter:", err)
		os.Exit(1)
	}
}

// The registrations of the filter process: every phase of a plain
// session (no STARTTLS or AUTH in the bench), data-line included, and
// the reports a typical filter follows.
const registrations = "register|filter|smtp-in|connect\n" +
	"register|filter|smtp-in|helo\n" +
	"register|filter|smtp-in|ehlo\n" +
	"register|filter|smtp-in|mail-from\n" +
	"register|filter|smtp-in|rcpt-to\n" +
	"register|filter|smtp-in|data\n" +
	"register|filter|smtp-in|data-line\n" +
	"register|filter|smtp-in|commit\n" +
	"register|report|smtp-in|link-connect\n" +
	"register|report|smtp-in|link-disconnect\n" +
	"register|report|smtp-in|tx-begin\n" +
	"register|report|smtp-in|tx-commit\n" +
	"register|report|smtp-in|tx-rollback\n" +
	"register|ready\n"

// maxLine is more than the longest line the daemon sends: a 64 KiB data
// line and the fields in front of it. ReadSlice then always returns a
// whole line, without copying it.
const maxLine = 128 << 10

// runProc is the filter process: the handshake, then one answer per
// request until the daemon closes its end.
func runProc(in io.Reader, out io.Writer) error {
	r := bufio.NewReaderSize(in, maxLine)
	w := bufio.NewWriterSize(out, 64<<10)
	// the configuration lines: nothing in them matters here
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		if string(bytes.TrimSuffix(line, []byte("\n"))) == "config|ready" {
			break
		}
	}
	w.WriteString(registrations)
	if err := w.Flush(); err != nil {
		return err
	}
	for {
		line, err := r.ReadSlice('\n')
		if err == io.EOF && len(line) == 0 {
			return w.Flush() // the daemon is done with us
		}
		if err != nil && err != io.EOF {
			return err
		}
		if err := answer(w, bytes.TrimSuffix(line, []byte("\n"))); err != nil {
			return err
		}
		// flush only when the next read may block: the daemon streams
		// data lines and pipelines sessions, so answers go out in
		// batches, as a real filter's would under load
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

// answer writes the answer to one line from the daemon: none to a
// report, the line itself to a data-line request, proceed to the rest.
//
//	filter|0.7|<time>|smtp-in|<phase>|<sid>|<token>|<params>
func answer(w *bufio.Writer, line []byte) error {
	rest, ok := bytes.CutPrefix(line, []byte("filter|"))
	if !ok {
		return nil // a report
	}
	var f [6][]byte // version, time, subsystem, phase, sid, token
	for i := range f {
		var found bool
		if f[i], rest, found = bytes.Cut(rest, []byte("|")); !found {
			return fmt.Errorf("malformed request %q", line)
		}
	}
	phase, sid, token := f[3], f[4], f[5]
	if string(phase) == "data-line" {
		// the line (or the final ".") is dot-stuffed already, and
		// comes back dot-stuffed: echo it as is
		w.WriteString("filter-dataline|")
		w.Write(sid)
		w.WriteByte('|')
		w.Write(token)
		w.WriteByte('|')
		w.Write(rest)
		return w.WriteByte('\n')
	}
	w.WriteString("filter-result|")
	w.Write(sid)
	w.WriteByte('|')
	w.Write(token)
	_, err := w.WriteString("|proceed\n")
	return err
}

// runMilter serves the pass-through milter on addr until SIGTERM or
// SIGINT.
func runMilter(addr string) error {
	network, address, ok := strings.Cut(addr, ":")
	switch {
	case !ok:
		return fmt.Errorf("%q is not unix:/path or inet:host:port", addr)
	case network == "inet":
		network = "tcp"
	case network != "unix":
		return fmt.Errorf("%q: unix: or inet: only", addr)
	}
	if network == "unix" {
		os.Remove(address) // a socket left by an earlier run
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return err
	}
	if network == "unix" {
		// whoever the daemon dials as
		os.Chmod(address, 0o666)
	}
	// no actions: we change nothing; no protocol flags: we skip no
	// step, so that the daemon pays for the whole conversation
	srv := &milter.Server{NewMilter: func() milter.Milter { return passMilter{} }}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, milter.ErrServerClosed) {
		return err
	}
	if network == "unix" {
		os.Remove(address)
	}
	return nil
}

// passMilter continues at every step and accepts every message.
type passMilter struct{}

func (passMilter) Connect(string, string, uint16, net.IP, *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (passMilter) Helo(string, *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (passMilter) MailFrom(string, *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (passMilter) RcptTo(string, *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (passMilter) Header(string, string, *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (passMilter) Headers(textproto.MIMEHeader, *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (passMilter) BodyChunk([]byte, *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (passMilter) Body(*milter.Modifier) (milter.Response, error) {
	return milter.RespAccept, nil
}

func (passMilter) Abort(*milter.Modifier) error { return nil }
