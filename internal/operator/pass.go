package operator

import (
	"context"
	"errors"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// renderLoop renders after every change once the view has converged.
func (o *Operator) renderLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-o.wake:
		}
		if o.Phase() != Converged {
			continue
		}
		if err := o.render(ctx); err != nil && ctx.Err() == nil {
			o.log.Warn("render pass incomplete; will retry on the next change", "err", err)
			// Try again soon even without a change.
			time.AfterFunc(time.Second, o.poke)
		}
	}
}

// passInput is what a render pass reads of the view, copied under the
// lock so that planning (which marshals every changed match) runs without
// it.
type passInput struct {
	work        work
	deployments map[string]v1.Deployment
	rollouts    map[string]*Rollout
	// secrets: by deployment, the versions of the secrets it uses.
	secrets map[string]map[string]string
	// devices: every device when the pass is full or deployments changed,
	// else the changed ones.
	devices map[string]Device
	// stored is every stored desired-state entry (a full pass only).
	stored map[string]store.Entry
}

// render writes every desired-state value whose bytes differ from the store
// and deletes every desired-state key no deployment renders any more
// (orphans: a deployment deleted, a device that no longer matches or is
// gone) unless the orphan guard holds it (guard.go), looking only at what
// changed since the last pass (the first pass looks at everything).
// Conflicts are left to the next pass: the watch brings the winner's
// bytes, which are the same bytes when another operator rendered them.
//
// The pass plans (planWant, planWrites: pure, render.go) and then applies
// the plan (applyPlan: the store writes). Only the render loop runs it,
// and only it touches o.want.
func (o *Operator) render(ctx context.Context) error {
	in, ok := o.takeWork()
	if !ok {
		return nil
	}
	change, err := planWant(in.work, in.deployments, in.rollouts, in.secrets, in.devices, o.want)
	if err != nil {
		o.giveBack(in.work) // want is unchanged: the next pass does it all again
		return err
	}
	o.want = change.applyTo(o.want)
	check := change.toCheck(in.work, in.stored)
	have := o.storedEntries(check)
	leased := o.opts.Lease == nil || o.opts.Lease.Held()
	p := planWrites(check, o.want, have, in.deployments, func(key string) bool {
		if leased {
			return false
		}
		_, name, err := v1.SplitDeviceKey(key)
		return err == nil && heldBack(in.deployments[name], in.rollouts[name])
	})
	return o.applyPlan(ctx, in, check, have, p)
}

// takeWork takes what changed since the last pass and copies what planning
// reads; ok is false when nothing changed.
func (o *Operator) takeWork() (in passInput, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w := o.dirty
	o.dirty = newWork(false)
	if w.empty() {
		return passInput{}, false
	}
	o.renders++
	in = passInput{work: w, deployments: make(map[string]v1.Deployment, len(o.deployments)), devices: map[string]Device{}}
	for k, v := range o.deployments {
		in.deployments[k] = v
	}
	in.rollouts = make(map[string]*Rollout, len(o.rollouts))
	for k, v := range o.rollouts {
		in.rollouts[k] = v
	}
	in.secrets = o.secretVersionsLocked()
	if w.full || len(w.deployments) > 0 {
		for k, v := range o.devices {
			in.devices[k] = Device{Info: v, Overrides: o.overrides[k]}
		}
	} else {
		for id := range w.devices {
			if v, ok := o.devices[id]; ok {
				in.devices[id] = Device{Info: v, Overrides: o.overrides[id]}
			}
		}
	}
	if w.full {
		raw := o.raw[o.b.DesiredState.Bucket()]
		in.stored = make(map[string]store.Entry, len(raw))
		for k, v := range raw {
			in.stored[k] = v
		}
	}
	return in, true
}

// giveBack returns a pass's work, for the next pass.
func (o *Operator) giveBack(w work) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.dirty.full = o.dirty.full || w.full
	for k := range w.devices {
		o.dirty.devices[k] = true
	}
	for k := range w.deployments {
		o.dirty.deployments[k] = true
	}
	for k := range w.keys {
		o.dirty.keys[k] = true
	}
}

// storedEntries copies the stored desired-state entries of keys.
func (o *Operator) storedEntries(keys []string) map[string]store.Entry {
	o.mu.RLock()
	defer o.mu.RUnlock()
	raw := o.raw[o.b.DesiredState.Bucket()]
	have := make(map[string]store.Entry, len(keys))
	for _, k := range keys {
		if e, ok := raw[k]; ok {
			have[k] = e
		}
	}
	return have
}

// applyPlan does a pass's writes, puts its orphans through the grace and
// the guard and deletes those they let go (under the lease), then keeps
// the books: the keys to look at again go back into the work.
func (o *Operator) applyPlan(ctx context.Context, in passInput, check []string, have map[string]store.Entry, p writePlan) error {
	now := time.Now()
	var firstErr error
	retry := map[string]bool{} // keys to look at again
	note := func(key string, err error) {
		if err != nil && !errors.Is(err, store.ErrConflict) {
			retry[key] = true
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	writes := 0
	for _, wr := range p.writes {
		var err error
		if wr.rev == 0 {
			_, err = o.b.DesiredState.Create(ctx, wr.key, wr.value)
		} else {
			_, err = o.b.DesiredState.Update(ctx, wr.key, wr.value, wr.rev)
		}
		if err == nil {
			writes++
		}
		note(wr.key, err)
	}
	o.mu.Lock()
	ready, waiting := graceOrphans(o.orphanSince, p.orphans, now, in.work.full, o.opts.OrphanGrace)
	o.mu.Unlock()
	for _, k := range waiting {
		retry[k] = true // one more pass after the grace
	}
	// The guard decides which orphans go now (guard.go); only the lease
	// holder deletes them, the others look again later (another server
	// may hold the lease now and this one later).
	later := len(waiting) > 0
	leased := o.opts.Lease == nil || o.opts.Lease.Held()
	for _, r := range o.judge(now, in.deployments, ready) {
		if !leased {
			later = true
			retry[r.key] = true
			continue
		}
		err := o.b.DesiredState.Delete(ctx, r.key, r.rev)
		if err == nil {
			writes++
			o.log.Info("removed orphaned desired state", "key", r.key, "cause", r.cause)
		}
		note(r.key, err)
	}
	o.mu.Lock()
	o.writes += writes
	for _, key := range check {
		_, wanted := o.want[key]
		if _, stored := have[key]; wanted || !stored {
			delete(o.orphanSince, key)
			if o.guard.forget(key) {
				o.log.Info("orphan guard: nothing held any more (the held keys are rendered again or gone)")
			}
		}
	}
	for key := range retry {
		o.dirty.keys[key] = true
	}
	o.mu.Unlock()
	if later {
		time.AfterFunc(o.opts.OrphanGrace, o.poke)
	}
	return firstErr
}
