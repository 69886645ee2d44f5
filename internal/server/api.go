package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/operator"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Stable error codes of the API.
const (
	CodeInvalid       = "invalid"
	CodeNotFound      = "not_found"
	CodeConflict      = "conflict"
	CodeUnavailable   = "store_unavailable"
	CodeDeviceOffline = "device_offline"
	CodeDeviceError   = "device_error"
	CodeInternal      = "internal"
	CodeUnauthorized  = "unauthorized"
	CodeForbidden     = "forbidden"
	CodeRateLimited   = "rate_limited"
)

// APIError is the body of every error answer.
type APIError struct {
	Code     string `json:"code"`
	Message  string `json:"message"`
	Field    string `json:"field,omitempty"`
	Document int    `json:"document,omitempty"` // 1-based, in a multi-document apply
}

func (h *handler) routesAPI() {
	h.mux.HandleFunc("GET /api/v1/status", h.apiStatus)
	h.mux.HandleFunc("GET /api/v1/deployments", h.listDeployments)
	h.mux.HandleFunc("POST /api/v1/deployments", h.applyDeployments)
	h.mux.HandleFunc("GET /api/v1/deployments/{name}", h.getDeployment)
	h.mux.HandleFunc("DELETE /api/v1/deployments/{name}", h.deleteDeployment)
	h.mux.HandleFunc("GET /api/v1/devices", h.listDevices)
	h.mux.HandleFunc("GET /api/v1/devices/{id}", h.getDevice)
	h.mux.HandleFunc("PATCH /api/v1/devices/{id}/labels", h.patchLabels)
	h.mux.HandleFunc("GET /api/v1/devices/{id}/logs", h.deviceLogs)
	h.mux.HandleFunc("POST /api/v1/devices/{id}/exec", h.deviceExec)
	h.mux.HandleFunc("GET /api/v1/orphans", h.getOrphans)              // collection.go
	h.mux.HandleFunc("POST /api/v1/orphans/release", h.releaseOrphans) // admin only
}

func apiError(w http.ResponseWriter, status int, e APIError) {
	writeJSON(w, status, map[string]APIError{"error": e})
}

// storeError answers a store failure with the right status and code.
func storeError(w http.ResponseWriter, err error) {
	status, e := storeErrorOf(err)
	apiError(w, status, e)
}

func storeErrorOf(err error) (int, APIError) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, APIError{Code: CodeNotFound, Message: err.Error()}
	case errors.Is(err, store.ErrConflict):
		return http.StatusConflict, APIError{Code: CodeConflict, Message: err.Error() + "; try again"}
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrOutcomeUnknown):
		return http.StatusServiceUnavailable, APIError{Code: CodeUnavailable, Message: err.Error()}
	default:
		return http.StatusInternalServerError, APIError{Code: CodeInternal, Message: err.Error()}
	}
}

// FleetCounts is the fleet's line of GET /api/v1/status: the devices the
// operator knows, online and offline, from its running roll-up.
type FleetCounts struct {
	Devices int `json:"devices"`
	Online  int `json:"online"`
	Offline int `json:"offline"`
}

func (h *handler) apiStatus(w http.ResponseWriter, r *http.Request) {
	roll := h.op.Rollup()
	writeJSON(w, http.StatusOK, map[string]any{"operator": h.op.Phase(), "progress": h.op.Progress(),
		"fleet": FleetCounts{Devices: roll.Online + roll.Offline, Online: roll.Online, Offline: roll.Offline}})
}

// DeploymentView is a deployment with its roll-up.
type DeploymentView struct {
	Deployment v1.Deployment             `json:"deployment"`
	Status     operator.DeploymentStatus `json:"status"`
}

func (h *handler) listDeployments(w http.ResponseWriter, r *http.Request) {
	// Counts kept up to date by the operator: no pass over the fleet.
	roll, deps := h.op.Rollup(), h.op.Deployments()
	out := []DeploymentView{}
	for _, name := range sortedNames(deps) {
		out = append(out, DeploymentView{Deployment: deps[name], Status: roll.Deployments[name]})
	}
	writeJSON(w, http.StatusOK, h.viewBody(out))
}

func (h *handler) getDeployment(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	// From the operator's read model: this deployment's devices only.
	d, st, ok := h.op.Deployment(name)
	if !ok {
		apiError(w, http.StatusNotFound, APIError{Code: CodeNotFound, Message: fmt.Sprintf("deployment %q not found", name), Field: "name"})
		return
	}
	writeJSON(w, http.StatusOK, DeploymentView{Deployment: d, Status: st})
}

// ApplyResult says what happened to one applied document.
type ApplyResult struct {
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
	Result     string `json:"result"` // created, configured, unchanged
}

func (h *handler) applyDeployments(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4*v1.MaxDeploymentBytes))
	if err != nil {
		apiError(w, http.StatusRequestEntityTooLarge, APIError{Code: CodeInvalid, Message: err.Error()})
		return
	}
	results, status, e := h.applyDocs(r.Context(), body)
	if e != nil {
		apiError(w, status, *e)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": results})
}

