package regress

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A real mail reader, Debian's s-nail, opens the mailboxes smtpd writes:
// the maildir of DefaultConfig and an mbox file. Each holds the same
// three messages: a plain one, one whose body has lines starting with
// "From " (an mbox writer must quote them, or they split the message),
// and one with MIME headers, an encoded-word Subject, a lone "." line
// and 8-bit UTF-8 text. s-nail must find three messages in each, list
// their subjects, and print their bodies as expected.
//
// What s-nail 14.9 prints of a "From " line, it being an mboxo reader
// (it never takes a ">" off):
//
//	mbox     smtpd writes mboxrd: ">*From " gets one more ">"
//	         (internal/mda/mbox.go), and s-nail prints the file as it is:
//	         "From x" shows as ">From x", ">From x" as ">>From x".
//	maildir  the file holds the message as it came; s-nail copies it
//	         into its own mbox-like store when it opens the folder and
//	         quotes mboxo-style there: "From x" shows as ">From x",
//	         ">From x" as it is.
//
// Every other line is shown byte for byte.
//
// s-nail takes an empty line, a line starting with "From " and a header
// line for the start of a message (and complains on its standard error
// of a "From " line that is no valid From_ line): the second message
// carries a whole message pasted into its body, so that an mbox writer
// that forgot to quote would have s-nail list four messages.

// mailboxMbox is the action and match for mbox.example.test added to
// DefaultConfig: an mbox file in the test directory, written as the
// test's user.
const mailboxMbox = `
action "mbox" {
  mbox     = "{{DIR}}/sink.mbox"
  virtual  = { "@" = "sink" }
  userbase = { sink = "{{UID}}:{{GID}}:{{DIR}}" }
}

match {
  from   = "any"
  for    = "mbox.example.test"
  action = action.mbox
}
`

// mailboxMessage is one message sent to both mailboxes.
type mailboxMessage struct {
	// subject is the Subject field as sent; summary is what s-nail
	// shows of it once decoded
	subject, summary string
	// headers are more header fields
	headers []string
	// body is the body as sent, CRLF line endings
	body string
}

var mailboxMessages = []mailboxMessage{
	{
		subject: "regress plain", summary: "regress plain",
		body: "A plain message.\r\nIts second line.\r\n",
	},
	{
		subject: "regress from lines", summary: "regress from lines",
		body: "From the first line of the body\r\n" +
			">From a line quoted once already\r\n" +
			">>From a line quoted twice\r\n" +
			"Fromage is no From_ line\r\n" +
			// a message pasted into this one: an empty line, a valid
			// From_ line and a header line, the very pattern that
			// s-nail takes for the start of a message
			"\r\n" +
			"From sender@example.net Mon Jan  1 00:00:00 2024\r\n" +
			"Subject: a message pasted into the body\r\n" +
			"\r\n" +
			"still the body of regress from lines\r\n",
	},
	{
		subject: "=?UTF-8?Q?regress_8-bit_caf=C3=A9_=E2=82=AC?=", summary: "regress 8-bit caf\u00e9 \u20ac",
		headers: []string{"MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"},
		// a lone ".", dotted lines, 8-bit text, trailing space
		body: body,
	},
}

// fromQuoted returns text (LF line endings) with every line that
// matches re given one more ">".
func fromQuoted(text string, re *regexp.Regexp) string {
	lines := strings.SplitAfter(text, "\n")
	for i, l := range lines {
		if re.MatchString(l) {
			lines[i] = ">" + l
		}
	}
	return strings.Join(lines, "")
}

var (
	mboxrdFrom = regexp.MustCompile(`^>*From `)
	mboxoFrom  = regexp.MustCompile(`^From `)
)

// snail finds s-nail or fails the test naming the Debian package.
func snail(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"s-nail", "/usr/bin/s-nail"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatalf("s-nail not found: this test needs Debian's s-nail package (make test-deps installs it)")
	return ""
}

// snailArgs are the options s-nail reads a folder with: batch mode
// (commands on standard input, no pager, no prompt), no resource files,
// read-only, no summary on start, UTF-8 output, and a header summary
// line that is easy to parse.
var snailArgs = []string{"-#", "-:/", "-R", "-N", "-Sv15-compat",
	"-Sttycharset=utf-8", "-Sheadline-plain", "-Sheadline=msg %m %s"}

// readWithSnail runs s-nail on folder with commands on its input and
// returns its standard output. s-nail must exit 0 with nothing on its
// standard error: it complains there of From_ lines it finds in an mbox
// out of place.
func readWithSnail(t *testing.T, prog, folder, commands string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append(append([]string{}, snailArgs...), "-f", folder)
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdin = strings.NewReader(commands)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "MAILRC=/dev/null", "LC_ALL=C.UTF-8", "COLUMNS=200", "LINES=50", "TERM=dumb")
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("s-nail -f %s: no exit after 30s\n%s%s", folder, stdout.String(), stderr.String())
	}
	if err != nil {
		t.Fatalf("s-nail %s -f %s: %v\nstderr:\n%s\nstdout:\n%s", strings.Join(snailArgs, " "), folder, err, stderr.String(), stdout.String())
	}
	if stderr.Len() > 0 {
		// go on: what it read tells more
		t.Errorf("s-nail -f %s complains:\n%s", folder, stderr.String())
	}
	return stdout.String()
}

