package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/agent/plan"
)

// engine runs reconcile passes: on every change of desired state, every
// resync interval (drift), and when a failed resource's retry is due.
type engine struct {
	a      *Agent
	wakeCh chan struct{}

	// good is written only by the engine's goroutine, under goodMu, so
	// other goroutines may read it under goodMu.
	goodMu   sync.Mutex
	good     map[string]goodState // the desired state enforced, by deployment
	rejected map[string]rejection // the latest candidate that was refused
	res      map[string]*resState // by deployment/id
	seen     map[string][]byte    // raw candidate last evaluated, by deployment
	// keptSecrets: the secrets kept when last looked (nil: not yet).
	keptSecrets map[string]bool
	// conds are the conditions last published, by deployment/id, for
	// every resource with a status (conflicts and refusals too).
	conds map[string][]v1.Condition
}

type goodState struct {
	ds        v1.DesiredState
	resources []Desired
}

// rejection is a desired-state value the agent refused; the last good state
// of the deployment keeps being enforced.
type rejection struct {
	generation int64
	uid        string // the refused desired state's deployment UID
	message    string
	resources  []v1.ResourceStatus
}

type resState struct {
	gen       int64
	phase     string
	message   string
	since     time.Time
	details   map[string]string
	bo        *backoff.ExponentialBackOff
	nextRetry time.Time
	permanent bool
	recheck   time.Time // the kind asked to observe again then (Result.Recheck)
	counters            // restarts and repairs at gen
}

func newEngine(a *Agent) *engine {
	return &engine{a: a, wakeCh: make(chan struct{}, 1), good: map[string]goodState{},
		rejected: map[string]rejection{}, res: map[string]*resState{}, seen: map[string][]byte{}}
}

func (e *engine) wake() {
	select {
	case e.wakeCh <- struct{}{}:
	default:
	}
}

func (e *engine) run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.wakeCh:
		case <-timer.C:
		}
		next := e.pass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(time.Until(next))
	}
}

// pass reconciles everything once and returns when the next pass is due.
func (e *engine) pass(ctx context.Context) time.Time {
	now := time.Now()
	e.admit(e.a.desired.snapshot())
	e.forgetSecrets()

	var want []plan.Resource
	byKey := map[string]Desired{}
	for _, g := range e.good {
		for _, d := range g.resources {
			want = append(want, plan.Resource{Deployment: d.Deployment, ID: d.ID, Kind: d.Kind, Claim: d.Claim})
			byKey[d.Deployment+"/"+d.ID] = d
		}
	}
	var owned []plan.Owned
	for _, o := range e.a.ledger.All() {
		owned = append(owned, plan.Owned{Kind: o.Kind, Claim: o.Claim, Deployment: o.Deployment, ResourceID: o.ResourceID})
	}
	p := plan.Make(want, owned)

	for _, o := range p.Remove {
		if e.keepRefused(o.Deployment) {
			continue
		}
		e.remove(ctx, o)
	}
	conflicts := map[string]plan.Conflict{}
	for _, c := range p.Conflicts {
		conflicts[c.Resource.Deployment+"/"+c.Resource.ID] = c
	}
	for _, r := range p.Apply {
		if ctx.Err() != nil {
			return now
		}
		e.reconcile(ctx, byKey[r.Deployment+"/"+r.ID])
	}
	e.publish(conflicts)

	next := now.Add(e.a.cfg.ResyncInterval.Std())
	for _, rs := range e.res {
		if !rs.nextRetry.IsZero() && rs.nextRetry.Before(next) {
			next = rs.nextRetry
		}
		if !rs.recheck.IsZero() && rs.recheck.Before(next) {
			next = rs.recheck
		}
	}
	return next
}

