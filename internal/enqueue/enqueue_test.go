package enqueue

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"smtpd/internal/queue"
)

func TestParseArgs(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want Options
	}{
		{[]string{"a@example.org"}, Options{Recipients: []string{"a@example.org"}}},
		{[]string{"-t", "-i"}, Options{FromHeaders: true, IgnoreDots: true}},
		{[]string{"-ti", "-oem", "-oi"}, Options{FromHeaders: true, IgnoreDots: true}},
		{[]string{"-f", "<me@example.org>", "-F", "Me Myself", "b"}, Options{Sender: "me@example.org", FullName: "Me Myself", Recipients: []string{"b"}}},
		{[]string{"-rme@example.org", "-FMe", "-C", "/etc/x.conf", "b"}, Options{Sender: "me@example.org", FullName: "Me", Config: "/etc/x.conf", Recipients: []string{"b"}}},
		{[]string{"-bs"}, Options{Mode: ModeSMTP}},
		{[]string{"-bp"}, Options{Mode: ModeQueue}},
		{[]string{"-bi"}, Options{Mode: ModeAliases}},
		{[]string{"-v", "-N", "never", "-X", "/tmp/log", "-U", "--", "-odd", "b"}, Options{Verbose: true, Recipients: []string{"-odd", "b"}}},
	} {
		got, err := ParseArgs(tt.args)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseArgs(%q) = %+v, %v; want %+v", tt.args, got, err, tt.want)
		}
	}
	for _, bad := range [][]string{{"-f"}, {"-bx"}} {
		if _, err := ParseArgs(bad); err == nil {
			t.Errorf("ParseArgs(%q) took it", bad)
		}
	}
}

func TestReadMessage(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	sender := Sender{Address: "alice@host.example", FullName: "Alice A", Hostname: "host.example"}
	for _, tt := range []struct {
		name, in   string
		ignoreDots bool
		rcpts      []string
		want       string // header lines that must be there, in order
		wantBody   string
		absent     []string
	}{
		{
			name:     "complete",
			in:       "To: a@example.org, \"B\" <b@example.org>\nCc: c@example.org\nBcc: d@example.org,\n e@example.org\nSubject: hi\n\nbody\n.\nafter\n",
			rcpts:    []string{"a@example.org", "b@example.org", "c@example.org", "d@example.org", "e@example.org"},
			want:     "To: a@example.org, \"B\" <b@example.org>\nCc: c@example.org\nSubject: hi\nFrom: \"Alice A\" <alice@host.example>\nDate: Tue, 14 Nov 2023 22:13:20 +0000\nMessage-Id: <1700000000.",
			wantBody: "\nbody\n",
			absent:   []string{"Bcc", "e@example.org"},
		},
		{
			name:       "dots ignored, fields kept",
			in:         "From: x@example.org\nDate: today\nMessage-ID: <1@x>\nTo: z@example.org\n\n.\nmore\n",
			ignoreDots: true,
			rcpts:      []string{"z@example.org"},
			want:       "From: x@example.org\nDate: today\nMessage-ID: <1@x>\nTo: z@example.org\n\n",
			wantBody:   "\n.\nmore\n",
			absent:     []string{"Alice"},
		},
		{
			name:     "no header",
			in:       "just a body line\nand another\n",
			want:     "From: ",
			wantBody: "\njust a body line\nand another\n",
		},
		{
			name:     "CRLF input",
			in:       "To: a@example.org\r\n\r\nbody\r\n.\r\n",
			rcpts:    []string{"a@example.org"},
			want:     "To: a@example.org\r\n",
			wantBody: "\nbody\r\n",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ReadMessage(strings.NewReader(tt.in), tt.ignoreDots)
			if err != nil {
				t.Fatal(err)
			}
			rcpts, err := m.Recipients()
			if err != nil || !reflect.DeepEqual(rcpts, tt.rcpts) {
				t.Errorf("recipients %q, %v; want %q", rcpts, err, tt.rcpts)
			}
			m.Complete(sender, now)
			var b bytes.Buffer
			if _, err := m.WriteTo(&b); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			if !strings.HasPrefix(out, tt.want) {
				t.Errorf("header:\n%s\nwant it to start with:\n%s", out, tt.want)
			}
			if !strings.HasSuffix(out, tt.wantBody) {
				t.Errorf("body: %q, want it to end with %q", out, tt.wantBody)
			}
			for _, a := range tt.absent {
				if strings.Contains(out, a) {
					t.Errorf("%q left in:\n%s", a, out)
				}
			}
		})
	}
}

func TestHeaderTooLarge(t *testing.T) {
	in := io.MultiReader(strings.NewReader("X-Long: "), strings.NewReader(strings.Repeat("a\n ", MaxHeader)))
	if _, err := ReadMessage(in, true); err != errHeaderTooLarge {
		t.Errorf("got %v", err)
	}
}

func FuzzReadMessage(f *testing.F) {
	f.Add([]byte("To: a@example.org\nBcc: b@example.org\n\nbody\n.\n"), false)
	f.Add([]byte("no header\r\n.\r\n"), true)
	f.Fuzz(func(t *testing.T, in []byte, ignoreDots bool) {
		m, err := ReadMessage(bytes.NewReader(in), ignoreDots)
		if err != nil {
			return
		}
		m.Recipients()
		m.Complete(Sender{Address: "a@b", Hostname: "b"}, time.Unix(0, 0))
		var b bytes.Buffer
		if _, err := m.WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b.Bytes(), []byte("Message-Id: ")) && !bytes.Contains(bytes.ToLower(b.Bytes()), []byte("message-id:")) {
			t.Fatalf("no Message-Id in %q", b.Bytes())
		}
	})
}

// failingWriter is a message that breaks off after a few bytes.
type failingWriter struct{ err error }

func (f failingWriter) WriteTo(w io.Writer) (int64, error) {
	n, _ := io.WriteString(w, "Subject: half\n")
	return int64(n), f.err
}

func TestWriteOffline(t *testing.T) {
	spool := t.TempDir()
	dir := filepath.Join(spool, queue.DirOffline)
	os.Mkdir(dir, 0o777)
	c := &Client{Spool: spool, Now: func() time.Time { return time.Unix(1700000000, 0) }}
	if err := c.writeOffline("a@example.org", []string{"b@example.org", "c@example.org"}, strings.NewReader("Subject: x\n\nhi\n")); err != nil {
		t.Fatal(err)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 || !strings.HasPrefix(files[0].Name(), "1700000000.") {
		t.Fatalf("offline/ holds %v", files)
	}
	path := filepath.Join(dir, files[0].Name())
	if fi, err := os.Stat(path); err != nil || fi.Mode() != 0o600 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
	got, _ := os.ReadFile(path)
	want := offlineMagic + "sender: a@example.org\nrcpt: b@example.org\nrcpt: c@example.org\n\nSubject: x\n\nhi\n"
	if string(got) != want {
		t.Errorf("got %q\nwant %q", got, want)
	}

	// a message that cannot be read whole leaves nothing, not even
	// its hidden temporary file
	os.Remove(path)
	broken := errors.New("stdin broke")
	if err := c.writeOffline("a@example.org", []string{"b@example.org"}, failingWriter{broken}); !errors.Is(err, broken) {
		t.Fatalf("got %v, want %v", err, broken)
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("offline/ keeps %v", files)
	}
}
