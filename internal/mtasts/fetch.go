package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"smtpd/internal/tlsrpt"
)

// Defaults of the Fetcher.
const (
	// DefaultTimeout bounds a whole fetch. RFC 8461 §3.3 suggests a
	// minute; a delivery waits for the fetch, so less is better here.
	DefaultTimeout = 20 * time.Second
	// DefaultMaxSize is the largest policy accepted, the 64 KiB of RFC
	// 8461 §3.3.
	DefaultMaxSize = 64 << 10
)

// wellKnownPath is where a policy is served (RFC 8461 §3.2).
const wellKnownPath = "/.well-known/mta-sts.txt"

// The steps of a fetch, FetchError.Step.
const (
	StepDomain      = "domain"       // the domain is not a host name
	StepConnect     = "connect"      // connecting to mta-sts.DOMAIN
	StepTLS         = "tls"          // the TLS handshake
	StepHTTP        = "http"         // the request and response head
	StepStatus      = "status"       // a status other than 200
	StepContentType = "content-type" // a media type other than text/plain
	StepRead        = "read"         // reading the body
	StepSize        = "size"         // a body over Fetcher.MaxSize
	StepParse       = "parse"        // the body is not a valid policy
)

// FetchError is a failed policy fetch: which step failed, and what for.
// A sender with no unexpired cached policy delivers as without MTA-STS,
// and reports the failure by its ResultType (RFC 8461 §5, RFC 8460).
type FetchError struct {
	Domain string
	// Step is one of the Step constants.
	Step string
	// WebPKI is set when the server's certificate did not validate
	// (RFC 8461 §3.3): untrusted, expired, or not for mta-sts.DOMAIN.
	WebPKI bool
	// Invalid is set when a response arrived but is no valid policy:
	// the wrong media type, too large, or not parsing.
	Invalid bool
	// StatusCode is the HTTP status, when a response arrived.
	StatusCode int
	Err        error
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("fetching MTA-STS policy of %s: %s: %v", e.Domain, e.Step, e.Err)
}

// Unwrap returns the underlying error.
func (e *FetchError) Unwrap() error { return e.Err }

// ResultType returns the TLS-RPT result type of the failure (RFC 8460
// §4.3.2.2): sts-webpki-invalid, sts-policy-invalid or
// sts-policy-fetch-error.
func (e *FetchError) ResultType() tlsrpt.ResultType {
	switch {
	case e.WebPKI:
		return tlsrpt.ResultSTSWebPKIInvalid
	case e.Invalid:
		return tlsrpt.ResultSTSPolicyInvalid
	}
	return tlsrpt.ResultSTSPolicyFetchError
}

// ResultType returns the TLS-RPT result type (RFC 8460 §4.3.2.2) for an
// error of Fetch or Resolver.Policy: that of a FetchError, and
// sts-policy-invalid for an MTA-STS TXT record that does not parse or is
// there more than once. Other errors, a failed DNS lookup among them,
// give "".
func ResultType(err error) tlsrpt.ResultType {
	var fe *FetchError
	switch {
	case errors.As(err, &fe):
		return fe.ResultType()
	case errors.Is(err, ErrRecordSyntax), errors.Is(err, ErrMultipleRecords):
		return tlsrpt.ResultSTSPolicyInvalid
	}
	return ""
}

// Fetcher fetches policies over HTTPS (RFC 8461 §3.3). The zero value
// uses the system's roots and resolver. Each fetch has a connection of
// its own, closed after it; nothing is cached, no proxy is used and no
// cookie kept.
type Fetcher struct {
	// RootCAs are the trusted roots; nil means the system's.
	RootCAs *x509.CertPool
	// DialContext connects to addr, "mta-sts.DOMAIN:PORT", resolving
	// the name as the caller sees fit; nil means a net.Dialer.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Port is the HTTPS port; 0 means 443.
	Port int
	// Timeout bounds the whole fetch; 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxSize bounds the policy's size in bytes; 0 means DefaultMaxSize.
	MaxSize int64
}

