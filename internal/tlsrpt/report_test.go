package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// sampleReport counts a day of sessions to example.com under three
// policies, with failures of several kinds, and returns its report.
func sampleReport(t *testing.T) *Report {
	t.Helper()
	c := &clock{t: at("2024-05-01T08:00:00Z")}
	s := openStore(t, filepath.Join(t.TempDir(), "tlsrpt.json"), c)
	s.instance = "0123456789abcdef"

	pol := sts("example.com")
	for range 40 {
		s.Record(success(pol))
	}
	expired := failure(pol, ResultCertificateExpired, "mx1.mail.example.com", "203.0.113.10")
	expired.ReceivingMXHelo = "mx1.mail.example.com ESMTP"
	expired.AdditionalInfo = "https://sender.example/tlsrpt/info?id=1"
	s.Record(expired)
	s.Record(expired)
	notls := failure(pol, ResultSTARTTLSNotSupported, "mx2.mail.example.com", "2001:db8::25")
	notls.SendingIP = "2001:db8:abcd:13::1"
	s.Record(notls)
	untrusted := failure(pol, ResultCertificateNotTrusted, "mx1.mail.example.com", "203.0.113.10")
	untrusted.FailureReasonCode = "x509: certificate signed by unknown authority"
	s.Record(untrusted)
	fetch := pol
	fetch.ResultType = ResultSTSPolicyFetchError
	fetch.FailureReasonCode = "GET https://mta-sts.example.com/.well-known/mta-sts.txt: 404"
	s.Record(fetch)

	tlsa := Result{
		PolicyDomain:  "example.com", // the TLSA base domain: this MX is example.com itself
		PolicyType:    PolicyTLSA,
		PolicyStrings: []string{"3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
	}
	s.Record(success(tlsa))
	s.Record(failure(tlsa, ResultTLSAInvalid, "example.com", "198.51.100.33"))
	s.Record(failure(tlsa, ResultDNSSECInvalid, "", ""))

	s.Record(Result{PolicyDomain: "example.com", PolicyType: PolicyNone, Success: true})
	s.Record(failure(Result{PolicyDomain: "example.com", PolicyType: PolicyNone}, ResultValidationFailure, "mx4.example.com", "192.0.2.44"))

	c.set(at("2024-05-02T03:00:00Z"))
	r, err := s.Report("2024-05-01", "example.com", testOrg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReportGolden(t *testing.T) {
	got, err := json.MarshalIndent(sampleReport(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	want, err := os.ReadFile("testdata/report.golden.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("report JSON differs from testdata/report.golden.json; got:\n%s", got)
	}
}

func TestGzip(t *testing.T) {
	r := sampleReport(t)
	gz, err := Gzip(r)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	js, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(r)
	if !bytes.Equal(js, want) {
		t.Errorf("gunzipped report differs:\n%s\n%s", js, want)
	}
	if _, err := Gzip(nil); err == nil {
		t.Error("Gzip(nil) succeeded")
	}
}

// validate runs testdata/validate.py on doc against the schema and
// returns its output and whether doc is valid. Without python3 and its
// jsonschema module the test fails: make test installs them.
func validate(t *testing.T, doc []byte) (string, bool) {
	t.Helper()
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s: %v: install python3-jsonschema (apt-get install python3-jsonschema)", python, err)
	}
	path := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(python, "testdata/validate.py", "testdata/tlsrpt-schema.json", path).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), true
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return string(out), false
	case errors.As(err, &exit) && exit.ExitCode() == 3:
		t.Fatalf("python3 lacks jsonschema or a format checker: install python3-jsonschema (%s)", strings.TrimSpace(string(out)))
	}
	t.Fatalf("validate.py: %v\n%s", err, out)
	return "", false
}

func TestReportMatchesSchema(t *testing.T) {
	doc, err := json.Marshal(sampleReport(t))
	if err != nil {
		t.Fatal(err)
	}
	if out, ok := validate(t, doc); !ok {
		t.Fatalf("report does not match the schema:\n%s\n%s", out, doc)
	}

	// the schema is no rubber stamp: each of these breaks the report
	breakages := map[string]func(m map[string]any){
		"no report-id":     func(m map[string]any) { delete(m, "report-id") },
		"extra field":      func(m map[string]any) { m["extra"] = 1 },
		"bad start":        func(m map[string]any) { dr(m)["start-datetime"] = "2024-05-01 00:00:00" },
		"no zone":          func(m map[string]any) { dr(m)["end-datetime"] = "2024-05-01T23:59:59" },
		"bad contact":      func(m map[string]any) { m["contact-info"] = "nobody" },
		"bad policy type":  func(m map[string]any) { policy(m, 0)["policy-type"] = "dane" },
		"no policy domain": func(m map[string]any) { delete(policy(m, 0), "policy-domain") },
		"negative count":   func(m map[string]any) { summary(m, 0)["total-failure-session-count"] = -1 },
		"fractional count": func(m map[string]any) { summary(m, 0)["total-successful-session-count"] = 1.5 },
		"bad result type":  func(m map[string]any) { detail0(m)["result-type"] = "certificate-revoked" },
		"bad IP":           func(m map[string]any) { detail0(m)["sending-mta-ip"] = "203.0.113.300" },
		"count as string":  func(m map[string]any) { detail0(m)["failed-session-count"] = "2" },
		"no policies":      func(m map[string]any) { m["policies"] = []any{} },
		"mx-host a number": func(m map[string]any) { policy(m, 1)["mx-host"] = 25 },
	}
	for name, breakIt := range breakages {
		var m map[string]any
		if err := json.Unmarshal(doc, &m); err != nil {
			t.Fatal(err)
		}
		breakIt(m)
		bad, _ := json.Marshal(m)
		if out, ok := validate(t, bad); ok {
			t.Errorf("%s: the schema accepts a broken report (%s)", name, out)
		}
	}
}

func dr(m map[string]any) map[string]any { return m["date-range"].(map[string]any) }

func policyResult(m map[string]any, i int) map[string]any {
	return m["policies"].([]any)[i].(map[string]any)
}

func policy(m map[string]any, i int) map[string]any {
	return policyResult(m, i)["policy"].(map[string]any)
}

func summary(m map[string]any, i int) map[string]any {
	return policyResult(m, i)["summary"].(map[string]any)
}

func detail0(m map[string]any) map[string]any {
	return policyResult(m, 1)["failure-details"].([]any)[0].(map[string]any)
}
