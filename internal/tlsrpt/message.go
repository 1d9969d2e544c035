package tlsrpt

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"strconv"
	"strings"
	"time"
)

// MediaType is the media type of a gzip-compressed report (RFC 8460
// §5.3, §5.4; registered by §6).
const MediaType = "application/tlsrpt+gzip"

// maxLine is the line length RFC 5322 §2.1.1 asks lines to keep to.
const maxLine = 78

// Message returns the mail of RFC 8460 §5.3 that carries report r,
// whose gzipped JSON is gz (see Gzip), from from to to. submitter is the
// domain of the report's contact-info (§5.3: TLS-Report-Submitter MUST
// be that domain) and now dates the message.
//
// It is a multipart/report (RFC 6522) with report-type "tlsrpt": a short
// text/plain part, then the report as an application/tlsrpt+gzip
// attachment in base64, named as §5.1 says:
// submitter!policy-domain!begin!end!unique.json.gz, with begin and end
// the Unix times of the date range and unique a digest of the
// report-id, the same each time the report is sent. The header has the
// Subject of §5.3 ("Report Domain: ... Submitter: ... Report-ID:
// <...>"), TLS-Report-Domain and TLS-Report-Submitter. Lines end in
// CRLF and keep to 78 characters, but for a header word longer than
// that (a domain name near its 253-character maximum).
//
// The message still needs a DKIM signature by the submitter's domain
// (§3) before it is sent.
func Message(r *Report, gz []byte, from, to, submitter string, now time.Time) ([]byte, error) {
	if r == nil || len(r.Policies) == 0 {
		return nil, errors.New("tlsrpt: message: the report has no policies")
	}
	if len(gz) == 0 {
		return nil, errors.New("tlsrpt: message: no report data")
	}
	domain, err := reportDomain(r)
	if err != nil {
		return nil, err
	}
	sub, ok := normalizeDomain(submitter)
	if !ok || sub != submitter {
		return nil, fmt.Errorf("tlsrpt: message: submitter %q is not a lower-case host name", submitter)
	}
	fromAddr, err := mail.ParseAddress(from)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: message: From %q: %w", from, err)
	}
	toAddr, err := mail.ParseAddress(to)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: message: To %q: %w", to, err)
	}
	// §5.3: TLS-Report-Submitter MUST match the domain of contact-info
	if c, err := addrSpec(r.ContactInfo); err != nil {
		return nil, fmt.Errorf("tlsrpt: message: contact-info: %w", err)
	} else if d, _ := normalizeDomain(c[strings.LastIndexByte(c, '@')+1:]); d != sub {
		return nil, fmt.Errorf("tlsrpt: message: submitter %q is not the domain of contact-info %q", sub, r.ContactInfo)
	}
	reportID, err := subjectReportID(r.ReportID, sub)
	if err != nil {
		return nil, err
	}

	digest := sha256.Sum256([]byte(r.ReportID))
	filename := fmt.Sprintf("%s!%s!%d!%d!%s.json.gz", sub, domain,
		r.DateRange.Start.Unix(), r.DateRange.End.Unix(), hex.EncodeToString(digest[:4]))
	boundary := "tlsrpt-" + rand.Text()

	var b bytes.Buffer
	header(&b, "From", fromAddr.String())
	header(&b, "To", toAddr.String())
	header(&b, "Date", now.Format(time.RFC1123Z))
	header(&b, "Subject", "Report Domain: "+domain+" Submitter: "+sub+" Report-ID: "+reportID)
	header(&b, "Message-ID", "<"+rand.Text()+"@"+sub+">")
	header(&b, "TLS-Report-Domain", domain)
	header(&b, "TLS-Report-Submitter", sub)
	header(&b, "Auto-Submitted", "auto-generated")
	header(&b, "MIME-Version", "1.0")
	header(&b, "Content-Type", `multipart/report; report-type="tlsrpt"; boundary="`+boundary+`"`)
	b.WriteString("\r\n")

	b.WriteString("--" + boundary + "\r\n")
	header(&b, "Content-Type", "text/plain; charset=us-ascii")
	header(&b, "Content-Transfer-Encoding", "7bit")
	b.WriteString("\r\n")
	text := fmt.Sprintf("This is an aggregate TLS report (RFC 8460) from %s for %s, "+
		"covering %s to %s. The report is attached as %s.",
		sub, domain, r.DateRange.Start.UTC().Format(time.RFC3339), r.DateRange.End.UTC().Format(time.RFC3339), MediaType)
	for _, line := range fold(strings.Fields(text), "", "") {
		b.WriteString(line + "\r\n")
	}

	b.WriteString("--" + boundary + "\r\n")
	header(&b, "Content-Type", MediaType)
	header(&b, "Content-Transfer-Encoding", "base64")
	contentDisposition(&b, filename)
	b.WriteString("\r\n")
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	b.WriteString("--" + boundary + "--\r\n")
	return b.Bytes(), nil
}

