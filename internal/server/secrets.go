package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/harmony-fleet/harmony/api/httpapi"
	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Secrets (docs/adr/0025-secrets.md): values go in through the API and out
// only to the devices whose desired state names them (through the relay);
// every answer here shows names, keys and versions.

// maxSecretBody bounds a secret write's body: the secret's limit with room
// for JSON escapes.
const maxSecretBody = 4 * v1.MaxSecretBytes

func (h *handler) secretsKV() store.KV { return h.kvs[h.cfg.Buckets.Secrets] }

func (h *handler) listSecrets(w http.ResponseWriter, r *http.Request) {
	es, err := h.secretsKV().List(r.Context(), "")
	if err != nil {
		storeError(w, err)
		return
	}
	uses, err := h.secretUses(r.Context())
	if err != nil {
		storeError(w, err)
		return
	}
	out := httpapi.SecretList{Items: []httpapi.SecretInfo{}}
	for _, e := range es {
		s, err := v1.DecodeSecret(e.Value)
		if err != nil {
			h.log.Warn("ignoring an undecodable secret", "name", e.Key, "err", err)
			continue
		}
		out.Items = append(out.Items, secretInfo(s, uses, ""))
	}
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].Name < out.Items[j].Name })
	writeJSON(w, http.StatusOK, out)
}

func (h *handler) createSecret(w http.ResponseWriter, r *http.Request) {
	var in httpapi.SecretWrite
	if !decodeBodyUpTo(w, r, &in, false, maxSecretBody) {
		return
	}
	s, e := newSecret(in.Name, in.Data)
	if e != nil {
		apiError(w, e)
		return
	}
	b, err := v1.Marshal(s)
	if err != nil {
		apiError(w, httpapi.Errorf(httpapi.CodeInternal, "%v", err))
		return
	}
	if _, err := h.secretsKV().Create(r.Context(), s.Name, b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			apiError(w, httpapi.Errorf(httpapi.CodeConflict, "secret %q exists: replace it (harmony secret create %s --replace ...) or delete it first", s.Name, s.Name).WithField("name"))
			return
		}
		storeError(w, err)
		return
	}
	h.log.Info("secret created", "secret", s.Name, "keys", strings.Join(s.Keys(), ","), "version", s.Version)
	writeJSON(w, http.StatusCreated, secretInfo(s, nil, httpapi.ResultCreated))
}

func (h *handler) replaceSecret(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var in httpapi.SecretWrite
	if !decodeBodyUpTo(w, r, &in, false, maxSecretBody) {
		return
	}
	if in.Name != "" && in.Name != name {
		apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "name: %q is not the secret in the path (%q)", in.Name, name).WithField("name"))
		return
	}
	s, e := newSecret(name, in.Data)
	if e != nil {
		apiError(w, e)
		return
	}
	kv := h.secretsKV()
	cur, err := kv.Get(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		apiError(w, httpapi.Errorf(httpapi.CodeNotFound, "secret %q not found: create it first", name).WithField("name"))
		return
	} else if err != nil {
		storeError(w, err)
		return
	}
	uses, err := h.secretUses(r.Context())
	if err != nil {
		storeError(w, err)
		return
	}
	// A key a deployment uses may not go, nor become several lines where
	// one is needed: its devices would fail.
	for _, u := range uses[name] {
		v, ok := s.Data[u.use.Ref.Key]
		if !ok {
			apiError(w, httpapi.Errorf(httpapi.CodeConflict, "data: key %q is used by deployment %q (%s); keep it, or change the deployment first",
				u.use.Ref.Key, u.deployment, u.use.Field).WithField("data"))
			return
		}
		if p := v1.OneLineProblem(v); u.use.OneLine && p != "" {
			apiError(w, httpapi.Errorf(httpapi.CodeInvalid, "data.%s: the new value %s (deployment %q, %s)",
				u.use.Ref.Key, p, u.deployment, u.use.Field).WithField("data."+u.use.Ref.Key))
			return
		}
	}
	b, err := v1.Marshal(s)
	if err != nil {
		apiError(w, httpapi.Errorf(httpapi.CodeInternal, "%v", err))
		return
	}
	if _, err := kv.Update(r.Context(), name, b, cur.Revision); err != nil {
		storeError(w, err)
		return
	}
	h.log.Info("secret replaced", "secret", name, "keys", strings.Join(s.Keys(), ","), "version", s.Version)
	writeJSON(w, http.StatusOK, secretInfo(s, uses, httpapi.ResultReplaced))
}

