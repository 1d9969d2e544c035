package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// encode writes h back as a header; Parse(encode(h)) must give h again,
// but for what Parse drops (UNKNOWN's text, LOCAL's block) and CRC32C
// TLVs, which encode leaves out.
func encode(h Header) []byte {
	if h.Version == 1 {
		if h.Family == Unspec {
			return []byte("PROXY UNKNOWN\r\n")
		}
		proto := "TCP4"
		if h.Family == INET6 {
			proto = "TCP6"
		}
		return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", proto,
			h.Source.Addr(), h.Destination.Addr(), h.Source.Port(), h.Destination.Port())
	}
	fam := byte(h.Family)<<4 | byte(h.Transport)
	var body []byte
	if h.Command == Proxy {
		switch h.Family {
		case INET, INET6:
			body = addrs(h.Source, h.Destination)
		case Unix:
			body = make([]byte, 216)
		}
		for _, t := range withoutCRC(h.TLVs) {
			body = append(body, tlv(t.Type, string(t.Value))...)
		}
	}
	return v2(0x20|byte(h.Command), fam, body)
}

func withoutCRC(tlvs []TLV) []TLV {
	var out []TLV
	for _, t := range tlvs {
		if t.Type != tlvCRC32C {
			out = append(out, t)
		}
	}
	return out
}

func FuzzParse(f *testing.F) {
	for _, tc := range validCases() {
		f.Add([]byte(tc.in + smtpData))
	}
	for _, s := range []string{
		"", "EHLO x\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY UNKNOWN\r",
		v2Signature, v2Signature + "\x21\x11\xff\xff",
		string(withCRC(v2(0x21, 0x11, addrs(src4, dst4)), true)),
		string(v2(0x21, 0x11, addrs(src4, dst4), []byte{1, 0, 9})),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReaderSize(bytes.NewReader(in), 16)
		h, err := Parse(r)
		rest, _ := io.ReadAll(r)
		consumed := len(in) - len(rest)

		// the same whatever the segmentation
		h1, err1 := Parse(bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(in)), 16))
		if (err == nil) != (err1 == nil) || !reflect.DeepEqual(h, h1) {
			t.Fatalf("whole: %+v, %v; byte by byte: %+v, %v", h, err, h1, err1)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		switch h.Version {
		case 1:
			if consumed > maxV1Length || !bytes.HasSuffix(in[:consumed], []byte("\r\n")) || !bytes.HasPrefix(in, []byte(v1Prefix)) {
				t.Fatalf("v1 header of %d bytes: %q", consumed, in[:consumed])
			}
			if bytes.Count(in[:consumed], []byte("\n")) != 1 {
				t.Fatalf("v1 header of several lines: %q", in[:consumed])
			}
		case 2:
			if consumed < v2HeaderLength || consumed > v2HeaderLength+maxV2Length ||
				consumed != v2HeaderLength+int(in[14])<<8+int(in[15]) || !bytes.HasPrefix(in, []byte(v2Signature)) {
				t.Fatalf("v2 header of %d bytes: %q", consumed, in[:consumed])
			}
		default:
			t.Fatalf("version %d", h.Version)
		}
		if h.Source.IsValid() != h.Destination.IsValid() ||
			h.Source.IsValid() != (h.Command == Proxy && (h.Family == INET || h.Family == INET6)) {
			t.Fatalf("addresses %v %v with %+v", h.Source, h.Destination, h)
		}
		if h.Version == 2 && h.Command == Local || h.Version == 1 && h.Family == Unspec {
			return
		}
		again, err := Parse(bufio.NewReader(bytes.NewReader(encode(h))))
		if err != nil {
			t.Fatalf("Parse(encode(%+v)): %v", h, err)
		}
		h.TLVs, again.TLVs = withoutCRC(h.TLVs), withoutCRC(again.TLVs)
		if !reflect.DeepEqual(h, again) {
			t.Fatalf("round trip: %+v, then %+v", h, again)
		}
	})
}

// bytesConn is a net.Conn that reads from a fixed input.
type bytesConn struct {
	net.Conn // nil: only Read and Close are used
	r        io.Reader
	closed   bool
}

func (c *bytesConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *bytesConn) Close() error               { c.closed = true; return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error {
	return nil
}

// FuzzUntrustedConn: an untrusted peer's stream reaches the reader
// unchanged, however it is segmented and read, unless it starts with a
// header, which fails the read and closes the connection.
func FuzzUntrustedConn(f *testing.F) {
	for _, s := range []string{"EHLO x\r\n", "PROXY TCP4", v2Signature, "\r\n\r\n", "PROX", "\r\nQUIT\r\n"} {
		f.Add([]byte(s), uint8(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, size uint8) {
		var src io.Reader = bytes.NewReader(in)
		if size&1 != 0 {
			src = iotest.OneByteReader(src)
		}
		nc := &bytesConn{r: src}
		c := &Conn{Conn: nc}
		got, err := io.ReadAll(readerOf{c, int(size)%7 + 1})
		header := strings.HasPrefix(string(in), v1Prefix) || strings.HasPrefix(string(in), v2Signature)
		if header {
			if !errors.Is(err, ErrUntrusted) || len(got) != 0 || !nc.closed {
				t.Fatalf("header %q: read %q, %v, closed %v", in, got, err, nc.closed)
			}
			return
		}
		if err != nil || !bytes.Equal(got, in) || nc.closed {
			t.Fatalf("%q: read %q, %v, closed %v", in, got, err, nc.closed)
		}
	})
}

// readerOf reads at most n bytes a time.
type readerOf struct {
	r io.Reader
	n int
}

func (r readerOf) Read(p []byte) (int, error) { return r.r.Read(p[:min(len(p), r.n)]) }
