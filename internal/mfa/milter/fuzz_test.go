package milter

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzReadHeader: whatever the spooled message, readHeader either
// refuses it as malformed or splits it exactly: its fields, written
// back in order, and the rest from the body offset give the input
// again, less the empty line that ends the header.
func FuzzReadHeader(f *testing.F) {
	for _, s := range []string{
		"Subject: hi\r\n\r\nbody\r\n",
		"From: a@example.org\r\nTo: b@example.org,\r\n c@example.org\r\n\r\n",
		"no header at all\r\n",
		"X: 1\nY: 2\n\nlf only\n",
		"",
		"Long: " + strings.Repeat("x", 70000) + "\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := readHeader(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if h.bodyOffset < 0 || h.bodyOffset > int64(len(in)) {
			t.Fatalf("body offset %d of %d", h.bodyOffset, len(in))
		}
		var fields []byte
		for _, fl := range h.fields {
			if fl.colon <= 0 || fl.colon >= len(fl.raw) || fl.raw[fl.colon] != ':' {
				t.Fatalf("field %q: colon at %d", fl.raw, fl.colon)
			}
			fields = append(fields, fl.raw...)
		}
		head := in[:h.bodyOffset]
		if !bytes.HasPrefix(head, fields) {
			t.Fatalf("fields %q are not the start of %q", fields, head)
		}
		if rest := string(head[len(fields):]); rest != "" && rest != "\r\n" && rest != "\n" {
			t.Fatalf("between the fields and the body: %q", rest)
		}
	})
}
