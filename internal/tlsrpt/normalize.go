package tlsrpt

import (
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// knownPolicyType tells whether t is one of the policy types of RFC
// 8460 §4.4.
func knownPolicyType(t PolicyType) bool {
	switch t {
	case PolicyTLSA, PolicySTS, PolicyNone:
		return true
	}
	return false
}

// normalizeDomain returns domain as a report names it: A-labels (§4.4
// requires them for policy-domain), lower case, no trailing dot. It
// fails on what is not a host name, so that a domain can go into a
// report-id and a file name (§5.1) as it is.
func normalizeDomain(domain string) (string, bool) {
	d := strings.TrimSuffix(domain, ".")
	for i := 0; i < len(d); i++ {
		if d[i] >= utf8.RuneSelf {
			a, err := idna.Lookup.ToASCII(d)
			if err != nil {
				return "", false
			}
			d = a
			break
		}
	}
	d = strings.ToLower(d)
	if d == "" || len(d) > 253 {
		return "", false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' && c != '_' {
				return "", false
			}
		}
	}
	return d, true
}

// normalizeHost tidies a host name or MX pattern ("*.example.com") of
// a Result: A-labels and lower case when it is a host name, else only
// cut to length.
func normalizeHost(h string) string {
	if h == "" {
		return ""
	}
	wild, rest := "", h
	if r, ok := strings.CutPrefix(h, "*."); ok {
		wild, rest = "*.", r
	}
	if d, ok := normalizeDomain(rest); ok {
		return wild + d
	}
	return clampString(h, maxHostLen)
}

// normalizeMX tidies the MX patterns of a Result, which may be several
// (the mx lines of an MTA-STS policy, RFC 8461 §3.2) separated by blanks
// or commas: each as normalizeHost does, duplicates dropped, joined by
// single spaces.
func normalizeMX(s string) string {
	var out []string
	for _, p := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' || r == ',' }) {
		if p = normalizeHost(p); !slices.Contains(out, p) && len(out) < maxMXPatterns {
			out = append(out, p)
		}
	}
	return strings.Join(out, " ")
}

// normalizeIP writes an IP address as RFC 5952 (IPv6) and dotted
// decimal (IPv4, also when mapped into IPv6) have it, dropping a zone
// or a port; what does not parse becomes "".
func normalizeIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return ""
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone("").String()
}

// makeDetail returns the failure-details key of a failed Result.
func makeDetail(r Result) detail {
	rt := r.ResultType
	if rt == "" {
		rt = ResultValidationFailure
	}
	// additional-information is a URI (§4.4): other text is kept as
	// (part of) the failure-reason-code instead
	info, reason := strings.TrimSpace(r.AdditionalInfo), strings.TrimSpace(r.FailureReasonCode)
	if info != "" && !isURI(info) {
		if reason == "" {
			reason = info
		} else {
			reason += " (" + info + ")"
		}
		info = ""
	}
	return detail{
		ResultType:          ResultType(clampString(string(rt), maxHostLen)),
		SendingIP:           normalizeIP(r.SendingIP),
		ReceivingMXHostname: normalizeHost(r.ReceivingMXHostname),
		ReceivingMXHelo:     clampString(strings.TrimSpace(r.ReceivingMXHelo), maxHostLen),
		ReceivingIP:         normalizeIP(r.ReceivingIP),
		AdditionalInfo:      clampString(info, maxTextLen),
		FailureReasonCode:   clampString(reason, maxTextLen),
	}
}

// isURI tells whether s is an absolute URI (RFC 3986 §4.3): a scheme,
// and only characters a URI may hold.
func isURI(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"<>\^`+"`"+`{|}`, c) >= 0 {
			return false
		}
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme != ""
}

// clampPolicyStrings copies the policy strings, cut to the bounds.
func clampPolicyStrings(in []string) []string {
	var out []string
	total := 0
	for _, s := range in {
		s = clampString(s, maxPolicyString)
		if len(out) == maxPolicyStrings || total+len(s) > maxPolicyBytes {
			break
		}
		total += len(s)
		out = append(out, s)
	}
	return out
}

// clampString cuts s to at most n bytes, at a character boundary, and
// makes it valid UTF-8 (JSON has no other text).
func clampString(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
