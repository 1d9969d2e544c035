package mtasts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"smtpd/internal/tlsrpt"
)

const goodPolicy = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmx: *.mx.example.test\r\nmax_age: 86400\r\n"

// testCA is a certificate authority made for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "MTA-STS test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a server certificate for names signed by ca.
func (ca *testCA) issue(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	return ca.issueWith(t, nil, names...)
}

// issueWith is issue with the certificate template changed by edit.
func (ca *testCA) issueWith(t *testing.T, edit func(*x509.Certificate), names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
}

// policyServer is an HTTPS server for mta-sts.example.test with a
// certificate cert, answering with handler, and a Fetcher that reaches
// it, trusting ca.
type policyServer struct {
	srv     *httptest.Server
	fetcher *Fetcher
	hits    atomic.Int32
}

func newPolicyServer(t *testing.T, ca *testCA, cert tls.Certificate, handler http.HandlerFunc, tlsOpts ...func(*tls.Config)) *policyServer {
	t.Helper()
	ps := &policyServer{}
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.hits.Add(1)
		handler(w, r)
	}))
	ps.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ps.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the failed handshakes the tests cause
	for _, o := range tlsOpts {
		o(ps.srv.TLS)
	}
	ps.srv.StartTLS()
	t.Cleanup(ps.srv.Close)
	addr := ps.srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	ps.fetcher = &Fetcher{
		RootCAs: ca.pool,
		Port:    atoi(t, port),
		Timeout: 5 * time.Second,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if a != "mta-sts.example.test:"+port {
				return nil, errors.New("test dialer: unexpected address " + a)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	return ps
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// servePolicy answers with body as text/plain.
func servePolicy(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(body))
	}
}

func TestFetchGood(t *testing.T) {
	ca := newTestCA(t)
	ps := newPolicyServer(t, ca, ca.issue(t, "mta-sts.example.test"), servePolicy(goodPolicy))
	before := time.Now()
	p, err := ps.fetcher.Fetch(t.Context(), "Example.Test.")
	if err != nil {
		t.Fatal(err)
	}
	want := &Policy{Mode: ModeEnforce, MX: []string{"mx.example.test", "*.mx.example.test"}, MaxAge: 86400 * time.Second}
	if !samePolicy(p, want) || p.ID != "" || p.Fetched.Before(before) {
		t.Fatalf("Fetch = %+v", p)
	}
}

func TestFetchWildcardCertificate(t *testing.T) {
	ca := newTestCA(t)
	ps := newPolicyServer(t, ca, ca.issue(t, "*.example.test"), servePolicy(goodPolicy))
	if _, err := ps.fetcher.Fetch(t.Context(), "example.test"); err != nil {
		t.Fatal(err)
	}
}

func TestFetchRequest(t *testing.T) {
	ca := newTestCA(t)
	var got *http.Request
	ps := newPolicyServer(t, ca, ca.issue(t, "mta-sts.example.test"), func(w http.ResponseWriter, r *http.Request) {
		got = r.Clone(context.Background())
		servePolicy(goodPolicy)(w, r)
	})
	if _, err := ps.fetcher.Fetch(t.Context(), "example.test"); err != nil {
		t.Fatal(err)
	}
	if got.Method != http.MethodGet || got.URL.Path != "/.well-known/mta-sts.txt" || got.Host != "mta-sts.example.test:"+strconv.Itoa(ps.fetcher.Port) {
		t.Errorf("request %s %s Host %s", got.Method, got.URL, got.Host)
	}
	if got.TLS == nil || got.TLS.ServerName != "mta-sts.example.test" || got.TLS.Version < tls.VersionTLS12 {
		t.Errorf("TLS state %+v", got.TLS)
	}
	if got.Header.Get("Cookie") != "" || got.Header.Get("Accept-Encoding") != "" {
		t.Errorf("request headers %v", got.Header)
	}
}

// fetchFails fetches the policy of example.test from ps and checks the
// error.
func fetchFails(t *testing.T, f *Fetcher, step string, result tlsrpt.ResultType) *FetchError {
	t.Helper()
	p, err := f.Fetch(t.Context(), "example.test")
	var fe *FetchError
	if !errors.As(err, &fe) {
		t.Fatalf("Fetch = %+v, %v, want a FetchError", p, err)
	}
	if fe.Step != step || fe.ResultType() != result || ResultType(err) != result || fe.Domain != "example.test" {
		t.Fatalf("Fetch error %v: step %q, result %q, want %q, %q", err, fe.Step, fe.ResultType(), step, result)
	}
	if !strings.Contains(err.Error(), "example.test") || !strings.Contains(err.Error(), step) {
		t.Fatalf("error %q does not say what failed", err)
	}
	return fe
}

