package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// keptGeneration is one generation of a deployment the deployments bucket
// still keeps (it keeps the last writes of each key).
type keptGeneration struct {
	d    v1.Deployment
	hash string
	e    store.Entry
}

// kept reads deployment name and its kept generations of the same UID,
// newest first, one per generation (the newest write of each).
func (h *handler) kept(ctx context.Context, name string) (v1.Deployment, []keptGeneration, error) {
	// The newest write in the history is the current deployment (or its
	// deletion).
	es, err := h.kvs[h.cfg.Buckets.Deployments].History(ctx, name)
	if err != nil {
		return v1.Deployment{}, nil, err
	}
	if len(es) == 0 || es[len(es)-1].Op != store.OpPut {
		return v1.Deployment{}, nil, store.ErrNotFound
	}
	cur, err := v1.DecodeStoredDeployment(es[len(es)-1].Value)
	if err != nil {
		return v1.Deployment{}, nil, err
	}
	seen := map[int64]bool{}
	var out []keptGeneration
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].Op != store.OpPut {
			break // a deletion: what came before was another deployment
		}
		sd, err := v1.DecodeStoredDeployment(es[i].Value)
		if err != nil || sd.Deployment.Metadata.UID != cur.Deployment.Metadata.UID || seen[sd.Deployment.Metadata.Generation] {
			continue
		}
		seen[sd.Deployment.Metadata.Generation] = true
		hash, _ := sd.Deployment.SpecHash()
		out = append(out, keptGeneration{d: sd.Deployment, hash: hash, e: es[i]})
	}
	return cur.Deployment, out, nil
}

func (h *handler) deploymentHistory(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	cur, kept, err := h.kept(r.Context(), name)
	if err != nil {
		deploymentError(w, name, err)
		return
	}
	ans := httpapi.DeploymentHistory{Name: name, UID: cur.Metadata.UID, Generation: cur.Metadata.Generation, Generations: []httpapi.HistoryRecord{}}
	for _, k := range kept {
		ans.Generations = append(ans.Generations, httpapi.HistoryRecord{Generation: k.d.Metadata.Generation, SpecHash: k.hash,
			Stored: k.e.Created.UTC(), Current: k.d.Metadata.Generation == cur.Metadata.Generation})
	}
	writeJSON(w, http.StatusOK, ans)
}

// undoDeployment makes a kept generation's spec the deployment's again.
// It is stored like an apply of that spec: a new generation (so that the
// agents see a change, and a job's run of it is a new run), checked as an
// apply is (the secrets it names must still exist).
func (h *handler) undoDeployment(w http.ResponseWriter, r *http.Request) {
	var req httpapi.UndoRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	res, e := h.undo(r.Context(), r.PathValue("name"), req.ToGeneration)
	if e != nil {
		apiError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// undo is the API's and the dashboard's undo (to 0: the generation
// before).
func (h *handler) undo(ctx context.Context, name string, to int64) (httpapi.ApplyResult, *httpapi.Error) {
	cur, kept, err := h.kept(ctx, name)
	if err != nil {
		return httpapi.ApplyResult{}, deploymentErrorOf(name, err)
	}
	target, e := undoTarget(cur, kept, to)
	if e != nil {
		return httpapi.ApplyResult{}, e
	}
	d := target.d
	d.Metadata.Generation, d.Metadata.UID = 0, ""
	if e := h.refusal(ctx, d, fmt.Sprintf("generation %d", target.d.Metadata.Generation)); e != nil {
		return httpapi.ApplyResult{}, e
	}
	res, err := h.applyOne(ctx, d, false)
	if err != nil {
		return httpapi.ApplyResult{}, storeErrorOf(err)
	}
	h.log.Info("deployment undone", "deployment", name, "to_spec_of", target.d.Metadata.Generation, "generation", res.Generation)
	return res, nil
}

// undoTarget picks the kept generation to go back to: to, or (0) the
// newest one before the current whose spec differs from the current's.
func undoTarget(cur v1.Deployment, kept []keptGeneration, to int64) (keptGeneration, *httpapi.Error) {
	now := cur.Metadata.Generation
	curHash, _ := cur.SpecHash()
	var gens []string
	for _, k := range kept {
		gens = append(gens, strconv.FormatInt(k.d.Metadata.Generation, 10))
	}
	switch {
	case to < 0:
		return keptGeneration{}, httpapi.Errorf(httpapi.CodeInvalid, "toGeneration: %d: want a generation (1 or more), or none for the one before", to).WithField("toGeneration")
	case to == now:
		return keptGeneration{}, httpapi.Errorf(httpapi.CodeInvalid, "toGeneration: %d is the current generation", to).WithField("toGeneration")
	case to > now:
		return keptGeneration{}, httpapi.Errorf(httpapi.CodeInvalid, "toGeneration: %d: the deployment is at generation %d", to, now).WithField("toGeneration")
	}
	for _, k := range kept {
		if to == 0 && k.d.Metadata.Generation < now && k.hash != curHash || to != 0 && k.d.Metadata.Generation == to {
			return k, nil
		}
	}
	if to == 0 {
		return keptGeneration{}, httpapi.Errorf(httpapi.CodeInvalid, "toGeneration: no earlier generation with another spec is kept (kept: %s)", strings.Join(gens, ", ")).WithField("toGeneration")
	}
	return keptGeneration{}, httpapi.Errorf(httpapi.CodeInvalid, "toGeneration: generation %d is no longer kept (kept: %s)", to, strings.Join(gens, ", ")).WithField("toGeneration")
}

// deploymentError answers a failed read of deployment name.
func deploymentError(w http.ResponseWriter, name string, err error) {
	apiError(w, deploymentErrorOf(name, err))
}

func deploymentErrorOf(name string, err error) *httpapi.Error {
	if errors.Is(err, store.ErrNotFound) {
		return httpapi.Errorf(httpapi.CodeNotFound, "deployment %q not found", name).WithField("name")
	}
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrOutcomeUnknown) {
		return storeErrorOf(err)
	}
	return storeErrorOf(fmt.Errorf("deployment %q: %w", name, err))
}
