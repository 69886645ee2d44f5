package server

import (
	"context"
	"encoding/json"
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/store/memstore"
)

// What a new generation rolls out from: the generation every device had.
// A change made while the previous one still rolls out starts from what
// that one rolled out from; once a rollout succeeded, from it; an undo
// (rollsOut false) and a deployment without spec.rollout roll out nothing.
func TestApplyStoresWhatTheRolloutStartsFrom(t *testing.T) {
	ctx := context.Background()
	cfg := config.DefaultServer()
	mem := memstore.New()
	open := func(name string) store.KV {
		kv, err := mem.Ensure(ctx, store.BucketConfig{Name: name, History: 8, Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	deps, rollouts := open(cfg.Buckets.Deployments), open(cfg.Buckets.Rollouts)
	h := &handler{cfg: cfg, kvs: map[string]store.KV{cfg.Buckets.Deployments: deps, cfg.Buckets.Rollouts: rollouts}}
	hundred := 100
	dep := func(content string, rollout bool) v1.Deployment {
		spec, _ := json.Marshal(map[string]string{"path": "/etc/x", "content": content})
		d := v1.Deployment{APIVersion: v1.APIVersion, Kind: "Deployment", Metadata: v1.Metadata{Name: "web"},
			Spec: v1.DeploymentSpec{Resources: []v1.Resource{{ID: "f", Kind: v1.KindFile, Spec: spec}}}}
		if rollout {
			d.Spec.Rollout = &v1.RolloutSpec{Batches: []v1.RolloutBatch{{Percent: &hundred}}}
		}
		return d
	}
	stored := func() v1.StoredDeployment {
		e, err := deps.Get(ctx, "web")
		if err != nil {
			t.Fatal(err)
		}
		sd, err := v1.DecodeStoredDeployment(e.Value)
		if err != nil {
			t.Fatal(err)
		}
		return sd
	}
	from := func() int64 {
		if f := stored().RolloutFrom; f != nil {
			return f.Metadata.Generation
		}
		return 0
	}
	for i, step := range []struct {
		content  string
		rollout  bool
		rollsOut bool
		succeed  bool // mark the rollout of the stored generation Succeeded first
		from     int64
	}{
		{"a", true, true, false, 0},  // 1: the first generation goes everywhere
		{"b", true, true, false, 1},  // 2: from 1
		{"c", true, true, false, 1},  // 3: 2 did not finish: from 1 still
		{"d", true, true, true, 3},   // 4: 3 succeeded: from 3
		{"e", true, false, false, 0}, // 5: an undo goes everywhere
		{"f", false, true, false, 0}, // 6: no spec.rollout
		{"g", true, true, false, 6},  // 7
	} {
		if step.succeed {
			cur := stored().Deployment
			b, _ := v1.Marshal(v1.RolloutState{V: v1.FormatVersion, UID: cur.Metadata.UID, To: cur.Metadata.Generation, Phase: v1.RolloutSucceeded})
			var err error
			if e, gerr := rollouts.Get(ctx, "web"); gerr == nil {
				_, err = rollouts.Update(ctx, "web", b, e.Revision)
			} else {
				_, err = rollouts.Create(ctx, "web", b)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		res, err := h.applyOne(ctx, dep(step.content, step.rollout), step.rollsOut)
		if err != nil || res.Generation != int64(i+1) {
			t.Fatalf("step %d: %+v %v", i+1, res, err)
		}
		if got := from(); got != step.from {
			t.Errorf("generation %d rolls out from generation %d, want %d", i+1, got, step.from)
		}
	}
	// A change of the labels only keeps the generation and what it
	// rolls out from.
	d := dep("g", true)
	d.Metadata.Labels = map[string]string{"team": "edge"}
	if res, err := h.applyOne(ctx, d, true); err != nil || res.Generation != 7 || from() != 6 {
		t.Errorf("labels only: %+v %v, from %d", res, err, from())
	}
}
