package mda

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"smtpd/internal/envelope"
	"smtpd/internal/safeio"
)

// maildirs are the maildirs an agent delivers into: an fsync of new/
// shared by the deliveries into one maildir at the same time, and which
// maildirs have their three directories already.
type maildirs struct {
	syncer safeio.DirSyncer
	made   sync.Map // maildir path → struct{}
}

// deliver writes the message into the maildir at dir, as the maildir
// specification asks: a unique file in tmp/, made durable, then renamed
// into new/ under the same name, whose directory is made durable too.
//
// The file's name is the envelope's own (maildirName), so a delivery is
// done exactly once across crashes: when a crash comes after the rename
// and before the queue heard of it, the next attempt finds the file in
// new/ (or in cur/, where a reader moved it) and counts it as done. An
// envelope's first attempt has nothing to look for, which spares a
// listing of cur/, as long as a mailbox is big.
func (m *maildirs) deliver(dir, hostname string, e *envelope.Envelope, body *os.File) error {
	name := maildirName(e, hostname)
	tmp := filepath.Join(dir, "tmp", name)
	if !e.FirstAttempt {
		done, err := delivered(dir, name)
		if err != nil {
			return tempError{fmt.Errorf("maildir: %w", err)}
		}
		if done {
			return nil
		}
		// what an attempt that crashed left in tmp/ is ours to replace
		if err := os.Remove(tmp); err != nil && !os.IsNotExist(err) {
			return tempError{fmt.Errorf("maildir: %w", err)}
		}
	}
	write := func() error {
		return m.syncer.WriteFile(tmp, filepath.Join(dir, "new", name), 0o600, func(f *os.File) error {
			return writeMessage(f, e, body)
		})
	}
	_, made := m.made.Load(dir)
	if !made {
		if err := makeMaildir(dir); err != nil {
			return tempError{err}
		}
		m.made.Store(dir, struct{}{})
	}
	err := write()
	if made && errors.Is(err, fs.ErrNotExist) {
		// removed since the last delivery: make it again
		m.made.Delete(dir)
		if err = makeMaildir(dir); err == nil {
			err = write()
		}
	}
	if err != nil {
		return tempError{fmt.Errorf("maildir: %w", err)}
	}
	return nil
}

// makeMaildir makes the directories of the maildir at dir.
func makeMaildir(dir string) error {
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return fmt.Errorf("maildir: %w", err)
		}
	}
	return nil
}

// maildirName is the name of an envelope's file in a maildir: unique
// as the specification asks (time, then the envelope id, unique on this
// host, then the host name), and the same at every attempt.
func maildirName(e *envelope.Envelope, hostname string) string {
	host := strings.NewReplacer("/", "\\057", ":", "\\072").Replace(hostname)
	return fmt.Sprintf("%d.Q%s.%s", e.Created.Unix(), envelope.FormatEvpID(e.ID), host)
}

// delivered reports whether the file name is in the maildir already:
// in new/, or in cur/ with or without the ":2,flags" a reader adds.
func delivered(dir, name string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "new", name)); err == nil {
		return true, nil
	} else if !os.IsNotExist(err) {
		return false, err
	}
	if _, err := os.Stat(filepath.Join(dir, "cur", name)); err == nil {
		return true, nil
	}
	seen, err := filepath.Glob(filepath.Join(dir, "cur", name+":*"))
	return len(seen) > 0, err
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
