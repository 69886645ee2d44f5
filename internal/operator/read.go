package operator

import (
	"maps"
	"slices"
	"strings"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// The read model: answers about one deployment or one device, read from the
// running roll-up's indexes (rollup.go) under the read lock. A deployment
// costs its matched devices (the lock is held while their lines are copied,
// the sort comes after); a device costs its deployments. Neither copies the
// view nor looks at the rest of the fleet. Each answer is the same as
// recomputing from a Snapshot (DeploymentOf, DeviceOf); the tests hold the
// two to each other.

// DeviceDetail is one device as its page shows it.
type DeviceDetail struct {
	Status DeviceStatus
	// Info is the device info as the agent reported it.
	Info v1.DeviceInfo
	// States are the device's status for every deployment that exists and
	// has one (a device that stopped matching keeps its last status), in
	// order of deployment name.
	States []v1.DeviceState
}

// Deployment returns one deployment and its roll-up, with the line of
// every matched device (sorted by device ID), as Aggregate computes it.
func (o *Operator) Deployment(name string) (v1.Deployment, DeploymentStatus, bool) {
	return o.deploymentAt(name, time.Now())
}

func (o *Operator) deploymentAt(name string, now time.Time) (v1.Deployment, DeploymentStatus, bool) {
	d, s, ok := o.deploymentLines(name, now)
	if !ok {
		return d, s, false
	}
	slices.SortFunc(s.Devices, func(a, b DevRoll) int { return strings.Compare(a.Device, b.Device) })
	// The last error is the last failing device's, in device order, as
	// Aggregate has it (the running counts keep the latest instead).
	for _, r := range slices.Backward(s.Devices) {
		if r.Online && (r.Phase == v1.PhaseFailed || r.Phase == v1.PhaseConflict) {
			s.LastError = r.Device + ": " + r.Message
			break
		}
	}
	return d, s, true
}

// deploymentLines is what deploymentAt reads under the lock: the counts
// and the matched devices' lines, unsorted, without the last error.
func (o *Operator) deploymentLines(name string, now time.Time) (v1.Deployment, DeploymentStatus, bool) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	d, ok := o.deployments[name]
	if !ok {
		return v1.Deployment{}, DeploymentStatus{}, false
	}
	gen := d.Metadata.Generation
	s := DeploymentStatus{Name: name, Generation: gen}
	devs := o.roll.matched[name]
	if len(devs) > 0 {
		s.Devices = make([]DevRoll, 0, len(devs))
	}
	for id := range devs {
		st, has := o.states[v1.DeviceKey(id, name)]
		online := o.onlineLocked(id, now)
		s.Matched++
		has = has && st.UID == d.Metadata.UID
		switch c := classify(st, has, d); {
		case !online:
			s.Offline++
		case c == clsSucceeded:
			s.Succeeded++
		case c == clsFailed:
			s.Failed++
		default:
			s.Pending++
		}
		s.Devices = append(s.Devices, devRoll(id, online, st, has))
	}
	return d, s, true
}

// devRoll is a matched device's line in a deployment.
func devRoll(id string, online bool, st v1.DeviceState, has bool) DevRoll {
	r := DevRoll{Device: id, Online: online, Phase: v1.PhasePending}
	if has {
		r.Phase, r.ObservedGeneration, r.Message = st.Phase, st.ObservedGeneration, st.Message
		r.RefusedGeneration = st.RefusedGeneration
	}
	if !online {
		r.Phase = "Offline"
	}
	return r
}

// Device returns one device: its line (as Devices computes it), its info
// and its statuses.
func (o *Operator) Device(id string) (DeviceDetail, bool) {
	return o.deviceAt(id, time.Now())
}

func (o *Operator) deviceAt(id string, now time.Time) (DeviceDetail, bool) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	info, ok := o.devices[id]
	if !ok {
		return DeviceDetail{}, false
	}
	s := DeviceStatus{ID: id, Labels: Device{Info: info, Overrides: o.overrides[id]}.Labels(), Inventory: info.Inventory,
		Online: o.onlineLocked(id, now), HeartbeatAgeSecs: -1, Deployments: make(map[string]string, len(o.roll.byDevice[id]))}
	if hb, seen := o.beats[id]; seen {
		s.HeartbeatAgeSecs = now.Sub(hb.lastAdvance).Seconds()
	}
	for name := range o.roll.byDevice[id] {
		phase := v1.PhasePending
		if st, ok := o.states[v1.DeviceKey(id, name)]; ok {
			phase = st.Phase
		}
		if !s.Online {
			phase = "Offline"
		}
		s.Deployments[name] = phase
	}
	out := DeviceDetail{Status: s, Info: info}
	for _, name := range slices.Sorted(maps.Keys(o.roll.stated[id])) {
		if _, exists := o.deployments[name]; exists {
			out.States = append(out.States, o.states[v1.DeviceKey(id, name)])
		}
	}
	return out, true
}

// Online says whether a device is known (has device info) and whether its
// heartbeat is fresh.
func (o *Operator) Online(id string) (online, known bool) {
	now := time.Now()
	o.mu.RLock()
	defer o.mu.RUnlock()
	_, known = o.devices[id]
	return o.onlineLocked(id, now), known
}

// Staleness is how long a heartbeat may stand still before its device is
// offline.
func (o *Operator) Staleness() time.Duration { return o.opts.Staleness }

// onlineLocked is Snapshot.Online for one device at now. o.mu is held.
func (o *Operator) onlineLocked(id string, now time.Time) bool {
	hb, seen := o.beats[id]
	return seen && now.Sub(hb.lastAdvance) <= o.opts.Staleness
}

// DeploymentOf is Operator.Deployment computed from a snapshot (for
// callers that hold a snapshot rather than an operator: test fakes).
func DeploymentOf(s Snapshot, name string) (v1.Deployment, DeploymentStatus, bool) {
	d, ok := s.Deployments[name]
	if !ok {
		return v1.Deployment{}, DeploymentStatus{}, false
	}
	one := s
	one.Deployments = map[string]v1.Deployment{name: d}
	return d, Aggregate(one)[name], true
}

// DeviceOf is Operator.Device computed from a snapshot.
func DeviceOf(s Snapshot, id string) (DeviceDetail, bool) {
	dev, ok := s.Devices[id]
	if !ok {
		return DeviceDetail{}, false
	}
	one := s
	one.Devices = map[string]Device{id: dev}
	out := DeviceDetail{Status: Devices(one)[0], Info: dev.Info}
	for _, name := range sortedKeys(s.Deployments) {
		if st, ok := s.States[v1.DeviceKey(id, name)]; ok {
			out.States = append(out.States, st)
		}
	}
	return out, true
}
