package spf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"smtpd/internal/dns"
	"smtpd/internal/dns/dnstest"
)

// suiteFile is the openspf.org RFC 7208 test suite; see
// testdata/ORIGIN.md.
const suiteFile = "testdata/rfc7208-tests.yml"

// suiteScenario is one document of the suite.
type suiteScenario struct {
	Description string               `yaml:"description"`
	Comment     string               `yaml:"comment"`
	Tests       map[string]suiteCase `yaml:"tests"`
	Zonedata    map[string][]any     `yaml:"zonedata"`
}

// suiteCase is one test of the suite.
type suiteCase struct {
	Description string  `yaml:"description"`
	Comment     string  `yaml:"comment"`
	Spec        string  `yaml:"spec"`
	Helo        string  `yaml:"helo"`
	Host        string  `yaml:"host"`
	MailFrom    string  `yaml:"mailfrom"`
	Result      any     `yaml:"result"` // a result or a list of them
	Explanation *string `yaml:"explanation"`
	Strict      int     `yaml:"strict"`
}

func loadSuite(t testing.TB) []suiteScenario {
	t.Helper()
	f, err := os.Open(suiteFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []suiteScenario
	dec := yaml.NewDecoder(f)
	for {
		var s suiteScenario
		if err := dec.Decode(&s); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: %v", suiteFile, err)
		}
		out = append(out, s)
	}
	return out
}

// TestRFC7208Suite runs every test of the RFC 7208 test suite against
// a real resolver (smtpd/internal/dns) asking a test DNS server that
// serves the scenario's zone data on loopback.
func TestRFC7208Suite(t *testing.T) {
	scenarios := loadSuite(t)
	var passed, failed atomic.Int32
	total := 0
	for _, sc := range scenarios {
		total += len(sc.Tests)
	}
	t.Run("scenarios", func(t *testing.T) {
		for _, sc := range scenarios {
			t.Run(sc.Description, func(t *testing.T) {
				t.Parallel()
				srv := startZone(t, sc.Zonedata)
				for _, name := range slices.Sorted(maps.Keys(sc.Tests)) {
					tc := sc.Tests[name]
					if t.Run(name, func(t *testing.T) { runSuiteCase(t, srv.Addr, tc) }) {
						passed.Add(1)
					} else {
						failed.Add(1)
					}
				}
			})
		}
	})
	summary := fmt.Sprintf("RFC 7208 test suite: %d passed, %d failed (of %d in %d scenarios)",
		passed.Load(), failed.Load(), total, len(scenarios))
	t.Log(summary)
	if testing.Verbose() {
		fmt.Println(summary)
	}
	if failed.Load() > 0 || int(passed.Load()) != total {
		t.Error(summary)
	}
}

func runSuiteCase(t *testing.T, server string, tc suiteCase) {
	ip, err := netip.ParseAddr(tc.Host)
	if err != nil {
		t.Fatalf("host %q: %v", tc.Host, err)
	}
	r, err := dns.New([]string{server})
	if err != nil {
		t.Fatal(err)
	}
	// TIMEOUT entries get no answer: keep the wait short
	r.Timeout = time.Second
	c := &Checker{Resolver: r, Hostname: "receiver.example.org", DefaultExplanation: "DEFAULT"}
	o := c.CheckMail(context.Background(), ip, tc.MailFrom, tc.Helo)

	var want []Result
	switch v := tc.Result.(type) {
	case string:
		want = []Result{Result(v)}
	case []any:
		for _, x := range v {
			want = append(want, Result(fmt.Sprint(x)))
		}
	default:
		t.Fatalf("result %v of type %T", tc.Result, tc.Result)
	}
	if !slices.Contains(want, o.Result) {
		t.Errorf("result %s (err %v), want %v\nspec %s: %s %s", o.Result, o.Err, want, tc.Spec,
			strings.TrimSpace(tc.Description), strings.TrimSpace(tc.Comment))
	} else if o.Result != want[0] {
		t.Logf("result %s, allowed, though %s is preferred", o.Result, want[0])
	}
	if tc.Explanation != nil && o.Explanation != *tc.Explanation {
		t.Errorf("explanation %q, want %q", o.Explanation, *tc.Explanation)
	}
	if (o.Result == TempError || o.Result == PermError) != (o.Err != nil) {
		t.Errorf("result %s with error %v", o.Result, o.Err)
	}
}

// zoneEntry is one entry of a name's list in the zone data: a record,
// or TIMEOUT.
type zoneEntry struct {
	typ     string // "A", "TXT"... or "TIMEOUT"
	rr      mdns.RR
	served  bool // false for "TXT: NONE"
	timeout bool
}