// admit turns candidates into the states to enforce. A candidate becomes the
// enforced state only if its envelope and every resource are valid and
// admitted on this device; otherwise it is rejected and the last good state
// stays.
func (e *engine) admit(snap map[string]candidate) {
	for dep := range e.good {
		if _, ok := snap[dep]; !ok {
			e.goodMu.Lock()
			delete(e.good, dep)
			e.goodMu.Unlock()
			delete(e.rejected, dep)
			delete(e.seen, dep)
			if err := e.a.state.DropDesired(dep); err != nil {
				e.a.log.Warn("drop cached desired state", "deployment", dep, "err", err)
			}
		}
	}
	for dep := range e.rejected {
		if _, ok := snap[dep]; !ok {
			delete(e.rejected, dep)
			delete(e.seen, dep)
		}
	}
	for dep, c := range snap {
		if prev, ok := e.seen[dep]; ok && bytes.Equal(prev, c.raw) {
			continue
		}
		e.seen[dep] = c.raw
		if c.err != nil {
			field := ""
			if fe, ok := v1.First(c.err); ok {
				field = fe.Field
			}
			e.rejected[dep] = rejection{message: "desired state refused: " + c.err.Error(),
				resources: []v1.ResourceStatus{{ID: "-", Phase: v1.PhaseInvalid, Message: c.err.Error(), Field: field, Since: time.Now().UTC()}}}
			e.a.log.Warn("desired state refused; last good state kept", "deployment", dep, "err", c.err)
			continue
		}
		resources, problems := e.decode(c.ds)
		if len(problems) > 0 {
			e.rejected[dep] = rejection{generation: c.ds.Generation, uid: c.ds.UID, resources: problems,
				message: fmt.Sprintf("generation %d refused: %s", c.ds.Generation, problems[0].Message)}
			e.a.log.Warn("desired state refused; last good state kept", "deployment", dep, "generation", c.ds.Generation, "problem", problems[0].Message)
			continue
		}
		delete(e.rejected, dep)
		e.goodMu.Lock()
		e.good[dep] = goodState{ds: c.ds, resources: resources}
		e.goodMu.Unlock()
		if !c.fromCache {
			if err := e.a.state.SaveDesired(dep, c.raw); err != nil {
				e.a.log.Warn("cache desired state", "deployment", dep, "err", err)
			}
		}
	}
}

// decode checks every resource of a desired state; problems carry the field.
func (e *engine) decode(ds v1.DesiredState) ([]Desired, []v1.ResourceStatus) {
	var out []Desired
	var problems []v1.ResourceStatus
	now := time.Now().UTC()
	for i, r := range ds.Resources {
		prefix := fmt.Sprintf("resources[%d]", i)
		bad := func(phase, field, msg string) {
			problems = append(problems, v1.ResourceStatus{ID: r.ID, Kind: r.Kind, Phase: phase, Field: field, Message: msg, Since: now})
		}
		spec, err := v1.DecodeSpec(prefix, r)
		var unknown *v1.UnknownKindError
		switch {
		case errors.As(err, &unknown):
			bad(v1.PhaseUnsupported, prefix+".kind", err.Error())
			continue
		case err != nil:
			fe, _ := v1.First(err)
			field := ""
			if fe != nil {
				field = fe.Field
			}
			bad(v1.PhaseInvalid, field, err.Error())
			continue
		}
		kind, ok := e.a.kinds[r.Kind]
		if !ok {
			bad(v1.PhaseUnsupported, prefix+".kind", fmt.Sprintf("%s: kind %q is not available on this device", prefix+".kind", r.Kind))
			continue
		}
		raw, _ := v1.Marshal(spec)
		d := Desired{Deployment: ds.Deployment, UID: ds.UID, Generation: ds.Generation, ID: r.ID, Kind: r.Kind, Spec: spec, Raw: raw,
			Secrets: ds.Secrets}
		claim, err := kind.Admit(d)
		if err != nil {
			field := prefix
			var fe *v1.FieldError
			if errors.As(err, &fe) {
				field = prefix + "." + fe.Field
			}
			bad(v1.PhaseInvalid, field, field+": "+errReason(err))
			continue
		}
		d.Claim = claim
		out = append(out, d)
	}
	return out, problems
}

