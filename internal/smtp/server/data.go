package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// MaxDataLine is the most of one message line a DataLineSession gets
// in one call: longer lines come in pieces, so that the engine never
// holds more of a message than this (about OpenSMTPD's SMTP_LINE_MAX).
const MaxDataLine = 64 << 10

// bodyBufferSize is the buffer between the engine and the Session's
// writer: the body file should not see one write per line.
const bodyBufferSize = 32 << 10

// data runs DATA.
func (c *Conn) data(arg string) {
	switch {
	case arg != "":
		c.protocolError(501, codeBadArgs, "DATA takes no argument")
		return
	case c.tx == nil:
		c.protocolError(503, codeInvalidCmd, "Need MAIL before DATA")
		return
	case c.tx.rcpts == 0:
		c.protocolError(503, codeInvalidCmd, "Need RCPT before DATA")
		return
	case c.tx.body != nil:
		// RFC 3030 §2: a transaction uses BDAT or DATA, not both
		c.protocolError(503, codeInvalidCmd, "DATA not allowed once BDAT has begun")
		return
	case c.tx.params.Body == BodyBinaryMIME:
		// RFC 3030 §3
		c.protocolError(503, codeInvalidCmd, "BODY=BINARYMIME requires BDAT")
		return
	}
	b, ok := c.startBody()
	if !ok {
		return
	}
	c.writeBare(354, `Enter mail, end with "." on a line by itself`)
	if err := c.readDot(b); err != nil {
		c.endOnError(err)
		c.quit = true
		return
	}
	c.report(Event{Kind: EventProtocolClient, Line: "."})
	c.endMessage(b)
}

// startBody asks the Session where the message goes.
func (c *Conn) startBody() (*body, bool) {
	w, r := c.sess.Data()
	if c.refusedBy(r) {
		c.report(Event{Kind: EventTxData, Tx: c.tx.n, Result: r.result()})
		return nil, false
	}
	c.report(Event{Kind: EventTxData, Tx: c.tx.n, Result: "ok"})
	if w == nil {
		w = io.Discard
	}
	if c.bodyBuf == nil {
		c.bodyBuf = bufio.NewWriterSize(w, bodyBufferSize)
	} else {
		c.bodyBuf.Reset(w)
	}
	b := &body{
		w:      c.bodyBuf,
		liner:  c.liner,
		strict: c.tx.params.Body != BodyBinaryMIME,
		max:    c.srv.maxMessageBytes(),
	}
	if c.local {
		// the daemon completes the header of local submissions
		b.hdr = hdrDone
	}
	return b, true
}

// endMessage answers the end of a message: the engine's refusal if a
// check failed, else the Session's verdict.
//
// An LMTP server answers once for each accepted recipient (RFC 2033
// §4.2); the message is kept or refused whole, so the answers are the
// same.
func (c *Conn) endMessage(b *body) {
	replies := 1
	if c.srv.LMTP {
		replies = c.tx.rcpts
	}
	if r := b.finish(); r != nil {
		for range replies {
			c.send(r)
		}
		c.abort()
		return
	}
	n := c.tx.n
	c.tx = nil
	r := c.sess.Commit()
	refused := r != nil && !r.success()
	if refused {
		c.report(Event{Kind: EventTxRollback, Tx: n})
	} else {
		c.report(Event{Kind: EventTxCommit, Tx: n, Size: b.size})
	}
	for range replies {
		c.ok(r, 250, codeOK, "Message accepted for delivery")
	}
	c.report(Event{Kind: EventTxReset, Tx: n})
}

// readDot reads a message sent by DATA to its end, the line "." (RFC
// 5321 §4.1.1.4), undoing dot-stuffing (§4.5.2). Only CRLF ends a line:
// "<LF>.<LF>" and its relatives are data here, whatever a server behind
// us might make of them (SMTP smuggling, CVE-2023-51764 and kin), and
// the body refuses them once the real end is read, so that the dialogue
// stays in sync. Lines may be of any length: they are never held whole.
func (c *Conn) readDot(b *body) error {
	atStart, prevCR := true, false
	for {
		frag, err := c.br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return err
		}
		n := len(frag)
		if atStart && frag[0] == '.' {
			if n == 3 && frag[1] == '\r' && frag[2] == '\n' {
				return nil
			}
			b.feed(frag[1:])
		} else {
			b.feed(frag)
		}
		atStart = err == nil && (n >= 2 && frag[n-2] == '\r' || n == 1 && prevCR)
		prevCR = frag[n-1] == '\r'
	}
}

// hdrState is where the body is in the header section.
type hdrState int

const (
	// hdrLineStart: at the start of a line of the header section
	hdrLineStart hdrState = iota
	// hdrName: in a field name
	hdrName
	// hdrNameEnd: in white space between a field name and its colon
	// (obsolete syntax, RFC 5322 §4, to be accepted)
	hdrNameEnd
	// hdrRest: in the rest of a field or continuation line
	hdrRest
	// hdrDone: past the header section, or not checking it
	hdrDone
)

