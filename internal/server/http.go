package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/harmony-fleet/harmony/api/httpapi"
	"github.com/harmony-fleet/harmony/internal/buildinfo"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/operator"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/web"
)

type handler struct {
	nc   *nats.Conn
	st   store.Store
	dash *web.Dashboard
	js   jetstream.JetStream
	op   *operator.Operator
	kvs  map[string]store.KV
	reg  *identity.Registry
	cfg  config.Server
	mux  *http.ServeMux
	log  *slog.Logger
	// promReg is /metrics' registry.
	promReg *prometheus.Registry

	mu         sync.Mutex
	staleSince time.Time // zero while the store answers
	probeErr   error     // why the last probe failed
}

// probeStore asks the store every second whether it answers; while it does
// not, the API keeps serving the operator's last view, marked stale.
func (h *handler) probeStore(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		var err error
		if h.nc.IsConnected() {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = h.js.AccountInfo(pctx)
			cancel()
		} else {
			err = errors.New("not connected to NATS (" + h.nc.Status().String() + ")")
		}
		if ctx.Err() != nil {
			return
		}
		ok := err == nil
		h.mu.Lock()
		h.probeErr = err
		switch {
		case !ok && h.staleSince.IsZero():
			h.staleSince = time.Now()
			h.log.Warn("store unreachable: serving the last view, marked stale")
		case ok && !h.staleSince.IsZero():
			h.log.Info("store reachable again", "stale_for", time.Since(h.staleSince).Round(time.Millisecond))
			h.staleSince = time.Time{}
		}
		h.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// stale: when the view stopped being confirmed by the store (zero: it is
// current).
func (h *handler) stale() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.staleSince.IsZero() && !h.nc.IsConnected() {
		return time.Now() // the link dropped since the last probe
	}
	return h.staleSince
}

func newHandler(nc *nats.Conn, ns *mesh.Server, st store.Store, op *operator.Operator, gc *store.Lease, kvs map[string]store.KV, cfg config.Server, dash *web.Dashboard, log *slog.Logger) *handler {
	js, _ := jetstream.New(nc) // cannot fail for a non-nil connection
	h := &handler{nc: nc, st: st, dash: dash, js: js, op: op, kvs: kvs, cfg: cfg, mux: http.NewServeMux(), log: log,
		reg: &identity.Registry{KV: kvs[cfg.Buckets.Identities], Keys: &identity.Keys{}}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "harmony_build_info", Help: "Build of the running server (always 1).",
			ConstLabels: prometheus.Labels{"version": buildinfo.Version, "commit": buildinfo.Commit, "goversion": buildinfo.GoVersion()},
		}, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "harmony_nats_connected", Help: "1 while the server's NATS connection is up.",
		}, func() float64 { return b2f(nc.IsConnected()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "harmony_operator_converged", Help: "1 once the operator has rebuilt its view from the store.",
		}, func() float64 { return b2f(op.Phase() == operator.Converged) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "harmony_operator_desired_writes_total", Help: "Desired-state values this operator wrote or deleted.",
		}, func() float64 { _, w := op.Stats(); return float64(w) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "harmony_operator_render_passes_total", Help: "Render passes of this operator.",
		}, func() float64 { r, _ := op.Stats(); return float64(r) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "harmony_server_lease_held", Help: "1 while this server holds the lease (and collects orphaned desired state).",
			ConstLabels: prometheus.Labels{"lease": "orphan-gc"},
		}, func() float64 { return b2f(gc.Held()) }),
		&bucketCollector{op: op, desc: prometheus.NewDesc("harmony_bucket_keys", "Live keys per fleet bucket in the operator's view.", []string{"bucket"}, nil)},
	)
	if ns != nil {
		reg.MustRegister(newNATSCollector(ns.NATS()))
	}
	h.promReg = reg
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	h.routesAPI()
	h.mux.HandleFunc("/api/", h.noRoute) // the API's own 404 and 405, in JSON
	h.mux.Handle("/", dash)              // every other path is the dashboard's
	return h
}

// ServeHTTP checks the API's bearer token and marks every answer given
// while the store is unreachable with the header X-Harmony-Stale-Since.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/api/") && !enrollPath(r) {
		tok, ok := authorizeAPI(h.dash, w, r)
		if !ok {
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), tokenNameKey{}, tok.Name))
	}
	if since := h.stale(); !since.IsZero() {
		w.Header().Set("X-Harmony-Stale-Since", since.UTC().Format(time.RFC3339))
	}
	h.mux.ServeHTTP(w, r)
}

// authorizeAPI lets a request through when its bearer token's role allows
// it: any role may read (GET, HEAD), only admin may change (apply, delete,
// label, exec). Otherwise it answers 401, 403 or 429 and returns false.
func authorizeAPI(dash *web.Dashboard, w http.ResponseWriter, r *http.Request) (web.Token, bool) {
	tok, err := dash.Authenticate(r)
	switch {
	case errors.Is(err, web.ErrRateLimited):
		apiError(w, httpapi.Errorf(httpapi.CodeRateLimited, "%v", err))
		return tok, false
	case err != nil:
		w.Header().Set("WWW-Authenticate", `Bearer realm="harmony"`)
		apiError(w, httpapi.Errorf(httpapi.CodeUnauthorized, "%v", err))
		return tok, false
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && tok.Role != web.Admin {
		apiError(w, httpapi.Errorf(httpapi.CodeForbidden,
			"token %q is a %s: only admin tokens may apply, delete, label, exec, create enrollment tokens, approve or revoke", tok.Name, tok.Role))
		return tok, false
	}
	return tok, true
}

// enrollPath reports the two calls a device makes without a bearer token
// (httpapi.NoToken): its enrollment request and the question whether it
// was approved.
func enrollPath(r *http.Request) bool {
	return (r.Method == http.MethodPost && r.URL.Path == httpapi.Path(httpapi.RouteEnroll)) ||
		(r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, httpapi.Path(httpapi.RouteEnroll)+"/"))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// healthz: the process is alive and serving.
func (h *handler) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}

// readiness lists why the server is not ready; empty means ready.
func (h *handler) readiness() []string {
	var reasons []string
	if !h.nc.IsConnected() {
		reasons = append(reasons, "store: not connected to NATS ("+h.nc.Status().String()+")")
	} else if since := h.stale(); !since.IsZero() {
		// The store probe (every second) found JetStream not answering.
		h.mu.Lock()
		err := h.probeErr
		h.mu.Unlock()
		reasons = append(reasons, fmt.Sprintf("store: JetStream not answering since %s: %v", since.UTC().Format(time.RFC3339), err))
	}
	if h.op.Phase() != operator.Converged {
		reasons = append(reasons, "operator: "+string(h.op.Phase())+": "+h.op.Progress())
	}
	return reasons
}

// readyz: 200 only when the store answers and the operator has converged.
func (h *handler) readyz(w http.ResponseWriter, r *http.Request) {
	reasons := h.readiness()
	body := map[string]any{"ready": len(reasons) == 0, "operator": h.op.Phase()}
	if len(reasons) > 0 {
		body["reasons"] = reasons
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

type bucketCollector struct {
	op   *operator.Operator
	desc *prometheus.Desc
}

func (c *bucketCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *bucketCollector) Collect(ch chan<- prometheus.Metric) {
	for b, n := range c.op.Counts() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), b)
	}
}
