package operator

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"sort"
	"strconv"
	"time"
)

// The orphan guard is defence in depth against a mass disappearance (a
// wiped or damaged device-info or deployments bucket) being read as
// "everything was deleted": removing a desired-state key makes the device
// remove what the deployment runs. The rule (docs/adr/0014):
//
//   - A removal is guarded when its key was found orphaned by a full render
//     pass (the first after the view converged: there is no earlier view to
//     compare with), or when its device is gone (no device-info entry).
//     Other removals (a deployment deleted, or a device or deployment
//     relabelled, seen while running) are an admin's act and never held.
//   - The guarded removals of a pass are held when a hold is already in
//     force, or when they, plus the device-gone removals let through in the
//     last Window, reach the bound max(Min, ⌈Fraction × stored keys⌉).
//   - A held key leaves the hold when it is rendered again or leaves the
//     store (its device or deployment came back), or when an admin
//     releases the hold (by its fingerprint): then it is removed.
//
// Each key's life in the guard:
//
//	           guarded, n >= bound (or a hold in force)
//	  orphan ──────────────────────────────────────────▶ held
//	    │                                                 │  │
//	    │ unguarded, or n < bound                 release │  │ rendered again,
//	    ▼                                                 ▼  │ or gone from the store
//	 removed ◀───────────────────────────────────── approved │
//	                                                         ▼
//	                                                    (forgotten)
//
// The guard does no I/O and reads no clock: the render loop passes the
// time and does the deletes.

// Cause is why a desired-state key is an orphan.
type Cause string

const (
	// CauseDeviceGone: the key's device has no device-info entry.
	CauseDeviceGone Cause = "device-gone"
	// CauseDeploymentGone: the key's deployment does not exist.
	CauseDeploymentGone Cause = "deployment-gone"
	// CauseNoMatch: both exist; the deployment's selector no longer
	// matches the device.
	CauseNoMatch Cause = "no-match"
)

// AllCauses lists the causes in a fixed order (for logs, metrics, pages).
func AllCauses() []Cause { return []Cause{CauseDeviceGone, CauseDeploymentGone, CauseNoMatch} }

// orphanCause names the cause of an orphan. A gone device comes first: it is
// the cause the guard watches at all times.
func orphanCause(deviceKnown, deploymentExists bool) Cause {
	switch {
	case !deviceKnown:
		return CauseDeviceGone
	case !deploymentExists:
		return CauseDeploymentGone
	default:
		return CauseNoMatch
	}
}

// removal is an orphan a pass is ready to delete (its grace has passed).
type removal struct {
	key   string
	rev   uint64 // the revision the delete is conditional on
	cause Cause
	full  bool // found orphaned by a full pass
}

func (r removal) guarded() bool { return r.full || r.cause == CauseDeviceGone }

// GuardLimits bound the removals a pass makes without an admin's release.
type GuardLimits struct {
	// Min and Fraction: guarded removals are held when they reach
	// max(Min, ⌈Fraction × desired-state keys stored⌉).
	Min      int
	Fraction float64
	// Window is how long a device-gone removal that was let through keeps
	// counting towards the bound, so that a slow trickle cannot get around
	// it.
	Window time.Duration
}

// Bound is the number of guarded removals that is held.
func (l GuardLimits) Bound(stored int) int {
	return max(l.Min, int(math.Ceil(l.Fraction*float64(stored))))
}

// releaseSeen is a release record as the guard knows it.
type releaseSeen struct {
	rev         uint64
	fingerprint string
}

// guard is the guard's state; see the rule above.
type guard struct {
	lim      GuardLimits
	held     map[string]removal
	since    time.Time            // when the hold began (zero: nothing held)
	approved map[string]bool      // released: removed without the bound
	recent   map[string]time.Time // device-gone removals let through, by when
	bound    int                  // at the last decision, for the view
	// The newest release seen, and the newest seen when the hold began:
	// only a release written later can release the hold.
	last  releaseSeen
	floor uint64
}

func newGuard(lim GuardLimits) *guard {
	return &guard{lim: lim, held: map[string]removal{}, approved: map[string]bool{}, recent: map[string]time.Time{}}
}

