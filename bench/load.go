package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// counter reads the running counters smtp-source and smtp-sink print
// (numbers, or "name=number" fields, ended by \r) and keeps the last
// value of the field named key ("" for a bare number).
type counter struct {
	key string
	n   atomic.Int64
}

// Write parses what the program printed; a counter never fails.
func (c *counter) Write(p []byte) (int, error) {
	for _, rec := range bytes.FieldsFunc(p, func(r rune) bool { return r == '\r' || r == '\n' }) {
		for _, f := range strings.Fields(string(rec)) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				k, v = "", f
			}
			if k == c.key {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					c.n.Store(n)
				}
			}
		}
	}
	return len(p), nil
}

// sink is a running smtp-sink counting the messages it received.
type sink struct {
	*proc
	port int
	msgs *counter
}

// startSink starts smtp-sink on a free loopback port, logging into dir.
func startSink(ctx context.Context, t tools, dir string) (*sink, error) {
	port, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	s := &sink{port: port, msgs: &counter{key: "mesg"}}
	cmd := exec.Command(t.sink, "-u", "nobody", "-c", fmt.Sprintf("127.0.0.1:%d", port), "1024")
	cmd.Env = t.env()
	cmd.Stdout = s.msgs
	if s.proc, err = startProc(cmd, filepath.Join(dir, "sink.log")); err != nil {
		return nil, err
	}
	if err := waitBanner(ctx, s.proc, fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// load is one load run: how many messages of what size over how many
// concurrent clients, with a new connection per message or reused ones.
type load struct {
	msgs, size, clients int
	reuse               bool
	// fixed is a message sent as it is, instead of those smtp-source
	// and our client make of size bytes
	fixed *message
}

// message is a fixed message: what goes on the wire, CRLF line ends,
// and a file of it with LF line ends for smtp-source -F, which adds a
// CR to each line.
type message struct {
	data []byte
	file string
}

// runSource sends l with smtp-source to addr, counting the messages
// accepted into sent, bounded by timeout: it returns
// context.DeadlineExceeded when stopped by the bound.
func runSource(ctx context.Context, t tools, addr string, l load, sent *counter, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	args := []string{"-c", "-s", fmt.Sprint(l.clients), "-m", fmt.Sprint(l.msgs),
		"-M", "bench.example", "-f", "sender@bench.example", "-t", "rcpt@example.test"}
	if l.fixed != nil {
		args = append(args, "-F", l.fixed.file)
	} else {
		args = append(args, "-l", fmt.Sprint(l.size))
	}
	if l.reuse {
		args = append(args, "-d")
	}
	cmd := exec.CommandContext(ctx, t.source, append(args, addr)...)
	cmd.Env = t.env()
	cmd.Stdout = sent
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return context.DeadlineExceeded
		}
		return fmt.Errorf("smtp-source: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// body returns a message of about size bytes, headers included.
func body(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: <sender@bench.example>\r\nTo: <rcpt@example.test>\r\nSubject: bench\r\n\r\n")
	line := "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

// latencies sends l with our own client and returns, sorted, the times
// from the end of each message's data (the final dot) to its 250, and
// the number of messages that failed with the first error.
func latencies(ctx context.Context, addr string, l load, sent *atomic.Int64) ([]time.Duration, int, error) {
	msg := body(l.size)
	if l.fixed != nil {
		msg = l.fixed.data
	}
	var (
		mu     sync.Mutex
		out    []time.Duration
		failed atomic.Int64
		first  error
		next   atomic.Int64
		wg     sync.WaitGroup
	)
	for range l.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s *session
			defer func() {
				if s != nil {
					s.close()
				}
			}()
			for next.Add(1) <= int64(l.msgs) && ctx.Err() == nil {
				if s == nil {
					var err error
					if s, err = dialSession(addr); err != nil {
						failed.Add(1)
						mu.Lock()
						first = cmp.Or(first, err)
						mu.Unlock()
						s = nil
						continue
					}
				}
				d, err := s.send(msg)
				if err != nil {
					failed.Add(1)
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
					s.close()
					s = nil
					continue
				}
				sent.Add(1)
				mu.Lock()
				out = append(out, d)
				mu.Unlock()
				if !l.reuse {
					s.close()
					s = nil
				}
			}
		}()
	}
	wg.Wait()
	slices.Sort(out)
	return out, int(failed.Load()), first
}

// session is an SMTP client session of the latency client.
type session struct {
	c net.Conn
	r *bufio.Reader
}

// dialSession connects to addr and says EHLO.
func dialSession(addr string) (*session, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	s := &session{c: c, r: bufio.NewReader(c)}
	if err := s.expect("220"); err != nil {
		c.Close()
		return nil, err
	}
	if err := s.cmd("EHLO bench.example\r\n", "250"); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// send sends one message and returns the time from its final dot to the
// 250.
func (s *session) send(msg []byte) (time.Duration, error) {
	for _, c := range []struct{ line, code string }{
		{"MAIL FROM:<sender@bench.example>\r\n", "250"},
		{"RCPT TO:<rcpt@example.test>\r\n", "250"},
		{"DATA\r\n", "354"},
	} {
		if err := s.cmd(c.line, c.code); err != nil {
			return 0, err
		}
	}
	s.c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := s.c.Write(msg); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := io.WriteString(s.c, ".\r\n"); err != nil {
		return 0, err
	}
	if err := s.expect("250"); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// cmd sends line and expects a reply with code.
func (s *session) cmd(line, code string) error {
	s.c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(s.c, line); err != nil {
		return err
	}
	return s.expect(code)
}

// expect reads a reply, all its lines, and checks its code.
func (s *session) expect(code string) error {
	s.c.SetDeadline(time.Now().Add(60 * time.Second))
	for range 100 {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return err
		}
		if len(line) < 4 || !strings.HasPrefix(line, code) {
			return fmt.Errorf("got %q, want %s", strings.TrimSpace(line), code)
		}
		if line[3] != '-' {
			return nil
		}
	}
	return errors.New("reply of more than 100 lines")
}

// close says QUIT and closes the connection.
func (s *session) close() {
	s.c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(s.c, "QUIT\r\n")
	s.expect("221")
	s.c.Close()
}

// percentile returns the p-th percentile of sorted d.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d))*p/100+0.5) - 1
	return d[max(0, min(i, len(d)-1))]
}