// reportDomain returns the policy domain of r, which all its policies
// share.
func reportDomain(r *Report) (string, error) {
	domain := r.Policies[0].Policy.Domain
	for _, p := range r.Policies {
		if p.Policy.Domain != domain {
			return "", fmt.Errorf("tlsrpt: message: the report mixes policy domains %q and %q", domain, p.Policy.Domain)
		}
	}
	if d, ok := normalizeDomain(domain); !ok || d != domain {
		return "", fmt.Errorf("tlsrpt: message: policy domain %q is not a lower-case host name", domain)
	}
	return domain, nil
}

// subjectReportID returns the report-id as the Subject of §5.3 writes
// it: "<" id-left "@" id-right ">" (RFC 5322 msg-id); a report-id
// without "@" gets the submitter as its right side.
func subjectReportID(id, submitter string) (string, error) {
	if id == "" {
		return "", errors.New("tlsrpt: message: the report has no report-id")
	}
	left, right, ok := strings.Cut(id, "@")
	if !ok {
		right = submitter
	}
	if !dotAtom(left) || !dotAtom(right) {
		return "", fmt.Errorf("tlsrpt: message: report-id %q cannot go in a Subject as <id-left@id-right>", id)
	}
	return "<" + left + "@" + right + ">", nil
}

// dotAtom checks dot-atom-text (RFC 5322 §3.2.3).
func dotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) < 0 {
			return false
		}
	}
	return true
}

// header writes a header field, folded at its spaces to keep lines to
// maxLine.
func header(b *bytes.Buffer, name, value string) {
	for _, line := range fold(strings.Split(value, " "), name+": ", " ") {
		b.WriteString(line + "\r\n")
	}
}

// fold lays words out in lines of at most maxLine characters, the first
// starting with first, the next ones with indent; a word too long for
// any line gets one of its own.
func fold(words []string, first, indent string) []string {
	var lines []string
	line, hasWord := first, false
	for _, w := range words {
		if hasWord && len(line)+1+len(w) > maxLine {
			lines = append(lines, line)
			line, hasWord = indent, false
		}
		if hasWord {
			line += " "
		}
		line += w
		hasWord = true
	}
	return append(lines, line)
}

// contentDisposition writes the Content-Disposition of the report
// attachment. A file name that would make the line too long is split
// in RFC 2231 continuations (filename*0, filename*1, ...).
func contentDisposition(b *bytes.Buffer, filename string) {
	b.WriteString("Content-Disposition: attachment;\r\n")
	if line := ` filename="` + filename + `"`; len(line) <= maxLine {
		b.WriteString(line + "\r\n")
		return
	}
	for i := 0; len(filename) > 0; i++ {
		n := min(len(filename), 60)
		b.WriteString(" filename*" + strconv.Itoa(i) + `="` + filename[:n] + `"`)
		filename = filename[n:]
		if len(filename) > 0 {
			b.WriteString(";")
		}
		b.WriteString("\r\n")
	}
}
