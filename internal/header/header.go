// Package header holds what the daemon needs to know of message header
// syntax where it reads headers itself.
package header

import "bytes"

// IsFieldStart reports whether line starts a header field: a name of
// printable characters other than the colon, then a colon (RFC 5322
// §2.2).
func IsFieldStart(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, c := range line[:i] {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}
