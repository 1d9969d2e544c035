package enqueue

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"

	"smtpd/internal/header"
)

// MaxHeader bounds the header a program may give us, which is held in
// memory; the body is streamed.
const MaxHeader = 1 << 20

// errHeaderTooLarge is a header over MaxHeader.
var errHeaderTooLarge = errors.New("message header larger than 1 MB")

// field is one header field as given, with its continuation lines.
type field struct {
	name string // lower case
	raw  []byte
}

func (f field) value() string {
	_, v, _ := bytes.Cut(f.raw, []byte(":"))
	return strings.TrimSpace(strings.NewReplacer("\r\n", "", "\n", "").Replace(string(v)))
}

// Message is a message read from a local program: its header fields,
// and a reader of the rest.
type Message struct {
	fields []field
	// Body reads what follows the header: the separating empty line
	// and the body, up to a lone dot line unless dots are ignored.
	Body io.Reader
}

// ReadMessage reads the header of a message from r; Body then reads the
// rest. A line of a single dot ends the message unless ignoreDots is set,
// as sendmail does without -i.
func ReadMessage(r io.Reader, ignoreDots bool) (*Message, error) {
	var br *bufio.Reader
	if ignoreDots {
		br = bufio.NewReaderSize(r, 64*1024)
	} else {
		br = bufio.NewReaderSize(&dotStop{r: bufio.NewReaderSize(r, 64*1024)}, 64*1024)
	}
	m := &Message{}
	size := 0
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// an overlong line cannot be a header: the body starts here
			m.Body = io.MultiReader(bytes.NewReader(bytes.Clone(line)), br)
			return m, nil
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		size += len(line)
		if size > MaxHeader {
			return nil, errHeaderTooLarge
		}
		switch {
		case len(line) == 0:
			m.Body = br
			return m, nil
		case (line[0] == ' ' || line[0] == '\t') && len(m.fields) > 0:
			last := &m.fields[len(m.fields)-1]
			last.raw = append(last.raw, line...)
		case header.IsFieldStart(line):
			name, _, _ := bytes.Cut(line, []byte(":"))
			m.fields = append(m.fields, field{name: strings.ToLower(strings.TrimSpace(string(name))), raw: bytes.Clone(line)})
		default:
			// the empty line, or the body without one (the caller
			// writes the empty line before the body in any case)
			if isEmptyLine(line) {
				line = nil
			}
			m.Body = io.MultiReader(bytes.NewReader(bytes.Clone(line)), br)
			return m, nil
		}
		if err == io.EOF {
			m.Body = br
			return m, nil
		}
	}
}

func isEmptyLine(line []byte) bool {
	return string(line) == "\n" || string(line) == "\r\n"
}

// Has reports whether the header has a field called name.
func (m *Message) Has(name string) bool {
	name = strings.ToLower(name)
	for _, f := range m.fields {
		if f.name == name {
			return true
		}
	}
	return false
}

// Recipients returns the addresses of the To, Cc and Bcc fields, for -t.
func (m *Message) Recipients() ([]string, error) {
	var out []string
	for _, f := range m.fields {
		if f.name != "to" && f.name != "cc" && f.name != "bcc" {
			continue
		}
		v := f.value()
		if v == "" {
			continue
		}
		list, err := (&mail.AddressParser{WordDecoder: &mime.WordDecoder{}}).ParseList(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", f.name, v, err)
		}
		for _, a := range list {
			out = append(out, a.Address)
		}
	}
	return out, nil
}

// Sender is who a message is from, for the fields we add.
type Sender struct {
	Address, FullName, Hostname string
}

// Complete removes Bcc fields and adds From, Date and Message-Id if
// they are missing (RFC 5322 §3.6 requires From and Date; Message-Id
// should be there).
func (m *Message) Complete(s Sender, now time.Time) {
	kept := m.fields[:0]
	for _, f := range m.fields {
		if f.name != "bcc" {
			kept = append(kept, f)
		}
	}
	m.fields = kept
	add := func(name, value string) {
		m.fields = append(m.fields, field{name: strings.ToLower(name), raw: []byte(name + ": " + value + "\n")})
	}
	if !m.Has("from") {
		add("From", (&mail.Address{Name: s.FullName, Address: s.Address}).String())
	}
	if !m.Has("date") {
		add("Date", now.Format(time.RFC1123Z))
	}
	if !m.Has("message-id") {
		b := make([]byte, 8)
		rand.Read(b)
		add("Message-Id", fmt.Sprintf("<%d.%s@%s>", now.Unix(), hex.EncodeToString(b), s.Hostname))
	}
}

// WriteTo writes the header, an empty line, then the body.
func (m *Message) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for _, f := range m.fields {
		k, err := w.Write(f.raw)
		n += int64(k)
		if err != nil {
			return n, err
		}
		if !bytes.HasSuffix(f.raw, []byte("\n")) {
			k, err = io.WriteString(w, "\n")
			n += int64(k)
			if err != nil {
				return n, err
			}
		}
	}
	k, err := io.WriteString(w, "\n")
	n += int64(k)
	if err != nil {
		return n, err
	}
	c, err := io.Copy(w, m.Body)
	return n + c, err
}

// dotStop reads lines from r up to, not including, a line that is a
// single dot.
type dotStop struct {
	r       *bufio.Reader
	done    bool
	midLine bool // the last piece read did not end a line
	pending []byte
}

func (d *dotStop) Read(p []byte) (int, error) {
	if len(d.pending) == 0 {
		if d.done {
			return 0, io.EOF
		}
		line, err := d.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			err = nil
		}
		atStart := !d.midLine
		d.midLine = !bytes.HasSuffix(line, []byte("\n"))
		if atStart && (string(line) == ".\n" || string(line) == ".\r\n" || err == io.EOF && string(line) == ".") {
			d.done = true
			return 0, io.EOF
		}
		if err == io.EOF {
			d.done = true
		} else if err != nil {
			return 0, err
		}
		if len(line) == 0 {
			return 0, io.EOF
		}
		d.pending = line
	}
	n := copy(p, d.pending)
	d.pending = d.pending[n:]
	return n, nil
}