func TestFetchFailures(t *testing.T) {
	ca := newTestCA(t)
	cert := ca.issue(t, "mta-sts.example.test")
	tests := []struct {
		name    string
		handler http.HandlerFunc
		maxSize int64
		step    string
		result  tlsrpt.ResultType
	}{
		{"not found", http.NotFound, 0, StepStatus, tlsrpt.ResultSTSPolicyFetchError},
		{"server error", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "oops", http.StatusInternalServerError)
		}, 0, StepStatus, tlsrpt.ResultSTSPolicyFetchError},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://mta-sts.example.test/.well-known/other.txt", http.StatusFound)
		}, 0, StepStatus, tlsrpt.ResultSTSPolicyFetchError},
		{"permanent redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/x", http.StatusMovedPermanently)
		}, 0, StepStatus, tlsrpt.ResultSTSPolicyFetchError},
		{"content type html", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte(goodPolicy))
		}, 0, StepContentType, tlsrpt.ResultSTSPolicyInvalid},
		{"content type missing", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil // no sniffing
			w.Write([]byte(goodPolicy))
		}, 0, StepContentType, tlsrpt.ResultSTSPolicyInvalid},
		{"content type octet-stream", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write([]byte(goodPolicy))
		}, 0, StepContentType, tlsrpt.ResultSTSPolicyInvalid},
		{"oversized, length known", func(w http.ResponseWriter, r *http.Request) {
			body := goodPolicy + strings.Repeat("x: y\n", 20000)
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write([]byte(body))
		}, 0, StepSize, tlsrpt.ResultSTSPolicyInvalid},
		{"oversized, chunked", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			for range 200 {
				w.Write([]byte(strings.Repeat("x: y\n", 100)))
				w.(http.Flusher).Flush()
			}
		}, 0, StepSize, tlsrpt.ResultSTSPolicyInvalid},
		{"over a small limit", servePolicy(goodPolicy), 20, StepSize, tlsrpt.ResultSTSPolicyInvalid},
		{"invalid policy", servePolicy("version: STSv1\nmode: enforce\nmax_age: 1\n"), 0, StepParse, tlsrpt.ResultSTSPolicyInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps := newPolicyServer(t, ca, cert, tt.handler)
			ps.fetcher.MaxSize = tt.maxSize
			fe := fetchFails(t, ps.fetcher, tt.step, tt.result)
			if strings.Contains(tt.name, "redirect") && !strings.Contains(fe.Error(), "redirect") {
				t.Errorf("error %q does not tell of the redirect", fe)
			}
			if fe.StatusCode == 0 {
				t.Errorf("no status code in %v", fe)
			}
			if ps.hits.Load() != 1 {
				t.Errorf("%d requests, want 1 (a redirect is not followed)", ps.hits.Load())
			}
		})
	}
}

func TestFetchDefaultMaxSize(t *testing.T) {
	ca := newTestCA(t)
	cert := ca.issue(t, "mta-sts.example.test")
	// a policy of exactly 64 KiB, padded with an extension, is taken
	pad := DefaultMaxSize - len(goodPolicy) - len("x: \n")
	ps := newPolicyServer(t, ca, cert, servePolicy(goodPolicy+"x: "+strings.Repeat("y", pad)+"\n"))
	if _, err := ps.fetcher.Fetch(t.Context(), "example.test"); err != nil {
		t.Fatal(err)
	}
	ps = newPolicyServer(t, ca, cert, servePolicy(goodPolicy+"x: "+strings.Repeat("y", pad+1)+"\n"))
	fetchFails(t, ps.fetcher, StepSize, tlsrpt.ResultSTSPolicyInvalid)
}

func TestFetchCertificateForOtherName(t *testing.T) {
	ca := newTestCA(t)
	ps := newPolicyServer(t, ca, ca.issue(t, "www.example.test", "example.test"), servePolicy(goodPolicy))
	fe := fetchFails(t, ps.fetcher, StepTLS, tlsrpt.ResultSTSWebPKIInvalid)
	if !fe.WebPKI || ps.hits.Load() != 0 {
		t.Fatalf("error %v, %d requests", fe, ps.hits.Load())
	}
}

