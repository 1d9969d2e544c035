package milter

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	gomilter "github.com/emersion/go-milter"
)

// MessageResult is the milter's decision on a message.
type MessageResult struct {
	// Verdict: Continue or Accept mean queue the message.
	Verdict Verdict
	// Changed says the milter modified the header or body and the
	// new message was written to Message's out; when false, out is
	// untouched and the original stands.
	Changed bool
	// Quarantine is the reason the milter gave for holding the
	// message, "" if it did not ask.
	Quarantine string
	// NewSender, when not nil, replaces the envelope sender (without
	// angle brackets); NewSenderArgs are its ESMTP parameters.
	NewSender     *string
	NewSenderArgs []string
	// AddRcpts and DelRcpts are envelope recipients to add and remove
	// (without angle brackets), in the milter's order.
	AddRcpts, DelRcpts []string
}

const (
	// chunkSize is the largest body chunk: libmilter's
	// MILTER_CHUNK_SIZE, which go-milter enforces.
	chunkSize = gomilter.MaxBodyChunk
	// maxField bounds a header field: libmilter drops the connection
	// on a packet over 64 KiB, and the field travels in one packet.
	maxField = 65535 - 2
	// maxHeader bounds the whole header, which Message keeps in memory
	// to write it out again (Sendmail refuses over 32 KiB by default,
	// Postfix stops at 100 KiB).
	maxHeader = 1 << 20
)

// Message sends the message's header fields one by one, the end of the
// header, the body in chunks streamed from in, and the end of message,
// then applies the milter's modifications. in is the message as the
// spool stores it, CRLF lines, dot-unstuffed; it is read from its start
// and read again to write the new message to out when the milter
// modified it (out must not be in's file). The milter's transaction is
// over when Message returns, whatever the outcome.
//
// Errors: ErrUnavailable for the milter; ErrMalformed when the
// modifications, or the message's header, cannot be handled without
// making a malformed message (nothing is written then); others are I/O
// errors on in or out. Any error means the message must not be queued
// as it is in out.
func (s *Session) Message(in io.ReadSeeker, out io.Writer) (MessageResult, error) {
	if v, done, err := s.gate(true); done {
		return MessageResult{Verdict: v}, err
	}
	h, err := readHeader(in)
	if err != nil {
		// the milter waits for a header that will not come
		if e := s.abortTx(); e != nil {
			return MessageResult{}, e
		}
		return MessageResult{}, err
	}
	macros := []string{}
	macros = appendSet(macros, "i", s.queueID)

	v, err := s.sendHeader(h, macros)
	if err != nil || v.Action != Continue {
		return MessageResult{Verdict: v}, err
	}
	if v, err = s.sendBody(in, h.bodyOffset); err != nil || v.Action != Continue {
		return MessageResult{Verdict: v}, err
	}
	if len(macros) > 0 {
		if err := s.cs.Macros(gomilter.CodeEOB, macros...); err != nil {
			return MessageResult{}, s.fail("end of message macros", err)
		}
	}
	mods, act, err := s.cs.End()
	if err != nil {
		return MessageResult{}, s.fail("end of message", err)
	}
	// the end of message closes the milter's transaction
	s.inTx = false
	if v, err = s.verdict("end of message", act); err != nil {
		return MessageResult{}, err
	}
	res := MessageResult{Verdict: v}
	for _, m := range mods {
		if m.Code == gomilter.ActQuarantine {
			// Sendmail holds the message even for an empty reason
			res.Quarantine = printable(m.Reason)
			if res.Quarantine == "" {
				res.Quarantine = "quarantined by milter"
			}
		}
	}
	if !v.Proceed() {
		return res, nil
	}
	body, replaced, err := collect(&res, h, mods, s.leadSpace)
	if err != nil {
		return MessageResult{}, err
	}
	if !res.Changed {
		return res, nil
	}
	if err := h.writeMessage(out, in, body, replaced); err != nil {
		return MessageResult{}, fmt.Errorf("milter: writing the modified message: %w", err)
	}
	return res, nil
}

