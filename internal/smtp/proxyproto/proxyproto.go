// Package proxyproto reads the PROXY protocol header, versions 1 and 2,
// that a load balancer such as HAProxy puts before the stream it relays,
// so that the smtp process sees the client's address rather than the
// balancer's.
//
// The specification is HAProxy's doc/proxy-protocol.txt ("The PROXY
// protocol, Versions 1 & 2", revision 2020/03/05);
// comments cite its sections as "spec 2.1" and so on.
//
// Parse reads one header from a bufio.Reader. Listener wraps a
// net.Listener: connections from its Trusted prefixes must start with a
// header, which names the addresses their Conn reports; connections
// from anywhere else must not (spec 5: a receiver never guesses whether
// a header is present, and accepts one only from known sources).
package proxyproto

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// ErrMalformed is the error of every header Parse refuses: a missing,
// truncated, oversized or otherwise invalid one (spec 2.1: "any
// sequence which does not exactly match the protocol must be discarded
// and cause the receiver to abort the connection").
var ErrMalformed = errors.New("proxyproto: malformed header")

// Command is what a header asks of the receiver (spec 2.2, 13th byte).
type Command uint8

const (
	// Local is a connection the proxy made on its own behalf, a health
	// check: the real endpoints are the ones to use.
	Local Command = 0x0
	// Proxy is a relayed connection: the header has the original
	// endpoints. Every version 1 header is a Proxy one.
	Proxy Command = 0x1
)

// Family is the address family of the relayed connection (spec 2.2,
// high nibble of the 14th byte; version 1 TCP4, TCP6 and UNKNOWN map to
// INET, INET6 and Unspec).
type Family uint8

const (
	Unspec Family = 0x0 // unknown: no addresses
	INET   Family = 0x1 // IPv4
	INET6  Family = 0x2 // IPv6
	Unix   Family = 0x3 // AF_UNIX: paths, which Header does not keep
)

// Transport is the socket type of the relayed connection (spec 2.2, low
// nibble of the 14th byte; version 1 TCP is Stream).
type Transport uint8

const (
	UnspecTransport Transport = 0x0 // unknown
	Stream          Transport = 0x1 // TCP, or a UNIX stream socket
	Dgram           Transport = 0x2 // UDP, or a UNIX datagram socket
)

// Header is one parsed PROXY header.
type Header struct {
	// Version is 1 (text, spec 2.1) or 2 (binary, spec 2.2).
	Version int
	Command Command
	// Family and Transport are as the header gives them; for a Local
	// command they mean nothing (spec 2.2).
	Family    Family
	Transport Transport
	// Source and Destination are the relayed connection's client and
	// server ends; both are valid exactly when the command is Proxy and
	// the family INET or INET6 with a known transport. An INET6 address
	// may be an IPv4-mapped one, as the sender wrote it.
	Source, Destination netip.AddrPort
	// TLVs are a version 2 header's extensions after the addresses
	// (spec 2.2), in order; a CRC32C one has been checked.
	TLVs []TLV
}

// TLV is a Type-Length-Value extension of a version 2 header (spec 2.2).
type TLV struct {
	Type  byte
	Value []byte
}

// Registered TLV types this package acts on (spec 2.2).
const (
	tlvCRC32C = 0x03 // spec 2.2.3
)

// Sizes the spec fixes.
const (
	// maxV1Length bounds a version 1 line, CRLF included: the worst
	// case, UNKNOWN with two full IPv6 addresses (spec 2.1).
	maxV1Length = 107
	// v2HeaderLength is the fixed part of a version 2 header: the
	// signature, ver_cmd, fam and len (spec 2.2).
	v2HeaderLength = 16
	// maxV2Length bounds what follows the fixed part. The length field
	// allows 65535, but the spec means headers to fit in one 536-byte
	// segment (spec 2), and the registered TLVs are short (a unique ID
	// is at most 128 bytes, spec 2.2.5); this leaves room for the SSL
	// ones and a balancer's own, without letting each waiting
	// connection pin 64 KiB.
	maxV2Length = 4096
)

