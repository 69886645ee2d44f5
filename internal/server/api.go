package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// apiRoutes are the handlers of the API's routes (enroll.go has the
// enrollment routes); routesAPI registers them.
func (h *handler) apiRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		httpapi.RouteStatus:           h.apiStatus,
		httpapi.RouteDeployments:      h.listDeployments,
		httpapi.RouteApply:            h.applyDeployments,
		httpapi.RouteDeployment:       h.getDeployment,
		httpapi.RouteDeleteDeployment: h.deleteDeployment,
		httpapi.RouteHistory:          h.deploymentHistory, // history.go
		httpapi.RouteUndo:             h.undoDeployment,
		httpapi.RouteRollout:          h.getRollout, // rollout.go
		httpapi.RoutePauseRollout:     h.pauseRollout,
		httpapi.RouteResumeRollout:    h.resumeRollout,
		httpapi.RouteDevices:          h.listDevices,
		httpapi.RouteDevice:           h.getDevice,
		httpapi.RouteLabels:           h.patchLabels,
		httpapi.RouteLogs:             h.deviceLogs,
		httpapi.RouteExec:             h.deviceExec,
		httpapi.RouteOrphans:          h.getOrphans,     // collection.go
		httpapi.RouteReleaseOrphans:   h.releaseOrphans, // admin only
		httpapi.RouteEnrollmentTokens: h.createToken,    // enroll.go
		httpapi.RouteEnroll:           h.enroll,
		httpapi.RouteEnrollStatus:     h.enrollStatus,
		httpapi.RouteIdentities:       h.listIdentities,
		httpapi.RouteApprove:          h.approve,
		httpapi.RouteRevoke:           h.revoke,
		httpapi.RouteSecrets:          h.listSecrets, // secrets.go
		httpapi.RouteCreateSecret:     h.createSecret,
		httpapi.RouteReplaceSecret:    h.replaceSecret,
		httpapi.RouteDeleteSecret:     h.deleteSecret,
	}
}

func (h *handler) routesAPI() {
	for route, f := range h.apiRoutes() {
		h.mux.HandleFunc(route, f)
	}
}

// noRoute answers a request under /api/ that no route takes, in the API's
// error envelope: 405 with Allow when the path is a route's with another
// method, 404 otherwise.
func (h *handler) noRoute(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, route := range httpapi.Routes() {
		method, pattern, _ := strings.Cut(route, " ")
		probe := http.NewServeMux()
		probe.HandleFunc(pattern, func(http.ResponseWriter, *http.Request) {})
		if _, matched := probe.Handler(r); matched != "" {
			allow = append(allow, method)
		}
	}
	if len(allow) == 0 {
		apiError(w, httpapi.Errorf(httpapi.CodeNotFound, "%s: no such API path (docs/openapi.yaml lists them)", r.URL.Path))
		return
	}
	w.Header().Set("Allow", strings.Join(allow, ", "))
	apiError(w, httpapi.Errorf(httpapi.CodeMethodNotAllowed, "%s %s: this path takes %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
}

// apiError answers with an error of the catalogue, with its code's status.
func apiError(w http.ResponseWriter, e *httpapi.Error) {
	writeJSON(w, e.Code.Status(), httpapi.ErrorBody{Error: e})
}

// storeError answers a store failure with the right status and code.
func storeError(w http.ResponseWriter, err error) {
	apiError(w, storeErrorOf(err))
}

func storeErrorOf(err error) *httpapi.Error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return httpapi.Errorf(httpapi.CodeNotFound, "%v", err)
	case errors.Is(err, store.ErrConflict):
		return httpapi.Errorf(httpapi.CodeConflict, "%v; try again", err)
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrOutcomeUnknown):
		return httpapi.Errorf(httpapi.CodeStoreUnavailable, "%v", err)
	default:
		return httpapi.Errorf(httpapi.CodeInternal, "%v", err)
	}
}

func (h *handler) apiStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, httpapi.Status{Operator: string(h.op.Phase()), Progress: h.op.Progress(),
		Fleet: fleetCounts(h.op.Rollup())})
}

