package regress

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tlsReport is what the checks read of an RFC 8460 report.
type tlsReport struct {
	Policies []struct {
		Policy struct {
			Type   string `json:"policy-type"`
			Domain string `json:"policy-domain"`
		} `json:"policy"`
		Summary struct {
			Success int `json:"total-successful-session-count"`
			Failure int `json:"total-failure-session-count"`
		} `json:"summary"`
		Details []struct {
			ResultType string `json:"result-type"`
		} `json:"failure-details"`
	} `json:"policies"`
}

// checkTLSReports sends the day's TLS reports of the world's sender and
// checks what the reporting domains receive: a multipart/report message
// per domain whose gzipped JSON validates against the RFC 8460 schema
// and counts the sessions of the day.
func checkTLSReports(t *testing.T, w *tlsWorld) {
	out, errOut, code := w.out.Smtpctl("send", "tls-reports", "today")
	domains := []string{"mx1.dane-mixed.test", "mx2.dane-mixed.test", "sts-testing.test", "sts-mixed.test"}
	for _, d := range domains {
		if code != 0 || !strings.Contains(out, " "+d+": sent to mailto:tlsrpt@reports.test") {
			t.Fatalf("smtpctl send tls-reports today: no report for %s: %d %s%s", d, code, out, errOut)
		}
	}
	var reports []string
	deadline := time.Now().Add(60 * time.Second)
	for reports = mailWith(w.rx, `report-type="tlsrpt"`); len(reports) < len(domains); reports = mailWith(w.rx, `report-type="tlsrpt"`) {
		if time.Now().After(deadline) {
			t.Fatalf("%d TLS reports arrived within a minute, want %d", len(reports), len(domains))
		}
		time.Sleep(100 * time.Millisecond)
	}
	// the schema and the validator (python3-jsonschema, with a strict
	// date-time check) of the tlsrpt package's tests
	schema, err := filepath.Abs("../internal/tlsrpt/testdata/tlsrpt-schema.json")
	if err != nil {
		t.Fatal(err)
	}
	validate := filepath.Join(filepath.Dir(schema), "validate.py")
	got := map[string]tlsReport{}
	for _, m := range reports {
		js := reportJSON(t, m)
		file := filepath.Join(t.TempDir(), "report.json")
		os.WriteFile(file, js, 0o644)
		cmd := exec.Command("/usr/bin/python3", validate, schema, file)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("the report does not validate against the RFC 8460 schema (python3-jsonschema is installed by make test): %v\n%s\n%s", err, b, js)
		}
		var r tlsReport
		if err := json.Unmarshal(js, &r); err != nil || len(r.Policies) == 0 {
			t.Fatalf("report %s: %v", js, err)
		}
		got[r.Policies[0].Policy.Domain] = r
	}
	// one policy per report here: its counts, its first failure
	type counts struct {
		kind             string
		success, failure int
		result           string
	}
	want := map[string]counts{
		"mx1.dane-mixed.test": {"tlsa", 0, 1, "validation-failure"},
		"mx2.dane-mixed.test": {"tlsa", 1, 0, ""},
		"sts-testing.test":    {"sts", 0, 1, "certificate-host-mismatch"},
		"sts-mixed.test":      {"sts", 1, 1, "certificate-host-mismatch"},
	}
	for d, w := range want {
		r := got[d]
		if len(r.Policies) != 1 {
			t.Errorf("report of %s: %+v, want one policy", d, r)
			continue
		}
		p := r.Policies[0]
		c := counts{p.Policy.Type, p.Summary.Success, p.Summary.Failure, ""}
		if len(p.Details) > 0 {
			c.result = p.Details[0].ResultType
		}
		if c != w {
			t.Errorf("report of %s counts %+v, want %+v", d, c, w)
		}
	}
}

// reportJSON returns the JSON of the application/tlsrpt+gzip part of a
// report message (RFC 8460 §5.3).
func reportJSON(t *testing.T, message string) []byte {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(message))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(m.Header.Get("Subject"), "Report Domain: ") || m.Header.Get("TLS-Report-Domain") == "" {
		t.Errorf("report headers: Subject %q, TLS-Report-Domain %q", m.Header.Get("Subject"), m.Header.Get("TLS-Report-Domain"))
	}
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no application/tlsrpt+gzip part: %v\n%s", err, message)
		}
		if mt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type")); mt != "application/tlsrpt+gzip" {
			continue
		}
		raw, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, p))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		js, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
}
