package regress

import (
	"os"
	"strings"
	"testing"
	"time"
)

// Dialogues whose point is in what is delivered, not only
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
// startClientDaemon, where alice's password is s3cret.
func TestDialoguesTLS(t *testing.T) {
	playDialogues(t, "testdata/dialogues-tls/*.dlg", startClientDaemon)
}
