package proxyproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// v2 builds a version 2 header: signature, ver_cmd, fam, length, body
// (spec 2.2).
func v2(verCmd, fam byte, body ...[]byte) []byte {
	b := append([]byte(v2Signature), verCmd, fam, 0, 0)
	for _, p := range body {
		b = append(b, p...)
	}
	binary.BigEndian.PutUint16(b[14:16], uint16(len(b)-v2HeaderLength))
	return b
}

// addrs is the address block of two endpoints of one family.
func addrs(src, dst netip.AddrPort) []byte {
	var b []byte
	b = append(b, src.Addr().AsSlice()...)
	b = append(b, dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

func tlv(typ byte, value string) []byte {
	b := []byte{typ, 0, 0}
	binary.BigEndian.PutUint16(b[1:], uint16(len(value)))
	return append(b, value...)
}

// withCRC appends a CRC32C TLV to a version 2 header and fills it in
// (spec 2.2.3); bad spoils the checksum.
func withCRC(h []byte, bad bool) []byte {
	h = append(bytes.Clone(h), tlvCRC32C, 0, 4, 0, 0, 0, 0)
	binary.BigEndian.PutUint16(h[14:16], uint16(len(h)-v2HeaderLength))
	sum := crc32.Checksum(h, crc32.MakeTable(crc32.Castagnoli))
	if bad {
		sum++
	}
	binary.BigEndian.PutUint32(h[len(h)-4:], sum)
	return h
}

var (
	src4 = netip.MustParseAddrPort("192.0.2.1:56324")
	dst4 = netip.MustParseAddrPort("198.51.100.11:25")
	src6 = netip.MustParseAddrPort("[2001:db8::1]:56324")
	dst6 = netip.MustParseAddrPort("[2001:db8::11]:587")
)

const (
	maxIPv6  = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
	smtpData = "EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n"
)

type parseCase struct {
	name string
	in   string
	want Header
}

func validCases() []parseCase {
	longUnknown := "PROXY UNKNOWN " + maxIPv6 + " " + maxIPv6 + " 65535 65535\r\n"
	crc := withCRC(v2(0x21, 0x11, addrs(src4, dst4), tlv(0x02, "mx.example")), false)
	bigNoop := v2(0x21, 0x11, addrs(src4, dst4), tlv(0x04, strings.Repeat("x", maxV2Length-12-3)))
	return []parseCase{
		{"v1 tcp4", "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\n",
			Header{Version: 1, Command: Proxy, Family: INET, Transport: Stream, Source: src4, Destination: dst4}},
		{"v1 tcp4 extremes", "PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n",
			Header{Version: 1, Command: Proxy, Family: INET, Transport: Stream,
				Source:      netip.MustParseAddrPort("255.255.255.255:65535"),
				Destination: netip.MustParseAddrPort("0.0.0.0:0")}},
		{"v1 tcp6", "PROXY TCP6 2001:db8::1 2001:db8::11 56324 587\r\n",
			Header{Version: 1, Command: Proxy, Family: INET6, Transport: Stream, Source: src6, Destination: dst6}},
		{"v1 tcp6 longest", "PROXY TCP6 " + maxIPv6 + " " + maxIPv6 + " 65535 65535\r\n",
			Header{Version: 1, Command: Proxy, Family: INET6, Transport: Stream,
				Source:      netip.MustParseAddrPort("[" + maxIPv6 + "]:65535"),
				Destination: netip.MustParseAddrPort("[" + maxIPv6 + "]:65535")}},
		{"v1 tcp6 upper case", "PROXY TCP6 2001:DB8::1 2001:DB8::11 56324 587\r\n",
			Header{Version: 1, Command: Proxy, Family: INET6, Transport: Stream, Source: src6, Destination: dst6}},
		{"v1 tcp6 v4-mapped", "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.11 56324 25\r\n",
			Header{Version: 1, Command: Proxy, Family: INET6, Transport: Stream,
				Source:      netip.MustParseAddrPort("[::ffff:192.0.2.1]:56324"),
				Destination: netip.MustParseAddrPort("[::ffff:198.51.100.11]:25")}},
		{"v1 unknown short", "PROXY UNKNOWN\r\n", Header{Version: 1, Command: Proxy}},
		{"v1 unknown anything", "PROXY UNKNOWN whatever \x01 it says\r\n", Header{Version: 1, Command: Proxy}},
		{"v1 unknown longest", longUnknown, Header{Version: 1, Command: Proxy}},
		{"v1 unknown 107", "PROXY UNKNOWN " + strings.Repeat("x", 91) + "\r\n", Header{Version: 1, Command: Proxy}},
		{"v2 local", string(v2(0x20, 0x00)), Header{Version: 2, Command: Local}},
		{"v2 local with a block", string(v2(0x20, 0x11, addrs(src4, dst4))),
			Header{Version: 2, Command: Local, Family: INET, Transport: Stream}},
		{"v2 proxy unspec", string(v2(0x21, 0x00)), Header{Version: 2, Command: Proxy}},
		{"v2 proxy unspec with bytes", string(v2(0x21, 0x00, []byte("ignored"))), Header{Version: 2, Command: Proxy}},
		{"v2 tcp4", string(v2(0x21, 0x11, addrs(src4, dst4))),
			Header{Version: 2, Command: Proxy, Family: INET, Transport: Stream, Source: src4, Destination: dst4}},
		{"v2 udp4", string(v2(0x21, 0x12, addrs(src4, dst4))),
			Header{Version: 2, Command: Proxy, Family: INET, Transport: Dgram, Source: src4, Destination: dst4}},
		{"v2 tcp6", string(v2(0x21, 0x21, addrs(src6, dst6))),
			Header{Version: 2, Command: Proxy, Family: INET6, Transport: Stream, Source: src6, Destination: dst6}},
		{"v2 udp6", string(v2(0x21, 0x22, addrs(src6, dst6))),
			Header{Version: 2, Command: Proxy, Family: INET6, Transport: Dgram, Source: src6, Destination: dst6}},
		{"v2 unix stream", string(v2(0x21, 0x31, make([]byte, 216))),
			Header{Version: 2, Command: Proxy, Family: Unix, Transport: Stream}},
		{"v2 unix dgram with tlv", string(v2(0x21, 0x32, make([]byte, 216), tlv(0x05, "id"))),
			Header{Version: 2, Command: Proxy, Family: Unix, Transport: Dgram, TLVs: []TLV{{0x05, []byte("id")}}}},
		{"v2 tlvs", string(v2(0x21, 0x11, addrs(src4, dst4), tlv(0x01, "smtp"), tlv(0x04, ""), tlv(0xe0, "custom"))),
			Header{Version: 2, Command: Proxy, Family: INET, Transport: Stream, Source: src4, Destination: dst4,
				TLVs: []TLV{{0x01, []byte("smtp")}, {0x04, []byte{}}, {0xe0, []byte("custom")}}}},
		{"v2 ssl tlv", string(v2(0x21, 0x21, addrs(src6, dst6), tlv(0x20, "\x01\x00\x00\x00\x00"+string(tlv(0x21, "TLSv1.3"))))),
			Header{Version: 2, Command: Proxy, Family: INET6, Transport: Stream, Source: src6, Destination: dst6,
				TLVs: []TLV{{0x20, append([]byte("\x01\x00\x00\x00\x00"), tlv(0x21, "TLSv1.3")...)}}}},
		{"v2 crc32c", string(crc),
			Header{Version: 2, Command: Proxy, Family: INET, Transport: Stream, Source: src4, Destination: dst4,
				TLVs: []TLV{{0x02, []byte("mx.example")}, {tlvCRC32C, crc[len(crc)-4:]}}}},
		{"v2 longest", string(bigNoop),
			Header{Version: 2, Command: Proxy, Family: INET, Transport: Stream, Source: src4, Destination: dst4,
				TLVs: []TLV{{0x04, []byte(strings.Repeat("x", maxV2Length-15))}}}},
	}
}

// readers are the ways a header may come: at once through a small or a
// large buffer, or a byte per read (spec 2: TCP may fragment it).
var readers = []struct {
	name string
	make func(io.Reader) *bufio.Reader
}{
	{"bufio16", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 16) }},
	{"bufio4096", func(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }},
	{"onebyte", func(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(iotest.OneByteReader(r), 16) }},
}

