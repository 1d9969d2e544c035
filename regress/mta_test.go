package regress

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"smtpd/internal/dns/dnstest"
)

// mxWorld is a test DNS server and receiving smtpd instances for the
// mail exchangers of example.test: 127.0.0.2 and 127.0.0.3 at
// preference 10, 127.0.0.4 at 20, all on one port.
type mxWorld struct {
	dns  *dnstest.Server
	port int
	mx   map[string]*Daemon
}

func startMXWorld(t *testing.T, records ...string) *mxWorld {
	t.Helper()
	w := &mxWorld{port: FreePort(t), mx: map[string]*Daemon{}}
	zone := append([]string{
		"example.test. 300 IN MX 10 mx1.example.test.",
		"example.test. 300 IN MX 10 mx2.example.test.",
		"example.test. 300 IN MX 20 backup.example.test.",
		"mx1.example.test. 300 IN A 127.0.0.2",
		"mx2.example.test. 300 IN A 127.0.0.3",
		"backup.example.test. 300 IN A 127.0.0.4",
		"2.0.0.127.in-addr.arpa. 300 IN PTR mx1.example.test.",
		"3.0.0.127.in-addr.arpa. 300 IN PTR mx2.example.test.",
		"4.0.0.127.in-addr.arpa. 300 IN PTR backup.example.test.",
	}, records...)
	var err error
	if w.dns, err = dnstest.Start(zone...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.dns.Close)
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		conf := strings.Replace(DefaultConfig, `hostname       = "mx.example.test"`, `hostname       = "mx-`+ip+`.example.test"`, 1)
		w.mx[ip] = StartWith(t, bin, Options{Config: conf, Addr: fmt.Sprintf("%s:%d", ip, w.port)})
	}
	return w
}

// relayConfig relays example.test (and anything in extra) through DNS.
func (w *mxWorld) relayConfig(extra string) string {
	return fmt.Sprintf(`
hostname       = "out.example.net"
spool          = "spool"
control_socket = "run/smtpd.sock"
resolver       = ["%s"]
mx_port        = %d

limits {
  retry_base = "1s"
  mails_per_session = 100000
}

listen "in" { address = "{{ADDR}}" }

action "local" {
  maildir  = "mail"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
action "out" { relay = "mx" }
%s
match {
  from   = "any"
  for    = "out.example.net"
  action = action.local
}
match {
  from   = "any"
  for    = "any"
  action = action.out
}
`, w.dns.Addr, w.port, extra)
}

// TestMXRouting: 200 messages to 20 recipients of a domain with two
// primary exchangers and a backup: one MX lookup, one PTR per host used,
// both primaries get a share, the backup none, every message arrives.
func TestMXRouting(t *testing.T) {
	w := startMXWorld(t)
	out := StartWith(t, bin, Options{Config: w.relayConfig("")})
	const n = 200
	sendMany(t, out.SMTPAddr, n, 4, "Subject: routed\r\n\r\nhello\r\n", func(i int) string {
		return fmt.Sprintf("user%d@example.test", i%20)
	})
	out.WaitStat("scheduler.delivery.ok", fmt.Sprint(n), 60*time.Second)
	got := map[string]int{}
	total := 0
	for ip, d := range w.mx {
		got[ip] = len(d.Mail())
		total += got[ip]
	}
	if total != n || got["127.0.0.2"] == 0 || got["127.0.0.3"] == 0 || got["127.0.0.4"] != 0 {
		t.Errorf("messages per exchanger %v, want %d over the two primaries", got, n)
	}
	if q := w.dns.Queries("example.test", "MX"); q != 1 {
		t.Errorf("%d MX queries, want 1", q)
	}
	for _, ptr := range []string{"2.0.0.127.in-addr.arpa", "3.0.0.127.in-addr.arpa"} {
		if q := w.dns.Queries(ptr, "PTR"); q != 1 {
			t.Errorf("%d PTR queries for %s, want 1", q, ptr)
		}
	}
	t.Logf("per exchanger: %v; sessions at each: %s / %s", got, w.mx["127.0.0.2"].Stats()["smtp.session.inet4"], w.mx["127.0.0.3"].Stats()["smtp.session.inet4"])
}
