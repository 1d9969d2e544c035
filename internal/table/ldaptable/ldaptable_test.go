package ldaptable_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"smtpd/internal/table"
	"smtpd/internal/table/ldaptable"
	"smtpd/internal/table/ldaptable/ldaptest"
)

// aliceHash is a bcrypt hash as a directory would store it for smtpd
// (the value is only carried, never checked, here).
const aliceHash = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"

// directory is the test data: users (posixAccount with mail and
// mailLocalAddress), mail aliases (nisMailAlias), a mail domain and two
// hosts, in the schemas Debian ships.
func directory() []string {
	return []string{`dn: ou=people,dc=example,dc=test
objectClass: organizationalUnit
ou: people`, `dn: uid=alice,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: inetLocalMailRecipient
uid: alice
cn: Alice
sn: Liddell
mail: alice@example.test
mailLocalAddress: al@example.test
mailLocalAddress: a.liddell@example.test
userPassword: ` + aliceHash + `
uidNumber: 1001
gidNumber: 1001
homeDirectory: /home/alice`, `dn: uid=bob,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: posixAccount
uid: bob
cn: Bob
sn: Builder
mail: bob@example.test
userPassword: {CRYPT}$6$salt$hash
uidNumber: 1002
gidNumber: 100
homeDirectory: /var/mail/bob`, `dn: uid=dave,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: posixAccount
uid: dave
cn: Dave
sn: No Password
uidNumber: 1004
gidNumber: 100
homeDirectory: /home/dave`, `dn: uid=dup,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: posixAccount
uid: dup
cn: Dup One
sn: Dup
userPassword: one
uidNumber: 1005
gidNumber: 100
homeDirectory: /home/dup`, `dn: cn=dup-two,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
objectClass: posixAccount
uid: dup
cn: dup-two
sn: Dup
userPassword: two
uidNumber: 1006
gidNumber: 100
homeDirectory: /home/dup2`, `dn: ou=aliases,dc=example,dc=test
objectClass: organizationalUnit
ou: aliases`, `dn: cn=postmaster,ou=aliases,dc=example,dc=test
objectClass: nisMailAlias
cn: postmaster
rfc822MailMember: alice@example.test
rfc822MailMember: bob@example.test`, `dn: cn=sales,ou=aliases,dc=example,dc=test
objectClass: nisMailAlias
cn: sales
rfc822MailMember: alice@example.test`, `dn: cn=sales-team,ou=aliases,dc=example,dc=test
objectClass: nisMailAlias
cn: sales-team
cn: sales
rfc822MailMember: carol@elsewhere.test`, `dn: cn=nobody,ou=aliases,dc=example,dc=test
objectClass: nisMailAlias
cn: nobody`, `dn: ou=domains,dc=example,dc=test
objectClass: organizationalUnit
ou: domains`, `dn: dc=example-test,ou=domains,dc=example,dc=test
objectClass: domain
objectClass: domainRelatedObject
dc: example-test
associatedDomain: example.test
associatedDomain: lists.example.test`, `dn: ou=hosts,dc=example,dc=test
objectClass: organizationalUnit
ou: hosts`, `dn: cn=mx1.example.test,ou=hosts,dc=example,dc=test
objectClass: device
objectClass: ipHost
cn: mx1.example.test
ipHostNumber: 192.0.2.10`, `dn: cn=relay.example.test,ou=hosts,dc=example,dc=test
objectClass: device
objectClass: ipHost
cn: relay.example.test
ipHostNumber: 2001:db8::25`}
}

// queries are a table-ldap configuration for the directory.
func queries() map[table.Service]ldaptable.Query {
	const user = "(&(objectClass=posixAccount)(uid=%s))"
	const host = "(&(objectClass=ipHost)(ipHostNumber=%s))"
	return map[table.Service]ldaptable.Query{
		table.Alias:       {Filter: "(&(objectClass=nisMailAlias)(cn=%s))", Attributes: []string{"rfc822MailMember"}},
		table.Domain:      {Filter: "(associatedDomain=%s)", Attributes: []string{"associatedDomain"}},
		table.Credentials: {Filter: user, Attributes: []string{"uid", "userPassword"}},
		table.Netaddr:     {Filter: host},
		table.Userinfo:    {Filter: user, Attributes: []string{"uidNumber", "gidNumber", "homeDirectory"}},
		table.Source:      {Filter: host},
		table.Mailaddr:    {Filter: "(|(mail=%s)(mailLocalAddress=%s))", Attributes: []string{"mail"}},
		table.Addrname:    {Filter: host, Attributes: []string{"cn"}},
		table.Mailaddrmap: {Filter: user, Attributes: []string{"mail", "mailLocalAddress"}},
	}
}

