// Package envelope is one recipient of one message as the queue stores
// it: a small text file of "key: value" lines, versioned, ending with
// its own checksum, one per recipient in the message's spool directory.
package envelope

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"time"
)

// Version is the format version written in every envelope.
const Version = 1

// Kind says who delivers an envelope.
type Kind string

// The kinds of delivery.
const (
	// MDA envelopes are delivered locally by the parent's mda children.
	MDA Kind = "mda"
	// MTA envelopes are relayed by the mta process.
	MTA Kind = "mta"
	// Bounce envelopes carry a delivery status notification to a sender.
	Bounce Kind = "bounce"
)

// Envelope is one recipient of a message.
type Envelope struct {
	ID     uint64 // see NewEvpID
	Kind   Kind
	Rule   int // index of the match rule that chose the action
	Action string
	// Sender is the MAIL FROM address, "" for the null sender <>.
	Sender string
	// Rcpt is the address as given at RCPT TO; Dest the address after
	// alias and virtual expansion; User the local account (MDA only).
	Rcpt, Dest, User string
	// Target is "|command" or "/file" when an alias or .forward entry
	// delivers to a program or a file.
	Target string
	// Helo, Remote and Hostname describe the session that brought it.
	Helo, Remote string
	Created      time.Time
	Expire       time.Time
	LastTry      time.Time
	// Retries counts delivery attempts that failed temporarily.
	Retries int
	// LastError is the last temporary failure, shown by smtpctl.
	LastError string
	// DSN parameters of RFC 3461: NOTIFY, RET, ENVID, ORCPT.
	Notify, Ret, EnvID, ORcpt string
	// Warned is set once a delay notification was sent.
	Warned bool
	// RequireTLS is the REQUIRETLS parameter of MAIL (RFC 8689 §4.1):
	// the message goes on only over TLS the mta could authenticate, to
	// servers that take REQUIRETLS in turn.
	RequireTLS bool
	// TLSOptional is the message's "TLS-Required: No" header field (RFC
	// 8689 §5): the recipient domain's DANE or MTA-STS policy is not
	// enforced for it. RequireTLS wins over it.
	TLSOptional bool
	// FirstAttempt is set by the queue on the copy of an envelope it
	// hands out when no earlier attempt of it can have begun: committed
	// since the queue started, never handed out before. A deliverer
	// may then skip looking for what an interrupted attempt left (a
	// maildir file under the envelope's name). The spool never holds it.
	FirstAttempt bool
	// Commit describes the message as the queue committed it, so that
	// recovery can tell a message whose commit a crash interrupted from
	// a whole one (queue.Store.Load); zero in envelopes of earlier
	// versions.
	Commit CommitInfo
}

// CommitInfo is what every envelope of a message records of its commit:
// the body's size and CRC-32C, and how many envelopes the message was
// committed with.
type CommitInfo struct {
	Size      int64
	CRC       uint32
	Envelopes int
	// Quarantined says the message was committed to quarantine/.
	Quarantined bool
}

// String is the value of the commit line: "SIZE CRC ENVELOPES", then
// "quarantined" for a quarantined message.
func (c CommitInfo) String() string {
	s := fmt.Sprintf("%d %08x %d", c.Size, c.CRC, c.Envelopes)
	if c.Quarantined {
		s += " quarantined"
	}
	return s
}

func parseCommitInfo(s string) (CommitInfo, error) {
	var c CommitInfo
	f := strings.Fields(s)
	if len(f) == 4 && f[3] == "quarantined" {
		c.Quarantined, f = true, f[:3]
	}
	if len(f) != 3 {
		return c, fmt.Errorf("%w: commit %q", ErrCorrupt, s)
	}
	size, err1 := strconv.ParseInt(f[0], 10, 64)
	crc, err2 := strconv.ParseUint(f[1], 16, 32)
	n, err3 := strconv.Atoi(f[2])
	if err := errors.Join(err1, err2, err3); err != nil || size < 0 || n < 1 {
		return c, fmt.Errorf("%w: commit %q", ErrCorrupt, s)
	}
	c.Size, c.CRC, c.Envelopes = size, uint32(crc), n
	return c, nil
}

// CleanText makes a text fit for an envelope field: line breaks and
// other control characters become spaces. Remote servers' replies go
// through it before they are recorded.
func CleanText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// MsgID returns the message part of the envelope id.
func (e *Envelope) MsgID() uint32 { return MsgIDOf(e.ID) }

