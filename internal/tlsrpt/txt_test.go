package tlsrpt

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParseTXT(t *testing.T) {
	tests := []struct {
		name    string
		records []string
		want    []string
		err     error // nil: success; else errors.Is
	}{
		{"mailto", []string{"v=TLSRPTv1; rua=mailto:reports@example.com"},
			[]string{"mailto:reports@example.com"}, nil},
		{"https", []string{"v=TLSRPTv1;rua=https://reporting.example.com/v1/tlsrpt"},
			[]string{"https://reporting.example.com/v1/tlsrpt"}, nil},
		{"both, blanks around commas", []string{"v=TLSRPTv1; rua=mailto:a@example.com ,\thttps://r.example.net/x?y=1"},
			[]string{"mailto:a@example.com", "https://r.example.net/x?y=1"}, nil},
		{"trailing delimiter", []string{"v=TLSRPTv1; rua=mailto:a@example.com;"},
			[]string{"mailto:a@example.com"}, nil},
		{"blank before delimiter", []string{"v=TLSRPTv1 ; rua=mailto:a@example.com"},
			[]string{"mailto:a@example.com"}, nil},
		{"empty fields tolerated", []string{"v=TLSRPTv1;; rua=mailto:a@example.com ;;"},
			[]string{"mailto:a@example.com"}, nil},
		{"blanks around =", []string{"v=TLSRPTv1; rua = mailto:a@example.com"},
			[]string{"mailto:a@example.com"}, nil},
		{"scheme case", []string{"v=TLSRPTv1; rua=MAILTO:a@example.com,HTTPS://r.example.net/"},
			[]string{"mailto:a@example.com", "HTTPS://r.example.net/"}, nil},
		{"extensions ignored", []string{"v=TLSRPTv1; ext_1.a-b=some:value/x; rua=mailto:a@example.com; v=2"},
			[]string{"mailto:a@example.com"}, nil},
		{"unknown scheme ignored", []string{"v=TLSRPTv1; rua=ftp://example.com/x,mailto:a@example.com"},
			[]string{"mailto:a@example.com"}, nil},
		{"other records skipped", []string{"v=spf1 -all", "v=TLSRPTv10; rua=mailto:x@example.com", "v=TLSRPTv1; rua=mailto:a@example.com"},
			[]string{"mailto:a@example.com"}, nil},
		{"percent-decoded mailto", []string{"v=TLSRPTv1; rua=mailto:tls%2Breports@example.com"},
			[]string{"mailto:tls+reports@example.com"}, nil},
		{"encoded comma: two addresses", []string{"v=TLSRPTv1; rua=mailto:a@example.com%2Cb@example.org"},
			[]string{"mailto:a@example.com", "mailto:b@example.org"}, nil},
		{"to= header field", []string{"v=TLSRPTv1; rua=mailto:a@example.com?subject=x&to=c@example.net"},
			[]string{"mailto:a@example.com", "mailto:c@example.net"}, nil},
		{"duplicates dropped", []string{"v=TLSRPTv1; rua=mailto:a@example.com,mailto:a@example.com"},
			[]string{"mailto:a@example.com"}, nil},

		{"no record", nil, nil, ErrNoRecord},
		{"no TLSRPT record", []string{"v=spf1 -all", "hello"}, nil, ErrNoRecord},
		{"version alone", []string{"v=TLSRPTv1"}, nil, ErrNoRecord},
		{"version case", []string{"v=tlsrptv1; rua=mailto:a@example.com"}, nil, ErrNoRecord},
		{"two records", []string{"v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1; rua=mailto:b@example.com"}, nil, ErrMultipleRecords},
		{"no rua", []string{"v=TLSRPTv1; foo=bar"}, nil, ErrInvalidRecord},
		{"RUA upper case is an extension", []string{"v=TLSRPTv1; RUA=mailto:a@example.com"}, nil, ErrInvalidRecord},
		{"two rua", []string{"v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com"}, nil, ErrInvalidRecord},
		{"empty rua", []string{"v=TLSRPTv1; rua="}, nil, ErrInvalidRecord},
		{"empty URI in list", []string{"v=TLSRPTv1; rua=mailto:a@example.com,,mailto:b@example.com"}, nil, ErrInvalidRecord},
		{"only unknown schemes", []string{"v=TLSRPTv1; rua=ftp://example.com/"}, nil, ErrInvalidRecord},
		{"http is not https", []string{"v=TLSRPTv1; rua=http://example.com/"}, nil, ErrInvalidRecord},
		{"field without =", []string{"v=TLSRPTv1; rua=mailto:a@example.com; junk"}, nil, ErrInvalidRecord},
		{"bad extension name", []string{"v=TLSRPTv1; _x=1; rua=mailto:a@example.com"}, nil, ErrInvalidRecord},
		{"extension name too long", []string{"v=TLSRPTv1; " + strings.Repeat("a", 33) + "=1; rua=mailto:a@example.com"}, nil, ErrInvalidRecord},
		{"empty extension value", []string{"v=TLSRPTv1; x=; rua=mailto:a@example.com"}, nil, ErrInvalidRecord},
		{"unencoded !", []string{"v=TLSRPTv1; rua=mailto:a@example.com!10m"}, nil, ErrInvalidRecord},
		{"bad percent-encoding", []string{"v=TLSRPTv1; rua=mailto:a%2@example.com"}, nil, ErrInvalidRecord},
		{"space in URI", []string{"v=TLSRPTv1; rua=mailto:a b@example.com"}, nil, ErrInvalidRecord},
		{"no scheme", []string{"v=TLSRPTv1; rua=a@example.com"}, nil, ErrInvalidRecord},
		{"mailto without address", []string{"v=TLSRPTv1; rua=mailto:"}, nil, ErrInvalidRecord},
		{"mailto not an address", []string{"v=TLSRPTv1; rua=mailto:nobody"}, nil, ErrInvalidRecord},
		{"mailto with name", []string{"v=TLSRPTv1; rua=mailto:Name%20%3Ca@example.com%3E"}, nil, ErrInvalidRecord},
		{"https without host", []string{"v=TLSRPTv1; rua=https:/path"}, nil, ErrInvalidRecord},
		{"non-ASCII", []string{"v=TLSRPTv1; rua=mailto:ä@example.com"}, nil, ErrInvalidRecord},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseTXT(tt.records)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseTXT(%q) = %q, %v; want error %v", tt.records, got, err, tt.err)
				}
				if got != nil {
					t.Errorf("rua %q with an error", got)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("ParseTXT(%q) = %q, %v; want %q", tt.records, got, err, tt.want)
			}
		})
	}
}

