package regress

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"smtpd/internal/control"
)

// TestStatsScripted: after a scripted run (three sessions, three
// messages: one to a maildir, one to an mda command, one that fails and
// is bounced to its sender's maildir) the counters of sessions,
// envelopes, deliveries and bounces are exactly the expected ones, in
// `show stats`, `show stats --json` and the metrics endpoint.
func TestStatsScripted(t *testing.T) {
	dir, _ := WriteConfig(t, "")
	if err := os.WriteFile(filepath.Join(dir, "deliver.sh"), []byte(deliverScript), 0o755); err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	conf := strings.Replace(DefaultConfig+mdaConfig, "spool          = \"spool\"", "spool          = \"spool\"\nlisten_metrics = \""+metrics+"\"", 1)
	d := StartWith(t, bin, Options{Config: conf, Dir: dir})
	for _, rcpt := range []string{"anyone@example.test", "ok@cmd.example.test", "fail@cmd.example.test"} {
		swaks(t, "--server", d.SMTPAddr, "--helo", "client.example.net", "--from", "author@example.test", "--to", rcpt, "--body", "counted")
	}
	d.WaitStat("scheduler.delivery.ok", "3", 15*time.Second)
	d.WaitStat("scheduler.envelope", "0", 5*time.Second)
	time.Sleep(300 * time.Millisecond) // the last batches of counters

	want := map[string]string{
		"smtp.session":                "0",
		"smtp.session.inet4":          "0",
		"smtp.session.total":          "3",
		"smtp.message":                "3",
		"lookup.expand.ok":            "4",
		"queue.message":               "4", // with the bounce
		"queue.bounce":                "1",
		"scheduler.envelope":          "0",
		"scheduler.delivery.ok":       "3",
		"scheduler.delivery.permfail": "1",
		"mda.envelope":                "4",
		"mda.running":                 "0",
	}
	got := map[string]string{}
	for k, v := range d.Stats() {
		// frames, uptime, control sessions, commit batches and the
		// delivery processes of the pool depend on timing, not on the
		// mail
		if strings.Contains(k, ".ipc.") || strings.HasPrefix(k, "uptime") || strings.HasPrefix(k, "control.") || k == "queue.commit.batch" || k == "mda.process" {
			continue
		}
		got[k] = v
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stats:\n got %v\nwant %v", got, want)
	}
	all := d.Stats()

	out, _, code := d.Smtpctl("show", "stats", "--json")
	var js map[string]any
	if err := json.Unmarshal([]byte(out), &js); code != 0 || err != nil {
		t.Fatalf("show stats --json: %d %v %q", code, err, out)
	}
	for k, v := range want {
		if fmt.Sprint(js[k]) != v {
			t.Errorf("json %s = %v, want %s", k, js[k], v)
		}
	}

	for _, accept := range []string{"", "application/openmetrics-text;version=1.0.0"} {
		req, _ := http.NewRequest("GET", "http://"+metrics+"/metrics", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		format := expfmt.ResponseFormat(resp.Header)
		dec := expfmt.NewDecoder(resp.Body, format)
		values := map[string]string{}
		for {
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			values[mf.GetName()] = fmt.Sprint(mf.Metric[0].GetGauge().GetValue())
		}
		resp.Body.Close()
		if accept != "" && format.FormatType() != expfmt.TypeOpenMetrics {
			t.Errorf("asked for OpenMetrics, got %s", format)
		}
		var keys []string
		for k, v := range all {
			if strings.HasPrefix(k, "uptime") || strings.Contains(k, ".ipc.") || k == "control.session" {
				continue // these move between the two reads
			}
			keys = append(keys, k)
			if values[control.MetricName(k)] != v {
				t.Errorf("%s: %s = %q, want %s", format, control.MetricName(k), values[control.MetricName(k)], v)
			}
		}
		sort.Strings(keys)
		if len(values) < len(keys) {
			t.Errorf("%s: %d metrics for %d counters", format, len(values), len(keys))
		}
	}
}
