package identity

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/harmony-fleet/harmony/internal/mesh"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Follow watches the identities bucket and hands apply the NATS users it
// describes, plus the fixed ones (the server's own connection), once the
// bucket has been read and again after every change, until ctx ends. A
// burst of changes is applied once. When the watch fails it is opened
// again: the users last applied stay meanwhile.
//
// keys, when not nil, is kept as the index of the public keys the bucket
// gives out (Registry.Keys), updated with every load.
func Follow(ctx context.Context, kv store.KV, fleet mesh.FleetBuckets, fixed []*server.NkeyUser,
	apply func([]*server.NkeyUser) error, log *slog.Logger, keys *Keys) {
	for ctx.Err() == nil {
		err := follow(ctx, kv, fleet, fixed, apply, log, keys)
		if ctx.Err() != nil {
			return
		}
		log.Warn("identities watch ended; opening it again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func follow(ctx context.Context, kv store.KV, fleet mesh.FleetBuckets, fixed []*server.NkeyUser,
	apply func([]*server.NkeyUser) error, log *slog.Logger, keys *Keys) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.Watch(wctx, "", store.WatchOptions{})
	if err != nil {
		return err
	}
	devices := map[string]Record{}
	admins := map[string]Admin{}
	perms := permCache{}
	replayed := false
	var applied time.Time
	handle := func(ev store.Event) {
		if ev.Replayed {
			replayed = true
		} else {
			take(ev.Entry, devices, admins, log)
		}
	}
	for {
		ev, ok := <-w.Events()
		if !ok {
			return w.Err()
		}
		handle(ev)
	drain: // take whatever else is already queued before applying
		for {
			select {
			case ev, ok := <-w.Events():
				if !ok {
					return w.Err()
				}
				handle(ev)
			default:
				break drain
			}
		}
		if !replayed {
			continue
		}
		// A burst of enrollments is applied once per coalesceWindow at
		// most: each load walks every identity.
		if wait := coalesceWindow - time.Since(applied); !applied.IsZero() && wait > 0 {
			t := time.NewTimer(wait)
		gather:
			for {
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
					break gather
				case ev, ok := <-w.Events():
					if !ok {
						t.Stop()
						return w.Err()
					}
					handle(ev)
				}
			}
		}
		reserved := make([]string, len(fixed))
		for i, u := range fixed {
			reserved[i] = u.Nkey
		}
		keys.set(devices, admins)
		if len(perms) > 2*len(devices)+64 { // forget what revoked devices left
			perms = permCache{}
		}
		users := append(users(sortedRecords(devices), sortedAdmins(admins), fleet, perms, reserved...), fixed...)
		if err := apply(users); err != nil {
			// Read the bucket again (after a pause) and load it all.
			return fmt.Errorf("load the NATS identities (the previous ones stay): %w", err)
		}
		applied = time.Now()
		log.Debug("NATS identities loaded", "devices", len(devices), "admins", len(admins))
	}
}

func take(e store.Entry, devices map[string]Record, admins map[string]Admin, log *slog.Logger) {
	switch {
	case isDeviceKey(e.Key):
		id := deviceOf(e.Key)
		if e.Op == store.OpDelete {
			delete(devices, id)
			return
		}
		rec, err := decode[Record](e.Value)
		if err != nil || rec.Device != id {
			log.Warn("unreadable identity record: the device is refused until it is enrolled again", "key", e.Key, "err", err)
			delete(devices, id)
			return
		}
		devices[id] = rec
	case isAdminKey(e.Key):
		name := e.Key[len(prefixAdmin):]
		if e.Op == store.OpDelete {
			delete(admins, name)
			return
		}
		a, err := decode[Admin](e.Value)
		if err != nil {
			log.Warn("unreadable admin identity: refused", "key", e.Key, "err", err)
			delete(admins, name)
			return
		}
		admins[name] = a
	}
}

func sortedRecords(m map[string]Record) []Record {
	out := make([]Record, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

func sortedAdmins(m map[string]Admin) []Admin {
	out := make([]Admin, 0, len(m))
	for _, a := range m {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// coalesceWindow is the least time between two loads of the identities
// into the server: enrolling a thousand devices loads them a few times,
// not a thousand (each load walks every identity). A revocation waits for
// it at most.
const coalesceWindow = 250 * time.Millisecond

// adminHolder is what Keys says of an admin's key.
const adminHolder = "\x00admin"

// Keys indexes the public keys the identities bucket gives out: device
// records and admins. Safe for concurrent use; a nil *Keys is never
// loaded.
type Keys struct {
	mu      sync.RWMutex
	loaded  bool
	holders map[string]string // public key -> device id, or adminHolder
	devices int               // device keys among holders
}

// set replaces the index with what the bucket holds now.
func (k *Keys) set(devices map[string]Record, admins map[string]Admin) {
	if k == nil {
		return
	}
	m := make(map[string]string, len(devices)+len(admins))
	for id, r := range devices {
		m[r.PublicKey] = id
	}
	for _, a := range admins {
		m[a.PublicKey] = adminHolder
	}
	k.mu.Lock()
	k.holders, k.loaded, k.devices = m, true, len(devices)
	k.mu.Unlock()
}

// Holder is the device that holds publicKey ("" for none), whether an
// admin holds it, and whether the index was loaded at all.
func (k *Keys) Holder(publicKey string) (device string, admin, loaded bool) {
	h, loaded := k.holder(publicKey)
	if h == adminHolder {
		return "", true, loaded
	}
	return h, false, loaded
}

// Devices is how many device identities the index holds.
func (k *Keys) Devices() int {
	if k == nil {
		return 0
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.devices
}

func (k *Keys) holder(publicKey string) (string, bool) {
	if k == nil {
		return "", false
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.holders[publicKey], k.loaded
}
