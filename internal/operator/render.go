package operator

import (
	"bytes"
	"sort"
	"strconv"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Device is what the operator knows of one device.
type Device struct {
	Info v1.DeviceInfo
	// Overrides are labels set from the control plane: a value sets the
	// label, nil removes it. They win over what the agent reports.
	Overrides map[string]*string
}

// Labels are the device's effective labels: the agent's, then the control
// plane's overrides on top.
func (d Device) Labels() map[string]string {
	out := map[string]string{}
	for k, v := range d.Info.Labels {
		out[k] = v
	}
	for k, v := range d.Overrides {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = *v
		}
	}
	return out
}

// Render returns, for every (device, deployment) match, the desired-state
// key and its canonical bytes. It is pure: the same deployments, rollouts,
// secret versions and devices always give the same bytes, so several
// operators render identically. rollouts holds the deployments' rollout
// states (nil: none); a live one gives each device the generation of its
// batch (pick). secrets holds, by deployment, the versions of the secrets
// it uses (nil: none).
func Render(deployments map[string]v1.Deployment, rollouts map[string]*Rollout, secrets map[string]map[string]string, devices map[string]Device) (map[string][]byte, error) {
	out := map[string][]byte{}
	versions := newSpecSecrets(secrets)
	names := make([]string, 0, len(deployments))
	for n := range deployments {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, id := range sortedDeviceIDs(devices) {
		labels := devices[id].Labels()
		for _, n := range names {
			d, ok := pick(id, labels, deployments[n], rollouts[n])
			if !ok {
				continue
			}
			b, err := desiredBytes(id, n, d, versions.of(n, d))
			if err != nil {
				return nil, err
			}
			out[v1.DeviceKey(id, n)] = b
		}
	}
	return out, nil
}

// pick is the deployment a device gets of d: d itself when it matches,
// unless a live rollout of d has not reached it yet; then the rollout's
// From when that matches the device, else nothing yet.
func pick(id string, labels map[string]string, d v1.Deployment, r *Rollout) (v1.Deployment, bool) {
	matches := d.Spec.Selector.Matches(labels)
	if r == nil || r.From == nil {
		return d, matches
	}
	st := r.state(d) // nil: not started (Pending)
	if st != nil && st.Done() {
		return d, matches
	}
	if matches && st != nil {
		pos, ok := r.pos[id]
		if st.Has(pos, ok) {
			return d, true
		}
	}
	if r.From.Spec.Selector.Matches(labels) {
		return *r.From, true
	}
	return v1.Deployment{}, false
}

func sortedDeviceIDs(devices map[string]Device) []string {
	ids := make([]string, 0, len(devices))
	for id := range devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// specSecrets gives the versions of the secrets one spec uses out of its
// deployment's (while a rollout goes on, those of both its specs: a
// device may read only the secrets its own desired state names). Each
// spec is looked at once a pass, not once a device.
type specSecrets struct {
	all  map[string]map[string]string // by deployment
	memo map[string]map[string]string // by deployment and generation
}

func newSpecSecrets(all map[string]map[string]string) *specSecrets {
	return &specSecrets{all: all, memo: map[string]map[string]string{}}
}

func (s *specSecrets) of(name string, d v1.Deployment) map[string]string {
	all := s.all[name]
	if len(all) == 0 {
		return all
	}
	key := name + "/" + strconv.FormatInt(d.Metadata.Generation, 10)
	if v, ok := s.memo[key]; ok {
		return v
	}
	var only map[string]string
	for _, n := range d.SecretNames() {
		if only == nil {
			only = map[string]string{}
		}
		only[n] = all[n]
	}
	s.memo[key] = only
	return only
}

// desiredBytes is the canonical desired-state value of one match; secrets
// are the versions of the secrets the deployment uses ("" for one that
// does not exist).
func desiredBytes(id, name string, d v1.Deployment, secrets map[string]string) ([]byte, error) {
	resources := d.Spec.Resources
	if resources == nil {
		resources = []v1.Resource{}
	}
	return v1.Marshal(v1.DesiredState{V: v1.FormatVersion, Device: id, Deployment: name, UID: d.Metadata.UID,
		Generation: d.Metadata.Generation, Resources: resources, Secrets: secrets})
}

// A render pass is a plan and its application (pass.go). The plan is pure:
// from the deployments and devices (as copied from the view), the bytes
// last rendered (want) and the stored desired-state entries, it says which
// keys to create, update, or consider for removal. Applying it does the
// store writes, lets the orphan grace and guard decide the removals, and
// keeps the books.

// wantChange is what a pass changes in the desired-state bytes the
// operator wants.
type wantChange struct {
	// replace: set is all that is wanted (a full pass). Else set changes
	// want key by key, a nil value meaning the key is no longer wanted.
	replace bool
	set     map[string][]byte
}

// planWant works out a pass's change to want: for a full pass every match
// (Render), else the pairs of the devices and deployments that changed.
// devices holds every device when the pass is full or deployments
// changed, else only the changed devices that still exist. want is only
// read.
func planWant(w work, deployments map[string]v1.Deployment, rollouts map[string]*Rollout, secrets map[string]map[string]string, devices map[string]Device, want map[string][]byte) (wantChange, error) {
	if w.full {
		set, err := Render(deployments, rollouts, secrets, devices)
		return wantChange{replace: true, set: set}, err
	}
	c := wantChange{set: map[string][]byte{}}
	versions := newSpecSecrets(secrets)
	wanted := func(key string) bool {
		if b, ok := c.set[key]; ok {
			return b != nil
		}
		_, ok := want[key]
		return ok
	}
	pair := func(id string, d Device, known bool, name string, dep v1.Deployment, exists bool) error {
		key := v1.DeviceKey(id, name)
		var got v1.Deployment
		ok := false
		if known && exists {
			got, ok = pick(id, d.Labels(), dep, rollouts[name])
		}
		if !ok {
			if wanted(key) {
				c.set[key] = nil
			}
			return nil
		}
		b, err := desiredBytes(id, name, got, versions.of(name, got))
		if err != nil {
			return err
		}
		c.set[key] = b
		return nil
	}
	for id := range w.devices {
		d, known := devices[id]
		for name, dep := range deployments {
			if err := pair(id, d, known, name, dep, true); err != nil {
				return wantChange{}, err
			}
		}
	}
	for name := range w.deployments {
		dep, exists := deployments[name]
		for id, d := range devices {
			if err := pair(id, d, true, name, dep, exists); err != nil {
				return wantChange{}, err
			}
		}
		if !exists { // devices gone meanwhile keep no key of it either
			for key := range want {
				if _, n, err := v1.SplitDeviceKey(key); err == nil && n == name {
					c.set[key] = nil
				}
			}
		}
	}
	return c, nil
}

// applyTo returns want after the change (changed in place unless replaced).
func (c wantChange) applyTo(want map[string][]byte) map[string][]byte {
	if c.replace {
		return c.set
	}
	for k, b := range c.set {
		if b == nil {
			delete(want, k)
		} else {
			want[k] = b
		}
	}
	return want
}

// toCheck is the keys a pass looks at, sorted: those whose wanted bytes
// may have changed, and those that changed in the store (w.keys, or for a
// full pass every stored key).
func (c wantChange) toCheck(w work, stored map[string]store.Entry) []string {
	check := make(map[string]bool, len(c.set)+len(w.keys)+len(stored))
	for k := range c.set {
		check[k] = true
	}
	if w.full {
		for k := range stored {
			check[k] = true
		}
	} else {
		for k := range w.keys {
			check[k] = true
		}
	}
	return sortedKeys(check)
}

// write is a create (rev 0) or an update conditional on rev.
type write struct {
	key   string
	value []byte
	rev   uint64
}

// writePlan is what a pass does to the desired-state bucket.
type writePlan struct {
	writes []write
	// orphans are stored keys of this operator's form that nothing wants,
	// with the revision a delete is conditional on: the orphan grace and
	// the guard decide which go.
	orphans []removal
}

// planWrites compares, for each key to check (sorted), the wanted bytes
// with the stored entry (have). A stored value with a later generation
// than the deployment known here was written by an operator with a
// fresher view: it is left alone, never rolled back.
func planWrites(check []string, want map[string][]byte, have map[string]store.Entry, deployments map[string]v1.Deployment, heldBack func(key string) bool) writePlan {
	var p writePlan
	for _, key := range check {
		b, wanted := want[key]
		cur, stored := have[key]
		switch {
		case wanted && stored && bytes.Equal(cur.Value, b):
		case wanted && heldBack(key):
			// A rollout decides these bytes: only the lease holder writes.
		case wanted && stored && newerGeneration(cur.Value, deployments, key):
		case wanted && stored:
			p.writes = append(p.writes, write{key: key, value: b, rev: cur.Revision})
		case wanted:
			p.writes = append(p.writes, write{key: key, value: b})
		case !stored:
			// neither wanted nor there
		default:
			if _, _, err := v1.SplitDeviceKey(key); err != nil {
				continue // not a key this operator writes: leave it alone
			}
			p.orphans = append(p.orphans, removal{key: key, rev: cur.Revision})
		}
	}
	return p
}

// graceOrphans is the orphan grace: an orphan is removed only once it has
// stayed an orphan for a moment (another operator's view may be ahead of
// ours: a device that just started matching; and a removal tells the agent
// to delete what runs). It marks the orphans first seen now in marks and
// returns those past their grace, for the guard, and those that wait.
func graceOrphans(marks map[string]orphanMark, orphans []removal, now time.Time, full bool, grace time.Duration) (ready []removal, waiting []string) {
	for _, r := range orphans {
		m, seen := marks[r.key]
		if !seen {
			m.since = now
		}
		m.full = m.full || full
		marks[r.key] = m
		if !seen || now.Sub(m.since) < grace {
			waiting = append(waiting, r.key)
			continue
		}
		r.full = m.full
		ready = append(ready, r)
	}
	return ready, waiting
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// newerGeneration reports whether the stored desired value of key carries a
// later generation than the deployment this operator knows.
func newerGeneration(stored []byte, deployments map[string]v1.Deployment, key string) bool {
	_, dep, err := v1.SplitDeviceKey(key)
	if err != nil {
		return false
	}
	ds, err := v1.DecodeDesiredState(stored)
	if err != nil {
		return false
	}
	return ds.Generation > deployments[dep].Metadata.Generation
}
