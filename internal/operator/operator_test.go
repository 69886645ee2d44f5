package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/store/memstore"
	"github.com/harmony-fleet/harmony/internal/testutil/leak"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// leak allows for the goroutines an embedded nats-server keeps (the orphan
// guard's tests run against a real NATS).
func TestMain(m *testing.M) { leak.VerifyTestMain(m) }

func deployment(name string, gen int64, sel map[string]string) v1.Deployment {
	spec, _ := json.Marshal(map[string]string{"path": "/etc/harmony/" + name, "content": "x"})
	return v1.Deployment{APIVersion: v1.APIVersion, Kind: "Deployment", Metadata: v1.Metadata{Name: name, Generation: gen},
		Spec: v1.DeploymentSpec{Selector: v1.Selector{MatchLabels: sel}, Resources: []v1.Resource{{ID: "f", Kind: v1.KindFile, Spec: spec}}}}
}

func dev(id string, labels map[string]string) Device {
	return Device{Info: v1.DeviceInfo{V: 1, ID: id, Labels: labels}}
}

func str(s string) *string { return &s }

func TestRenderMatchesAndOverrides(t *testing.T) {
	deps := map[string]v1.Deployment{"web": deployment("web", 3, map[string]string{"site": "home"})}
	devs := map[string]Device{
		"a": dev("a", map[string]string{"site": "home"}),
		"b": dev("b", map[string]string{"site": "office"}),
		"c": {Info: v1.DeviceInfo{ID: "c", Labels: map[string]string{"site": "office"}}, Overrides: map[string]*string{"site": str("home")}},
		"d": {Info: v1.DeviceInfo{ID: "d", Labels: map[string]string{"site": "home"}}, Overrides: map[string]*string{"site": nil}},
	}
	out, err := Render(deps, nil, nil, devs)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out["a.web"] == nil || out["c.web"] == nil {
		t.Fatalf("rendered keys %v", keys(out))
	}
	ds, err := v1.DecodeDesiredState(out["a.web"])
	if err != nil || ds.Generation != 3 || ds.Device != "a" || len(ds.Resources) != 1 {
		t.Fatalf("a.web = %+v %v", ds, err)
	}
	// Same input, same bytes, every time.
	for i := 0; i < 20; i++ {
		again, _ := Render(deps, nil, nil, devs)
		for k := range out {
			if string(again[k]) != string(out[k]) {
				t.Fatalf("render is not deterministic for %s", k)
			}
		}
	}
}

func keys[V any](m map[string]V) []string { return sortedKeys(m) }

func TestAggregate(t *testing.T) {
	s := Snapshot{
		Deployments: map[string]v1.Deployment{"web": deployment("web", 2, nil)},
		Devices: map[string]Device{"ok": dev("ok", nil), "old": dev("old", nil), "bad": dev("bad", nil),
			"silent": dev("silent", nil), "never": dev("never", nil)},
		States: map[string]v1.DeviceState{
			"ok.web":     {Phase: v1.PhaseReady, ObservedGeneration: 2},
			"old.web":    {Phase: v1.PhaseReady, ObservedGeneration: 1},
			"bad.web":    {Phase: v1.PhaseFailed, ObservedGeneration: 2, Message: "boom"},
			"silent.web": {Phase: v1.PhaseReady, ObservedGeneration: 2},
		},
		HeartbeatAge: map[string]time.Duration{"ok": time.Second, "old": time.Second, "bad": time.Second, "silent": time.Minute},
		Staleness:    30 * time.Second,
	}
	got := Aggregate(s)["web"]
	if got.Matched != 5 || got.Succeeded != 1 || got.Failed != 1 || got.Pending != 1 || got.Offline != 2 || got.LastError != "bad: boom" {
		t.Fatalf("aggregate %+v", got)
	}
	for _, d := range got.Devices {
		if d.Device == "silent" && d.Phase != "Offline" {
			t.Fatalf("a silent device is shown as its last known state: %+v", d)
		}
	}
}

type fixture struct {
	b   Buckets
	ctx context.Context
	// spare is a bucket no operator is given (natsFixture: for a test
	// that gives it as the rollouts bucket).
	spare store.KV
}