func TestParseValid(t *testing.T) {
	for _, tc := range validCases() {
		for _, rd := range readers {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				r := rd.make(strings.NewReader(tc.in + smtpData))
				h, err := Parse(r)
				if err != nil {
					t.Fatalf("Parse(%q): %v", tc.in, err)
				}
				if !reflect.DeepEqual(h, tc.want) {
					t.Errorf("Parse(%q)\n got %+v\nwant %+v", tc.in, h, tc.want)
				}
				// not one byte of the SMTP stream consumed
				rest, err := io.ReadAll(r)
				if err != nil || string(rest) != smtpData {
					t.Errorf("after the header: %q, %v; want %q", rest, err, smtpData)
				}
			})
		}
	}
}

func TestParseInvalid(t *testing.T) {
	v2tcp4 := v2(0x21, 0x11, addrs(src4, dst4))
	oversized := v2(0x21, 0x11, addrs(src4, dst4), tlv(0x04, strings.Repeat("x", maxV2Length-12-3+1)))
	withLen := func(h []byte, n int) []byte {
		h = bytes.Clone(h)
		binary.BigEndian.PutUint16(h[14:16], uint16(n))
		return h
	}
	cases := []struct{ name, in string }{
		{"empty", ""},
		{"smtp", "EHLO client.example\r\n"},
		{"tls", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"},
		{"http", "GET / HTTP/1.1\r\n"},
		{"lower case", "proxy TCP4 192.0.2.1 198.51.100.11 56324 25\r\n"},
		{"no space", "PROXYTCP4 192.0.2.1 198.51.100.11 56324 25\r\n"},
		{"prefix only", "PROXY "},
		{"PROXY CRLF", "PROXY\r\n"},
		{"PROXY space CRLF", "PROXY \r\n"},
		{"bare LF", "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\n"},
		{"bare CR", "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r"},
		{"CR CR LF", "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25\r\r\n"},
		{"CR inside", "PROXY UNKNOWN a\rb\r\n"},
		{"truncated v1", "PROXY TCP4 192.0.2.1 198.51"},
		{"108 bytes", "PROXY UNKNOWN " + strings.Repeat("x", 92) + "\r\n"},
		{"CR at 107", "PROXY UNKNOWN " + strings.Repeat("x", 92) + "\r"},
		{"no CRLF at all", "PROXY UNKNOWN " + strings.Repeat("x", 200)},
		{"unknown glued", "PROXY UNKNOWNX\r\n"},
		{"tcp5", "PROXY TCP5 192.0.2.1 198.51.100.11 56324 25\r\n"},
		{"udp4", "PROXY UDP4 192.0.2.1 198.51.100.11 56324 25\r\n"},
		{"missing field", "PROXY TCP4 192.0.2.1 198.51.100.11 56324\r\n"},
		{"extra field", "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25 1\r\n"},
		{"double space", "PROXY TCP4 192.0.2.1  198.51.100.11 56324 25\r\n"},
		{"trailing space", "PROXY TCP4 192.0.2.1 198.51.100.11 56324 25 \r\n"},
		{"tab", "PROXY TCP4 192.0.2.1\t198.51.100.11 56324 25\r\n"},
		{"leading zero address", "PROXY TCP4 192.0.2.01 198.51.100.11 56324 25\r\n"},
		{"short address", "PROXY TCP4 192.0.2 198.51.100.11 56324 25\r\n"},
		{"octet too big", "PROXY TCP4 192.0.2.256 198.51.100.11 56324 25\r\n"},
		{"hostname", "PROXY TCP4 mx.example 198.51.100.11 56324 25\r\n"},
		{"tcp4 with ipv6", "PROXY TCP4 2001:db8::1 198.51.100.11 56324 25\r\n"},
		{"tcp4 with mapped", "PROXY TCP4 ::ffff:192.0.2.1 198.51.100.11 56324 25\r\n"},
		{"tcp6 with ipv4", "PROXY TCP6 2001:db8::1 198.51.100.11 56324 25\r\n"},
		{"tcp6 with zone", "PROXY TCP6 fe80::1%eth0 2001:db8::11 56324 25\r\n"},
		{"tcp6 brackets", "PROXY TCP6 [2001:db8::1] [2001:db8::11] 56324 25\r\n"},
		{"port leading zero", "PROXY TCP4 192.0.2.1 198.51.100.11 056324 25\r\n"},
		{"port 00", "PROXY TCP4 192.0.2.1 198.51.100.11 00 25\r\n"},
		{"port too big", "PROXY TCP4 192.0.2.1 198.51.100.11 65536 25\r\n"},
		{"port negative", "PROXY TCP4 192.0.2.1 198.51.100.11 -1 25\r\n"},
		{"port plus", "PROXY TCP4 192.0.2.1 198.51.100.11 +1 25\r\n"},
		{"port hex", "PROXY TCP4 192.0.2.1 198.51.100.11 0x19 25\r\n"},
		{"port empty", "PROXY TCP4 192.0.2.1 198.51.100.11  25\r\n"},
		{"v1 NUL", "PROXY TCP4 192.0.2.1\x00198.51.100.11 56324 25\r\n"},
		{"v2 signature cut", v2Signature[:7]},
		{"v2 signature wrong", v2Signature[:5] + "X" + v2Signature[6:] + "\x21\x11\x00\x00"},
		{"v2 fixed part cut", string(v2tcp4[:14])},
		{"v2 addresses cut", string(v2tcp4[:20])},
		{"v2 version 1", string(v2(0x11, 0x11, addrs(src4, dst4)))},
		{"v2 version 3", string(v2(0x31, 0x11, addrs(src4, dst4)))},
		{"v2 version 0", string(v2(0x01, 0x11, addrs(src4, dst4)))},
		{"v2 command 2", string(v2(0x22, 0x11, addrs(src4, dst4)))},
		{"v2 command f", string(v2(0x2f, 0x11, addrs(src4, dst4)))},
		{"v2 family 4", string(v2(0x21, 0x41, addrs(src4, dst4)))},
		{"v2 transport 3", string(v2(0x21, 0x13, addrs(src4, dst4)))},
		{"v2 local family 4", string(v2(0x20, 0x40))},
		{"v2 inet unspec transport", string(v2(0x21, 0x10, addrs(src4, dst4)))},
		{"v2 unspec family stream", string(v2(0x21, 0x01, addrs(src4, dst4)))},
		{"v2 tcp4 length 11", string(withLen(v2tcp4, 11)[:16+11])},
		{"v2 tcp6 with ipv4 block", string(v2(0x21, 0x21, addrs(src4, dst4)))},
		{"v2 unix short", string(v2(0x21, 0x31, make([]byte, 215)))},
		{"v2 oversized", string(oversized)},
		{"v2 length 65535", string(withLen(v2tcp4, 65535))},
		{"v2 length past data", string(withLen(v2tcp4, 40))},
		{"v2 tlv overrun", string(v2(0x21, 0x11, addrs(src4, dst4), []byte{0x01, 0x00, 0x05, 'a'}))},
		{"v2 one stray byte", string(v2(0x21, 0x11, addrs(src4, dst4), []byte{0x04}))},
		{"v2 two stray bytes", string(v2(0x21, 0x11, addrs(src4, dst4), tlv(0x04, "x"), []byte{0x04, 0x00}))},
		{"v2 crc32c wrong", string(withCRC(v2tcp4, true))},
		{"v2 crc32c short", string(v2(0x21, 0x11, addrs(src4, dst4), tlv(tlvCRC32C, "abc")))},
	}
	for _, tc := range cases {
		for _, rd := range readers {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				h, err := Parse(rd.make(strings.NewReader(tc.in)))
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("Parse(%q) = %+v, %v; want ErrMalformed", tc.in, h, err)
				}
				if !strings.HasPrefix(err.Error(), "proxyproto: ") {
					t.Errorf("error %q lacks the package prefix", err)
				}
			})
		}
	}
}