// sendHeader sends the fields, then the end of header.
func (s *Session) sendHeader(h *header, macros []string) (Verdict, error) {
	for _, f := range h.fields {
		act, err := s.cs.HeaderField(f.name, f.value(s.leadSpace))
		if err != nil {
			return Verdict{}, s.fail("header", err)
		}
		if v, err := s.verdict("header", act); err != nil || v.Action != Continue {
			return v, s.ended(v, err)
		}
	}
	if len(macros) > 0 {
		if err := s.cs.Macros(gomilter.CodeEOH, macros...); err != nil {
			return Verdict{}, s.fail("end of header macros", err)
		}
	}
	act, err := s.cs.HeaderEnd()
	if err != nil {
		return Verdict{}, s.fail("end of header", err)
	}
	v, err := s.verdict("end of header", act)
	if err != nil || v.Action != Continue {
		return v, s.ended(v, err)
	}
	return v, nil
}

// sendBody streams the body from offset in chunks; only one chunk is in
// memory at a time.
func (s *Session) sendBody(in io.ReadSeeker, offset int64) (Verdict, error) {
	if s.cs.ProtocolOption(gomilter.OptNoBody) {
		return Verdict{Action: Continue}, nil
	}
	if _, err := in.Seek(offset, io.SeekStart); err != nil {
		return Verdict{}, s.localFailure(err)
	}
	buf := make([]byte, chunkSize)
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			act, err := s.cs.BodyChunk(buf[:n])
			if err != nil {
				return Verdict{}, s.fail("body", err)
			}
			if v, err := s.verdict("body", act); err != nil || v.Action != Continue {
				return v, s.ended(v, err)
			}
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return Verdict{Action: Continue}, nil
		case rerr != nil:
			return Verdict{}, s.localFailure(rerr)
		}
	}
}

// ended ends the transaction after a verdict other than continue in the
// middle of a message; err is passed through.
func (s *Session) ended(v Verdict, err error) error {
	if err != nil {
		return err
	}
	return s.endMessage(v)
}

// localFailure ends the milter's transaction when we cannot go on with
// the message (a read error on the spool), so that the session stays
// usable for the next one.
func (s *Session) localFailure(err error) error {
	if e := s.abortTx(); e != nil {
		return e
	}
	return fmt.Errorf("milter: reading the message: %w", err)
}

// collect validates the modifications and fills res with them; the
// header modifications are applied to h. It returns the replacement
// body, if any. Nothing is applied if anything is invalid.
func collect(res *MessageResult, h *header, mods []gomilter.ModifyAction, leadSpace bool) (body [][]byte, replaced bool, err error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
	}
	var headerMods []gomilter.ModifyAction
	for _, m := range mods {
		switch m.Code {
		case gomilter.ActAddHeader, gomilter.ActInsertHeader, gomilter.ActChangeHeader:
			if !validName(m.HeaderName) {
				return nil, false, bad("header name %q", m.HeaderName)
			}
			if m.Code == gomilter.ActChangeHeader && m.HeaderValue == "" {
				headerMods = append(headerMods, m) // a deletion
				continue
			}
			v, err := validValue(m.HeaderValue)
			if err != nil {
				return nil, false, bad("header %s: %v", m.HeaderName, err)
			}
			if len(m.HeaderName)+len(v) > maxField {
				return nil, false, bad("header %s: %d bytes", m.HeaderName, len(v))
			}
			m.HeaderValue = v
			headerMods = append(headerMods, m)
		case gomilter.ActReplBody:
			body = append(body, m.Body)
			replaced = true
		case gomilter.ActChangeFrom:
			from, err := envelopeAddr(m.From)
			if err != nil {
				return nil, false, bad("new sender: %v", err)
			}
			var args []string
			for _, a := range m.FromArgs {
				if !isPrintable(a) {
					return nil, false, bad("new sender's parameters %q", a)
				}
				args = append(args, strings.Fields(a)...)
			}
			res.NewSender, res.NewSenderArgs = &from, args
		case gomilter.ActAddRcpt, gomilter.ActDelRcpt:
			rcpt, err := envelopeAddr(m.Rcpt)
			if err != nil {
				return nil, false, bad("recipient: %v", err)
			}
			if m.Code == gomilter.ActAddRcpt {
				res.AddRcpts = append(res.AddRcpts, rcpt)
			} else {
				res.DelRcpts = append(res.DelRcpts, rcpt)
			}
		}
	}
	for _, m := range headerMods {
		h.apply(m, leadSpace)
	}
	res.Changed = len(headerMods) > 0 || replaced
	return body, replaced, nil
}

// header is the message's header as read from the spool.
type header struct {
	fields     []*field
	bodyOffset int64 // where the body starts in the spooled message
}