// forgetSecrets drops the kept secrets that no enforced desired state
// names any more (looked at only when that set changes).
func (e *engine) forgetSecrets() {
	keep := map[string]bool{}
	for _, g := range e.good {
		for name := range g.ds.Secrets {
			keep[name] = true
		}
	}
	if e.keptSecrets != nil && maps.Equal(keep, e.keptSecrets) {
		return
	}
	if err := e.a.secrets.forgetExcept(keep); err != nil {
		e.a.log.Warn("drop secrets no longer used", "err", err)
		return
	}
	e.keptSecrets = keep
}

func errReason(err error) string {
	var fe *v1.FieldError
	if errors.As(err, &fe) {
		return fe.Reason
	}
	return err.Error()
}

func (e *engine) reconcile(ctx context.Context, d Desired) {
	key := d.Deployment + "/" + d.ID
	rs := e.res[key]
	if rs == nil || rs.gen != d.Generation {
		prev := rs
		rs = &resState{gen: d.Generation, bo: resourceRetry(e.a.cfg).backoff()}
		if prev != nil {
			rs.phase, rs.since = prev.phase, prev.since
		}
		e.res[key] = rs
	}
	if rs.permanent || (!rs.nextRetry.IsZero() && time.Now().Before(rs.nextRetry)) {
		return
	}
	// Values from secrets are filled in here, for this pass only: what
	// the engine keeps (good, the ledger) holds references.
	resolved, err := e.a.secrets.resolve(ctx, d)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		rs.set(v1.PhaseFailed, err.Error(), map[string]string{detailReason: ReasonSecretUnavailable})
		rs.nextRetry = time.Now().Add(rs.bo.NextBackOff())
		e.a.log.Warn("resource failed", "deployment", d.Deployment, "resource", d.ID, "kind", d.Kind, "err", err, "next_retry", rs.nextRetry)
		return
	}
	res, err := e.observeApply(ctx, resolved, &rs.counters)
	if ctx.Err() != nil {
		return
	}
	rs.recheck = res.Recheck
	if b, ok := asBlocked(err); ok {
		// Looked at again on the next pass, without backoff: the check
		// is cheap and installing what is missing should show at once.
		if rs.phase != v1.PhaseFailed || rs.message != b.msg {
			e.a.log.Warn("resource blocked", "deployment", d.Deployment, "resource", d.ID, "kind", d.Kind, "reason", b.reason, "err", b.err)
		}
		rs.set(v1.PhaseFailed, b.msg, map[string]string{detailReason: b.reason})
		rs.nextRetry = time.Time{}
		return
	}
	if err != nil {
		if errors.As(err, new(madeError)) {
			e.own(d)
		}
		rs.set(v1.PhaseFailed, err.Error(), res.Details)
		if isPermanent(err) {
			rs.permanent = true
			rs.nextRetry = time.Time{}
		} else {
			rs.nextRetry = time.Now().Add(rs.bo.NextBackOff())
		}
		e.a.log.Warn("resource failed", "deployment", d.Deployment, "resource", d.ID, "kind", d.Kind, "err", err, "next_retry", rs.nextRetry)
		return
	}
	rs.bo.Reset()
	rs.nextRetry = time.Time{}
	if res.Phase != rs.phase && res.Phase == v1.PhaseFailed {
		e.a.log.Warn("resource failed", "deployment", d.Deployment, "resource", d.ID, "kind", d.Kind, "message", res.Message)
	}
	rs.set(res.Phase, res.Message, res.Details)
	e.own(d)
}

