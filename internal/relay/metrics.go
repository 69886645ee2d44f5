package relay

import "github.com/prometheus/client_golang/prometheus"

// Metrics count the relay's requests by operation and result ("ok", an
// error code, "refused"), and those dropped unserved by reason
// (op "dropped": rate_limited, queue_full, foreign_reply, bad_subject,
// too_many_devices).
type Metrics struct {
	requests *prometheus.CounterVec
}

// NewMetrics returns the relay's metrics; register them with Collectors.
func NewMetrics() *Metrics {
	return &Metrics{requests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "harmony_relay_requests_total",
		Help: "Devices' relayed store requests by operation and result; op=dropped counts those refused unserved, by reason.",
	}, []string{"op", "result"})}
}

// Collectors are the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector { return []prometheus.Collector{m.requests} }
