package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/operator"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Progressive rollouts, the API's side (docs/adr/0028): an apply of a
// deployment with spec.rollout stores, with the new generation, the
// deployment the devices not yet reached keep (stableOf); the operator
// holding the lease moves the rollout on; people read, pause and resume
// it here.

// stableOf is what a new generation of old rolls out from: the last
// generation every device had. That is old itself, unless old was still
// rolling out (not yet succeeded): then what old rolled out from, so a
// change made during a rollout starts again from the generation the fleet
// had, and the devices given the abandoned one go back to it until their
// batch.
func (h *handler) stableOf(ctx context.Context, old v1.StoredDeployment) (*v1.Deployment, error) {
	if old.RolloutFrom == nil {
		d := old.Deployment
		return &d, nil
	}
	e, err := h.kvs[h.cfg.Buckets.Rollouts].Get(ctx, old.Deployment.Metadata.Name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err == nil {
		st, derr := v1.DecodeRolloutState(e.Value)
		if derr == nil && st.Of(old.Deployment) && st.Phase == v1.RolloutSucceeded {
			d := old.Deployment
			return &d, nil
		}
	}
	return old.RolloutFrom, nil
}

// rolloutRefusal refuses a change that rolls out in batches leaving out
// some of the devices the deployment matches now (judged once the view is
// rebuilt: devices that match later join the last batch). A creation or an
// unchanged spec rolls nothing out and is not checked.
func (h *handler) rolloutRefusal(ctx context.Context, d v1.Deployment, what string) *httpapi.Error {
	if d.Spec.Rollout == nil || h.op.Phase() != operator.Converged {
		return nil
	}
	e, err := h.kvs[h.cfg.Buckets.Deployments].Get(ctx, d.Metadata.Name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return storeErrorOf(err)
	}
	if old, err := v1.DecodeStoredDeployment(e.Value); err == nil {
		oldHash, _ := old.Deployment.SpecHash()
		if hash, _ := d.SpecHash(); hash == oldHash {
			return nil
		}
	}
	left, matched := h.op.Uncovered(d.Spec.Selector, d.Spec.Rollout)
	if left == 0 {
		return nil
	}
	return httpapi.Errorf(httpapi.CodeInvalid, "%s: spec.rollout.batches: they take %d of the %d devices the selector matches now; end with a batch of percent: 100",
		what, matched-left, matched).WithField("spec.rollout.batches")
}

func (h *handler) getRollout(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	st, ok := h.op.RolloutStatus(name)
	if !ok {
		deploymentError(w, name, store.ErrNotFound)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (h *handler) pauseRollout(w http.ResponseWriter, r *http.Request)  { h.rolloutAction(w, r, true) }
func (h *handler) resumeRollout(w http.ResponseWriter, r *http.Request) { h.rolloutAction(w, r, false) }

func (h *handler) rolloutAction(w http.ResponseWriter, r *http.Request, pause bool) {
	name := r.PathValue("name")
	by, _ := r.Context().Value(tokenNameKey{}).(string)
	stored, e := h.pauseOrResume(r.Context(), name, by, pause)
	if e != nil {
		apiError(w, e)
		return
	}
	// The view may not have the write yet: the answer says what was
	// written.
	st, _ := h.op.RolloutStatus(name)
	st.Phase, st.Reason, st.Failed = stored.Phase, stored.Reason, stored.Failed
	writeJSON(w, http.StatusOK, st)
}

// pauseOrResume pauses the current generation's rollout (no device is
// given the change until it resumes) or resumes it (the current batch is
// judged afresh, without the devices that failed it by being offline: they
// get their batch's generation when they come back). The API's and the
// dashboard's; it returns the state written.
func (h *handler) pauseOrResume(ctx context.Context, name, by string, pause bool) (v1.RolloutState, *httpapi.Error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.StoreTimeout.Std())
	defer cancel()
	de, err := h.kvs[h.cfg.Buckets.Deployments].Get(ctx, name)
	if err != nil {
		return v1.RolloutState{}, deploymentErrorOf(name, err)
	}
	sd, err := v1.DecodeStoredDeployment(de.Value)
	if err != nil {
		return v1.RolloutState{}, storeErrorOf(err)
	}
	gen := sd.Deployment.Metadata.Generation
	if sd.RolloutFrom == nil || sd.Deployment.Spec.Rollout == nil {
		return v1.RolloutState{}, httpapi.Errorf(httpapi.CodeConflict, "deployment %q: generation %d does not roll out in batches (no spec.rollout when it was applied)", name, gen)
	}
	kv := h.kvs[h.cfg.Buckets.Rollouts]
	e, err := kv.Get(ctx, name)
	var st v1.RolloutState
	if err == nil {
		st, err = v1.DecodeRolloutState(e.Value)
	}
	switch {
	case errors.Is(err, store.ErrNotFound) || err == nil && !st.Of(sd.Deployment):
		return v1.RolloutState{}, httpapi.Errorf(httpapi.CodeConflict, "deployment %q: the rollout of generation %d has not started yet; try again in a moment", name, gen)
	case err != nil:
		return v1.RolloutState{}, storeErrorOf(err)
	}
	now := time.Now().UTC()
	switch {
	case pause && st.Phase == v1.RolloutProgressing:
		st.Phase, st.Reason = v1.RolloutPaused, fmt.Sprintf("paused by %s at %s", by, now.Format(time.RFC3339))
	case !pause && st.Phase == v1.RolloutPaused:
		for _, id := range slices.Sorted(maps.Keys(st.Failed)) {
			if st.Failed[id] == operator.FailedOffline {
				st.Excused = append(st.Excused, id)
			}
		}
		st.Phase, st.Reason, st.Failed = v1.RolloutProgressing, "", nil
		st.Resumes++
		st.BatchStarted = now
	default:
		what := "resume"
		if pause {
			what = "pause"
		}
		return v1.RolloutState{}, httpapi.Errorf(httpapi.CodeConflict, "deployment %q: cannot %s a rollout that is %s", name, what, st.Phase)
	}
	st.Updated = now
	b, err := v1.Marshal(st)
	if err != nil {
		return v1.RolloutState{}, storeErrorOf(err)
	}
	if _, err := kv.Update(ctx, name, b, e.Revision); err != nil {
		return v1.RolloutState{}, storeErrorOf(err)
	}
	h.log.Info("rollout "+map[bool]string{true: "paused", false: "resumed"}[pause], "deployment", name, "generation", gen, "by", by)
	return st, nil
}
