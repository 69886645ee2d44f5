package operator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Progressive rollouts (docs/adr/0028-progressive-rollouts.md). A
// deployment stored with RolloutFrom rolls out batch by batch: rendering
// (pick, render.go) gives a device the new generation once the rollout's
// state says its batch has it, and From otherwise. The rollout controller
// below, run by the lease holder only, creates that state (splitting the
// matched devices into batches), judges each batch's gate, moves on,
// pauses, or rolls back. Every step is a write of the state conditional
// on the last, so a restarted or another operator goes on from the store:
// what is kept in memory is only the gate's clocks, which start again
// (a device waits its ready time again, never less).

// Rollout is what the operator knows of one deployment's rollout.
type Rollout struct {
	// From is the stored deployment's RolloutFrom (nil: its current
	// generation does not roll out).
	From *v1.Deployment
	// State is the stored progress (nil: none stored); Rev its revision.
	State *v1.RolloutState
	Rev   uint64
	pos   map[string]v1.Position
}

// state is the progress of d's current generation (nil: not started).
func (r *Rollout) state(d v1.Deployment) *v1.RolloutState {
	if r == nil || r.State == nil || !r.State.Of(d) {
		return nil
	}
	return r.State
}

// changeRolloutLocked replaces deployment name's Rollout by a copy that
// change changed (the values stay immutable once stored); one with
// nothing left goes. o.mu is held.
func (o *Operator) changeRolloutLocked(name string, change func(r *Rollout)) {
	next := Rollout{}
	if cur := o.rollouts[name]; cur != nil {
		next = *cur
	}
	change(&next)
	if next.From == nil && next.State == nil && next.Rev == 0 {
		delete(o.rollouts, name)
		return
	}
	o.rollouts[name] = &next
}

// SplitBatches puts the matched devices (sorted) into spec's batches, in
// order: a count takes the next devices, a percentage the next
// ⌈percent × matched⌉, a selector every device left that it matches.
// left is what no batch took.
func SplitBatches(spec *v1.RolloutSpec, ids []string, labels func(string) map[string]string) (batches [][]string, left []string) {
	left = ids
	for _, b := range spec.Batches {
		var took, rest []string
		switch {
		case b.Selector != nil:
			for _, id := range left {
				if b.Selector.Matches(labels(id)) {
					took = append(took, id)
				} else {
					rest = append(rest, id)
				}
			}
		default:
			n := 0
			if b.Count != nil {
				n = *b.Count
			} else if b.Percent != nil {
				n = (len(ids)**b.Percent + 99) / 100
			}
			n = min(n, len(left))
			took, rest = left[:n:n], left[n:]
		}
		batches = append(batches, took)
		left = rest
	}
	return batches, left
}

// Uncovered is how many of the devices selector matches now the batches
// of spec would leave out: the API refuses such a rollout.
func (o *Operator) Uncovered(selector v1.Selector, spec *v1.RolloutSpec) (left, matched int) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	ids, labels := o.matchedLocked(selector)
	_, rest := SplitBatches(spec, ids, labels)
	return len(rest), len(ids)
}

// matchedLocked is the devices selector matches, sorted, and their
// labels. o.mu is held.
func (o *Operator) matchedLocked(selector v1.Selector) ([]string, func(string) map[string]string) {
	all := map[string]map[string]string{}
	var ids []string
	for id, info := range o.devices {
		l := Device{Info: info, Overrides: o.overrides[id]}.Labels()
		if selector.Matches(l) {
			ids = append(ids, id)
			all[id] = l
		}
	}
	sort.Strings(ids)
	return ids, func(id string) map[string]string { return all[id] }
}

// released is how many devices of a batch of n get the change when it
// starts (or when more may update).
func released(spec *v1.RolloutSpec, n int) int {
	if spec.MaxUpdating > 0 {
		return min(n, spec.MaxUpdating)
	}
	return n
}

