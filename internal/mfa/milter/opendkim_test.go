package milter

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The acceptance test: Debian's opendkim signs a message relayed
// through us, and python3-dkim (dkimpy) verifies the signature against
// the public key. Needs: apt-get install opendkim opendkim-tools
// python3-dkim.

// verifyScript verifies the message in argv[1] with the DNS TXT record
// argv[2] standing for test._domainkey.example.org.
const verifyScript = `
import sys, dkim
msg = open(sys.argv[1], 'rb').read()
txt = sys.argv[2].encode()
def dnsfunc(name, timeout=5):
    return txt if name.rstrip(b'.') == b'test._domainkey.example.org' else None
sys.exit(0 if dkim.verify(msg, dnsfunc=dnsfunc) else 1)
`

// dkimMessage is a message as the spool stores it, with what exercises
// the header and body canonicalizations: folded fields, a field without
// a space after its colon, trailing spaces, a line that was
// dot-stuffed, trailing empty lines.
const dkimMessage = "Received: from client.example.org (localhost [127.0.0.1])\r\n" +
	"\tby mx.example.org (smtpd) with ESMTP id 0a1b2c3d\r\n" +
	"\tfor <b@example.net>; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"From: A <a@example.org>\r\n" +
	"To:B <b@example.net>\r\n" +
	"Subject: a test of a subject that is folded\r\n" +
	"  over two lines \r\n" +
	"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"Message-ID: <0a1b2c3d@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=us-ascii\r\n" +
	"\r\n" +
	"Hello,\r\n" +
	"\r\n" +
	".a line that began with a dot\r\n" +
	"trailing spaces   \r\n" +
	"\r\n" +
	"\r\n"

func TestOpenDKIM(t *testing.T) {
	bin, err := exec.LookPath("opendkim")
	if err != nil {
		bin = "/usr/sbin/opendkim"
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatal("opendkim is not installed: apt-get install opendkim opendkim-tools python3-dkim (make test does)")
	}
	if out, err := exec.Command("/usr/bin/python3", "-c", "import dkim").CombinedOutput(); err != nil {
		t.Fatalf("opendkim is installed but not python3-dkim, which verifies its signatures: %v %s", err, out)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	txt := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})

	for _, canon := range []string{"simple/simple", "relaxed/relaxed"} {
		t.Run(strings.ReplaceAll(canon, "/", "-"), func(t *testing.T) {
			sock := startOpenDKIM(t, bin, canon, keyPEM)
			cases := []struct {
				name, addr string
				family     Family
				auth       MailMacros
				signed     bool
			}{
				// opendkim signs for its InternalHosts...
				{"internal host", "127.0.0.1", FamilyInet, MailMacros{}, true},
				// ...for local clients...
				{"local client", "", FamilyUnknown, MailMacros{}, true},
				// ...and for authenticated clients, from the macros
				{"authenticated", "192.0.2.1", FamilyInet, MailMacros{AuthType: "PLAIN", AuthUser: "a"}, true},
				{"external", "192.0.2.1", FamilyInet, MailMacros{}, false},
			}
			for _, tc := range cases {
				t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
					tc.auth.QueueID = "0a1b2c3d"
					out := relay(t, sock, tc.addr, tc.family, tc.auth)
					has := bytes.Contains(out, []byte("\r\nDKIM-Signature:")) || bytes.HasPrefix(out, []byte("DKIM-Signature:"))
					if has != tc.signed {
						t.Fatalf("signed %v, want %v:\n%s", has, tc.signed, out)
					}
					if !tc.signed {
						return
					}
					sig := out[:bytes.Index(out, []byte("\r\nFrom:"))]
					t.Logf("%s", sig[bytes.Index(sig, []byte("DKIM-Signature:")):])
					if !bytes.Contains(sig, []byte("d=example.org")) || !bytes.Contains(sig, []byte("s=test")) ||
						!bytes.Contains(sig, []byte("c="+canon)) {
						t.Errorf("unexpected signature %s", sig)
					}
					if !bytes.HasSuffix(out, []byte(dkimMessage[strings.Index(dkimMessage, "\r\n\r\n"):])) {
						t.Errorf("body changed:\n%q", out)
					}
					if err := dkimVerify(t, out, txt); err != nil {
						t.Fatalf("dkimverify: %v\n%s", err, out)
					}
					// and the verification is real: a changed body fails
					bad := bytes.Replace(out, []byte("Hello,"), []byte("Hallo,"), 1)
					if err := dkimVerify(t, bad, txt); err == nil {
						t.Fatal("a tampered message verified")
					}
				})
			}
		})
	}
}

// startOpenDKIM runs opendkim in the foreground on a socket in a
// temporary directory, signing for example.org with selector test.
func startOpenDKIM(t *testing.T, bin, canon string, keyPEM []byte) string {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "test.private")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	conf := filepath.Join(dir, "opendkim.conf")
	text := fmt.Sprintf(`Syslog no
Background no
Socket local:%s
Domain example.org
Selector test
KeyFile %s
Mode sv
Canonicalization %s
InternalHosts 127.0.0.1
UserID %s
RequireSafeKeys false
`, sock, keyFile, canon, u.Username)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-f", "-x", conf)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("opendkim's output:\n%s", logs.String())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("opendkim exited: %v\n%s", err, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("opendkim did not create %s:\n%s", sock, logs.String())
		}
	}
}

// relay runs one SMTP transaction through the milter and returns the
// message to be queued.
func relay(t *testing.T, sock, addr string, family Family, mail MailMacros) []byte {
	t.Helper()
	s, err := New(Options{Network: "unix", Address: sock, Timeout: 10 * time.Second, Hostname: "mx.example.org"}).Session(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	host := "client.example.org"
	if addr == "" {
		host = ""
	}
	for _, step := range []func() (Verdict, error){
		func() (Verdict, error) { return s.Connect(host, addr, 40000, family) },
		func() (Verdict, error) { return s.Helo("client.example.org", nil) },
		func() (Verdict, error) { return s.Mail("a@example.org", nil, mail) },
		func() (Verdict, error) { return s.Rcpt("b@example.net", nil) },
		s.Data,
	} {
		if v, err := step(); err != nil || v.Action != Continue {
			t.Fatalf("%+v %v", v, err)
		}
	}
	dir := t.TempDir()
	in, err := os.Create(filepath.Join(dir, "message"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := in.WriteString(dkimMessage); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res, err := s.Message(in, &out)
	if err != nil || !res.Verdict.Proceed() {
		t.Fatalf("%+v %v", res, err)
	}
	if !res.Changed {
		return []byte(dkimMessage)
	}
	return out.Bytes()
}

func dkimVerify(t *testing.T, msg []byte, txt string) error {
	t.Helper()
	f := filepath.Join(t.TempDir(), "signed.eml")
	if err := os.WriteFile(f, msg, 0o644); err != nil {
		return err
	}
	out, err := exec.Command("/usr/bin/python3", "-c", verifyScript, f, txt).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}
