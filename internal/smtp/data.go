package smtp

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"smtpd/internal/envelope"
	"smtpd/internal/header"
)

// MaxHeaderBytes bounds the header section held in memory to find
// missing fields and count Received lines; past it, the rest is body.
const MaxHeaderBytes = 256 * 1024

// headerInfo is what the daemon needs to know of a message's header.
type headerInfo struct {
	received              int
	hasMessageID, hasDate bool
	// tlsOptional is a "TLS-Required: No" field (RFC 8689 §5)
	tlsOptional bool
}

// bodyWriter is where the engine writes a message, as received (the
// engine has undone dot-stuffing and checked line endings). It holds
// the header section until its end, to learn what the daemon must add
// and how many hops the message made, then writes the trace fields,
// the header and everything after it straight to the body file: a
// message body is never held in memory.
type bodyWriter struct {
	file *os.File
	// trace writes the fields the daemon adds in front of the message
	trace func(*bytes.Buffer, headerInfo)
	// hdr holds the message until the end of its header section;
	// scanned is how much of it was looked at
	hdr     []byte
	scanned int
	done    bool
	info    headerInfo
}

func (b *bodyWriter) Write(p []byte) (int, error) {
	if b.done {
		return b.file.Write(p)
	}
	b.hdr = append(b.hdr, p...)
	for !b.done {
		i := bytes.IndexByte(b.hdr[b.scanned:], '\n')
		if i < 0 {
			if len(b.hdr) >= MaxHeaderBytes {
				return len(p), b.flush()
			}
			break
		}
		line := b.hdr[b.scanned : b.scanned+i+1]
		if !isHeaderLine(line) {
			// the first line that is not a field starts the body
			return len(p), b.flush()
		}
		b.scanned += len(line)
		switch fieldName(line) {
		case "received":
			b.info.received++
		case "message-id":
			b.info.hasMessageID = true
		case "date":
			b.info.hasDate = true
		case "tls-required":
			_, value, _ := bytes.Cut(line, []byte(":"))
			b.info.tlsOptional = bytes.EqualFold(bytes.TrimSpace(value), []byte("no"))
		}
		if string(line) == "\r\n" || b.scanned >= MaxHeaderBytes {
			return len(p), b.flush()
		}
	}
	return len(p), nil
}

// flush writes the trace fields and what was held, and lets the rest
// of the message through.
func (b *bodyWriter) flush() error {
	var out bytes.Buffer
	b.trace(&out, b.info)
	out.Write(b.hdr)
	b.hdr, b.done = nil, true
	_, err := b.file.Write(out.Bytes())
	return err
}

// finish ends the message: a message that is all header (or nothing)
// gets its trace fields now.
func (b *bodyWriter) finish() error {
	if b.done {
		return nil
	}
	return b.flush()
}

// isHeaderLine reports whether line is a header field, a continuation,
// or the empty line ending the header.
func isHeaderLine(line []byte) bool {
	if string(line) == "\r\n" {
		return true
	}
	if line[0] == ' ' || line[0] == '\t' {
		return true
	}
	return header.IsFieldStart(line)
}

func fieldName(line []byte) string {
	i := bytes.IndexByte(line, ':')
	if i <= 0 || line[0] == ' ' || line[0] == '\t' {
		return ""
	}
	return string(bytes.ToLower(line[:i]))
}

// trace writes the fields the daemon adds at the top of a message: our
// Received field, and Message-Id and Date if the message lacks them.
func (sess *session) trace(w *bytes.Buffer, info headerInfo) {
	sess.tlsOptional = info.tlsOptional
	host := sess.s.cfg.Hostname
	proto := "ESMTP"
	if sess.listener.Protocol == "lmtp" {
		proto = "LMTP"
	}
	tlsInfo := ""
	// RFC 3848: S for TLS, A for an authenticated client
	if st, ok := sess.conn.TLS(); ok {
		proto += "S"
		tlsInfo = fmt.Sprintf("\r\n\t(%s %s)", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	}
	if sess.info.Auth != "" {
		proto += "A"
	}
	forClause := ""
	if len(sess.rcpts) == 1 {
		forClause = "\r\n\tfor <" + sanitize(sess.rcpts[0].addr) + ">"
	}
	now := time.Now()
	id := envelope.FormatMsgID(sess.msgid)
	from := fmt.Sprintf("%s ([%s])", sanitize(sess.info.Helo), sess.info.Remote)
	if sess.localUser != "" {
		from = "localhost (" + sess.localUser + ")"
	}
	fmt.Fprintf(w, "Received: from %s\r\n\tby %s (smtpd) with %s id %s%s%s;\r\n\t%s\r\n",
		from, host, proto, id, tlsInfo, forClause, now.Format(time.RFC1123Z))
	if !info.hasMessageID {
		fmt.Fprintf(w, "Message-Id: <%d.%s.%x@%s>\r\n", now.Unix(), id, rand.Uint32(), host)
	}
	if !info.hasDate {
		fmt.Fprintf(w, "Date: %s\r\n", now.Format(time.RFC1123Z))
	}
	if sess.junk {
		// a filter's junk verdict, as OpenSMTPD marks it
		w.WriteString("X-Spam: yes\r\n")
	}
}
