package regress

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestThrottleConnections: 200 connections from one address at once,
// past its connection rate, get 421 (only the allowance is greeted),
// while a client at another address is served normally; a client past
// its message rate gets 451 at MAIL.
func TestThrottleConnections(t *testing.T) {
	d := StartWith(t, bin, Options{Config: DefaultConfig + `
throttle {
  connect_rate = "5/m"
  message_rate = "3/h"
}
`})
	var mu sync.Mutex
	replies := map[string]int{}
	var wg sync.WaitGroup
	next := make(chan int, 200)
	for i := range 200 {
		next <- i
	}
	close(next)
	began := time.Now()
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				err := RunDialogueFrom("127.0.0.2", d.SMTPAddr, "expect 220\nsend QUIT\nexpect 221\n")
				code := "220"
				if err != nil {
					code = err.Error()
					if m := regexp.MustCompile(`got "(\d{3} \d\.\d\.\d)`).FindStringSubmatch(code); m != nil {
						code = m[1]
					}
				}
				mu.Lock()
				replies[code]++
				mu.Unlock()
			}
		}()
	}
	// meanwhile another address sends mail
	if err := RunDialogueFrom("127.0.0.3", d.SMTPAddr, "expect 220\nsend EHLO other.example.net\nexpect 250\n"+message("alice@example.test", "250")+"send QUIT\nexpect 221\n"); err != nil {
		t.Errorf("the other address: %v", err)
	}
	wg.Wait()
	t.Logf("200 connections from one address in %v: %v", time.Since(began).Round(time.Millisecond), replies)
	// the allowance is 5 at once, then one every 12 s
	if replies["220"] < 5 || replies["220"] > 6 || replies["421 4.7.0"] != 200-replies["220"] {
		t.Errorf("replies %v, want 5 greetings and 195 times 421 4.7.0", replies)
	}
	d.WaitMail(1, 10*time.Second)
	// messages: 3 an hour from one address
	script := "expect 220\nsend EHLO busy.example.net\nexpect 250\n"
	for range 3 {
		script += message("alice@example.test", "250")
	}
	script += "send MAIL FROM:<author@example.net>\nexpect 451 4.7.0\nsend QUIT\nexpect 221\n"
	if err := RunDialogueFrom("127.0.0.4", d.SMTPAddr, script); err != nil {
		t.Error(err)
	}
	d.WaitStat("smtp.throttle.connect", fmt.Sprint(replies["421 4.7.0"]), 5*time.Second)
	d.WaitStat("smtp.throttle.message", "1", 5*time.Second)
}

// TestOverload: once the queue holds more envelopes than queue_high,
// new unauthenticated clients are refused with 421 4.3.2 at connect and
// smtpctl show status says why, while a local submission still passes;
// when the queue drains below queue_low, clients are served again.
func TestOverload(t *testing.T) {
	d := StartWith(t, bin, Options{Config: DefaultConfig + `
overload {
  queue_high = 3
  queue_low  = 1
}
`})
	if out, _, code := d.Smtpctl("pause", "mda"); code != 0 {
		t.Fatalf("pause mda: %s", out)
	}
	for i := range 4 {
		if err := RunDialogue(d.SMTPAddr, "expect 220\nsend EHLO client.example.net\nexpect 250\n"+message(fmt.Sprintf("r%d@example.test", i), "250")+"send QUIT\nexpect 221\n"); err != nil {
			t.Fatal(err)
		}
	}
	status := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, _, _ := d.Smtpctl("show", "status")
			if strings.Contains(out, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("show status:\n%s\nwant %q\n%s", out, want, d.Log())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	status("Overload on: the queue holds 4 envelopes, more than 3")
	if err := RunDialogue(d.SMTPAddr, "expect 421 4.3.2\nexpect-close\n"); err != nil {
		t.Error(err)
	}
	// the machine's own programs still submit
	cmd := exec.Command(bin.Smtpctl, "-C", d.Config, "-t")
	cmd.Args[0] = "sendmail"
	cmd.Stdin = strings.NewReader("To: local@example.test\nSubject: during overload\n\nhi\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sendmail during overload: %v\n%s", err, out)
	}
	if !strings.Contains(d.Log(), "overload mode on: the queue holds 4 envelopes") {
		t.Errorf("no log line for overload on")
	}
	if out, _, code := d.Smtpctl("resume", "mda"); code != 0 {
		t.Fatalf("resume mda: %s", out)
	}
	d.WaitMail(5, 20*time.Second)
	status("Overload off")
	if err := RunDialogue(d.SMTPAddr, "expect 220\nsend QUIT\nexpect 221\n"); err != nil {
		t.Error(err)
	}
	d.WaitStat("smtp.overload.refused", "1", 5*time.Second)
	d.WaitStat("queue.overload", "0", 5*time.Second)
}