// snailMessage is one message as s-nail prints it.
type snailMessage struct {
	fromLine string
	header   string
	body     string
}

// snailSeparator is echoed between the messages printed.
const snailSeparator = "@@@ end of message @@@"

// mailboxDialogue is the SMTP dialogue that sends message i to both
// mailboxes, byte for byte as written (dot-stuffed on the wire).
func mailboxDialogue(i int, m mailboxMessage) string {
	msg := "Date: " + time.Now().Format(time.RFC1123Z) + "\r\n" +
		"From: Sender <sender@example.net>\r\n" +
		"To: maildir@example.test, mbox@mbox.example.test\r\n" +
		"Subject: " + m.subject + "\r\n" +
		fmt.Sprintf("Message-ID: <mailbox-%d@client.example.net>\r\n", i+1)
	for _, h := range m.headers {
		msg += h + "\r\n"
	}
	msg += "\r\n" + m.body
	stuffed := strings.ReplaceAll("\n"+msg, "\n.", "\n..")[1:]
	return "expect 220\nsend EHLO client.example.net\nexpect 250\n" +
		"send MAIL FROM:<sender@example.net> BODY=8BITMIME\nexpect 250\n" +
		"send RCPT TO:<maildir@example.test>\nexpect 250\n" +
		"send RCPT TO:<mbox@mbox.example.test>\nexpect 250\n" +
		"send DATA\nexpect 354\n" +
		"sendraw " + strconv.Quote(stuffed+".\r\n") + "\nexpect 250\n" +
		"send QUIT\nexpect 221\n"
}

// mailboxIndex returns which of mailboxMessages has the header (as
// stored, or as s-nail prints it, decoded), or -1.
func mailboxIndex(header string) int {
	for i, m := range mailboxMessages {
		for _, s := range []string{m.subject, m.summary} {
			if strings.Contains("\n"+header+"\n", "\nSubject: "+s+"\n") {
				return i
			}
		}
	}
	return -1
}