// applyDocs parses, validates and stores a document stream; on failure it
// returns the HTTP status and the error to answer with. Nothing is stored
// unless every document is valid.
func (h *handler) applyDocs(ctx context.Context, body []byte) ([]ApplyResult, int, *APIError) {
	docs, err := v1.ParseDeployments(body)
	if err != nil {
		return nil, http.StatusBadRequest, &APIError{Code: CodeInvalid, Message: err.Error()}
	}
	seen := map[string]int{}
	for i := range docs {
		if err := docs[i].Validate(); err != nil {
			e := APIError{Code: CodeInvalid, Message: fmt.Sprintf("document %d: %v", i+1, err), Document: i + 1}
			if fe, ok := v1.First(err); ok {
				e.Field = fe.Field
			}
			return nil, http.StatusBadRequest, &e
		}
		if j, dup := seen[docs[i].Metadata.Name]; dup {
			return nil, http.StatusBadRequest, &APIError{Code: CodeInvalid, Field: "metadata.name", Document: i + 1,
				Message: fmt.Sprintf("document %d: deployment %q is also document %d", i+1, docs[i].Metadata.Name, j)}
		}
		seen[docs[i].Metadata.Name] = i + 1
	}
	var results []ApplyResult
	for _, d := range docs {
		res, err := h.applyOne(ctx, d)
		if err != nil {
			status, e := storeErrorOf(err)
			return results, status, &e
		}
		results = append(results, res)
	}
	return results, http.StatusOK, nil
}

// applyOne stores one validated deployment. The generation grows only when
// the canonical spec changes. Concurrent writers are settled by CAS.
//
// Each attempt gets a third of store_timeout, and an attempt whose outcome
// is unknown (a stream leader that went away mid-write, as when a cluster
// member stops) is followed by another within the whole store_timeout:
// every attempt re-reads and decides again, so a write that did land is
// recognised instead of repeated.
func (h *handler) applyOne(ctx context.Context, d v1.Deployment) (ApplyResult, error) {
	kv := h.kvs[h.cfg.Buckets.Deployments]
	c, err := d.Canonical()
	if err != nil {
		return ApplyResult{}, err
	}
	hash, _ := c.SpecHash()
	budget := h.cfg.StoreTimeout.Std()
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var unknown *ApplyResult // the attempt whose outcome is not known
	conflicts := 0
	for {
		res, err := h.applyAttempt(ctx, kv, c, hash, budget/3)
		switch {
		case err == nil:
			if unknown != nil && res.Result == "unchanged" && res.Generation == unknown.Generation {
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
func outcome(err error, unknown *ApplyResult) error {
	if unknown != nil && !errors.Is(err, store.ErrOutcomeUnknown) {
		return fmt.Errorf("%w: an earlier attempt may have been stored (then: %v)", store.ErrOutcomeUnknown, err)
	}
	return err
}

// applyAttempt reads the deployment, decides and writes once.
func (h *handler) applyAttempt(ctx context.Context, kv store.KV, c v1.Deployment, hash string, timeout time.Duration) (ApplyResult, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cur, err := kv.Get(ctx, c.Metadata.Name)
	res := ApplyResult{Name: c.Metadata.Name}
	var rev uint64
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.Metadata.Generation, res.Result = 1, "created"
	case err != nil:
		return res, err
	default:
		rev = cur.Revision
		old, derr := v1.DecodeStoredDeployment(cur.Value)
		oldHash := ""
		if derr == nil {
			oldHash, _ = old.Deployment.SpecHash()
		}
		c.Metadata.Generation, res.Result = old.Deployment.Metadata.Generation+1, "configured"
		if derr == nil && oldHash == hash {
			c.Metadata.Generation, res.Result = old.Deployment.Metadata.Generation, "configured"
			if a, _ := v1.Marshal(old.Deployment.Metadata); string(a) == mustMarshal(c.Metadata) {
				res.Result, res.Generation = "unchanged", c.Metadata.Generation
				return res, nil
			}
		}
	}
	b, err := v1.Marshal(v1.StoredDeployment{V: v1.FormatVersion, Deployment: c})
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

func mustMarshal(v any) string {
	b, _ := v1.Marshal(v)
	return string(b)
}

func (h *handler) deleteDeployment(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if err := h.deleteOne(r.Context(), name); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			apiError(w, http.StatusNotFound, APIError{Code: CodeNotFound, Message: fmt.Sprintf("deployment %q not found", name), Field: "name"})
			return
		}
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"name": name, "result": "deleted"})
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
		apiError(w, http.StatusBadRequest, APIError{Code: CodeInvalid, Field: "selector", Message: err.Error()})
		return
	}
	out := []operator.DeviceStatus{}
	for _, d := range operator.Devices(h.op.Snapshot()) {
		if sel.Matches(d.Labels) {
			out = append(out, d)
		}
	}
	writeJSON(w, http.StatusOK, h.viewBody(out))
}

