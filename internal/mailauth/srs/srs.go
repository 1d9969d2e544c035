// Package srs implements the Sender Rewriting Scheme, so that mail we
// forward keeps passing SPF (RFC 7208) at the next hop: the envelope
// sender of a forwarded message is rewritten into an address at our
// own domain that carries the original one, and a bounce sent back to
// that address is decoded to the original sender again.
//
// The format is the one of Shevek's libsrs2 ("Sender Rewriting Scheme",
// libsrs2.org), which postsrsd and most MTAs speak:
//
//	SRS0=HHHH=TT=orig.example=user@ours.example
//	SRS1=HHHH=forwarder.example==HHHH=TT=orig.example=user@ours.example
//
// TT is the day of the rewrite, modulo 1024, in two base32 characters;
// HHHH is the first four base64 characters of an HMAC-SHA1, keyed by
// our secret, of the lowercased fields that follow it. This is the hash
// of libsrs2 and postsrsd, so a key can be shared with them. (OpenSMTPD
// computes an unkeyed SHA-1 of key and text, case-sensitively, which is
// compatible with nothing else; we do not follow it there.) An address
// that is already SRS0 becomes SRS1, and an SRS1 address keeps its
// first forwarder, so chains do not grow with every hop.
package srs

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultMaxAge is how long a rewritten address stays valid when
// Rewriter.MaxAge is zero: four days, OpenSMTPD's default "srs ttl",
// which is its queue expiry, the longest a bounce can take to come
// back. (libsrs2 and postsrsd default to 21 days.)
const DefaultMaxAge = 4 * 24 * time.Hour

// maxAddrLen bounds a rewritten address: a path is at most 256 octets
// with its angle brackets (RFC 5321 §4.5.3.1.3).
const maxAddrLen = 254

// hashLen is the number of base64 characters of the hash, as in
// libsrs2's default.
const hashLen = 4

// separators may follow the SRS0 and SRS1 tags (libsrs2 accepts all
// three on input; we write '=').
const separators = "=+-"

// base32 is the alphabet of the timestamp (RFC 4648 §6).
const base32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// timeSlots is the period of the 10-bit day timestamp.
const timeSlots = 1024

// The errors of Reverse, for errors.Is. ErrForged and ErrExpired (and
// ErrMalformed, for an address that claims to be SRS) are permanent:
// the caller answers 550 5.7.1, a bounce to such an address is either
// forged or too old to be trusted.
var (
	// ErrNotSRS marks an address that is not an SRS address: it is
	// routed as any other.
	ErrNotSRS = errors.New("not an SRS address")
	// ErrMalformed marks an address that starts like an SRS address
	// but lacks its fields.
	ErrMalformed = errors.New("malformed SRS address")
	// ErrForged marks an SRS address whose hash none of our keys made.
	ErrForged = errors.New("invalid SRS hash (forged address)")
	// ErrExpired marks an SRS address older than the maximum age.
	ErrExpired = errors.New("SRS address expired")
)

// Rewriter rewrites senders and reverses rewritten addresses. It is
// safe for concurrent use once configured; the zero value is not
// usable: use New.
type Rewriter struct {
	// MaxAge is how long a rewritten address can be reversed, counted
	// in whole days; zero means DefaultMaxAge. An address dated one
	// day in the future is accepted, for clocks a little apart.
	MaxAge time.Duration
	// Now returns the current time; nil means time.Now. Tests set it.
	Now func() time.Time

	keys [][]byte // keys[0] signs, all verify
}

// New returns a rewriter signing with key and also accepting addresses
// signed with the old keys, for rotation. Keys are the bytes of the
// secret as read from the key file (see ParseKeys); a key should be
// random and long, such as the 24 base64 characters of 18 random bytes
// postsrsd-generate-secret makes, since the hash is short and a key
// that can be guessed lets anyone forge addresses.
func New(key []byte, old ...[]byte) (*Rewriter, error) {
	r := &Rewriter{}
	for i, k := range append([][]byte{key}, old...) {
		if len(k) == 0 {
			return nil, fmt.Errorf("srs: key %d is empty", i+1)
		}
		r.keys = append(r.keys, bytes.Clone(k))
	}
	return r, nil
}

// ParseKeys reads a key file as postsrsd does: one secret a line, the
// first the current key and the others old keys still accepted; blank
// lines, lines starting with '#' and the spaces around a secret are
// ignored.
func ParseKeys(data []byte) (key []byte, old [][]byte, err error) {
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		keys = append(keys, bytes.Clone(line))
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("srs: reading keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, nil, errors.New("srs: no key in key file")
	}
	return keys[0], keys[1:], nil
}

