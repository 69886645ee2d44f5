package mesh

import (
	"encoding/base64"
	"fmt"
	"reflect"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// nkeyAuth is the embedded server's authentication when identities are
// on: an nkey user proves its key by signing the server's nonce, and gets
// its permissions at connect time. The user list is replaced in place
// (SetUsers) instead of through nats-server's ReloadOptions, which races
// with JetStream requests and connects in flight (nats-server 2.15), and
// costs a pass over every user and connection at each change.
//
// A device identity (one with limited permissions) may hold at most
// perDevice connections at once: thousands of connections on one stolen
// identity would otherwise take the server's descriptors from everyone.
type nkeyAuth struct {
	mu    sync.RWMutex
	users map[string]*server.Permissions // public key -> permissions (nil: everything)

	perDevice int
	ns        *server.Server // set before the server starts
	connMu    sync.Mutex
	conns     map[string]map[uint64]struct{} // device key -> ids of connections let in
}

func newNkeyAuth(users []*server.NkeyUser, perDevice int) *nkeyAuth {
	a := &nkeyAuth{perDevice: perDevice, conns: map[string]map[uint64]struct{}{}}
	a.users, _ = a.diff(users)
	return a
}

// admit counts a device's connection, first forgetting those the server
// no longer has, and refuses one past the cap. A connection that fails
// after being let in is forgotten at the next check of its key.
func (a *nkeyAuth) admit(key string, cid uint64) bool {
	a.connMu.Lock()
	defer a.connMu.Unlock()
	set := a.conns[key]
	if set == nil {
		set = map[uint64]struct{}{}
		a.conns[key] = set
	}
	if len(set) >= a.perDevice && a.ns != nil {
		for id := range set {
			if a.ns.GetClient(id) == nil {
				delete(set, id)
			}
		}
	}
	if len(set) >= a.perDevice {
		return false
	}
	set[cid] = struct{}{}
	return true
}

// Check implements server.Authentication.
func (a *nkeyAuth) Check(c server.ClientAuthentication) bool {
	if c.Kind() != server.CLIENT {
		return false
	}
	o := c.GetOpts()
	a.mu.RLock()
	perms, ok := a.users[o.Nkey]
	a.mu.RUnlock()
	if !ok || o.Nkey == "" {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(o.Sig)
	if err != nil {
		if sig, err = base64.StdEncoding.DecodeString(o.Sig); err != nil {
			return false
		}
	}
	kp, err := nkeys.FromPublicKey(o.Nkey)
	if err != nil || kp.Verify(c.GetNonce(), sig) != nil {
		return false
	}
	if perms != nil && !a.admit(o.Nkey, c.GetID()) {
		return false
	}
	// The user name shows in the server's connection list (and lets a
	// revocation find the connections of a key).
	c.RegisterUser(&server.User{Username: o.Nkey, Permissions: perms})
	return true
}

// diff builds the user map and says which keys of the current map were
// removed or given other permissions.
func (a *nkeyAuth) diff(users []*server.NkeyUser) (map[string]*server.Permissions, []string) {
	next := make(map[string]*server.Permissions, len(users))
	for _, u := range users {
		next[u.Nkey] = u.Permissions // a later entry wins
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	var changed []string
	for k, p := range a.users {
		if np, ok := next[k]; !ok || (p != np && !reflect.DeepEqual(p, np)) {
			changed = append(changed, k)
		}
	}
	return next, changed
}

// SetUsers replaces the identities that may connect (ServerConfig.Nkeys).
// Connections of identities no longer listed, or listed with other
// permissions, are closed at once (a client with other permissions
// reconnects and gets them).
func (s *Server) SetUsers(users []*server.NkeyUser) (err error) {
	if s.auth == nil {
		return errNoAuth
	}
	next, changed := s.auth.diff(users)
	s.auth.mu.Lock()
	prev := s.auth.users
	s.auth.users = next
	s.auth.mu.Unlock()
	s.auth.connMu.Lock()
	for k := range s.auth.conns {
		if _, ok := next[k]; !ok {
			delete(s.auth.conns, k) // gone: its connections are cut below
		}
	}
	s.auth.connMu.Unlock()
	defer func() {
		if err != nil {
			s.auth.mu.Lock()
			s.auth.users = prev
			s.auth.mu.Unlock()
		}
	}()
	if len(changed) == 0 {
		return nil
	}
	cut := make(map[string]bool, len(changed))
	for _, k := range changed {
		cut[k] = true
	}
	// One pass over the connections (Connz sizes its answer by every
	// client, whatever the filter).
	conns, cerr := s.ns.Connz(&server.ConnzOptions{Username: true, State: server.ConnOpen, Limit: 1 << 30})
	if cerr != nil {
		// Nothing was cut: the old map goes back (deferred) so that the
		// next call finds the same changes again.
		return fmt.Errorf("mesh: list connections to close: %w", cerr)
	}
	for _, c := range conns.Conns {
		if cut[c.AuthorizedUser] {
			_ = s.ns.DisconnectClientByID(c.Cid) // gone meanwhile: nothing to do
		}
	}
	return nil
}
