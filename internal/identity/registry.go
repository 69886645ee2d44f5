package identity

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/harmony-fleet/harmony/internal/store"
)

// Errors of the registry, for the API to map to status codes.
var (
	// ErrBadToken: the token is unknown, used, expired or does not allow
	// what was asked. One error for all, so that a guesser learns nothing.
	ErrBadToken = errors.New("enrollment token unknown, already used or expired")
	// ErrNoRequest: approve found no pending request for the device.
	ErrNoRequest = errors.New("no pending enrollment request")
	// ErrTooMany: the pending queue is full.
	ErrTooMany = fmt.Errorf("more than %d enrollment requests are waiting for approval", MaxPending)
	// ErrNotEnrolled: revoke found no identity.
	ErrNotEnrolled = errors.New("device has no identity")
)

// ConflictError: the request cannot be granted as asked (a nested id, a
// different key already waiting).
type ConflictError struct{ Reason string }

func (e *ConflictError) Error() string { return e.Reason }

// Registry reads and writes the identities bucket.
type Registry struct {
	KV store.KV
	// Now is the clock (time.Now when nil), for tests of expiry.
	Now func() time.Time
}

func (r *Registry) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC().Truncate(time.Second)
	}
	return now()
}

// CreateToken stores a one-time enrollment token valid for ttl and returns
// it; the bucket keeps only its hash.
func (r *Registry) CreateToken(ctx context.Context, ttl time.Duration, device, cluster, by string) (string, Token, error) {
	secret, key := NewToken()
	t := Token{V: FormatVersion, Expires: r.now().Add(ttl), Device: device, Cluster: cluster, Created: r.now(), By: by}
	b, _ := json.Marshal(t)
	if _, err := r.KV.Create(ctx, key, b); err != nil {
		return "", Token{}, err
	}
	return secret, t, nil
}

// Enroll grants or queues a request. With a valid token the identity is
// written at once (replacing the device's previous key: a rotation) and
// the token is spent; the result is the Record. Without a token the
// request waits for approval (Pending returned, Record zero).
func (r *Registry) Enroll(ctx context.Context, req Request, from string) (Record, *Pending, error) {
	if err := req.Validate(); err != nil {
		return Record{}, nil, err
	}
	if req.Token == "" {
		// A request waiting for approval may not nest with another
		// waiting one either.
		if err := r.checkClaims(ctx, req.Device, req.PublicKey, true); err != nil {
			return Record{}, nil, err
		}
		p, err := r.queue(ctx, req, from)
		return Record{}, p, err
	}
	// The token first: nothing about other identities is said to a caller
	// without a valid one.
	e, err := r.KV.Get(ctx, TokenKey(req.Token))
	if errors.Is(err, store.ErrNotFound) {
		return Record{}, nil, ErrBadToken
	}
	if err != nil {
		return Record{}, nil, err
	}
	t, err := decode[Token](e.Value)
	if err != nil || !r.now().Before(t.Expires) ||
		(t.Device != "" && subtle.ConstantTimeCompare([]byte(t.Device), []byte(req.Device)) != 1) ||
		(req.Cluster != "" && t.Cluster != req.Cluster) {
		return Record{}, nil, ErrBadToken
	}
	// A token made for any device enrolls new devices only: replacing an
	// enrolled device's key (taking it over) needs a token made for it.
	if t.Device == "" {
		if _, err := r.KV.Get(ctx, DeviceKey(req.Device)); err == nil {
			return Record{}, nil, &ConflictError{fmt.Sprintf("device %q is enrolled already: rotating its identity needs a token made for it (harmony token create --device %s) or an approval", req.Device, req.Device)}
		} else if !errors.Is(err, store.ErrNotFound) {
			return Record{}, nil, err
		}
	}
	// Checked against enrolled devices only, so that an anonymous waiting
	// request cannot block a token.
	if err := r.checkClaims(ctx, req.Device, req.PublicKey, false); err != nil {
		return Record{}, nil, err
	}
	// Spend the token first (compare-and-delete): of two requests racing
	// with one token, only one gets past here.
	if err := r.KV.Delete(ctx, e.Key, e.Revision); err != nil {
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			return Record{}, nil, ErrBadToken
		}
		return Record{}, nil, err
	}
	rec := Record{V: FormatVersion, Device: req.Device, PublicKey: req.PublicKey, Cluster: req.Cluster, Enrolled: r.now(), Via: "token"}
	if err := r.put(ctx, DeviceKey(req.Device), rec); err != nil {
		return Record{}, nil, err
	}
	r.dropPending(ctx, req.Device)
	return rec, nil, nil
}

// queue stores a request for approval. Asking again with the same key is
// harmless; another key for a device already waiting is refused, so that
// nobody replaces a request an admin may be about to approve.
func (r *Registry) queue(ctx context.Context, req Request, from string) (*Pending, error) {
	p := Pending{V: FormatVersion, Device: req.Device, PublicKey: req.PublicKey, Cluster: req.Cluster, Requested: r.now(), From: from}
	if e, err := r.KV.Get(ctx, PendingKey(req.Device)); err == nil {
		old, derr := decode[Pending](e.Value)
		if derr == nil && old.PublicKey == req.PublicKey && old.Cluster == req.Cluster {
			return &old, nil
		}
		return nil, &ConflictError{fmt.Sprintf("device %q already has an enrollment request with another key waiting; an admin must approve or refuse it first", req.Device)}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	waiting, err := r.KV.List(ctx, prefixPending+">")
	if err != nil {
		return nil, err
	}
	if len(waiting) >= MaxPending {
		return nil, ErrTooMany
	}
	b, _ := json.Marshal(p)
	if _, err := r.KV.Create(ctx, PendingKey(req.Device), b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, &ConflictError{fmt.Sprintf("device %q already has an enrollment request waiting", req.Device)}
		}
		return nil, err
	}
	return &p, nil
}

