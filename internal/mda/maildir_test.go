package mda

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"smtpd/internal/envelope"
)

func TestCopyUnixLines(t *testing.T) {
	long := strings.Repeat("x", 64*1024-1)
	for in, want := range map[string]string{
		"a\r\nb\r\n":          "a\nb\n",
		"bare\nlf\r\n":        "bare\nlf\n",
		"cr\ralone\r\n":       "cr\ralone\n",
		"\xff\xfe 8bit\r\n":   "\xff\xfe 8bit\n",
		"..dot\r\n":           "..dot\n",
		"no newline":          "no newline",
		"end cr\r":            "end cr\r",
		long + "\r\nnext\r\n": long + "\nnext\n",
		long + "\rX\r\n":      long + "\rX\n",
	} {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		if err := copyUnixLines(w, strings.NewReader(in)); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		if b.String() != want {
			t.Errorf("%.20q: got %.30q", in, b.String())
		}
	}
}

func TestDeliverMaildir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	body := filepath.Join(t.TempDir(), "body")
	os.WriteFile(body, []byte("Subject: hi\r\n\r\nhello\r\n"), 0o600)
	f, _ := os.Open(body)
	defer f.Close()
	e := &envelope.Envelope{ID: 1<<32 | 2, Sender: "a@example.net", Dest: "b@example.org"}
	if err := (&maildirs{}).deliver(dir, "mx.example.org", e, f); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
	tmps, _ := filepath.Glob(filepath.Join(dir, "tmp", "*"))
	if len(files) != 1 || len(tmps) != 0 {
		t.Fatalf("new %v tmp %v", files, tmps)
	}
	if !strings.HasSuffix(files[0], "Q0000000100000002.mx.example.org") {
		t.Errorf("name %s lacks the envelope id", filepath.Base(files[0]))
	}
	got, _ := os.ReadFile(files[0])
	want := "Return-Path: <a@example.net>\nDelivered-To: b@example.org\nSubject: hi\n\nhello\n"
	if string(got) != want {
		t.Errorf("got %q", got)
	}
}

// TestDeliverMaildirOnce: a delivery tried again after a crash (the
// queue never heard of the first) finds its file, in new/ or moved to
// cur/ by a reader, and writes no second copy; what a crashed attempt
// left in tmp/ does not stand in the way.
func TestDeliverMaildirOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	body := filepath.Join(t.TempDir(), "body")
	os.WriteFile(body, []byte("Subject: once\r\n\r\nhello\r\n"), 0o600)
	e := &envelope.Envelope{ID: 1<<32 | 3, Sender: "a@example.net", Dest: "b@example.org"}
	var dirs maildirs
	deliver := func() {
		t.Helper()
		f, _ := os.Open(body)
		defer f.Close()
		if err := dirs.deliver(dir, "mx.example.org", e, f); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		n, _ := filepath.Glob(filepath.Join(dir, "new", "*"))
		c, _ := filepath.Glob(filepath.Join(dir, "cur", "*"))
		return len(n) + len(c)
	}
	deliver()
	deliver()
	if n := count(); n != 1 {
		t.Fatalf("%d copies after two attempts", n)
	}
	name := maildirName(e, "mx.example.org")
	if err := os.Rename(filepath.Join(dir, "new", name), filepath.Join(dir, "cur", name+":2,S")); err != nil {
		t.Fatal(err)
	}
	deliver()
	if n := count(); n != 1 {
		t.Fatalf("%d copies once a reader moved the first", n)
	}
	// a crash inside the write left the temporary file
	other := &envelope.Envelope{ID: 1<<32 | 4, Sender: "a@example.net", Dest: "b@example.org"}
	os.WriteFile(filepath.Join(dir, "tmp", maildirName(other, "mx.example.org")), []byte("partial"), 0o600)
	e = other
	deliver()
	if n := count(); n != 2 {
		t.Errorf("%d messages, want 2", n)
	}
}

// An envelope's first attempt writes without looking for an earlier
// copy, and a maildir removed between two deliveries is made again.
func TestDeliverMaildirFirstAttempt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	body := filepath.Join(t.TempDir(), "body")
	os.WriteFile(body, []byte("Subject: first\r\n\r\nhello\r\n"), 0o600)
	var dirs maildirs
	for i, first := range []bool{true, true} {
		e := &envelope.Envelope{ID: 1<<32 | uint64(i+1), Dest: "b@example.org", FirstAttempt: first}
		f, _ := os.Open(body)
		err := dirs.deliver(dir, "mx.example.org", e, f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(dir, "new", maildirName(e, "mx.example.org")))
		if err != nil || !strings.Contains(string(got), "Subject: first") {
			t.Fatalf("delivery %d: %q, %v", i, got, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeliverMaildirFails checks that a delivery that breaks off leaves
// nothing in tmp/ or new/, and is a temporary failure.
func TestDeliverMaildirFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	f, _ := os.Open(os.DevNull)
	f.Close() // reading the body fails
	e := &envelope.Envelope{ID: 1<<32 | 2, Sender: "a@example.net", Dest: "b@example.org"}
	err := (&maildirs{}).deliver(dir, "mx.example.org", e, f)
	if _, ok := err.(tempError); !ok {
		t.Fatalf("got %v, want a temporary failure", err)
	}
	for _, sub := range []string{"tmp", "new"} {
		if left, _ := os.ReadDir(filepath.Join(dir, sub)); len(left) != 0 {
			t.Errorf("%s/ keeps %v", sub, left)
		}
	}
}

func TestWriteMbox(t *testing.T) {
	e := &envelope.Envelope{ID: 1<<32 | 2, Sender: "a@example.net", Dest: "b@example.org"}
	in := "Subject: x\r\n\r\nFrom here\r\n>From there\r\nnot From\r\nlast"
	var b bytes.Buffer
	if err := writeMbox(&b, e, strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	first, rest, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(first, "From a@example.net ") {
		t.Errorf("From_ line %q", first)
	}
	want := "Return-Path: <a@example.net>\nDelivered-To: b@example.org\nSubject: x\n\n>From here\n>>From there\nnot From\nlast\n\n"
	if rest != want {
		t.Errorf("got %q\nwant %q", rest, want)
	}
}

func TestDeliverMboxAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mbox")
	e := &envelope.Envelope{ID: 1<<32 | 2, Dest: "b@example.org"}
	for i := 0; i < 2; i++ {
		if err := deliverMbox(path, e, strings.NewReader("Subject: x\r\n\r\nhi\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(path)
	if n := strings.Count(string(got), "\nFrom MAILER-DAEMON ") + strings.Count(string(got)[:5], "From "); n != 2 {
		t.Errorf("%d messages in\n%s", n, got)
	}
	if _, err := os.Stat(path + ".lock"); !os.IsNotExist(err) {
		t.Errorf("lock left: %v", err)
	}
}
