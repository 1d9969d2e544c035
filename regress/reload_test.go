package regress

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"smtpd/internal/testcert"
)

// heldSession is an SMTP session driven step by step that fails the
// test on an unexpected reply; a test can hold it at one step while the
// daemon reloads or stops.
type heldSession struct {
	t *testing.T
	// raw is the TCP connection, conn the transport over it (TLS after
	// STARTTLS)
	raw, conn net.Conn
	r         *bufio.Reader
}

// holdSession connects to addr and reads the greeting.
func holdSession(t *testing.T, addr string) *heldSession {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	s := &heldSession{t: t, raw: raw, conn: raw, r: bufio.NewReader(raw)}
	s.expect("220")
	return s
}

// send writes line and CRLF.
func (s *heldSession) send(line string) {
	s.t.Helper()
	s.conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(s.conn, line+"\r\n"); err != nil {
		s.t.Fatalf("send %q: %v", line, err)
	}
}

// expect reads one reply, which must start with code, and returns it.
func (s *heldSession) expect(code string) string {
	s.t.Helper()
	s.conn.SetDeadline(time.Now().Add(20 * time.Second))
	reply, err := readReply(s.r)
	if err != nil || !strings.HasPrefix(reply, code) {
		s.t.Fatalf("got %q (%v), want %s", reply, err, code)
	}
	return reply
}

// cmd sends a command and expects its reply.
func (s *heldSession) cmd(line, code string) string {
	s.t.Helper()
	s.send(line)
	return s.expect(code)
}

// starttls runs STARTTLS, the handshake under conf, and returns the
// certificate the server showed.
func (s *heldSession) starttls(conf *tls.Config) *x509.Certificate {
	s.t.Helper()
	s.cmd("STARTTLS", "220")
	tc := tls.Client(s.raw, conf)
	tc.SetDeadline(time.Now().Add(20 * time.Second))
	if err := tc.Handshake(); err != nil {
		s.t.Fatalf("TLS handshake: %v", err)
	}
	s.conn, s.r = tc, bufio.NewReader(tc)
	return tc.ConnectionState().PeerCertificates[0]
}

// data sends msg, CRLF lines none of which starts with a dot, as the
// message of the open transaction, and expects it taken.
func (s *heldSession) data(msg string) {
	s.t.Helper()
	s.cmd("DATA", "354")
	s.cmd(msg+".", "250")
}

// upToData opens a transaction for sink@example.test and sends DATA.
func (s *heldSession) upToData() {
	s.t.Helper()
	s.cmd("EHLO client.example.net", "250")
	s.cmd("MAIL FROM:<sender@example.net>", "250")
	s.cmd("RCPT TO:<sink@example.test>", "250")
	s.cmd("DATA", "354")
}

// waitLog waits until the daemon logged what; it fails the test after
// timeout.
func waitLog(t *testing.T, d *Daemon, what string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !strings.Contains(d.Log(), what); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after %v:\n%s", what, timeout, d.Log())
		}
	}
}

// reloadConfig is DefaultConfig with a STARTTLS listener whose
// certificate and key are the files certs/mx.example.test.{pem,key}.
var reloadConfig = strings.Replace(DefaultConfig, `listen "mx" { address = "{{ADDR}}" }`, `listen "mx" {
  address = "{{ADDR}}"
  tls     = "starttls"
  cert    = "certs/mx.example.test.pem"
  key     = "certs/mx.example.test.key"
}`, 1)

// TestReloadCertificate: on SIGHUP the parent reads the listeners'
// certificates again and smtp serves the new one to new sessions, while
// a session under TLS already goes on and delivers its message. A
// configuration that no longer loads is reported with its file and line
// and changes nothing: not even the certificate, changed again.
func TestReloadCertificate(t *testing.T) {
	dir, _ := WriteConfig(t, "")
	certs := filepath.Join(dir, "certs")
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	ca := testcert.NewCA(t)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	verified := &tls.Config{ServerName: "mx.example.test", RootCAs: roots}
	first, _, _ := ca.Issue(t, certs, "mx.example.test")
	d := StartWith(t, bin, Options{Config: reloadConfig, Dir: dir})

	s1 := holdSession(t, d.SMTPAddr)
	s1.cmd("EHLO client.example.net", "250")
	if got := s1.starttls(verified); !bytes.Equal(got.Raw, first.Raw) {
		t.Fatalf("session 1 got certificate %x, want the first one %x", got.SerialNumber, first.SerialNumber)
	}
	s1.cmd("EHLO client.example.net", "250")
	s1.cmd("MAIL FROM:<sender@example.net>", "250")
	s1.cmd("RCPT TO:<sink@example.test>", "250")

	second, _, _ := ca.Issue(t, certs, "mx.example.test")
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the test CA issued the same serial twice")
	}
	d.Signal(syscall.SIGHUP)
	waitLog(t, d, "listener mx: certificate reloaded", 5*time.Second)
	waitLog(t, d, "SIGHUP: lookup reads the tables again; reloaded the certificates of listeners mx; no other change seen", 5*time.Second)

	s2 := holdSession(t, d.SMTPAddr)
	s2.cmd("EHLO client.example.net", "250")
	if got := s2.starttls(verified); !bytes.Equal(got.Raw, second.Raw) {
		t.Fatalf("session 2 after the reload got certificate %x, want the second one %x", got.SerialNumber, second.SerialNumber)
	}
	s2.cmd("QUIT", "221")

	// session 1 is still under the first certificate's handshake
	s1.data("Subject: before the reload\r\n\r\nheld across a reload\r\n")
	s1.cmd("QUIT", "221")
	d.WaitMail(1, 15*time.Second)

	// a third certificate in the files, and a configuration with a
	// syntax error: nothing is reloaded
	ca.Issue(t, certs, "mx.example.test")
	conf, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	broken := string(conf) + "listen \"other\" {\n  address = \"127.0.0.1:1\"\n  this is not valid\n}\n"
	line := strings.Count(string(conf), "\n") + 3
	if err := os.WriteFile(d.Config, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Signal(syscall.SIGHUP)
	waitLog(t, d, "configuration not reloaded; still running on the previous one", 5*time.Second)
	if where := fmt.Sprintf("SIGHUP: %s:%d: ", d.Config, line); !strings.Contains(d.Log(), where) {
		t.Errorf("no %q in the log:\n%s", where, d.Log())
	}

	s3 := holdSession(t, d.SMTPAddr)
	s3.cmd("EHLO client.example.net", "250")
	if got := s3.starttls(verified); !bytes.Equal(got.Raw, second.Raw) {
		t.Errorf("session 3 after a failed reload got certificate %x, want the second one %x", got.SerialNumber, second.SerialNumber)
	}
	s3.cmd("EHLO client.example.net", "250")
	s3.upToData()
	s3.send("Subject: after a failed reload\r\n\r\nstill serving\r\n.")
	s3.expect("250")
	s3.cmd("QUIT", "221")
	d.WaitMail(2, 15*time.Second)
	if strings.Count(d.Log(), "certificate reloaded") != 1 {
		t.Errorf("the certificate was reloaded more than once:\n%s", d.Log())
	}
}