// Approve turns a device's pending request into its identity.
func (r *Registry) Approve(ctx context.Context, device string) (Record, error) {
	e, err := r.KV.Get(ctx, PendingKey(device))
	if errors.Is(err, store.ErrNotFound) {
		return Record{}, ErrNoRequest
	}
	if err != nil {
		return Record{}, err
	}
	p, err := decode[Pending](e.Value)
	if err != nil {
		return Record{}, fmt.Errorf("pending request of %q unreadable: %w", device, err)
	}
	if err := r.checkClaims(ctx, device, p.PublicKey, false); err != nil {
		return Record{}, err
	}
	rec := Record{V: FormatVersion, Device: device, PublicKey: p.PublicKey, Cluster: p.Cluster, Enrolled: r.now(), Via: "approval"}
	if err := r.put(ctx, DeviceKey(device), rec); err != nil {
		return Record{}, err
	}
	if err := r.KV.Delete(ctx, e.Key, e.Revision); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
		return rec, err
	}
	return rec, nil
}

// Revoke deletes a device's identity and any request of it (refusing
// the request): its connections are closed when the servers load their
// users. ErrNotEnrolled when there was neither.
func (r *Registry) Revoke(ctx context.Context, device string) error {
	dropped := r.dropPending(ctx, device)
	for {
		e, err := r.KV.Get(ctx, DeviceKey(device))
		if errors.Is(err, store.ErrNotFound) {
			if dropped {
				return nil
			}
			return ErrNotEnrolled
		}
		if err != nil {
			return err
		}
		err = r.KV.Delete(ctx, e.Key, e.Revision)
		if errors.Is(err, store.ErrConflict) {
			continue // re-enrolled meanwhile: revoke that too
		}
		return err
	}
}

// Status says whether a device holds the identity of publicKey:
// "enrolled", "pending" (its request with that key waits) or "unknown".
func (r *Registry) Status(ctx context.Context, device, publicKey string) (string, error) {
	if e, err := r.KV.Get(ctx, DeviceKey(device)); err == nil {
		if rec, derr := decode[Record](e.Value); derr == nil && rec.PublicKey == publicKey {
			return "enrolled", nil
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	if e, err := r.KV.Get(ctx, PendingKey(device)); err == nil {
		if p, derr := decode[Pending](e.Value); derr == nil && p.PublicKey == publicKey {
			return "pending", nil
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	return "unknown", nil
}

// List returns the enrolled devices and the waiting requests.
func (r *Registry) List(ctx context.Context) ([]Record, []Pending, error) {
	entries, err := r.KV.List(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	var recs []Record
	var pend []Pending
	for _, e := range entries {
		switch {
		case isDeviceKey(e.Key):
			if rec, err := decode[Record](e.Value); err == nil {
				recs = append(recs, rec)
			}
		case isPendingKey(e.Key):
			if p, err := decode[Pending](e.Value); err == nil {
				pend = append(pend, p)
			}
		}
	}
	return recs, pend, nil
}

// SetAdmin records a server's operator identity (idempotent).
func (r *Registry) SetAdmin(ctx context.Context, a Admin) error {
	if !validAdmin(a) {
		return &FieldError{"publicKey", "not an nkey user public key (U...)"}
	}
	a.V = FormatVersion
	if e, err := r.KV.Get(ctx, AdminKey(a.Name)); err == nil {
		if old, derr := decode[Admin](e.Value); derr == nil && old == a {
			return nil
		}
	}
	return r.put(ctx, AdminKey(a.Name), a)
}

// checkClaims refuses a device id nested with an enrolled one (or a
// waiting one, with pending), and a public key that another device or an
// admin already holds: one key must name one identity.
func (r *Registry) checkClaims(ctx context.Context, device, publicKey string, pending bool) error {
	entries, err := r.KV.List(ctx, "")
	if err != nil {
		return err
	}
	for _, e := range entries {
		var other, state string
		switch {
		case isDeviceKey(e.Key):
			other, state = deviceOf(e.Key), "enrolled"
			if rec, err := decode[Record](e.Value); err == nil && rec.PublicKey == publicKey && other != device {
				return &ConflictError{fmt.Sprintf("this public key is already the identity of device %q: make a new key", other)}
			}
		case isAdminKey(e.Key):
			if a, err := decode[Admin](e.Value); err == nil && a.PublicKey == publicKey {
				return &ConflictError{"this public key is an admin identity: make a new key"}
			}
			continue
		case pending && isPendingKey(e.Key):
			other, state = pendingOf(e.Key), "waiting"
		default:
			continue
		}
		if Nested(device, other) {
			return &ConflictError{fmt.Sprintf("device id %q and the %s id %q nest (one is a dot-prefix of the other); NATS permissions cannot keep them apart, so pick another id", device, state, other)}
		}
	}
	return nil
}

// dropPending deletes a device's waiting request; true when it did.
func (r *Registry) dropPending(ctx context.Context, device string) bool {
	if e, err := r.KV.Get(ctx, PendingKey(device)); err == nil {
		return r.KV.Delete(ctx, e.Key, e.Revision) == nil
	}
	return false
}

// put writes key whatever its current revision.
func (r *Registry) put(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	for {
		e, err := r.KV.Get(ctx, key)
		switch {
		case errors.Is(err, store.ErrNotFound):
			_, err = r.KV.Create(ctx, key, b)
		case err == nil:
			_, err = r.KV.Update(ctx, key, b, e.Revision)
		}
		if errors.Is(err, store.ErrConflict) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		return err
	}
}
