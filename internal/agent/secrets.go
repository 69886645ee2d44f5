package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/store"
)

// secretSource gives the engine the values of the secrets its desired
// state names (docs/adr/0025-secrets.md): from memory, else from the copy
// kept in the state directory, else from the secrets bucket (through the
// relay, which answers only for secrets this device's desired state
// names). A value is used only at the version desired state asks for, so
// a rotated secret is read again.
type secretSource struct {
	state  *localstate.Dir
	bucket string

	mu    sync.Mutex
	st    store.Store // nil until the mesh is up
	kv    store.KV    // opened on first need
	cache map[string]v1.Secret
}

func newSecretSource(state *localstate.Dir, bucket string) *secretSource {
	return &secretSource{state: state, bucket: bucket, cache: map[string]v1.Secret{}}
}

// setStore is called once the mesh is up.
func (s *secretSource) setStore(st store.Store) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st, s.kv = st, nil
}

// errSecretMissing: desired state names a secret that does not exist (the
// operator rendered it so because it was deleted out of band).
var errSecretMissing = errors.New("does not exist")

// get returns the secret at version.
func (s *secretSource) get(ctx context.Context, name, version string) (v1.Secret, error) {
	if version == "" {
		return v1.Secret{}, fmt.Errorf("secret %q %w", name, errSecretMissing)
	}
	s.mu.Lock()
	if c, ok := s.cache[name]; ok && c.Version == version {
		s.mu.Unlock()
		return c, nil
	}
	s.mu.Unlock()
	if b, err := s.state.LoadSecret(name); err == nil {
		if c, err := v1.DecodeSecret(b); err == nil && c.Name == name && c.Version == version {
			s.keep(c)
			return c, nil
		}
	}
	kv, err := s.open(ctx)
	if err != nil {
		return v1.Secret{}, fmt.Errorf("secret %q: not kept on this device and the store cannot be read: %w", name, err)
	}
	e, err := kv.Get(ctx, name)
	if err != nil {
		return v1.Secret{}, fmt.Errorf("secret %q: %w", name, err)
	}
	c, err := v1.DecodeSecret(e.Value)
	if err != nil || c.Name != name {
		return v1.Secret{}, fmt.Errorf("secret %q: unreadable: %v", name, err)
	}
	if c.Version != version {
		// Rotated again since the desired state was rendered: the
		// operator renders the new version, which brings us back here.
		return v1.Secret{}, fmt.Errorf("secret %q: at version %.12s, desired state wants %.12s (a rotation is on its way)", name, c.Version, version)
	}
	if err := s.state.SaveSecret(name, e.Value); err != nil {
		return v1.Secret{}, fmt.Errorf("secret %q: keep: %w", name, err)
	}
	s.keep(c)
	return c, nil
}

func (s *secretSource) keep(c v1.Secret) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache[c.Name] = c
}

func (s *secretSource) open(ctx context.Context) (store.KV, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv != nil {
		return s.kv, nil
	}
	if s.st == nil {
		return nil, errors.New("not connected")
	}
	kv, err := s.st.Open(ctx, s.bucket)
	if err != nil {
		return nil, err
	}
	s.kv = kv
	return kv, nil
}

// forgetExcept drops the secrets no desired state names any more, from
// memory and from disk.
func (s *secretSource) forgetExcept(keep map[string]bool) error {
	s.mu.Lock()
	for name := range s.cache {
		if !keep[name] {
			delete(s.cache, name)
		}
	}
	s.mu.Unlock()
	return s.state.DropSecretsExcept(keep)
}

// resolve returns d with the values its spec takes from secrets: a File's
// content, a Container's or ShellJob's SecretEnv. d itself (its Raw, kept
// in the ledger) holds references only.
func (s *secretSource) resolve(ctx context.Context, d Desired) (Desired, error) {
	uses := v1.SecretUses("", d.Spec)
	if len(uses) == 0 {
		return d, nil
	}
	values := make([]string, len(uses))
	for i, u := range uses {
		sec, err := s.get(ctx, u.Ref.Secret, d.Secrets[u.Ref.Secret])
		if err != nil {
			return d, err
		}
		v, ok := sec.Data[u.Ref.Key]
		if !ok {
			return d, fmt.Errorf("secret %q has no key %q", u.Ref.Secret, u.Ref.Key)
		}
		values[i] = v
	}
	d.SecretValues = make(map[string]string, len(uses))
	for i, u := range uses {
		d.SecretValues[u.Field] = values[i]
	}
	switch sp := d.Spec.(type) {
	case *v1.FileSpec:
		c := *sp
		c.Content = values[0]
		d.Spec = &c
	case *v1.ContainerSpec:
		d.SecretEnv = envValues(sp.SecretEnv, values)
	case *v1.ShellJobSpec:
		d.SecretEnv = envValues(sp.SecretEnv, values)
	}
	return d, nil
}

// envValues pairs variable names with the values SecretUses listed them
// in (sorted by name).
func envValues(refs map[string]v1.SecretKeyRef, values []string) map[string]string {
	out := make(map[string]string, len(refs))
	for i, k := range slices.Sorted(maps.Keys(refs)) {
		out[k] = values[i]
	}
	return out
}
