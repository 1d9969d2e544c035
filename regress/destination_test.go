package regress

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"smtpd/internal/dns/dnstest"
)

// destinationConfig relays dest.test through the test DNS, with the
// destination limits given.
func destinationConfig(resolver string, port int, limits string) string {
	return fmt.Sprintf(`
hostname       = "mx.local.test"
spool          = "spool"
control_socket = "run/smtpd.sock"
resolver       = ["%s"]
mx_port        = %d

limits {
  retry_base        = "1s"
  mails_per_session = 1000
}

listen "mx" { address = "{{ADDR}}" }

action "out" { relay = "mx" }

%s

match {
  from   = "any"
  for    = "dest.test"
  action = action.out
}
`, resolver, port, limits)
}

// receiverLine finds, in a receiving daemon's log, the start of a
// session and each message it accepted, with the session id.
var receiverLine = regexp.MustCompile(`(?m)^(\S+) smtpd\[\d+\]: smtp: ([0-9a-f]{16}): (session from|message \S+ accepted)`)

// arrivals reads from a receiving daemon's log when each message was
// accepted, sorted, and the span of each session from its start to its
// last message.
func arrivals(t *testing.T, log string) (accepted []time.Time, spans map[string][2]time.Time) {
	t.Helper()
	spans = map[string][2]time.Time{}
	for _, m := range receiverLine.FindAllStringSubmatch(log, -1) {
		at, err := time.ParseInLocation("2006-01-02T15:04:05.000", m[1], time.Local)
		if err != nil {
			t.Fatalf("log time %q: %v", m[1], err)
		}
		sp := spans[m[2]]
		if m[3] == "session from" {
			sp[0] = at
		} else {
			accepted = append(accepted, at)
			sp[1] = at
		}
		spans[m[2]] = sp
	}
	sort.Slice(accepted, func(i, j int) bool { return accepted[i].Before(accepted[j]) })
	for id, sp := range spans {
		if sp[1].IsZero() {
			delete(spans, id) // carried no mail
		}
	}
	return accepted, spans
}

// TestDestinationPacing: 16 messages submitted at once for a domain
// whose destination block allows 2 messages a second over one session
// arrive at its exchanger, a second smtpd, paced: never more than 2 in
// any second, over one session at a time, and none fails on the way.
// mta spaces the starts of the transactions; the receiver's clock is
// when it accepted each message, after a commit whose time varies: one
// more in a second is allowed for that. At 2/s that means a commit
// would have to take half a second longer than the next for the test to
// fail with correct pacing; at 5/s, 200 ms, which a loaded CI machine
// can take.
func TestDestinationPacing(t *testing.T) {
	const n, perSecond = 16, 2
	dnsSrv, err := dnstest.Start("dest.test. 300 IN MX 10 mx.dest.test.", "mx.dest.test. 300 IN A 127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dnsSrv.Close)
	port := FreePort(t)
	recvConf := strings.NewReplacer(`"mx.example.test"`, `"mx.dest.test"`, `["example.test"]`, `["dest.test"]`).Replace(DefaultConfig)
	recv := StartWith(t, bin, Options{Config: recvConf, Addr: fmt.Sprintf("127.0.0.2:%d", port)})
	out := StartWith(t, bin, Options{Config: destinationConfig(dnsSrv.Addr, port, fmt.Sprintf(`
destination "dest.test" {
  sessions     = 1
  message_rate = "%d/s"
}
`, perSecond))})

	start := time.Now()
	sendMany(t, out.SMTPAddr, n, 4, "Subject: paced\r\n\r\nhello\r\n", func(i int) string {
		return fmt.Sprintf("user%d@dest.test", i)
	})
	t.Logf("%d messages submitted in %v", n, time.Since(start).Round(time.Millisecond))
	recv.WaitMail(n, 25*time.Second)

	accepted, spans := arrivals(t, recv.Log())
	if len(accepted) != n {
		t.Fatalf("the receiver accepted %d messages, want %d", len(accepted), n)
	}
	most := 0
	for i := range accepted {
		j := i
		for j < n && accepted[j].Sub(accepted[i]) < time.Second {
			j++
		}
		most = max(most, j-i)
	}
	if most > perSecond+1 {
		t.Errorf("%d messages arrived within one second, want at most %d (+1)", most, perSecond)
	}
	for a, sa := range spans {
		for b, sb := range spans {
			if a < b && !sa[0].After(sb[1]) && !sb[0].After(sa[1]) {
				t.Errorf("sessions %s (%v-%v) and %s (%v-%v) carried mail at the same time", a, sa[0].Format("15:04:05.000"), sa[1].Format("15:04:05.000"), b, sb[0].Format("15:04:05.000"), sb[1].Format("15:04:05.000"))
			}
		}
	}
	out.WaitStat("scheduler.delivery.ok", fmt.Sprint(n), 10*time.Second)
	stats := out.Stats()
	if stats["scheduler.delivery.tempfail"] != "" && stats["scheduler.delivery.tempfail"] != "0" {
		t.Errorf("%s temporary failures on the way", stats["scheduler.delivery.tempfail"])
	}
	if stats["mta.throttled"] == "" || stats["mta.throttled"] == "0" {
		t.Errorf("no message waited for its turn (mta.throttled): the test shows no pacing")
	}
	t.Logf("%d messages over %v in %d sessions, at most %d in a second; mta.throttled=%s",
		n, accepted[n-1].Sub(accepted[0]).Round(time.Millisecond), len(spans), most, stats["mta.throttled"])
}