// v1Prefix starts a version 1 header (spec 2.1); v2Signature a version
// 2 one (spec 2.2). Neither can start an SMTP command line.
const (
	v1Prefix    = "PROXY "
	v2Signature = "\r\n\r\n\x00\r\nQUIT\n"
)

// Parse reads exactly one PROXY header from r, of either version, and
// not one byte more: what follows stays in r for the protocol it
// carries. Anything else than a complete, valid header, including no
// header at all, is an error wrapping ErrMalformed, and also the read
// error when there was one (a deadline, io.EOF); Parse gives up at the
// first byte that rules a header out, without waiting for more.
func Parse(r *bufio.Reader) (Header, error) {
	first, err := r.Peek(1)
	if err != nil {
		return Header{}, fmt.Errorf("%w: no header: %w", ErrMalformed, err)
	}
	switch first[0] {
	case v1Prefix[0]:
		return parseV1(r)
	case v2Signature[0]:
		return parseV2(r)
	}
	return Header{}, fmt.Errorf("%w: no header", ErrMalformed)
}

// expect checks that r starts with sig, peeking a byte at a time so as
// to fail on the first wrong one rather than wait for more.
func expect(r *bufio.Reader, sig string) error {
	for i := 1; i <= len(sig); i++ {
		b, err := r.Peek(i)
		if len(b) < i {
			return fmt.Errorf("%w: truncated signature: %w", ErrMalformed, err)
		}
		if b[i-1] != sig[i-1] {
			return fmt.Errorf("%w: no header", ErrMalformed)
		}
	}
	return nil
}

// parseV1 reads the text form: "PROXY" SP proto SP src SP dst SP sport
// SP dport CRLF, or "PROXY UNKNOWN" with anything up to the CRLF (spec
// 2.1).
func parseV1(r *bufio.Reader) (Header, error) {
	if err := expect(r, v1Prefix); err != nil {
		return Header{}, err
	}
	// byte by byte, so that nothing after the LF is consumed, whatever
	// r's buffer size
	var buf [maxV1Length]byte
	n := 0
	for {
		if n == len(buf) {
			// spec 2.1: no CRLF in the first 107 characters
			return Header{}, fmt.Errorf("%w: version 1 line longer than %d bytes", ErrMalformed, maxV1Length)
		}
		c, err := r.ReadByte()
		if err != nil {
			return Header{}, fmt.Errorf("%w: truncated version 1 line: %w", ErrMalformed, err)
		}
		buf[n] = c
		n++
		if c == '\n' {
			break
		}
	}
	line := string(buf[:n])
	// spec 2.1: a lone CR or LF must not end the line
	if n < 2 || line[n-2] != '\r' {
		return Header{}, fmt.Errorf("%w: version 1 line not ended by CRLF", ErrMalformed)
	}
	line = line[:n-2]
	if strings.IndexByte(line, '\r') >= 0 {
		return Header{}, fmt.Errorf("%w: CR inside the version 1 line", ErrMalformed)
	}
	h := Header{Version: 1, Command: Proxy}
	rest := line[len(v1Prefix):]
	// spec 2.1: after UNKNOWN the receiver ignores anything up to the
	// CRLF, and uses the real connection's addresses
	if rest == "UNKNOWN" || strings.HasPrefix(rest, "UNKNOWN ") {
		return h, nil
	}
	f := strings.Split(rest, " ")
	if len(f) != 5 {
		return Header{}, fmt.Errorf("%w: version 1 line has %d fields, not 6", ErrMalformed, len(f)+1)
	}
	switch f[0] {
	case "TCP4":
		h.Family = INET
	case "TCP6":
		h.Family = INET6
	default:
		return Header{}, fmt.Errorf("%w: unknown version 1 protocol %q", ErrMalformed, f[0])
	}
	h.Transport = Stream
	src, err := parseV1Addr(f[1], h.Family)
	if err != nil {
		return Header{}, fmt.Errorf("%w: source address: %w", ErrMalformed, err)
	}
	dst, err := parseV1Addr(f[2], h.Family)
	if err != nil {
		return Header{}, fmt.Errorf("%w: destination address: %w", ErrMalformed, err)
	}
	sport, err := parseV1Port(f[3])
	if err != nil {
		return Header{}, fmt.Errorf("%w: source port: %w", ErrMalformed, err)
	}
	dport, err := parseV1Port(f[4])
	if err != nil {
		return Header{}, fmt.Errorf("%w: destination port: %w", ErrMalformed, err)
	}
	h.Source = netip.AddrPortFrom(src, sport)
	h.Destination = netip.AddrPortFrom(dst, dport)
	return h, nil
}

