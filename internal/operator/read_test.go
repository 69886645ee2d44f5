package operator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/store/memstore"
)

const readStaleness = time.Minute

// viewOperator is an operator that is fed events by hand (no Run).
func viewOperator(t testing.TB) *Operator {
	t.Helper()
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
	return New(b, slog.New(slog.DiscardHandler), Options{Staleness: readStaleness})
}

// ev is one change to the view: value nil deletes the key. A heartbeat
// seen for the first time is as old as age.
type ev struct {
	bucket, key string
	value       any
	age         time.Duration
}

func (e ev) applyTo(o *Operator) {
	if e.value == nil {
		o.apply(e.bucket, store.Entry{Key: e.key, Op: store.OpDelete})
		return
	}
	raw, _ := json.Marshal(e.value)
	o.apply(e.bucket, store.Entry{Key: e.key, Value: raw, Op: store.OpPut, Created: time.Now().Add(-e.age)})
}

func depEv(name string, gen int64, sel map[string]string) ev {
	return ev{bucket: "deployments", key: name, value: v1.StoredDeployment{V: 1, Deployment: deployment(name, gen, sel)}}
}

func devEv(id string, labels map[string]string) ev {
	return ev{bucket: "device-info", key: id, value: v1.DeviceInfo{V: 1, ID: id, Labels: labels,
		Inventory: v1.Inventory{Hostname: id, OS: "linux", Arch: "arm64", CPUs: 4}}}
}

func beatEv(id string, seq uint64, age time.Duration) ev {
	return ev{bucket: "device-heartbeat", key: id, value: v1.Heartbeat{V: 1, Boot: "b", Seq: seq}, age: age}
}

func stateEv(id, dep string, gen int64, phase, msg string) ev {
	return ev{bucket: "device-state", key: v1.DeviceKey(id, dep), value: v1.DeviceState{V: 1, Device: id, Deployment: dep,
		ObservedGeneration: gen, Phase: phase, Message: msg}}
}

func del(bucket, key string) ev { return ev{bucket: bucket, key: key} }

// The answers as they were computed before the read model: from a copy of
// the whole view, the whole fleet aggregated.

func oldDeployment(s Snapshot, name string) (v1.Deployment, DeploymentStatus, bool) {
	d, ok := s.Deployments[name]
	if !ok {
		return v1.Deployment{}, DeploymentStatus{}, false
	}
	return d, Aggregate(s)[name], true
}

func oldDevice(s Snapshot, id string) (DeviceDetail, bool) {
	for _, d := range Devices(s) {
		if d.ID != id {
			continue
		}
		out := DeviceDetail{Status: d, Info: s.Devices[id].Info}
		for _, name := range sortedKeys(s.Deployments) {
			if st, ok := s.States[v1.DeviceKey(id, name)]; ok {
				out.States = append(out.States, st)
			}
		}
		return out, true
	}
	return DeviceDetail{}, false
}

