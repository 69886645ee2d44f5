package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sony/gobreaker/v2"

	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/store"
)

// retryPolicy is the agent's capped exponential backoff with jitter toward
// the mesh (from its config). It never gives up.
type retryPolicy struct {
	initial, max time.Duration
	mult, jitter float64
	retries      *prometheus.CounterVec
}

// resourceRetry paces a failing resource (retry_initial up to retry_max,
// doubling, +/-20 %).
func resourceRetry(cfg config.Agent) retryPolicy {
	return retryPolicy{initial: cfg.RetryInitial.Std(), max: cfg.RetryMax.Std(), mult: 2, jitter: 0.2}
}

func (p retryPolicy) backoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = p.initial
	b.MaxInterval = p.max
	b.Multiplier = p.mult
	b.RandomizationFactor = p.jitter
	b.Reset()
	return b
}

func (p retryPolicy) retried(what string) {
	if p.retries != nil {
		p.retries.WithLabelValues(what).Inc()
	}
}

// retryForever calls f until it succeeds or ctx ends, pausing by the policy
// between attempts.
func (p retryPolicy) retryForever(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	bo := p.backoff()
	for {
		err := f()
		if err == nil {
			return nil
		}
		p.retried(what)
		wait := bo.NextBackOff()
		log.Debug(what+" failed; retrying", "err", err, "after", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}

// health is what /health reports, kept up to date by the parts that know.
type health struct {
	mu        sync.Mutex
	connected bool
	lostAt    time.Time // when the mesh link was lost (zero: never lost)
	lastBeat  time.Time // the last heartbeat the store acknowledged
	watchLive bool      // the desired-state watch runs
	breaker   gobreaker.State
	reconnect chan struct{} // signalled on every reconnection
}

func newHealth() *health { return &health{reconnect: make(chan struct{}, 1), lostAt: time.Now()} }

// confirmedFile keeps, across restarts, when the desired state was last
// known current (written at stop and when the link drops).
const confirmedFile = "desired-confirmed-at"

// restore starts the desired-state age from the last confirmation a
// previous run recorded (a crash leaves an older one: the age errs long).
func (h *health) restore(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, confirmedFile))
	if err != nil {
		return
	}
	if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b))); err == nil {
		h.mu.Lock()
		h.lostAt = t
		h.mu.Unlock()
	}
}

// record writes when the desired state was last known current.
func (h *health) record(dir string) {
	h.mu.Lock()
	at := h.lostAt
	if h.connected && h.watchLive {
		at = time.Now()
	}
	h.mu.Unlock()
	tmp := filepath.Join(dir, confirmedFile+".tmp")
	if os.WriteFile(tmp, []byte(at.UTC().Format(time.RFC3339Nano)+"\n"), 0o600) == nil {
		_ = os.Rename(tmp, filepath.Join(dir, confirmedFile))
	}
}

func (h *health) setConnected(c bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.connected && !c {
		h.lostAt = time.Now()
	}
	h.connected = c
	if c {
		select {
		case h.reconnect <- struct{}{}:
		default:
		}
	}
}

func (h *health) beat() {
	h.mu.Lock()
	h.lastBeat = time.Now()
	h.mu.Unlock()
}

func (h *health) setWatch(live bool) {
	h.mu.Lock()
	h.watchLive = live
	h.mu.Unlock()
}

func (h *health) setBreaker(s gobreaker.State) {
	h.mu.Lock()
	h.breaker = s
	h.mu.Unlock()
}

// healthView is the JSON of GET /health.
type healthView struct {
	Device        string `json:"device"`
	MeshConnected bool   `json:"mesh_connected"`
	LastHeartbeat string `json:"last_heartbeat,omitempty"`
	// HeartbeatAge is null until the store acknowledged a first heartbeat.
	HeartbeatAge *float64 `json:"heartbeat_age_seconds"`
	Breaker      string   `json:"breaker"`
	// DesiredStateAge: 0 while the desired-state watch is live and the
	// mesh connected; otherwise how long the local copy has gone unconfirmed.
	DesiredStateAge float64 `json:"desired_state_age_seconds"`
	PendingStatus   int     `json:"pending_status_writes"`
}

func (a *Agent) healthView() healthView {
	h := a.health
	h.mu.Lock()
	defer h.mu.Unlock()
	v := healthView{Device: a.cfg.ID}
	v.MeshConnected = h.connected
	v.Breaker = h.breaker.String()
	if !h.lastBeat.IsZero() {
		v.LastHeartbeat = h.lastBeat.UTC().Format(time.RFC3339Nano)
		age := time.Since(h.lastBeat).Seconds()
		v.HeartbeatAge = &age
	}
	if !(h.connected && h.watchLive) {
		v.DesiredStateAge = time.Since(h.lostAt).Seconds()
	}
	v.PendingStatus = len(a.status.pending())
	return v
}

