// Package tlsrpt is the sending side of SMTP TLS Reporting (RFC 8460):
// the outbound process records how each attempt to set up TLS with a
// receiving MX went, and once a day tells every policy domain that asks
// for it how its mail fared.
//
// The pieces, in the order a day's report goes through them:
//
//   - ParseTXT reads the _smtp._tls.DOMAIN TXT record (§3) that says
//     whether a domain wants reports and where to send them (its rua).
//   - A Store counts Results per UTC day, policy domain and policy (§4)
//     and keeps the counts in one file, written atomically.
//   - Store.Due names the finished days not yet reported, Store.Report
//     builds one domain's Report (§4.4) and Store.Done forgets it once
//     sent.
//   - Gzip compresses the report; Message wraps it in the mail of §5.3
//     for a mailto: destination, Post delivers it to an https: one
//     (§5.4).
//
// What the package leaves to its caller: looking the record up, DKIM
// signing of report mail (a report without a valid signature by the
// reporting domain MUST be ignored by its recipient, §3, and the key's
// record should carry s=tlsrpt), sending it despite TLS failures and
// without counting that session in the next report (§3), and the
// retries of §5.5 (up to 24 hours, backing off).
package tlsrpt

// PolicyType is the policy-type of a report (RFC 8460 §4.4): which kind
// of policy applied to the sessions counted.
type PolicyType string

// The policy types of RFC 8460 §4.4.
const (
	// PolicyTLSA is a DANE policy (RFC 7672): the TLSA records of the
	// MX host.
	PolicyTLSA PolicyType = "tlsa"
	// PolicySTS is an MTA-STS policy (RFC 8461) of the recipient domain.
	PolicySTS PolicyType = "sts"
	// PolicyNone counts the sessions to a domain that asked for reports
	// but had neither kind of policy.
	PolicyNone PolicyType = "no-policy-found"
)

// ResultType is the result-type of a failure (RFC 8460 §4.3). The list
// is an IANA registry ("STARTTLS Validation Result Types", §6.6), so
// values other than the constants below may appear.
type ResultType string

// The result types of RFC 8460 §4.3.
const (
	// Negotiation failures (§4.3.1).

	// ResultSTARTTLSNotSupported: the MX did not offer STARTTLS.
	ResultSTARTTLSNotSupported ResultType = "starttls-not-supported"
	// ResultCertificateHostMismatch: the certificate did not name the
	// MX host as the policy requires.
	ResultCertificateHostMismatch ResultType = "certificate-host-mismatch"
	// ResultCertificateExpired: the certificate has expired.
	ResultCertificateExpired ResultType = "certificate-expired"
	// ResultCertificateNotTrusted: an unknown authority, a broken
	// chain, a name constraint, and so on; the failure-reason-code
	// SHOULD say which.
	ResultCertificateNotTrusted ResultType = "certificate-not-trusted"
	// ResultValidationFailure: any other failure; the
	// failure-reason-code SHOULD say what.
	ResultValidationFailure ResultType = "validation-failure"

	// DANE policy failures (§4.3.2.1).

	// ResultTLSAInvalid: no record of the TLSA RRset was valid.
	ResultTLSAInvalid ResultType = "tlsa-invalid"
	// ResultDNSSECInvalid: the resolver returned no valid records.
	ResultDNSSECInvalid ResultType = "dnssec-invalid"
	// ResultDANERequired: DANE is required locally for the domain but
	// the MX host had no DNSSEC-validated TLSA records (RFC 7672 §6).
	ResultDANERequired ResultType = "dane-required"

	// MTA-STS policy failures (§4.3.2.2).

	// ResultSTSPolicyFetchError: the policy could not be retrieved.
	ResultSTSPolicyFetchError ResultType = "sts-policy-fetch-error"
	// ResultSTSPolicyInvalid: the policy did not validate.
	ResultSTSPolicyInvalid ResultType = "sts-policy-invalid"
	// ResultSTSWebPKIInvalid: the policy host's certificate did not
	// pass PKIX validation.
	ResultSTSWebPKIInvalid ResultType = "sts-webpki-invalid"
)

// Result is the outcome of one attempt to set up a TLS session with a
// receiving MX, as the outbound process saw it.
//
// PolicyDomain, PolicyType, PolicyStrings and MXHost identify the policy
// (the "policy" object of RFC 8460 §4.4): PolicyDomain is the domain the
// policy is defined for (the recipient domain for MTA-STS, the TLSA base
// domain for DANE, §3) in A-labels; PolicyStrings is the policy itself
// (the lines of an MTA-STS policy, or one presentation-format TLSA
// record a string, §4.4); MXHost is the MX pattern of the policy that
// applied, if any, or several separated by blanks (all the mx lines of
// an MTA-STS policy), each an element of the report's mx-host.
//
// Success tells whether TLS was set up as the policy requires. The other
// fields describe a failure (§4.4 failure-details) and are ignored on
// success: ResultType (empty means validation-failure), the IP addresses
// of both ends, the MX host name and its EHLO name, a URI with further
// information (§4.4 additional-information; text that is no URI is
// reported as part of the reason code instead) and a free-text reason
// code (an error code or message).
type Result struct {
	PolicyDomain  string
	PolicyType    PolicyType
	PolicyStrings []string
	MXHost        string

	Success bool

	ResultType          ResultType
	SendingIP           string
	ReceivingMXHostname string
	ReceivingMXHelo     string
	ReceivingIP         string
	AdditionalInfo      string
	FailureReasonCode   string
}
