package regress

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/emersion/go-smtp"

	"smtpd/internal/dns/dnstest"
)

// relayWorld is a daemon under test relaying example.test to a far
// smtpd on 127.0.0.2 (through a test DNS), delivering local.test to a
// maildir and fail.test to a program that always fails, whose notices
// go back to the local senders.
type relayWorld struct {
	far  *Daemon
	dns  *dnstest.Server
	port int
}

func startRelayWorld(t *testing.T) *relayWorld {
	t.Helper()
	w := &relayWorld{port: FreePort(t)}
	var err error
	w.dns, err = dnstest.Start("example.test. 300 IN MX 10 mx.example.test.", "mx.example.test. 300 IN A 127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.dns.Close)
	w.far = StartWith(t, bin, Options{Addr: fmt.Sprintf("127.0.0.2:%d", w.port)})
	return w
}

func (w *relayWorld) config() string {
	return fmt.Sprintf(`
hostname       = "mx.local.test"
spool          = "spool"
control_socket = "run/smtpd.sock"
resolver       = ["%s"]
mx_port        = %d

limits {
  retry_base        = "1s"
  mails_per_session = 100000
  sessions          = 200
  sessions_per_ip   = 200
}

listen "mx" { address = "{{ADDR}}" }

action "local" {
  maildir  = "mail"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
action "fail" {
  mda      = "/bin/false"
  user     = "sink"
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}
action "out" { relay = "mx" }

match {
  from   = "any"
  for    = "local.test"
  action = action.local
}
match {
  from   = "any"
  for    = "fail.test"
  action = action.fail
}
match {
  from   = "any"
  for    = "example.test"
  action = action.out
}
`, w.dns.Addr, w.port)
}

// submitOne sends one message in a session of its own and returns the
// code of the reply that ended the transaction (250 when accepted).
func submitOne(addr, from, rcpt, data string) (int, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	code := func(err error) (int, error) {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se.Code, nil
		}
		return 0, err
	}
	if err := c.Hello("client.example.net"); err != nil {
		return code(err)
	}
	if err := c.Mail(from, nil); err != nil {
		return code(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return code(err)
	}
	wc, err := c.Data()
	if err != nil {
		return code(err)
	}
	if _, err := wc.Write([]byte(data)); err != nil {
		return 0, err
	}
	if err := wc.Close(); err != nil {
		return code(err)
	}
	c.Quit()
	return 250, nil
}

// tokenRE finds the token of each test message in what was delivered.
var tokenRE = regexp.MustCompile(`Subject: (token-\d+-\d+)`)

// countTokens counts the tokens in every maildir message under dirs.
func countTokens(dirs ...string) map[string]int {
	n := map[string]int{}
	for _, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "mail", "new", "*"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			for _, m := range tokenRE.FindAllStringSubmatch(string(data), -1) {
				n[m[1]]++
			}
		}
	}
	return n
}

// spoolFiles lists what is left in the spool's queue/ and incoming/.
func spoolFiles(dir string) []string {
	var left []string
	for _, sub := range []string{"queue", "incoming"} {
		filepath.Walk(filepath.Join(dir, "spool", sub), func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				left = append(left, p)
			}
			return nil
		})
	}
	return left
}
