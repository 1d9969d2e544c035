package control

import (
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"smtpd/proto"
)

// MetricPrefix starts the name of every metric.
const MetricPrefix = "smtpd_"

// MetricName is the metric of a counter key: "smtp.session.inet4" is
// smtpd_smtp_session_inet4.
func MetricName(key string) string {
	return MetricPrefix + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, key)
}

// ServeMetrics serves the counters on l at /metrics, in the OpenMetrics
// or Prometheus text format as the scraper asks, until l is closed.
func (s *Server) ServeMetrics(l net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	if err := srv.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	format := expfmt.NegotiateIncludingOpenMetrics(r.Header)
	w.Header().Set("Content-Type", string(format))
	enc := expfmt.NewEncoder(w, format)
	for _, v := range s.values() {
		// the counters mix totals and current levels (sessions open,
		// envelopes queued): all are gauges, which both can be
		help := "smtpctl show stats: " + v.Key
		name := MetricName(v.Key)
		value := float64(v.Value)
		if err := enc.Encode(&dto.MetricFamily{
			Name: &name, Help: &help, Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: &value}}},
		}); err != nil {
			s.logf("metrics: %v", err)
			return
		}
	}
	if c, ok := enc.(io.Closer); ok {
		c.Close()
	}
}

// values are the counters and the uptime, sorted by key.
func (s *Server) values() []proto.StatValue {
	values := s.Stats.Snapshot()
	i, _ := slices.BinarySearchFunc(values, "uptime", func(v proto.StatValue, key string) int { return strings.Compare(v.Key, key) })
	return slices.Insert(values, i, proto.StatValue{Key: "uptime", Value: int64(time.Since(s.Started) / time.Second)})
}
