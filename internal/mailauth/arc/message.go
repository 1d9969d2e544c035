package arc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// field is one header field as it stands in the message, from its name
// to its final CRLF, folding kept. Line ends are CRLF whatever the input
// had.
type field struct {
	name string
	raw  string
}

func (f field) is(name string) bool { return strings.EqualFold(f.name, name) }

// value returns what follows the colon, without the final CRLF.
func (f field) value() string {
	_, v, _ := strings.Cut(f.raw, ":")
	return strings.TrimSuffix(v, "\r\n")
}

// The names of the ARC header fields (RFC 8617 §4.1).
const (
	nameAAR = "ARC-Authentication-Results"
	nameAMS = "ARC-Message-Signature"
	nameAS  = "ARC-Seal"
)

// readHeader reads the header fields of a message up to the empty line
// that ends the header (RFC 5322 §2.1) and returns the body that
// follows. Lines may end in CRLF or a bare LF. A line that is neither a
// field nor a continuation ends the header and is the first body line,
// as in Postfix's cleanup. More than max bytes of header is
// ErrHeaderTooLarge.
func readHeader(br *bufio.Reader, max int) ([]field, io.Reader, error) {
	var fields []field
	total := 0
	for {
		line, err := readLine(br, max-total)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, err
		}
		total += len(line)
		if len(line) == 0 {
			return fields, br, nil
		}
		norm := crlfLine(line)
		switch {
		case norm == "\r\n":
			return fields, br, nil
		case isWSP(line[0]) && len(fields) > 0:
			fields[len(fields)-1].raw += norm
		case isFieldStart(line):
			name, _, _ := strings.Cut(norm, ":")
			fields = append(fields, field{name: strings.TrimRight(name, " \t"), raw: norm})
		default:
			return fields, io.MultiReader(bytes.NewReader(line), br), nil
		}
		if err != nil {
			return fields, br, nil
		}
	}
}

// crlfLine returns line ending in CRLF: a bare LF becomes CRLF, and a
// last line without one gets one.
func crlfLine(line []byte) string {
	switch {
	case bytes.HasSuffix(line, []byte("\r\n")):
		return string(line)
	case bytes.HasSuffix(line, []byte("\n")):
		return string(line[:len(line)-1]) + "\r\n"
	}
	return string(line) + "\r\n"
}

// readLine reads one line, through its LF, of at most limit bytes.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > limit {
			return nil, ErrHeaderTooLarge
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, err
		}
	}
}