func TestFetchUntrustedCA(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	ps := newPolicyServer(t, ca, other.issue(t, "mta-sts.example.test"), servePolicy(goodPolicy))
	fe := fetchFails(t, ps.fetcher, StepTLS, tlsrpt.ResultSTSWebPKIInvalid)
	var unknown x509.UnknownAuthorityError
	if !fe.WebPKI || !errors.As(fe, &unknown) || ps.hits.Load() != 0 {
		t.Fatalf("error %v, %d requests", fe, ps.hits.Load())
	}
}

func TestFetchExpiredCertificate(t *testing.T) {
	ca := newTestCA(t)
	cert := ca.issueWith(t, func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	}, "mta-sts.example.test")
	ps := newPolicyServer(t, ca, cert, servePolicy(goodPolicy))
	fe := fetchFails(t, ps.fetcher, StepTLS, tlsrpt.ResultSTSWebPKIInvalid)
	var invalid x509.CertificateInvalidError
	if !errors.As(fe, &invalid) || invalid.Reason != x509.Expired {
		t.Fatalf("error %v, want an expired certificate", fe)
	}
}

func TestFetchOldTLS(t *testing.T) {
	ca := newTestCA(t)
	ps := newPolicyServer(t, ca, ca.issue(t, "mta-sts.example.test"), servePolicy(goodPolicy), func(c *tls.Config) {
		c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	})
	fe := fetchFails(t, ps.fetcher, StepTLS, tlsrpt.ResultSTSPolicyFetchError)
	if fe.WebPKI || !strings.Contains(fe.Error(), "version") {
		t.Fatalf("a protocol version failure is taken for a certificate one: %v", fe)
	}
}

func TestFetchTimeout(t *testing.T) {
	ca := newTestCA(t)
	release := make(chan struct{})
	ps := newPolicyServer(t, ca, ca.issue(t, "mta-sts.example.test"), func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) }) // before the server's Close, which waits for handlers
	ps.fetcher.Timeout = 200 * time.Millisecond
	start := time.Now()
	fe := fetchFails(t, ps.fetcher, StepHTTP, tlsrpt.ResultSTSPolicyFetchError)
	if !errors.Is(fe, context.DeadlineExceeded) {
		t.Errorf("error %v, want a deadline exceeded", fe)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("fetch took %v with a timeout of 200ms", d)
	}
}

func TestFetchSlowBody(t *testing.T) {
	ca := newTestCA(t)
	release := make(chan struct{})
	ps := newPolicyServer(t, ca, ca.issue(t, "mta-sts.example.test"), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("version: STSv1\n"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) })
	ps.fetcher.Timeout = 200 * time.Millisecond
	fe := fetchFails(t, ps.fetcher, StepRead, tlsrpt.ResultSTSPolicyFetchError)
	if !errors.Is(fe, context.DeadlineExceeded) {
		t.Errorf("error %v, want a deadline exceeded", fe)
	}
}

func TestFetchConnectFails(t *testing.T) {
	f := &Fetcher{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}}
	fetchFails(t, f, StepConnect, tlsrpt.ResultSTSPolicyFetchError)
}

func TestFetchInvalidDomain(t *testing.T) {
	dialed := false
	f := &Fetcher{DialContext: func(context.Context, string, string) (net.Conn, error) {
		dialed = true
		return nil, errors.New("no")
	}}
	for _, d := range []string{"", ".", "example.test/x", "evil.test:8443", "a b.test", "user@example.test"} {
		_, err := f.Fetch(t.Context(), d)
		var fe *FetchError
		if !errors.As(err, &fe) || fe.Step != StepDomain {
			t.Errorf("Fetch(%q) error %v, want step %s", d, err, StepDomain)
		}
	}
	if dialed {
		t.Error("an invalid domain was dialed")
	}
}

func TestResultType(t *testing.T) {
	tests := []struct {
		err  error
		want tlsrpt.ResultType
	}{
		{&FetchError{WebPKI: true}, tlsrpt.ResultSTSWebPKIInvalid},
		{&FetchError{Invalid: true}, tlsrpt.ResultSTSPolicyInvalid},
		{&FetchError{}, tlsrpt.ResultSTSPolicyFetchError},
		{errors.Join(errors.New("x"), &FetchError{WebPKI: true}), tlsrpt.ResultSTSWebPKIInvalid},
		{ErrRecordSyntax, tlsrpt.ResultSTSPolicyInvalid},
		{ErrMultipleRecords, tlsrpt.ResultSTSPolicyInvalid},
		{ErrNoRecord, ""},
		{errors.New("dns timeout"), ""},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := ResultType(tt.err); got != tt.want {
			t.Errorf("ResultType(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
