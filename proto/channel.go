package proto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"smtpd/internal/monkey"
)

// Frame is one received message with its header.
type Frame struct {
	Header
	Msg Message
}

// Channel is one end of a SOCK_SEQPACKET unix socket between two
// processes. Each frame is one packet, so a descriptor always arrives
// with the frame it belongs to. Send is safe for concurrent use; Recv is
// meant for one reading goroutine.
type Channel struct {
	// Local and Remote name the two ends; Recv checks every message type
	// against them.
	Local, Remote Proc

	conn *net.UnixConn
	pid  uint32

	wmu  sync.Mutex
	wbuf []byte

	rbuf []byte
	oob  []byte
}

// Socketpair returns the two ends of a new SOCK_SEQPACKET socketpair.
// Both are close-on-exec; a child gets its end through ExtraFiles.
func Socketpair() (a, b *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("proto: socketpair: %w", err)
	}
	return os.NewFile(uintptr(fds[0]), "socketpair"), os.NewFile(uintptr(fds[1]), "socketpair"), nil
}

// NewChannel makes a channel of the socket f, between local and remote.
// f is not used afterwards and may be closed by the caller.
func NewChannel(f *os.File, local, remote Proc) (*Channel, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("proto: channel to %s: %w", remote, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("proto: channel to %s: not a unix socket", remote)
	}
	return NewChannelConn(uc, local, remote), nil
}

// DialControl connects a client (smtpctl, sendmail) to the control
// socket at path.
func DialControl(path string) (*Channel, error) {
	uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: is smtpd running? (%w)", path, err)
	}
	return NewChannelConn(uc, ProcClient, ProcControl), nil
}

// NewChannelConn makes a channel of a connected unixpacket socket.
func NewChannelConn(uc *net.UnixConn, local, remote Proc) *Channel {
	return &Channel{
		Local:  local,
		Remote: remote,
		conn:   uc,
		pid:    uint32(os.Getpid()),
		rbuf:   make([]byte, HeaderSize+MaxPayload+1),
		oob:    make([]byte, unix.CmsgSpace(4*4)),
	}
}

// Send encodes m into one frame with request id id and sends it, with
// the message's descriptor if it carries one. The caller keeps ownership
// of that descriptor.
func (c *Channel) Send(m Message, id uint32) error {
	monkey.Delay("proto.delay")
	var w Writer
	m.Encode(&w)
	payload, err := w.Payload()
	if err != nil {
		return fmt.Errorf("proto: encode %s: %w", m.Type(), err)
	}
	var oob []byte
	if fm, ok := m.(FileMessage); ok {
		if fm.File() == nil {
			return fmt.Errorf("proto: %s without its descriptor", m.Type())
		}
		oob = unix.UnixRights(int(fm.File().Fd()))
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = AppendFrame(c.wbuf[:0], Header{Type: m.Type(), PeerID: id, PID: c.pid}, payload)
	if _, _, err := c.conn.WriteMsgUnix(c.wbuf, oob, nil); err != nil {
		return fmt.Errorf("proto: send %s to %s: %w", m.Type(), c.Remote, err)
	}
	return nil
}

// Recv reads and decodes the next frame. It returns io.EOF when the peer
// closed its end; any other error means the peer broke the protocol.
func (c *Channel) Recv() (*Frame, error) {
	n, oobn, flags, _, err := c.conn.ReadMsgUnix(c.rbuf, c.oob)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, unix.ECONNRESET) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("proto: receive from %s: %w", c.Remote, err)
	}
	var fd *os.File
	if oobn > 0 {
		fds, err := parseRights(c.oob[:oobn])
		if err != nil {
			return nil, fmt.Errorf("proto: receive from %s: %w", c.Remote, err)
		}
		if len(fds) > 1 {
			for _, f := range fds {
				unix.Close(f)
			}
			return nil, fmt.Errorf("%w: %d descriptors in one frame from %s", ErrBadFrame, len(fds), c.Remote)
		}
		fd = os.NewFile(uintptr(fds[0]), "received")
	}
	if n == 0 && fd == nil {
		return nil, io.EOF
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		if fd != nil {
			fd.Close()
		}
		return nil, fmt.Errorf("%w: truncated frame from %s", ErrBadFrame, c.Remote)
	}
	h, payload, err := ParseFrame(c.rbuf[:n])
	if err != nil {
		if fd != nil {
			fd.Close()
		}
		return nil, fmt.Errorf("from %s: %w", c.Remote, err)
	}
	m, err := Decode(c.Remote, c.Local, h, payload, fd)
	if err != nil {
		return nil, err
	}
	return &Frame{Header: h, Msg: m}, nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		f, err := unix.ParseUnixRights(&m)
		if err != nil {
			return nil, err
		}
		fds = append(fds, f...)
	}
	return fds, nil
}

// Close closes the channel; a blocked Recv returns io.EOF.
func (c *Channel) Close() error { return c.conn.Close() }
