package envelope

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
)

// Message and envelope ids, as DESIGN.md (Spool) defines them. A message
// id is a random non-zero u32 written as 8 hex digits: it names the
// message's spool directory, and the 250 reply, the Received field and
// the logs show it. An envelope id is the message id in the upper 32
// bits and a random non-zero u32 below, written as 16 hex digits: it
// names the envelope's file, and logs and smtpctl show it. Every id is
// made, written and read by the functions below, so that all of them
// agree.

// NewMsgID returns a random message id. It is not known to be free: the
// queue tries another while one is taken on disk.
func NewMsgID() uint32 { return nonZero() }

// NewEvpID returns a random envelope id for message msgid.
func NewEvpID(msgid uint32) uint64 { return uint64(msgid)<<32 | uint64(nonZero()) }

// nonZero is a random non-zero u32: zero in either half of an envelope
// id marks a corrupt envelope (see Unmarshal). The ids show in replies
// and headers, so they come from crypto/rand: nobody can guess the next.
func nonZero() uint32 {
	var b [4]byte
	for {
		rand.Read(b[:])
		if v := binary.LittleEndian.Uint32(b[:]); v != 0 {
			return v
		}
	}
}

// FormatMsgID writes a message id: 8 lower-case hex digits.
func FormatMsgID(id uint32) string { return fmt.Sprintf("%08x", id) }

// FormatEvpID writes an envelope id: 16 lower-case hex digits.
func FormatEvpID(id uint64) string { return fmt.Sprintf("%016x", id) }

// ParseMsgID reads a message id: exactly 8 hex digits, in either case
// since administrators type them.
func ParseMsgID(s string) (uint32, error) {
	v, err := parseHex(s, 8, "message id")
	return uint32(v), err
}

// ParseEvpID reads an envelope id: exactly 16 hex digits, in either
// case. It checks only the form: an id with a zero half parses, so that
// a file of that name is found and reported as corrupt, not overlooked.
func ParseEvpID(s string) (uint64, error) { return parseHex(s, 16, "envelope id") }

func parseHex(s string, digits int, what string) (uint64, error) {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || len(s) != digits {
		return 0, fmt.Errorf("envelope: %s %q is not %d hex digits", what, s, digits)
	}
	return v, nil
}

// ParseID reads what smtpctl names a message or an envelope by: a
// message id, or an envelope id, whose message id msgid is too. evpid
// is 0 for a message id, and no envelope has id 0.
func ParseID(s string) (msgid uint32, evpid uint64, err error) {
	if len(s) == 8 {
		msgid, err = ParseMsgID(s)
		return msgid, 0, err
	}
	evpid, err = ParseEvpID(s)
	if err != nil {
		return 0, 0, fmt.Errorf("envelope: %q is neither a message id (8 hex digits) nor an envelope id (16)", s)
	}
	return MsgIDOf(evpid), evpid, nil
}

// MsgIDOf returns the message id within an envelope id.
func MsgIDOf(evpid uint64) uint32 { return uint32(evpid >> 32) }
