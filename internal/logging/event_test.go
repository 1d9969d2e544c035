package logging

import (
	"bytes"
	"crypto/tls"
	"regexp"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{900 * time.Millisecond, "0s"},
		{time.Second, "1s"},
		{59 * time.Second, "59s"},
		{time.Minute, "1m"},
		{61 * time.Second, "1m1s"},
		{time.Hour + 2*time.Second, "1h2s"},
		{26*time.Hour + 3*time.Minute + 4*time.Second, "1d2h3m4s"},
		{9 * 24 * time.Hour, "9d"},
		{-90 * time.Second, "-1m30s"},
	} {
		if got := Duration(tc.d); got != tc.want {
			t.Errorf("Duration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestAddrText(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":   "192.0.2.1",
		"2001:db8::1": "[2001:db8::1]",
		"[::1]":       "[::1]",
		"local":       "local",
	} {
		if got := AddrText(in); got != want {
			t.Errorf("AddrText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTLSText(t *testing.T) {
	for _, tc := range []struct {
		version, suite uint16
		want           string
	}{
		{tls.VersionTLS13, tls.TLS_AES_128_GCM_SHA256, "TLSv1.3:TLS_AES_128_GCM_SHA256:128"},
		{tls.VersionTLS13, tls.TLS_AES_256_GCM_SHA384, "TLSv1.3:TLS_AES_256_GCM_SHA384:256"},
		{tls.VersionTLS13, tls.TLS_CHACHA20_POLY1305_SHA256, "TLSv1.3:TLS_CHACHA20_POLY1305_SHA256:256"},
		{tls.VersionTLS12, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, "TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384:256"},
		{tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, "TLSv1.2:ECDHE-ECDSA-CHACHA20-POLY1305:256"},
		{tls.VersionTLS12, tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA, "TLSv1.2:DES-CBC3-SHA:112"},
	} {
		got := TLSText(tls.ConnectionState{Version: tc.version, CipherSuite: tc.suite})
		if got != tc.want {
			t.Errorf("TLSText(%#x, %#x) = %q, want %q", tc.version, tc.suite, got, tc.want)
		}
	}
	// every suite Go offers has a name and a strength
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		got := TLSText(tls.ConnectionState{Version: tls.VersionTLS12, CipherSuite: s.ID})
		if !regexp.MustCompile(`^TLSv1\.2:[A-Z0-9_-]+:(112|128|256)$`).MatchString(got) {
			t.Errorf("%s: %q", s.Name, got)
		}
	}
}

func TestEscapes(t *testing.T) {
	for _, tc := range []struct {
		in, quote, token, clean string
	}{
		{"RCPT TO:<a@example.org>", "RCPT TO:<a@example.org>", `RCPT\040TO:<a@example.org>`, "RCPT TO:<a@example.org>"},
		{`say "hi"`, `say \"hi\"`, `say\040"hi"`, `say "hi"`},
		{`a\b`, `a\\b`, `a\\b`, `a\\b`},
		{"a\r\nb\tc", `a\r\nb\tc`, `a\r\nb\tc`, `a\r\nb\tc`},
		{"\x00\x1b\x7f", `\000\033\177`, `\000\033\177`, `\000\033\177`},
		{"josé", `jos\303\251`, `jos\303\251`, "josé"},
		{"", "", "", ""},
	} {
		if got := Quote(tc.in); got != tc.quote {
			t.Errorf("Quote(%q) = %q, want %q", tc.in, got, tc.quote)
		}
		if got := Token(tc.in); got != tc.token {
			t.Errorf("Token(%q) = %q, want %q", tc.in, got, tc.token)
		}
		if got := Clean(tc.in); got != tc.clean {
			t.Errorf("Clean(%q) = %q, want %q", tc.in, got, tc.clean)
		}
	}
}

func TestEventHasNoProcessName(t *testing.T) {
	var out bytes.Buffer
	l := NewWriter("smtp", &out, false)
	l.Infof("plain")
	l.Event("%016x smtp connected address=%s host=%s", uint64(0x1c0e5c2c4b1bd6a1), "192.0.2.1", "192.0.2.1")
	re := regexp.MustCompile(`(?m)^\S+ smtpd\[\d+\]: smtp: plain\n\S+ smtpd\[\d+\]: 1c0e5c2c4b1bd6a1 smtp connected address=192\.0\.2\.1 host=192\.0\.2\.1\n$`)
	if !re.MatchString(out.String()) {
		t.Errorf("log:\n%s", out.String())
	}
}
