package tlsrpt

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// Post delivers a report to an https: rua (RFC 8460 §5.4): gz, the
// gzipped report (see Gzip), POSTed to endpoint as
// application/tlsrpt+gzip. Any 2xx answer is success (§5.4 expects
// "typically a 200 or 201"); the caller retries the others as §5.5
// says. client nil means http.DefaultClient, which
// has no timeout of its own: ctx should carry one.
func Post(ctx context.Context, client *http.Client, endpoint string, gz []byte) error {
	if err := checkPostURL(endpoint); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(gz))
	if err != nil {
		return fmt.Errorf("tlsrpt: posting report: %w", err)
	}
	req.Header.Set("Content-Type", MediaType)
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("tlsrpt: posting report: %w", err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	// read a little more, so that the connection can be reused
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("tlsrpt: posting report to %s: %s: %q", endpoint, resp.Status, snippet)
	}
	return nil
}

// checkPostURL checks that u is an https URL with a host.
func checkPostURL(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return fmt.Errorf("tlsrpt: posting report: %w", err)
	}
	if p.Scheme != "https" || p.Host == "" {
		return fmt.Errorf("tlsrpt: posting report: %q is not an https URL", u)
	}
	return nil
}