// Fetch fetches and parses the policy of domain from
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt (RFC 8461 §3.3). The
// certificate must be valid for mta-sts.DOMAIN under the roots (PKIX),
// TLS 1.2 at least; the status must be 200 (a redirect is refused), the
// media type text/plain. The policy's Fetched is set to now, its ID left
// empty. Errors are *FetchError.
func (f *Fetcher) Fetch(ctx context.Context, domain string) (*Policy, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return nil, &FetchError{Domain: domain, Step: StepDomain, Err: err}
	}
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// step records how far the connection got, for the error to tell
	var step atomic.Value
	step.Store(StepConnect)
	host := "mta-sts." + d
	tr := f.transport(host, &step)
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		// a redirect is returned as the response, refused below
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	u := url.URL{Scheme: "https", Host: host, Path: wellKnownPath}
	if f.Port != 0 && f.Port != 443 {
		u.Host = net.JoinHostPort(host, strconv.Itoa(f.Port))
	}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		TLSHandshakeDone: func(_ tls.ConnectionState, err error) {
			if err == nil {
				step.Store(StepHTTP)
			}
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &FetchError{Domain: d, Step: StepHTTP, Err: err}
	}
	req.Header.Set("User-Agent", "smtpd MTA-STS")
	resp, err := client.Do(req)
	if err != nil {
		return nil, &FetchError{Domain: d, Step: step.Load().(string), WebPKI: isCertificateError(err), Err: err}
	}
	defer resp.Body.Close()
	// the transport may return a response that raced with the deadline
	if err := ctx.Err(); err != nil {
		return nil, &FetchError{Domain: d, Step: StepHTTP, StatusCode: resp.StatusCode, Err: err}
	}
	p, ferr := f.read(ctx, resp)
	if ferr != nil {
		ferr.Domain = d
		return nil, ferr
	}
	p.Fetched = time.Now()
	return p, nil
}

// read checks the response and parses the policy in its body, read
// before ctx is done.
func (f *Fetcher) read(ctx context.Context, resp *http.Response) (*Policy, *FetchError) {
	fail := func(step string, invalid bool, err error) (*Policy, *FetchError) {
		return nil, &FetchError{Step: step, Invalid: invalid, StatusCode: resp.StatusCode, Err: err}
	}
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fail(StepStatus, false, fmt.Errorf("redirect (%s) to %q refused (RFC 8461 §3.3)",
			resp.Status, resp.Header.Get("Location")))
	case resp.StatusCode != http.StatusOK:
		return fail(StepStatus, false, fmt.Errorf("HTTP status %s, want 200", resp.Status))
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "text/plain" {
		return fail(StepContentType, true, fmt.Errorf("media type %q, want text/plain", ct))
	}
	limit := f.MaxSize
	if limit <= 0 {
		limit = DefaultMaxSize
	}
	if resp.ContentLength > limit {
		return fail(StepSize, true, fmt.Errorf("policy of %d bytes, over the limit of %d", resp.ContentLength, limit))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err == nil {
		// a body cut short by the deadline may end cleanly
		err = ctx.Err()
	}
	if err != nil {
		return fail(StepRead, false, err)
	}
	if int64(len(body)) > limit {
		return fail(StepSize, true, fmt.Errorf("policy over the limit of %d bytes", limit))
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return fail(StepParse, true, err)
	}
	return p, nil
}

// transport returns a transport for one fetch from host: no proxy, no
// keep-alive, no transparent decompression, TLS 1.2 at least with the
// certificate checked against host. It records in step that the
// connection is up.
func (f *Fetcher) transport(host string, step *atomic.Value) *http.Transport {
	dial := f.DialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	return &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err == nil {
				step.Store(StepTLS)
			}
			return c, err
		},
		TLSClientConfig: &tls.Config{
			ServerName: host,
			RootCAs:    f.RootCAs,
			MinVersion: tls.VersionTLS12,
		},
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
}

// isCertificateError reports whether err is the failure of the server's
// certificate to validate.
func isCertificateError(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		noRoots  x509.SystemRootsError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) ||
		errors.As(err, &hostname) || errors.As(err, &invalid) || errors.As(err, &noRoots)
}
