package failover

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// memberView is the JSON body of the health endpoints.
type memberView struct {
	Cluster  string     `json:"cluster"`
	Node     string     `json:"node"`
	Status   Status     `json:"status"`
	Failing  ActionKind `json:"failing,omitempty"`
	Primary  string     `json:"primary"`
	Epoch    uint64     `json:"epoch"`
	Paused   bool       `json:"paused,omitempty"`
	Healthy  bool       `json:"healthy"`
	LSN      uint64     `json:"lsn"`
	Timeline uint32     `json:"timeline,omitempty"`
}

// Handler serves the load-balancer checks and the metrics of this member:
//
//	GET /primary  200 only while this node is the serving primary
//	GET /replica  200 only while it is a healthy replica
//	GET /health   200 while its PostgreSQL answers, whatever its role
//	GET /metrics  Prometheus
func (l *Loop) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(l.collector())
	mux := http.NewServeMux()
	check := func(ok func(Snapshot) bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			s := l.Snapshot()
			code := http.StatusServiceUnavailable
			if ok(s) {
				code = http.StatusOK
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(memberView{Cluster: l.cfg.Cluster, Node: l.cfg.Node, Status: s.Node.Status, Failing: s.Node.Failing,
				Primary: s.Node.CS.Primary, Epoch: s.Node.CS.Epoch, Paused: s.Node.CS.Paused, Healthy: s.Healthy,
				LSN: s.Pos.LSN, Timeline: s.Pos.Timeline})
		}
	}
	mux.Handle("GET /primary", check(func(s Snapshot) bool { return s.Node.Status == StatusPrimary && s.Healthy }))
	mux.Handle("GET /replica", check(func(s Snapshot) bool { return s.Node.Status == StatusReplica && s.Healthy }))
	mux.Handle("GET /health", check(func(s Snapshot) bool { return s.Healthy }))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

var allStatuses = []Status{StatusStarting, StatusPrimary, StatusFencing, StatusFenced, StatusReplica,
	StatusPromoting, StatusActivating, StatusFailed}

type loopCollector struct {
	l                                                       *Loop
	role, state, epoch, transitions, lastFailover, diverged *prometheus.Desc
	failsafe, promises, guardFed, guardErrors, guardFired   *prometheus.Desc
	covered, promised, guardArmed                           *prometheus.Desc
}

func (l *Loop) collector() prometheus.Collector {
	labels := prometheus.Labels{"cluster": l.cfg.Cluster, "node": l.cfg.Node}
	d := func(name, help string, variable ...string) *prometheus.Desc {
		return prometheus.NewDesc("harmony_failover_"+name, help, variable, labels)
	}
	return &loopCollector{l: l,
		role:         d("role", "1 for the role this node holds (primary or replica).", "role"),
		state:        d("state", "1 for the workflow state this node is in.", "state"),
		epoch:        d("epoch", "The cluster epoch this node knows."),
		transitions:  d("transitions_total", "State transitions of this node's failover workflow."),
		lastFailover: d("last_failover_duration_seconds", "From the last advance of the old primary's heartbeat seen here to this node serving writes, for the last failover it won."),
		diverged:     d("diverged_transactions_total", "Transactions discarded when this node rejoined after serving cut off (SplitBrainAllowed)."),
		failsafe: d("failsafe_total", "Failsafe outcomes of this primary while the store was away: held (a beat found every promotable peer's promise) "+
			"or lost (a fence because the store and the promises were both missing).", "outcome"),
		covered:     d("failsafe_covered", "1 while this primary serves on its peers' promises (the store away)."),
		promises:    d("promises_total", "Failsafe requests of primaries this node answered, by answer.", "answer"),
		promised:    d("promised_seconds", "How long this node remains bound by a promise not to promote (0: none)."),
		guardFed:    d("guard_fed_total", "Renewals of the serving deadline the guard acknowledged."),
		guardErrors: d("guard_errors_total", "Renewals the guard could not be told."),
		guardFired:  d("guard_fired_total", "Fences the guard carried out since it started (its agent did not renew in time)."),
		guardArmed:  d("guard_armed", "1 while the guard would stop PostgreSQL at a deadline."),
	}
}

func (c *loopCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.role, c.state, c.epoch, c.transitions, c.lastFailover, c.diverged,
		c.failsafe, c.covered, c.promises, c.promised, c.guardFed, c.guardErrors, c.guardFired, c.guardArmed} {
		ch <- d
	}
}

func (c *loopCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.l.Snapshot()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	primary := s.Node.CS.Primary == c.l.cfg.Node && s.Node.MayServe()
	ch <- prometheus.MustNewConstMetric(c.role, prometheus.GaugeValue, b(primary), "primary")
	ch <- prometheus.MustNewConstMetric(c.role, prometheus.GaugeValue, b(s.Node.Status == StatusReplica), "replica")
	for _, st := range allStatuses {
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, b(s.Node.Status == st), string(st))
	}
	ch <- prometheus.MustNewConstMetric(c.epoch, prometheus.GaugeValue, float64(s.Node.CS.Epoch))
	ch <- prometheus.MustNewConstMetric(c.transitions, prometheus.CounterValue, float64(s.Stats.Transitions))
	ch <- prometheus.MustNewConstMetric(c.lastFailover, prometheus.GaugeValue, s.Stats.LastFailover.Seconds())
	ch <- prometheus.MustNewConstMetric(c.diverged, prometheus.CounterValue, float64(s.Stats.Diverged))
	ch <- prometheus.MustNewConstMetric(c.failsafe, prometheus.CounterValue, float64(s.Stats.FailsafeHeld), "held")
	ch <- prometheus.MustNewConstMetric(c.failsafe, prometheus.CounterValue, float64(s.Stats.FailsafeLost), "lost")
	now := Now()
	ch <- prometheus.MustNewConstMetric(c.covered, prometheus.GaugeValue, b(s.Node.Covered && s.Node.CoveredUntil > now && s.Node.Failures > 0))
	ch <- prometheus.MustNewConstMetric(c.promises, prometheus.CounterValue, float64(s.Stats.PromisesGiven), "given")
	ch <- prometheus.MustNewConstMetric(c.promises, prometheus.CounterValue, float64(s.Stats.PromisesRefused), "refused")
	ch <- prometheus.MustNewConstMetric(c.promised, prometheus.GaugeValue, max(0, (s.Node.PromisedUntil-now).Seconds()))
	ch <- prometheus.MustNewConstMetric(c.guardFed, prometheus.CounterValue, float64(s.Stats.GuardArmed))
	ch <- prometheus.MustNewConstMetric(c.guardErrors, prometheus.CounterValue, float64(s.Stats.GuardErrors))
	if st, ok := c.l.guardStatus(); ok {
		ch <- prometheus.MustNewConstMetric(c.guardFired, prometheus.CounterValue, float64(st.Fired))
		ch <- prometheus.MustNewConstMetric(c.guardArmed, prometheus.GaugeValue, b(st.Armed))
	}
}
