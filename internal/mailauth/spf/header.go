package spf

import (
	"net/netip"
	"strings"
	"unicode/utf8"
)

// HeaderFields is what a Received-SPF field reports besides the
// result (RFC 7208 §9.1).
type HeaderFields struct {
	// Receiver is the name of the host that checked: the comment's
	// author and receiver=.
	Receiver string
	// ClientIP is the address of the SMTP client, client-ip=.
	ClientIP netip.Addr
	// EnvelopeFrom is the MAIL FROM address, "" for the null
	// reverse-path.
	EnvelopeFrom string
	// Helo is the HELO/EHLO argument.
	Helo string
	// Identity is IdentityMailFrom or IdentityHelo, as Outcome gives
	// it.
	Identity string
	// Problem says what went wrong for temperror and permerror, as the
	// text of Outcome.Err.
	Problem string
}

// ReceivedSPF formats a Received-SPF header field (RFC 7208 §9.1) for
// res: the result, a comment in the words of §9.1's examples, and the
// key-value pairs receiver, client-ip, envelope-from, helo, identity
// and, for errors, problem. The field ends with CRLF and is folded at
// 78 characters where it can be.
//
// Every value is made safe to put in a header: a value that is not a
// dot-atom is a quoted-string, the comment escapes its parentheses and
// backslashes, and control characters, CR and LF included, and
// invalid UTF-8 become '?', so that nothing the client sent can end
// the field or add another.
func ReceivedSPF(res Result, f HeaderFields) string {
	switch res {
	case None, Neutral, Pass, Fail, SoftFail, TempError, PermError:
	default:
		res = PermError
	}
	ip := "unknown"
	if f.ClientIP.IsValid() {
		ip = f.ClientIP.Unmap().String()
	}
	sender := f.EnvelopeFrom
	if sender == "" || f.Identity == IdentityHelo {
		sender = "postmaster@" + f.Helo
	}
	var why string
	switch res {
	case Pass:
		why = "domain of " + sender + " designates " + ip + " as permitted sender"
	case Fail:
		why = "domain of " + sender + " does not designate " + ip + " as permitted sender"
	case SoftFail:
		why = "domain of transitioning " + sender + " does not designate " + ip + " as permitted sender"
	case Neutral:
		why = ip + " is neither permitted nor denied by domain of " + sender
	case None:
		why = "domain of " + sender + " does not designate permitted sender hosts"
	case TempError:
		why = "error in processing during lookup of " + sender
	case PermError:
		why = "permanent error in processing domain of " + sender
	}
	receiver := f.Receiver
	if receiver == "" {
		receiver = "unknown"
	}
	w := folder{line: "Received-SPF: " + string(res)}
	for word := range strings.FieldsSeq("(" + comment(receiver+": "+why) + ")") {
		w.add(word) // a comment may be folded where it has spaces
	}

	pairs := []string{"receiver=" + value(receiver), "client-ip=" + value(ip)}
	if f.EnvelopeFrom != "" {
		pairs = append(pairs, "envelope-from="+value(f.EnvelopeFrom))
	} else {
		pairs = append(pairs, `envelope-from="<>"`)
	}
	if f.Helo != "" {
		pairs = append(pairs, "helo="+value(f.Helo))
	}
	if f.Identity != "" {
		pairs = append(pairs, "identity="+value(f.Identity))
	}
	if f.Problem != "" && (res == TempError || res == PermError) {
		pairs = append(pairs, "problem="+value(f.Problem))
	}
	for i, p := range pairs {
		if i < len(pairs)-1 {
			p += ";"
		}
		w.add(p)
	}
	return w.String() + "\r\n"
}

// folder builds a header field, folding before a word that would take
// a line past 78 characters (RFC 5322 §2.1.1).
type folder struct {
	done []string
	line string
}

func (w *folder) add(word string) {
	if len(w.line)+1+len(word) > 78 && strings.TrimSpace(w.line) != "" {
		w.done = append(w.done, w.line)
		w.line = "\t" + word
		return
	}
	w.line += " " + word
}

func (w *folder) String() string { return strings.Join(append(w.done, w.line), "\r\n") }

// clean replaces control characters and invalid UTF-8 with '?'.
func clean(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// comment returns s as the text of a comment: cleaned, with '(', ')'
// and '\' quoted (RFC 5322 §3.2.2).
func comment(s string) string {
	s = clean(s)
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '(' || c == ')' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// value returns s as a dot-atom if it is one, else as a quoted-string
// (RFC 7208 §9.1, RFC 5322 §3.2.3-4).
func value(s string) string {
	s = clean(s)
	if isDotAtom(s) {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// isDotAtom reports whether s is a dot-atom-text: atext runs joined by
// single dots.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
