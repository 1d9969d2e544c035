package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"regexp"
	"strings"
	"testing"
	"time"
)

// checkLines checks that msg has CRLF line ends only, and lines of at
// most 78 characters.
func checkLines(t *testing.T, msg []byte) {
	t.Helper()
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Error("message does not end in CRLF")
	}
	for i, line := range strings.Split(strings.TrimSuffix(string(msg), "\r\n"), "\r\n") {
		if strings.ContainsAny(line, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, line)
		}
		if len(line) > maxLine {
			t.Errorf("line %d is %d characters long: %q", i+1, len(line), line)
		}
	}
}

// parseMessage reads msg back as a mail reader would: the header, the
// text part and the report attachment, gunzipped and decoded.
func parseMessage(t *testing.T, msg []byte) (*mail.Message, string, *Report) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("Content-Type %q: %s %v %v", m.Header.Get("Content-Type"), mt, params, err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])

	text, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if ct := text.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("first part is %q, want text/plain", ct)
	}
	body, _ := io.ReadAll(text)

	att, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if ct := att.Header.Get("Content-Type"); ct != "application/tlsrpt+gzip" {
		t.Errorf("second part is %q", ct)
	}
	if cte := att.Header.Get("Content-Transfer-Encoding"); cte != "base64" {
		t.Errorf("second part in %q", cte)
	}
	if d, _, err := mime.ParseMediaType(att.Header.Get("Content-Disposition")); err != nil || d != "attachment" {
		t.Errorf("Content-Disposition %q: %v", att.Header.Get("Content-Disposition"), err)
	}
	gz, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, att))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.NewDecoder(zr).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Errorf("a third part, or %v", err)
	}
	return m, string(body) + "\x00" + att.FileName(), &r
}

