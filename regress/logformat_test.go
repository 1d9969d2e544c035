package regress

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The lines of OpenSMTPD's event format, as its sources write them
// (OpenSMTPD 7.8.0p1: smtp_session.c, mta.c mta_log, mda.c mda_log).
// Neither fail2ban (1.0.2 as Debian ships it, nor its master branch)
// nor Debian has a filter for OpenSMTPD, so these are written for the
// format, the way a fail2ban filter must read it: the address of a
// session is on its "connected" line only, and the failures name the
// session by its id (fail2ban's <F-MLFID>). They follow the prefix of
// the daemon's lines, "smtpd[PID]: ".
var (
	reConnected = regexp.MustCompile(`^(?P<id>[0-9a-f]{16}) smtp connected address=(?P<addr>\S+) host=(?P<host>\S+)$`)
	reFailed    = regexp.MustCompile(`^(?P<id>[0-9a-f]{16}) smtp failed-command command="(?P<cmd>(?:[^"\\]|\\.)*)" result="(?P<code>[45][0-9][0-9])(?: (?P<text>(?:[^"\\]|\\.)*))?"$`)
	reAuth      = regexp.MustCompile(`^(?P<id>[0-9a-f]{16}) smtp authentication user=(?P<user>\S+) result=(?P<result>ok|permfail|tempfail)$`)
	reTLS       = regexp.MustCompile(`^(?P<id>[0-9a-f]{16}) (?:smtp|mta) tls ciphers=(?P<version>TLSv1\.[0-3]):(?P<cipher>[A-Za-z0-9_-]+):(?P<bits>[0-9]+)$`)
	reMessage   = regexp.MustCompile(`^(?P<id>[0-9a-f]{16}) smtp message msgid=(?P<msgid>[0-9a-f]{8}) size=(?P<size>[0-9]+) nrcpt=(?P<nrcpt>[0-9]+) proto=(?P<proto>E?SMTP|LMTP)$`)
	reEnvelope  = regexp.MustCompile(`^(?P<id>[0-9a-f]{16}) smtp envelope evpid=(?P<evpid>[0-9a-f]{16}) from=<(?P<from>[^>]*)> to=<(?P<to>[^>]*)>$`)
	reDisconn   = regexp.MustCompile(`^(?P<id>[0-9a-f]{16}) smtp disconnected reason=(?P<reason>[a-z-]+|"[^"]*")$`)
	reMTA       = regexp.MustCompile(`^(?P<id>[0-9a-f]{16}) mta delivery evpid=(?P<evpid>[0-9a-f]{16}) from=<(?P<from>[^>]*)> to=<(?P<to>[^>]*)> rcpt=<(?P<rcpt>[^>]*)> source="(?P<source>[^"]*)" relay="(?P<relay>[^"]*)" delay=(?P<delay>[0-9dhms-]+) result="(?P<result>Ok|TempFail|PermFail)" stat="(?P<stat>(?:[^"\\]|\\.)*)"$`)
	reMDA       = regexp.MustCompile(`^(?P<id>[0-9a-f]{16}) mda delivery evpid=(?P<evpid>[0-9a-f]{16}) from=<(?P<from>[^>]*)> to=<(?P<to>[^>]*)> (?:rcpt=<(?P<rcpt>[^>]*)> )?user=(?P<user>\S+) delay=(?P<delay>[0-9dhms-]+) result=(?P<result>Ok|TempFail|PermFail) stat=(?P<stat>.*)$`)
)

// reEventPrefix is the prefix of every line in the foreground, before
// the event.
var reEventPrefix = regexp.MustCompile(`^\S+ smtpd\[[0-9]+\]: `)

// eventLines returns the fields of the log lines that re matches, by
// name, in order.
func eventLines(log string, re *regexp.Regexp) []map[string]string {
	var out []map[string]string
	for _, line := range strings.Split(log, "\n") {
		p := reEventPrefix.FindString(line)
		if p == "" {
			continue
		}
		m := re.FindStringSubmatch(line[len(p):])
		if m == nil {
			continue
		}
		f := map[string]string{}
		for i, name := range re.SubexpNames() {
			if name != "" {
				f[name] = m[i]
			}
		}
		out = append(out, f)
	}
	return out
}