// startRollout is the first state of d's rollout: the matched devices
// split into batches (those no batch takes join the last), the first
// batch in progress.
func (o *Operator) startRollout(d v1.Deployment, now time.Time) v1.RolloutState {
	spec := d.Spec.Rollout
	o.mu.RLock()
	ids, labels := o.matchedLocked(d.Spec.Selector)
	o.mu.RUnlock()
	batches, left := SplitBatches(spec, ids, labels)
	if n := len(batches); n > 0 {
		batches[n-1] = append(batches[n-1], left...)
	}
	for _, b := range batches {
		sort.Strings(b)
	}
	st := v1.RolloutState{V: v1.FormatVersion, UID: d.Metadata.UID, To: d.Metadata.Generation, Batches: batches,
		Phase: v1.RolloutProgressing, BatchStarted: now.UTC(), Updated: now.UTC()}
	return o.enterBatch(st, spec, 0, now)
}

// enterBatch moves st to batch i, skipping empty batches; past the last
// it has succeeded.
func (o *Operator) enterBatch(st v1.RolloutState, spec *v1.RolloutSpec, i int, now time.Time) v1.RolloutState {
	for i < len(st.Batches) && len(st.Batches[i]) == 0 {
		i++
	}
	st.Batch, st.Released, st.Failed, st.Reason, st.Excused = i, 0, nil, "", nil
	st.BatchStarted, st.Updated = now.UTC(), now.UTC()
	if i >= len(st.Batches) {
		st.Phase = v1.RolloutSucceeded
		return st
	}
	st.Released = released(spec, len(st.Batches[i]))
	return st
}

// FailedOffline is why a device that was offline failed the gate: a
// person's resume excuses such devices.
const FailedOffline = "offline"

// gateKey names one judging of one batch: a resume judges it afresh.
type gateKey struct {
	name, uid      string
	to             int64
	batch, resumes int
}

// devGate is the gate's memory of one device of the batch being judged,
// on this operator's clock.
type devGate struct {
	released   time.Time // first seen with the change
	readySince time.Time // zero: not Ready now
	marks      int       // restarts + repairs when readySince was set
}

// gates is the rollout controller's memory; only its goroutine uses it.
type gates map[gateKey]map[string]*devGate

func (g gates) of(k gateKey) map[string]*devGate {
	if g[k] == nil {
		g[k] = map[string]*devGate{}
	}
	return g[k]
}

// verdict of one device for the gate.
type verdict int

const (
	pending verdict = iota
	passed
	failed
)

// judgeDevice is a released device's verdict: failed when offline, when
// it refused or reports the new generation Failed (or in conflict), or
// when the progress deadline passed; passed once every resource has been
// Ready for the gate's time with no restart or repair meanwhile. updating
// reports that it has not yet shown the new generation Ready. o.mu is
// held (read).
func (o *Operator) judgeDevice(id, name string, d v1.Deployment, gate v1.RolloutGate, g *devGate, now time.Time) (v verdict, why string, updating bool) {
	st := o.states[v1.DeviceKey(id, name)]
	switch o.devicePhaseLocked(id, name, d, now) {
	case phaseOffline:
		return failed, FailedOffline, true
	case v1.PhaseFailed:
		if st.RefusedGeneration == d.Metadata.Generation {
			return failed, "refused the generation: " + st.Message, true
		}
		return failed, st.Phase + ": " + st.Message, true
	case v1.PhaseReady:
		marks := 0
		for _, r := range st.Resources {
			marks += r.Restarts + r.Repairs
		}
		if g.readySince.IsZero() || marks != g.marks {
			g.readySince, g.marks = now, marks
		}
		if now.Sub(g.readySince) >= gate.ReadyFor() {
			return passed, "", false
		}
		return pending, "", false
	}
	g.readySince = time.Time{}
	if now.Sub(g.released) >= gate.Deadline() {
		return failed, fmt.Sprintf("not Ready %s after it got the change", gate.Deadline()), true
	}
	return pending, "", true
}