// TestMailboxReaders: s-nail reads the mbox file and the maildir smtpd
// wrote: three messages in each (a "From " line in a body does not
// split one), the subjects in its summary, the bodies as sent.
func TestMailboxReaders(t *testing.T) {
	prog := snail(t)
	d := StartWith(t, bin, Options{Config: DefaultConfig + mailboxMbox})
	for i, m := range mailboxMessages {
		if err := RunDialogue(d.SMTPAddr, mailboxDialogue(i, m)); err != nil {
			t.Fatalf("message %d: %v", i+1, err)
		}
		// one at a time, so that the mbox keeps them in order
		d.WaitStat("scheduler.delivery.ok", fmt.Sprint(2*(i+1)), 20*time.Second)
	}

	// the files themselves, to tell smtpd's faults from s-nail's: the
	// maildir holds each body as sent; the mbox file has exactly three
	// From_ lines, each body mboxrd-quoted and followed by an empty line
	maildir := filepath.Join(d.Dir, "mail")
	stored := d.WaitMail(3, 10*time.Second)
	if len(stored) != 3 {
		t.Fatalf("%d messages in the maildir, want 3", len(stored))
	}
	seen := map[int]bool{}
	for name, msg := range stored {
		header, gotBody, _ := strings.Cut(msg, "\n\n")
		i := mailboxIndex(header)
		if i < 0 || seen[i] {
			t.Fatalf("maildir file %s is not one of the messages, or a duplicate:\n%s", name, msg)
		}
		seen[i] = true
		if want := strings.ReplaceAll(mailboxMessages[i].body, "\r\n", "\n"); gotBody != want {
			t.Errorf("maildir file %s: body\n got %q\nwant %q", name, gotBody, want)
		}
	}
	mbox := filepath.Join(d.Dir, "sink.mbox")
	raw, err := os.ReadFile(mbox)
	if err != nil {
		t.Fatal(err)
	}
	entries := regexp.MustCompile(`(?m)^From `).Split(string(raw), -1)
	if len(entries) != len(mailboxMessages)+1 || entries[0] != "" {
		// on to s-nail all the same, to see what a reader makes of it
		t.Errorf("mbox file has %d lines starting with \"From \", want %d (the From_ lines):\n%s", len(entries)-1, len(mailboxMessages), raw)
		entries = nil
	} else {
		entries = entries[1:]
	}
	for i, e := range entries {
		fromLine, rest, _ := strings.Cut(e, "\n")
		header, gotBody, _ := strings.Cut(rest, "\n\n")
		if !strings.HasPrefix(fromLine, "sender@example.net ") || mailboxIndex(header) != i {
			t.Errorf("mbox entry %d is not message %d:\nFrom %s", i+1, i+1, e)
		}
		if want := fromQuoted(strings.ReplaceAll(mailboxMessages[i].body, "\r\n", "\n"), mboxrdFrom) + "\n"; gotBody != want {
			t.Errorf("mbox entry %d: body\n got %q\nwant %q", i+1, gotBody, want)
		}
	}
	mboxSum := sha256.Sum256(raw)

	commands := "headers\n"
	for i := range mailboxMessages {
		commands += fmt.Sprintf("print %d\necho %s\n", i+1, snailSeparator)
	}
	for _, tc := range []struct {
		name, folder string
		// quote is what s-nail shows quoted of a body
		quote *regexp.Regexp
		// mbox: s-nail keeps the order of the file, and the From_
		// lines are smtpd's; in a maildir, smtpd's file names do not
		// order deliveries within one second
		mbox bool
	}{
		{"mbox", mbox, mboxrdFrom, true},
		{"maildir", maildir, mboxoFrom, false},
		{"maildir-url", "maildir://" + maildir, mboxoFrom, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := readWithSnail(t, prog, tc.folder, commands)
			summary, printed, ok := strings.Cut(out, "[-- Message ")
			if !ok {
				t.Fatalf("s-nail printed no message:\n%s", out)
			}
			printed = "[-- Message " + printed

			// the header summary: three messages, their subjects
			lines := regexp.MustCompile(`(?m)^msg +(\d+) +(.*?) *$`).FindAllStringSubmatch(summary, -1)
			if len(lines) != len(mailboxMessages) {
				t.Fatalf("s-nail lists %d messages, want %d:\n%s", len(lines), len(mailboxMessages), summary)
			}
			var got, want []string
			for i, l := range lines {
				if l[1] != fmt.Sprint(i+1) {
					t.Errorf("summary line %d numbers message %s", i+1, l[1])
				}
				got = append(got, l[2])
				want = append(want, mailboxMessages[i].summary)
			}
			if !tc.mbox {
				sort.Strings(got)
				sort.Strings(want)
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("summary subjects\n got %q\nwant %q\n%s", got, want, summary)
			}

			// each message as printed
			chunks := strings.Split(printed, snailSeparator+"\n")
			if len(chunks) != len(mailboxMessages)+1 || chunks[len(chunks)-1] != "" {
				t.Fatalf("s-nail printed %d messages, want %d:\n%s", len(chunks)-1, len(mailboxMessages), printed)
			}
			seen := map[int]bool{}
			for n, chunk := range chunks[:len(mailboxMessages)] {
				p := parseSnailPrint(t, chunk)
				i := mailboxIndex(p.header)
				if i < 0 || seen[i] || tc.mbox && i != n {
					t.Errorf("printed message %d is not the one expected, or a duplicate:\n%s", n+1, chunk)
					continue
				}
				seen[i] = true
				if tc.mbox && !strings.HasPrefix(p.fromLine, "From sender@example.net ") {
					t.Errorf("message %d: From_ line %q, want the envelope sender", n+1, p.fromLine)
				}
				for _, h := range []string{"Return-Path: <sender@example.net>", "Subject: " + mailboxMessages[i].summary} {
					if !strings.Contains("\n"+p.header+"\n", "\n"+h+"\n") {
						t.Errorf("message %d: s-nail shows no %q:\n%s", n+1, h, p.header)
					}
				}
				// s-nail ends each message with the empty line that
				// separates it from the next in a mailbox
				want := fromQuoted(strings.ReplaceAll(mailboxMessages[i].body, "\r\n", "\n"), tc.quote) + "\n"
				if p.body != want {
					t.Errorf("message %d: body as s-nail prints it\n got %q\nwant %q", n+1, p.body, want)
				}
			}
			if t.Failed() {
				t.Logf("s-nail %s -f %s, with input %q:\n%s", strings.Join(snailArgs, " "), tc.folder, commands, out)
			}
		})
	}
	// -R: reading left the mailboxes as they were
	if raw, err := os.ReadFile(mbox); err != nil || sha256.Sum256(raw) != mboxSum {
		t.Errorf("s-nail -R changed the mbox file (%v)", err)
	}
	if n := len(d.Mail()); n != 3 {
		t.Errorf("%d messages left in the maildir's new/ after reading, want 3", n)
	}
}

// parseSnailPrint splits what s-nail's print command shows of one
// message: the "[-- Message N -- ...]:" line, the From_ line, the
// header and, after an empty line, the body.
func parseSnailPrint(t *testing.T, chunk string) snailMessage {
	t.Helper()
	intro, rest, ok := strings.Cut(chunk, "\n")
	if !ok || !strings.HasPrefix(intro, "[-- Message ") {
		t.Fatalf("not a printed message:\n%s", chunk)
	}
	fromLine, rest, _ := strings.Cut(rest, "\n")
	header, body, ok := strings.Cut(rest, "\n\n")
	if !ok || !strings.HasPrefix(fromLine, "From ") {
		t.Fatalf("printed message has no From_ line or no body:\n%s", chunk)
	}
	return snailMessage{fromLine: fromLine, header: header, body: body}
}