// parseV1Addr parses an address of the family the line announced (spec
// 2.1): dotted decimal without leading zeros for TCP4 (netip refuses
// them), colon-separated hexadecimal without a zone for TCP6.
func parseV1Addr(s string, fam Family) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if fam == INET && !a.Is4() || fam == INET6 && (!a.Is6() || a.Zone() != "") {
		return netip.Addr{}, fmt.Errorf("%q does not match the protocol", s)
	}
	return a, nil
}

// parseV1Port parses a port: decimal, 0 to 65535, without leading
// zeros (spec 2.1).
func parseV1Port(s string) (uint16, error) {
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("leading zero in %q", s)
	}
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, err
	}
	return uint16(p), nil
}

// parseV2 reads the binary form (spec 2.2): the 12-byte signature,
// version and command, family and transport, the length of the rest,
// then addresses and TLVs.
func parseV2(r *bufio.Reader) (Header, error) {
	if err := expect(r, v2Signature); err != nil {
		return Header{}, err
	}
	fixed, err := r.Peek(v2HeaderLength)
	if err != nil {
		return Header{}, fmt.Errorf("%w: truncated version 2 header: %w", ErrMalformed, err)
	}
	verCmd, fam := fixed[12], fixed[13]
	length := int(binary.BigEndian.Uint16(fixed[14:16]))
	// spec 2.2: the version must be 2, other commands dropped
	if verCmd>>4 != 2 {
		return Header{}, fmt.Errorf("%w: version %d", ErrMalformed, verCmd>>4)
	}
	h := Header{Version: 2, Command: Command(verCmd & 0xf), Family: Family(fam >> 4), Transport: Transport(fam & 0xf)}
	if h.Command != Local && h.Command != Proxy {
		return Header{}, fmt.Errorf("%w: command %#x", ErrMalformed, uint8(h.Command))
	}
	// spec 2.2: other families and transports must be rejected, even
	// for LOCAL, whose family is otherwise ignored
	if h.Family > Unix || h.Transport > Dgram {
		return Header{}, fmt.Errorf("%w: family and transport %#02x", ErrMalformed, fam)
	}
	if length > maxV2Length {
		return Header{}, fmt.Errorf("%w: version 2 length %d over %d", ErrMalformed, length, maxV2Length)
	}
	// the whole header in one buffer of its own, for the CRC32C check
	// (spec 2.2.3) and so that the TLVs do not alias r's buffer
	buf := make([]byte, v2HeaderLength+length)
	copy(buf, fixed)
	if _, err := r.Discard(v2HeaderLength); err != nil {
		return Header{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	// spec 2.2: partial headers must be rejected
	if _, err := io.ReadFull(r, buf[v2HeaderLength:]); err != nil {
		return Header{}, fmt.Errorf("%w: truncated version 2 header: %w", ErrMalformed, err)
	}
	if h.Command == Local {
		// spec 2.2: use the real endpoints, discard the block
		return h, nil
	}
	body := buf[v2HeaderLength:]
	switch fam {
	case 0x00:
		// spec 2.2: UNSPEC, the receiver should ignore any address
		// information; what follows has no known layout
		return h, nil
	case 0x11, 0x12:
		if len(body) < 12 {
			return Header{}, fmt.Errorf("%w: length %d too short for IPv4 addresses", ErrMalformed, len(body))
		}
		h.Source, h.Destination = addrPorts(body, 4)
		body = body[12:]
	case 0x21, 0x22:
		if len(body) < 36 {
			return Header{}, fmt.Errorf("%w: length %d too short for IPv6 addresses", ErrMalformed, len(body))
		}
		h.Source, h.Destination = addrPorts(body, 16)
		body = body[36:]
	case 0x31, 0x32:
		// two 108-byte paths, skipped: no use to an MTA, which falls
		// back to the real endpoints (spec 2.2)
		if len(body) < 216 {
			return Header{}, fmt.Errorf("%w: length %d too short for UNIX addresses", ErrMalformed, len(body))
		}
		body = body[216:]
	default:
		// a known family with an unspecified transport, or the
		// reverse: not one of the combinations spec 2.2 lists
		return Header{}, fmt.Errorf("%w: family and transport %#02x", ErrMalformed, fam)
	}
	tlvs, err := parseTLVs(buf, len(buf)-len(body))
	if err != nil {
		return Header{}, err
	}
	h.TLVs = tlvs
	return h, nil
}

// addrPorts reads the address block of an INET or INET6 header (spec
// 2.2): the source and destination addresses of size bytes each, then
// their ports. body holds at least the whole block.
func addrPorts(body []byte, size int) (src, dst netip.AddrPort) {
	s, _ := netip.AddrFromSlice(body[:size])
	d, _ := netip.AddrFromSlice(body[size : 2*size])
	ports := body[2*size:]
	return netip.AddrPortFrom(s, binary.BigEndian.Uint16(ports[0:2])), netip.AddrPortFrom(d, binary.BigEndian.Uint16(ports[2:4]))
}

// parseTLVs splits hdr[off:], what follows the addresses, into TLVs: a
// type byte, a 2-byte length, the value (spec 2.2). The header's length
// bounds them; one that overruns it, or a stray byte or two, is an
// error. A CRC32C TLV is checked against the whole header, hdr.
func parseTLVs(hdr []byte, off int) ([]TLV, error) {
	var tlvs []TLV
	for off < len(hdr) {
		if len(hdr)-off < 3 {
			return nil, fmt.Errorf("%w: %d stray bytes after the TLVs", ErrMalformed, len(hdr)-off)
		}
		typ, n := hdr[off], int(binary.BigEndian.Uint16(hdr[off+1:off+3]))
		off += 3
		if len(hdr)-off < n {
			return nil, fmt.Errorf("%w: TLV %#02x of %d bytes overruns the header", ErrMalformed, typ, n)
		}
		if typ == tlvCRC32C {
			if err := checkCRC32C(hdr, off, n); err != nil {
				return nil, err
			}
		}
		tlvs = append(tlvs, TLV{Type: typ, Value: hdr[off : off+n : off+n]})
		off += n
	}
	return tlvs, nil
}

// checkCRC32C verifies a PP2_TYPE_CRC32C TLV whose n-byte value is at
// hdr[off:]: the checksum of the whole header with that value zeroed
// (spec 2.2.3).
func checkCRC32C(hdr []byte, off, n int) error {
	if n != 4 {
		return fmt.Errorf("%w: CRC32C TLV of %d bytes", ErrMalformed, n)
	}
	want := binary.BigEndian.Uint32(hdr[off:])
	tab := crc32.MakeTable(crc32.Castagnoli)
	var zero [4]byte
	got := crc32.Update(crc32.Checksum(hdr[:off], tab), tab, zero[:])
	got = crc32.Update(got, tab, hdr[off+4:])
	if got != want {
		return fmt.Errorf("%w: CRC32C %#08x, header says %#08x", ErrMalformed, got, want)
	}
	return nil
}
