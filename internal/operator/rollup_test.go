package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/store/memstore"
)

// TestRollupMatchesAggregate feeds an operator random events (deployments
// created, changed and deleted, devices relabelled and gone, statuses,
// heartbeats fresh and stale) and checks after each one that the counts
// kept event by event equal the counts recomputed from a snapshot.
func TestRollupMatchesAggregate(t *testing.T) {
	ctx := context.Background()
	ms := memstore.New()
	kv := func(name string) store.KV {
		k, err := ms.Ensure(ctx, store.BucketConfig{Name: name, History: 1, Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	b := Buckets{Deployments: kv("deployments"), DesiredState: kv("desired-state"), DeviceInfo: kv("device-info"),
		DeviceState: kv("device-state"), DeviceHeartbeat: kv("device-heartbeat"), DeviceLabels: kv("device-labels")}
	const staleness = time.Minute
	o := New(b, slog.New(slog.DiscardHandler), Options{Staleness: staleness})
	rng := rand.New(rand.NewPCG(1, 2))
	devices := []string{"a", "b", "c", "d", "e", "f"}
	deps := []string{"web", "db", "cache"}
	sites := []string{"home", "office"}
	phases := []string{v1.PhaseReady, v1.PhaseFailed, v1.PhaseConflict, v1.PhaseProgressing}
	put := func(bucket, key string, v any) {
		raw, _ := json.Marshal(v)
		o.apply(bucket, store.Entry{Key: key, Value: raw, Op: store.OpPut, Created: time.Now()})
	}
	del := func(bucket, key string) { o.apply(bucket, store.Entry{Key: key, Op: store.OpDelete}) }
	gens := map[string]int64{}
	for step := 0; step < 3000; step++ {
		dev, dep := devices[rng.IntN(len(devices))], deps[rng.IntN(len(deps))]
		var what string
		switch rng.IntN(8) {
		case 0:
			gens[dep]++
			sel := map[string]string{}
			if rng.IntN(2) == 0 {
				sel["site"] = sites[rng.IntN(2)]
			}
			put(b.Deployments.Bucket(), dep, v1.StoredDeployment{V: 1, Deployment: deployment(dep, gens[dep], sel)})
			what = "deployment " + dep
		case 1:
			if rng.IntN(4) == 0 {
				del(b.Deployments.Bucket(), dep)
				what = "delete deployment " + dep
			} else {
				put(b.DeviceInfo.Bucket(), dev, v1.DeviceInfo{V: 1, ID: dev, Labels: map[string]string{"site": sites[rng.IntN(2)]}})
				what = "device " + dev
			}
		case 2:
			if rng.IntN(3) == 0 {
				del(b.DeviceInfo.Bucket(), dev)
				what = "delete device " + dev
			} else {
				site := sites[rng.IntN(2)]
				put(b.DeviceLabels.Bucket(), dev, v1.DeviceLabels{V: 1, Overrides: map[string]*string{"site": &site}})
				what = "label " + dev
			}
		case 3, 4:
			put(b.DeviceState.Bucket(), v1.DeviceKey(dev, dep), v1.DeviceState{V: 1, Device: dev, Deployment: dep,
				ObservedGeneration: gens[dep] - int64(rng.IntN(2)), Phase: phases[rng.IntN(len(phases))], Message: "m"})
			what = "state " + dev + "." + dep
		case 5:
			if rng.IntN(5) == 0 {
				del(b.DeviceState.Bucket(), v1.DeviceKey(dev, dep))
				what = "delete state"
				break
			}
			fallthrough
		case 6:
			// A heartbeat: fresh, or first seen long ago (stale).
			raw, _ := json.Marshal(v1.Heartbeat{V: 1, Boot: "x", Seq: uint64(step)})
			created := time.Now()
			if _, seen := o.beats[dev]; !seen && rng.IntN(2) == 0 {
				created = created.Add(-2 * staleness)
			}
			o.apply(b.DeviceHeartbeat.Bucket(), store.Entry{Key: dev, Value: raw, Op: store.OpPut, Created: created})
			what = "heartbeat " + dev
		case 7:
			del(b.DeviceHeartbeat.Bucket(), dev)
			what = "delete heartbeat " + dev
		}
		if err := sameCounts(o); err != nil {
			t.Fatalf("step %d (%s): %v", step, what, err)
		}
	}
}

func sameCounts(o *Operator) error {
	snap := o.Snapshot()
	roll := o.Rollup()
	agg := Aggregate(snap)
	if len(agg) != len(roll.Deployments) {
		return fmt.Errorf("%d deployments rolled up, %d aggregated", len(roll.Deployments), len(agg))
	}
	for name, a := range agg {
		r := roll.Deployments[name]
		if r.Generation != a.Generation || r.Matched != a.Matched || r.Succeeded != a.Succeeded || r.Failed != a.Failed ||
			r.Pending != a.Pending || r.Offline != a.Offline || (r.LastError == "") != (a.LastError == "") {
			a.Devices = nil
			return fmt.Errorf("%s: rolled up %+v, aggregated %+v", name, r, a)
		}
		// The last error names a device failing now.
		if r.LastError != "" {
			dev, _, _ := strings.Cut(r.LastError, ": ")
			failing := false
			for _, d := range a.Devices {
				failing = failing || (d.Device == dev && d.Online && (d.Phase == v1.PhaseFailed || d.Phase == v1.PhaseConflict))
			}
			if !failing {
				return fmt.Errorf("%s: last error %q names a device that is not failing", name, r.LastError)
			}
		}
	}
	online, offline := 0, 0
	for id := range snap.Devices {
		if snap.Online(id) {
			online++
		} else {
			offline++
		}
	}
	if roll.Online != online || roll.Offline != offline || len(roll.OfflineIDs) != offline {
		return fmt.Errorf("devices: rolled up %d online, %d offline; snapshot %d, %d", roll.Online, roll.Offline, online, offline)
	}
	conflicts := 0
	for _, st := range snap.States {
		if st.Phase == v1.PhaseConflict {
			conflicts++
		}
	}
	if len(roll.Conflicts) != conflicts {
		return fmt.Errorf("%d conflicts rolled up, %d in the snapshot", len(roll.Conflicts), conflicts)
	}
	return nil
}