func allReady(rs []v1.ResourceStatus) bool {
	for _, r := range rs {
		if !r.IsReady() {
			return false
		}
	}
	return true
}

// judgeBatch looks at the current batch and returns the next state and
// whether it changed: the next batch once enough devices passed, paused
// or rolled back once too many failed, more devices released while
// maxUpdating allows.
func (o *Operator) judgeBatch(g gates, name string, d v1.Deployment, st v1.RolloutState, now time.Time) (v1.RolloutState, bool) {
	spec := d.Spec.Rollout
	if st.Batch >= len(st.Batches) {
		st.Phase, st.Updated = v1.RolloutSucceeded, now.UTC()
		return st, true
	}
	devs := g.of(gateKey{name: name, uid: st.UID, to: st.To, batch: st.Batch, resumes: st.Resumes})
	pass, updating := 0, 0
	failures := map[string]string{}
	o.mu.RLock()
	// A device of the batch that is gone or no longer matches (relabelled)
	// is no longer the rollout's: it counts neither way.
	// So is one a person's resume excused (it was offline).
	var batch []string
	released := 0
	for j, id := range st.Batches[st.Batch] {
		info, ok := o.devices[id]
		if !ok || !d.Spec.Selector.Matches(Device{Info: info, Overrides: o.overrides[id]}.Labels()) || slices.Contains(st.Excused, id) {
			continue
		}
		batch = append(batch, id)
		if j < st.Released {
			released++
		}
	}
	need := (len(batch)*spec.Threshold() + 99) / 100
	for _, id := range batch[:released] {
		dg := devs[id]
		if dg == nil {
			dg = &devGate{released: now}
			devs[id] = dg
		}
		v, why, upd := o.judgeDevice(id, name, d, spec.Gate, dg, now)
		switch v {
		case passed:
			pass++
		case failed:
			failures[id] = why
		}
		if upd && v != failed {
			updating++
		}
	}
	o.mu.RUnlock()
	all := st.Released >= len(st.Batches[st.Batch])
	switch {
	case pass >= need && all: // every device of the batch has the change
		o.log.Info("rollout batch passed", "deployment", name, "generation", st.To, "batch", st.Batch+1, "of", len(st.Batches), "passed", pass, "devices", len(batch))
		return o.enterBatch(st, spec, st.Batch+1, now), true
	case len(batch)-len(failures) < need:
		st.Failed = failures
		first := sortedKeys(failures)[0]
		st.Reason = fmt.Sprintf("batch %d of %d failed its gate: %d of %d devices passed, %d needed; %d failed (first: %s: %s)",
			st.Batch+1, len(st.Batches), pass, len(batch), need, len(failures), first, failures[first])
		st.Phase, st.Updated = v1.RolloutPaused, now.UTC()
		if spec.Rollback() {
			st.Phase, st.RollbackGeneration = v1.RolloutRolledBack, d.Metadata.Generation+1
		}
		o.log.Warn("rollout batch failed", "deployment", name, "generation", st.To, "phase", st.Phase, "reason", st.Reason)
		return st, true
	case spec.MaxUpdating > 0 && st.Released < len(st.Batches[st.Batch]) && updating < spec.MaxUpdating:
		st.Released = min(len(st.Batches[st.Batch]), st.Released+spec.MaxUpdating-updating)
		st.Updated = now.UTC()
		return st, true
	}
	return st, false
}

// rolloutLoop runs the rollout controller while the operator holds the
// lease and its view has converged: every tick it steps each rollout.
func (o *Operator) rolloutLoop(ctx context.Context) error {
	t := time.NewTicker(o.opts.RolloutTick)
	defer t.Stop()
	g := gates{}
	held := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if o.Phase() != Converged || (o.opts.Lease != nil && !o.opts.Lease.Held()) {
			// The gate's clocks are of the time the lease was held: a
			// device waits its time again when it comes back.
			g, held = gates{}, false
			continue
		}
		if !held {
			// Only the lease holder writes what a rollout decides
			// (heldBack): look at everything again now that this one is.
			held = true
			o.renderAll()
		}
		o.stepRollouts(ctx, g, time.Now())
	}
}

