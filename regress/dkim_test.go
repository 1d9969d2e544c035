package regress

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// dkimKey writes an RSA key for selector "test" of example.test into
// dir as key.pem, readable by the filter's user, and returns its DNS
// record.
func dkimKey(t *testing.T, dir string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	p := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)
}

// ed25519Key writes an Ed25519 key for selector "ed" of example.test
// into dir as ed.pem and returns its DNS record (RFC 8463).
func ed25519Key(t *testing.T, dir string) string {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ed.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
}

// verifyDKIM checks the message's DKIM signatures with python3-dkim,
// record standing for every key.
func verifyDKIM(t *testing.T, msg, record string) {
	t.Helper()
	verifyDKIMWith(t, msg, map[string]string{"": record})
}

// verifyDKIMWith checks every DKIM signature of the message with
// python3-dkim, records giving the key record of each name ("" for any
// name). The delivery's own fields (Return-Path, Delivered-To) are not
// signed and stay; line ends become CRLF again, as on the wire.
func verifyDKIMWith(t *testing.T, msg string, records map[string]string) {
	t.Helper()
	if !regexp.MustCompile(`(?m)^DKIM-Signature: `).MatchString(msg) {
		t.Fatalf("no DKIM-Signature in:\n%s", msg)
	}
	crlf := strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")
	args := []string{filepath.Join("testdata", "filters", "dkimverify.py")}
	for name, record := range records {
		if name != "" {
			record = name + "=" + record
		}
		args = append(args, record)
	}
	cmd := exec.Command("/usr/bin/python3", args...)
	cmd.Stdin = strings.NewReader(crlf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dkimverify: %v\n%s\nmessage:\n%s", err, out, msg)
	}
}

// relayConfig relays all mail to far through the mx listener, whose
// chain is chain with blocks.
func relayConfig(far *Daemon, chain, blocks string) string {
	return `
hostname       = "out.example.test"
spool          = "spool"
control_socket = "run/smtpd.sock"

listen "mx" {
  address = "{{ADDR}}"
  filters = [` + chain + `]
}

action "out" { relay = "smtp://` + far.SMTPAddr + `" }

match {
  from   = "any"
  for    = "any"
  action = action.out
}
` + blocks
}

// sendSigned sends one message from the signing domain and returns it
// as far received it.
func sendSigned(t *testing.T, d, far *Daemon) string {
	t.Helper()
	script := "expect 220\nsend EHLO client.example.net\nexpect 250\nsend MAIL FROM:<author@example.test>\nexpect 250\n" +
		"send RCPT TO:<reader@example.test>\nexpect 250\nsend DATA\nexpect 354\n" +
		"send From: Author <author@example.test>\nsend To: reader@example.test\nsend Subject: signed on the way\n" +
		"send Date: Thu, 26 Nov 2026 12:00:00 +0000\nsend Message-Id: <signed.1@example.test>\nsend\n" +
		"send A body line.\nsend .A line that was dot-stuffed.\nsend\nsend Last line.\nsend .\nexpect 250\nsend QUIT\nexpect 221\n"
	if err := RunDialogue(d.SMTPAddr, script); err != nil {
		t.Fatal(err)
	}
	for _, m := range far.WaitMail(1, 20*time.Second) {
		return m
	}
	return ""
}

// TestFilterDKIMSign: Debian's filter-dkimsign, an OpenSMTPD filter
// written in C on libopensmtpd, runs unchanged as a filter process and
// signs mail relayed through us; python3-dkim verifies the signature at
// the receiving end.
func TestFilterDKIMSign(t *testing.T) {
	const prog = "/usr/libexec/opensmtpd/filter-dkimsign"
	if _, err := os.Stat(prog); err != nil {
		t.Fatalf("%s: %v (make test installs opensmtpd-filter-dkimsign)", prog, err)
	}
	far := StartWith(t, bin, Options{Addr: fmt.Sprintf("127.0.0.2:%d", FreePort(t))})
	dir, _ := WriteConfig(t, "")
	record := dkimKey(t, dir)
	d := StartWith(t, bin, Options{Dir: dir, Config: relayConfig(far, "filter.dkimsign", `
filter "dkimsign" {
  command = "`+prog+` -d example.test -s test -c relaxed/relaxed -k {{DIR}}/key.pem"
}
`)})
	msg := sendSigned(t, d, far)
	if !regexp.MustCompile(`(?m)^DKIM-Signature: .*d=example\.test`).MatchString(strings.ReplaceAll(msg, "\n\t", " ")) {
		t.Errorf("signature not for example.test:\n%s", msg)
	}
	verifyDKIM(t, msg, record)
}

// TestMilterOpenDKIM: Debian's OpenDKIM, a milter, signs mail relayed
// through us (the client is one of its internal hosts); python3-dkim
// verifies the signature at the receiving end. The milter listens on a
// unix socket outside mfa's chroot, which the parent opens for it.
func TestMilterOpenDKIM(t *testing.T) {
	prog, err := exec.LookPath("opendkim")
	if err != nil {
		prog = "/usr/sbin/opendkim"
	}
	if _, err := os.Stat(prog); err != nil {
		t.Fatalf("%s: %v (make test installs opendkim)", prog, err)
	}
	far := StartWith(t, bin, Options{Addr: fmt.Sprintf("127.0.0.2:%d", FreePort(t))})
	dir, _ := WriteConfig(t, "")
	record := dkimKey(t, dir)
	sock := filepath.Join(dir, "opendkim.sock")
	conf := filepath.Join(dir, "opendkim.conf")
	if err := os.WriteFile(conf, []byte(strings.Join([]string{
		"Syslog no", "Background no", "Socket local:" + sock, "UMask 007",
		"Domain example.test", "Selector test", "KeyFile " + filepath.Join(dir, "key.pem"),
		"Mode s", "Canonicalization relaxed/simple", "InternalHosts 127.0.0.1", "RequireSafeKeys false",
		"PidFile " + filepath.Join(dir, "opendkim.pid"), "",
	}, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	milter := exec.Command(prog, "-f", "-x", conf)
	var out syncBuffer
	milter.Stdout, milter.Stderr = &out, &out
	if err := milter.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		milter.Process.Kill()
		milter.Wait()
		if t.Failed() {
			t.Logf("opendkim:\n%s", out.String())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("opendkim made no socket in 10 s:\n%s", out.String())
		}
	}
	d := StartWith(t, bin, Options{Dir: dir, Config: relayConfig(far, "filter.dkim", `
filter "dkim" {
  milter  = "unix:{{DIR}}/opendkim.sock"
  timeout = "10s"
}
`)})
	msg := sendSigned(t, d, far)
	verifyDKIM(t, msg, record)
	if out, _, _ := d.Smtpctl("show", "filters"); !strings.Contains(out, "dkim\tmilter\tunix:"+sock) || strings.Contains(out, "last error") {
		t.Errorf("show filters:\n%s", out)
	}
}