func (h *handler) listDeployments(w http.ResponseWriter, r *http.Request) {
	// Counts kept up to date by the operator: no pass over the fleet.
	roll, deps := h.op.Rollup(), h.op.Deployments()
	out := []httpapi.DeploymentView{}
	for _, name := range sortedNames(deps) {
		out = append(out, deploymentView(deps[name], roll.Deployments[name]))
	}
	writeJSON(w, http.StatusOK, listBody(h, out))
}

func (h *handler) getDeployment(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	// From the operator's read model: this deployment's devices only.
	d, st, ok := h.op.Deployment(name)
	if !ok {
		apiError(w, httpapi.Errorf(httpapi.CodeNotFound, "deployment %q not found", name).WithField("name"))
		return
	}
	writeJSON(w, http.StatusOK, deploymentView(d, st))
}

func (h *handler) applyDeployments(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4*v1.MaxDeploymentBytes))
	if err != nil {
		apiError(w, bodyError(err))
		return
	}
	results, e := h.applyDocs(r.Context(), body)
	if e != nil {
		apiError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, httpapi.ApplyResults{Items: results})
}

// bodyError is the answer to a request body that could not be read: too
// large, or cut off.
func bodyError(err error) *httpapi.Error {
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return httpapi.Errorf(httpapi.CodeTooLarge, "body: larger than %d bytes", mbe.Limit)
	}
	// A value of the wrong kind: name the field and what it takes, in
	// JSON's terms, not the Go type it was to be decoded into.
	if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "body"
		}
		return httpapi.Errorf(httpapi.CodeInvalid, "%s: want %s, got %s", field, jsonNoun(te.Type), te.Value).WithField(te.Field)
	}
	if se := (*json.SyntaxError)(nil); errors.As(err, &se) {
		return httpapi.Errorf(httpapi.CodeInvalid, "body: not valid JSON at byte %d: %v", se.Offset, err)
	}
	return httpapi.Errorf(httpapi.CodeInvalid, "body: %s", strings.TrimPrefix(err.Error(), "json: "))
}

// jsonNoun says what a Go type takes in JSON: "a string", "a list of
// strings", "an object of strings", ...
func jsonNoun(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list of " + strings.TrimPrefix(strings.TrimPrefix(jsonNoun(t.Elem()), "a "), "an ") + "s"
	case reflect.Map:
		return "an object of " + strings.TrimPrefix(strings.TrimPrefix(jsonNoun(t.Elem()), "a "), "an ") + "s"
	}
	return "an object"
}

// applyDocs parses, validates and stores a document stream; on failure it
// returns the error to answer with. Nothing is stored unless every
// document is valid.
func (h *handler) applyDocs(ctx context.Context, body []byte) ([]httpapi.ApplyResult, *httpapi.Error) {
	docs, err := v1.ParseDeployments(body)
	if err != nil {
		return nil, httpapi.Errorf(httpapi.CodeInvalid, "%v", err)
	}
	seen := map[string]int{}
	for i := range docs {
		// A duplicate is named as such once it is valid (an invalid one
		// is refused for what is wrong with it, below).
		if j, dup := seen[docs[i].Metadata.Name]; dup && docs[i].Validate() == nil {
			e := httpapi.Errorf(httpapi.CodeInvalid, "document %d: deployment %q is also document %d", i+1, docs[i].Metadata.Name, j).WithField("metadata.name")
			e.Document = i + 1
			return nil, e
		}
		seen[docs[i].Metadata.Name] = i + 1
		e := h.refusal(ctx, docs[i], fmt.Sprintf("document %d", i+1))
		if e == nil {
			e = h.rolloutRefusal(ctx, docs[i], fmt.Sprintf("document %d", i+1)) // rollout.go
		}
		if e != nil {
			if e.Code == httpapi.CodeInvalid {
				e.Document = i + 1
			}
			return nil, e
		}
	}
	var results []httpapi.ApplyResult
	for _, d := range docs {
		res, err := h.applyOne(ctx, d, true)
		if err != nil {
			return results, storeErrorOf(err)
		}
		results = append(results, res)
	}
	return results, nil
}

