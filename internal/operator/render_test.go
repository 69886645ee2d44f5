package operator

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// TestPlanWantFollowsTheFullRender changes deployments and devices at
// random and plans an incremental pass after each change, as the render
// loop does: the bytes wanted must always be what a full render of the
// same view gives.
func TestPlanWantFollowsTheFullRender(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	deps := map[string]v1.Deployment{}
	devs := map[string]Device{}
	want := map[string][]byte{}
	rollouts := map[string]*Rollout{}
	withRollout := 0
	ids := []string{"a", "b", "c.d", "e"}
	names := []string{"web", "db", "cache"}
	sites := []string{"home", "office"}
	for step := range 3000 {
		w := newWork(false)
		// One to three changes per pass.
		for range 1 + rng.IntN(3) {
			id, name := ids[rng.IntN(len(ids))], names[rng.IntN(len(names))]
			switch rng.IntN(6) {
			case 5:
				// A rollout of name's current generation (or of another),
				// at a random batch and phase, or none.
				d, ok := deps[name]
				if !ok || rng.IntN(4) == 0 {
					delete(rollouts, name)
					w.deployments[name] = true
					break
				}
				sel := map[string]string{}
				if rng.IntN(2) == 0 {
					sel["site"] = sites[rng.IntN(2)]
				}
				from := deployment(name, d.Metadata.Generation-1, sel)
				st := &v1.RolloutState{V: 1, To: d.Metadata.Generation - int64(rng.IntN(2)),
					Batches: [][]string{{ids[0]}, {ids[1], ids[2]}}, Batch: rng.IntN(3), Released: rng.IntN(3),
					Phase: []string{v1.RolloutProgressing, v1.RolloutPaused, v1.RolloutSucceeded, v1.RolloutRolledBack}[rng.IntN(4)]}
				rollouts[name] = &Rollout{From: &from, State: st, pos: st.Positions()}
				w.deployments[name] = true
			case 0:
				sel := map[string]string{}
				if rng.IntN(2) == 0 {
					sel["site"] = sites[rng.IntN(2)]
				}
				deps[name] = deployment(name, int64(step), sel)
				w.deployments[name] = true
			case 1:
				delete(deps, name)
				w.deployments[name] = true
			case 2:
				devs[id] = dev(id, map[string]string{"site": sites[rng.IntN(2)]})
				w.devices[id] = true
			case 3:
				delete(devs, id)
				w.devices[id] = true
			case 4:
				site := sites[rng.IntN(2)]
				d := devs[id]
				d.Info.ID, d.Overrides = id, map[string]*string{"site": &site}
				devs[id] = d
				w.devices[id] = true
			}
		}
		// What takeWork copies: every device when deployments changed,
		// else the changed ones that exist.
		in := map[string]Device{}
		for id, d := range devs {
			if len(w.deployments) > 0 || w.devices[id] {
				in[id] = d
			}
		}
		before := maps.Clone(want)
		c, err := planWant(w, deps, rollouts, nil, in, want)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(want, before) {
			t.Fatalf("step %d: planWant changed want", step)
		}
		want = c.applyTo(want)
		full, _ := Render(deps, rollouts, nil, devs)
		if plain, _ := Render(deps, nil, nil, devs); !reflect.DeepEqual(plain, full) {
			withRollout++ // the rollouts made a difference: the check sees them
		}
		if !reflect.DeepEqual(keys(want), keys(full)) {
			t.Fatalf("step %d: want %v, a full render %v", step, keys(want), keys(full))
		}
		for k := range full {
			if string(want[k]) != string(full[k]) {
				t.Fatalf("step %d: %s differs from a full render", step, k)
			}
		}
	}
	if withRollout < 100 {
		t.Errorf("the rollouts changed the render in only %d of 3000 steps", withRollout)
	}
}

