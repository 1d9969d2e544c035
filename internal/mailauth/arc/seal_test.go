package arc

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"smtpd/internal/dns"
	"smtpd/internal/dns/dnstest"
)

// memResolver serves TXT records from a map; a missing name does not
// exist.
type memResolver map[string]string

func (m memResolver) TXT(_ context.Context, name string) ([]string, error) {
	v, ok := m[strings.ToLower(strings.TrimSuffix(name, "."))]
	if !ok {
		return nil, &dns.Error{Name: name, Permanent: true, Msg: "no such domain", Err: dns.ErrNoSuchDomain}
	}
	return []string{v}, nil
}

var _ Resolver = (*dns.Resolver)(nil)

const testMsg = "Received: from client.example.net by mx.example.org; Tue, 1 Jul 2025 10:00:00 +0000\r\n" +
	"From: Alice <alice@example.net>\r\n" +
	"To: list@example.org\r\n" +
	"Subject: Hello  there\r\n" +
	"Date: Tue, 1 Jul 2025 10:00:00 +0000\r\n" +
	"Message-ID: <1@example.net>\r\n" +
	"X-Hop1: only the first hop signs this\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"Hello  Bob, \r\n" +
	"this is a test.\r\n" +
	"\r\n\r\n"

// testHop is one forwarder: its key, published in the test's DNS.
type testHop struct {
	sealer *Sealer
	id     string // authserv-id
}

type testEnv struct {
	dns  memResolver
	v    *Validator
	rsa1 testHop // rsa 2048, a1._domainkey.hop1.example
	rsa2 testHop // rsa 2048, b2._domainkey.hop2.example
	ed   testHop // ed25519, e3._domainkey.hop3.example
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	env := &testEnv{dns: memResolver{}}
	env.v = &Validator{Resolver: env.dns}
	hop := func(sel, domain string, key crypto.Signer) testHop {
		var rec string
		switch pub := key.Public().(type) {
		case *rsa.PublicKey:
			der, err := x509.MarshalPKIXPublicKey(pub)
			if err != nil {
				t.Fatal(err)
			}
			rec = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
		case ed25519.PublicKey:
			rec = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
		}
		env.dns[sel+"._domainkey."+domain] = rec
		return testHop{sealer: &Sealer{Domain: domain, Selector: sel, Signer: key}, id: "mx." + domain}
	}
	rsaKey := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	env.rsa1 = hop("a1", "hop1.example", rsaKey())
	env.rsa2 = hop("b2", "hop2.example", rsaKey())
	env.ed = hop("e3", "hop3.example", edKey)
	return env
}

