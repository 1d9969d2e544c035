package regress

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Dialogues of issue 12 whose point is in what is delivered, not only
// how much: each plays its file of testdata/dialogues (which
// TestDialogues plays too) and then reads the delivered copy.

// playDialogue plays a dialogue file under dialogueConfig and returns
// the one message it delivers.
func playDialogue(t *testing.T, file string) string {
	t.Helper()
	script, err := os.ReadFile("testdata/dialogues/" + file)
	if err != nil {
		t.Fatal(err)
	}
	d := StartWith(t, bin, Options{Config: dialogueConfig})
	if err := RunDialogue(d.SMTPAddr, string(script)); err != nil {
		t.Fatal(err)
	}
	msgs := d.WaitMail(1, 10*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("%d messages delivered, want 1", len(msgs))
	}
	for _, m := range msgs {
		return m
	}
	return ""
}

// TestDialogueLongDataLine: the 5000-octet data line of
// long-data-line.dlg arrives whole, on one line, with the line after it.
func TestDialogueLongDataLine(t *testing.T) {
	m := playDialogue(t, "long-data-line.dlg")
	_, got, _ := strings.Cut(m, "\n\n")
	if want := strings.Repeat("y", 5000) + "\nshort line after it\n"; got != want && got != want+"\n" {
		t.Errorf("body of %d octets, want the 5000-octet line and the next:\n%.200q", len(got), got)
	}
}

// TestDialogueSourceRoute: the source routes of source-route.dlg are
// dropped: the message is for user@example.test, from s@example.net.
func TestDialogueSourceRoute(t *testing.T) {
	m := playDialogue(t, "source-route.dlg")
	hdr, _, _ := strings.Cut(m, "\n\n")
	for _, want := range []string{"Return-Path: <s@example.net>\n", "\tfor <user@example.test>;"} {
		if !strings.Contains(hdr, want) {
			t.Errorf("header lacks %q:\n%s", want, hdr)
		}
	}
	if strings.Contains(hdr, "a.example") || strings.Contains(hdr, "b.example") {
		t.Errorf("the route is kept:\n%s", hdr)
	}
}

// TestDialoguesTLS plays the dialogues of testdata/dialogues-tls, those
// that need TLS (AUTH is offered only under it), against a daemon of
// startClientDaemon, where alice's password is s3cret. The count of
// delivered messages is checked as in TestDialogues.
func TestDialoguesTLS(t *testing.T) {
	paths, _ := filepath.Glob("testdata/dialogues-tls/*.dlg")
	if len(paths) == 0 {
		t.Fatal("no dialogues")
	}
	delivered := regexp.MustCompile(`(?m)^# delivered: (\d+)$`)
	for _, p := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(p), ".dlg"), func(t *testing.T) {
			t.Parallel()
			script, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			m := delivered.FindSubmatch(script)
			if m == nil {
				t.Fatal("no '# delivered: N' line")
			}
			want, _ := strconv.Atoi(string(m[1]))
			d := startClientDaemon(t)
			if err := runDialogueTLS(d.SMTPAddr, string(script)); err != nil {
				t.Fatal(err)
			}
			if want > 0 {
				d.WaitMail(want, 10*time.Second)
			}
			time.Sleep(300 * time.Millisecond)
			if got := d.Mail(); len(got) != want {
				t.Errorf("%d messages delivered, want %d", len(got), want)
			}
		})
	}
}

// runDialogueTLS plays a script as RunDialogue does, with one more
// directive: "starttls" sends STARTTLS, wants 220 and nothing after it,
// and does the TLS handshake (the test certificate is not verified).
func runDialogueTLS(addr, script string) error {
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer raw.Close()
	var conn net.Conn = raw
	r := bufio.NewReader(conn)
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		verb, arg, _ := strings.Cut(line, " ")
		var err error
		switch verb {
		case "starttls":
			var reply string
			if _, err = io.WriteString(conn, "STARTTLS\r\n"); err == nil {
				reply, err = readReply(r)
			}
			switch {
			case err != nil:
			case !strings.HasPrefix(reply, "220 "):
				err = fmt.Errorf("got %q, want 220", reply)
			case r.Buffered() > 0:
				err = errors.New("data after the 220 to STARTTLS")
			default:
				tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
				tc.SetDeadline(time.Now().Add(20 * time.Second))
				if err = tc.Handshake(); err == nil {
					conn, r = tc, bufio.NewReader(tc)
				}
			}
		case "send":
			_, err = io.WriteString(conn, arg+"\r\n")
		case "sendraw":
			var s string
			if s, err = strconv.Unquote(arg); err == nil {
				_, err = io.WriteString(conn, s)
			}
		case "expect":
			code, re, _ := strings.Cut(arg, " ")
			var reply string
			if reply, err = readReply(r); err == nil {
				if !strings.HasPrefix(reply, code) {
					err = fmt.Errorf("got %q, want code %s", reply, code)
				} else if re != "" && !regexp.MustCompile(re).MatchString(reply) {
					err = fmt.Errorf("got %q, want /%s/", reply, re)
				}
			}
		case "expect-close":
			for err == nil {
				_, err = readReply(r)
			}
			if err == io.EOF || errors.Is(err, syscall.ECONNRESET) {
				err = nil
			} else {
				err = fmt.Errorf("connection still open: %v", err)
			}
		default:
			err = fmt.Errorf("unknown directive %q", verb)
		}
		if err != nil {
			return fmt.Errorf("line %d (%s): %w", n+1, line, err)
		}
	}
	return nil
}