// refusal is why deployment d may not be stored (what names it, say
// "document 2", starts the message), or nil: it must validate, and the
// secrets and keys it takes values from must exist. An apply and an undo
// check the same.
func (h *handler) refusal(ctx context.Context, d v1.Deployment, what string) *httpapi.Error {
	if err := d.Validate(); err != nil {
		e := httpapi.Errorf(httpapi.CodeInvalid, "%s: %v", what, err)
		if fe, ok := v1.First(err); ok {
			e.Field = fe.Field
		}
		return e
	}
	fe, err := h.checkSecretRefs(ctx, d)
	if err != nil {
		return storeErrorOf(err)
	}
	if fe != nil {
		return httpapi.Errorf(httpapi.CodeInvalid, "%s: %v", what, fe).WithField(fe.Field)
	}
	return nil
}

// applyOne stores one validated deployment. The generation grows only when
// the canonical spec changes. Concurrent writers are settled by CAS. A
// new generation of a deployment with spec.rollout rolls out batch by
// batch when rollsOut (an apply; an undo goes everywhere at once).
//
// Each attempt gets a third of store_timeout, and an attempt whose outcome
// is unknown (a stream leader that went away mid-write, as when a cluster
// member stops) is followed by another within the whole store_timeout:
// every attempt re-reads and decides again, so a write that did land is
// recognised instead of repeated.
func (h *handler) applyOne(ctx context.Context, d v1.Deployment, rollsOut bool) (httpapi.ApplyResult, error) {
	kv := h.kvs[h.cfg.Buckets.Deployments]
	c, err := d.Canonical()
	if err != nil {
		return httpapi.ApplyResult{}, err
	}
	hash, _ := c.SpecHash()
	budget := h.cfg.StoreTimeout.Std()
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var unknown *httpapi.ApplyResult // the attempt whose outcome is not known
	conflicts := 0
	for {
		res, err := h.applyAttempt(ctx, kv, c, hash, rollsOut, budget/3)
		switch {
		case err == nil:
			if unknown != nil && res.Result == httpapi.ResultUnchanged && res.Generation == unknown.Generation {
				return *unknown, nil // the earlier attempt had landed
			}
			return res, nil
		case errors.Is(err, store.ErrConflict) && conflicts < 5:
			conflicts++ // someone else wrote it meanwhile: read and decide again
		case (errors.Is(err, store.ErrOutcomeUnknown) || errors.Is(err, store.ErrUnavailable)) && ctx.Err() == nil:
			if errors.Is(err, store.ErrOutcomeUnknown) {
				unknown = &res
			}
			select {
			case <-ctx.Done():
				return res, outcome(err, unknown)
			case <-time.After(100 * time.Millisecond):
			}
		default:
			return res, outcome(err, unknown)
		}
	}
}

// outcome is the error to report: once an attempt's outcome was unknown,
// a later failure cannot say the write did not happen.
func outcome(err error, unknown *httpapi.ApplyResult) error {
	if unknown != nil && !errors.Is(err, store.ErrOutcomeUnknown) {
		return fmt.Errorf("%w: an earlier attempt may have been stored (then: %v)", store.ErrOutcomeUnknown, err)
	}
	return err
}

// applyAttempt reads the deployment, decides and writes once.
func (h *handler) applyAttempt(ctx context.Context, kv store.KV, c v1.Deployment, hash string, rollsOut bool, timeout time.Duration) (httpapi.ApplyResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cur, err := kv.Get(ctx, c.Metadata.Name)
	res := httpapi.ApplyResult{Name: c.Metadata.Name}
	var rev uint64
	var from *v1.Deployment // what the devices a rollout has not reached keep
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.Metadata.Generation, res.Result = 1, httpapi.ResultCreated
		c.Metadata.UID = newUID()
	case err != nil:
		return res, err
	default:
		rev = cur.Revision
		old, derr := v1.DecodeStoredDeployment(cur.Value)
		oldHash := ""
		if derr == nil {
			oldHash, _ = old.Deployment.SpecHash()
		}
		c.Metadata.Generation, res.Result = old.Deployment.Metadata.Generation+1, httpapi.ResultConfigured
		// The UID stays (empty for a deployment created before UIDs: a new
		// one would make the agents run its jobs again at the same
		// generation).
		c.Metadata.UID = old.Deployment.Metadata.UID
		if derr == nil && oldHash == hash {
			c.Metadata.Generation, res.Result = old.Deployment.Metadata.Generation, httpapi.ResultConfigured
			if a, _ := v1.Marshal(old.Deployment.Metadata); string(a) == mustMarshal(c.Metadata) {
				res.Result, res.Generation = httpapi.ResultUnchanged, c.Metadata.Generation
				return res, nil
			}
			from = old.RolloutFrom // the same generation: its rollout goes on
		} else if derr == nil && rollsOut && c.Spec.Rollout != nil {
			if from, err = h.stableOf(ctx, old); err != nil {
				return res, err
			}
		}
	}
	b, err := v1.Marshal(v1.StoredDeployment{V: v1.FormatVersion, Deployment: c, RolloutFrom: from})
	if err != nil {
		return res, err
	}
	if rev == 0 {
		_, err = kv.Create(ctx, c.Metadata.Name, b)
	} else {
		_, err = kv.Update(ctx, c.Metadata.Name, b, rev)
	}
	res.Generation = c.Metadata.Generation
	return res, err
}