func TestMessage(t *testing.T) {
	r := sampleReport(t)
	gz, err := Gzip(r)
	if err != nil {
		t.Fatal(err)
	}
	now := at("2024-05-02T03:04:05Z")
	msg, err := Message(r, gz, "TLS reports <noreply-tlsrpt@sender.example>", "tlsrpt@example.com", "sender.example", now)
	if err != nil {
		t.Fatal(err)
	}
	checkLines(t, msg)
	m, rest, got := parseMessage(t, msg)
	text, filename, _ := strings.Cut(rest, "\x00")

	h := m.Header
	wantSubject := "Report Domain: example.com Submitter: sender.example Report-ID: <" + r.ReportID + ">"
	for name, want := range map[string]string{
		"Subject":              wantSubject,
		"TLS-Report-Domain":    "example.com",
		"TLS-Report-Submitter": "sender.example",
		"MIME-Version":         "1.0",
		"To":                   "<tlsrpt@example.com>",
		"From":                 `"TLS reports" <noreply-tlsrpt@sender.example>`,
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if d, err := h.Date(); err != nil || !d.Equal(now) {
		t.Errorf("Date %q: %v", h.Get("Date"), err)
	}
	if !regexp.MustCompile(`^<[A-Z0-9]+@sender\.example>$`).MatchString(h.Get("Message-ID")) {
		t.Errorf("Message-ID %q", h.Get("Message-ID"))
	}
	if !strings.Contains(text, "example.com") || !strings.Contains(text, "sender.example") {
		t.Errorf("text part %q names neither domain nor submitter", text)
	}
	re := regexp.MustCompile(`^sender\.example!example\.com!1714521600!1714607999![0-9a-f]{8}\.json\.gz$`)
	if !re.MatchString(filename) {
		t.Errorf("attachment file name %q", filename)
	}

	want, _ := json.Marshal(r)
	have, _ := json.Marshal(got)
	if !bytes.Equal(want, have) {
		t.Errorf("report read back differs:\n%s\n%s", have, want)
	}

	// the same report makes the same file name, another day another
	msg2, _ := Message(r, gz, "noreply-tlsrpt@sender.example", "tlsrpt@example.com", "sender.example", now)
	if _, rest2, _ := parseMessage(t, msg2); !strings.HasSuffix(rest2, filename) {
		t.Errorf("file name changed for the same report")
	}
	if bytes.Equal(msg, msg2) {
		t.Errorf("two messages share Message-ID and boundary")
	}
}

func TestMessageLongNames(t *testing.T) {
	label := strings.Repeat("a", 63)
	long := strings.Join([]string{label, label, label, "example"}, ".")
	r := &Report{
		OrganizationName: "x",
		DateRange:        DateRange{Start: at("2024-05-01T00:00:00Z"), End: at("2024-05-01T23:59:59Z")},
		ContactInfo:      "r@" + long,
		ReportID:         "2024-05-01.0123456789abcdef." + long + "@" + long,
		Policies:         []PolicyResult{{Policy: Policy{Type: PolicyNone, Domain: long}, Summary: Summary{1, 0}}},
	}
	gz, err := Gzip(r)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := Message(r, gz, "noreply@"+long, "tlsrpt@"+long, long, at("2024-05-02T00:00:00Z"))
	if err != nil {
		t.Fatal(err)
	}
	// header words longer than a line cannot be folded; all else can
	for i, line := range strings.Split(string(msg), "\r\n") {
		if len(line) > maxLine && !strings.Contains(line, long) {
			t.Errorf("line %d is %d characters long: %q", i+1, len(line), line)
		}
	}
	m, rest, _ := parseMessage(t, msg)
	_, filename, _ := strings.Cut(rest, "\x00")
	if !strings.HasPrefix(filename, long+"!"+long+"!1714521600!1714607999!") {
		t.Errorf("file name from RFC 2231 continuations: %q", filename)
	}
	want := fmt.Sprintf("Report Domain: %s Submitter: %s Report-ID: <%s>", long, long, r.ReportID)
	if got := m.Header.Get("Subject"); got != want {
		t.Errorf("folded Subject read back as %q", got)
	}
}

func TestMessageErrors(t *testing.T) {
	r := sampleReport(t)
	gz, _ := Gzip(r)
	mixed := *r
	mixed.Policies = append([]PolicyResult{{Policy: Policy{Type: PolicyNone, Domain: "example.org"}}}, r.Policies...)
	badID := *r
	badID.ReportID = "a b@c"
	newline := *r
	newline.ReportID = "x@y\r\nBcc: z@example.org"
	tests := []struct {
		name                string
		r                   *Report
		gz                  []byte
		from, to, submitter string
	}{
		{"nil report", nil, gz, "a@sender.example", "b@example.com", "sender.example"},
		{"no data", r, nil, "a@sender.example", "b@example.com", "sender.example"},
		{"bad from", r, gz, "nobody", "b@example.com", "sender.example"},
		{"bad to", r, gz, "a@sender.example", "", "sender.example"},
		{"bad submitter", r, gz, "a@sender.example", "b@example.com", "sender example"},
		{"submitter with line break", r, gz, "a@sender.example", "b@example.com", "sender.example\r\nX: y"},
		{"submitter not the contact's domain", r, gz, "a@sender.example", "b@example.com", "other.example"},
		{"mixed domains", &mixed, gz, "a@sender.example", "b@example.com", "sender.example"},
		{"report-id with space", &badID, gz, "a@sender.example", "b@example.com", "sender.example"},
		{"report-id with line break", &newline, gz, "a@sender.example", "b@example.com", "sender.example"},
	}
	for _, tt := range tests {
		if msg, err := Message(tt.r, tt.gz, tt.from, tt.to, tt.submitter, time.Now()); err == nil {
			t.Errorf("%s: no error; message:\n%s", tt.name, msg)
		}
	}
}

func TestPost(t *testing.T) {
	gz, err := Gzip(sampleReport(t))
	if err != nil {
		t.Fatal(err)
	}
	status := http.StatusOK
	var got []byte
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost || req.URL.Path != "/v1/tlsrpt" {
			http.Error(w, "wrong method or path", http.StatusBadRequest)
			return
		}
		if ct := req.Header.Get("Content-Type"); ct != "application/tlsrpt+gzip" {
			http.Error(w, "wrong type "+ct, http.StatusUnsupportedMediaType)
			return
		}
		got, _ = io.ReadAll(req.Body)
		w.WriteHeader(status)
	}))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake the default client fails
	ts.StartTLS()
	defer ts.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := ts.URL + "/v1/tlsrpt"

	for _, status = range []int{http.StatusOK, http.StatusCreated, http.StatusAccepted, http.StatusNoContent} {
		got = nil
		if err := Post(ctx, ts.Client(), url, gz); err != nil {
			t.Errorf("status %d: %v", status, err)
		}
		if !bytes.Equal(got, gz) {
			t.Errorf("status %d: the server got %d bytes, not the report", status, len(got))
		}
	}
	for _, status = range []int{http.StatusBadRequest, http.StatusInternalServerError, http.StatusServiceUnavailable} {
		if err := Post(ctx, ts.Client(), url, gz); err == nil || !strings.Contains(err.Error(), fmt.Sprint(status)) {
			t.Errorf("status %d: %v", status, err)
		}
	}
	status = http.StatusOK
	if err := Post(ctx, ts.Client(), ts.URL+"/elsewhere", gz); err == nil {
		t.Error("a 400 answer was taken for success")
	}
	if err := Post(ctx, ts.Client(), strings.Replace(url, "https:", "http:", 1), gz); err == nil {
		t.Error("POST to an http: URL")
	}
	if err := Post(ctx, nil, url, gz); err == nil {
		t.Error("POST with the default client trusted the test server's certificate")
	}
	canceled, cancelNow := context.WithCancel(ctx)
	cancelNow()
	if err := Post(canceled, ts.Client(), url, gz); err == nil {
		t.Error("POST with a canceled context succeeded")
	}
}
