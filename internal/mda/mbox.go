package mda

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"smtpd/internal/envelope"
)

// deliverMbox appends the message to the mbox file at path, in the
// mboxrd form: a From_ line, lines starting with ">*From " quoted with
// one more ">", and an empty line at the end. It locks the file as other
// mail tools do, with a dot-lock when the directory allows one and with
// fcntl always, and makes the append durable; a failed append is cut
// off again so the mailbox is never left with half a message.
func deliverMbox(path string, e *envelope.Envelope, body io.Reader) error {
	unlock, err := dotLock(path)
	if err != nil {
		return tempError{err}
	}
	defer unlock()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return tempError{fmt.Errorf("mbox: %w", err)}
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLKW, &lk); err != nil {
		return tempError{fmt.Errorf("mbox: lock: %w", err)}
	}
	fi, err := f.Stat()
	if err != nil {
		return tempError{fmt.Errorf("mbox: %w", err)}
	}
	start := fi.Size()
	err = writeMbox(f, e, body)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Truncate(start)
		return tempError{fmt.Errorf("mbox: %w", err)}
	}
	return nil
}

func writeMbox(w io.Writer, e *envelope.Envelope, body io.Reader) error {
	bw := bufio.NewWriterSize(w, 64*1024)
	sender := e.Sender
	if sender == "" {
		sender = "MAILER-DAEMON"
	}
	fmt.Fprintf(bw, "From %s %s\n", sender, time.Now().UTC().Format(time.ANSIC))
	// the message streams through a pipe to be quoted line by line
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeMessage(pw, e, body)) }()
	defer pr.Close()
	sc := bufio.NewReaderSize(pr, 64*1024)
	for {
		line, err := sc.ReadBytes('\n')
		if len(line) > 0 {
			if isFromLine(line) {
				bw.WriteByte('>')
			}
			bw.Write(line)
		}
		if err == io.EOF {
			if len(line) > 0 && line[len(line)-1] != '\n' {
				bw.WriteByte('\n')
			}
			break
		}
		if err != nil {
			return err
		}
	}
	bw.WriteByte('\n')
	return bw.Flush()
}

// isFromLine reports lines that mboxrd quotes: ">*From ".
func isFromLine(line []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From "))
}

// dotLock takes path.lock as mail tools do; a directory that does not
// let this user create it (such as /var/mail without the mail group)
// leaves the fcntl lock alone to protect the file.
func dotLock(path string) (func(), error) {
	lock := path + ".lock"
	deadline := time.Now().Add(5 * time.Minute)
	for {
		f, err := os.OpenFile(lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			f.Close()
			return func() { os.Remove(lock) }, nil
		}
		if errors.Is(err, os.ErrPermission) {
			return func() {}, nil
		}
		if !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("mbox: lock: %w", err)
		}
		// a lock older than five minutes is stale, as procmail assumes
		if fi, err := os.Stat(lock); err == nil && time.Since(fi.ModTime()) > 5*time.Minute {
			os.Remove(lock)
			continue
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("mbox: %s is locked", path)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