// isFieldStart reports whether line starts a header field: a name of
// printable characters other than the colon, then a colon, with the
// WSP that RFC 5322 §4.5 (obs-optional) allows between the two.
func isFieldStart(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return false
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// unfold removes the line breaks of a folded value (RFC 5322 §2.2.3).
func unfold(s string) string {
	return strings.NewReplacer("\r\n", "", "\r", "", "\n", "").Replace(s)
}

// arcSet is one ARC Set: the indexes of its three fields among the
// message's, -1 for one missing, and their parsed forms.
type arcSet struct {
	instance     int
	aar, ams, as int
	aarPayload   string
	amsTags      tagList
	asTags       tagList
	cv           Status
}

// chain is what a message's ARC header fields say, before any signature
// is checked.
type chain struct {
	present bool      // the message has ARC header fields
	n       int       // the highest instance found
	sets    []*arcSet // sets[i-1] is instance i, when err is nil
	err     error     // why the structure is invalid (RFC 8617 §5.2 steps 1-3)
}

// parseChain collects the ARC Sets of a message (RFC 8617 §5.2 step 1)
// and validates the structure of the chain (steps 2 and 3).
func parseChain(fields []field) *chain {
	ch := &chain{}
	byInst := map[int]*arcSet{}
	fail := func(err error) {
		if ch.err == nil {
			ch.err = err
		}
	}
	for idx, f := range fields {
		var kind string
		switch {
		case f.is(nameAAR):
			kind = nameAAR
		case f.is(nameAMS):
			kind = nameAMS
		case f.is(nameAS):
			kind = nameAS
		default:
			continue
		}
		ch.present = true
		var inst int
		var payload string
		var tags tagList
		var err error
		if kind == nameAAR {
			inst, payload, err = parseAARInstance(f.value())
		} else if tags, err = parseTagList(f.value()); err == nil {
			v, ok := tags.get("i")
			if !ok {
				err = errors.New("no instance tag")
			} else {
				inst, err = parseInstance(v)
			}
		}
		if err != nil {
			fail(fmt.Errorf("%s: %w", kind, err))
			continue
		}
		ch.n = max(ch.n, inst)
		s := byInst[inst]
		if s == nil {
			s = &arcSet{instance: inst, aar: -1, ams: -1, as: -1}
			byInst[inst] = s
		}
		var slot *int
		switch kind {
		case nameAAR:
			slot, s.aarPayload = &s.aar, payload
		case nameAMS:
			slot, s.amsTags = &s.ams, tags
		case nameAS:
			slot, s.asTags = &s.as, tags
			s.cv = Status(unfold(tagValue(tags, "cv")))
		}
		if *slot >= 0 {
			// §5.2 step 3.1: exactly one of each per set
			fail(fmt.Errorf("%s i=%d given twice", kind, inst))
		}
		*slot = idx
	}
	if !ch.present {
		return ch
	}
	if ch.n > MaxInstance {
		ch.err = fmt.Errorf("more than %d ARC Sets", MaxInstance) // §5.2 step 1
		return ch
	}
	if s := byInst[ch.n]; s != nil && s.cv == StatusFail {
		ch.err = fmt.Errorf("ARC-Seal i=%d says cv=fail", ch.n) // §5.2 step 2
		return ch
	}
	if ch.err != nil {
		return ch
	}
	if ch.n == 0 {
		ch.err = errors.New("no ARC Set with a valid instance")
		return ch
	}
	for i := 1; i <= ch.n; i++ {
		s := byInst[i]
		switch {
		case s == nil:
			ch.err = fmt.Errorf("no ARC Set i=%d", i) // §5.2 step 3.2
		case s.aar < 0:
			ch.err = fmt.Errorf("no %s i=%d", nameAAR, i) // §5.2 step 3.1
		case s.ams < 0:
			ch.err = fmt.Errorf("no %s i=%d", nameAMS, i)
		case s.as < 0:
			ch.err = fmt.Errorf("no %s i=%d", nameAS, i)
		case i == 1 && s.cv != StatusNone, i > 1 && s.cv != StatusPass:
			// §5.2 step 3.3
			ch.err = fmt.Errorf("ARC-Seal i=%d has cv=%q", i, s.cv)
		}
		if ch.err != nil {
			ch.sets = nil
			return ch
		}
		ch.sets = append(ch.sets, s)
	}
	return ch
}

func tagValue(l tagList, name string) string {
	v, _ := l.get(name)
	return v
}

// parseInstance parses the value of an instance tag: position = 1*2DIGIT,
// from 1 to 50 (RFC 8617 §4.2.1). Larger values parse, so that a chain
// of more than 50 sets is recognised as such.
func parseInstance(s string) (int, error) {
	if len(s) < 1 || len(s) > 2 || !isDigit(s[0]) || !isDigit(s[len(s)-1]) {
		return 0, fmt.Errorf("invalid instance %q", s)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		n = n*10 + int(s[i]-'0')
	}
	if n < 1 {
		return 0, fmt.Errorf("invalid instance %q", s)
	}
	return n, nil
}

// parseAARInstance splits an ARC-Authentication-Results value into its
// instance and its authres-payload (RFC 8617 §4.1.1):
//
//	arc-info = instance [CFWS] ";" authres-payload
//	instance = [CFWS] %s"i" [CFWS] "=" [CFWS] position
func parseAARInstance(v string) (int, string, error) {
	s := strings.TrimLeft(v, " \t\r\n")
	if !strings.HasPrefix(s, "i") {
		return 0, "", errors.New("value does not start with the instance tag")
	}
	s = strings.TrimLeft(s[1:], " \t\r\n")
	if !strings.HasPrefix(s, "=") {
		return 0, "", errors.New("malformed instance tag")
	}
	s = strings.TrimLeft(s[1:], " \t\r\n")
	end := 0
	for end < len(s) && isDigit(s[end]) {
		end++
	}
	n, err := parseInstance(s[:end])
	if err != nil {
		return 0, "", err
	}
	s = strings.TrimLeft(s[end:], " \t\r\n")
	if !strings.HasPrefix(s, ";") {
		return 0, "", errors.New(`no ";" after the instance tag`)
	}
	return n, s[1:], nil
}