// decide takes the removals a pass is ready to make and the number of
// desired-state keys stored, and returns the removals to make now; the
// others join the hold. began says that a hold began.
func (g *guard) decide(now time.Time, stored int, ready []removal) (remove []removal, began bool) {
	for k, at := range g.recent {
		if now.Sub(at) >= g.lim.Window {
			delete(g.recent, k)
		}
	}
	ready = append([]removal(nil), ready...)
	sort.Slice(ready, func(i, j int) bool { return ready[i].key < ready[j].key })
	var guarded []removal
	inPass := map[string]bool{}
	for _, r := range ready {
		switch _, held := g.held[r.key]; {
		case g.approved[r.key]:
			remove = append(remove, r)
		case held:
			g.held[r.key] = r // the latest revision and cause
		case r.guarded():
			guarded = append(guarded, r)
			inPass[r.key] = true
		default:
			remove = append(remove, r)
		}
	}
	g.bound = g.lim.Bound(stored)
	if len(guarded) == 0 {
		return remove, false
	}
	n := len(guarded)
	for k := range g.recent {
		if !inPass[k] {
			n++
		}
	}
	if len(g.held) == 0 && n < g.bound {
		for _, r := range guarded {
			if _, ok := g.recent[r.key]; !ok && r.cause == CauseDeviceGone {
				g.recent[r.key] = now
			}
		}
		return append(remove, guarded...), false
	}
	began = len(g.held) == 0
	if began {
		g.since = now
		g.floor = g.last.rev
	}
	for _, r := range guarded {
		g.held[r.key] = r
	}
	return remove, began
}

// forget drops a key that is no longer an orphan (rendered again, or gone
// from the store); cleared says that the hold ended with it.
func (g *guard) forget(key string) (cleared bool) {
	delete(g.approved, key)
	if _, ok := g.held[key]; !ok {
		return false
	}
	delete(g.held, key)
	if len(g.held) == 0 {
		g.since = time.Time{}
		return true
	}
	return false
}

// fingerprint names the hold: its keys and revisions ("" when nothing is
// held). A release names the hold it releases by it.
func (g *guard) fingerprint() string {
	if len(g.held) == 0 {
		return ""
	}
	keys := make([]string, 0, len(g.held))
	for k := range g.held {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{'@'})
		h.Write(strconv.AppendUint(nil, g.held[k].rev, 10))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// release approves every held key when fingerprint names the hold, and
// returns them (nil otherwise).
func (g *guard) release(fingerprint string) []string {
	if len(g.held) == 0 || fingerprint != g.fingerprint() {
		return nil
	}
	keys := make([]string, 0, len(g.held))
	for k := range g.held {
		g.approved[k] = true
		keys = append(keys, k)
	}
	sort.Strings(keys)
	g.held = map[string]removal{}
	g.since = time.Time{}
	return keys
}

// see records a release record read from the store and applies it when it
// names the hold and was written after the hold began (a record left from
// an earlier hold never releases a new one).
func (g *guard) see(r releaseSeen) []string {
	if r.rev > g.last.rev {
		g.last = r
	}
	return g.pending()
}

// seeOld records a release record that was in the store when this
// operator started reading it: written before any hold of this operator
// began, it never releases one.
func (g *guard) seeOld(r releaseSeen) {
	if r.rev > g.last.rev {
		g.last = r
	}
	g.floor = max(g.floor, r.rev)
}

// pending applies the newest release seen, if it names the hold as it is
// now and is newer than the hold (the hold may have come to match it).
func (g *guard) pending() []string {
	if g.last.rev == 0 || g.last.rev <= g.floor {
		return nil
	}
	return g.release(g.last.fingerprint)
}

// OrphanHold is what the guard holds back, for the API, the dashboard and
// metrics.
type OrphanHold struct {
	// Held is the number of desired-state keys whose removal is held.
	Held int `json:"held"`
	// Causes counts them by cause.
	Causes map[Cause]int `json:"causes"`
	// Since is when the hold began (nil when nothing is held).
	Since *time.Time `json:"since,omitempty"`
	// Examples are a few of the held keys, sorted.
	Examples []string `json:"examples"`
	// Fingerprint names the hold; a release names it too.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Approved keys were released and wait for the collecting server.
	Approved int `json:"approved"`
	// Bound is the number of guarded removals held at the last pass.
	Bound int `json:"bound"`
}

const holdExamples = 5

func (g *guard) view() OrphanHold {
	h := OrphanHold{Held: len(g.held), Causes: map[Cause]int{}, Examples: []string{}, Fingerprint: g.fingerprint(),
		Approved: len(g.approved), Bound: g.bound}
	for _, c := range AllCauses() {
		h.Causes[c] = 0
	}
	keys := make([]string, 0, len(g.held))
	for k, r := range g.held {
		h.Causes[r.cause]++
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h.Examples = append(h.Examples, keys[:min(holdExamples, len(keys))]...)
	if !g.since.IsZero() {
		since := g.since
		h.Since = &since
	}
	return h
}
