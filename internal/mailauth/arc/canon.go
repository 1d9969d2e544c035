package arc

import (
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"
)

// The canonicalization algorithms of RFC 6376 §3.4, named as go-msgauth
// names them.
const (
	simple  = dkim.CanonicalizationSimple
	relaxed = dkim.CanonicalizationRelaxed
)

// parseCanon parses a c= value, "header[/body]", whose parts default to
// "simple" (RFC 6376 §3.5: "If only one algorithm is named, that
// algorithm is used for the header and "simple" is used for the body").
func parseCanon(s string) (header, body dkim.Canonicalization, err error) {
	h, b, _ := strings.Cut(s, "/")
	header, body = dkim.Canonicalization(h), dkim.Canonicalization(b)
	if b == "" && !strings.Contains(s, "/") {
		body = simple
	}
	for _, c := range []dkim.Canonicalization{header, body} {
		if c != simple && c != relaxed {
			return "", "", fmt.Errorf("unknown canonicalization %q", s)
		}
	}
	return header, body, nil
}

// canonHeader canonicalizes one header field, given whole from its name
// to its final CRLF (RFC 6376 §3.4.1, §3.4.2).
func canonHeader(c dkim.Canonicalization, raw string) string {
	if c == simple {
		return raw // §3.4.1: not changed in any way
	}
	name, value, _ := strings.Cut(raw, ":")
	var b strings.Builder
	b.Grow(len(raw))
	// §3.4.2: lowercase the name, delete WSP before and after the colon
	b.WriteString(strings.ToLower(strings.TrimRight(name, " \t")))
	b.WriteByte(':')
	start := b.Len()
	// unfold, reduce each WSP run to one SP, delete WSP at the end of the
	// value and (as above) at its start
	space := false
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\r', '\n':
		case ' ', '\t':
			space = true
		default:
			if space && b.Len() > start {
				b.WriteByte(' ')
			}
			space = false
			b.WriteByte(c)
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// bodyCanon is a streaming body canonicalizer (RFC 6376 §3.4.3, §3.4.4):
// it writes the canonical form of what it is given to w, holding back
// only the empty lines and the whitespace whose fate depends on what
// follows. Lines may end in CRLF or in a bare LF, which counts as CRLF;
// a CR not followed by LF is an ordinary character.
type bodyCanon struct {
	w       io.Writer
	relaxed bool

	empty   int  // empty lines held back: dropped if the body ends
	inLine  bool // the current line has content (relaxed: other than WSP)
	wsp     bool // relaxed: WSP held back in the current line
	cr      bool // a CR held back: a line end if LF follows
	written bool // something was written
	buf     []byte
}

func newBodyCanon(c dkim.Canonicalization, w io.Writer) *bodyCanon {
	return &bodyCanon{w: w, relaxed: c == relaxed, buf: make([]byte, 0, 4096)}
}

func (bc *bodyCanon) Write(p []byte) (int, error) {
	for _, c := range p {
		if bc.cr {
			bc.cr = false
			if c == '\n' {
				bc.endLine()
				continue
			}
			bc.content('\r')
		}
		switch {
		case c == '\r':
			bc.cr = true
		case c == '\n':
			bc.endLine()
		case bc.relaxed && isWSP(c):
			bc.wsp = true // §3.4.4: reduced to one SP, or deleted at the end of the line
		default:
			bc.content(c)
		}
		if len(bc.buf) >= cap(bc.buf)-4 {
			if err := bc.flush(); err != nil {
				return 0, err
			}
		}
	}
	return len(p), nil
}

func (bc *bodyCanon) content(c byte) {
	if !bc.inLine {
		bc.inLine = true
		for ; bc.empty > 0; bc.empty-- {
			bc.emit('\r', '\n')
		}
	}
	if bc.wsp {
		bc.wsp = false
		bc.emit(' ')
	}
	bc.emit(c)
}

func (bc *bodyCanon) endLine() {
	if bc.inLine {
		bc.emit('\r', '\n')
	} else {
		bc.empty++ // §3.4.3, §3.4.4: empty lines at the end are ignored
	}
	bc.inLine, bc.wsp = false, false
}

func (bc *bodyCanon) emit(cs ...byte) {
	bc.buf = append(bc.buf, cs...)
	bc.written = true
}

func (bc *bodyCanon) flush() error {
	_, err := bc.w.Write(bc.buf)
	bc.buf = bc.buf[:0]
	return err
}

// Close ends the body: a last line without CRLF gets one (§3.4.3,
// §3.4.4), and an empty body is a single CRLF in "simple" (§3.4.3) but
// stays empty in "relaxed" (§3.4.4 adds a CRLF only to a non-empty
// body).
func (bc *bodyCanon) Close() error {
	if bc.cr {
		bc.cr = false
		bc.content('\r')
	}
	if bc.inLine {
		bc.endLine()
	}
	if !bc.written && !bc.relaxed {
		bc.emit('\r', '\n')
	}
	return bc.flush()
}

// limitWriter passes on the first n bytes written and drops the rest,
// for the l= tag (RFC 6376 §3.5).
type limitWriter struct {
	w io.Writer
	n int64
}

func (lw *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > lw.n {
		if _, err := lw.w.Write(p[:lw.n]); err != nil {
			return 0, err
		}
		lw.n = 0
		return len(p), nil
	}
	lw.n -= int64(len(p))
	_, err := lw.w.Write(p)
	return len(p), err
}
