package regress

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProxyProtocol: behind a load balancer (127.0.0.2, trusted), the
// client address of a PROXY v1 or v2 header is the one logged and put
// in Received; a PROXY header from anyone else closes the connection.
func TestProxyProtocol(t *testing.T) {
	cfg := strings.Replace(DefaultConfig, `listen "mx" { address = "{{ADDR}}" }`, `listen "mx" {
  address        = "{{ADDR}}"
  proxy_protocol = true
  proxy_trusted  = ["127.0.0.2"]
}`, 1)
	d := StartWith(t, bin, Options{Config: cfg})
	message := "expect 220\nsend EHLO client.example.net\nexpect 250\nsend MAIL FROM:<a@example.net>\nexpect 250\n" +
		"send RCPT TO:<b@example.test>\nexpect 250\nsend DATA\nexpect 354\nsend Subject: proxied\nsend\nsend hi\nsend .\nexpect 250\nsend QUIT\nexpect 221\n"
	v1 := "PROXY TCP4 192.0.2.10 127.0.0.1 5555 25\r\n"
	// v2: signature, PROXY over TCP/IPv4, 12 bytes: 198.51.100.7:4444 -> 127.0.0.1:25
	v2 := "\r\n\r\n\x00\r\nQUIT\n" + "\x21\x11\x00\x0c" + "\xc6\x33\x64\x07" + "\x7f\x00\x00\x01" + "\x11\x5c" + "\x00\x19"
	for _, header := range []string{v1, v2} {
		if err := RunDialogueFrom("127.0.0.2", d.SMTPAddr, "sendraw "+strconv.Quote(header)+"\n"+message); err != nil {
			t.Fatalf("through the balancer: %v", err)
		}
	}
	got := map[string]bool{}
	for _, m := range d.WaitMail(2, 10*time.Second) {
		if match := regexp.MustCompile(`Received: from client\.example\.net \(\[([0-9.]+)\]\)`).FindStringSubmatch(m); match != nil {
			got[match[1]] = true
		}
	}
	if !got["192.0.2.10"] || !got["198.51.100.7"] {
		t.Errorf("Received client addresses %v, want 192.0.2.10 and 198.51.100.7", got)
	}
	if log := d.Log(); !strings.Contains(log, "session from [192.0.2.10]") || !strings.Contains(log, "session from [198.51.100.7]") {
		t.Errorf("the log does not name the clients behind the balancer")
	}
	// a client that is no balancer may not claim another address
	if err := RunDialogue(d.SMTPAddr, "expect 220\nsendraw "+strconv.Quote(v1)+"\nexpect-close\n"); err != nil {
		t.Errorf("untrusted header: %v", err)
	}
	d.WaitStat("smtp.proxy.refused", "1", 5*time.Second)
}
