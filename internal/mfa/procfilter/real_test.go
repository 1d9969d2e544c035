package procfilter

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// Real filters from Debian (the project's `make test` installs them):
// opensmtpd-filter-senderscore (Go, answers from goroutines, so out of
// order) and opensmtpd-filter-dkimsign (C, libopensmtpd, buffers the
// whole message).
const (
	senderscore = "/usr/libexec/opensmtpd/filter-senderscore"
	dkimsign    = "/usr/libexec/opensmtpd/filter-dkimsign"
)

// syncBuffer collects a filter's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProc runs a filter binary and starts a Conn on its stdin and
// stdout, skipping the test if the binary is not installed.
func startProc(t *testing.T, path string, args ...string) *Conn {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s not installed (Debian package opensmtpd-filter-%s; make test installs it)", path, strings.TrimPrefix(filepath.Base(path), "filter-"))
	}
	cmd := exec.Command(path, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", path, err)
			}
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("%s did not exit on EOF", path)
		}
		if s := stderr.String(); s != "" {
			t.Logf("%s stderr:\n%s", filepath.Base(path), s)
		}
	})
	c, err := Start(pipeRW{stdout, stdin, []io.Closer{stdin}}, testOptions())
	if err != nil {
		t.Fatalf("%v\nstderr: %s", err, stderr.String())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSenderscore(t *testing.T) {
	c := startProc(t, senderscore)
	want := []string{"connect", "helo", "ehlo", "starttls", "auth", "mail-from", "rcpt-to", "data", "data-line", "commit", "quit"}
	if got := c.Phases(); !reflect.DeepEqual(got, want) {
		t.Errorf("Phases() = %q, want %q", got, want)
	}
	if !c.HasEvent("link-connect") || !c.HasEvent("link-disconnect") || c.HasEvent("tx-begin") {
		t.Error("events registered: want link-connect and link-disconnect")
	}
	ctx := context.Background()
	// sessions in parallel: the filter answers from goroutines, so the
	// answers come in any order
	var wg sync.WaitGroup
	for i := 1; i <= 8; i++ {
		wg.Add(1)
		go func(sid uint64) {
			defer wg.Done()
			err := senderscoreSession(ctx, c, sid)
			if err != nil {
				t.Errorf("session %x: %v", sid, err)
			}
		}(uint64(i) << 32)
	}
	wg.Wait()
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}

// senderscoreSession runs one session. The client is on IPv6, for which
// filter-senderscore looks nothing up (it has no score for it): no DNS
// in tests, and every phase proceeds.
func senderscoreSession(ctx context.Context, c *Conn, sid uint64) error {
	now := time.Now()
	if err := c.Report(now, "link-connect", sid, "<unknown>", "fail", "[2001:db8::1]:4321", "[2001:db8::25]:25"); err != nil {
		return err
	}
	for _, step := range [][]string{
		{"connect", "<unknown>", "[2001:db8::1]"},
		{"ehlo", "client.example.org"},
		{"mail-from", "a@example.org"},
		{"rcpt-to", "b@example.org"},
		{"data"},
	} {
		res, err := c.Filter(ctx, now, step[0], sid, step[1:]...)
		if err != nil {
			return err
		}
		if res.Action != Proceed {
			return fmt.Errorf("%s: %+v", step[0], res)
		}
	}
	msg := "From: a@example.org\r\nSubject: test\r\n\r\n.leading dot\r\n..two\r\nbody\r\n"
	var out bytes.Buffer
	if err := c.DataLines(ctx, now, sid, strings.NewReader(msg), &out); err != nil {
		return err
	}
	if out.String() != msg {
		return fmt.Errorf("message came back as %q", out.String())
	}
	for _, phase := range []string{"commit", "quit"} {
		res, err := c.Filter(ctx, now, phase, sid)
		if err != nil {
			return err
		}
		if res.Action != Proceed {
			return fmt.Errorf("%s: %+v", phase, res)
		}
	}
	return c.Report(now, "link-disconnect", sid)
}

func TestDkimsign(t *testing.T) {
	if _, err := os.Stat(dkimsign); err != nil {
		t.Fatalf("%s not installed (Debian package opensmtpd-filter-dkimsign; make test installs it)", dkimsign)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "dkim.key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startProc(t, dkimsign, "-d", "example.org", "-s", "sel", "-k", keyFile)
	if got, want := c.Phases(), []string{"data-line", "commit"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Phases() = %q, want %q", got, want)
	}
	ctx := context.Background()
	const sid = 0x5eed
	now := time.Now()
	// Report sends only what it registered; the rest is dropped
	for _, r := range [][]string{
		{"link-connect", "<unknown>", "pass", "192.0.2.1:4321", "192.0.2.2:25"},
		{"tx-begin", "0badcafe"},
		{"tx-mail", "0badcafe", "ok", "a@example.org"},
	} {
		if err := c.Report(now, r[0], sid, r[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	head := "From: a@example.org\r\nSubject: hi\r\n\r\n"
	body := ".dot line\r\n..two dots\r\nend\r\n"
	var out bytes.Buffer
	if err := c.DataLines(ctx, now, sid, strings.NewReader(head+body), &out); err != nil {
		t.Fatal(err)
	}
	sig, rest, ok := strings.Cut(out.String(), "\r\nFrom: ")
	if !ok || rest != head[len("From: "):]+body || !strings.HasPrefix(sig, "DKIM-Signature: v=1; a=rsa-sha256;") {
		t.Fatalf("signed message:\n%s", out.String())
	}
	// the body hash covers the unstuffed body: dkimsign got the lines
	// dot-stuffed, as from smtpd, and unstuffed them
	sum := sha256.Sum256([]byte(body))
	unfolded := strings.Join(strings.Fields(sig), "")
	if want := "bh=" + base64.StdEncoding.EncodeToString(sum[:]) + ";"; !strings.Contains(unfolded, want) {
		t.Errorf("signature %q lacks %s", sig, want)
	}
	res, err := c.Filter(ctx, now, "commit", sid)
	if err != nil || res.Action != Proceed {
		t.Fatalf("commit: %+v, %v", res, err)
	}
	for _, r := range [][]string{{"tx-commit", "0badcafe", "123"}, {"link-disconnect"}} {
		if err := c.Report(now, r[0], sid, r[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
}
