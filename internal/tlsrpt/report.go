package tlsrpt

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Report is the aggregate report of RFC 8460 §4.4, one UTC day of one
// policy domain. Its JSON encoding is the report format: field names as
// in the RFC, optional fields left out when empty.
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyResult `json:"policies"`
}

// DateRange is the time the report covers: a whole UTC day, from
// 00:00:00Z to 23:59:59Z (§4.1), written as RFC 3339 date-times (§4.4).
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyResult is one entry of policies: a policy, how many sessions
// under it succeeded and failed, and the failures grouped by their
// details (failure-details, left out when there were none).
type PolicyResult struct {
	Policy         Policy          `json:"policy"`
	Summary        Summary         `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// Policy is the policy object of §4.4.
//
// MXHost is written as a JSON array of strings. This is a choice: the
// text of §4.4 defines mx-host-pattern as "provided as a string", and
// the example of Appendix B writes one string, but erratum 6241 to RFC
// 8460 reports that example as wrong for mx-host, and deployed practice
// went with an array (an MTA-STS policy may have several mx lines, RFC
// 8461 §3.2): reports from Google carry "mx-host": [...], and mox's
// report decoder, citing the erratum, accepts only an array, so a string
// would lose the whole report there. We follow the erratum and that
// practice; testdata/tlsrpt-schema.json accepts either form. The field
// is left out when the policy has no MX pattern (a TLSA policy, or none
// found), as is policy-string when there is no policy text.
type Policy struct {
	Type    PolicyType `json:"policy-type"`
	Strings []string   `json:"policy-string,omitempty"`
	Domain  string     `json:"policy-domain"`
	MXHost  []string   `json:"mx-host,omitempty"`
}

// Summary is the summary object of §4.4.
type Summary struct {
	TotalSuccessfulSessionCount int64 `json:"total-successful-session-count"`
	TotalFailureSessionCount    int64 `json:"total-failure-session-count"`
}

// FailureDetail is one entry of failure-details (§4.4): the sessions
// that failed alike. Only result-type and failed-session-count are
// always present: a failure before any connection (an MTA-STS policy
// that could not be fetched) has no IP address nor MX host to name.
type FailureDetail struct {
	ResultType            ResultType `json:"result-type"`
	SendingMTAIP          string     `json:"sending-mta-ip,omitempty"`
	ReceivingMXHostname   string     `json:"receiving-mx-hostname,omitempty"`
	ReceivingMXHelo       string     `json:"receiving-mx-helo,omitempty"`
	ReceivingIP           string     `json:"receiving-ip,omitempty"`
	FailedSessionCount    int64      `json:"failed-session-count"`
	AdditionalInformation string     `json:"additional-information,omitempty"`
	FailureReasonCode     string     `json:"failure-reason-code,omitempty"`
}

// Organization is who sends the reports: Name is organization-name and
// Contact, an addr-spec, contact-info (§4.4). The domain of Contact is
// the submitter of §5.1 and §5.3, and the right side of the report-id.
type Organization struct {
	Name    string
	Contact string
}

// submitter checks org and returns the domain of its contact address.
func (org Organization) submitter() (string, error) {
	if strings.TrimSpace(org.Name) == "" {
		return "", errors.New("tlsrpt: organization has no name")
	}
	addr, err := addrSpec(org.Contact)
	if err != nil {
		return "", fmt.Errorf("tlsrpt: organization contact: %w", err)
	}
	at := strings.LastIndexByte(addr, '@')
	dom, ok := normalizeDomain(addr[at+1:])
	if !ok {
		return "", fmt.Errorf("tlsrpt: organization contact %q: domain is not a host name", org.Contact)
	}
	return dom, nil
}

// Gzip returns the JSON of r, gzip-compressed: the body of an
// application/tlsrpt+gzip report (§5.3, §5.4, §6).
func Gzip(r *Report) ([]byte, error) {
	if r == nil {
		return nil, errors.New("tlsrpt: no report")
	}
	js, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: encoding report: %w", err)
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: compressing report: %w", err)
	}
	if _, err := zw.Write(js); err != nil {
		return nil, fmt.Errorf("tlsrpt: compressing report: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("tlsrpt: compressing report: %w", err)
	}
	return buf.Bytes(), nil
}

// result turns the counts of one policy of domain into its entry of
// policies, failure details in a stable order.
func (pc *policyCounts) result(domain string) PolicyResult {
	pr := PolicyResult{
		Policy: Policy{
			Type:    pc.Type,
			Strings: slices.Clone(pc.Strings),
			Domain:  domain,
		},
		Summary: Summary{TotalSuccessfulSessionCount: pc.Success, TotalFailureSessionCount: pc.Failure},
	}
	if pc.MXHost != "" {
		pr.Policy.MXHost = strings.Fields(pc.MXHost)
	}
	for _, dc := range pc.Details {
		pr.FailureDetails = append(pr.FailureDetails, FailureDetail{
			ResultType:            dc.ResultType,
			SendingMTAIP:          dc.SendingIP,
			ReceivingMXHostname:   dc.ReceivingMXHostname,
			ReceivingMXHelo:       dc.ReceivingMXHelo,
			ReceivingIP:           dc.ReceivingIP,
			FailedSessionCount:    dc.Count,
			AdditionalInformation: dc.AdditionalInfo,
			FailureReasonCode:     dc.FailureReasonCode,
		})
	}
	slices.SortFunc(pr.FailureDetails, compareFailureDetails)
	return pr
}

// comparePolicyResults orders policies by type, MX pattern and policy
// text, so that a report comes out the same however it was counted.
func comparePolicyResults(a, b PolicyResult) int {
	return cmp.Or(
		cmp.Compare(a.Policy.Type, b.Policy.Type),
		slices.Compare(a.Policy.MXHost, b.Policy.MXHost),
		slices.Compare(a.Policy.Strings, b.Policy.Strings),
	)
}

// compareFailureDetails orders failure details by their fields.
func compareFailureDetails(a, b FailureDetail) int {
	return cmp.Or(
		cmp.Compare(a.ResultType, b.ResultType),
		cmp.Compare(a.ReceivingMXHostname, b.ReceivingMXHostname),
		cmp.Compare(a.ReceivingIP, b.ReceivingIP),
		cmp.Compare(a.SendingMTAIP, b.SendingMTAIP),
		cmp.Compare(a.ReceivingMXHelo, b.ReceivingMXHelo),
		cmp.Compare(a.FailureReasonCode, b.FailureReasonCode),
		cmp.Compare(a.AdditionalInformation, b.AdditionalInformation),
	)
}
