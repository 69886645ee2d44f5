package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/server"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// flapping is a reconciler whose thing never stays put: every observation
// differs and every apply reports a new message, so the status changes all
// the time.
type flapping struct{ applies atomic.Int64 }

func (f *flapping) Admit(agent.Desired) (string, error) { return "", nil }
func (f *flapping) Observe(context.Context, agent.Desired) (agent.Observation, error) {
	return agent.Observation{InSync: false, Diff: "drifted"}, nil
}
func (f *flapping) Apply(context.Context, agent.Desired) error {
	return fmt.Errorf("attempt %d failed", f.applies.Add(1))
}
func (f *flapping) Delete(context.Context, localstate.Owned) error { return nil }

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// A long outage with the status changing all the time: the queue of status
// writes stays at one value per deployment (the latest wins), the heap does
// not grow with the number of changes, and when the server returns the
// latest status of every deployment lands. The outage is simulated by
// volume: at least 3,000 status changes (ten minutes of one change per
// second on each of five deployments) happen while the server is down.
func TestStatusStaysBoundedThroughALongOutage(t *testing.T) {
	ns := meshtest.StartSingle(t)
	f := fleetAt(t, ns.URL())
	root, stateDir := t.TempDir(), t.TempDir()
	cfg := agentConfig(t, ns.URL(), root, stateDir)
	cfg.RetryInitial = config.Duration(time.Millisecond)
	cfg.RetryMax = config.Duration(2 * time.Millisecond)
	cfg.ResyncInterval = config.Duration(100 * time.Millisecond)
	port := freePort(t)
	cfg.HTTP = fmt.Sprintf("127.0.0.1:%d", port)
	kind := &flapping{}
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})), agent.Options{Kinds: map[string]agent.Kind{v1.KindFile: kind}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
	}()
	const deployments = 5
	for i := 0; i < deployments; i++ {
		f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: fmt.Sprintf("d%d", i), Generation: 1,
			Resources: []v1.Resource{fileRes("x", root+"/x", "x", "")}})
	}
	for i := 0; i < deployments; i++ {
		f.waitStatus(t, fmt.Sprintf("d%d", i), func(s v1.DeviceState) error {
			if s.ObservedGeneration != 1 {
				return fmt.Errorf("generation %d", s.ObservedGeneration)
			}
			return nil
		})
	}
	f.close()

	health := func() map[string]any {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", port))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&v)
		return v
	}
	ns.Stop()
	start := kind.applies.Load()
	retry.Until(t, 30*time.Second, func() error {
		if n := kind.applies.Load() - start; n < 300 {
			return fmt.Errorf("%d changes so far", n)
		}
		return nil
	})
	baseline := heapInUse()
	peakPending := 0.0
	retry.Until(t, 5*time.Minute, func() error {
		if p, _ := health()["pending_status_writes"].(float64); p > peakPending {
			peakPending = p
		}
		if n := kind.applies.Load() - start; n < 3000 {
			return fmt.Errorf("%d changes so far", n)
		}
		return nil
	})
	after := heapInUse()
	changes := kind.applies.Load() - start
	t.Logf("outage: %d status changes, pending writes at most %v, heap in use %d KiB -> %d KiB", changes, peakPending, baseline>>10, after>>10)
	if peakPending > deployments {
		t.Fatalf("%v status writes queued for %d deployments", peakPending, deployments)
	}
	if after > baseline+8<<20 {
		t.Fatalf("heap grew from %d to %d bytes over %d status changes during the outage", baseline, after, changes)
	}

	// The server returns: the latest status of every deployment lands.
	ns.Start()
	f = fleetAt(t, ns.URL())
	defer f.close()
	for i := 0; i < deployments; i++ {
		f.waitStatus(t, fmt.Sprintf("d%d", i), func(s v1.DeviceState) error {
			b, _ := json.Marshal(s)
			m := attemptRe.FindStringSubmatch(string(b))
			if m == nil {
				return fmt.Errorf("status %s names no attempt", b)
			}
			if n, _ := strconv.ParseInt(m[1], 10, 64); n <= start+3000 {
				return fmt.Errorf("status %s is from before the server returned", b)
			}
			return nil
		})
	}
}

var attemptRe = regexp.MustCompile(`attempt (\d+) failed`)

// fleetAt opens the fleet buckets of the NATS at url.
func fleetAt(t *testing.T, url string) *fleet {
	t.Helper()
	return fleetAs(t, mesh.ClientConfig{URLs: []string{url}})
}

// fleetAs is fleetAt with the connection's own settings (an identity).
func fleetAs(t *testing.T, cc mesh.ClientConfig) *fleet {
	t.Helper()
	nc, err := mesh.Connect(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := store.NewNATS(nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{nc: nc, kvs: map[string]store.KV{}, close: nc.Close}
	for _, b := range server.FleetBuckets(config.DefaultServer()) {
		kv, err := st.Ensure(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		f.kvs[b.Name] = kv
	}
	return f
}