// ErrCorrupt is returned for an envelope file that cannot be read.
var ErrCorrupt = errors.New("envelope: corrupt")

// Marshal writes the envelope as text.
func (e *Envelope) Marshal() ([]byte, error) {
	var b bytes.Buffer
	put := func(k, v string) error {
		if strings.ContainsAny(v, "\r\n\x00") {
			return fmt.Errorf("envelope: %s contains a line break or NUL", k)
		}
		fmt.Fprintf(&b, "%s: %s\n", k, v)
		return nil
	}
	times := func(t time.Time) string {
		if t.IsZero() {
			return "0"
		}
		return strconv.FormatInt(t.Unix(), 10)
	}
	fields := [][2]string{
		{"version", strconv.Itoa(Version)},
		{"id", FormatEvpID(e.ID)},
		{"kind", string(e.Kind)},
		{"rule", strconv.Itoa(e.Rule)},
		{"action", e.Action},
		{"sender", e.Sender},
		{"rcpt", e.Rcpt},
		{"dest", e.Dest},
		{"user", e.User},
		{"target", e.Target},
		{"helo", e.Helo},
		{"remote", e.Remote},
		{"created", times(e.Created)},
		{"expire", times(e.Expire)},
		{"lasttry", times(e.LastTry)},
		{"retries", strconv.Itoa(e.Retries)},
		{"lasterror", e.LastError},
		{"notify", e.Notify},
		{"ret", e.Ret},
		{"envid", e.EnvID},
		{"orcpt", e.ORcpt},
		{"warned", strconv.FormatBool(e.Warned)},
	}
	// written only when set, so that envelopes of earlier versions,
	// which lack them, still read
	if e.RequireTLS {
		fields = append(fields, [2]string{"requiretls", "true"})
	}
	if e.FirstAttempt {
		fields = append(fields, [2]string{"first-attempt", "true"})
	}
	if e.TLSOptional {
		fields = append(fields, [2]string{"tlsoptional", "true"})
	}
	if e.Commit.Envelopes > 0 {
		fields = append(fields, [2]string{"commit", e.Commit.String()})
	}
	for _, f := range fields {
		if err := put(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	// last, the CRC-32C of every line before it: a file a crash cut
	// short or filled with another file's blocks does not pass for one
	fmt.Fprintf(&b, "%s: %08x\n", checkKey, crc32.Checksum(b.Bytes(), castagnoli))
	return b.Bytes(), nil
}

// checkKey is the key of an envelope's last line, its checksum.
const checkKey = "check"

// castagnoli is the table of CRC-32C, which the CPU computes.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum extends crc, a CRC-32C, with p: the sum of a message body
// that the commit line records.
func Checksum(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }

// Checked reports whether data, an envelope Unmarshal read, ends with
// its checksum line: an envelope written by an earlier version has
// none.
func Checked(data []byte) bool {
	_, _, ok := splitCheck(data)
	return ok
}

// splitCheck splits an envelope into the lines before its last and the
// value of the last, if that is the checksum line.
func splitCheck(data []byte) (lines []byte, value string, ok bool) {
	i := bytes.LastIndex(bytes.TrimSuffix(data, []byte("\n")), []byte("\n")) + 1
	v, ok := bytes.CutPrefix(data[i:], []byte(checkKey+": "))
	return data[:i], string(bytes.TrimSuffix(v, []byte("\n"))), ok
}

// Unmarshal parses an envelope written by Marshal. Unknown keys, missing
// keys, a wrong version or bad values are ErrCorrupt: the queue moves
// such a file to corrupt/ and reports it.
func Unmarshal(data []byte) (*Envelope, error) {
	if lines, v, ok := splitCheck(data); ok {
		want, err := strconv.ParseUint(v, 16, 32)
		if err != nil || uint32(want) != crc32.Checksum(lines, castagnoli) {
			return nil, fmt.Errorf("%w: checksum %q does not match", ErrCorrupt, v)
		}
		data = lines
	}
	fields := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1024), 64*1024)
	for n := 1; sc.Scan(); n++ {
		k, v, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			if k, ok = strings.CutSuffix(sc.Text(), ":"); !ok {
				return nil, fmt.Errorf("%w: line %d is not key: value", ErrCorrupt, n)
			}
		}
		if strings.ContainsAny(v, "\r\x00") {
			return nil, fmt.Errorf("%w: line %d has a CR or NUL", ErrCorrupt, n)
		}
		if _, dup := fields[k]; dup {
			return nil, fmt.Errorf("%w: %s twice", ErrCorrupt, k)
		}
		fields[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if fields["version"] != strconv.Itoa(Version) {
		return nil, fmt.Errorf("%w: version %q", ErrCorrupt, fields["version"])
	}
	p := parser{fields: fields}
	e := &Envelope{
		ID:        p.evpID("id"),
		Kind:      Kind(p.str("kind")),
		Rule:      p.int("rule"),
		Action:    p.str("action"),
		Sender:    p.str("sender"),
		Rcpt:      p.str("rcpt"),
		Dest:      p.str("dest"),
		User:      p.str("user"),
		Target:    p.str("target"),
		Helo:      p.str("helo"),
		Remote:    p.str("remote"),
		Created:   p.time("created"),
		Expire:    p.time("expire"),
		LastTry:   p.time("lasttry"),
		Retries:   p.int("retries"),
		LastError: p.str("lasterror"),
		Notify:    p.str("notify"),
		Ret:       p.str("ret"),
		EnvID:     p.str("envid"),
		ORcpt:     p.str("orcpt"),
		Warned:    p.bool("warned"),
	}
	e.RequireTLS, e.TLSOptional = p.optionalBool("requiretls"), p.optionalBool("tlsoptional")
	e.FirstAttempt = p.optionalBool("first-attempt")
	if _, ok := p.fields["commit"]; ok {
		var err error
		if e.Commit, err = parseCommitInfo(p.str("commit")); err != nil && p.err == nil {
			p.err = err
		}
	}
	delete(fields, "version")
	if p.err == nil && len(fields) > 0 {
		for k := range fields {
			p.err = fmt.Errorf("%w: unknown key %q", ErrCorrupt, k)
		}
	}
	if p.err == nil && (MsgIDOf(e.ID) == 0 || uint32(e.ID) == 0) {
		p.err = fmt.Errorf("%w: id %s", ErrCorrupt, FormatEvpID(e.ID))
	}
	if p.err == nil && e.Kind != MDA && e.Kind != MTA && e.Kind != Bounce {
		p.err = fmt.Errorf("%w: kind %q", ErrCorrupt, e.Kind)
	}
	if p.err != nil {
		return nil, p.err
	}
	return e, nil
}

type parser struct {
	fields map[string]string
	err    error
}

func (p *parser) str(k string) string {
	v, ok := p.fields[k]
	if !ok && p.err == nil {
		p.err = fmt.Errorf("%w: no %s", ErrCorrupt, k)
	}
	delete(p.fields, k)
	return v
}

func (p *parser) int(k string) int {
	v, err := strconv.Atoi(p.str(k))
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("%w: %s: %v", ErrCorrupt, k, err)
	}
	return v
}

