package milter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// The little of the wire format that go-milter's client does not cover:
// the DATA command and its answer. A packet is a 4-byte big-endian
// length, then a command byte and its data.

// maxAnswer bounds the size of an answer to DATA, which is a bare
// action or a reply line: anything larger is not a milter talking.
const maxAnswer = 64 << 10

// writePacket writes one packet in a single write, within timeout.
func writePacket(conn net.Conn, timeout time.Duration, code byte, data []byte) error {
	conn.SetWriteDeadline(time.Now().Add(timeout))
	defer conn.SetWriteDeadline(time.Time{})
	b := make([]byte, 5, 5+len(data))
	binary.BigEndian.PutUint32(b, uint32(1+len(data)))
	b[4] = code
	_, err := conn.Write(append(b, data...))
	return err
}

// readPacket reads one packet; each packet has the whole timeout.
func readPacket(conn net.Conn, timeout time.Duration) (byte, []byte, error) {
	conn.SetReadDeadline(time.Now().Add(timeout))
	defer conn.SetReadDeadline(time.Time{})
	var h [4]byte
	if _, err := io.ReadFull(conn, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n == 0 || n > maxAnswer {
		return 0, nil, fmt.Errorf("bad packet length %d", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(conn, b); err != nil {
		return 0, nil, err
	}
	return b[0], b[1:], nil
}

// readAction reads the answer to a command as go-milter would, skipping
// progress packets (the milter asking for more time).
func readAction(conn net.Conn, timeout time.Duration) (*gomilter.Action, error) {
	for {
		code, data, err := readPacket(conn, timeout)
		if err != nil {
			return nil, err
		}
		switch gomilter.ActionCode(code) {
		case 'p':
			continue
		case gomilter.ActReplyCode:
			// "550 5.7.1 text\0"
			if i := bytes.IndexByte(data, 0); i >= 0 {
				data = data[:i]
			}
			if len(data) < 3 {
				return nil, fmt.Errorf("short reply %q", data)
			}
			n, err := strconv.Atoi(string(data[:3]))
			if err != nil {
				return nil, fmt.Errorf("bad reply code %q", data[:3])
			}
			text := ""
			if len(data) > 4 {
				text = string(data[4:])
			}
			return &gomilter.Action{Code: gomilter.ActReplyCode, SMTPCode: n, SMTPText: text}, nil
		default:
			// verdictOf refuses codes that are no action
			return &gomilter.Action{Code: gomilter.ActionCode(code)}, nil
		}
	}
}
