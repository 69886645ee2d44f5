package operator

import (
	"container/heap"
	"sort"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// rollup keeps every deployment's counts as the events arrive, so that
// reading them costs the number of deployments, and each event costs what
// it changes: a device's status one pair, a heartbeat one device (and its
// deployments when it comes back online or goes offline), a device's
// labels its deployments, a deployment its devices. Aggregate (over a
// Snapshot) gives the same counts by recomputing everything; the tests
// hold the two to each other.
//
// All of it is guarded by the Operator's mutex.
type rollup struct {
	staleness time.Duration
	// matched: deployment -> its devices; byDevice: device -> its
	// deployments.
	matched  map[string]map[string]bool
	byDevice map[string]map[string]bool
	// class of each matched pair ignoring liveness; counts per deployment.
	class  map[string]pairClass // by <device>.<deployment>
	failed map[string]string    // the message of each failed pair
	counts map[string]*DeploymentStatus
	// online is what the counts assume of each device; offline holds the
	// known devices (with device info) that are not online.
	online   map[string]bool
	known    map[string]bool
	offline  map[string]bool
	expiry   expiryHeap
	inHeap   map[string]bool
	lastBeat map[string]time.Time // operator clock of the last advance
	// conflicts are the pairs whose status is Conflict.
	conflicts map[string]bool
	// stated: device -> the deployments it has a status for (matching it
	// or not, existing or not), for reading one device's statuses.
	stated map[string]map[string]bool
}

type pairClass uint8

const (
	clsPending pairClass = iota
	clsSucceeded
	clsFailed
)

func newRollup(staleness time.Duration) *rollup {
	return &rollup{staleness: staleness, matched: map[string]map[string]bool{}, byDevice: map[string]map[string]bool{},
		class: map[string]pairClass{}, failed: map[string]string{}, counts: map[string]*DeploymentStatus{}, online: map[string]bool{},
		known: map[string]bool{}, offline: map[string]bool{}, inHeap: map[string]bool{}, lastBeat: map[string]time.Time{}, conflicts: map[string]bool{},
		stated: map[string]map[string]bool{}}
}

// classify is a pair's class from its device's status. A status of an
// earlier deployment of the same name (another UID) counts as none.
func classify(st v1.DeviceState, has bool, d v1.Deployment) pairClass {
	has = has && st.UID == d.Metadata.UID
	gen := d.Metadata.Generation
	switch {
	case has && st.ObservedGeneration == gen && st.Phase == v1.PhaseReady:
		return clsSucceeded
	case has && (st.Phase == v1.PhaseFailed || st.Phase == v1.PhaseConflict):
		return clsFailed
	default:
		return clsPending
	}
}

func (r *rollup) count(dep string, c pairClass, online bool, delta int) {
	s := r.counts[dep]
	if s == nil {
		return
	}
	s.Matched += delta
	switch {
	case !online:
		s.Offline += delta
	case c == clsSucceeded:
		s.Succeeded += delta
	case c == clsFailed:
		s.Failed += delta
	default:
		s.Pending += delta
	}
	if s.Failed == 0 {
		s.LastError = ""
	}
}

// refreshLastError keeps a deployment's last error one of a device that is
// failing now: when the pair it named stops failing (or goes offline),
// another failing pair's message takes its place.
func (r *rollup) refreshLastError(dep, gone string) {
	s := r.counts[dep]
	if s == nil || s.LastError != gone || s.Failed == 0 {
		return
	}
	s.LastError = ""
	for dev := range r.matched[dep] {
		key := v1.DeviceKey(dev, dep)
		if r.class[key] == clsFailed && r.online[dev] {
			s.LastError = r.failed[key]
			return
		}
	}
}

// setPair adds, removes or reclassifies one (device, deployment) pair.
func (r *rollup) setPair(o *Operator, dev, dep string, match bool) {
	key := v1.DeviceKey(dev, dep)
	if r.matched[dep][dev] {
		r.count(dep, r.class[key], r.online[dev], -1)
		delete(r.matched[dep], dev)
		delete(r.byDevice[dev], dep)
		delete(r.class, key)
		msg := r.failed[key]
		delete(r.failed, key)
		if msg != "" {
			defer r.refreshLastError(dep, msg)
		}
	}
	if !match {
		return
	}
	if r.matched[dep] == nil {
		r.matched[dep] = map[string]bool{}
	}
	if r.byDevice[dev] == nil {
		r.byDevice[dev] = map[string]bool{}
	}
	st, has := o.states[key]
	c := classify(st, has, o.deployments[dep])
	r.matched[dep][dev], r.byDevice[dev][dep], r.class[key] = true, true, c
	if c == clsFailed {
		r.failed[key] = dev + ": " + st.Message
	}
	r.count(dep, c, r.online[dev], +1)
	if c == clsFailed && r.online[dev] && r.counts[dep] != nil {
		r.counts[dep].LastError = r.failed[key]
	}
}

// device re-matches one device against every deployment (its labels or
// its existence changed).
func (r *rollup) device(o *Operator, id string) {
	info, exists := o.devices[id]
	if exists {
		r.known[id] = true
		if !r.online[id] {
			r.offline[id] = true
		}
	} else {
		delete(r.known, id)
		delete(r.offline, id)
	}
	labels := Device{Info: info, Overrides: o.overrides[id]}.Labels()
	for name, d := range o.deployments {
		r.setPair(o, id, name, exists && d.Spec.Selector.Matches(labels))
	}
	if !exists {
		delete(r.byDevice, id)
	}
}

// deployment re-matches one deployment against every device (its
// selector, generation or existence changed).
func (r *rollup) deployment(o *Operator, name string) {
	d, exists := o.deployments[name]
	if !exists {
		for dev := range r.matched[name] {
			r.setPair(o, dev, name, false)
		}
		delete(r.matched, name)
		delete(r.counts, name)
		return
	}
	// Counts start over from the pairs as they are now.
	for dev := range r.matched[name] {
		r.setPair(o, dev, name, false)
	}
	r.counts[name] = &DeploymentStatus{Name: name, Generation: d.Metadata.Generation}
	for id, info := range o.devices {
		if d.Spec.Selector.Matches(Device{Info: info, Overrides: o.overrides[id]}.Labels()) {
			r.setPair(o, id, name, true)
		}
	}
}

// state reclassifies one pair after its device's status changed.
func (r *rollup) state(o *Operator, key string) {
	dev, dep, err := v1.SplitDeviceKey(key)
	if err != nil {
		return
	}
	st, ok := o.states[key]
	if ok && st.Phase == v1.PhaseConflict {
		r.conflicts[key] = true
	} else {
		delete(r.conflicts, key)
	}
	switch {
	case ok && r.stated[dev] == nil:
		r.stated[dev] = map[string]bool{dep: true}
	case ok:
		r.stated[dev][dep] = true
	default:
		delete(r.stated[dev], dep)
		if len(r.stated[dev]) == 0 {
			delete(r.stated, dev)
		}
	}
	if r.matched[dep][dev] {
		r.setPair(o, dev, dep, true)
	}
}

// beat records that a device's heartbeat advanced at at (the operator's
// clock; a first sight after a restart may be long ago).
func (r *rollup) beat(id string, at, now time.Time) {
	r.lastBeat[id] = at
	if !r.online[id] && !at.Add(r.staleness).Before(now) {
		r.setOnline(id, true)
	}
	if !r.inHeap[id] {
		r.inHeap[id] = true
		heap.Push(&r.expiry, expiry{id: id, at: at.Add(r.staleness)})
	}
}

// forget drops a device's heartbeat (its key was deleted).
func (r *rollup) forget(id string) {
	delete(r.lastBeat, id)
	if r.online[id] {
		r.setOnline(id, false)
	}
}

func (r *rollup) setOnline(id string, on bool) {
	for dep := range r.byDevice[id] {
		key := v1.DeviceKey(id, dep)
		c := r.class[key]
		r.count(dep, c, r.online[id], -1)
		r.count(dep, c, on, +1)
		if c == clsFailed && on && r.counts[dep] != nil {
			r.counts[dep].LastError = r.failed[key]
		}
		if c == clsFailed && !on {
			defer r.refreshLastError(dep, r.failed[key])
		}
	}
	if on {
		r.online[id] = true
		delete(r.offline, id)
	} else {
		delete(r.online, id)
		if r.known[id] {
			r.offline[id] = true
		}
	}
}

// expire turns offline the devices whose last heartbeat is older than
// the staleness at now. Each device is in the heap at most once.
func (r *rollup) expire(now time.Time) {
	for len(r.expiry) > 0 && r.expiry[0].at.Before(now) {
		e := heap.Pop(&r.expiry).(expiry)
		last, ok := r.lastBeat[e.id]
		if !ok {
			delete(r.inHeap, e.id)
			continue
		}
		if due := last.Add(r.staleness); !due.Before(now) {
			heap.Push(&r.expiry, expiry{id: e.id, at: due}) // it beat since
			continue
		}
		delete(r.inHeap, e.id)
		if r.online[e.id] {
			r.setOnline(e.id, false)
		}
	}
}

// Rollup is the fleet at a glance, kept up to date event by event.
type Rollup struct {
	Deployments map[string]DeploymentStatus // without Devices
	// Online and Offline count the known devices; OfflineIDs are the
	// offline ones, sorted.
	Online, Offline int
	OfflineIDs      []string
	// Conflicts are the <device>.<deployment> keys in Conflict, sorted.
	Conflicts []string
}

func (r *rollup) read(now time.Time) Rollup {
	r.expire(now)
	out := Rollup{Deployments: make(map[string]DeploymentStatus, len(r.counts))}
	for name, s := range r.counts {
		out.Deployments[name] = *s
	}
	out.Offline = len(r.offline)
	out.Online = len(r.known) - out.Offline
	for id := range r.offline {
		out.OfflineIDs = append(out.OfflineIDs, id)
	}
	sort.Strings(out.OfflineIDs)
	for k := range r.conflicts {
		out.Conflicts = append(out.Conflicts, k)
	}
	sort.Strings(out.Conflicts)
	return out
}

type expiry struct {
	id string
	at time.Time
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// RollupOf computes a Rollup from a snapshot, recomputing everything (for
// callers that hold a snapshot rather than an operator: test fakes).
func RollupOf(s Snapshot) Rollup {
	out := Rollup{Deployments: Aggregate(s)}
	for name, d := range out.Deployments {
		d.Devices = nil
		out.Deployments[name] = d
	}
	for id := range s.Devices {
		if s.Online(id) {
			out.Online++
		} else {
			out.Offline++
			out.OfflineIDs = append(out.OfflineIDs, id)
		}
	}
	sort.Strings(out.OfflineIDs)
	for k, st := range s.States {
		if st.Phase == v1.PhaseConflict {
			out.Conflicts = append(out.Conflicts, k)
		}
	}
	sort.Strings(out.Conflicts)
	return out
}