// newUID is a new deployment UID: crypto/rand.Text, 26 base32 characters
// (more than 128 random bits).
func newUID() string {
	return rand.Text()
}

func mustMarshal(v any) string {
	b, _ := v1.Marshal(v)
	return string(b)
}

func (h *handler) deleteDeployment(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := h.deleteOne(r.Context(), name); err != nil {
		deploymentError(w, name, err) // history.go
		return
	}
	writeJSON(w, http.StatusOK, httpapi.DeleteResult{Name: name, Result: httpapi.ResultDeleted})
}

// deleteOne deletes a deployment by its latest revision.
func (h *handler) deleteOne(ctx context.Context, name string) error {
	kv := h.kvs[h.cfg.Buckets.Deployments]
	cur, err := kv.Get(ctx, name)
	if err != nil {
		return err
	}
	return kv.Delete(ctx, name, cur.Revision)
}

func (h *handler) listDevices(w http.ResponseWriter, r *http.Request) {
	sel, err := v1.ParseSelector(r.URL.Query().Get("selector"))
	if err != nil {
		apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "%v", err).WithField("selector"))
		return
	}
	snap := h.op.Snapshot()
	writeJSON(w, http.StatusOK, listBody(h, devicesOf(snap, matchingDevices(snap, sel, nil))))
}

func (h *handler) getDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, ok := h.op.Device(id) // this device only, not the fleet
	if !ok {
		apiError(w, httpapi.Errorf(httpapi.CodeNotFound, "device %q not found", id).WithField("id"))
		return
	}
	writeJSON(w, http.StatusOK, deviceView(d))
}

// patchLabels sets and removes a device's control-plane labels. The device
// must have reported (have device info): an unknown id is not_found, like
// every other call about a device, so that a typo does not leave labels
// for a device that does not exist.
func (h *handler) patchLabels(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := v1.ValidateDeviceID(id); err != nil {
		apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "%v", err).WithField("id"))
		return
	}
	var p httpapi.LabelPatch
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		apiError(w, bodyError(err))
		return
	}
	for k, v := range p.Set {
		if err := v1.ValidateLabelKey(k); err != nil {
			apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "%v", err).WithField("set."+k))
			return
		}
		if err := v1.ValidateLabelValue(v); err != nil {
			apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "%v", err).WithField("set."+k))
			return
		}
	}
	for _, k := range p.Remove {
		if err := v1.ValidateLabelKey(k); err != nil {
			apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "%v", err).WithField("remove"))
			return
		}
	}
	// The store, not the operator's view: a server still rebuilding its
	// view must not call a known device unknown.
	if _, err := h.kvs[h.cfg.Buckets.DeviceInfo].Get(r.Context(), id); errors.Is(err, store.ErrNotFound) {
		apiError(w, httpapi.Errorf(httpapi.CodeNotFound, "device %q not found: no device with this id has reported", id).WithField("id"))
		return
	} else if err != nil {
		storeError(w, err)
		return
	}
	kv := h.kvs[h.cfg.Buckets.DeviceLabels]
	for attempt := 0; ; attempt++ {
		cur, err := kv.Get(r.Context(), id)
		dl := v1.DeviceLabels{V: v1.FormatVersion, Overrides: map[string]*string{}}
		var rev uint64
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			storeError(w, err)
			return
		default:
			rev = cur.Revision
			if old, err := v1.DecodeDeviceLabels(cur.Value); err == nil && old.Overrides != nil {
				dl = old
			}
		}
		for k, v := range p.Set {
			dl.Overrides[k] = &v
		}
		for _, k := range p.Remove {
			dl.Overrides[k] = nil
		}
		b, _ := v1.Marshal(dl)
		if rev == 0 {
			_, err = kv.Create(r.Context(), id, b)
		} else {
			_, err = kv.Update(r.Context(), id, b, rev)
		}
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			storeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, httpapi.DeviceLabels{Device: id, Overrides: dl.Overrides})
		return
	}
}

