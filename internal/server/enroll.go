package server

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/identity"
	"github.com/harmony-fleet/harmony/internal/web"
)

// Enrollment token lifetimes: at least a minute, at most a month.
const (
	minTokenTTL     = time.Minute
	maxTokenTTL     = 30 * 24 * time.Hour
	defaultTokenTTL = time.Hour
	maxEnrollBody   = 4 << 10
)

type tokenNameKey struct{}

func (h *handler) createToken(w http.ResponseWriter, r *http.Request) {
	var req httpapi.TokenRequest
	if !decodeBody(w, r, &req, false) {
		return
	}
	ttl := defaultTokenTTL
	if req.Expires != "" {
		d, err := time.ParseDuration(req.Expires)
		if err != nil || d < minTokenTTL || d > maxTokenTTL {
			apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "%q: must be a duration from %s to %s", req.Expires, minTokenTTL, maxTokenTTL).WithField("expires"))
			return
		}
		ttl = d
	}
	if req.Device != "" {
		if err := v1.ValidateDeviceID(req.Device); err != nil {
			apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "%v", err).WithField("device"))
			return
		}
	}
	if req.Cluster != "" {
		if err := v1.ValidateDeploymentName(req.Cluster); err != nil {
			apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "%v", err).WithField("cluster"))
			return
		}
	}
	by, _ := r.Context().Value(tokenNameKey{}).(string)
	secret, t, err := h.reg.CreateToken(r.Context(), ttl, req.Device, req.Cluster, by)
	if err != nil {
		storeError(w, err)
		return
	}
	h.log.Info("enrollment token created", "by", by, "expires", t.Expires, "device", t.Device, "cluster", t.Cluster)
	writeJSON(w, http.StatusCreated, httpapi.EnrollmentToken{Token: secret, Expires: t.Expires, Device: t.Device, Cluster: t.Cluster})
}

// enroll takes a device's public key: with a valid token it becomes the
// device's identity at once, without one it waits for approval (refused
// for an enrolled device). The token is checked first, so a valid one is
// never refused for its address; wrong ones count toward the address's
// limit of failed sign-ins and, beyond it, are answered 429.
func (h *handler) enroll(w http.ResponseWriter, r *http.Request) {
	var body httpapi.EnrollRequest
	if !decodeBody(w, r, &body, false) {
		return
	}
	req := identity.Request(body)
	if err := req.Validate(); err != nil {
		enrollError(w, err)
		return
	}
	if req.Token != "" {
		rec, _, err := h.reg.Enroll(r.Context(), req, remoteHost(r))
		if errors.Is(err, identity.ErrBadToken) && h.dash.Failed(r) {
			apiError(w, httpapi.Errorf(httpapi.CodeRateLimited, "%v", web.ErrRateLimited))
			return
		}
		if err != nil {
			enrollError(w, err)
			return
		}
		h.log.Info("device enrolled with a token", "device", rec.Device, "cluster", rec.Cluster, "from", remoteHost(r))
		h.ensureClusterBucket(r.Context(), rec.Cluster)
		writeJSON(w, http.StatusOK, httpapi.EnrollStatus{Device: rec.Device, Status: httpapi.EnrollEnrolled})
		return
	}
	// A request without a token costs the registry a read of every
	// identity: it is charged to the address like a wrong token (five in a
	// burst, then one every two seconds), so an anonymous client cannot
	// make the server do that work at will.
	if h.dash.Failed(r) {
		apiError(w, httpapi.Errorf(httpapi.CodeRateLimited, "%v", web.ErrRateLimited))
		return
	}
	_, p, err := h.reg.Enroll(r.Context(), req, remoteHost(r))
	if err != nil {
		enrollError(w, err)
		return
	}
	h.log.Info("enrollment request waiting for approval", "device", p.Device, "cluster", p.Cluster, "from", p.From,
		"fingerprint", identity.Fingerprint(p.PublicKey), "expires", p.Expiry())
	writeJSON(w, http.StatusAccepted, httpapi.EnrollStatus{Device: p.Device, Status: httpapi.EnrollPending,
		Fingerprint: identity.Fingerprint(p.PublicKey), Expires: p.Expiry()})
}

func (h *handler) enrollStatus(w http.ResponseWriter, r *http.Request) {
	id, key := r.PathValue("id"), r.URL.Query().Get("publicKey")
	req := identity.Request{Device: id, PublicKey: key}
	if err := req.Validate(); err != nil {
		enrollError(w, err)
		return
	}
	status, err := h.reg.Status(r.Context(), id, key)
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, httpapi.EnrollStatus{Device: id, Status: status})
}