// own records in the ledger that the agent made d's thing, so that it
// removes it when d is no longer desired.
func (e *engine) own(d Desired) {
	if d.Claim == "" {
		return
	}
	o := localstate.Owned{Kind: d.Kind, Claim: d.Claim, Deployment: d.Deployment, ResourceID: d.ID, Spec: d.Raw}
	if cur, ok := e.a.ledger.Get(d.Kind, d.Claim); !ok || cur.Deployment != o.Deployment || cur.ResourceID != o.ResourceID || !bytes.Equal(cur.Spec, o.Spec) {
		if err := e.a.ledger.Put(o); err != nil {
			e.a.log.Error("ledger", "err", err)
		}
	}
}

func (rs *resState) set(phase, msg string, details map[string]string) {
	if phase != rs.phase {
		rs.since = time.Now().UTC().Truncate(time.Second)
	}
	rs.phase, rs.message, rs.details = phase, msg, details
}

func (e *engine) remove(ctx context.Context, o plan.Owned) {
	owned, ok := e.a.ledger.Get(o.Kind, o.Claim)
	if !ok {
		return
	}
	kind, ok := e.a.kinds[o.Kind]
	if !ok {
		e.a.log.Warn("cannot remove: kind not available", "kind", o.Kind, "claim", o.Claim)
		return
	}
	if err := kind.Delete(ctx, owned); err != nil {
		e.a.log.Warn("remove failed; will retry", "kind", o.Kind, "claim", o.Claim, "err", err)
		return
	}
	if err := e.a.ledger.Remove(o.Kind, o.Claim); err != nil {
		e.a.log.Error("ledger", "err", err)
	}
	delete(e.res, o.Deployment+"/"+o.ResourceID)
	e.a.log.Info("removed", "kind", o.Kind, "claim", o.Claim, "deployment", o.Deployment, "resource", o.ResourceID)
}

// publish computes each deployment's status and hands it to the writer.
func (e *engine) publish(conflicts map[string]plan.Conflict) {
	deps := map[string]bool{}
	for dep := range e.good {
		deps[dep] = true
	}
	for dep := range e.rejected {
		deps[dep] = true
	}
	now := time.Now().UTC().Truncate(time.Second)
	conds := map[string][]v1.Condition{}
	for dep := range deps {
		s := e.deploymentStatus(dep, conflicts)
		for i := range s.Resources {
			r := &s.Resources[i]
			key := dep + "/" + r.ID
			r.Conditions = conditions(e.conds[key], *r, now)
			conds[key] = r.Conditions
		}
		e.a.status.set(dep, s)
	}
	e.conds = conds
	e.a.status.forgetExcept(deps)
}

