package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// MaxPayload is the largest payload of one frame, as in OpenSMTPD's imsg.
const MaxPayload = 16 * 1024

// Errors of the codec. They are wrapped with detail; test with errors.Is.
var (
	ErrShortPayload    = errors.New("proto: short payload")
	ErrTrailingBytes   = errors.New("proto: trailing bytes")
	ErrPayloadTooLarge = errors.New("proto: payload too large")
	ErrUnknownType     = errors.New("proto: unknown message type")
	ErrNotAllowed      = errors.New("proto: message type not allowed from this peer")
	ErrBadFrame        = errors.New("proto: malformed frame")
)

// Writer builds a payload. Values are little-endian; strings and byte
// slices are a u32 length followed by the bytes. The first error sticks
// and is returned by Bytes.
type Writer struct {
	buf []byte
	err error
}

func (w *Writer) grow(n int) bool {
	if w.err != nil {
		return false
	}
	if len(w.buf)+n > MaxPayload {
		w.err = fmt.Errorf("%w: more than %d bytes", ErrPayloadTooLarge, MaxPayload)
		return false
	}
	return true
}

// U8 appends one byte.
func (w *Writer) U8(v uint8) {
	if w.grow(1) {
		w.buf = append(w.buf, v)
	}
}

// Bool appends a boolean as one byte, 0 or 1.
func (w *Writer) Bool(v bool) {
	var b uint8
	if v {
		b = 1
	}
	w.U8(b)
}

// U32 appends a 32-bit unsigned integer.
func (w *Writer) U32(v uint32) {
	if w.grow(4) {
		w.buf = binary.LittleEndian.AppendUint32(w.buf, v)
	}
}

// U64 appends a 64-bit unsigned integer.
func (w *Writer) U64(v uint64) {
	if w.grow(8) {
		w.buf = binary.LittleEndian.AppendUint64(w.buf, v)
	}
}

// I64 appends a 64-bit signed integer.
func (w *Writer) I64(v int64) { w.U64(uint64(v)) }

// Time appends a time as Unix nanoseconds; the zero time is 0.
func (w *Writer) Time(t time.Time) {
	if t.IsZero() {
		w.I64(0)
		return
	}
	w.I64(t.UnixNano())
}

// Bytes appends a length-prefixed byte slice.
func (w *Writer) Bytes(b []byte) {
	if w.grow(4 + len(b)) {
		w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(len(b)))
		w.buf = append(w.buf, b...)
	}
}

// String appends a length-prefixed string.
func (w *Writer) String(s string) {
	if w.grow(4 + len(s)) {
		w.buf = binary.LittleEndian.AppendUint32(w.buf, uint32(len(s)))
		w.buf = append(w.buf, s...)
	}
}

// Strings appends a counted list of strings.
func (w *Writer) Strings(list []string) {
	w.U32(uint32(len(list)))
	for _, s := range list {
		w.String(s)
	}
}

// Payload returns the encoded payload, or the first error.
func (w *Writer) Payload() ([]byte, error) { return w.buf, w.err }

// Reader decodes a payload. A read past the end records ErrShortPayload
// and returns zero values; Finish reports it, or trailing bytes.
type Reader struct {
	buf []byte
	err error
}

// NewReader returns a Reader over payload.
func NewReader(payload []byte) *Reader { return &Reader{buf: payload} }

func (r *Reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.buf) < n {
		r.err = fmt.Errorf("%w: want %d bytes, have %d", ErrShortPayload, n, len(r.buf))
		return nil
	}
	b := r.buf[:n]
	r.buf = r.buf[n:]
	return b
}

// U8 reads one byte.
func (r *Reader) U8() uint8 {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return b[0]
}

// Bool reads a boolean; any byte other than 0 or 1 is an error.
func (r *Reader) Bool() bool {
	switch v := r.U8(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		r.Fail(fmt.Errorf("%w: bad boolean %d", ErrBadFrame, v))
		return false
	}
}

// U32 reads a 32-bit unsigned integer.
func (r *Reader) U32() uint32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

// U64 reads a 64-bit unsigned integer.
func (r *Reader) U64() uint64 {
	b := r.take(8)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// I64 reads a 64-bit signed integer.
func (r *Reader) I64() int64 { return int64(r.U64()) }

// Time reads a time written by Writer.Time.
func (r *Reader) Time() time.Time {
	ns := r.I64()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Bytes reads a length-prefixed byte slice; the result is a copy.
func (r *Reader) Bytes() []byte {
	n := r.U32()
	if n > MaxPayload {
		r.Fail(fmt.Errorf("%w: length %d", ErrShortPayload, n))
		return nil
	}
	b := r.take(int(n))
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

// String reads a length-prefixed string.
func (r *Reader) String() string {
	n := r.U32()
	if n > MaxPayload {
		r.Fail(fmt.Errorf("%w: length %d", ErrShortPayload, n))
		return ""
	}
	return string(r.take(int(n)))
}

// Strings reads a list written by Writer.Strings; what names it in the
// error for a count the payload cannot hold.
func (r *Reader) Strings(what string) []string {
	list := make([]string, r.Count(4, what))
	for i := range list {
		list[i] = r.String()
	}
	return list
}

// Fail records err as the reader's error unless one is recorded already;
// message decoders use it for values that are out of range.
func (r *Reader) Fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// Err returns the first error seen so far.
func (r *Reader) Err() error { return r.err }

// Finish returns the first error, or ErrTrailingBytes if bytes are left.
func (r *Reader) Finish() error {
	if r.err != nil {
		return r.err
	}
	if len(r.buf) != 0 {
		return fmt.Errorf("%w: %d left", ErrTrailingBytes, len(r.buf))
	}
	return nil
}

// Count reads the length of a list whose items take at least size bytes
// each on the wire; a length the payload cannot hold fails the reader
// and reads as 0, so that no decoder allocates for a forged count.
func (r *Reader) Count(size int, what string) int {
	n := r.U32()
	if int64(n)*int64(size) > MaxPayload {
		r.Fail(fmt.Errorf("%w: %d %s", ErrBadFrame, n, what))
		return 0
	}
	return int(n)
}

// enum8 reads a one-byte enumeration and fails the reader unless the
// value lies in [lo, hi]. Every enumerated field is decoded by it or by
// enum32, so that no process acts on a value it has no name for.
func enum8[T ~uint8](r *Reader, lo, hi T, what string) T {
	v := T(r.U8())
	if r.err == nil && (v < lo || v > hi) {
		r.Fail(fmt.Errorf("%w: bad %s %d", ErrBadFrame, what, v))
	}
	return v
}

// enum32 is enum8 for four-byte enumerations.
func enum32[T ~uint32](r *Reader, lo, hi T, what string) T {
	v := T(r.U32())
	if r.err == nil && (v < lo || v > hi) {
		r.Fail(fmt.Errorf("%w: bad %s %d", ErrBadFrame, what, v))
	}
	return v
}