// stepRollouts steps every rollout once.
func (o *Operator) stepRollouts(ctx context.Context, g gates, now time.Time) {
	type job struct {
		name string
		d    v1.Deployment
		r    Rollout
	}
	var jobs []job
	o.mu.RLock()
	for name, r := range o.rollouts {
		if d, ok := o.deployments[name]; ok && r.From != nil && d.Spec.Rollout != nil {
			jobs = append(jobs, job{name, d, *r})
		}
	}
	o.mu.RUnlock()
	live := map[gateKey]bool{}
	for _, j := range jobs {
		st := j.r.state(j.d)
		var next v1.RolloutState
		switch {
		case st == nil:
			next = o.startRollout(j.d, now)
			o.log.Info("rollout started", "deployment", j.name, "generation", next.To, "batches", len(next.Batches))
		case st.Phase == v1.RolloutProgressing:
			live[gateKey{name: j.name, uid: st.UID, to: st.To, batch: st.Batch, resumes: st.Resumes}] = true
			var changed bool
			if next, changed = o.judgeBatch(g, j.name, j.d, *st, now); !changed {
				continue
			}
		case st.Phase == v1.RolloutRolledBack:
			if err := o.rollBack(ctx, j.name, j.d, *j.r.From); err != nil && ctx.Err() == nil {
				o.log.Warn("rollback not stored yet; will retry", "deployment", j.name, "err", err)
			}
			continue
		default:
			continue
		}
		if err := o.putRollout(ctx, j.name, next, j.r.Rev); err != nil && ctx.Err() == nil {
			if errors.Is(err, store.ErrConflict) {
				o.log.Debug("rollout state changed meanwhile; will look again", "deployment", j.name)
			} else {
				o.log.Warn("rollout state not stored; will retry", "deployment", j.name, "err", err)
			}
		}
	}
	for k := range g {
		if !live[k] {
			delete(g, k)
		}
	}
}

// renderAll makes the next render pass a full one.
func (o *Operator) renderAll() {
	o.mu.Lock()
	o.dirty.full = true
	o.mu.Unlock()
	o.poke()
}

// heldBack reports whether a rollout decides the bytes of d's keys (it
// is in progress): then only the lease holder writes them, so that a
// server whose view of the rollout lags never takes a device back.
func heldBack(d v1.Deployment, r *Rollout) bool {
	if r == nil || r.From == nil || d.Spec.Rollout == nil {
		return false
	}
	st := r.state(d)
	return st == nil || !st.Done()
}

// putRollout stores a rollout's state, conditional on rev (0: create).
func (o *Operator) putRollout(ctx context.Context, name string, st v1.RolloutState, rev uint64) error {
	b, err := v1.Marshal(st)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = o.b.Rollouts.Create(ctx, name, b)
	} else {
		_, err = o.b.Rollouts.Update(ctx, name, b, rev)
	}
	return err
}

// rollBack stores from's spec again as the generation after d, as an undo
// does (docs/adr/0027): generations never go backwards, and the new one
// goes to every device at once.
func (o *Operator) rollBack(ctx context.Context, name string, d v1.Deployment, from v1.Deployment) error {
	e, err := o.b.Deployments.Get(ctx, name)
	if err != nil {
		return err
	}
	cur, err := v1.DecodeStoredDeployment(e.Value)
	if err != nil {
		return err
	}
	if cur.Deployment.Metadata.UID != d.Metadata.UID || cur.Deployment.Metadata.Generation != d.Metadata.Generation {
		return nil // changed meanwhile: that change wins
	}
	back := from
	back.Metadata = cur.Deployment.Metadata
	back.Metadata.Generation++
	b, err := v1.Marshal(v1.StoredDeployment{V: v1.FormatVersion, Deployment: back})
	if err != nil {
		return err
	}
	if _, err := o.b.Deployments.Update(ctx, name, b, e.Revision); err != nil {
		return err
	}
	o.log.Warn("rollout rolled back", "deployment", name, "from", d.Metadata.Generation, "generation", back.Metadata.Generation,
		"spec of generation", from.Metadata.Generation)
	return nil
}

