package dkim

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSignDefaults: a signature with the zero values has relaxed/relaxed,
// t=, no l= and no x=, signs the recommended fields the message has
// (each instance) and not those it lacks nor the trace fields, and lists
// From once more than the message has it.
func TestSignDefaults(t *testing.T) {
	rsaS, edS, _ := testSigners(t)
	msg := strings.Replace(testMessage, "X-Mailer: test\r\n", "X-Mailer: test\r\nTo: dave@example.net\r\n", 1)
	for _, s := range []*Signer{rsaS, edS} {
		before := time.Now().Unix()
		field, err := s.Sign(strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(field, "DKIM-Signature: ") || !strings.HasSuffix(field, "\r\n") ||
			strings.Count(field, "\n") != strings.Count(field, "\r\n") {
			t.Errorf("field is not a CRLF-terminated DKIM-Signature:\n%q", field)
		}
		for l := range strings.SplitSeq(strings.TrimSuffix(field, "\r\n"), "\r\n") {
			if len(l) > 998 { // RFC 5322 §2.1.1
				t.Errorf("line of %d characters", len(l))
			}
		}
		tags := tagsOf(t, field+msg)
		want := map[string]string{"v": "1", "a": algorithm(s.Key), "c": "relaxed/relaxed", "d": "example.org", "s": s.Selector,
			"h": "From:From:Subject:Date:Message-ID:To:To:MIME-Version:Content-Type"}
		for k, v := range want {
			if got := stripWSP(tags[k]); got != v {
				t.Errorf("%s: %s=%q, want %q", s.Selector, k, got, v)
			}
		}
		for _, k := range []string{"l", "x", "i", "z"} {
			if v, ok := tags[k]; ok {
				t.Errorf("%s: unexpected %s=%s", s.Selector, k, v)
			}
		}
		if ts, err := strconv.ParseInt(tags["t"], 10, 64); err != nil || ts < before || ts > time.Now().Unix() {
			t.Errorf("t=%s, want the signing time", tags["t"])
		}
	}
}

// TestSignOptions: the settings reach the signature, and bad ones are
// refused with clear errors before anything is read.
func TestSignOptions(t *testing.T) {
	rsaS, _, res := testSigners(t)
	s := *rsaS
	s.HeaderCanon, s.BodyCanon = "simple", "Simple"
	s.Identifier = "alice@mail.example.org"
	s.Headers = []string{"from", "subject", "List-Id", "x-mailer"}
	s.Oversign = []string{"Subject", "Reply-To", "FROM"}
	signed := signedWith(t, testMessage, &s)
	tags := tagsOf(t, signed)
	if got := stripWSP(tags["h"]); got != "from:from:subject:subject:x-mailer:Reply-To" {
		t.Errorf("h=%s", got)
	}
	if tags["c"] != "simple/simple" || tags["i"] != "alice@mail.example.org" {
		t.Errorf("c=%s i=%s", tags["c"], tags["i"])
	}
	results, err := Verify(context.Background(), strings.NewReader(signed), res)
	if err != nil || len(results) != 1 || results[0].Status != StatusPass || results[0].Identifier != "alice@mail.example.org" {
		t.Errorf("verify: %+v %v", results, err)
	}
	// Reply-To was over-signed while absent: adding one breaks the signature
	added := strings.Replace(signed, "X-Mailer:", "Reply-To: mallory@example.com\r\nX-Mailer:", 1)
	if results, _ := Verify(context.Background(), strings.NewReader(added), res); len(results) != 1 || results[0].Status != StatusFail {
		t.Errorf("added over-signed Reply-To: %+v", results)
	}

	s.Oversign = []string{}
	s.Headers = []string{"From"}
	if got := stripWSP(tagsOf(t, signedWith(t, testMessage, &s))["h"]); got != "From" {
		t.Errorf("without over-signing h=%s", got)
	}

	// a key set directly, not through LoadKey, is checked too
	block, _ := pem.Decode(readTestdata(t, "rsa512.pem"))
	small, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tiny := Signer{Domain: "example.org", Selector: "x", Key: small}
	if _, err := tiny.Sign(strings.NewReader(testMessage)); !errors.Is(err, ErrKeyTooSmall) {
		t.Errorf("512-bit key: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Signer)
		msg  string
	}{
		{"no domain", func(s *Signer) { s.Domain = "" }, "invalid signing domain"},
		{"tag in domain", func(s *Signer) { s.Domain = "example.org; l=0" }, "invalid signing domain"},
		{"bad selector", func(s *Signer) { s.Selector = "a b" }, "invalid selector"},
		{"no key", func(s *Signer) { s.Key = nil }, "no key"},
		{"foreign identifier", func(s *Signer) { s.Identifier = "alice@example.com" }, "not in domain"},
		{"identifier suffix trick", func(s *Signer) { s.Identifier = "a@badexample.org" }, "not in domain"},
		{"no From", func(s *Signer) { s.Headers = []string{"Subject"} }, "must include From"},
		{"bad field name", func(s *Signer) { s.Headers = []string{"From", "Sub ject"} }, "invalid header field name"},
		{"bad canonicalization", func(s *Signer) { s.BodyCanon = "nowsp" }, "unknown canonicalization"},
	} {
		s := *rsaS
		tc.edit(&s)
		if _, err := s.Sign(strings.NewReader(testMessage)); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.msg)
		}
	}
	if _, err := rsaS.Sign(strings.NewReader("Subject: no author\r\n\r\nbody\r\n")); !errors.Is(err, ErrNoFrom) {
		t.Errorf("message without From: %v", err)
	}
	if _, err := SignAll(strings.NewReader(testMessage)); err == nil {
		t.Error("SignAll without signers")
	}
}