func newFixture(t *testing.T) fixture {
	st := memstore.New()
	ctx := context.Background()
	open := func(name string) store.KV {
		kv, err := st.Ensure(ctx, store.BucketConfig{Name: name, History: 1, Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	return fixture{ctx: ctx, b: Buckets{Deployments: open("deployments"), DesiredState: open("desired-state"), DeviceInfo: open("device-info"),
		DeviceState: open("device-state"), DeviceHeartbeat: open("device-heartbeat"), DeviceLabels: open("device-labels")}}
}

func (f fixture) put(t *testing.T, kv store.KV, key string, v any) {
	b, _ := v1.Marshal(v)
	cur, err := kv.Get(f.ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		_, err = kv.Create(f.ctx, key, b)
	case err == nil:
		_, err = kv.Update(f.ctx, key, b, cur.Revision)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, o *Operator) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

func TestColdStartRendersAndRemovesOrphans(t *testing.T) {
	f := newFixture(t)
	f.put(t, f.b.Deployments, "web", v1.StoredDeployment{V: 1, Deployment: deployment("web", 1, map[string]string{"site": "home"})})
	f.put(t, f.b.DeviceInfo, "a", v1.DeviceInfo{V: 1, ID: "a", Labels: map[string]string{"site": "home"}})
	f.put(t, f.b.DeviceInfo, "b", v1.DeviceInfo{V: 1, ID: "b", Labels: map[string]string{"site": "office"}})
	// Left over from a deployment deleted while the operator was down.
	f.put(t, f.b.DesiredState, "b.gone", v1.DesiredState{V: 1, Device: "b", Deployment: "gone", Generation: 1})

	o := New(f.b, slog.New(slog.DiscardHandler), Options{Render: true, OrphanGrace: 50 * time.Millisecond})
	if o.Phase() != Recovering {
		t.Fatal("a new operator must start Recovering")
	}
	stop := run(t, o)
	defer stop()
	retry.Until(t, 10*time.Second, func() error {
		if o.Phase() != Converged {
			return fmt.Errorf("phase %s: %s", o.Phase(), o.Progress())
		}
		if _, err := f.b.DesiredState.Get(f.ctx, "a.web"); err != nil {
			return fmt.Errorf("a.web: %w", err)
		}
		if _, err := f.b.DesiredState.Get(f.ctx, "b.gone"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("orphan b.gone still there: %v", err)
		}
		return nil
	})
	if _, err := f.b.DesiredState.Get(f.ctx, "b.web"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("b does not match, yet b.web: %v", err)
	}
	renders, writes := o.Stats()
	// Heartbeats and observed state do not wake rendering at all.
	f.put(t, f.b.DeviceHeartbeat, "a", v1.Heartbeat{V: 1, Boot: "x", Seq: 1})
	f.put(t, f.b.DeviceState, "a.web", v1.DeviceState{V: 1, Device: "a", Deployment: "web", ObservedGeneration: 1, Phase: v1.PhaseReady})
	retry.Until(t, 5*time.Second, func() error {
		if c := o.Counts(); c[f.b.DeviceState.Bucket()] != 1 || c[f.b.DeviceHeartbeat.Bucket()] != 1 {
			return fmt.Errorf("view %v", c)
		}
		return nil
	})
	if r, w := o.Stats(); r != renders || w != writes {
		t.Fatalf("heartbeat and state: %d more passes, %d more writes", r-renders, w-writes)
	}
	// A device's info written again unchanged: a pass for it, no write.
	f.put(t, f.b.DeviceInfo, "a", v1.DeviceInfo{V: 1, ID: "a", Labels: map[string]string{"site": "home"}})
	retry.Until(t, 5*time.Second, func() error {
		if r, _ := o.Stats(); r <= renders {
			return fmt.Errorf("%d render passes", r)
		}
		return nil
	})
	if _, w := o.Stats(); w != writes {
		t.Fatalf("%d more writes without any change", w-writes)
	}
	// Relabelled away from the deployment: its key goes (an orphan now).
	f.put(t, f.b.DeviceInfo, "a", v1.DeviceInfo{V: 1, ID: "a", Labels: map[string]string{"site": "office"}})
	retry.Until(t, 10*time.Second, func() error {
		if _, err := f.b.DesiredState.Get(f.ctx, "a.web"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("a.web after a moved away: %v", err)
		}
		return nil
	})
	// A new deployment reaches the devices it selects, and only those.
	f.put(t, f.b.Deployments, "db", v1.StoredDeployment{V: 1, Deployment: deployment("db", 1, map[string]string{"site": "office"})})
	retry.Until(t, 10*time.Second, func() error {
		for _, key := range []string{"a.db", "b.db"} {
			if _, err := f.b.DesiredState.Get(f.ctx, key); err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
		}
		return nil
	})
	// Deleting the deployment removes its keys on every device.
	e, err := f.b.Deployments.Get(f.ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.b.Deployments.Delete(f.ctx, "db", e.Revision); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 10*time.Second, func() error {
		for _, key := range []string{"a.db", "b.db"} {
			if _, err := f.b.DesiredState.Get(f.ctx, key); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("%s after the delete: %v", key, err)
			}
		}
		return nil
	})
}

func TestOperatorNeverRollsBackANewerGeneration(t *testing.T) {
	f := newFixture(t)
	f.put(t, f.b.Deployments, "web", v1.StoredDeployment{V: 1, Deployment: deployment("web", 1, nil)})
	f.put(t, f.b.DeviceInfo, "a", v1.DeviceInfo{V: 1, ID: "a"})
	// Another operator, ahead of this one, already rendered generation 2.
	newer := deployment("web", 2, nil)
	f.put(t, f.b.DesiredState, "a.web", v1.DesiredState{V: 1, Device: "a", Deployment: "web", Generation: 2, Resources: newer.Spec.Resources})
	o := New(f.b, slog.New(slog.DiscardHandler), Options{Render: true})
	stop := run(t, o)
	defer stop()
	retry.Until(t, 5*time.Second, func() error {
		if r, _ := o.Stats(); r < 1 || o.Phase() != Converged {
			return errors.New("not rendered yet")
		}
		return nil
	})
	e, _ := f.b.DesiredState.Get(f.ctx, "a.web")
	ds, _ := v1.DecodeDesiredState(e.Value)
	if ds.Generation != 2 {
		t.Fatalf("generation %d: a stale operator rolled the device back", ds.Generation)
	}
}

// switchLease is a lease the test grants by hand.
type switchLease struct{ held atomic.Bool }

func (l *switchLease) Held() bool { return l.held.Load() }

// An operator without the lease renders but leaves orphans alone; once it
// holds the lease it removes them, without waiting for another change.
func TestOrphansAreRemovedOnlyUnderTheLease(t *testing.T) {
	f := newFixture(t)
	f.put(t, f.b.Deployments, "web", v1.StoredDeployment{V: 1, Deployment: deployment("web", 1, map[string]string{"site": "home"})})
	f.put(t, f.b.DeviceInfo, "a", v1.DeviceInfo{V: 1, ID: "a", Labels: map[string]string{"site": "home"}})
	f.put(t, f.b.DesiredState, "a.gone", v1.DesiredState{V: 1, Device: "a", Deployment: "gone", Generation: 1})

	lease := &switchLease{}
	o := New(f.b, slog.New(slog.DiscardHandler), Options{Render: true, OrphanGrace: 50 * time.Millisecond, Lease: lease})
	stop := run(t, o)
	defer stop()
	retry.Until(t, 10*time.Second, func() error {
		if _, err := f.b.DesiredState.Get(f.ctx, "a.web"); err != nil {
			return fmt.Errorf("a.web: %w", err)
		}
		return nil
	})
	retry.Holds(t, 500*time.Millisecond, func() error {
		if _, err := f.b.DesiredState.Get(f.ctx, "a.gone"); err != nil {
			return fmt.Errorf("orphan removed without the lease: %v", err)
		}
		return nil
	})
	lease.held.Store(true)
	retry.Until(t, 10*time.Second, func() error {
		if _, err := f.b.DesiredState.Get(f.ctx, "a.gone"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("orphan a.gone still there: %v", err)
		}
		return nil
	})
}