func (h *handler) listIdentities(w http.ResponseWriter, r *http.Request) {
	recs, pend, err := h.reg.List(r.Context())
	if err != nil {
		storeError(w, err)
		return
	}
	ans := httpapi.Identities{Identities: make([]httpapi.Identity, 0, len(recs)), Pending: make([]httpapi.PendingRequest, 0, len(pend))}
	for _, rec := range recs {
		ans.Identities = append(ans.Identities, identityOf(rec))
	}
	for _, p := range pend {
		ans.Pending = append(ans.Pending, httpapi.PendingRequest{Device: p.Device, PublicKey: p.PublicKey, Cluster: p.Cluster,
			Requested: p.Requested, From: p.From, Fingerprint: identity.Fingerprint(p.PublicKey), Expires: p.Expiry()})
	}
	writeJSON(w, http.StatusOK, ans)
}

// approve grants a waiting request. It replaces an enrolled device's key
// only with "replace": true, and with "fingerprint" only the key the admin
// compared.
func (h *handler) approve(w http.ResponseWriter, r *http.Request) {
	var req httpapi.ApproveRequest
	if !decodeBody(w, r, &req, true) {
		return
	}
	a, err := h.reg.Approve(r.Context(), r.PathValue("id"), identity.ApproveOptions(req))
	if err != nil {
		enrollError(w, err)
		return
	}
	ans := httpapi.Approval{Identity: identityOf(a.Record), From: a.Request.From, Requested: a.Request.Requested}
	if a.Replaced != "" {
		ans.Replaced = identity.Fingerprint(a.Replaced)
	}
	by, _ := r.Context().Value(tokenNameKey{}).(string)
	h.log.Info("enrollment approved", "device", a.Record.Device, "cluster", a.Record.Cluster, "by", by,
		"from", ans.From, "fingerprint", ans.Fingerprint, "replaced", ans.Replaced)
	h.ensureClusterBucket(r.Context(), a.Record.Cluster)
	writeJSON(w, http.StatusOK, ans)
}

func (h *handler) revoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := h.reg.Revoke(r.Context(), id); err != nil {
		enrollError(w, err)
		return
	}
	by, _ := r.Context().Value(tokenNameKey{}).(string)
	h.log.Info("device identity revoked", "device", id, "by", by)
	w.WriteHeader(http.StatusNoContent)
}

// ensureClusterBucket creates the failover bucket of a cluster an identity
// was granted: its members may use it but not create or change it
// (mesh.BucketPermissions). A failure is logged; the member waits for the
// bucket, and the server tries again at its next start.
func (h *handler) ensureClusterBucket(ctx context.Context, cluster string) {
	if cluster == "" {
		return
	}
	if _, err := failover.EnsureBucket(ctx, h.st, cluster, h.cfg.Replicas); err != nil {
		h.log.Warn("cannot create the failover bucket of an enrolled member's cluster", "cluster", cluster, "err", err)
	}
}

// identityOf is an enrolled device as the API shows it.
func identityOf(rec identity.Record) httpapi.Identity {
	return httpapi.Identity{Device: rec.Device, PublicKey: rec.PublicKey, Cluster: rec.Cluster, Enrolled: rec.Enrolled,
		Via: rec.Via, Fingerprint: identity.Fingerprint(rec.PublicKey)}
}

func enrollError(w http.ResponseWriter, err error) {
	var fe *identity.FieldError
	var ce *identity.ConflictError
	switch {
	case errors.As(err, &fe):
		apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "%v", fe).WithField(fe.Field))
	case errors.Is(err, identity.ErrBadToken):
		apiError(w, httpapi.Errorf(httpapi.CodeUnauthorized, "%v", err).WithField("token"))
	case errors.Is(err, identity.ErrNoRequest), errors.Is(err, identity.ErrNotEnrolled):
		apiError(w, httpapi.Errorf(httpapi.CodeNotFound, "%v", err))
	case errors.As(err, &ce) && errors.Is(err, identity.ErrEnrolled):
		// An enrollment request without a token made for the device
		// (field token), or an approval without replace (field replace).
		apiError(w, httpapi.Errorf(httpapi.CodeDeviceEnrolled, "%v", err).WithField(ce.Field))
	case errors.As(err, &ce):
		apiError(w, httpapi.Errorf(httpapi.CodeConflict, "%v", err).WithField(ce.Field))
	case errors.Is(err, identity.ErrTooMany):
		apiError(w, httpapi.Errorf(httpapi.CodeRateLimited, "%v", err))
	case errors.Is(err, context.Canceled):
		apiError(w, httpapi.Errorf(httpapi.CodeStoreUnavailable, "%v", err))
	default:
		storeError(w, err)
	}
}

// decodeBody reads a small JSON body, refusing unknown fields; with
// optional, an empty body leaves v as it is.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	return decodeBodyUpTo(w, r, v, optional, maxEnrollBody)
}

// decodeBodyUpTo is decodeBody with a limit of its own.
func decodeBodyUpTo(w http.ResponseWriter, r *http.Request, v any, optional bool, limit int64) bool {
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		if optional && errors.Is(err, io.EOF) {
			return true
		}
		apiError(w, bodyError(err))
		return false
	}
	if d.More() {
		apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "body: data after the JSON value"))
		return false
	}
	return true
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