// Forward rewrites sender, the envelope sender of a message we forward,
// into an address at domain, our domain the message was addressed to.
// It reports false, and sender is to be kept, for the empty sender of
// a bounce, a postmaster address, an address without a domain, one
// already at domain, one with a quoted local part or an address
// literal, and when the result would be too long for a path.
func (r *Rewriter) Forward(sender, domain string) (string, bool) {
	domain = strings.TrimSuffix(domain, ".")
	i := strings.LastIndexByte(sender, '@')
	if i <= 0 || !validHost(domain) {
		return sender, false
	}
	user, host := sender[:i], strings.TrimSuffix(sender[i+1:], ".")
	// postmaster (RFC 5321 §4.5.1) is the address a receiver must be
	// able to answer directly: it is left alone
	if strings.EqualFold(user, "postmaster") || strings.EqualFold(host, domain) ||
		!validUser(user) || !validHost(host) {
		return sender, false
	}
	var out string
	switch {
	case hasTag(user, "SRS1"):
		// SRS1=HHHH=first==HHHH=TT=orig=user@previous: keep the first
		// forwarder and what it encoded, sign them again with our key
		_, rest, _ := strings.Cut(user[5:], "=")
		if fwd, tail, _ := strings.Cut(rest, "="); validHost(fwd) && isTail(tail) {
			out = "SRS1=" + r.hash(r.keys[0], fwd, tail) + "=" + fwd + "=" + tail + "@" + domain
			break
		}
		// not what it claims to be: wrap it as any other sender
		out = r.srs0(user, host, domain)
	case hasTag(user, "SRS0"):
		// SRS0=HHHH=TT=orig=user@fwd becomes
		// SRS1=HHHH=fwd==HHHH=TT=orig=user@domain, its separator kept;
		// what follows the tag is opaque, only its maker can check it
		if tail := user[4:]; isTail(tail) {
			out = "SRS1=" + r.hash(r.keys[0], host, tail) + "=" + host + "=" + tail + "@" + domain
			break
		}
		out = r.srs0(user, host, domain)
	default:
		out = r.srs0(user, host, domain)
	}
	if len(out) > maxAddrLen {
		return sender, false
	}
	return out, true
}

func (r *Rewriter) srs0(user, host, domain string) string {
	stamp := timestamp(r.now())
	return "SRS0=" + r.hash(r.keys[0], stamp, host, user) + "=" + stamp + "=" + host + "=" + user + "@" + domain
}

// Reverse decodes addr, an SRS address received for our domain: an
// SRS0 address to the original sender, an SRS1 address to the SRS0
// address at the forwarder before us. Which domain addr is at is not
// checked: the caller reverses only recipients in its own domains. The
// hash is compared case-insensitively, since some MTAs lowercase local
// parts. The error is ErrNotSRS for any other address, else ErrForged,
// ErrExpired or ErrMalformed, wrapped.
func (r *Rewriter) Reverse(addr string) (string, error) {
	local := addr
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local = addr[:i]
	}
	switch {
	case hasTag(local, "SRS1"):
		return r.reverse1(addr, local[5:])
	case hasTag(local, "SRS0"):
		return r.reverse0(addr, local[5:])
	}
	return "", fmt.Errorf("srs: %q: %w", addr, ErrNotSRS)
}

// reverse0 decodes HHHH=TT=host=user, the local part after "SRS0=".
func (r *Rewriter) reverse0(addr, s string) (string, error) {
	f := strings.SplitN(s, "=", 4)
	if len(f) != 4 || f[0] == "" || !validHost(f[2]) || !validUser(f[3]) {
		return "", fmt.Errorf("srs: %q: %w", addr, ErrMalformed)
	}
	hash, stamp, host, user := f[0], f[1], f[2], f[3]
	then, ok := parseTimestamp(stamp)
	if !ok {
		return "", fmt.Errorf("srs: %q: bad timestamp: %w", addr, ErrMalformed)
	}
	if !r.verify(hash, stamp, host, user) {
		return "", fmt.Errorf("srs: %q: %w", addr, ErrForged)
	}
	if !r.fresh(then) {
		return "", fmt.Errorf("srs: %q: %w", addr, ErrExpired)
	}
	return user + "@" + host, nil
}

