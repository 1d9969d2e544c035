package procfilter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// errStopped tells the sender that DataLines gave up; never returned.
var errStopped = errors.New("stopped")

// DataLines streams the message in (CRLF lines, already dot-unstuffed,
// as our spool stores it) as data-line requests, dot-stuffed and ended
// with ".", and writes the filter's filter-dataline lines to out as
// CRLF lines, dot-unstuffed, until the filter's final ".".
//
// Sending and receiving run concurrently, so a filter may answer line
// by line or only at the end (dkimsign): no deadlock whatever its pace.
// Memory stays bounded: a line at a time each way, and a few dozen
// lines in between; when out is slow the reader waits (and with it the
// filter's answers to other sessions). Timeout applies to silence both
// ways, not to the whole message.
//
// If the filter did not register data-line, in is copied to out as is.
// If DataLines fails on its side (ctx, in, out, a line over 64 KiB), it
// still ends the stream with "." so that the filter stays in step, and
// drops what the filter sends for it. It returns only once it has
// stopped reading in and writing out, so a Read on in that blocks
// delays even a cancelled call.
func (c *Conn) DataLines(ctx context.Context, t time.Time, sid uint64, in io.Reader, out io.Writer) error {
	if err := c.Err(); err != nil {
		return err
	}
	if !c.HasPhase("data-line") {
		if _, err := io.Copy(out, in); err != nil {
			return fmt.Errorf("procfilter %q: data of session %016x: %w", c.name, sid, err)
		}
		return nil
	}
	if t.IsZero() {
		t = c.now()
	}
	r, err := c.register(sid, "data-line", true)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	sent := make(chan error, 1)
	go func() { sent <- c.sendData(r, t, in, stop) }()

	// giveUp stops the sender, and waits for it: in belongs to our
	// caller again once we return. The reader drops the filter's lines
	// from now on (r.gone), so the sender cannot wait on a filter that
	// waits on us.
	giveUp := func(err error) error {
		r.abandon()
		close(stop)
		if sent != nil {
			<-sent
		}
		return err
	}
	crlf := []byte("\r\n")
	for {
		select {
		case it := <-r.lines:
			if it.end {
				// the filter's "." comes after ours, so the
				// sender is done or about to be
				if sent != nil {
					if err := <-sent; err != nil {
						return err
					}
				}
				return nil
			}
			r.busy.Add(1)
			_, err := out.Write(it.line)
			if err == nil {
				_, err = out.Write(crlf)
			}
			r.touch()
			r.busy.Add(-1)
			if err != nil {
				return giveUp(fmt.Errorf("procfilter %q: data of session %016x: writing out: %w", c.name, sid, err))
			}
		case err := <-sent:
			sent = nil
			if err != nil {
				return giveUp(err)
			}
		case <-c.done:
			r.abandon()
			if sent != nil {
				<-sent // the sender sees the break on its next write
			}
			return c.Err()
		case <-ctx.Done():
			return giveUp(fmt.Errorf("procfilter %q: data of session %016x: %w", c.name, sid, ctx.Err()))
		}
	}
}

// sendData writes in as data-line requests, then ".". On a problem with
// in, or when stopped, it still writes the "." and reports the problem.
func (c *Conn) sendData(r *request, t time.Time, in io.Reader, stop <-chan struct{}) error {
	prefix := appendHex(append(c.header(nil, "filter", t, "data-line", r.sid), '|'), r.token)
	prefix = append(prefix, '|')
	br := bufio.NewReaderSize(in, maxDataLine+2)
	buf := make([]byte, 0, len(prefix)+256)
	var problem error
	for problem == nil {
		select {
		case <-stop:
			problem = errStopped
			continue
		default:
		}
		r.busy.Add(1)
		line, err := br.ReadSlice('\n')
		r.busy.Add(-1)
		r.touch()
		if err == bufio.ErrBufferFull {
			problem = fmt.Errorf("procfilter %q: data of session %016x: line longer than %d bytes", c.name, r.sid, maxDataLine)
			break
		}
		if err != nil && err != io.EOF {
			problem = fmt.Errorf("procfilter %q: data of session %016x: reading: %w", c.name, r.sid, err)
			break
		}
		if len(line) == 0 {
			break // end of message
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		buf = append(buf[:0], prefix...)
		if len(line) > 0 && line[0] == '.' {
			buf = append(buf, '.') // smtpd hands filters dot-stuffed lines
		}
		buf = append(appendField(buf, line), '\n')
		// flush only when the next read may block, not per line
		if err := c.writeData(r, buf, br.Buffered() == 0); err != nil {
			return err
		}
		if err == io.EOF {
			break
		}
	}
	buf = append(append(buf[:0], prefix...), ".\n"...)
	r.sentEnd.Store(true) // before the write: the answer may beat its return
	if err := c.writeData(r, buf, true); err != nil {
		return err
	}
	if problem == errStopped {
		return nil
	}
	return problem
}

// writeData writes one data-line request. No watchdog of its own: the
// stream's silence timer covers a filter that stops reading.
func (c *Conn) writeData(r *request, b []byte, flush bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.Err(); err != nil {
		return err
	}
	if err := c.writeLocked(b, flush); err != nil {
		return err
	}
	r.touch()
	return nil
}