// field is one header field; raw is what is written out, with its CRLF
// line endings.
type field struct {
	name    string
	colon   int // index of the ':' in raw
	raw     []byte
	deleted bool
}

// readHeader reads the header from the start of in. The header ends at
// the empty line; a line that is neither a field nor a continuation
// starts the body (there was no empty line), as does the end of in.
func readHeader(in io.ReadSeeker) (*header, error) {
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("milter: reading the message: %w", err)
	}
	r := bufio.NewReaderSize(in, maxField+2)
	h := &header{}
	var cur *field
	var off, total int64
	for {
		line, err := r.ReadSlice('\n')
		switch {
		case err == bufio.ErrBufferFull && (cur != nil && (line[0] == ' ' || line[0] == '\t') || fieldStart(line) >= 0):
			return nil, fmt.Errorf("%w: header line over %d bytes", ErrMalformed, maxField)
		case err == bufio.ErrBufferFull:
			// a long line of a body that has no empty line before it
			h.bodyOffset = off
			return h, nil
		case err != nil && err != io.EOF:
			return nil, fmt.Errorf("milter: reading the message: %w", err)
		case len(line) == 0:
			h.bodyOffset = off
			return h, nil
		}
		if cur != nil && (line[0] == ' ' || line[0] == '\t') {
			cur.raw = append(cur.raw, line...)
			if len(cur.raw) > maxField {
				return nil, fmt.Errorf("%w: header field %s over %d bytes", ErrMalformed, cur.name, maxField)
			}
		} else {
			cur = nil
			if string(line) == "\r\n" || string(line) == "\n" {
				h.bodyOffset = off + int64(len(line))
				return h, nil
			}
			colon := fieldStart(line)
			if colon < 0 {
				h.bodyOffset = off
				return h, nil
			}
			name := string(bytes.TrimRight(line[:colon], " \t"))
			cur = &field{name: name, colon: colon, raw: append([]byte(nil), line...)}
			h.fields = append(h.fields, cur)
		}
		off += int64(len(line))
		if total += int64(len(line)); total > maxHeader {
			return nil, fmt.Errorf("%w: header over %d bytes", ErrMalformed, maxHeader)
		}
		if err == io.EOF {
			h.bodyOffset = off
			return h, nil
		}
	}
}

// fieldStart returns the index of the colon if line starts a header
// field (a valid name, possibly followed by whitespace, then ':'), else -1.
func fieldStart(line []byte) int {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !validName(string(bytes.TrimRight(line[:colon], " \t"))) {
		return -1
	}
	return colon
}

// value is the field's value as milters expect it: folded lines joined
// by a bare LF (the Sendmail convention), without the leading space
// unless the milter asked for it.
func (f *field) value(leadSpace bool) string {
	v := f.raw[f.colon+1:]
	v = bytes.TrimSuffix(v, []byte("\n"))
	v = bytes.TrimSuffix(v, []byte("\r"))
	if !leadSpace && len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	return strings.ReplaceAll(string(v), "\r\n", "\n")
}

// newField builds a field from a milter's name and validated value
// (LF-separated lines).
func newField(name, value string, leadSpace bool) *field {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte(':')
	if !leadSpace && value != "" {
		b.WriteByte(' ')
	}
	b.WriteString(strings.ReplaceAll(value, "\n", "\r\n"))
	b.WriteString("\r\n")
	return &field{name: name, colon: len(name), raw: []byte(b.String())}
}

// apply applies one header modification with the semantics of the
// milter protocol: add appends at the end (as Postfix does); insert
// puts the field after idx fields (0: at the top); change replaces, or
// with an empty value deletes, the idx-th field of that name (1-based, 0
// taken as 1), counted as Sendmail does with the fields deleted earlier
// in this message still counting, so that a milter deleting several
// fields in increasing or decreasing order deletes the right ones; a
// change of a field that does not exist adds it.
func (h *header) apply(m gomilter.ModifyAction, leadSpace bool) {
	switch m.Code {
	case gomilter.ActAddHeader:
		h.fields = append(h.fields, newField(m.HeaderName, m.HeaderValue, leadSpace))
	case gomilter.ActInsertHeader:
		pos, seen := len(h.fields), 0
		for i, f := range h.fields {
			if f.deleted {
				continue
			}
			if uint32(seen) == m.HeaderIndex {
				pos = i
				break
			}
			seen++
		}
		h.fields = append(h.fields[:pos], append([]*field{newField(m.HeaderName, m.HeaderValue, leadSpace)}, h.fields[pos:]...)...)
	case gomilter.ActChangeHeader:
		want := max(m.HeaderIndex, 1)
		var target *field
		var n uint32
		for _, f := range h.fields {
			if strings.EqualFold(f.name, m.HeaderName) {
				if n++; n == want {
					target = f
					break
				}
			}
		}
		switch {
		case target == nil && m.HeaderValue != "":
			h.fields = append(h.fields, newField(m.HeaderName, m.HeaderValue, leadSpace))
		case target == nil:
		case m.HeaderValue == "":
			target.deleted = true
		default:
			// keep the field's own spelling of its name
			*target = *newField(target.name, m.HeaderValue, leadSpace)
		}
	}
}