func options(s *ldaptest.Server) ldaptable.Options {
	return ldaptable.Options{
		URL:          s.URL,
		BindDN:       s.BindDN,
		BindPassword: s.BindPassword,
		Base:         s.Base,
		Queries:      queries(),
		Timeout:      5 * time.Second,
	}
}

func open(t testing.TB, o ldaptable.Options) *ldaptable.Table {
	t.Helper()
	tb, err := ldaptable.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

func TestLookup(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	tb := open(t, options(s))
	if err := tb.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		service table.Service
		key     string
		value   string
		found   bool
		err     string // a part of the error; "" for none
	}{
		{table.Alias, "postmaster", "alice@example.test, bob@example.test", true, ""},
		// two entries have cn=sales: the values of both
		{table.Alias, "sales", "alice@example.test, carol@elsewhere.test", true, ""},
		{table.Alias, "PostMaster", "alice@example.test, bob@example.test", true, ""},
		{table.Alias, "root", "", false, ""},
		{table.Alias, "*", "", false, ""},
		{table.Alias, "nobody", "", false, "no rfc822MailMember in"},

		{table.Domain, "example.test", "example.test", true, ""},
		{table.Domain, "lists.example.test", "example.test", true, ""},
		{table.Domain, "example.org", "", false, ""},

		{table.Credentials, "alice", "alice:" + aliceHash, true, ""},
		{table.Credentials, "bob", "bob:{CRYPT}$6$salt$hash", true, ""},
		{table.Credentials, "mallory", "", false, ""},
		// escaped: neither a wildcard nor a second filter
		{table.Credentials, "*", "", false, ""},
		{table.Credentials, "alice)(uid=*", "", false, ""},
		{table.Credentials, "al*", "", false, ""},
		{table.Credentials, "ålice", "", false, ""},
		{table.Credentials, "dave", "", false, "has no userPassword"},
		{table.Credentials, "dup", "", false, "more than one entry"},

		{table.Netaddr, "192.0.2.10", "", true, ""},
		{table.Netaddr, "2001:db8::25", "", true, ""},
		{table.Netaddr, "192.0.2.11", "", false, ""},

		{table.Userinfo, "alice", "1001:1001:/home/alice", true, ""},
		{table.Userinfo, "bob", "1002:100:/var/mail/bob", true, ""},
		{table.Userinfo, "mallory", "", false, ""},
		{table.Userinfo, "dup", "", false, "more than one entry"},

		{table.Source, "192.0.2.10", "", true, ""},
		{table.Source, "198.51.100.1", "", false, ""},

		{table.Mailaddr, "alice@example.test", "alice@example.test", true, ""},
		{table.Mailaddr, "a.liddell@example.test", "alice@example.test", true, ""},
		{table.Mailaddr, "eve@example.test", "", false, ""},

		{table.Addrname, "192.0.2.10", "mx1.example.test", true, ""},
		{table.Addrname, "2001:db8::25", "relay.example.test", true, ""},
		{table.Addrname, "192.0.2.99", "", false, ""},

		{table.Mailaddrmap, "alice", "alice@example.test, al@example.test, a.liddell@example.test", true, ""},
		{table.Mailaddrmap, "bob", "bob@example.test", true, ""},
		{table.Mailaddrmap, "mallory", "", false, ""},
		{table.Mailaddrmap, "dave", "", false, "no mail or mailLocalAddress in"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.service, tt.key), func(t *testing.T) {
			v, found, err := tb.Lookup(context.Background(), tt.service, tt.key)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Lookup = %q, %v, %v; want an error with %q", v, found, err, tt.err)
				}
				if found || v != "" {
					t.Errorf("Lookup = %q, %v with the error", v, found)
				}
				return
			}
			if err != nil || v != tt.value || found != tt.found {
				t.Fatalf("Lookup = %q, %v, %v; want %q, %v", v, found, err, tt.value, tt.found)
			}
		})
	}
	t.Run("every service tested", func(t *testing.T) {
		seen := map[table.Service]bool{}
		for _, tt := range tests {
			if tt.found {
				seen[tt.service] = true
			}
		}
		for _, s := range table.Services {
			if !seen[s] {
				t.Errorf("no found case for %s", s)
			}
		}
	})
}