// TestOpenSMTPDLogFormat: the event lines in OpenSMTPD's format, for a
// session with failed authentications and a refused recipient, then a
// message delivered here and one relayed, of which the next hop refuses
// one recipient. The lines read as OpenSMTPD's parsers read them: the
// failures name the session whose "connected" line has the address, the
// envelopes of a message have the delivery lines, and no credential is
// ever written.
func TestOpenSMTPDLogFormat(t *testing.T) {
	certDir := t.TempDir()
	os.Chmod(certDir, 0o755)
	cert, key := writeCert(t, certDir)
	farConf := strings.Replace(DefaultConfig, `listen "mx" { address = "{{ADDR}}" }`, `listen "mx" {
  address = "{{ADDR}}"
  tls     = "starttls"
  cert    = "`+cert+`"
  key     = "`+key+`"
}`, 1)
	far := StartWith(t, bin, Options{Config: farConf, Addr: fmt.Sprintf("127.0.0.2:%d", FreePort(t))})

	const password, wrongPassword = "s3cret-Pa55", "wr0ng-Pa55-guess"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	conf := `
hostname       = "out.example.net"
spool          = "spool"
control_socket = "run/smtpd.sock"

limits {
  auth_failures_per_ip = 10
  retry_base           = "1s"
}

table "users" { map = { alice = "` + string(hash) + `" } }

listen "sub" {
  address    = "{{ADDR}}"
  tls        = "starttls"
  cert       = "` + cert + `"
  key        = "` + key + `"
  auth       = "optional"
  auth_table = table.users
}

action "local" {
  maildir  = "mail"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
action "out" { relay = "smtp://` + far.SMTPAddr + `" }

match {
  from   = "any"
  for    = "out.example.net"
  action = action.local
}
match {
  from   = "auth"
  for    = "any"
  action = action.out
}
`
	d := StartWith(t, bin, Options{Config: conf})

	// a client that guesses, then sends a message here
	insecure := &tls.Config{InsecureSkipVerify: true}
	c := holdSession(t, d.SMTPAddr)
	c.cmd("EHLO client.example.org", "250")
	c.starttls(insecure)
	c.cmd("EHLO client.example.org", "250")
	c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice\x00"+wrongPassword)), "535")
	c.cmd("AUTH LOGIN", "334")
	c.cmd(base64.StdEncoding.EncodeToString([]byte("alice")), "334")
	c.cmd(base64.StdEncoding.EncodeToString([]byte(wrongPassword)), "535")
	c.cmd("MAIL FROM:<carol@example.org>", "250")
	c.cmd("RCPT TO:<someone@elsewhere.test>", "550")
	c.cmd("RCPT TO:<bob@out.example.net>", "250")
	c.data("Subject: local\r\n\r\nhello bob\r\n")
	c.cmd("QUIT", "221")
	c.conn.Close()

	// alice relays to two recipients; the next hop refuses one
	c = holdSession(t, d.SMTPAddr)
	c.cmd("EHLO client.example.org", "250")
	c.starttls(insecure)
	c.cmd("EHLO client.example.org", "250")
	c.cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice\x00"+password)), "235")
	c.cmd("MAIL FROM:<alice@out.example.net>", "250")
	c.cmd("RCPT TO:<friend@example.test>", "250")
	c.cmd("RCPT TO:<nobody@elsewhere.test>", "250")
	c.data("Subject: relayed\r\n\r\nhello friend\r\n")
	c.conn.Close() // without QUIT

	far.WaitMail(1, 30*time.Second)
	// bob's message, and the bounce of nobody's to alice
	d.WaitMail(2, 60*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for len(eventLines(d.Log(), reMDA)) < 2 || len(eventLines(d.Log(), reMTA)) < 2 || len(eventLines(d.Log(), reDisconn)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the delivery and disconnection lines did not all come:\n%s", d.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	log := d.Log()

	t.Run("credentials", func(t *testing.T) {
		for _, secret := range []string{password, wrongPassword, base64.StdEncoding.EncodeToString([]byte(wrongPassword)),
			base64.StdEncoding.EncodeToString([]byte("\x00alice\x00" + wrongPassword)), base64.StdEncoding.EncodeToString([]byte("\x00alice\x00" + password))} {
			if strings.Contains(log, secret) {
				t.Errorf("the log has a credential (%q)", secret)
			}
		}
	})

	// the address of each session, by id, from its connected line
	addrs := map[string]string{}
	for _, f := range eventLines(log, reConnected) {
		if f["addr"] != "127.0.0.1" || f["host"] != "127.0.0.1" {
			t.Errorf("connected line: %v", f)
		}
		addrs[f["id"]] = f["addr"]
	}
	if len(addrs) != 2 {
		t.Fatalf("%d sessions with a connected line, want 2:\n%s", len(addrs), log)
	}

	t.Run("failures", func(t *testing.T) {
		// what a fail2ban filter bans on: failed authentications and
		// refused recipients, each traced to the session's address
		banned := map[string]int{}
		var commands []string
		for _, f := range eventLines(log, reFailed) {
			commands = append(commands, f["cmd"]+" => "+f["code"]+" "+f["text"])
			if addr := addrs[f["id"]]; addr != "" && (f["code"] == "535" || f["code"] == "550") {
				banned[addr]++
			}
		}
		want := []string{
			"AUTH PLAIN (...) => 535 5.7.8 Authentication credentials invalid",
			"AUTH LOGIN (password) => 535 5.7.8 Authentication credentials invalid",
			"RCPT TO:<someone@elsewhere.test> => 550 ",
		}
		if len(commands) != len(want) {
			t.Fatalf("failed-command lines:\n%s\nwant %d", strings.Join(commands, "\n"), len(want))
		}
		for i, w := range want {
			if !strings.HasPrefix(commands[i], w) {
				t.Errorf("failed-command %d: %q, want %q", i, commands[i], w)
			}
		}
		if banned["127.0.0.1"] != 3 {
			t.Errorf("failures traced to 127.0.0.1: %v, want 3", banned)
		}
		var results []string
		for _, f := range eventLines(log, reAuth) {
			results = append(results, f["user"]+" "+f["result"])
		}
		if strings.Join(results, ", ") != "alice permfail, alice permfail, alice ok" {
			t.Errorf("authentication lines: %v", results)
		}
	})

	t.Run("sessions", func(t *testing.T) {
		smtpTLS := 0
		for _, f := range eventLines(log, reTLS) {
			if addrs[f["id"]] != "" {
				smtpTLS++
			}
			if f["bits"] == "0" {
				t.Errorf("tls line without the cipher's strength: %v", f)
			}
		}
		if smtpTLS != 2 {
			t.Errorf("%d smtp tls lines, want 2", smtpTLS)
		}
		var reasons []string
		for _, f := range eventLines(log, reDisconn) {
			reasons = append(reasons, f["reason"])
		}
		if strings.Join(reasons, " ") != "quit disconnect" {
			t.Errorf("disconnected reasons: %v, want quit then disconnect", reasons)
		}
		for _, want := range []string{"accepted from <carol@example.org> for 1 recipients", "relayed to <friend@example.test> via "} {
			if !strings.Contains(log, want) {
				t.Errorf("the line %q is gone", want)
			}
		}
	})

	t.Run("deliveries", func(t *testing.T) {
		msgs := eventLines(log, reMessage)
		if len(msgs) != 2 || msgs[0]["nrcpt"] != "1" || msgs[1]["nrcpt"] != "2" || msgs[0]["proto"] != "ESMTP" || msgs[0]["size"] == "0" {
			t.Errorf("message lines: %v", msgs)
		}
		// the envelope lines give each envelope's recipient
		rcptOf := map[string]string{}
		for _, f := range eventLines(log, reEnvelope) {
			if addrs[f["id"]] == "" {
				t.Errorf("envelope line of an unknown session: %v", f)
			}
			rcptOf[f["evpid"]] = f["from"] + " " + f["to"]
		}
		mta := eventLines(log, reMTA)
		results := map[string]map[string]string{}
		for _, f := range mta {
			results[f["to"]] = f
			if got := rcptOf[f["evpid"]]; got != "alice@out.example.net "+f["to"] {
				t.Errorf("mta delivery of %s: the smtp envelope line says %q", f["evpid"], got)
			}
			if f["from"] != "alice@out.example.net" || f["rcpt"] != f["to"] || f["source"] != "127.0.0.1" || !strings.HasPrefix(f["relay"], "127.0.0.2") {
				t.Errorf("mta delivery line: %v", f)
			}
		}
		if ok := results["friend@example.test"]; ok == nil || ok["result"] != "Ok" || !strings.HasPrefix(ok["stat"], "250 ") {
			t.Errorf("delivery to friend: %v", ok)
		}
		if no := results["nobody@elsewhere.test"]; no == nil || no["result"] != "PermFail" || !strings.HasPrefix(no["stat"], "550 ") {
			t.Errorf("delivery to nobody: %v", no)
		}
		if len(mta) == 2 && mta[0]["id"] != mta[1]["id"] {
			t.Errorf("the two envelopes of one session have different session ids: %v", mta)
		}
		mtaTLS := false
		for _, f := range eventLines(log, reTLS) {
			mtaTLS = mtaTLS || len(mta) > 0 && f["id"] == mta[0]["id"]
		}
		if !mtaTLS {
			t.Errorf("no tls line for the mta session")
		}

		// to= is the address after aliases and virtual mappings, rcpt=
		// the recipient the client gave
		local := map[string]map[string]string{}
		for _, f := range eventLines(log, reMDA) {
			local[f["rcpt"]] = f
			if f["result"] != "Ok" || f["stat"] != "Delivered" || f["user"] != "sink" || f["to"] != "sink@out.example.net" {
				t.Errorf("mda delivery line: %v", f)
			}
		}
		if bob := local["bob@out.example.net"]; bob == nil || bob["from"] != "carol@example.org" ||
			rcptOf[bob["evpid"]] != "carol@example.org bob@out.example.net" {
			t.Errorf("bob's delivery: %v", bob)
		}
		if bounce := local["alice@out.example.net"]; bounce == nil || bounce["from"] != "" {
			t.Errorf("the bounce's delivery: %v", bounce)
		}
	})
	if t.Failed() {
		t.Logf("log:\n%s", log)
	}
}
