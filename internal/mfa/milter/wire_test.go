package milter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// rawMilter is a version 6 milter written by hand, for what go-milter's
// server (version 2, no DATA) cannot do. answer gives the packets
// (command byte first) to send for each command; nil means continue.
type rawMilter struct {
	mu       sync.Mutex
	commands []string // code and data of every command received
}

func (r *rawMilter) got() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.commands, "|")
}

func startRaw(t *testing.T, protocol gomilter.OptProtocol, answer func(code byte, data []byte) [][]byte) (string, *rawMilter) {
	t.Helper()
	r := &rawMilter{}
	path := filepath.Join(t.TempDir(), "raw.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	send := func(c net.Conn, p []byte) error {
		var h [4]byte
		binary.BigEndian.PutUint32(h[:], uint32(len(p)))
		_, err := c.Write(append(h[:], p...))
		return err
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		for {
			var h [4]byte
			if _, err := io.ReadFull(c, h[:]); err != nil {
				return
			}
			p := make([]byte, binary.BigEndian.Uint32(h[:]))
			if _, err := io.ReadFull(c, p); err != nil {
				return
			}
			code, data := p[0], p[1:]
			r.mu.Lock()
			r.commands = append(r.commands, string(code)+strings.ReplaceAll(string(data), "\x00", "."))
			r.mu.Unlock()
			var out [][]byte
			switch code {
			case 'O':
				b := []byte{'O', 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0}
				binary.BigEndian.PutUint32(b[5:], uint32(gomilter.OptAddHeader|gomilter.OptChangeHeader))
				binary.BigEndian.PutUint32(b[9:], uint32(protocol))
				out = [][]byte{b}
			case 'D', 'A':
			case 'Q':
				return
			default:
				if out = answer(code, data); out == nil {
					out = [][]byte{{'c'}}
				}
			}
			for _, p := range out {
				if err := send(c, p); err != nil {
					return
				}
			}
		}
	}()
	return path, r
}

func TestVersion6Milter(t *testing.T) {
	progress := []byte{'p'}
	tests := []struct {
		name     string
		protocol gomilter.OptProtocol
		answer   func(code byte, data []byte) [][]byte
		// stop says where the transaction stops and how
		phase   string
		verdict Verdict
		err     error
		out     string
		got     string // a part of what the milter received
	}{
		{name: "data tempfail after progress",
			answer: func(code byte, _ []byte) [][]byte {
				if code == 'T' {
					return [][]byte{progress, progress, append([]byte("y451 4.3.0 Scanner busy"), 0)}
				}
				return nil
			},
			phase: "data", verdict: Verdict{Action: Reply, Code: 451, Enhanced: "4.3.0", Text: "Scanner busy"},
			got: "Ti.0a1b2c3d.|T|A"},
		{name: "data reject", answer: func(code byte, _ []byte) [][]byte {
			if code == 'T' {
				return [][]byte{{'r'}}
			}
			return nil
		}, phase: "data", verdict: Verdict{Action: Reject, Code: 550, Enhanced: "5.7.1", Text: "Command rejected"}},
		{name: "no data", protocol: gomilter.OptNoData, answer: func(code byte, _ []byte) [][]byte {
			if code == 'T' {
				return [][]byte{{'r'}} // must not be asked
			}
			return nil
		}, phase: "message", verdict: Verdict{Action: Continue}},
		{name: "no replies", protocol: gomilter.OptNoDataReply | gomilter.OptNoHeaderReply | gomilter.OptNoRcptReply | gomilter.OptNoEOHReply | gomilter.OptNoBodyReply,
			answer: func(code byte, _ []byte) [][]byte {
				if code == 'E' {
					return nil
				}
				if code == 'T' || code == 'L' || code == 'R' || code == 'N' || code == 'B' {
					return [][]byte{}
				}
				return nil
			}, phase: "message", verdict: Verdict{Action: Continue}, got: "R<b@example.net>.|DTi.0a1b2c3d.|T|LReceived."},
		{name: "leading spaces", protocol: gomilter.OptHeaderLeadingSpace,
			answer: func(code byte, _ []byte) [][]byte {
				if code == 'E' {
					ins := append([]byte{'i', 0, 0, 0, 0}, "DKIM-Signature\x00 v=1; a=rsa-sha256;\n\tb=abc\x00"...)
					chg := append([]byte{'m', 0, 0, 0, 1}, "Subject\x00\tnew subject\x00"...)
					return [][]byte{progress, ins, chg, {'a'}}
				}
				return nil
			},
			phase: "message", verdict: Verdict{Action: Accept},
			out: "DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\n" + strings.Replace(testMessage, "Subject: hello", "Subject:\tnew subject", 1),
			got: "LFrom. A <a@example.org>.|"},
		{name: "modification outside end of message", answer: func(code byte, _ []byte) [][]byte {
			if code == 'M' {
				return [][]byte{append([]byte("hX-A\x00b"), 0)}
			}
			return nil
		}, phase: "mail", err: ErrUnavailable},
		{name: "reply code not 4xx or 5xx", answer: func(code byte, _ []byte) [][]byte {
			if code == 'R' {
				return [][]byte{append([]byte("y250 ok"), 0)}
			}
			return nil
		}, phase: "rcpt", err: ErrUnavailable},
		{name: "unknown answer", answer: func(code byte, _ []byte) [][]byte {
			if code == 'T' {
				return [][]byte{{'Z'}}
			}
			return nil
		}, phase: "data", err: ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, raw := startRaw(t, tt.protocol, tt.answer)
			s := dial(t, "unix", path, 2*time.Second)
			if s.legacy {
				t.Fatal("a version 6 milter taken for a legacy one")
			}
			var out bytes.Buffer
			phase, v, _, err := transaction(t, s, testMessage, &out)
			if phase != tt.phase || v != tt.verdict || !errors.Is(err, tt.err) && (err != nil || tt.err != nil) {
				t.Fatalf("stopped at %s with %+v, %v; want %s, %+v, %v", phase, v, err, tt.phase, tt.verdict, tt.err)
			}
			if out.String() != tt.out {
				t.Errorf("out\n%q\nwant\n%q", out.String(), tt.out)
			}
			s.Close()
			time.Sleep(50 * time.Millisecond)
			if got := raw.got(); !strings.Contains(got, tt.got) {
				t.Errorf("milter got %s\nwant a part %s", got, tt.got)
			}
		})
	}
}
