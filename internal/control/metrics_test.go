package control

import "testing"

func TestMetricName(t *testing.T) {
	for key, want := range map[string]string{
		"smtp.session.inet4":          "smtpd_smtp_session_inet4",
		"uptime":                      "smtpd_uptime",
		"mta.route.127.0.0.2-x":       "smtpd_mta_route_127_0_0_2_x",
		"scheduler.delivery.permfail": "smtpd_scheduler_delivery_permfail",
	} {
		if got := MetricName(key); got != want {
			t.Errorf("MetricName(%q) = %q, want %q", key, got, want)
		}
	}
}