// drainConfig is DefaultConfig with a drain time of 10 seconds.
var drainConfig = strings.Replace(DefaultConfig, `retry_base = "1s"`, "retry_base    = \"1s\"\n  drain_timeout = \"10s\"", 1)

// TestGracefulStop: on SIGTERM smtp takes no new session, sends the idle
// ones away with 421 and lets a session in the middle of a message
// finish it: the message gets its 250 and is delivered, and the daemon
// exits 0. A second SIGTERM stops at once: the message being received
// was never acknowledged and is not delivered, and the spool keeps
// nothing of it.
func TestGracefulStop(t *testing.T) {
	t.Run("drain", func(t *testing.T) {
		d := StartWith(t, bin, Options{Config: drainConfig})
		idle := holdSession(t, d.SMTPAddr)
		idle.cmd("EHLO client.example.net", "250")
		busy := holdSession(t, d.SMTPAddr)
		busy.upToData()
		busy.send("Subject: token-7-1\r\n\r\nfirst half")

		d.Signal(syscall.SIGTERM)
		waitLog(t, d, "smtp: draining: 2 sessions", 5*time.Second)
		refused := false
		for deadline := time.Now().Add(2 * time.Second); !refused && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			refused = !greeted(d.SMTPAddr)
		}
		if !refused {
			t.Error("a new session is still greeted while the daemon drains")
		}
		idle.cmd("NOOP", "421")

		busy.send("second half\r\n.")
		busy.expect("250")
		if code := d.Wait(5 * time.Second); code != 0 {
			t.Fatalf("exit status %d after the drain\n%s", code, d.Log())
		}
		if !strings.Contains(d.Log(), "smtp: drained") {
			t.Errorf("no drained line:\n%s", d.Log())
		}
		// acknowledged, so delivered: before the stop, or after the
		// restart if the stop caught its delivery
		d2 := StartWith(t, bin, Options{Config: drainConfig, Dir: d.Dir})
		d2.WaitMail(1, 15*time.Second)
		if n := countTokens(d.Dir)["token-7-1"]; n != 1 {
			t.Errorf("the drained message was delivered %d times", n)
		}
	})
	t.Run("second signal", func(t *testing.T) {
		d := StartWith(t, bin, Options{Config: drainConfig})
		busy := holdSession(t, d.SMTPAddr)
		busy.upToData()
		busy.send("Subject: token-7-2\r\n\r\nnever finished")
		d.Signal(syscall.SIGTERM)
		waitLog(t, d, "smtp: draining: 1 sessions", 5*time.Second)
		start := time.Now()
		d.Signal(syscall.SIGTERM)
		if code := d.Wait(2 * time.Second); code != 0 {
			t.Fatalf("exit status %d 2s after a second SIGTERM\n%s", code, d.Log())
		}
		t.Logf("stopped %v after the second SIGTERM", time.Since(start).Round(time.Millisecond))
		if _, err := readReply(busy.r); err == nil {
			t.Error("the session cut by the stop got a reply")
		}
		if left := spoolFiles(d.Dir); len(left) > 0 {
			t.Errorf("spool holds %v after a stop in the middle of a message", left)
		}
		// the restart purges what the cut session left in the spool and
		// delivers nothing
		d2 := StartWith(t, bin, Options{Config: drainConfig, Dir: d.Dir})
		time.Sleep(time.Second)
		if m := d2.Mail(); len(m) > 0 {
			t.Errorf("a message never acknowledged was delivered: %v", m)
		}
		if left := spoolFiles(d.Dir); len(left) > 0 {
			t.Errorf("spool holds %v after the restart", left)
		}
		if tmp, _ := os.ReadDir(filepath.Join(d.Dir, "spool", "temporary")); len(tmp) > 0 {
			t.Errorf("the body of the cut message is still in temporary/ after the restart: %v", tmp)
		}
	})
}

// greeted reports whether a new connection to addr gets a greeting.
func greeted(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	reply, err := readReply(bufio.NewReader(c))
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		// no answer within the second: not served either
		return false
	}
	return strings.HasPrefix(reply, "220")
}