// RolloutStatus is deployment name's rollout as people see it (ok false:
// no such deployment). It reads the stored state and the devices' status;
// the gate's clocks are the lease holder's alone, so a device Ready but
// not yet for the gate's time counts as Ready.
func (o *Operator) RolloutStatus(name string) (v1.RolloutStatus, bool) {
	now := time.Now()
	o.mu.RLock()
	defer o.mu.RUnlock()
	d, ok := o.deployments[name]
	if !ok {
		return v1.RolloutStatus{}, false
	}
	out := v1.RolloutStatus{Name: name, Generation: d.Metadata.Generation}
	r := o.rollouts[name]
	st := r.state(d)
	if r != nil && r.From != nil && d.Spec.Rollout != nil {
		out.From, out.To, out.Phase = r.From.Metadata.Generation, d.Metadata.Generation, v1.RolloutPending
		out.Active = st == nil || (st.Phase != v1.RolloutSucceeded && st.Phase != v1.RolloutRolledBack)
	}
	if st == nil {
		if r != nil && r.State != nil && r.State.UID == d.Metadata.UID && r.State.RollbackGeneration == d.Metadata.Generation {
			// The last rollout ended in the rollback that made this
			// generation: say so.
			st = r.State
			out.To = st.To
		} else {
			return out, true
		}
	}
	out.Phase, out.Reason, out.Failed, out.RollbackGeneration = st.Phase, st.Reason, st.Failed, st.RollbackGeneration
	out.BatchStarted, out.Updated = st.BatchStarted, st.Updated
	if st.Phase != v1.RolloutSucceeded && st.Batch < len(st.Batches) {
		out.Batch = st.Batch + 1
	}
	for i, batch := range st.Batches {
		b := v1.RolloutBatchStatus{Devices: len(batch), State: v1.BatchWaiting}
		switch {
		case st.Phase == v1.RolloutSucceeded || i < st.Batch:
			b.State = v1.BatchDone
		case i == st.Batch:
			b.State = v1.BatchInProgress
		}
		for j, id := range batch {
			if !st.Has(v1.Position{Batch: i, Index: j}, true) {
				b.Waiting++
				continue
			}
			switch o.devicePhaseLocked(id, name, d, now) {
			case v1.PhaseReady:
				b.Ready++
			case v1.PhaseFailed:
				b.Failed++
			case phaseOffline:
				b.Offline++
			default:
				b.Updating++
			}
		}
		out.Batches = append(out.Batches, b)
	}
	return out, true
}

// phaseOffline: a device whose heartbeat is stale.
const phaseOffline = "Offline"

// devicePhaseLocked is a device's phase for the new generation: Offline,
// Failed (failed, in conflict or refused), Ready (every resource Ready) or
// Progressing. o.mu is held.
func (o *Operator) devicePhaseLocked(id, name string, d v1.Deployment, now time.Time) string {
	if !o.onlineLocked(id, now) {
		return phaseOffline
	}
	st, has := o.states[v1.DeviceKey(id, name)]
	gen := d.Metadata.Generation
	switch {
	case !has || st.UID != d.Metadata.UID:
	case st.RefusedGeneration == gen:
		return v1.PhaseFailed
	case st.ObservedGeneration != gen:
	case st.Phase == v1.PhaseFailed || st.Phase == v1.PhaseConflict:
		return v1.PhaseFailed
	case st.Phase == v1.PhaseReady && allReady(st.Resources):
		return v1.PhaseReady
	}
	return v1.PhaseProgressing
}
