package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// natsFixture is the operator's buckets, and the leases bucket, in a real
// embedded NATS, and a way to wipe a bucket behind the operator's back.
func natsFixture(t *testing.T) (f fixture, leases store.KV, wipe func(store.KV)) {
	t.Helper()
	srv := meshtest.StartServer(t)
	nc := meshtest.Connect(t, srv)
	st, err := store.NewNATS(nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	config := func(name string) store.BucketConfig { return store.BucketConfig{Name: name, History: 1, Replicas: 1} }
	open := func(name string) store.KV {
		kv, err := st.Ensure(ctx, config(name))
		if err != nil {
			t.Fatal(err)
		}
		return kv
	}
	f = fixture{ctx: ctx, b: Buckets{Deployments: open("deployments"), DesiredState: open("desired-state"), DeviceInfo: open("device-info"),
		DeviceState: open("device-state"), DeviceHeartbeat: open("device-heartbeat"), DeviceLabels: open("device-labels")},
		spare: open("rollouts")}
	// A wiped bucket: every key gone at once, without a per-key delete
	// (the purge of the issue, which the store now refuses; here the
	// bucket's stream is deleted and made again, empty).
	wipe = func(kv store.KV) {
		t.Helper()
		if err := js.DeleteStream(ctx, "KV_"+kv.Bucket()); err != nil {
			t.Fatal(err)
		}
		open(kv.Bucket())
	}
	return f, open("leases"), wipe
}

func (f fixture) desiredKeys(t *testing.T) int {
	t.Helper()
	es, err := f.b.DesiredState.List(f.ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

func (f fixture) fleet(t *testing.T, devices int, deployments ...string) {
	t.Helper()
	for _, name := range deployments {
		f.put(t, f.b.Deployments, name, v1.StoredDeployment{V: 1, Deployment: deployment(name, 1, nil)})
	}
	for i := range devices {
		id := fmt.Sprintf("d%02d", i)
		f.put(t, f.b.DeviceInfo, id, v1.DeviceInfo{V: 1, ID: id})
	}
}

func (f fixture) waitKeys(t *testing.T, n int) {
	t.Helper()
	retry.Until(t, 10*time.Second, func() error {
		if got := f.desiredKeys(t); got != n {
			return fmt.Errorf("%d desired-state keys, want %d", got, n)
		}
		return nil
	})
}

func (f fixture) deleteKey(t *testing.T, kv store.KV, key string) {
	t.Helper()
	e, err := kv.Get(f.ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(f.ctx, key, e.Revision); err != nil {
		t.Fatal(err)
	}
}

func rendered(o *Operator) func() error {
	return func() error {
		if r, _ := o.Stats(); r < 1 || o.Phase() != Converged {
			return fmt.Errorf("phase %s, %d render passes", o.Phase(), r)
		}
		return nil
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// The attack of issue "Security II": the device-info bucket is wiped
// (no per-key delete), then the server restarts. The
// first full pass finds every desired-state key's device unknown; it must
// hold the removals instead of telling every agent to remove everything,
// report the hold, and remove the keys only once an admin releases them,
// through any server, by the server that holds the collection lease.
func TestRestartAfterADeviceInfoWipeHoldsTheRemovals(t *testing.T) {
	f, leases, wipe := natsFixture(t)
	const devices = 40
	f.fleet(t, devices, "web")
	collector := &switchLease{}
	collector.held.Store(true)
	opts := Options{Render: true, OrphanGrace: 50 * time.Millisecond, Lease: collector, Releases: leases}
	stop := run(t, New(f.b, quiet(), opts))
	f.waitKeys(t, devices)
	stop()
	wipe(f.b.DeviceInfo)
	if es, err := f.b.DeviceInfo.List(f.ctx, ""); err != nil || len(es) != 0 {
		t.Fatalf("device-info after the wipe: %d keys, %v", len(es), err)
	}

	// The restart: this server collects; another one does not.
	o := New(f.b, quiet(), opts)
	other := New(f.b, quiet(), Options{Render: true, OrphanGrace: 50 * time.Millisecond, Lease: &switchLease{}, Releases: leases})
	defer run(t, o)()
	defer run(t, other)()
	retry.Until(t, 10*time.Second, rendered(o))
	retry.Holds(t, time.Second, func() error { // 20 times the grace
		if n := f.desiredKeys(t); n != devices {
			return fmt.Errorf("the restarted operator removed %d of %d desired-state keys", devices-n, devices)
		}
		return nil
	})
	var h OrphanHold
	retry.Until(t, 5*time.Second, func() error {
		if h = o.OrphanHold(); h.Held != devices || other.OrphanHold().Fingerprint != h.Fingerprint {
			return fmt.Errorf("held %+v; the other server %+v", h, other.OrphanHold())
		}
		return nil
	})
	if h.Causes[CauseDeviceGone] != devices || h.Since == nil || len(h.Examples) == 0 || h.Examples[0] != "d00.web" || h.Bound != 10 {
		t.Fatalf("hold %+v", h)
	}
	if _, err := other.ReleaseOrphans(f.ctx, "not-the-hold", "test"); !errors.Is(err, ErrHoldChanged) {
		t.Fatalf("a release naming another hold: %v", err)
	}
	if n := f.desiredKeys(t); n != devices {
		t.Fatalf("%d keys removed before the release", devices-n)
	}

	// An admin releases the hold through the server that does not collect.
	if _, err := other.ReleaseOrphans(f.ctx, h.Fingerprint, "test"); err != nil {
		t.Fatal(err)
	}
	f.waitKeys(t, 0)
	retry.Until(t, 5*time.Second, func() error {
		for _, op := range []*Operator{o, other} {
			if h := op.OrphanHold(); h.Held != 0 || h.Approved != 0 {
				return fmt.Errorf("after the removal: %+v", h)
			}
		}
		return nil
	})
	if _, err := o.ReleaseOrphans(f.ctx, "", "test"); !errors.Is(err, ErrNothingHeld) {
		t.Fatalf("a release with nothing held: %v", err)
	}
}

// A hold clears by itself when the devices come back (their agents write
// their device info again): nothing is ever removed.
func TestAHoldClearsWhenTheDevicesComeBack(t *testing.T) {
	f := newFixture(t)
	const devices = 20
	f.fleet(t, devices, "web")
	opts := Options{Render: true, OrphanGrace: 50 * time.Millisecond}
	stop := run(t, New(f.b, quiet(), opts))
	f.waitKeys(t, devices)
	stop()
	for i := range devices {
		f.deleteKey(t, f.b.DeviceInfo, fmt.Sprintf("d%02d", i)) // while the operator is down
	}

	o := New(f.b, quiet(), opts)
	defer run(t, o)()
	retry.Until(t, 10*time.Second, func() error {
		if h := o.OrphanHold(); h.Held != devices {
			return fmt.Errorf("hold %+v", h)
		}
		return nil
	})
	_, writes := o.Stats()
	f.fleet(t, devices)
	retry.Until(t, 10*time.Second, func() error {
		if h := o.OrphanHold(); h.Held != 0 {
			return fmt.Errorf("hold %+v after the devices came back", h)
		}
		return nil
	})
	if n := f.desiredKeys(t); n != devices {
		t.Fatalf("%d desired-state keys removed", devices-n)
	}
	if _, w := o.Stats(); w != writes {
		t.Fatalf("%d writes or removals while the devices came back unchanged", w-writes)
	}
}

// What an admin does while the operator runs is not held: a deployment
// deleted removes its keys at once, however many; one device removed is
// collected. Many devices disappearing are held, however they trickle in.
func TestRemovalsWhileRunning(t *testing.T) {
	f := newFixture(t)
	const devices = 20
	f.fleet(t, devices, "web", "db")
	o := New(f.b, quiet(), Options{Render: true, OrphanGrace: 50 * time.Millisecond})
	defer run(t, o)()
	f.waitKeys(t, 2*devices) // bound: max(10, 4) = 10

	// One device gone: two device-gone removals, below the bound.
	f.deleteKey(t, f.b.DeviceInfo, "d00")
	f.waitKeys(t, 2*devices-2)

	// A deployment deleted: its 19 remaining keys at once.
	f.deleteKey(t, f.b.Deployments, "db")
	f.waitKeys(t, devices-1)
	if h := o.OrphanHold(); h.Held != 0 {
		t.Fatalf("a deployment deleted was held: %+v", h)
	}

	// Ten more devices gone, one after the other: with the two removals
	// already in the window, at most seven more may go.
	for i := 1; i <= 10; i++ {
		f.deleteKey(t, f.b.DeviceInfo, fmt.Sprintf("d%02d", i))
	}
	var h OrphanHold
	retry.Until(t, 10*time.Second, func() error {
		h = o.OrphanHold()
		if removed := devices - 1 - f.desiredKeys(t); h.Held+removed != 10 {
			return fmt.Errorf("held %d, removed %d of the 10", h.Held, removed)
		}
		return nil
	})
	if h.Held < 3 || h.Causes[CauseDeviceGone] != h.Held {
		t.Fatalf("a trickle of devices gone got through the guard: %+v", h)
	}
	// The hold is in force: one more device gone joins it.
	f.deleteKey(t, f.b.DeviceInfo, "d11")
	retry.Until(t, 10*time.Second, func() error {
		if got := o.OrphanHold(); got.Held != h.Held+1 {
			return fmt.Errorf("held %d, want %d", got.Held, h.Held+1)
		}
		return nil
	})
	// Released (no release bucket: this operator's hold at once).
	if _, err := o.ReleaseOrphans(f.ctx, "", "test"); err != nil {
		t.Fatal(err)
	}
	f.waitKeys(t, devices-12)
}
