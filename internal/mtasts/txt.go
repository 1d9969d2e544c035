package mtasts

import (
	"errors"
	"fmt"
	"strings"

	"smtpd/internal/policytxt"
)

// Errors of ParseTXT. Each means that the domain has no available
// policy (RFC 8461 §3.1): a sender then uses an unexpired cached policy
// if it has one, and otherwise delivers as without MTA-STS.
var (
	// ErrNoRecord: none of the TXT records is an MTA-STS record.
	ErrNoRecord = errors.New("no MTA-STS TXT record")
	// ErrMultipleRecords: more than one TXT record is an MTA-STS record.
	ErrMultipleRecords = errors.New("more than one MTA-STS TXT record")
	// ErrRecordSyntax: the MTA-STS record does not parse.
	ErrRecordSyntax = errors.New("invalid MTA-STS TXT record")
)

// stsVersion starts every MTA-STS TXT record (RFC 8461 §3.1).
const stsVersion = "v=STSv1"

// ParseTXT returns the policy id of the MTA-STS TXT record among
// records, the TXT records of _mta-sts.DOMAIN with the strings of each
// joined (RFC 8461 §3.1). Records not starting with v=STSv1 are
// ignored; exactly one must. That one is fields separated by ';' (with
// optional white space around it, and optionally after the last field):
// v=STSv1 first, then an id of 1 to 32 letters and digits, and any
// extension fields, whose names RFC 8461 §3.1 restricts and whose
// values are printable ASCII other than '=' and ';'. Of a field given
// twice only the first counts. The errors wrap ErrNoRecord,
// ErrMultipleRecords or ErrRecordSyntax.
func ParseTXT(records []string) (id string, err error) {
	var rec string
	n := 0
	for _, r := range records {
		if isSTSRecord(r) {
			rec = r
			n++
		}
	}
	switch {
	case n == 0:
		return "", ErrNoRecord
	case n > 1:
		return "", fmt.Errorf("%w (%d)", ErrMultipleRecords, n)
	}
	id, err = parseRecord(rec)
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrRecordSyntax, rec, err)
	}
	return id, nil
}

// isSTSRecord reports whether the TXT record r is meant as an MTA-STS
// record: it starts with v=STSv1, followed by its end, white space or
// ';'. RFC 8461 §3.1 discards only the records not starting with
// "v=STSv1;"; a record "v=STSv1 ;" or "v=STSv1" alone is kept here, to
// be found valid or invalid by its syntax rather than overlooked.
func isSTSRecord(r string) bool {
	rest, ok := strings.CutPrefix(r, stsVersion)
	return ok && (rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t')
}

// parseRecord parses an MTA-STS record, which starts with v=STSv1, and
// returns its id.
func parseRecord(r string) (string, error) {
	fields := strings.Split(r[len(stsVersion):], ";")
	if trimWSP(fields[0]) != "" {
		return "", fmt.Errorf("v=STSv1 followed by %q", fields[0])
	}
	fields = fields[1:]
	// sts-text-record: at least one field after v, then an optional
	// trailing delimiter
	if n := len(fields); n > 1 && trimWSP(fields[n-1]) == "" {
		fields = fields[:n-1]
	}
	var id string
	seen := map[string]bool{"v": true}
	for _, f := range fields {
		f = trimWSP(f)
		name, value, ok := strings.Cut(f, "=")
		switch {
		case f == "":
			return "", errors.New("empty field")
		case !ok:
			return "", fmt.Errorf("field %q has no value", f)
		case !policytxt.ValidName(name):
			return "", fmt.Errorf("invalid field name %q", name)
		case seen[name]:
			continue
		}
		seen[name] = true
		if name == "id" {
			if !validID(value) {
				return "", fmt.Errorf("id %q is not 1 to 32 letters and digits", value)
			}
			id = value
		} else if !policytxt.ValidValue(value) {
			return "", fmt.Errorf("field %s has invalid value %q", name, value)
		}
	}
	if id == "" {
		return "", errors.New("no id field")
	}
	return id, nil
}

// validID reports whether s is a policy id, sts-id of RFC 8461 §3.1.
func validID(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) {
			return false
		}
	}
	return true
}