// reverse1 decodes HHHH=fwd=<sep>HHHH=TT=orig=user, the local part
// after "SRS1=", into SRS0<sep>HHHH=TT=orig=user@fwd.
func (r *Rewriter) reverse1(addr, s string) (string, error) {
	hash, rest, _ := strings.Cut(s, "=")
	host, tail, _ := strings.Cut(rest, "=")
	if hash == "" || !validHost(host) || !isTail(tail) {
		return "", fmt.Errorf("srs: %q: %w", addr, ErrMalformed)
	}
	if !r.verify(hash, host, tail) {
		return "", fmt.Errorf("srs: %q: %w", addr, ErrForged)
	}
	// the SRS1 hash does not cover time: when the SRS0 part inside has
	// the usual form its timestamp is checked, as OpenSMTPD does, or
	// an SRS1 address would stay valid forever
	if then, ok := srs0Day(tail); ok && !r.fresh(then) {
		return "", fmt.Errorf("srs: %q: %w", addr, ErrExpired)
	}
	return "SRS0" + tail + "@" + host, nil
}

// isTail reports whether s can be what follows the tag of an SRS0
// local part, as an SRS1 address carries it: a separator, then
// anything a local part can hold.
func isTail(s string) bool {
	return len(s) >= 2 && strings.IndexByte(separators, s[0]) >= 0 && validUser(s)
}

// srs0Day returns the day of <sep>HHHH=TT=orig=user, an SRS0 local
// part without its tag, if it has that form; its hash, made by another
// forwarder, cannot be checked.
func srs0Day(tail string) (int, bool) {
	f := strings.SplitN(tail[1:], "=", 4)
	if len(f) != 4 || f[0] == "" || f[2] == "" || f[3] == "" {
		return 0, false
	}
	return parseTimestamp(f[1])
}

// IsSRS reports whether addr, or its local part, looks like an SRS
// address, as the callers of Reverse may want to know before a lookup.
func IsSRS(addr string) bool {
	return hasTag(addr, "SRS0") || hasTag(addr, "SRS1")
}

// hasTag reports whether user starts with tag, in any case, and a
// separator.
func hasTag(user, tag string) bool {
	return len(user) > len(tag) && strings.EqualFold(user[:len(tag)], tag) &&
		strings.IndexByte(separators, user[len(tag)]) >= 0
}

// hash returns the first hashLen base64 characters of the HMAC-SHA1 of
// the lowercased fields, as libsrs2's srs_hash_create.
func (r *Rewriter) hash(key []byte, fields ...string) string {
	m := hmac.New(sha1.New, key)
	for _, f := range fields {
		m.Write(asciiLower(f))
	}
	return base64.StdEncoding.EncodeToString(m.Sum(nil))[:hashLen]
}

// verify reports whether one of the keys made hash from fields,
// ignoring case.
func (r *Rewriter) verify(hash string, fields ...string) bool {
	if len(hash) != hashLen {
		return false
	}
	got := asciiLower(hash)
	ok := 0
	for _, k := range r.keys {
		ok |= subtle.ConstantTimeCompare(got, asciiLower(r.hash(k, fields...)))
	}
	return ok == 1
}

// asciiLower lowercases the ASCII letters of s only, as libsrs2's
// tolower in the C locale: other bytes are hashed as they are.
func asciiLower(s string) []byte {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return b
}

func (r *Rewriter) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// day returns the day number of t modulo timeSlots.
func day(t time.Time) int {
	d := t.Unix() / 86400
	if t.Unix() < 0 && t.Unix()%86400 != 0 {
		d--
	}
	return int((d%timeSlots + timeSlots) % timeSlots)
}

// timestamp returns TT, the day of t in two base32 characters.
func timestamp(t time.Time) string {
	d := day(t)
	return string([]byte{base32[d>>5&31], base32[d&31]})
}

// parseTimestamp decodes TT, in any case.
func parseTimestamp(s string) (int, bool) {
	if len(s) != 2 {
		return 0, false
	}
	hi := strings.IndexByte(base32, upper(s[0]))
	lo := strings.IndexByte(base32, upper(s[1]))
	if hi < 0 || lo < 0 {
		return 0, false
	}
	return hi<<5 | lo, true
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// fresh reports whether day then is at most MaxAge days ago, or one
// day ahead.
func (r *Rewriter) fresh(then int) bool {
	maxAge := r.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	days := int64((maxAge + 24*time.Hour - 1) / (24 * time.Hour))
	age := int64((day(r.now()) - then + timeSlots) % timeSlots)
	return age <= days || age == timeSlots-1
}

// validHost reports whether s can be the domain of a rewritten or
// decoded address: a domain name of letters, digits, '-', '_' and '.',
// or UTF-8 (RFC 6531); an address literal would not fit in a local part.
func validHost(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c >= 0x80) {
			return false
		}
	}
	return true
}

// validUser reports whether s can be the local part of a rewritten or
// decoded address: a Dot-string (RFC 5321 §4.1.2), atext and dots, or
// UTF-8 (RFC 6531). A quoted local part would be quoted in the middle
// of ours, which is no address at all.
func validUser(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c >= 0x80 || strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0) {
			return false
		}
	}
	return true
}