// command sends a request to a device and answers with its reply; a reply
// that is not OK is an error answer carrying it.
func (h *handler) command(w http.ResponseWriter, r *http.Request, req v1.CommandRequest, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	id := r.PathValue("id")
	reply, e := h.sendCommand(ctx, id, req)
	if e != nil {
		apiError(w, e)
		return
	}
	if !reply.OK {
		e := httpapi.Errorf(httpapi.CodeDeviceError, "device %q: %s", id, reply.Error)
		if reply.Code == v1.CodeNotFound {
			e = httpapi.Errorf(httpapi.CodeNotFound, "device %q: %s", id, reply.Error)
		}
		e.Reply = &reply
		apiError(w, e)
		return
	}
	writeJSON(w, http.StatusOK, reply)
}

// sendCommand sends a request to a device and waits for its reply (until
// ctx ends). An offline device is refused at once instead of waiting.
func (h *handler) sendCommand(ctx context.Context, id string, req v1.CommandRequest) (v1.CommandReply, *httpapi.Error) {
	online, known := h.op.Online(id)
	if !known {
		return v1.CommandReply{}, httpapi.Errorf(httpapi.CodeNotFound, "device %q not found", id).WithField("id")
	}
	if !online {
		return v1.CommandReply{}, httpapi.Errorf(httpapi.CodeDeviceOffline, "device %q is offline (no heartbeat for more than %s)", id, h.op.Staleness())
	}
	if err := req.Validate(); err != nil {
		e := httpapi.Errorf(httpapi.CodeInvalid, "%v", err)
		if fe, ok := v1.First(err); ok {
			e.Field = fe.Field
		}
		return v1.CommandReply{}, e
	}
	b, _ := json.Marshal(req)
	m, err := h.nc.RequestWithContext(ctx, v1.CommandSubject(id), b)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return v1.CommandReply{}, httpapi.Errorf(httpapi.CodeDeviceOffline, "device %q did not answer: %v", id, err)
		}
		return v1.CommandReply{}, httpapi.Errorf(httpapi.CodeDeviceTimeout, "device %q did not answer: %v", id, err)
	}
	var reply v1.CommandReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return v1.CommandReply{}, httpapi.Errorf(httpapi.CodeDeviceError, "device %q: unreadable reply: %v", id, err)
	}
	return reply, nil
}

func (h *handler) deviceLogs(w http.ResponseWriter, r *http.Request) {
	lines, _ := strconv.Atoi(r.URL.Query().Get("lines"))
	h.command(w, r, v1.CommandRequest{Op: v1.OpLogs, Resource: r.URL.Query().Get("resource"),
		Deployment: r.URL.Query().Get("deployment"), Lines: lines}, 10*time.Second)
}

func (h *handler) deviceExec(w http.ResponseWriter, r *http.Request) {
	var body httpapi.ExecRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, v1.MaxCommandBytes)).Decode(&body); err != nil {
		apiError(w, bodyError(err))
		return
	}
	h.command(w, r, v1.CommandRequest{Op: v1.OpExec, Command: body.Command}, (v1.ExecTimeoutLimit+5)*time.Second)
}

// listBody is a list answer: the operator's phase and, while the store is
// unreachable, that the view is stale and since when.
func listBody[T any](h *handler, items []T) httpapi.List[T] {
	body := httpapi.List[T]{Operator: string(h.op.Phase()), Items: items}
	if since := h.stale(); !since.IsZero() {
		body.Stale, body.StaleSince = true, since.UTC().Format(time.RFC3339)
	}
	return body
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