// body receives a message, checks it as it streams, and passes it on
// to the Session. After a check fails it only counts what comes, until
// the end.
type body struct {
	w     *bufio.Writer
	liner DataLineSession
	// line holds a line for liner, at most MaxDataLine
	line []byte
	// strict refuses bare CR and LF (not in BINARYMIME bodies)
	strict, prevCR bool
	hdr            hdrState
	// field is set once the header section had a field, which a
	// continuation line needs
	field     bool
	size, max int64
	fail      *Reply
	// tooBig is set once the size passed max: of the reasons to refuse
	// a message, its size is the one a client can act on (RFC 1870)
	tooBig bool
}

func errBareLineEnding() *Reply {
	return &Reply{Code: 550, Enhanced: EnhancedCode{5, 5, 2}, Text: "Bare CR or LF in message, refused: possible SMTP smuggling"}
}

func errTooBig() *Reply {
	// RFC 1870 §6.3; RFC 3463 X.3.4
	return &Reply{Code: 552, Enhanced: EnhancedCode{5, 3, 4}, Text: "Message size exceeds fixed maximum message size"}
}

func errMalformed() *Reply {
	// OpenSMTPD's refusal of a message whose header section does not
	// end at an empty line
	return &Reply{Code: 550, Enhanced: EnhancedCode{5, 7, 1}, Text: "Message refused: header section is not RFC 5322 compliant"}
}

// feed takes the next bytes of the message.
func (b *body) feed(p []byte) {
	b.size += int64(len(p))
	switch {
	case b.size > b.max:
		if !b.tooBig {
			b.tooBig, b.fail = true, errTooBig()
		}
	case b.fail != nil:
	case b.strict && !b.scanLineEndings(p):
		b.fail = errBareLineEnding()
	case b.hdr != hdrDone && !b.scanHeader(p):
		b.fail = errMalformed()
	case b.liner != nil:
		b.lines(p)
	default:
		b.write(p)
	}
}

// scanLineEndings reports whether every CR in p is followed by LF and
// every LF preceded by CR, taking the bytes fed before into account.
func (b *body) scanLineEndings(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	if b.prevCR != (p[0] == '\n') {
		return false
	}
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\r')
		if j < 0 {
			break
		}
		i += j + 1
		if i < len(p) && p[i] != '\n' {
			return false
		}
	}
	for i := 1; ; {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if p[i-1] != '\r' {
			return false
		}
		i++
	}
	b.prevCR = p[len(p)-1] == '\r'
	return true
}

// scanHeader follows the header section, and reports false once a
// line in it is neither a field, a continuation, nor the empty line
// that ends it (RFC 5322 §2.1, §2.2): OpenSMTPD refuses such messages.
func (b *body) scanHeader(p []byte) bool {
	for i := 0; i < len(p) && b.hdr != hdrDone; {
		c := p[i]
		switch b.hdr {
		case hdrLineStart:
			switch {
			case c == '\r' || c == '\n':
				b.hdr = hdrDone
			case c == ' ' || c == '\t':
				if !b.field {
					return false
				}
				b.hdr = hdrRest
			case c == ':':
				// a field name is not empty
				return false
			default:
				b.hdr = hdrName
				continue
			}
		case hdrName, hdrNameEnd:
			switch {
			case c == ':':
				b.field = true
				b.hdr = hdrRest
			case c == ' ' || c == '\t':
				b.hdr = hdrNameEnd
			case c > ' ' && c <= '~' && b.hdr == hdrName:
			default:
				return false
			}
		case hdrRest:
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				return true
			}
			i += j
			b.hdr = hdrLineStart
		}
		i++
	}
	return true
}

// lines passes the message to the DataLineSession line by line.
func (b *body) lines(p []byte) {
	for len(p) > 0 && b.fail == nil {
		n := len(p)
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			n = i + 1
		}
		n = min(n, MaxDataLine-len(b.line))
		b.line = append(b.line, p[:n]...)
		p = p[n:]
		if b.line[len(b.line)-1] == '\n' || len(b.line) == MaxDataLine {
			b.flushLine()
		}
	}
}

func (b *body) flushLine() {
	out, r := b.liner.DataLine(b.line)
	b.line = b.line[:0]
	if r != nil && !r.success() {
		b.fail = r
		return
	}
	b.write(out)
}

func (b *body) write(p []byte) {
	if _, err := b.w.Write(p); err != nil {
		b.fail = writeFailure(err)
	}
}

// writeFailure is the reply to a failure of the Session's writer: its
// own, or a temporary failure, since the client is not to blame.
func writeFailure(err error) *Reply {
	var r *Reply
	if errors.As(err, &r) {
		return r
	}
	return &Reply{Code: 451, Enhanced: EnhancedCode{4, 3, 0}, Text: "Temporary failure storing the message, try again later"}
}

// finish ends the message and returns the refusal, if any.
func (b *body) finish() *Reply {
	switch {
	case b.fail != nil:
	case b.strict && b.prevCR:
		b.fail = errBareLineEnding()
	case b.hdr == hdrName || b.hdr == hdrNameEnd:
		// the message ended inside a line that had no colon
		b.fail = errMalformed()
	case b.liner != nil && len(b.line) > 0:
		b.flushLine()
	}
	if b.fail == nil {
		if err := b.w.Flush(); err != nil {
			b.fail = writeFailure(err)
		}
	}
	return b.fail
}