func (p *parser) evpID(k string) uint64 {
	v, err := ParseEvpID(p.str(k))
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("%w: %s: %v", ErrCorrupt, k, err)
	}
	return v
}

func (p *parser) bool(k string) bool {
	v, err := strconv.ParseBool(p.str(k))
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("%w: %s: %v", ErrCorrupt, k, err)
	}
	return v
}

// optionalBool is bool for a key that may be absent: false then.
func (p *parser) optionalBool(k string) bool {
	if _, ok := p.fields[k]; !ok {
		return false
	}
	return p.bool(k)
}

func (p *parser) time(k string) time.Time {
	v, err := strconv.ParseInt(p.str(k), 10, 64)
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("%w: %s: %v", ErrCorrupt, k, err)
	}
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(v, 0)
}

// QueueLine describes an envelope in one line for `smtpctl show queue`,
// in OpenSMTPD's order: id|kind|state|sender|rcpt|dest|created|expire|
// lasttry|retries|error, times as Unix seconds.
func (e *Envelope) QueueLine(state string) string {
	unix := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.Unix()
	}
	return fmt.Sprintf("%s|%s|%s|%s|%s|%s|%d|%d|%d|%d|%s",
		FormatEvpID(e.ID), e.Kind, state, e.Sender, e.Rcpt, e.Dest,
		unix(e.Created), unix(e.Expire), unix(e.LastTry), e.Retries, e.LastError)
}

// Matches reports whether target names this envelope: "all", its
// message id (8 hex digits) or its id (16).
func (e *Envelope) Matches(target string) bool {
	if target == "all" {
		return true
	}
	msgid, evpid, err := ParseID(target)
	switch {
	case err != nil:
		return false
	case evpid != 0:
		return evpid == e.ID
	}
	return msgid == e.MsgID()
}