func TestNoQuery(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	o := options(s)
	o.Queries = map[table.Service]ldaptable.Query{table.Domain: queries()[table.Domain]}
	tb := open(t, o)
	_, found, err := tb.Lookup(context.Background(), table.Alias, "postmaster")
	if !errors.Is(err, ldaptable.ErrNoQuery) || found {
		t.Fatalf("Lookup of an unconfigured service = %v, %v; want ErrNoQuery", found, err)
	}
}

// slack is what a failed lookup may take beyond its timeout: the test
// machines run other tests beside these.
const slack = 2 * time.Second

// wantError checks that a lookup fails, and within limit: a directory
// that cannot answer must tempfail the mail, never reject it as not
// found, and never hold the session.
func wantError(t *testing.T, tb *ldaptable.Table, limit time.Duration) error {
	t.Helper()
	start := time.Now()
	v, found, err := tb.Lookup(context.Background(), table.Credentials, "alice")
	took := time.Since(start)
	if err == nil || found || v != "" {
		t.Fatalf("Lookup = %q, %v, %v; want an error", v, found, err)
	}
	if took > limit {
		t.Errorf("the failed lookup took %v, more than %v", took, limit)
	}
	t.Logf("in %v: %v", took.Round(time.Millisecond), err)
	return err
}

