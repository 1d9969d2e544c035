package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"smtpd/internal/dns/dnstest"
)

func TestResolver(t *testing.T) {
	srv, err := dnstest.Start(
		"example.test. 300 IN MX 10 mx1.example.test.",
		"example.test. 300 IN MX 10 mx2.example.test.",
		"example.test. 300 IN MX 20 backup.example.test.",
		"mx1.example.test. 300 IN A 127.0.0.2",
		"mx2.example.test. 300 IN A 127.0.0.3",
		"mx2.example.test. 300 IN AAAA ::1",
		"backup.example.test. 300 IN CNAME real-backup.example.test.",
		"real-backup.example.test. 300 IN A 127.0.0.4",
		"nomx.test. 300 IN A 127.0.0.5",
		"null.test. 300 IN MX 0 .",
		"broken.test. 300 IN MX 10 gone.test.",
		"2.0.0.127.in-addr.arpa. 300 IN PTR mx1.example.test.",
	)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.ServFail("fail.test")
	r, _ := New([]string{srv.Addr})
	ctx := context.Background()

	mxs, err := r.MX(ctx, "Example.TEST")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(mxs)
	want := "[{10 mx1.example.test [127.0.0.2] false} {10 mx2.example.test [127.0.0.3 ::1] false} {20 backup.example.test [127.0.0.4] false}]"
	if got != want {
		t.Errorf("MX: %s\nwant %s", got, want)
	}
	r.MX(ctx, "example.test")
	if n := srv.Queries("example.test", "MX"); n != 1 {
		t.Errorf("%d MX queries, want 1 (cached)", n)
	}
	if mxs, err := r.MX(ctx, "nomx.test"); err != nil || len(mxs) != 1 || mxs[0].Host != "nomx.test" {
		t.Errorf("implicit MX: %v %v", mxs, err)
	}
	if _, err := r.MX(ctx, "null.test"); !errors.Is(err, ErrNullMX) || !IsPermanent(err) {
		t.Errorf("null MX: %v", err)
	}
	if _, err := r.MX(ctx, "nosuch.test"); err == nil || !IsPermanent(err) {
		t.Errorf("NXDOMAIN: %v", err)
	}
	if _, err := r.MX(ctx, "fail.test"); err == nil || IsPermanent(err) {
		t.Errorf("SERVFAIL: %v", err)
	}
	if _, err := r.MX(ctx, "broken.test"); err == nil || !IsPermanent(err) {
		t.Errorf("MX without address: %v", err)
	}
	if name, err := r.PTR(ctx, netip.MustParseAddr("127.0.0.2")); err != nil || name != "mx1.example.test" {
		t.Errorf("PTR: %q %v", name, err)
	}
	if name, err := r.PTR(ctx, netip.MustParseAddr("127.0.0.9")); err != nil || name != "" {
		t.Errorf("no PTR: %q %v", name, err)
	}
	dead, _ := New([]string{"127.0.0.1:1"})
	dead.Timeout = 200e6
	if _, err := dead.MX(ctx, "example.test"); err == nil || IsPermanent(err) {
		t.Errorf("no server: %v", err)
	}
}

// TXT records come back as the bytes on the wire, whatever escapes
// miekg/dns keeps them with.
func TestTXTUnescaped(t *testing.T) {
	srv, err := dnstest.Start(`t.example.test. 300 IN TXT "v=spf1 \"quoted\" semi\;colon \160byte" "second"`)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	r, err := New([]string{srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.TXT(context.Background(), "t.example.test")
	if err != nil || len(got) != 1 || got[0] != "v=spf1 \"quoted\" semi;colon \xa0bytesecond" {
		t.Errorf("%q %v", got, err)
	}
}

func TestUnescapeTXT(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:            "plain",
		`a\"b\\c`:          `a"b\c`,
		`\000\013\010\255`: "\x00\r\n\xff",
		`\256`:             "256",
		`\12`:              "12",
		`end\`:             `end\`,
		`caf\195\169`:      "café",
	} {
		var b strings.Builder
		if unescapeTXT(&b, in); b.String() != want {
			t.Errorf("unescapeTXT(%q) = %q, want %q", in, b.String(), want)
		}
	}
}

// TestValidatingServers: the AD bit is trusted by default only from
// resolvers on this host, all of them.
func TestValidatingServers(t *testing.T) {
	for _, c := range []struct {
		servers []string
		want    bool
	}{
		{nil, false},
		{[]string{"127.0.0.1:53"}, true},
		{[]string{"127.0.0.53:53", "[::1]:53"}, true},
		{[]string{"127.0.0.1:53", "192.0.2.53:53"}, false},
		{[]string{"10.255.255.53:53"}, false},
		{[]string{"resolver.example:53"}, false},
	} {
		if got := ValidatingServers(c.servers); got != c.want {
			t.Errorf("ValidatingServers(%q) = %v", c.servers, got)
		}
	}
}
