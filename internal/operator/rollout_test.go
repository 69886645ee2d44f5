package operator

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

func intp(n int) *int { return &n }

func TestSplitBatches(t *testing.T) {
	var ids []string
	labels := map[string]map[string]string{}
	for i := range 10 {
		id := fmt.Sprintf("d%02d", i)
		ids = append(ids, id)
		labels[id] = map[string]string{}
		if i%4 == 3 {
			labels[id]["site"] = "lab"
		}
	}
	get := func(id string) map[string]string { return labels[id] }
	spec := &v1.RolloutSpec{Batches: []v1.RolloutBatch{{Count: intp(1)}, {Percent: intp(30)}, {Percent: intp(100)}}}
	got, left := SplitBatches(spec, ids, get)
	want := [][]string{{"d00"}, {"d01", "d02", "d03"}, {"d04", "d05", "d06", "d07", "d08", "d09"}}
	if !slices.EqualFunc(got, want, slices.Equal) || len(left) != 0 {
		t.Errorf("[1, 30%%, 100%%] of 10: %v, left %v; want %v", got, left, want)
	}
	canary := &v1.RolloutSpec{Batches: []v1.RolloutBatch{{Selector: &v1.Selector{MatchLabels: map[string]string{"site": "lab"}}}, {Count: intp(2)}}}
	got, left = SplitBatches(canary, ids, get)
	want = [][]string{{"d03", "d07"}, {"d00", "d01"}}
	if !slices.EqualFunc(got, want, slices.Equal) || len(left) != 6 {
		t.Errorf("[site=lab, 2] of 10: %v, left %v; want %v and 6 left", got, left, want)
	}
}

func TestPickGivesEachDeviceTheGenerationOfItsBatch(t *testing.T) {
	from := deployment("web", 1, nil)
	to := deployment("web", 2, map[string]string{"tier": "edge"})
	st := &v1.RolloutState{V: 1, To: 2, Batches: [][]string{{"a"}, {"b", "c"}, {"e"}}, Batch: 1, Released: 1, Phase: v1.RolloutProgressing}
	r := &Rollout{From: &from, State: st, pos: st.Positions()}
	edge := map[string]string{"tier": "edge"}
	for _, c := range []struct {
		id     string
		labels map[string]string
		gen    int64 // 0: nothing
	}{
		{"a", edge, 2},                        // a done batch
		{"b", edge, 2},                        // released in the current batch
		{"c", edge, 1},                        // not yet released: keeps From
		{"late", edge, 1},                     // in no batch, before the last batch: From
		{"gone", map[string]string{}, 1},      // From matches, the new selector does not: From until the end
		{"x", map[string]string{"y": "z"}, 1}, // From (no selector) matches everything
	} {
		d, ok := pick(c.id, c.labels, to, r)
		if got := map[bool]int64{true: d.Metadata.Generation}[ok]; got != c.gen {
			t.Errorf("%s: generation %d, want %d", c.id, got, c.gen)
		}
	}
	st.Batch, st.Released = 2, 0 // the last batch in progress: devices in no batch join it
	if d, ok := pick("late", edge, to, r); !ok || d.Metadata.Generation != 2 {
		t.Errorf("late joiner during the last batch: %v %d, want generation 2", ok, d.Metadata.Generation)
	}
	st.Phase = v1.RolloutSucceeded
	if _, ok := pick("gone", map[string]string{}, to, r); ok {
		t.Error("a device only From matched keeps it after the rollout succeeded")
	}
	// A state of another generation is no state: Pending, everyone on From.
	st.Phase, st.To = v1.RolloutProgressing, 7
	if d, _ := pick("a", edge, to, r); d.Metadata.Generation != 1 {
		t.Errorf("a state of another generation gave generation %d", d.Metadata.Generation)
	}
}

// rolloutFixture is the operator's buckets in a real NATS, with a rollouts
// bucket, n devices beating, and deployment web at generation 1 rendered.
func rolloutFixture(t *testing.T, n int) (fixture, Options) {
	f, leases, _ := natsFixture(t)
	f.b.Rollouts = f.spare
	for i := range n {
		id := fmt.Sprintf("d%02d", i)
		f.put(t, f.b.DeviceInfo, id, v1.DeviceInfo{V: 1, ID: id})
		f.put(t, f.b.DeviceHeartbeat, id, v1.Heartbeat{V: 1, Boot: "b", Seq: 1})
	}
	f.put(t, f.b.Deployments, "web", v1.StoredDeployment{V: 1, Deployment: deployment("web", 1, nil)})
	return f, Options{Render: true, Staleness: time.Hour, RolloutTick: 20 * time.Millisecond, Releases: leases}
}