func jsonOf(v ...any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// sameAnswers checks that, for every name and id asked about, the narrow
// answers (from the operator and from a snapshot) are the JSON the old
// full aggregation gives.
func sameAnswers(o *Operator, names, ids []string) error {
	now := time.Now()
	snap := o.snapshotAt(now)
	for _, name := range names {
		want := jsonOf(oldDeployment(snap, name))
		if got := jsonOf(o.deploymentAt(name, now)); got != want {
			return fmt.Errorf("deployment %s:\n got %s\nwant %s", name, got, want)
		}
		if got := jsonOf(DeploymentOf(snap, name)); got != want {
			return fmt.Errorf("DeploymentOf %s:\n got %s\nwant %s", name, got, want)
		}
	}
	for _, id := range ids {
		want := jsonOf(oldDevice(snap, id))
		if got := jsonOf(o.deviceAt(id, now)); got != want {
			return fmt.Errorf("device %s:\n got %s\nwant %s", id, got, want)
		}
		if got := jsonOf(DeviceOf(snap, id)); got != want {
			return fmt.Errorf("DeviceOf %s:\n got %s\nwant %s", id, got, want)
		}
		// Heartbeats are fresh or older than twice the staleness: the
		// instants of the two reads do not matter.
		_, known := snap.Devices[id]
		if online, k := o.Online(id); online != snap.Online(id) || k != known {
			return fmt.Errorf("Online(%s) = %v, %v; snapshot: %v, %v", id, online, k, snap.Online(id), known)
		}
	}
	return nil
}

func TestReadModelMatchesTheFullAggregation(t *testing.T) {
	home, office := map[string]string{"site": "home"}, map[string]string{"site": "office"}
	stale := 2 * readStaleness
	cases := []struct {
		name   string
		events []ev
	}{
		{"empty view", nil},
		{"offline devices: stale, never beat, heartbeat deleted", []ev{
			depEv("web", 1, nil),
			devEv("fresh", home), beatEv("fresh", 1, 0), stateEv("fresh", "web", 1, v1.PhaseReady, ""),
			devEv("stale", home), beatEv("stale", 1, stale), stateEv("stale", "web", 1, v1.PhaseFailed, "boom"),
			devEv("never", office), stateEv("never", "web", 1, v1.PhaseReady, ""),
			devEv("gone-beat", office), beatEv("gone-beat", 1, 0), del("device-heartbeat", "gone-beat"),
		}},
		{"devices matching no deployment, labels overridden", []ev{
			depEv("web", 1, home), depEv("db", 2, map[string]string{"role": "db"}),
			devEv("a", home), beatEv("a", 1, 0),
			devEv("b", office), beatEv("b", 1, 0),
			devEv("c", office), beatEv("c", 1, 0),
			{bucket: "device-labels", key: "c", value: v1.DeviceLabels{V: 1, Overrides: map[string]*string{"site": str("home")}}},
			devEv("d", home), beatEv("d", 1, 0),
			{bucket: "device-labels", key: "d", value: v1.DeviceLabels{V: 1, Overrides: map[string]*string{"site": nil}}},
			devEv("lonely", nil),
		}},
		{"deleted deployments keep no line, and their statuses are not listed", []ev{
			depEv("web", 1, nil), depEv("db", 1, nil), depEv("cache", 1, nil),
			devEv("a", home), beatEv("a", 1, 0),
			stateEv("a", "web", 1, v1.PhaseReady, ""), stateEv("a", "db", 1, v1.PhaseFailed, "disk full"),
			stateEv("a", "cache", 1, v1.PhaseReady, ""),
			del("deployments", "db"), del("deployments", "cache"), depEv("cache", 2, nil),
		}},
		{"stale status generations", []ev{
			depEv("web", 3, nil),
			devEv("behind", home), beatEv("behind", 1, 0), stateEv("behind", "web", 2, v1.PhaseReady, ""),
			devEv("current", home), beatEv("current", 1, 0), stateEv("current", "web", 3, v1.PhaseReady, ""),
			devEv("failed-old", home), beatEv("failed-old", 1, 0), stateEv("failed-old", "web", 1, v1.PhaseFailed, "old"),
			devEv("ahead", home), beatEv("ahead", 1, 0), stateEv("ahead", "web", 4, v1.PhaseReady, ""),
		}},
		{"several failing: the last error is the last failing online device's", []ev{
			depEv("web", 1, nil),
			devEv("f1", home), beatEv("f1", 1, 0), stateEv("f1", "web", 1, v1.PhaseFailed, "one"),
			devEv("f3", home), beatEv("f3", 1, 0), stateEv("f3", "web", 1, v1.PhaseConflict, "three"),
			devEv("f2", home), beatEv("f2", 1, 0), stateEv("f2", "web", 1, v1.PhaseFailed, "two"),
			devEv("f4", home), beatEv("f4", 1, stale), stateEv("f4", "web", 1, v1.PhaseFailed, "offline"),
			stateEv("f1", "web", 1, v1.PhaseFailed, "one again"),
		}},
		{"a device gone keeps its statuses and heartbeat in the store", []ev{
			depEv("web", 1, nil),
			devEv("a", home), beatEv("a", 1, 0), stateEv("a", "web", 1, v1.PhaseReady, ""),
			devEv("b", home), beatEv("b", 1, 0), stateEv("b", "web", 1, v1.PhaseFailed, "x"),
			del("device-info", "b"),
		}},
		{"a device relabelled out keeps its last status", []ev{
			depEv("web", 1, home), depEv("all", 1, nil),
			devEv("a", home), beatEv("a", 1, 0), stateEv("a", "web", 1, v1.PhaseReady, ""), stateEv("a", "all", 1, v1.PhaseProgressing, ""),
			devEv("a", office), stateEv("a", "nodeployment", 1, v1.PhaseReady, ""),
		}},
		{"statuses deleted and undecodable", []ev{
			depEv("web", 1, nil),
			devEv("a", home), beatEv("a", 1, 0), stateEv("a", "web", 1, v1.PhaseReady, ""), del("device-state", "a.web"),
			devEv("b", home), beatEv("b", 1, 0), {bucket: "device-state", key: "b.web", value: map[string]any{"v": 99}},
		}},
	}
	names := []string{"web", "db", "cache", "all", "nodeployment"}
	ids := []string{"fresh", "stale", "never", "gone-beat", "a", "b", "c", "d", "lonely", "behind", "current",
		"failed-old", "ahead", "f1", "f2", "f3", "f4", "unknown"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := viewOperator(t)
			for _, e := range c.events {
				e.applyTo(o)
			}
			if err := sameAnswers(o, names, ids); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestReadModelMatchesTheFullAggregationRandomly feeds an operator random
// events and compares the narrow answers with the full aggregation after
// each one.
func TestReadModelMatchesTheFullAggregationRandomly(t *testing.T) {
	o := viewOperator(t)
	rng := rand.New(rand.NewPCG(3, 4))
	devices := []string{"a", "b", "c", "d", "e", "gone"}
	deps := []string{"web", "db", "cache"}
	sites := []string{"home", "office"}
	phases := []string{v1.PhaseReady, v1.PhaseFailed, v1.PhaseConflict, v1.PhaseProgressing}
	gens := map[string]int64{}
	for step := range 2000 {
		dev, dep := devices[rng.IntN(len(devices))], deps[rng.IntN(len(deps))]
		var e ev
		switch rng.IntN(9) {
		case 0:
			gens[dep]++
			sel := map[string]string{}
			if rng.IntN(2) == 0 {
				sel["site"] = sites[rng.IntN(2)]
			}
			e = depEv(dep, gens[dep], sel)
		case 1:
			e = del("deployments", dep)
		case 2:
			e = devEv(dev, map[string]string{"site": sites[rng.IntN(2)]})
		case 3:
			e = del("device-info", dev)
		case 4:
			site := sites[rng.IntN(2)]
			e = ev{bucket: "device-labels", key: dev, value: v1.DeviceLabels{V: 1, Overrides: map[string]*string{"site": &site}}}
		case 5, 6:
			e = stateEv(dev, dep, gens[dep]-int64(rng.IntN(2)), phases[rng.IntN(len(phases))], fmt.Sprint("m", step))
		case 7:
			age := time.Duration(0)
			if _, seen := o.beats[dev]; !seen && rng.IntN(2) == 0 {
				age = 2 * readStaleness
			}
			e = beatEv(dev, uint64(step), age)
		case 8:
			if rng.IntN(2) == 0 {
				e = del("device-heartbeat", dev)
			} else {
				e = del("device-state", v1.DeviceKey(dev, dep))
			}
		}
		e.applyTo(o)
		if err := sameAnswers(o, append(deps, "none"), append(devices, "none")); err != nil {
			t.Fatalf("step %d (%s %s): %v", step, e.bucket, e.key, err)
		}
	}
}

// BenchmarkReadModel10k measures, in process, the answers about one
// deployment and one device over a view of 10,000 devices (one deployment
// selecting all of them, half Ready, a tenth Failed), against the same
// answers computed as before the read model (a snapshot of the whole view,
// aggregated). "deployment-locked" is the part of "deployment" that holds
// the operator's read lock.
func BenchmarkReadModel10k(b *testing.B) {
	const devices = 10000
	o := viewOperator(b)
	depEv("fleet", 1, nil).applyTo(o)
	for i := range devices {
		id := fmt.Sprintf("dev-%05d", i)
		phase := v1.PhaseProgressing
		switch {
		case i%10 == 0:
			phase = v1.PhaseFailed
		case i%2 == 0:
			phase = v1.PhaseReady
		}
		devEv(id, map[string]string{"site": []string{"home", "office"}[i%2]}).applyTo(o)
		beatEv(id, 1, 0).applyTo(o)
		stateEv(id, "fleet", 1, phase, "m").applyTo(o)
	}
	const one = "dev-04242"
	for _, c := range []struct {
		name string
		read func()
	}{
		{"deployment", func() { o.Deployment("fleet") }},
		{"deployment-locked", func() { o.deploymentLines("fleet", time.Now()) }},
		{"device", func() { o.Device(one) }},
		{"online", func() { o.Online(one) }},
		{"deployment-from-snapshot", func() { oldDeployment(o.Snapshot(), "fleet") }},
		{"device-from-snapshot", func() { oldDevice(o.Snapshot(), one) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.read()
			}
		})
	}
}