// wantAlice polls until a lookup succeeds, failing on "not found" or
// on a wrong value at any time.
func wantAlice(t *testing.T, tb *ldaptable.Table, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		v, found, err := tb.Lookup(context.Background(), table.Credentials, "alice")
		switch {
		case err == nil && found && v == "alice:"+aliceHash:
			return
		case err == nil:
			t.Fatalf("Lookup = %q, %v, nil: a wrong answer", v, found)
		case time.Now().After(deadline):
			t.Fatalf("no answer within %v: %v", within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWrongPassword(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	o := options(s)
	o.BindPassword = "not-the-password"
	tb := open(t, o)
	for range 2 {
		// the second comes within the hold-off: the same error, at once
		err := wantError(t, tb, slack)
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			t.Errorf("error %v does not wrap invalidCredentials", err)
		}
		if strings.Contains(err.Error(), o.BindPassword) {
			t.Errorf("error %v shows the password", err)
		}
	}
	if err := tb.Ping(context.Background()); err == nil {
		t.Error("Ping succeeded")
	}
}

// TestAnonymous: an anonymous table sees nothing in a directory that
// lets only its account read; Ping tells, where lookups only find
// nothing.
func TestAnonymous(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	o := options(s)
	o.BindDN, o.BindPassword = "", ""
	tb := open(t, o)
	// slapd answers insufficientAccess; a server that hides the base
	// instead gives no entry, which Ping reports too
	if err := tb.Ping(context.Background()); err == nil {
		t.Fatal("Ping succeeded without a bind")
	} else {
		t.Log(err)
	}
}

func TestServerStopped(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	o := options(s)
	o.Timeout = 2 * time.Second
	tb := open(t, o)
	wantAlice(t, tb, 0)
	s.Stop()
	wantError(t, tb, o.Timeout+slack)
	wantError(t, tb, o.Timeout+slack)
	s.Restart(t)
	wantAlice(t, tb, 5*time.Second)
}

// TestServerHung: a server that accepts connections but does not
// answer (SIGSTOP) makes a lookup fail within the timeout, both on the
// open connection and on a new one, whose bind hangs.
func TestServerHung(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	o := options(s)
	o.Timeout = time.Second
	tb := open(t, o)
	wantAlice(t, tb, 0)
	s.Pause(t)
	err := wantError(t, tb, o.Timeout+slack)
	if !errors.Is(err, context.DeadlineExceeded) && !ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
		t.Errorf("error %v is not a timeout", err)
	}
	// the hung connection was dropped: this one dials, and its bind
	// times out
	wantError(t, tb, o.Timeout+slack)
	s.Resume(t)
	wantAlice(t, tb, 5*time.Second)
}

func TestReconnect(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	tb := open(t, options(s))
	for range 3 {
		wantAlice(t, tb, 0)
		s.Restart(t)
		wantAlice(t, tb, 5*time.Second)
	}
}

// TestConcurrentRestart: lookups from many goroutines while the
// server restarts get the answer or an error, never "not found".
func TestConcurrentRestart(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	o := options(s)
	o.Timeout = 2 * time.Second
	tb := open(t, o)
	wantAlice(t, tb, 0)
	var stop atomic.Bool
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				v, found, err := tb.Lookup(context.Background(), table.Userinfo, "alice")
				switch {
				case err != nil:
					failed.Add(1)
					time.Sleep(10 * time.Millisecond)
				case !found || v != "1001:1001:/home/alice":
					t.Errorf("Lookup = %q, %v, nil during the restart", v, found)
					return
				default:
					ok.Add(1)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	s.Restart(t)
	time.Sleep(200 * time.Millisecond)
	wantAlice(t, tb, 5*time.Second)
	before := ok.Load()
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if ok.Load() == before {
		t.Error("no lookups succeeded after the restart")
	}
	t.Logf("%d answers, %d errors", ok.Load(), failed.Load())
}

func TestTLS(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	roots := &tls.Config{RootCAs: s.CertPool(t)}
	t.Run("starttls", func(t *testing.T) {
		o := options(s)
		o.StartTLS, o.TLSConfig = true, roots
		wantAlice(t, open(t, o), 0)
	})
	t.Run("ldaps", func(t *testing.T) {
		o := options(s)
		o.URL, o.TLSConfig = s.LDAPSURL, roots
		wantAlice(t, open(t, o), 0)
	})
	// an untrusted certificate is an error, and no reason to go on in
	// clear
	t.Run("starttls untrusted", func(t *testing.T) {
		o := options(s)
		o.StartTLS = true
		err := wantError(t, open(t, o), slack)
		if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("error %v is not about the certificate", err)
		}
	})
	t.Run("ldaps untrusted", func(t *testing.T) {
		o := options(s)
		o.URL = s.LDAPSURL
		wantError(t, open(t, o), slack)
	})
}

func TestClose(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	tb := open(t, options(s))
	wantAlice(t, tb, 0)
	tb.Close()
	_, found, err := tb.Lookup(context.Background(), table.Credentials, "alice")
	if !errors.Is(err, ldaptable.ErrClosed) || found {
		t.Fatalf("Lookup after Close = %v, %v; want ErrClosed", found, err)
	}
}

// TestGoroutines: closing a table, also after a hung server, leaves
// none of go-ldap's goroutines behind.
func TestGoroutines(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	before := runtime.NumGoroutine()
	for range 20 {
		tb, err := ldaptable.Open(options(s))
		if err != nil {
			t.Fatal(err)
		}
		wantAlice(t, tb, 0)
		tb.Close()
	}
	o := options(s)
	o.Timeout = 300 * time.Millisecond
	tb := open(t, o)
	wantAlice(t, tb, 0)
	s.Pause(t)
	wantError(t, tb, slack)
	wantError(t, tb, slack)
	s.Resume(t)
	tb.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCanceled(t *testing.T) {
	s := ldaptest.Start(t, directory()...)
	tb := open(t, options(s))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, found, err := tb.Lookup(ctx, table.Credentials, "alice"); err == nil || found {
		t.Fatalf("Lookup with a canceled context = %v, %v", found, err)
	}
	// a caller giving up says nothing of the server: no hold-off
	wantAlice(t, tb, 0)
}

// TestOpen checks the options; it needs no server.
func TestOpen(t *testing.T) {
	good := func() ldaptable.Options {
		return ldaptable.Options{
			URL:          "ldap://127.0.0.1:1",
			BindDN:       "cn=smtpd,dc=example,dc=test",
			BindPassword: "x",
			Base:         "dc=example,dc=test",
			Queries:      queries(),
		}
	}
	if _, err := ldaptable.Open(good()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	tests := []struct {
		name   string
		change func(*ldaptable.Options)
		err    string
	}{
		{"scheme", func(o *ldaptable.Options) { o.URL = "ldapi:///run/slapd" }, "scheme"},
		{"no host", func(o *ldaptable.Options) { o.URL = "ldap://" }, "host"},
		{"base in url", func(o *ldaptable.Options) { o.URL = "ldap://h/dc=example" }, "host"},
		{"starttls on ldaps", func(o *ldaptable.Options) { o.URL, o.StartTLS = "ldaps://h", true }, "StartTLS"},
		{"dn without password", func(o *ldaptable.Options) { o.BindPassword = "" }, "BindPassword"},
		{"password without dn", func(o *ldaptable.Options) { o.BindDN = "" }, "BindPassword"},
		{"no base", func(o *ldaptable.Options) { o.Base = "" }, "base"},
		{"bad base", func(o *ldaptable.Options) { o.Base = "example" }, "base"},
		{"negative timeout", func(o *ldaptable.Options) { o.Timeout = -1 }, "timeout"},
		{"no queries", func(o *ldaptable.Options) { o.Queries = nil }, "no queries"},
		{"unknown service", func(o *ldaptable.Options) {
			o.Queries["relayhost"] = ldaptable.Query{Filter: "(cn=%s)"}
		}, "unknown service"},
		{"no key", func(o *ldaptable.Options) {
			o.Queries[table.Domain] = ldaptable.Query{Filter: "(objectClass=domain)"}
		}, "no %s"},
		{"bad filter", func(o *ldaptable.Options) {
			o.Queries[table.Domain] = ldaptable.Query{Filter: "(&(dc=%s)"}
		}, "filter"},
		{"credentials with one attribute", func(o *ldaptable.Options) {
			o.Queries[table.Credentials] = ldaptable.Query{Filter: "(uid=%s)", Attributes: []string{"userPassword"}}
		}, "wants 2 attributes"},
		{"userinfo with two attributes", func(o *ldaptable.Options) {
			o.Queries[table.Userinfo] = ldaptable.Query{Filter: "(uid=%s)", Attributes: []string{"uidNumber", "gidNumber"}}
		}, "wants 3 attributes"},
		{"alias without attribute", func(o *ldaptable.Options) {
			o.Queries[table.Alias] = ldaptable.Query{Filter: "(cn=%s)"}
		}, "wants 1 to"},
		{"domain with two attributes", func(o *ldaptable.Options) {
			o.Queries[table.Domain] = ldaptable.Query{Filter: "(dc=%s)", Attributes: []string{"dc", "o"}}
		}, "wants 0 to 1"},
		{"bad attribute", func(o *ldaptable.Options) {
			o.Queries[table.Addrname] = ldaptable.Query{Filter: "(cn=%s)", Attributes: []string{"c n"}}
		}, "attribute name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good()
			tt.change(&o)
			_, err := ldaptable.Open(o)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("Open = %v; want an error with %q", err, tt.err)
			}
		})
	}
}

// BenchmarkLookup measures lookups per second against a local slapd,
// one at a time (the latency a recipient waits) and from many
// goroutines sharing the connection.
func BenchmarkLookup(b *testing.B) {
	s := ldaptest.Start(b, directory()...)
	tb := open(b, options(s))
	// b.Error, not b.Fatal: RunParallel's goroutines may not stop the
	// benchmark
	lookup := func(b *testing.B) bool {
		v, found, err := tb.Lookup(context.Background(), table.Userinfo, "alice")
		if err != nil || !found || v != "1001:1001:/home/alice" {
			b.Errorf("Lookup = %q, %v, %v", v, found, err)
			return false
		}
		return true
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if !lookup(b) {
				return
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !lookup(b) {
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
	})
}
