package server

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/store/memstore"
)

// lostAnswer applies the first n writes and then reports their outcome as
// unknown, as when a stream leader goes away after storing a write but
// before answering.
type lostAnswer struct {
	store.KV
	n      int
	refuse int // writes refused outright (nothing stored) before any other
}

func (k *lostAnswer) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if k.refuse > 0 {
		k.refuse--
		return 0, store.ErrUnavailable
	}
	rev, err := k.KV.Create(ctx, key, value)
	return k.lose(rev, err)
}

func (k *lostAnswer) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	if k.refuse > 0 {
		k.refuse--
		return 0, store.ErrUnavailable
	}
	rev, err := k.KV.Update(ctx, key, value, revision)
	return k.lose(rev, err)
}

func (k *lostAnswer) lose(rev uint64, err error) (uint64, error) {
	if err == nil && k.n > 0 {
		k.n--
		return 0, store.ErrOutcomeUnknown
	}
	return rev, err
}

// An apply whose write landed but whose answer was lost is recognised on
// the retry: one generation, reported as the write it was.
func TestApplyRetriesAWriteWhoseOutcomeIsUnknown(t *testing.T) {
	cfg := config.DefaultServer()
	mem, err := memstore.New().Ensure(context.Background(), store.BucketConfig{Name: cfg.Buckets.Deployments, History: 8, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	kv := &lostAnswer{KV: mem, n: 1}
	h := &handler{cfg: cfg, kvs: map[string]store.KV{cfg.Buckets.Deployments: kv}}
	dep := func(content string) v1.Deployment {
		spec, _ := json.Marshal(map[string]string{"path": "/etc/x", "content": content})
		return v1.Deployment{APIVersion: v1.APIVersion, Kind: "Deployment", Metadata: v1.Metadata{Name: "web"},
			Spec: v1.DeploymentSpec{Selector: v1.Selector{MatchLabels: map[string]string{"site": "home"}},
				Resources: []v1.Resource{{ID: "f", Kind: v1.KindFile, Spec: spec}}}}
	}
	for i, step := range []struct {
		content      string
		refuse, lose int
		result       string
		generation   int64
	}{
		{"a", 0, 1, "created", 1},
		{"b", 0, 1, "configured", 2},
		{"b", 0, 0, "unchanged", 2},
		{"c", 2, 0, "configured", 3}, // refused twice, then written
		{"d", 1, 1, "configured", 4},
	} {
		kv.n, kv.refuse = step.lose, step.refuse
		res, err := h.applyOne(context.Background(), dep(step.content), true)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if res.Result != step.result || res.Generation != step.generation {
			t.Fatalf("step %d: %s generation %d, want %s generation %d", i, res.Result, res.Generation, step.result, step.generation)
		}
	}
}

// A store that never answers: the apply gives up within store_timeout and
// says the outcome is unknown once a write may have landed.
func TestApplyGivesUpWithinStoreTimeout(t *testing.T) {
	cfg := config.DefaultServer()
	cfg.StoreTimeout = config.Duration(300 * time.Millisecond)
	mem, err := memstore.New().Ensure(context.Background(), store.BucketConfig{Name: cfg.Buckets.Deployments, History: 8, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := &handler{cfg: cfg, kvs: map[string]store.KV{cfg.Buckets.Deployments: alwaysUnknown{mem}}}
	spec, _ := json.Marshal(map[string]string{"path": "/etc/x", "content": "a"})
	dep := v1.Deployment{APIVersion: v1.APIVersion, Kind: "Deployment", Metadata: v1.Metadata{Name: "web"},
		Spec: v1.DeploymentSpec{Selector: v1.Selector{MatchLabels: map[string]string{"site": "home"}},
			Resources: []v1.Resource{{ID: "f", Kind: v1.KindFile, Spec: spec}}}}
	_, err = h.applyOne(context.Background(), dep, true)
	if !errors.Is(err, store.ErrOutcomeUnknown) {
		t.Fatalf("applyOne = %v, want an unknown outcome", err)
	}
}

// alwaysUnknown loses the answer of every write, and stores nothing.
type alwaysUnknown struct{ store.KV }

func (alwaysUnknown) Create(context.Context, string, []byte) (uint64, error) {
	return 0, store.ErrOutcomeUnknown
}

func (alwaysUnknown) Update(context.Context, string, []byte, uint64) (uint64, error) {
	return 0, store.ErrOutcomeUnknown
}

// The deployment UID is the server's: made at creation, kept by every
// update (whatever the user writes there), new after a deletion, so that a
// re-created deployment's generation 1 is not the old one's.
func TestDeploymentUIDIsNewOnlyAfterDeletion(t *testing.T) {
	cfg := config.DefaultServer()
	kv, err := memstore.New().Ensure(context.Background(), store.BucketConfig{Name: cfg.Buckets.Deployments, History: 8, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := &handler{cfg: cfg, kvs: map[string]store.KV{cfg.Buckets.Deployments: kv}}
	dep := func(content, uid string) v1.Deployment {
		spec, _ := json.Marshal(map[string]string{"path": "/etc/x", "content": content})
		return v1.Deployment{APIVersion: v1.APIVersion, Kind: "Deployment", Metadata: v1.Metadata{Name: "web", UID: uid},
			Spec: v1.DeploymentSpec{Resources: []v1.Resource{{ID: "f", Kind: v1.KindFile, Spec: spec}}}}
	}
	stored := func() v1.Metadata {
		t.Helper()
		e, err := kv.Get(context.Background(), "web")
		if err != nil {
			t.Fatal(err)
		}
		s, err := v1.DecodeStoredDeployment(e.Value)
		if err != nil {
			t.Fatal(err)
		}
		return s.Deployment.Metadata
	}
	apply := func(d v1.Deployment, want string) {
		t.Helper()
		res, err := h.applyOne(context.Background(), d, true)
		if err != nil || res.Result != want {
			t.Fatalf("apply: %+v %v, want %s", res, err, want)
		}
	}
	apply(dep("a", ""), "created")
	first := stored()
	if len(first.UID) < 20 {
		t.Fatalf("created with UID %q", first.UID)
	}
	apply(dep("b", ""), "configured")
	apply(dep("b", "mine"), "unchanged")
	apply(dep("c", "mine"), "configured")
	if m := stored(); m.UID != first.UID || m.Generation != 3 {
		t.Fatalf("after updates: %+v, want UID %s at generation 3", m, first.UID)
	}
	if err := h.deleteOne(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	apply(dep("a", first.UID), "created")
	if m := stored(); m.UID == first.UID || m.UID == "" || m.Generation != 1 {
		t.Fatalf("re-created: %+v, want a new UID at generation 1 (old %s)", m, first.UID)
	}
}
