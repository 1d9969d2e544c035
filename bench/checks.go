package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"smtpd/internal/dns/dnstest"
	"smtpd/internal/mailauth/dkim"
)

// The names of the cost rows' mail. The sender's domain is the one
// smtp-source gives (-M, -f): it publishes SPF, DKIM and DMARC records
// in the bench's DNS; the daemon signs for the recipients' domain.
const (
	senderDomain   = "bench.example"
	senderSelector = "bench"
	signDomain     = "example.test"
	// listZone is the DNS block list of the dnsbl row, under which the
	// client is not listed
	listZone = "dnsbl.example"
	// clientName is the name of the client's address, which resolves
	// back to it
	clientName = "client.bench.example"
)

// costEnv is what the cost rows need besides the daemon: the message
// they all send, signed once by the sender's domain, the signing keys
// of the signing rows and the DNS server of the check rows.
type costEnv struct {
	msg           *message
	rsaKey, edKey string // PEM files
	// dns serves the records of the sender's domain and the client's
	// address. It runs in the bench's own process, outside the daemon's
	// tree, so its CPU is not counted: it stands for the internet's
	// name servers.
	dns *dnstest.Server
}

// newCostEnv writes the cost rows' message and signing keys into dir
// and, with checks, starts the DNS server.
func newCostEnv(dir string, checks bool) (*costEnv, error) {
	env := &costEnv{rsaKey: filepath.Join(dir, "rsa.pem"), edKey: filepath.Join(dir, "ed.pem")}
	sender, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	if env.msg, err = signedMessage(dir, 2<<10, sender); err != nil {
		return nil, err
	}
	// the daemon's own keys, RSA 2048 and Ed25519 (RFC 8463), as the
	// DKIM KEYS section of smtpd.conf(5) makes them
	signer, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	for _, k := range []struct {
		path string
		key  any
	}{{env.rsaKey, signer}, {env.edKey, ed}} {
		der, err := x509.MarshalPKCS8PrivateKey(k.key)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(k.path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
	}
	if !checks {
		return env, nil
	}
	// TTL 0: every message asks again, as mail from ever new senders
	// would, rather than finding the answers in the daemon's cache
	records := []string{
		senderDomain + `. 0 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
		senderSelector + "._domainkey." + senderDomain + ". 0 IN TXT " + txtStrings(dkim.PublicRecord(sender)),
		"_dmarc." + senderDomain + `. 0 IN TXT "v=DMARC1; p=none"`,
		// the client's address, 127.0.0.1 (loopback connections come
		// from it), and back
		"1.0.0.127.in-addr.arpa. 0 IN PTR " + clientName + ".",
		clientName + ". 0 IN A 127.0.0.1",
	}
	if env.dns, err = dnstest.Start(records...); err != nil {
		return nil, fmt.Errorf("DNS server: %v", err)
	}
	return env, nil
}

// close stops the DNS server, if any.
func (e *costEnv) close() {
	if e.dns != nil {
		e.dns.Close()
	}
}

// txtStrings writes s as the quoted strings of one TXT record in zone
// file syntax, none longer than the 255 octets of a DNS string: the
// record of a 2048-bit RSA key needs two.
func txtStrings(s string) string {
	var parts []string
	for len(s) > 200 {
		parts = append(parts, `"`+s[:200]+`"`)
		s = s[200:]
	}
	return strings.Join(append(parts, `"`+s+`"`), " ")
}

// signedMessage returns a message of about size bytes of body from the
// sender's domain with one rsa-sha256 DKIM signature made with key, its
// file written into dir.
func signedMessage(dir string, size int, key *rsa.PrivateKey) (*message, error) {
	var m bytes.Buffer
	m.WriteString("From: <sender@" + senderDomain + ">\r\nTo: <rcpt@" + signDomain + ">\r\n" +
		"Subject: bench\r\nDate: Thu, 26 Nov 2026 12:00:00 +0000\r\nMessage-ID: <bench@" + senderDomain + ">\r\n\r\n")
	line := "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
	for start := m.Len(); m.Len()-start < size; {
		m.WriteString(line)
	}
	s := &dkim.Signer{Domain: senderDomain, Selector: senderSelector, Key: key}
	field, err := s.Sign(bytes.NewReader(m.Bytes()))
	if err != nil {
		return nil, err
	}
	data := append([]byte(field), m.Bytes()...)
	// smtp-source adds CR LF to each line of the file, and an empty line
	// after the last, which no DKIM canonicalization counts
	file := filepath.Join(dir, "message.txt")
	if err := os.WriteFile(file, bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n")), 0o644); err != nil {
		return nil, err
	}
	return &message{data: data, file: file}, nil
}

// checkKinds are the check and signing rows: the checks made at
// connect, once per session, then those made for each message, then
// signing.
func checkKinds() []feature {
	return []feature{fcrdnsCheck, dnsblCheck, spfCheck, dkimCheck, dmarcChecks, signRSA, signRSAEd}
}

// isCheck reports whether the feature is a set of listener checks.
func (k feature) isCheck() bool { return k >= fcrdnsCheck && k <= dmarcChecks }

// isCheckOrSign reports whether the feature is a row of the checks
// table.
func (k feature) isCheckOrSign() bool { return k >= fcrdnsCheck && k <= signRSAEd }

// checks returns the listener's checks of the feature.
func (k feature) checks() []string {
	switch k {
	case fcrdnsCheck:
		return []string{"fcrdns"}
	case dnsblCheck:
		return []string{"dnsbl"}
	case spfCheck:
		return []string{"spf"}
	case dkimCheck:
		return []string{"dkim"}
	case dmarcChecks:
		return []string{"spf", "dkim", "dmarc"}
	}
	return nil
}

// signKeys names the keys of a signing feature.
func (k feature) signKeys() string {
	if k == signRSAEd {
		return "dkim.rsa, dkim.ed"
	}
	return "dkim.rsa"
}

// describeCheck says in the table what a check or signing row does.
func (k feature) describeCheck() string {
	switch k {
	case fcrdnsCheck:
		return "`fcrdns`: PTR, then A, at connect: pass"
	case dnsblCheck:
		return "`dnsbl`, one list, at connect: not listed (NXDOMAIN)"
	case spfCheck:
		return "`spf`, at MAIL: `ip4:` pass"
	case dkimCheck:
		return "`dkim`: one rsa-sha256 signature, pass"
	case dmarcChecks:
		return "`spf`, `dkim`, `dmarc` (`p=none`): all pass"
	case signRSA:
		return "`sign = [dkim.rsa]`: RSA 2048"
	case signRSAEd:
		return "`sign = [dkim.rsa, dkim.ed]`: RSA 2048 and Ed25519"
	}
	return k.String()
}

// checkConf returns what a check or signing row adds to our
// configuration: the checks and the resolver, or the keys and sign.
func (k feature) checkConf(env *costEnv) extraConf {
	if k.isCheck() {
		c := extraConf{
			global: fmt.Sprintf("resolver = [%q]", env.dns.Addr),
			listen: `checks = ["` + strings.Join(k.checks(), `", "`) + `"]`,
		}
		if k == dnsblCheck {
			c.listen += fmt.Sprintf("\n  dnsbl = [%q]", listZone)
		}
		return c
	}
	key := func(name, path string) string {
		return fmt.Sprintf("dkim %q {\n  domain   = %q\n  selector = %q\n  key      = %q\n}\n", name, signDomain, name, path)
	}
	c := extraConf{blocks: key("rsa", env.rsaKey), action: "sign = [dkim.rsa]"}
	if k == signRSAEd {
		c.blocks += key("ed", env.edKey)
		c.action = "sign = [dkim.rsa, dkim.ed]"
	}
	return c
}

// verifier returns a function that tells, after the run, whether the
// checks or the signing did what the row means to measure, in the
// terms of filterTrouble: a check that failed takes another path than
// the one measured, cheaper or dearer. It reads the header of every
// message delivered into maildir; for dnsbl, which leaves no result in
// the message, it counts the queries for the client's address in the
// list since it was called, before the daemon started: the daemon
// keeps the NXDOMAIN for 30 s, so the first session, the bench's
// probe for the greeting, may be the only one that asks.
func (k feature) verifier(env *costEnv) func(maildir string) (int, string) {
	if k == dnsblCheck {
		name := "1.0.0.127." + listZone
		before := env.dns.Queries(name, "A")
		return func(string) (int, string) {
			if env.dns.Queries(name, "A") == before {
				return 1, "the DNS server got no query for " + name
			}
			return 0, ""
		}
	}
	var want []string // in Authentication-Results, or signers as s=
	switch k {
	case fcrdnsCheck:
		want = []string{"iprev=pass"}
	case signRSA:
		want = []string{"s=rsa"}
	case signRSAEd:
		want = []string{"s=rsa", "s=ed"}
	default:
		for _, c := range k.checks() {
			want = append(want, c+"=pass")
		}
	}
	return func(maildir string) (int, string) {
		names, _ := filepath.Glob(filepath.Join(maildir, "new", "*"))
		bad, first := 0, ""
		for _, name := range names {
			got := resultsOf(name, k == signRSA || k == signRSAEd)
			for _, w := range want {
				if !slices.Contains(got, w) {
					if bad == 0 {
						first = fmt.Sprintf("%s lacks %s: %s", filepath.Base(name), w, strings.Join(got, " "))
					}
					bad++
					break
				}
			}
		}
		if bad == 0 {
			return 0, ""
		}
		return bad, fmt.Sprintf("%d of %d messages delivered without what the row adds, the first: %s", bad, len(names), first)
	}
}

// resultsOf returns the results in the Authentication-Results fields of
// the message in file, such as "spf=pass", or with signatures "s=NAME"
// for each DKIM-Signature field of our signing domain.
func resultsOf(file string, signatures bool) []string {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	// the header, each field unfolded
	var fields []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			break
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += " " + strings.TrimSpace(line)
			continue
		}
		fields = append(fields, line)
	}
	for _, field := range fields {
		name, value, _ := strings.Cut(field, ":")
		switch {
		case strings.EqualFold(name, "Authentication-Results") && !signatures:
			for _, part := range strings.Split(value, ";") {
				if res, _, _ := strings.Cut(strings.TrimSpace(part), " "); strings.Contains(res, "=") {
					out = append(out, res)
				}
			}
		case strings.EqualFold(name, "DKIM-Signature") && signatures:
			tags := map[string]string{}
			for _, t := range strings.Split(value, ";") {
				k, v, _ := strings.Cut(t, "=")
				tags[strings.TrimSpace(k)] = strings.Join(strings.Fields(v), "")
			}
			if tags["d"] == signDomain {
				out = append(out, "s="+tags["s"])
			}
		}
	}
	return out
}

// checksNote is the note of the checks table, whose load is sc.
func checksNote(sc scenario) string {
	return fmt.Sprintf("The bench's DNS server (internal/dns/dnstest) serves an SPF record (`v=spf1 ip4:127.0.0.0/8 -all`), the DKIM key and a DMARC `p=none` record of %s and the PTR and A records of the client, 127.0.0.1, all with TTL 0, so that every message asks again as mail from ever new senders would; the block list answers NXDOMAIN, which the daemon keeps for 30 s, so that its sessions but the first find it in the cache. The server runs in the bench's process, outside the daemon's tree: its CPU is not counted, it stands for the internet. fcrdns and dnsbl run once per session, and with reused connections (%d clients) a session carries about %d messages: what these two rows cost per message is mostly that any check has mfa follow the session and write each message anew, with an Authentication-Results field in front. Every message delivered is checked for the results (or signatures) the row is about.",
		senderDomain, sc.clients, max(1, sc.msgs/sc.clients))
}