func (e *engine) deploymentStatus(dep string, conflicts map[string]plan.Conflict) v1.DeviceState {
	s := v1.DeviceState{V: v1.FormatVersion, Device: e.a.cfg.ID, Deployment: dep}
	g, hasGood := e.good[dep]
	if hasGood {
		s.ObservedGeneration, s.UID = g.ds.Generation, g.ds.UID
	}
	counts := map[string]int{}
	for _, d := range g.resources {
		st := v1.ResourceStatus{ID: d.ID, Kind: d.Kind, Phase: v1.PhasePending}
		if c, ok := conflicts[dep+"/"+d.ID]; ok {
			st.Phase = v1.PhaseConflict
			st.Message = fmt.Sprintf("%s %q is managed by deployment %s (resource %s)", d.Kind, d.Claim, c.Winner.Deployment, c.Winner.ID)
		} else if rs := e.res[dep+"/"+d.ID]; rs != nil && rs.phase != "" {
			st.Phase, st.Message, st.Since, st.Details = rs.phase, rs.message, rs.since, rs.details
			st.Restarts, st.Repairs = rs.restarts, rs.repairs
			if !rs.nextRetry.IsZero() {
				t := rs.nextRetry.UTC().Truncate(time.Second)
				st.NextRetry = &t
			}
		}
		counts[st.Phase]++
		s.Resources = append(s.Resources, st)
	}
	rej, hasRej := e.rejected[dep]
	if hasRej {
		for _, p := range rej.resources {
			replaced := false
			for i := range s.Resources {
				if s.Resources[i].ID == p.ID {
					s.Resources[i], replaced = p, true
				}
			}
			if !replaced {
				s.Resources = append(s.Resources, p)
			}
		}
	}
	sort.Slice(s.Resources, func(i, j int) bool { return s.Resources[i].ID < s.Resources[j].ID })
	switch {
	case hasRej:
		s.Phase = v1.PhaseFailed
		s.Message = rej.message
		s.RefusedGeneration = rej.generation
		switch {
		case rej.generation > 0 && (!hasGood || rej.uid != g.ds.UID):
			// The first desired state of this deployment (or of a
			// re-created one) was refused: the status is about it, and
			// nothing of it is observed; whatever is still enforced
			// belongs to an earlier deployment of the same name.
			s.UID, s.ObservedGeneration = rej.uid, 0
		case hasGood:
			s.Message += fmt.Sprintf("; generation %d is still enforced", g.ds.Generation)
		}
	case counts[v1.PhaseConflict] > 0:
		s.Phase, s.Message = v1.PhaseConflict, fmt.Sprintf("%d resource(s) in conflict%s", counts[v1.PhaseConflict], firstOf(s.Resources, v1.PhaseConflict))
	case counts[v1.PhaseFailed] > 0:
		s.Phase, s.Message = v1.PhaseFailed, fmt.Sprintf("%d resource(s) failed%s", counts[v1.PhaseFailed], firstOf(s.Resources, v1.PhaseFailed))
	case counts[v1.PhasePending] > 0 || counts[v1.PhaseProgressing] > 0:
		s.Phase = v1.PhaseProgressing
	default:
		s.Phase = v1.PhaseReady
	}
	return s
}

// firstOf names the first resource (by id) in phase and its message, for
// a deployment's one-line message: what failed, not only how many.
func firstOf(rs []v1.ResourceStatus, phase string) string {
	for _, r := range rs {
		if r.Phase != phase {
			continue
		}
		return fmt.Sprintf(" (first: %s: %s)", r.ID, shorten(r.Message, 300))
	}
	return ""
}

// snapshotGood returns the enforced resources by deployment, for readers on
// other goroutines (commands).
func (e *engine) snapshotGood() map[string][]Desired {
	e.goodMu.Lock()
	defer e.goodMu.Unlock()
	out := make(map[string][]Desired, len(e.good))
	for dep, g := range e.good {
		out[dep] = append([]Desired(nil), g.resources...)
	}
	return out
}

// observeApply observes the resource, applies it when it differs, and
// observes again to confirm; c counts the restarts every observation
// shows and the corrections (counters).
func (e *engine) observeApply(ctx context.Context, d Desired, c *counters) (Result, error) {
	kind := e.a.kinds[d.Kind]
	before, err := kind.Observe(ctx, d)
	c.observed(before.Result)
	if err != nil {
		return before.Result, err
	}
	if before.InSync {
		c.inSync(false)
		return before.Result, nil
	}
	if err := kind.Apply(ctx, d); err != nil {
		return before.Result, err
	}
	after, err := kind.Observe(ctx, d)
	c.observed(after.Result)
	if err != nil {
		return after.Result, err
	}
	if !after.InSync {
		return after.Result, fmt.Errorf("still differs after applying: %s", after.Diff)
	}
	c.inSync(true)
	res := after.Result
	res.Message = fmt.Sprintf("%s (corrected: %s)", res.Message, before.Diff)
	return res, nil
}

// keepRefused: the deployment's desired state was refused and none of its
// generations is enforced (an agent restarted with a capability turned off
// refuses its cached state). Refusing is not removing: what it owns stays
// until the deployment is deleted, which removes it as before.
func (e *engine) keepRefused(dep string) bool {
	_, refused := e.rejected[dep]
	_, enforced := e.good[dep]
	return refused && !enforced
}