func TestPlanWrites(t *testing.T) {
	deps := map[string]v1.Deployment{"web": deployment("web", 2, nil)}
	gen := func(g int64) []byte {
		b, _ := desiredBytes("a", "web", deployment("web", g, nil), nil)
		return b
	}
	want := map[string][]byte{"a.web": gen(2), "b.web": gen(2), "c.web": gen(2), "d.web": gen(2)}
	have := map[string]store.Entry{
		"a.web":      {Key: "a.web", Value: gen(2), Revision: 1}, // same bytes
		"b.web":      {Key: "b.web", Value: gen(1), Revision: 2}, // older: update
		"c.web":      {Key: "c.web", Value: gen(3), Revision: 3}, // newer: another operator's, left alone
		"x.web":      {Key: "x.web", Value: gen(2), Revision: 4}, // nothing wants it: an orphan
		"not-a-key":  {Key: "not-a-key", Value: []byte("?"), Revision: 5},
		"y.old":      {Key: "y.old", Value: gen(1), Revision: 6}, // a deleted deployment's: an orphan
		"unwatched.": {Key: "unwatched.", Value: nil, Revision: 7},
	}
	check := []string{"a.web", "b.web", "c.web", "d.web", "gone.web", "not-a-key", "unwatched.", "x.web", "y.old"}
	p := planWrites(check, want, have, deps, func(string) bool { return false })
	got := fmt.Sprint(p.writes, " ", p.orphans)
	wantPlan := fmt.Sprint([]write{{key: "b.web", value: gen(2), rev: 2}, {key: "d.web", value: gen(2)}}, " ",
		[]removal{{key: "x.web", rev: 4}, {key: "y.old", rev: 6}})
	if got != wantPlan {
		t.Fatalf("plan:\n got %s\nwant %s", got, wantPlan)
	}
	// Keys a rollout decides, on a server without the lease: no write
	// (the stored generation 1 stays), the orphans as before.
	p = planWrites(check, want, have, deps, func(key string) bool { return key == "b.web" || key == "d.web" })
	if got := fmt.Sprint(p.writes, " ", p.orphans); got != fmt.Sprint([]write(nil), " ", []removal{{key: "x.web", rev: 4}, {key: "y.old", rev: 6}}) {
		t.Fatalf("held-back plan: %s", got)
	}
}

func TestHeldBackOnlyWhileARolloutGoesOn(t *testing.T) {
	from := deployment("web", 1, nil)
	d := deployment("web", 2, nil)
	d.Spec.Rollout = &v1.RolloutSpec{Batches: []v1.RolloutBatch{{Percent: intp(100)}}}
	for _, c := range []struct {
		r    *Rollout
		held bool
	}{
		{nil, false},
		{&Rollout{}, false},           // no From: the change goes everywhere
		{&Rollout{From: &from}, true}, // Pending
		{&Rollout{From: &from, State: &v1.RolloutState{To: 2, Phase: v1.RolloutPaused}}, true},
		{&Rollout{From: &from, State: &v1.RolloutState{To: 1, Phase: v1.RolloutSucceeded}}, true}, // another generation's
		{&Rollout{From: &from, State: &v1.RolloutState{To: 2, Phase: v1.RolloutSucceeded}}, false},
	} {
		if got := heldBack(d, c.r); got != c.held {
			t.Errorf("%+v: held back %v, want %v", c.r, got, c.held)
		}
	}
}

func TestGraceOrphans(t *testing.T) {
	const grace = 2 * time.Second
	t0 := time.Unix(1000, 0)
	marks := map[string]orphanMark{}
	orphans := []removal{{key: "a.web", rev: 1}, {key: "b.web", rev: 2}}
	// First sight, in a full pass: both wait.
	ready, waiting := graceOrphans(marks, orphans, t0, true, grace)
	if len(ready) != 0 || len(waiting) != 2 || !marks["a.web"].full || !marks["a.web"].since.Equal(t0) {
		t.Fatalf("first sight: ready %v, waiting %v, marks %v", ready, waiting, marks)
	}
	// Within the grace, in an incremental pass: still waiting; b is new.
	delete(marks, "b.web")
	ready, waiting = graceOrphans(marks, orphans, t0.Add(grace/2), false, grace)
	if len(ready) != 0 || len(waiting) != 2 || marks["b.web"].full {
		t.Fatalf("within the grace: ready %v, waiting %v, marks %v", ready, waiting, marks)
	}
	// After a's grace: a is ready, and keeps having been seen by a full pass.
	ready, waiting = graceOrphans(marks, orphans, t0.Add(grace), false, grace)
	if fmt.Sprint(ready) != fmt.Sprint([]removal{{key: "a.web", rev: 1, full: true}}) || fmt.Sprint(waiting) != "[b.web]" {
		t.Fatalf("after the grace: ready %v, waiting %v", ready, waiting)
	}
}
