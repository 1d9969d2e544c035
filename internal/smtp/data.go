package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"smtpd/internal/header"
)

// errBareLineEnding is a CR or LF that is not part of a CRLF pair.
var errBareLineEnding = errors.New("smtp: bare CR or LF in message")

// strictReader passes message data through and fails, once, on a bare CR
// or LF. Such line endings are how SMTP smuggling hides a second message
// inside the first (CVE-2023-51764 and relatives): go-smtp ends DATA only
// at CRLF.CRLF, but a server behind us might end it at LF.LF. The caller
// still drains the data to its real end, so the dialogue stays in sync.
type strictReader struct {
	r      io.Reader
	prevCR bool
	err    error
}

func (s *strictReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.r.Read(p)
	for i := 0; i < n; i++ {
		switch c := p[i]; {
		case c == '\n' && !s.prevCR:
			s.err = errBareLineEnding
		case c != '\n' && s.prevCR:
			s.err = errBareLineEnding
		}
		if s.err != nil {
			return i, s.err
		}
		s.prevCR = p[i] == '\r'
	}
	if err == io.EOF && s.prevCR {
		s.err = errBareLineEnding
		return n, s.err
	}
	return n, err
}

// MaxHeaderBytes bounds the header section read into memory to find
// missing fields and count Received lines; past it, the rest is body.
const MaxHeaderBytes = 256 * 1024

// headerInfo is what the daemon needs to know of a message's header.
type headerInfo struct {
	received              int
	hasMessageID, hasDate bool
}

// readHeader reads the header section from br: up to and including the
// empty line that ends it, or up to the first line that is not a header
// field, which it returns as leftover, the start of the body.
func readHeader(br *bufio.Reader) (hdr, leftover []byte, info headerInfo, err error) {
	var b bytes.Buffer
	for b.Len() < MaxHeaderBytes {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull || (err == nil || err == io.EOF) && len(line) > 0 && !isHeaderLine(line) {
			return b.Bytes(), append([]byte(nil), line...), info, nil
		}
		b.Write(line)
		switch fieldName(line) {
		case "received":
			info.received++
		case "message-id":
			info.hasMessageID = true
		case "date":
			info.hasDate = true
		}
		if err == io.EOF {
			return b.Bytes(), nil, info, nil
		}
		if err != nil || string(line) == "\r\n" {
			return b.Bytes(), nil, info, err
		}
	}
	return b.Bytes(), nil, info, nil
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