func (h *handler) deleteSecret(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	kv := h.secretsKV()
	cur, err := kv.Get(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		apiError(w, httpapi.Errorf(httpapi.CodeNotFound, "secret %q not found", name).WithField("name"))
		return
	} else if err != nil {
		storeError(w, err)
		return
	}
	uses, err := h.secretUses(r.Context())
	if err != nil {
		storeError(w, err)
		return
	}
	if deps := usedBy(uses[name]); len(deps) > 0 {
		apiError(w, httpapi.Errorf(httpapi.CodeConflict, "secret %q is used by deployment(s) %s: change or delete them first", name, strings.Join(deps, ", ")).WithField("name"))
		return
	}
	if err := kv.Delete(r.Context(), name, cur.Revision); err != nil {
		storeError(w, err)
		return
	}
	s, _ := v1.DecodeSecret(cur.Value)
	h.log.Info("secret deleted", "secret", name)
	writeJSON(w, http.StatusOK, secretInfo(s, nil, httpapi.ResultDeleted))
}

// newSecret builds and checks a secret record; the error names the field.
func newSecret(name string, data map[string]string) (v1.Secret, *httpapi.Error) {
	s, err := v1.NewSecret(name, data, time.Now())
	if err != nil {
		e := httpapi.Errorf(httpapi.CodeInvalid, "%v", err)
		if fe, ok := v1.First(err); ok {
			e.Field = fe.Field
		}
		return v1.Secret{}, e
	}
	return s, nil
}

// secretUse is one place a stored deployment takes a value from a secret.
type secretUse struct {
	deployment string
	use        v1.SecretUse
}

// secretUses reads the stored deployments' uses of secrets, by secret.
func (h *handler) secretUses(ctx context.Context) (map[string][]secretUse, error) {
	es, err := h.kvs[h.cfg.Buckets.Deployments].List(ctx, "")
	if err != nil {
		return nil, err
	}
	out := map[string][]secretUse{}
	for _, e := range es {
		sd, err := v1.DecodeStoredDeployment(e.Value)
		if err != nil {
			continue
		}
		for _, u := range sd.Deployment.SecretUses() {
			out[u.Ref.Secret] = append(out[u.Ref.Secret], secretUse{deployment: e.Key, use: u})
		}
	}
	return out, nil
}

func usedBy(uses []secretUse) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, u := range uses {
		if !seen[u.deployment] {
			seen[u.deployment] = true
			out = append(out, u.deployment)
		}
	}
	sort.Strings(out)
	return out
}

func secretInfo(s v1.Secret, uses map[string][]secretUse, result string) httpapi.SecretInfo {
	return httpapi.SecretInfo{Name: s.Name, Keys: s.Keys(), Version: s.Version, UpdatedAt: s.UpdatedAt,
		UsedBy: usedBy(uses[s.Name]), Result: result}
}

// checkSecretRefs refuses a deployment that takes a value from a secret or
// key that does not exist; the error names the field.
func (h *handler) checkSecretRefs(ctx context.Context, d v1.Deployment) (*v1.FieldError, error) {
	cache := map[string]*v1.Secret{}
	for _, u := range d.SecretUses() {
		s, seen := cache[u.Ref.Secret]
		if !seen {
			e, err := h.secretsKV().Get(ctx, u.Ref.Secret)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return nil, err
			default:
				dec, derr := v1.DecodeSecret(e.Value)
				if derr != nil {
					return nil, fmt.Errorf("secret %q: %w", u.Ref.Secret, derr)
				}
				s = &dec
			}
			cache[u.Ref.Secret] = s
		}
		if s == nil {
			return &v1.FieldError{Field: u.Field + ".secret",
				Reason: fmt.Sprintf("secret %q does not exist (harmony secret create %s --from-literal KEY=VALUE)", u.Ref.Secret, u.Ref.Secret)}, nil
		}
		v, ok := s.Data[u.Ref.Key]
		if !ok {
			return &v1.FieldError{Field: u.Field + ".key",
				Reason: fmt.Sprintf("secret %q has no key %q (its keys: %s)", u.Ref.Secret, u.Ref.Key, strings.Join(s.Keys(), ", "))}, nil
		}
		if p := v1.OneLineProblem(v); u.OneLine && p != "" {
			return &v1.FieldError{Field: u.Field + ".key", Reason: fmt.Sprintf("secret %q key %q %s", u.Ref.Secret, u.Ref.Key, p)}, nil
		}
	}
	return nil, nil
}
