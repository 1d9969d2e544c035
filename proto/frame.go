package proto

import (
	"encoding/binary"
	"fmt"
	"os"
)

// HeaderSize is the size of the frame header: type, len, peerid, pid.
const HeaderSize = 16

// Header is the fixed part of every frame. Len counts the header too.
// PeerID carries the request id of requests and of their answers, so
// that many sessions can share one channel; it is 0 otherwise.
type Header struct {
	Type   Type
	Len    uint32
	PeerID uint32
	PID    uint32
}

// AppendFrame appends the frame for header h (whose Len it sets) and
// payload to dst.
func AppendFrame(dst []byte, h Header, payload []byte) []byte {
	h.Len = uint32(HeaderSize + len(payload))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(h.Type))
	dst = binary.LittleEndian.AppendUint32(dst, h.Len)
	dst = binary.LittleEndian.AppendUint32(dst, h.PeerID)
	dst = binary.LittleEndian.AppendUint32(dst, h.PID)
	return append(dst, payload...)
}

// ParseFrame splits one whole frame into its header and payload. The
// length in the header must be the length of b.
func ParseFrame(b []byte) (Header, []byte, error) {
	if len(b) < HeaderSize {
		return Header{}, nil, fmt.Errorf("%w: %d bytes, shorter than a header", ErrBadFrame, len(b))
	}
	h := Header{
		Type:   Type(binary.LittleEndian.Uint32(b[0:])),
		Len:    binary.LittleEndian.Uint32(b[4:]),
		PeerID: binary.LittleEndian.Uint32(b[8:]),
		PID:    binary.LittleEndian.Uint32(b[12:]),
	}
	if int64(h.Len) != int64(len(b)) {
		return h, nil, fmt.Errorf("%w: header says %d bytes, frame has %d", ErrBadFrame, h.Len, len(b))
	}
	if len(b)-HeaderSize > MaxPayload {
		return h, nil, fmt.Errorf("%w: %d bytes", ErrPayloadTooLarge, len(b)-HeaderSize)
	}
	return h, b[HeaderSize:], nil
}

// Decode turns the payload of a frame that sender sent to receiver into
// its message. fd is the descriptor that came with the frame, or nil; it
// is closed when the message does not take it or decoding fails.
func Decode(sender, receiver Proc, h Header, payload []byte, fd *os.File) (Message, error) {
	m, err := decode(sender, receiver, h, payload, fd)
	if err != nil && fd != nil {
		fd.Close()
	}
	return m, err
}

func decode(sender, receiver Proc, h Header, payload []byte, fd *os.File) (Message, error) {
	m, ok := New(h.Type)
	if !ok {
		return nil, fmt.Errorf("%w %d from %s", ErrUnknownType, uint32(h.Type), sender)
	}
	if !Accepts(sender, receiver, h.Type) {
		return nil, fmt.Errorf("%w: %s from %s to %s", ErrNotAllowed, h.Type, sender, receiver)
	}
	fm, wantsFD := m.(FileMessage)
	switch {
	case wantsFD && fd == nil:
		return nil, fmt.Errorf("%w: %s without its descriptor", ErrBadFrame, h.Type)
	case !wantsFD && fd != nil:
		return nil, fmt.Errorf("%w: %s with a descriptor", ErrBadFrame, h.Type)
	}
	r := NewReader(payload)
	m.Decode(r)
	if err := r.Finish(); err != nil {
		return nil, fmt.Errorf("%s from %s: %w", h.Type, sender, err)
	}
	if wantsFD {
		fm.setFile(fd)
	}
	return m, nil
}