// DeviceView is one device with its per-deployment status.
type DeviceView struct {
	operator.DeviceStatus
	States []v1.DeviceState `json:"states"`
}

func (h *handler) getDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, ok := h.op.Device(id) // this device only, not the fleet
	if !ok {
		apiError(w, http.StatusNotFound, APIError{Code: CodeNotFound, Field: "id", Message: fmt.Sprintf("device %q not found", id)})
		return
	}
	view := DeviceView{DeviceStatus: d.Status, States: d.States}
	if view.States == nil {
		view.States = []v1.DeviceState{}
	}
	writeJSON(w, http.StatusOK, view)
}

// LabelPatch sets and removes control-plane labels of a device.
type LabelPatch struct {
	Set    map[string]string `json:"set"`
	Remove []string          `json:"remove"`
}

func (h *handler) patchLabels(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := v1.ValidateDeviceID(id); err != nil {
		apiError(w, http.StatusBadRequest, APIError{Code: CodeInvalid, Field: "id", Message: err.Error()})
		return
	}
	var p LabelPatch
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		apiError(w, http.StatusBadRequest, APIError{Code: CodeInvalid, Message: "body: " + err.Error()})
		return
	}
	for k, v := range p.Set {
		if err := v1.ValidateLabelKey(k); err != nil {
			apiError(w, http.StatusBadRequest, APIError{Code: CodeInvalid, Field: "set." + k, Message: err.Error()})
			return
		}
		if err := v1.ValidateLabelValue(v); err != nil {
			apiError(w, http.StatusBadRequest, APIError{Code: CodeInvalid, Field: "set." + k, Message: err.Error()})
			return
		}
	}
	for _, k := range p.Remove {
		if err := v1.ValidateLabelKey(k); err != nil {
			apiError(w, http.StatusBadRequest, APIError{Code: CodeInvalid, Field: "remove", Message: err.Error()})
			return
		}
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
		writeJSON(w, http.StatusOK, dl)
		return
	}
}

// command sends a request to a device and answers with its reply.
func (h *handler) command(w http.ResponseWriter, r *http.Request, req v1.CommandRequest, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	reply, status, e := h.sendCommand(ctx, r.PathValue("id"), req)
	if e != nil {
		apiError(w, status, *e)
		return
	}
	writeJSON(w, status, reply)
}

// sendCommand sends a request to a device and waits for its reply (until
// ctx ends). An offline device is refused at once instead of waiting.
func (h *handler) sendCommand(ctx context.Context, id string, req v1.CommandRequest) (v1.CommandReply, int, *APIError) {
	online, known := h.op.Online(id)
	if !known {
		return v1.CommandReply{}, http.StatusNotFound, &APIError{Code: CodeNotFound, Field: "id", Message: fmt.Sprintf("device %q not found", id)}
	}
	if !online {
		return v1.CommandReply{}, http.StatusServiceUnavailable, &APIError{Code: CodeDeviceOffline, Message: fmt.Sprintf("device %q is offline (no heartbeat for more than %s)", id, h.op.Staleness())}
	}
	if err := req.Validate(); err != nil {
		e := APIError{Code: CodeInvalid, Message: err.Error()}
		if fe, ok := v1.First(err); ok {
			e.Field = fe.Field
		}
		return v1.CommandReply{}, http.StatusBadRequest, &e
	}
	b, _ := json.Marshal(req)
	m, err := h.nc.RequestWithContext(ctx, v1.CommandSubject(id), b)
	if err != nil {
		code := http.StatusGatewayTimeout
		if errors.Is(err, nats.ErrNoResponders) {
			code = http.StatusServiceUnavailable
		}
		return v1.CommandReply{}, code, &APIError{Code: CodeDeviceOffline, Message: fmt.Sprintf("device %q did not answer: %v", id, err)}
	}
	var reply v1.CommandReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return v1.CommandReply{}, http.StatusBadGateway, &APIError{Code: CodeDeviceError, Message: "unreadable reply: " + err.Error()}
	}
	status := http.StatusOK
	if !reply.OK {
		status = http.StatusBadGateway
		if reply.Code == v1.CodeNotFound {
			status = http.StatusNotFound
		}
	}
	return reply, status, nil
}

func (h *handler) deviceLogs(w http.ResponseWriter, r *http.Request) {
	lines, _ := strconv.Atoi(r.URL.Query().Get("lines"))
	h.command(w, r, v1.CommandRequest{Op: v1.OpLogs, Resource: r.URL.Query().Get("resource"),
		Deployment: r.URL.Query().Get("deployment"), Lines: lines}, 10*time.Second)
}

func (h *handler) deviceExec(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Command []string `json:"command"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, v1.MaxCommandBytes)).Decode(&body); err != nil {
		apiError(w, http.StatusBadRequest, APIError{Code: CodeInvalid, Message: "body: " + err.Error()})
		return
	}
	h.command(w, r, v1.CommandRequest{Op: v1.OpExec, Command: body.Command}, (v1.ExecTimeoutLimit+5)*time.Second)
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
