package mda

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"smtpd/internal/envelope"
	"smtpd/internal/safeio"
)

// deliverMaildir writes the message into the maildir at dir, as the
// maildir specification asks: a unique file in tmp/, made durable, then
// renamed into new/ under the same name, whose directory is made durable
// too, with an fsync shared with the deliveries into the same maildir
// at the same time (dirs).
func deliverMaildir(dirs *safeio.DirSyncer, dir, hostname string, e *envelope.Envelope, body *os.File) error {
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return tempError{fmt.Errorf("maildir: %w", err)}
		}
	}
	now := time.Now()
	name := fmt.Sprintf("%d.M%dP%dQ%s.%s", now.Unix(), now.Nanosecond()/1000, os.Getpid(), envelope.FormatEvpID(e.ID), strings.ReplaceAll(hostname, "/", "_"))
	err := dirs.WriteFile(filepath.Join(dir, "tmp", name), filepath.Join(dir, "new", name), 0o600, func(f *os.File) error {
		return writeMessage(f, e, body)
	})
	if err != nil {
		return tempError{fmt.Errorf("maildir: %w", err)}
	}
	return nil
}

// writeMessage writes the delivery headers and the message with Unix
// line endings, as local mailboxes keep them.
func writeMessage(w io.Writer, e *envelope.Envelope, body io.Reader) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "Return-Path: <%s>\n", e.Sender)
	fmt.Fprintf(bw, "Delivered-To: %s\n", e.Dest)
	if err := copyUnixLines(bw, body); err != nil {
		return err
	}
	return bw.Flush()
}

// copyUnixLines copies r to w turning CRLF into LF; other bytes,
// 8-bit ones included, pass untouched. A CR at the end of a full buffer
// is held back until the next byte shows whether an LF follows.
func copyUnixLines(w *bufio.Writer, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64*1024)
	heldCR := false
	for {
		chunk, err := br.ReadSlice('\n')
		if heldCR && !(len(chunk) > 0 && chunk[0] == '\n') {
			w.WriteByte('\r')
		}
		heldCR = false
		n := len(chunk)
		switch {
		case n >= 2 && chunk[n-2] == '\r' && chunk[n-1] == '\n':
			chunk = append(chunk[:n-2], '\n')
		case err == bufio.ErrBufferFull && n > 0 && chunk[n-1] == '\r':
			chunk, heldCR = chunk[:n-1], true
		}
		if _, werr := w.Write(chunk); werr != nil {
			return werr
		}
		switch err {
		case nil, bufio.ErrBufferFull:
		case io.EOF:
			if heldCR {
				w.WriteByte('\r')
			}
			return nil
		default:
			return err
		}
	}
}