// rollOut stores generation gen of web, rolling out from generation 1.
func rollOut(t *testing.T, f fixture, gen int64, spec *v1.RolloutSpec) {
	from := deployment("web", 1, nil)
	to := deployment("web", gen, nil)
	to.Spec.Rollout = spec
	f.put(t, f.b.Deployments, "web", v1.StoredDeployment{V: 1, Deployment: to, RolloutFrom: &from})
}

// generations reads which generation of web every device's desired state
// holds.
func (f fixture) generations(t *testing.T) map[string]int64 {
	t.Helper()
	es, err := f.b.DesiredState.List(f.ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range es {
		ds, err := v1.DecodeDesiredState(e.Value)
		if err != nil {
			t.Fatal(err)
		}
		out[ds.Device] = ds.Generation
	}
	return out
}

func (f fixture) rollout(t *testing.T) v1.RolloutState {
	t.Helper()
	e, err := f.b.Rollouts.Get(f.ctx, "web")
	if errors.Is(err, store.ErrNotFound) {
		return v1.RolloutState{}
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := v1.DecodeRolloutState(e.Value)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// report writes device id's status of web at generation gen.
func (f fixture) report(t *testing.T, id string, gen int64, phase string) {
	f.put(t, f.b.DeviceState, v1.DeviceKey(id, "web"), v1.DeviceState{V: 1, Device: id, Deployment: "web", ObservedGeneration: gen, Phase: phase,
		Resources: []v1.ResourceStatus{{ID: "f", Kind: v1.KindFile, Phase: phase}}})
}

// onGen2 waits until exactly want have generation 2 of web.
func (f fixture) onGen2(t *testing.T, want ...string) {
	t.Helper()
	retry.Until(t, 10*time.Second, func() error {
		if got := onGen(f.generations(t), 2); !slices.Equal(got, want) {
			return fmt.Errorf("devices on generation 2: %v, want %v", got, want)
		}
		return nil
	})
}

// waitPhase waits until web's rollout is in phase.
func (f fixture) waitPhase(t *testing.T, phase string) {
	t.Helper()
	retry.Until(t, 10*time.Second, func() error {
		if st := f.rollout(t); st.Phase != phase {
			return fmt.Errorf("phase %s (%s), want %s", st.Phase, st.Reason, phase)
		}
		return nil
	})
}

// onGen is the devices whose desired state holds generation gen.
func onGen(g map[string]int64, gen int64) []string {
	var out []string
	for id, x := range g {
		if x == gen {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// TestRolloutGoesBatchByBatchAndPausesOnAFailure: 10 devices, batches
// [1, 30%, 100%]: the first device alone gets generation 2; the next
// three once it reports it Ready; one of them failing pauses the rollout,
// and the six others never get it, not even from an operator started
// again.
func TestRolloutGoesBatchByBatchAndPausesOnAFailure(t *testing.T) {
	f, opts := rolloutFixture(t, 10)
	stop := run(t, New(f.b, quiet(), opts))
	f.waitKeys(t, 10)
	rollOut(t, f, 2, &v1.RolloutSpec{Batches: []v1.RolloutBatch{{Count: intp(1)}, {Percent: intp(30)}, {Percent: intp(100)}}})
	f.onGen2(t, "d00")
	st := f.rollout(t)
	if st.Phase != v1.RolloutProgressing || st.Batch != 0 || len(st.Batches) != 3 || len(st.Batches[2]) != 6 {
		t.Fatalf("rollout state %+v", st)
	}
	// Without d00 reporting, nothing more happens.
	retry.Holds(t, 300*time.Millisecond, func() error {
		if got := onGen(f.generations(t), 2); len(got) != 1 {
			return fmt.Errorf("devices on generation 2 before the gate: %v", got)
		}
		return nil
	})
	f.report(t, "d00", 2, v1.PhaseReady)
	f.onGen2(t, "d00", "d01", "d02", "d03")
	f.report(t, "d01", 2, v1.PhaseReady)
	f.report(t, "d02", 2, v1.PhaseFailed)
	retry.Until(t, 10*time.Second, func() error {
		if st := f.rollout(t); st.Phase != v1.RolloutPaused || st.Failed["d02"] == "" {
			return fmt.Errorf("phase %s, failed %v; want Paused with d02", st.Phase, st.Failed)
		}
		return nil
	})
	stop()
	// Started again, the operator stays where the store says.
	defer run(t, New(f.b, quiet(), opts))()
	f.report(t, "d03", 2, v1.PhaseReady)
	retry.Holds(t, 500*time.Millisecond, func() error {
		g := f.generations(t)
		if got := onGen(g, 2); len(got) != 4 || len(onGen(g, 1)) != 6 {
			return fmt.Errorf("after the pause and a restart: generation 2 on %v, generation 1 on %v", got, onGen(g, 1))
		}
		if st := f.rollout(t); st.Phase != v1.RolloutPaused || st.Batch != 1 {
			return fmt.Errorf("after a restart: phase %s batch %d", st.Phase, st.Batch)
		}
		return nil
	})
}

// TestRolloutRollsBackOnAFailure: with onFailure: rollback a failed first
// batch makes the previous spec generation 3, for every device.
func TestRolloutRollsBackOnAFailure(t *testing.T) {
	f, opts := rolloutFixture(t, 4)
	defer run(t, New(f.b, quiet(), opts))()
	f.waitKeys(t, 4)
	rollOut(t, f, 2, &v1.RolloutSpec{Batches: []v1.RolloutBatch{{Count: intp(1)}, {Percent: intp(100)}}, OnFailure: v1.OnFailureRollback})
	f.onGen2(t, "d00")
	f.report(t, "d00", 2, v1.PhaseFailed)
	retry.Until(t, 10*time.Second, func() error {
		g := f.generations(t)
		if got := onGen(g, 3); len(got) != 4 {
			return fmt.Errorf("devices on generation 3: %v (all: %v)", got, g)
		}
		return nil
	})
	e, err := f.b.Deployments.Get(f.ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	sd, _ := v1.DecodeStoredDeployment(e.Value)
	if sd.RolloutFrom != nil || sd.Deployment.Spec.Rollout != nil || sd.Deployment.Metadata.Generation != 3 {
		t.Errorf("after the rollback: generation %d, rollout %v, from %v; want generation 3 with generation 1's spec",
			sd.Deployment.Metadata.Generation, sd.Deployment.Spec.Rollout, sd.RolloutFrom)
	}
	if st := f.rollout(t); st.Phase != v1.RolloutRolledBack || st.RollbackGeneration != 3 || st.Failed["d00"] == "" {
		t.Errorf("rollout state after the rollback: %+v", st)
	}
}

// An offline device counts against its batch (it never blocks the
// rollout): with a threshold of 75 % a batch of four passes without it,
// with 100 % it fails at once naming it. Either way its desired state
// holds its batch's generation, for when it comes back.
func TestAnOfflineDeviceCountsAgainstItsBatch(t *testing.T) {
	for _, c := range []struct {
		threshold int
		phase     string
	}{{75, v1.RolloutSucceeded}, {100, v1.RolloutPaused}} {
		t.Run(fmt.Sprint(c.threshold), func(t *testing.T) {
			f, opts := rolloutFixture(t, 3)
			f.put(t, f.b.DeviceInfo, "d03", v1.DeviceInfo{V: 1, ID: "d03"}) // no heartbeat: offline
			defer run(t, New(f.b, quiet(), opts))()
			f.waitKeys(t, 4)
			rollOut(t, f, 2, &v1.RolloutSpec{Batches: []v1.RolloutBatch{{Percent: intp(100)}}, SuccessThreshold: intp(c.threshold)})
			for _, id := range []string{"d00", "d01", "d02"} {
				f.report(t, id, 2, v1.PhaseReady)
			}
			retry.Until(t, 10*time.Second, func() error {
				if st := f.rollout(t); st.Phase != c.phase {
					return fmt.Errorf("phase %s (%s), want %s", st.Phase, st.Reason, c.phase)
				}
				return nil
			})
			if st := f.rollout(t); c.phase == v1.RolloutPaused {
				if st.Failed["d03"] != FailedOffline {
					t.Errorf("failed devices %v, want d03 offline", st.Failed)
				}
				// A person resumes (as the API does): the offline device
				// is excused, and the batch passes without it.
				st.Phase, st.Failed, st.Excused = v1.RolloutProgressing, nil, []string{"d03"}
				st.Resumes++
				f.put(t, f.b.Rollouts, "web", st)
				retry.Until(t, 10*time.Second, func() error {
					if st := f.rollout(t); st.Phase != v1.RolloutSucceeded {
						return fmt.Errorf("after the resume: phase %s (%s)", st.Phase, st.Reason)
					}
					return nil
				})
			}
			retry.Until(t, 10*time.Second, func() error {
				if g := f.generations(t); g["d03"] != 2 {
					return fmt.Errorf("the offline device's desired state holds generation %d, want its batch's 2", g["d03"])
				}
				return nil
			})
		})
	}
}

// A device that leaves the fleet during its batch no longer counts: the
// batch it was alone in passes, and the rollout goes on.
func TestADeviceThatLeavesDoesNotHoldItsBatch(t *testing.T) {
	f, opts := rolloutFixture(t, 3)
	defer run(t, New(f.b, quiet(), opts))()
	f.waitKeys(t, 3)
	rollOut(t, f, 2, &v1.RolloutSpec{Batches: []v1.RolloutBatch{{Count: intp(1)}, {Percent: intp(100)}}})
	f.onGen2(t, "d00")
	f.deleteKey(t, f.b.DeviceInfo, "d00")
	f.onGen2(t, "d01", "d02")
}

// maxUpdating: at most two devices of the batch have the change and have
// not yet shown it Ready; each one Ready lets one more have it.
func TestMaxUpdatingBoundsTheDevicesUpdatingAtOnce(t *testing.T) {
	f, opts := rolloutFixture(t, 4)
	defer run(t, New(f.b, quiet(), opts))()
	f.waitKeys(t, 4)
	rollOut(t, f, 2, &v1.RolloutSpec{Batches: []v1.RolloutBatch{{Percent: intp(100)}}, MaxUpdating: 2})
	f.onGen2(t, "d00", "d01")
	retry.Holds(t, 300*time.Millisecond, func() error {
		if got := onGen(f.generations(t), 2); len(got) != 2 {
			return fmt.Errorf("devices on generation 2 with none Ready: %v", got)
		}
		return nil
	})
	f.report(t, "d00", 2, v1.PhaseReady)
	f.onGen2(t, "d00", "d01", "d02")
	f.report(t, "d01", 2, v1.PhaseReady)
	f.report(t, "d02", 2, v1.PhaseReady)
	f.onGen2(t, "d00", "d01", "d02", "d03")
	f.report(t, "d03", 2, v1.PhaseReady)
	f.waitPhase(t, v1.RolloutSucceeded)
}

// Two servers: the lease moves in the middle of a rollout. The new
// holder goes on at the batch the store says, the old one writes nothing
// a rollout decides any more, and no device is taken back.
func TestARolloutGoesOnWhenTheLeaseMoves(t *testing.T) {
	f, opts := rolloutFixture(t, 6)
	a, b := &switchLease{}, &switchLease{}
	a.held.Store(true)
	optsA, optsB := opts, opts
	optsA.Lease, optsB.Lease = a, b
	defer run(t, New(f.b, quiet(), optsA))()
	defer run(t, New(f.b, quiet(), optsB))()
	f.waitKeys(t, 6)
	rollOut(t, f, 2, &v1.RolloutSpec{Batches: []v1.RolloutBatch{{Count: intp(1)}, {Count: intp(2)}, {Percent: intp(100)}}})
	f.onGen2(t, "d00")
	f.report(t, "d00", 2, v1.PhaseReady)
	f.onGen2(t, "d00", "d01", "d02")
	// The lease moves to b; a keeps running with its view.
	a.held.Store(false)
	b.held.Store(true)
	retry.Holds(t, 500*time.Millisecond, func() error {
		if st := f.rollout(t); st.Batch != 1 || st.Phase != v1.RolloutProgressing {
			return fmt.Errorf("after the lease moved: batch %d %s, want batch 1 (the second) Progressing", st.Batch, st.Phase)
		}
		if got := onGen(f.generations(t), 2); len(got) != 3 {
			return fmt.Errorf("after the lease moved: generation 2 on %v", got)
		}
		return nil
	})
	f.report(t, "d01", 2, v1.PhaseReady)
	f.report(t, "d02", 2, v1.PhaseReady)
	f.onGen2(t, "d00", "d01", "d02", "d03", "d04", "d05")
	for _, id := range []string{"d03", "d04", "d05"} {
		f.report(t, id, 2, v1.PhaseReady)
	}
	f.waitPhase(t, v1.RolloutSucceeded)
}

// While a rollout goes on, a device's desired state carries the versions
// of the secrets of the spec it gets, not those of the other spec.
func TestEachDeviceGetsOnlyItsSpecsSecretVersions(t *testing.T) {
	withSecret := func(gen int64, secret string) v1.Deployment {
		d := deployment("web", gen, nil)
		spec, _ := json.Marshal(map[string]any{"path": "/etc/harmony/web", "contentFrom": map[string]string{"secret": secret, "key": "k"}})
		d.Spec.Resources = []v1.Resource{{ID: "f", Kind: v1.KindFile, Spec: spec}}
		return d
	}
	from, to := withSecret(1, "old"), withSecret(2, "new")
	st := &v1.RolloutState{V: 1, To: 2, Batches: [][]string{{"a"}, {"b"}}, Released: 1, Phase: v1.RolloutProgressing}
	out, err := Render(map[string]v1.Deployment{"web": to}, map[string]*Rollout{"web": {From: &from, State: st, pos: st.Positions()}},
		map[string]map[string]string{"web": {"old": "v-old", "new": "v-new"}}, map[string]Device{"a": dev("a", nil), "b": dev("b", nil)})
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]map[string]string{"a.web": {"new": "v-new"}, "b.web": {"old": "v-old"}} {
		ds, err := v1.DecodeDesiredState(out[key])
		if err != nil || !maps.Equal(ds.Secrets, want) {
			t.Errorf("%s: secrets %v (%v), want %v", key, ds.Secrets, err, want)
		}
	}
}