// TestParseStopsAtFirstWrongByte: no header is refused at once, without
// waiting for more bytes that a client waiting for the greeting would
// never send.
func TestParseStopsAtFirstWrongByte(t *testing.T) {
	for _, in := range []string{"E", "PRX", "\r\n\r\nX", "\r\n\r\n\x00\r\nQUIX"} {
		// a reader that fails the test if read past in
		r := bufio.NewReaderSize(io.MultiReader(strings.NewReader(in), failReader{t}), 16)
		if _, err := Parse(r); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q): %v, want ErrMalformed", in, err)
		}
	}
}

type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("Parse read past the first wrong byte")
	return 0, io.EOF
}

// TestParseKeepsReadError: a missing header's cause, such as a
// deadline, stays visible.
func TestParseKeepsReadError(t *testing.T) {
	for _, in := range []string{"", "PRO", v2Signature, "PROXY TCP4 1"} {
		_, err := Parse(bufio.NewReader(strings.NewReader(in)))
		if !errors.Is(err, ErrMalformed) || !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("Parse(%q): %v; want ErrMalformed and EOF", in, err)
		}
	}
}

// TestParseTLVsOwnMemory: the TLVs stay valid once the reader's buffer
// is reused.
func TestParseTLVsOwnMemory(t *testing.T) {
	in := v2(0x21, 0x11, addrs(src4, dst4), tlv(0x02, "mx.example"))
	r := bufio.NewReader(bytes.NewReader(append(in, strings.Repeat("z", 8192)...)))
	h, err := Parse(r)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r)
	if got := string(h.TLVs[0].Value); got != "mx.example" {
		t.Errorf("TLV value %q after reading on", got)
	}
}