// writeMessage writes the header, the empty line and the body: the
// replacement if replaced, else the original streamed from in.
func (h *header) writeMessage(out io.Writer, in io.ReadSeeker, body [][]byte, replaced bool) error {
	w := bufio.NewWriterSize(out, chunkSize)
	for _, f := range h.fields {
		if f.deleted {
			continue
		}
		w.Write(f.raw)
		if !bytes.HasSuffix(f.raw, []byte("\n")) {
			w.WriteString("\r\n") // the last line of a message without a body
		}
	}
	// Always an empty line, even where the original had none: the body
	// the milter saw must stay a body.
	w.WriteString("\r\n")
	if replaced {
		writeBody(w, body)
	} else {
		if _, err := in.Seek(h.bodyOffset, io.SeekStart); err != nil {
			return err
		}
		// Hide in's WriterTo and w's ReaderFrom (which hands over to
		// out's): copy a chunk at a time through our own buffer.
		buf := make([]byte, chunkSize)
		if _, err := io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{in}, buf); err != nil {
			return err
		}
	}
	return w.Flush()
}

// writeBody writes a replacement body with CRLF line endings: milters
// send LF (go-milter and Postfix convert), CRLF or a mix, and a bare CR
// or LF must not reach the spool, where it could end a line for one
// reader and not for another. The body ends with a line ending.
func writeBody(w *bufio.Writer, chunks [][]byte) {
	cr, last := false, byte('\n')
	for _, c := range chunks {
		for _, b := range c {
			switch {
			case b == '\r':
				if cr {
					w.WriteString("\r\n")
				}
				cr = true
				continue
			case b == '\n' || cr:
				w.WriteString("\r\n")
				last = '\n'
			}
			cr = false
			if b != '\n' {
				w.WriteByte(b)
				last = b
			}
		}
	}
	if cr || last != '\n' {
		w.WriteString("\r\n")
	}
}

// validName reports whether name is a field name (RFC 5322 ftext).
func validName(name string) bool {
	for i := 0; i < len(name); i++ {
		if name[i] < 33 || name[i] > 126 || name[i] == ':' {
			return false
		}
	}
	return name != ""
}

// validValue checks a field value from a milter and returns it with LF
// line breaks: every line break must fold, that is be followed by
// whitespace and more text, else it would end the field early (or the
// header, smuggling a body), and a CR or NUL has no place in it.
func validValue(v string) (string, error) {
	v = strings.ReplaceAll(v, "\r\n", "\n")
	if i := strings.IndexAny(v, "\r\x00"); i >= 0 {
		return "", fmt.Errorf("%q in the value", v[i])
	}
	lines := strings.Split(v, "\n")
	for _, l := range lines[1:] {
		if l == "" || l[0] != ' ' && l[0] != '\t' {
			return "", errors.New("line break not followed by whitespace")
		}
		if strings.Trim(l, " \t") == "" {
			return "", errors.New("folded line of whitespace only")
		}
	}
	return v, nil
}

// envelopeAddr checks an address from a milter, which the caller puts
// in the envelope and later in SMTP commands: no control characters
// (a CRLF would smuggle a command). Angle brackets are removed.
func envelopeAddr(a string) (string, error) {
	if len(a) >= 2 && a[0] == '<' && a[len(a)-1] == '>' {
		a = a[1 : len(a)-1]
	}
	if !isPrintable(a) || strings.ContainsAny(a, "<>") {
		return "", fmt.Errorf("bad address %q", a)
	}
	return a, nil
}

// isPrintable reports whether s has no control characters.
func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// printable replaces control characters by spaces, for texts that the
// caller logs.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