func TestParseTXTMaxRUA(t *testing.T) {
	var uris []string
	for i := range MaxRUA + 5 {
		uris = append(uris, "mailto:r"+strings.Repeat("x", i)+"@example.com")
	}
	got, err := ParseTXT([]string{"v=TLSRPTv1; rua=" + strings.Join(uris, ",")})
	if err != nil || len(got) != MaxRUA || got[0] != uris[0] {
		t.Fatalf("got %d URIs (%v), want the first %d", len(got), err, MaxRUA)
	}
}

func FuzzParseTXT(f *testing.F) {
	for _, s := range []string{
		"v=TLSRPTv1; rua=mailto:reports@example.com",
		"v=TLSRPTv1;rua=https://reporting.example.com/v1/tlsrpt",
		"v=TLSRPTv1; rua=mailto:a@example.com%2Cb@example.org?to=c@example.net, https://x.example/",
		"v=TLSRPTv1 ; ext=1; rua=ftp://x/,mailto:a@b.example;",
		"v=TLSRPTv1; rua=mailto:a@example.com!10m",
		"v=TLSRPTv1; rua=mailto:%",
		"v=TLSRPTv1;;;",
	} {
		f.Add(s, "")
	}
	f.Add("v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1; rua=mailto:b@example.com")
	f.Fuzz(func(t *testing.T, a, b string) {
		var records []string
		for _, r := range []string{a, b} {
			if r != "" {
				records = append(records, r)
			}
		}
		rua, err := ParseTXT(records)
		if err != nil {
			if rua != nil {
				t.Fatalf("rua %q with error %v", rua, err)
			}
			return
		}
		if len(rua) == 0 || len(rua) > MaxRUA {
			t.Fatalf("%d URIs without error", len(rua))
		}
		for _, u := range rua {
			if !strings.HasPrefix(u, "mailto:") && !strings.HasPrefix(strings.ToLower(u), "https:") {
				t.Fatalf("URI %q is neither mailto: nor https:", u)
			}
			if strings.ContainsAny(u, "\r\n") {
				t.Fatalf("URI %q has a line break", u)
			}
		}
	})
}