// agentMetrics are the agent's Prometheus metrics (one registry per agent,
// so several agents can live in one process).
type agentMetrics struct {
	reg         *prometheus.Registry
	reconnects  prometheus.Counter
	disconnects prometheus.Counter
	retries     *prometheus.CounterVec
	breaker     *prometheus.GaugeVec
}

func newAgentMetrics(a *Agent) *agentMetrics {
	m := &agentMetrics{reg: prometheus.NewRegistry(),
		reconnects:  prometheus.NewCounter(prometheus.CounterOpts{Name: "harmony_agent_reconnects_total", Help: "Times the mesh link came back."}),
		disconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "harmony_agent_outages_total", Help: "Times the mesh link was lost."}),
		retries:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "harmony_agent_retries_total", Help: "Retried calls to the mesh, by operation."}, []string{"operation"}),
		breaker:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "harmony_agent_breaker_state", Help: "1 for the circuit breaker's current state."}, []string{"state"}),
	}
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "harmony_agent_mesh_connected", Help: "1 while the mesh link is up."}, func() float64 {
		if a.healthView().MeshConnected {
			return 1
		}
		return 0
	})
	beatAge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "harmony_agent_heartbeat_age_seconds", Help: "Since the last heartbeat the store acknowledged (-1: none yet)."}, func() float64 {
		if age := a.healthView().HeartbeatAge; age != nil {
			return *age
		}
		return -1
	})
	m.reg.MustRegister(m.reconnects, m.disconnects, m.retries, m.breaker, connected, beatAge, collectors.NewGoCollector())
	for _, s := range []gobreaker.State{gobreaker.StateClosed, gobreaker.StateHalfOpen, gobreaker.StateOpen} {
		m.breaker.WithLabelValues(s.String()).Set(0)
	}
	m.breaker.WithLabelValues(gobreaker.StateClosed.String()).Set(1)
	return m
}

// serveHTTP serves /health and /metrics until ctx ends.
func (a *Agent) serveHTTP(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		v := a.healthView()
		code := http.StatusOK
		if !v.MeshConnected {
			code = http.StatusServiceUnavailable // alive, working from its cache
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{}))
	return serve(ctx, ln, mux)
}

// serve serves h on ln until ctx ends, then shuts down gracefully.
func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// breakerKV puts a circuit breaker in front of a bucket's calls, so a
// struggling server is not hammered: after BreakerFailures consecutive
// failures (the server not answering; "not found" and conflicts are
// answers), calls fail at once for BreakerOpen, then one probe decides.
// Watches pass through.
type breakerKV struct {
	store.KV
	cb *gobreaker.CircuitBreaker[any]
}

func newBreaker(name string, failures int, open time.Duration, onChange func(from, to gobreaker.State)) *gobreaker.CircuitBreaker[any] {
	return gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Timeout:     open,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(failures) },
		IsSuccessful: func(err error) bool {
			return err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) ||
				errors.Is(err, store.ErrInvalidKey) || errors.Is(err, context.Canceled)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) { onChange(from, to) },
	})
}

func breakerErr(err error) error {
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return fmt.Errorf("%w: circuit breaker %v", store.ErrUnavailable, err)
	}
	return err
}

// beater is a KV that takes heartbeats as beats: the relay, which
// records them in its presence records instead of writing a key.
type beater interface {
	Beat(ctx context.Context, key string, value []byte) error
}

// errNoBeats: the KV under the breaker takes no beats (write the key).
var errNoBeats = errors.New("agent: the store takes no beats")

func (b breakerKV) Beat(ctx context.Context, key string, value []byte) error {
	bt, ok := b.KV.(beater)
	if !ok {
		return errNoBeats
	}
	_, err := b.cb.Execute(func() (any, error) { return nil, bt.Beat(ctx, key, value) })
	return breakerErr(err)
}

func (b breakerKV) Get(ctx context.Context, key string) (store.Entry, error) {
	v, err := b.cb.Execute(func() (any, error) { return b.KV.Get(ctx, key) })
	e, _ := v.(store.Entry)
	return e, breakerErr(err)
}

func (b breakerKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	v, err := b.cb.Execute(func() (any, error) { return b.KV.Create(ctx, key, value) })
	rev, _ := v.(uint64)
	return rev, breakerErr(err)
}

func (b breakerKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	v, err := b.cb.Execute(func() (any, error) { return b.KV.Update(ctx, key, value, rev) })
	n, _ := v.(uint64)
	return n, breakerErr(err)
}

func (b breakerKV) Delete(ctx context.Context, key string, rev uint64) error {
	_, err := b.cb.Execute(func() (any, error) { return nil, b.KV.Delete(ctx, key, rev) })
	return breakerErr(err)
}
