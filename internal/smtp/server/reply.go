package server

import (
	"strconv"
	"strings"
)

// EnhancedCode is an enhanced mail system status code (RFC 3463):
// class, subject and detail, as in 5.7.1.
type EnhancedCode [3]int

// String formats the code as class.subject.detail.
func (e EnhancedCode) String() string {
	return strconv.Itoa(e[0]) + "." + strconv.Itoa(e[1]) + "." + strconv.Itoa(e[2])
}

// Reply is an SMTP reply a Session gives instead of the engine's
// standard one.
type Reply struct {
	// Code is the three-digit reply code. Only 2xx, 4xx and 5xx are
	// valid from a Session; anything else becomes 451 4.3.0.
	Code int
	// Enhanced is the enhanced status code (RFC 2034, RFC 3463). Its
	// zero value, or one whose class does not match Code, becomes
	// class.0.0.
	Enhanced EnhancedCode
	// Text is the human-readable part. Several lines, separated by
	// "\n" or "\r\n", make a multi-line reply. Control characters
	// and non-ASCII bytes are replaced, since replies are US-ASCII
	// (RFC 5321 §2.4).
	Text string
	// Disconnect closes the session once the reply is sent. A 421
	// reply always does (RFC 5321 §3.8).
	Disconnect bool
}

// Error makes a Reply usable as an error, so that the io.Writer a
// Session returns at DATA may refuse a message with a reply of its own.
func (r *Reply) Error() string {
	return strconv.Itoa(r.Code) + " " + r.Enhanced.String() + " " + r.Text
}

// success reports whether r lets the command proceed.
func (r *Reply) success() bool { return r.Code >= 200 && r.Code < 300 }

// result names the outcome of a reply as OpenSMTPD's report events do.
func (r *Reply) result() string {
	switch {
	case r.success():
		return "ok"
	case r.Code >= 400 && r.Code < 500:
		return "tempfail"
	}
	return "permfail"
}

// normalize returns a copy of a Session's reply that is safe to send:
// a valid code and an enhanced code of the same class.
func (r *Reply) normalize() *Reply {
	n := *r
	class := n.Code / 100
	if n.Code < 200 || n.Code > 599 || class == 3 {
		// a Session cannot ask for 354 or 334: those belong to the
		// dialogue the engine runs; a bad code is our failure, so
		// temporary
		return &Reply{Code: 451, Enhanced: EnhancedCode{4, 3, 0}, Text: "Temporary server failure, try again later", Disconnect: r.Disconnect}
	}
	if n.Enhanced[0] != class || n.Enhanced[1] < 0 || n.Enhanced[1] > 999 || n.Enhanced[2] < 0 || n.Enhanced[2] > 999 {
		n.Enhanced = EnhancedCode{class, 0, 0}
	}
	if n.Code == 421 {
		n.Disconnect = true
	}
	return &n
}

// Enhanced codes of the engine's own replies (RFC 3463, RFC 4954 §6,
// RFC 6531 §3.5).
const (
	codeOK            = "2.0.0"
	codeRcptOK        = "2.1.5"
	codeAuthOK        = "2.7.0"
	codeVrfy          = "2.5.0"
	codeShutdown      = "4.3.2"
	codeTimeout       = "4.4.2"
	codeTooManyRcpts  = "4.5.3"
	codeTooManyErrors = "4.7.0"
	codeOther         = "5.0.0"
	codeSenderSyntax  = "5.1.0"
	codeRcptSyntax    = "5.1.3"
	codeTooBig        = "5.3.4"
	codeInvalidCmd    = "5.5.1"
	codeSyntax        = "5.5.2"
	codeBadArgs       = "5.5.4"
	codeAuthLine      = "5.5.6"
	codeNonASCII      = "5.6.7"
	codeNeedTLS       = "5.7.11"
)

// maxReplyLine is the longest reply line, CRLF included (RFC 5321
// §4.5.3.1.5).
const maxReplyLine = 512

// writeBare sends a reply without an enhanced code: the greeting, the
// answers to HELO and EHLO, 354 and 334 carry none (RFC 2034 §3, §4).
func (c *Conn) writeBare(code int, text string) {
	c.writeReply(code, "", text)
}

// send sends a reply a Session gave, normalized, and closes the session
// after it if it asks so.
func (c *Conn) send(r *Reply) {
	r = r.normalize()
	c.writeReply(r.Code, r.Enhanced.String(), r.Text)
	if r.Disconnect {
		c.quit = true
	}
}

// writeReply sends a reply, one line for each line of text, with the
// enhanced code on every line (RFC 2034 §4), and reports each line. It
// does not flush: replies go out when the client's input is drained.
func (c *Conn) writeReply(code int, enhanced, text string) {
	if code == 421 {
		c.quit = true
	}
	text = strings.TrimRight(text, "\r\n")
	for {
		line, more, ok := strings.Cut(text, "\n")
		line = strings.TrimSuffix(line, "\r")
		text = more
		buf := c.lineBuf[:0]
		buf = strconv.AppendInt(buf, int64(code), 10)
		if ok {
			buf = append(buf, '-')
		} else {
			buf = append(buf, ' ')
		}
		if enhanced != "" {
			buf = append(buf, enhanced...)
			buf = append(buf, ' ')
		}
		buf = appendSafe(buf, line, maxReplyLine-2)
		c.lineBuf = buf
		if c.srv.Report != nil {
			c.report(Event{Kind: EventProtocolServer, Line: string(buf)})
		}
		buf = append(buf, '\r', '\n')
		if _, err := c.bw.Write(buf); err != nil {
			// the next read fails too and ends the session
			c.quit = true
		}
		if !ok {
			return
		}
	}
}

// appendSafe appends s to buf, up to a total of limit bytes, replacing
// what may not appear in a reply: a client must never see a line break
// it did not expect (reply injection), nor non-ASCII text.
func appendSafe(buf []byte, s string, limit int) []byte {
	for i := 0; i < len(s) && len(buf) < limit; i++ {
		c := s[i]
		if c < ' ' || c > '~' {
			c = '?'
		}
		buf = append(buf, c)
	}
	return buf
}