// startZone serves zone data the way the suite's reference driver
// (pyspf's testspf.py) does; see testdata/ORIGIN.md.
func startZone(t *testing.T, zone map[string][]any) *dnstest.Server {
	t.Helper()
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	srv.EmptyNonTerminals(true)
	for owner, list := range zone {
		name := escapeName(strings.TrimSuffix(owner, ".")) + "."
		var entries []zoneEntry
		hasTXT := false
		var generated []zoneEntry
		for _, item := range list {
			e, err := zoneItem(name, item)
			if err != nil {
				t.Fatalf("zonedata %s: %v", owner, err)
			}
			switch e.typ {
			case "TXT":
				hasTXT = true
			case "SPF":
				spf := e.rr.(*mdns.SPF)
				txt := &mdns.TXT{Hdr: hdr(name, mdns.TypeTXT), Txt: spf.Txt}
				generated = append(generated, zoneEntry{typ: "TXT", rr: txt, served: true})
			}
			entries = append(entries, e)
		}
		if !hasTXT {
			entries = append(entries, generated...)
		}
		seen := map[uint16]bool{}
		for _, e := range entries {
			if e.timeout {
				for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA, mdns.TypeMX, mdns.TypePTR, mdns.TypeTXT, mdns.TypeSPF, mdns.TypeCNAME} {
					if !seen[qt] {
						srv.Timeout(name, qt)
					}
				}
				break // what follows TIMEOUT is not served
			}
			if e.served { // "TXT: NONE" is not a record at all
				seen[mdns.StringToType[e.typ]] = true
				srv.AddRR(e.rr)
			}
		}
	}
	return srv
}

func hdr(name string, qtype uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: qtype, Class: mdns.ClassINET, Ttl: 300}
}

// zoneItem converts one entry of the zone data.
func zoneItem(name string, item any) (zoneEntry, error) {
	if s, ok := item.(string); ok {
		if s == "TIMEOUT" {
			return zoneEntry{typ: s, timeout: true}, nil
		}
		return zoneEntry{}, fmt.Errorf("entry %q", s)
	}
	m, ok := item.(map[string]any)
	if !ok || len(m) != 1 {
		return zoneEntry{}, fmt.Errorf("entry %v", item)
	}
	for typ, v := range m {
		e := zoneEntry{typ: typ, served: true}
		switch typ {
		case "A", "AAAA":
			ip := net.ParseIP(fmt.Sprint(v))
			if ip == nil {
				return e, fmt.Errorf("%s %v", typ, v)
			}
			if typ == "A" {
				e.rr = &mdns.A{Hdr: hdr(name, mdns.TypeA), A: ip.To4()}
			} else {
				e.rr = &mdns.AAAA{Hdr: hdr(name, mdns.TypeAAAA), AAAA: ip}
			}
		case "MX":
			l, ok := v.([]any)
			if !ok || len(l) != 2 {
				return e, fmt.Errorf("MX %v", v)
			}
			pref, _ := l[0].(int)
			e.rr = &mdns.MX{Hdr: hdr(name, mdns.TypeMX), Preference: uint16(pref), Mx: zoneName(fmt.Sprint(l[1]))}
		case "PTR":
			e.rr = &mdns.PTR{Hdr: hdr(name, mdns.TypePTR), Ptr: zoneName(fmt.Sprint(v))}
		case "CNAME":
			e.rr = &mdns.CNAME{Hdr: hdr(name, mdns.TypeCNAME), Target: zoneName(fmt.Sprint(v))}
		case "TXT", "SPF":
			var strs []string
			switch v := v.(type) {
			case string:
				if v == "NONE" {
					e.served = false
				}
				strs = txtStrings(v)
			case []any:
				for _, s := range v {
					strs = append(strs, txtStrings(fmt.Sprint(s))...)
				}
			default:
				return e, fmt.Errorf("%s %v", typ, v)
			}
			if typ == "TXT" {
				e.rr = &mdns.TXT{Hdr: hdr(name, mdns.TypeTXT), Txt: strs}
			} else {
				e.rr = &mdns.SPF{Hdr: hdr(name, mdns.TypeSPF), Txt: strs}
			}
		default:
			return e, fmt.Errorf("type %s", typ)
		}
		return e, nil
	}
	panic("unreachable")
}

// zoneName returns a name of the zone data in presentation format.
func zoneName(s string) string {
	return escapeName(strings.TrimSuffix(s, ".")) + "."
}

// txtStrings cuts text into character-strings of at most 255 octets,
// escaped as github.com/miekg/dns packs them: a backslash is an escape,
// so it and bytes that are not printable are written \DDD.
func txtStrings(text string) []string {
	var out []string
	for {
		n := min(len(text), 255)
		var b strings.Builder
		for i := 0; i < n; i++ {
			c := text[i]
			if c < ' ' || c > '~' || c == '\\' || c == '"' {
				fmt.Fprintf(&b, "\\%03d", c)
			} else {
				b.WriteByte(c)
			}
		}
		out = append(out, b.String())
		text = text[n:]
		if text == "" {
			return out
		}
	}
}