func (env *testEnv) validate(t *testing.T, msg string) *Result {
	t.Helper()
	res, err := env.v.Validate(context.Background(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// seal validates msg, has h seal it and returns the sealed message.
func (env *testEnv) seal(t *testing.T, h testHop, msg string) string {
	t.Helper()
	chain := env.validate(t, msg)
	results := "spf=pass smtp.mailfrom=example.net; " + authres.Format("x", []authres.Result{chain.AuthResult()})[len("x; "):]
	set, err := h.sealer.Seal(strings.NewReader(msg), h.id, results, chain)
	if err != nil {
		t.Fatalf("Seal (chain %s: %s): %v", chain.Status, chain.Reason, err)
	}
	return set.String() + msg
}

func wantStatus(t *testing.T, res *Result, status Status, instance int) {
	t.Helper()
	if res.Status != status || res.Instance != instance {
		t.Errorf("%s i=%d (%s), want %s i=%d", res.Status, res.Instance, res.Reason, status, instance)
	}
}

func TestSealAndValidate(t *testing.T) {
	env := newTestEnv(t)
	wantStatus(t, env.validate(t, testMsg), StatusNone, 0)

	one := env.seal(t, env.rsa1, testMsg)
	res := env.validate(t, one)
	wantStatus(t, res, StatusPass, 1)
	if len(res.Sets) != 1 || res.Sets[0].AMSDomain != "hop1.example" || res.Sets[0].SealSelector != "a1" || res.Sets[0].CV != StatusNone {
		t.Errorf("sets: %+v", res.Sets)
	}
	id, results, err := res.Sets[0].ParseAuthResults()
	if err != nil || id != "mx.hop1.example" || len(results) != 2 {
		t.Errorf("AAR: %q %v %v", id, results, err)
	}
	if got := authres.Format("mx.example.org", []authres.Result{res.AuthResult()}); got != "mx.example.org; arc=pass " {
		t.Errorf("Authentication-Results: %q", got)
	}
	if !strings.HasPrefix(one, "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=hop1.example; s=a1; t=") {
		t.Errorf("sealed message starts %q", one[:80])
	}
	many := strings.Replace(testMsg, "MIME-Version:", "Cc: c@example.org\r\nReply-To: r@example.net\r\nIn-Reply-To: <0@example.net>\r\nReferences: <0@example.net>\r\nList-Id: <list.example.org>\r\nMIME-Version:", 1)
	wantStatus(t, env.validate(t, env.seal(t, env.rsa1, many)), StatusPass, 1)
	for _, line := range strings.Split(one+env.seal(t, env.rsa1, many), "\r\n") {
		if len(line) > 78 && strings.HasPrefix(line, "ARC-") {
			t.Errorf("line of %d characters: %q", len(line), line)
		}
	}

	two := env.seal(t, env.rsa2, one)
	res = env.validate(t, two)
	wantStatus(t, res, StatusPass, 2)
	if res.OldestPass != 0 || res.Sets[1].CV != StatusPass {
		t.Errorf("oldest-pass %d, sets %+v", res.OldestPass, res.Sets)
	}

	three := env.seal(t, env.ed, two)
	res = env.validate(t, three)
	wantStatus(t, res, StatusPass, 3)
	if !strings.Contains(three, "a=ed25519-sha256") {
		t.Error("no ed25519 seal")
	}
	wantStatus(t, env.validate(t, env.seal(t, env.ed, testMsg)), StatusPass, 1)

	// messages with bare LF line ends seal and validate alike
	lf := strings.ReplaceAll(testMsg, "\r\n", "\n")
	wantStatus(t, env.validate(t, env.seal(t, env.rsa1, lf)), StatusPass, 1)
}

// TestTamper changes a sealed message in the ways ARC must detect.
func TestTamper(t *testing.T) {
	env := newTestEnv(t)
	hop1 := *env.rsa1.sealer
	hop1.Headers = []string{"From", "To", "Subject", "X-Hop1"}
	two := env.seal(t, env.rsa2, env.seal(t, testHop{&hop1, env.rsa1.id}, testMsg))
	wantStatus(t, env.validate(t, two), StatusPass, 2)

	fails := map[string]func(string) string{
		"body":          func(m string) string { return strings.Replace(m, "Hello  Bob", "Hello  Eve", 1) },
		"body appended": func(m string) string { return m + "P.S. click here\r\n" },
		"signed header": func(m string) string { return strings.Replace(m, "Subject: Hello  there", "Subject: Win a prize", 1) },
		"From added": func(m string) string {
			return strings.Replace(m, "MIME-Version:", "From: Mallory <m@evil.example>\r\nMIME-Version:", 1)
		},
		"AAR i=1": func(m string) string {
			return strings.Replace(m, "i=1; mx.hop1.example; spf=pass", "i=1; mx.hop1.example; spf=fail", 1)
		},
		"AMS i=2 header": func(m string) string {
			return strings.Replace(m, "c=relaxed/relaxed; d=hop2.example", "c=relaxed/relaxed;  d=hop2.example;x=y", 1)
		},
		"AS i=1 cv": func(m string) string {
			return strings.Replace(m, "i=1; a=rsa-sha256; cv=none", "i=1; a=rsa-sha256; cv=pass", 1)
		},
		"AS i=2 t": func(m string) string {
			return strings.Replace(m, "i=2; a=rsa-sha256; cv=pass; d=hop2.example; s=b2; t=", "i=2; a=rsa-sha256; cv=pass; d=hop2.example; s=b2; t=1", 1)
		},
		"set 1 removed": func(m string) string {
			i := strings.Index(m, "ARC-Seal: i=1")
			j := strings.Index(m, "Received:")
			return m[:i] + m[j:]
		},
	}
	for name, change := range fails {
		m := change(two)
		if m == two {
			t.Fatalf("%s: the change did not apply", name)
		}
		if res := env.validate(t, m); res.Status != StatusFail {
			t.Errorf("%s: %s, want fail", name, res.Status)
		}
	}
	// what ARC does not cover leaves the chain valid
	passes := map[string]func(string) string{
		"unsigned header added": func(m string) string { return "X-Spam: no\r\n" + m },
		"relaxed whitespace":    func(m string) string { return strings.Replace(m, "Hello  Bob, \r\n", "Hello Bob,\r\n", 1) },
	}
	for name, change := range passes {
		if res := env.validate(t, change(two)); res.Status != StatusPass {
			t.Errorf("%s: %s (%s), want pass", name, res.Status, res.Reason)
		}
	}
	// a header only hop 1 signed: the chain passes, oldest-pass says
	// from which instance on the message is as sealed (§5.2 step 5)
	res := env.validate(t, strings.Replace(two, "X-Hop1: only", "X-Hop1: not only", 1))
	wantStatus(t, res, StatusPass, 2)
	if res.OldestPass != 2 {
		t.Errorf("oldest-pass %d, want 2", res.OldestPass)
	}
	if got := authres.Format("mx", []authres.Result{res.AuthResult()}); got != "mx; arc=pass header.oldest-pass=2" {
		t.Errorf("Authentication-Results: %q", got)
	}
}

func TestKeyFailures(t *testing.T) {
	env := newTestEnv(t)
	one := env.seal(t, env.rsa1, testMsg)

	// through a real resolver: NXDOMAIN is a failure, SERVFAIL temporary
	srv, err := dnstest.Start(zoneTXT("a1._domainkey.hop1.example", env.dns["a1._domainkey.hop1.example"]))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	r, err := dns.New([]string{srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	v := &Validator{Resolver: r}
	res, err := v.Validate(context.Background(), strings.NewReader(one))
	if err != nil || res.Status != StatusPass {
		t.Fatalf("over DNS: %v %v", res, err)
	}
	moved := strings.ReplaceAll(one, "s=a1;", "s=gone;")
	if res, _ := v.Validate(context.Background(), strings.NewReader(moved)); res.Status != StatusFail || errors.Is(res.Err, ErrTemporary) {
		t.Errorf("NXDOMAIN: %s %v", res.Status, res.Err)
	}
	srv.ServFail("a1._domainkey.hop1.example")
	if r, err = dns.New([]string{srv.Addr}); err != nil { // no cached answer
		t.Fatal(err)
	}
	r.Timeout = time.Second
	v = &Validator{Resolver: r}
	res, err = v.Validate(context.Background(), strings.NewReader(one))
	if err != nil || res.Status != StatusTempError || !errors.Is(res.Err, ErrTemporary) {
		t.Fatalf("SERVFAIL: %+v %v", res, err)
	}
	if _, err := env.rsa2.sealer.Seal(strings.NewReader(one), "mx", "none", res); !errors.Is(err, ErrTemporary) {
		t.Errorf("sealing after a temporary failure: %v", err)
	}

	for name, rec := range map[string]string{
		"revoked":      "v=DKIM1; p=",
		"wrong type":   strings.Replace(env.dns["a1._domainkey.hop1.example"], "k=rsa", "k=ed25519", 1),
		"not for mail": env.dns["a1._domainkey.hop1.example"] + "; s=tlsrpt",
		"sha1 only":    env.dns["a1._domainkey.hop1.example"] + "; h=sha1",
		"garbage":      "hello world",
	} {
		env.dns["a1._domainkey.hop1.example"], rec = rec, env.dns["a1._domainkey.hop1.example"]
		if res := env.validate(t, one); res.Status != StatusFail {
			t.Errorf("key %s: %s", name, res.Status)
		}
		env.dns["a1._domainkey.hop1.example"] = rec
	}
}

func TestSealRefusals(t *testing.T) {
	env := newTestEnv(t)
	one := env.seal(t, env.rsa1, testMsg)
	broken := strings.Replace(one, "Hello  Bob", "Hello  Eve", 1)
	chain := env.validate(t, broken)
	wantStatus(t, chain, StatusFail, 1)
	s := env.rsa2.sealer
	if _, err := s.Seal(strings.NewReader(broken), "mx", "arc=fail", chain); !errors.Is(err, ErrChainFailed) {
		t.Errorf("failed chain: %v", err)
	}
	// with SealFailed: a cv=fail set over itself alone (§5.1.2), which
	// ends the chain (§5.2 step 2) and cannot be extended (§5.1 step 2)
	sf := *s
	sf.SealFailed = true
	set, err := sf.Seal(strings.NewReader(broken), "mx", "arc=fail", chain)
	if err != nil || set.Instance != 2 || !strings.Contains(set.AS, "cv=fail") {
		t.Fatalf("SealFailed: %v %v", set, err)
	}
	ended := set.String() + broken
	res := env.validate(t, ended)
	if res.Status != StatusFail || !strings.Contains(res.Reason, "cv=fail") {
		t.Errorf("cv=fail chain: %s %s", res.Status, res.Reason)
	}
	if _, err := sf.Seal(strings.NewReader(ended), "mx", "arc=fail", res); !errors.Is(err, ErrChainFailed) {
		t.Errorf("sealing after cv=fail: %v", err)
	}
	// a result that is not the message's
	if _, err := s.Seal(strings.NewReader(one), "mx", "none", &Result{Status: StatusNone}); err == nil {
		t.Error("cv=none for a message with a chain")
	}
	if _, err := s.Seal(strings.NewReader(testMsg), "mx", "none", nil); err == nil {
		t.Error("no result")
	}
	// configuration and input checks
	t.Setenv("GODEBUG", "rsa1024min=0") // let crypto/rsa make the small key
	small, err := rsa.GenerateKey(rand.Reader, 768)
	if err != nil {
		t.Fatal(err)
	}
	none := &Result{Status: StatusNone}
	for name, bad := range map[string]*Sealer{
		"no signer":     {Domain: "d.example", Selector: "s"},
		"small key":     {Domain: "d.example", Selector: "s", Signer: small},
		"bad domain":    {Domain: "d;x", Selector: "s", Signer: s.Signer},
		"signs ARC":     {Domain: "d.example", Selector: "s", Signer: s.Signer, Headers: []string{"From", "ARC-Seal"}},
		"signs A-R":     {Domain: "d.example", Selector: "s", Signer: s.Signer, Headers: []string{"Authentication-Results"}},
		"bad hdr name ": {Domain: "d.example", Selector: "s", Signer: s.Signer, Headers: []string{"Sub ject"}},
	} {
		if _, err := bad.Seal(strings.NewReader(testMsg), "mx", "none", none); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	for _, results := range []string{"spf=pass\r\nX-Injected: yes", "spf=pass\x00", "nonsense"} {
		if _, err := s.Seal(strings.NewReader(testMsg), "mx", results, none); err == nil {
			t.Errorf("results %q: no error", results)
		}
	}
	if _, err := s.Seal(strings.NewReader(testMsg), "mx example", "none", none); err == nil {
		t.Error("authserv-id with a space: no error")
	}
}

// TestChainLimit builds a chain of 50 sets, which validates, and which
// cannot be extended (RFC 8617 §4.2.1); a 51st instance fails.
func TestChainLimit(t *testing.T) {
	env := newTestEnv(t)
	msg := testMsg
	for range MaxInstance {
		msg = env.seal(t, env.ed, msg)
	}
	res := env.validate(t, msg)
	wantStatus(t, res, StatusPass, MaxInstance)
	if _, err := env.ed.sealer.Seal(strings.NewReader(msg), "mx", "arc=pass", res); !errors.Is(err, ErrChainFull) {
		t.Errorf("51st set: %v", err)
	}
	res = env.validate(t, "ARC-Seal: i=51; a=rsa-sha256; cv=pass; d=x.example; s=s; b=AAAA\r\n"+msg)
	if res.Status != StatusFail || !strings.Contains(res.Reason, "more than 50") {
		t.Errorf("51 sets: %s %s", res.Status, res.Reason)
	}
}

// bigBody streams n bytes of body lines without holding them.
type bigBody struct{ n int }

func (b *bigBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	const line = "0123456789 abcdefghijklmnopqrstuvwxyz  ABCDEFGHIJKLMNOPQRSTUVWXYZ \r\n"
	n := 0
	for n+len(line) <= len(p) && b.n > 0 {
		n += copy(p[n:], line)
		b.n -= len(line)
	}
	if n == 0 {
		n = copy(p, line[:min(len(p), len(line))])
		b.n -= n
	}
	return n, nil
}

// TestStreaming seals and validates a 64 MiB body and checks that far
// less than that was allocated: the body is hashed as it streams.
func TestStreaming(t *testing.T) {
	env := newTestEnv(t)
	const size = 64 << 20
	header := testMsg[:strings.Index(testMsg, "\r\n\r\n")+4]
	msg := func() io.Reader { return io.MultiReader(strings.NewReader(header), &bigBody{n: size}) }
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	set, err := env.rsa1.sealer.Seal(msg(), env.rsa1.id, "none", &Result{Status: StatusNone})
	if err != nil {
		t.Fatal(err)
	}
	res, err := env.v.Validate(context.Background(), io.MultiReader(strings.NewReader(set.String()), msg()))
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	wantStatus(t, res, StatusPass, 1)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("allocated %d bytes to seal and validate a %d-byte body", alloc, size)
	}
}

func TestHeaderLimit(t *testing.T) {
	env := newTestEnv(t)
	v := &Validator{Resolver: env.dns, MaxHeaderBytes: 1000}
	long := "X-Long: " + strings.Repeat("a", 2000) + "\r\n" + testMsg
	if _, err := v.Validate(context.Background(), strings.NewReader(long)); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("long header: %v", err)
	}
	if _, err := v.Validate(context.Background(), strings.NewReader(testMsg)); err != nil {
		t.Errorf("short header: %v", err)
	}
}

// pythonVerify is the oracle of Debian's python3-dkim: dkim.arc_verify
// with the keys of the test's DNS. It prints the chain validation status
// and the reason.
const pythonVerify = `
import json, sys
import dkim
msg = open(sys.argv[1], 'rb').read()
txt = json.load(open(sys.argv[2]))
def dnsfunc(name, timeout=5):
    v = txt.get(name.decode().rstrip('.').lower())
    return v.encode() if v else None
cv, results, reason = dkim.arc_verify(msg, dnsfunc=dnsfunc)
print((cv or b'').decode(), reason)
`

func TestPythonDKIMOracle(t *testing.T) {
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import dkim").Run(); err != nil {
		t.Fatalf("no python3-dkim (%s -c 'import dkim': %v); make test installs it", python, err)
	}
	env := newTestEnv(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "verify.py")
	keys := filepath.Join(dir, "keys.json")
	records, err := json.Marshal(env.dns)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(pythonVerify), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keys, records, 0o600); err != nil {
		t.Fatal(err)
	}
	verify := func(msg string) string {
		f := filepath.Join(dir, "msg.eml")
		if err := os.WriteFile(f, []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(python, script, f, keys).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", script, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	one := env.seal(t, env.rsa1, testMsg)
	two := env.seal(t, env.rsa2, one)
	many := strings.Replace(testMsg, "MIME-Version:", "Cc: c@example.org\r\nReply-To: r@example.net\r\nIn-Reply-To: <0@example.net>\r\nReferences: <0@example.net>\r\nList-Id: <list.example.org>\r\nMIME-Version:", 1)
	for name, tc := range map[string]struct{ msg, want string }{
		"one hop, folded h=": {env.seal(t, env.rsa1, many), "pass success"},
		"one hop":            {one, "pass success"},
		"two hops":           {two, "pass success"},
		"two hops, LF":       {strings.ReplaceAll(two, "\r\n", "\n"), "pass success"},
		"two hops, body":     {strings.Replace(two, "Hello  Bob", "Hello  Eve", 1), "fail"},
		"two hops, AAR i1":   {strings.Replace(two, "i=1; mx.hop1.example; spf=pass", "i=1; mx.hop1.example; spf=fail", 1), "fail"},
	} {
		got := verify(tc.msg)
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: python3-dkim says %q, want %q", name, got, tc.want)
		} else {
			t.Logf("%s: python3-dkim arc_verify: %s", name, got)
		}
	}
	// dkimpy's ARC knows rsa-sha256 only (ARC_HASH_ALGORITHMS): an
	// ed25519 seal is ours to check, not its
	t.Logf("ed25519 seal: python3-dkim arc_verify: %s", verify(env.seal(t, env.ed, testMsg)))
}