// TestSignNoLeak: go-msgauth signs in a goroutine per signature; none
// is left behind when a signer is refused or the message cannot be read.
func TestSignNoLeak(t *testing.T) {
	rsaS, edS, _ := testSigners(t)
	bad := *edS
	bad.Selector = ""
	before := runtime.NumGoroutine()
	for range 20 {
		if _, err := SignAll(strings.NewReader(testMessage), rsaS, edS, &bad); err == nil {
			t.Fatal("bad signer accepted")
		}
		if _, err := SignAll(&errReader{testMessage}, rsaS, edS); err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Fatalf("read error: %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines left behind", n-before)
	}
}

// TestSignAllOnePass: several signatures from one reading of the
// message, all of which verify.
func TestSignAllOnePass(t *testing.T) {
	rsaS, edS, res := testSigners(t)
	r := &countingReader{r: strings.NewReader(testMessage)}
	fields, err := SignAll(r, rsaS, edS)
	if err != nil {
		t.Fatal(err)
	}
	if r.n != len(testMessage) {
		t.Errorf("read %d bytes of %d", r.n, len(testMessage))
	}
	if n := strings.Count(fields, "DKIM-Signature:"); n != 2 {
		t.Fatalf("%d fields:\n%s", n, fields)
	}
	results, err := Verify(context.Background(), strings.NewReader(fields+testMessage), res)
	if err != nil || len(results) != 2 {
		t.Fatalf("%+v %v", results, err)
	}
	for i, want := range []string{"rsa-sha256", "ed25519-sha256"} {
		if results[i].Status != StatusPass || results[i].Algorithm != want {
			t.Errorf("signature %d: %+v", i, results[i])
		}
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestSignStreams: a 48 MiB body goes through while the heap stays
// small, so the body is never held in memory whole.
func TestSignStreams(t *testing.T) {
	_, edS, res := testSigners(t)
	const size = 48 << 20
	line := []byte(strings.Repeat("x", 74) + "\r\n")
	body := func(sample func()) io.Reader {
		return io.MultiReader(strings.NewReader(testMessage),
			&lineReader{line: line, left: size, every: 1 << 20, sample: sample})
	}
	runtime.GC()
	var peak uint64
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapAlloc)
	}
	field, err := edS.Sign(body(sample))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("peak heap %d KiB", peak>>10)
	if peak == 0 || peak > 16<<20 {
		t.Errorf("heap reached %d MiB while signing a %d MiB message", peak>>20, size>>20)
	}
	results, err := Verify(context.Background(), io.MultiReader(strings.NewReader(field), body(func() {})), res)
	if err != nil || len(results) != 1 || results[0].Status != StatusPass {
		t.Errorf("%+v %v", results, err)
	}
}

// lineReader yields line repeatedly, left bytes in all, calling sample
// every so many bytes.
type lineReader struct {
	line        []byte
	left, every int
	done        int
	sample      func()
}

func (l *lineReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && l.left > 0 {
		c := copy(p[n:], l.line[(l.done)%len(l.line):])
		c = min(c, l.left)
		n += c
		l.left -= c
		l.done += c
		if l.done%l.every < c {
			l.sample()
		}
	}
	return n, nil
}

// TestSignHeaderOnly: a message that ends inside its header, without
// the empty line, is signed as one with an empty body.
func TestSignHeaderOnly(t *testing.T) {
	rsaS, edS, res := testSigners(t)
	for _, msg := range []string{
		"From: a@example.org\r\nSubject: empty\r\n",
		"From: a@example.org\r\nSubject: empty",
		"From: a@example.org\r\nSubject: empty\r\n\r\n",
	} {
		signed := signedWith(t, msg, rsaS, edS)
		results, err := Verify(context.Background(), strings.NewReader(signed), res)
		if err != nil || len(results) != 2 || results[0].Status != StatusPass || results[1].Status != StatusPass {
			t.Errorf("%q: %+v %v", msg, results, err)
		}
	}
}

func TestHeaderTooLarge(t *testing.T) {
	rsaS, _, res := testSigners(t)
	msg := "From: a@example.org\r\n" + strings.Repeat("X-Junk: "+strings.Repeat("j", 990)+"\r\n", MaxHeaderBytes/1000+1) + "\r\nbody\r\n"
	if _, err := rsaS.Sign(strings.NewReader(msg)); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("sign: %v", err)
	}
	if _, err := Verify(context.Background(), strings.NewReader("DKIM-Signature: v=1\r\n"+msg), res); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("verify: %v", err)
	}
}
