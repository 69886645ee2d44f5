package identity

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
	// ErrEnrolled: the device has an identity that the call may not
	// replace (a request without a token made for the device, an approval
	// without ApproveOptions.Replace). Wrapped in a *ConflictError.
	ErrEnrolled = errors.New("device is enrolled")
)

// ConflictError: the request cannot be granted as asked (a nested id, a
// different key already waiting, an enrolled device). Field, when set,
// names what the caller would change: "token", "replace", "fingerprint".
type ConflictError struct {
	Reason string
	Field  string
	Err    error // a sentinel such as ErrEnrolled, or nil
}

func (e *ConflictError) Error() string { return e.Reason }
func (e *ConflictError) Unwrap() error { return e.Err }

// enrolledError refuses to replace device's identity without a token made
// for it.
func enrolledError(device string) error {
	return &ConflictError{Field: "token", Err: ErrEnrolled,
		Reason: fmt.Sprintf("device %q is enrolled: re-enrolling it needs a token made for it (harmony token create --device %s)", device, device)}
}

// Registry reads and writes the identities bucket.
type Registry struct {
	KV store.KV
	// Keys, when set, is the index of held public keys a Follow of the
	// same bucket keeps: enrollment then checks a key without reading
	// every identity (nil: it reads them all).
	Keys *Keys
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
// request waits for approval (Pending returned, Record zero); for a device
// that is enrolled it is refused (ErrEnrolled): anyone may ask, so a
// waiting request must never be a way to take a device over.
func (r *Registry) Enroll(ctx context.Context, req Request, from string) (Record, *Pending, error) {
	if err := req.Validate(); err != nil {
		return Record{}, nil, err
	}
	if req.Token == "" {
		if _, err := r.KV.Get(ctx, DeviceKey(req.Device)); err == nil {
			return Record{}, nil, enrolledError(req.Device)
		} else if !errors.Is(err, store.ErrNotFound) {
			return Record{}, nil, err
		}
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
			return Record{}, nil, enrolledError(req.Device)
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
// nobody replaces a request an admin may be about to approve, until that
// request expires.
func (r *Registry) queue(ctx context.Context, req Request, from string) (*Pending, error) {
	now := r.now()
	if e, err := r.KV.Get(ctx, PendingKey(req.Device)); err == nil {
		old, derr := decode[Pending](e.Value)
		switch {
		case derr == nil && old.expired(now):
			// Forgotten by countWaiting below: this request takes its place.
		case derr == nil && old.PublicKey == req.PublicKey && old.Cluster == req.Cluster:
			return &old, nil
		case derr == nil:
			return nil, &ConflictError{Reason: fmt.Sprintf("device %q already has an enrollment request with another key waiting; an admin must approve or refuse it first, or it expires at %s",
				req.Device, old.Expiry().Format(time.RFC3339))}
		default:
			return nil, &ConflictError{Reason: fmt.Sprintf("device %q already has an enrollment request waiting (unreadable here: %v)", req.Device, derr)}
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	n, err := r.countWaiting(ctx, now)
	if err != nil {
		return nil, err
	}
	if n >= MaxPending {
		return nil, ErrTooMany
	}
	p := Pending{V: FormatVersion, Device: req.Device, PublicKey: req.PublicKey, Cluster: req.Cluster, Requested: now, From: from}
	b, _ := json.Marshal(p)
	if _, err := r.KV.Create(ctx, PendingKey(req.Device), b); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, &ConflictError{Reason: fmt.Sprintf("device %q already has an enrollment request waiting", req.Device)}
		}
		return nil, err
	}
	return &p, nil
}

// countWaiting counts the requests that wait and forgets the expired ones
// (compare-and-delete: a request that replaced one meanwhile stays).
// Unreadable requests count: they may be a later server's.
func (r *Registry) countWaiting(ctx context.Context, now time.Time) (int, error) {
	entries, err := r.KV.List(ctx, prefixPending+">")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if p, err := decode[Pending](e.Value); err == nil && p.expired(now) {
			_ = r.KV.Delete(ctx, e.Key, e.Revision)
			continue
		}
		n++
	}
	return n, nil
}

// ApproveOptions are what an admin adds to an approval; they are also the
// body of POST /api/v1/devices/{id}/approve (an empty body
// is all fields unset).
type ApproveOptions struct {
	// Replace lets the approval replace the key of an enrolled device.
	// Without it such a request is refused (ErrEnrolled): anonymous
	// requests for enrolled ids are refused, so one can only be left from
	// before that rule or by a race, and replacing a device's key hands
	// the device to whoever holds the new one.
	Replace bool `json:"replace,omitempty"`
	// Fingerprint, when set, is the key fingerprint the admin read off the
	// device: a request with another key is refused.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// Approval is what an approval granted, for the admin to check.
type Approval struct {
	Record  Record
	Request Pending // the request that was approved (its address, its time)
	// Replaced is the public key the approval replaced, when the device
	// was enrolled ("" when it was not, or its record was unreadable).
	Replaced string
}

// Approve turns a device's pending request into its identity. An expired
// request is ErrNoRequest.
func (r *Registry) Approve(ctx context.Context, device string, opts ApproveOptions) (Approval, error) {
	e, err := r.KV.Get(ctx, PendingKey(device))
	if errors.Is(err, store.ErrNotFound) {
		return Approval{}, ErrNoRequest
	}
	if err != nil {
		return Approval{}, err
	}
	p, err := decode[Pending](e.Value)
	if err != nil {
		return Approval{}, fmt.Errorf("pending request of %q unreadable: %w", device, err)
	}
	if p.expired(r.now()) {
		return Approval{}, fmt.Errorf("%w: the request of %q expired at %s (requests wait %s); the device must ask again",
			ErrNoRequest, device, p.Expiry().Format(time.RFC3339), PendingTTL)
	}
	fp := Fingerprint(p.PublicKey)
	if opts.Fingerprint != "" && !strings.EqualFold(strings.TrimSpace(opts.Fingerprint), fp) {
		return Approval{}, &ConflictError{Field: "fingerprint", Reason: fmt.Sprintf(
			"the request of %q from %s has key fingerprint %s, not %s (fingerprint): it is not the key the device printed; do not approve it (it expires at %s)",
			device, p.From, fp, opts.Fingerprint, p.Expiry().Format(time.RFC3339))}
	}
	a := Approval{Request: p}
	cur, err := r.KV.Get(ctx, DeviceKey(device))
	enrolled := err == nil
	switch {
	case enrolled:
		old, derr := decode[Record](cur.Value)
		oldFP := "unreadable"
		if derr == nil {
			a.Replaced, oldFP = old.PublicKey, Fingerprint(old.PublicKey)
		}
		if !opts.Replace {
			return Approval{}, &ConflictError{Field: "replace", Err: ErrEnrolled, Reason: fmt.Sprintf(
				"device %q is enrolled already (key fingerprint %s); approving the request from %s (key fingerprint %s) replaces that key: if that is what you want, approve with --replace",
				device, oldFP, p.From, fp)}
		}
	case !errors.Is(err, store.ErrNotFound):
		return Approval{}, err
	}
	if err := r.checkClaims(ctx, device, p.PublicKey, false); err != nil {
		return Approval{}, err
	}
	a.Record = Record{V: FormatVersion, Device: device, PublicKey: p.PublicKey, Cluster: p.Cluster, Enrolled: r.now(), Via: "approval"}
	b, _ := json.Marshal(a.Record)
	// Compare-and-set against the record looked at: a key enrolled or
	// changed meanwhile (by a token) is never replaced unseen.
	if enrolled {
		_, err = r.KV.Update(ctx, cur.Key, b, cur.Revision)
	} else {
		_, err = r.KV.Create(ctx, DeviceKey(device), b)
	}
	if errors.Is(err, store.ErrConflict) {
		return Approval{}, &ConflictError{Field: "replace", Err: ErrEnrolled, Reason: fmt.Sprintf(
			"device %q was enrolled or re-enrolled while approving; list the identities again before approving", device)}
	}
	if err != nil {
		return Approval{}, err
	}
	if err := r.KV.Delete(ctx, e.Key, e.Revision); err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrConflict) {
		return a, err
	}
	return a, nil
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
// "enrolled", "pending" (its request with that key waits) or "unknown"
// (also when the request expired).
func (r *Registry) Status(ctx context.Context, device, publicKey string) (string, error) {
	if e, err := r.KV.Get(ctx, DeviceKey(device)); err == nil {
		if rec, derr := decode[Record](e.Value); derr == nil && rec.PublicKey == publicKey {
			return "enrolled", nil
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	if e, err := r.KV.Get(ctx, PendingKey(device)); err == nil {
		if p, derr := decode[Pending](e.Value); derr == nil && p.PublicKey == publicKey && !p.expired(r.now()) {
			return "pending", nil
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	return "unknown", nil
}

// List returns the enrolled devices and the requests waiting (not the
// expired ones).
func (r *Registry) List(ctx context.Context) ([]Record, []Pending, error) {
	entries, err := r.KV.List(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	now := r.now()
	var recs []Record
	var pend []Pending
	for _, e := range entries {
		switch {
		case isDeviceKey(e.Key):
			if rec, err := decode[Record](e.Value); err == nil {
				recs = append(recs, rec)
			}
		case isPendingKey(e.Key):
			if p, err := decode[Pending](e.Value); err == nil && !p.expired(now) {
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
// waiting one, with pending; expired requests wait no more), and a public
// key that another device or an admin already holds: one key must name
// one identity.
//
// With Keys (a follower's index, once loaded) it costs a lookup and a
// read per dot in the id plus two filtered lists, whatever the number of
// identities; without, it reads every identity. Two enrollments racing
// past the index (its watch lags by a moment) can both write: Users then
// gives the key to neither, so a race costs those devices their access,
// never another device its keys.
func (r *Registry) checkClaims(ctx context.Context, device, publicKey string, pending bool) error {
	if r.Keys != nil {
		if holder, loaded := r.Keys.holder(publicKey); loaded {
			switch {
			case holder == "":
			case holder == adminHolder:
				return &ConflictError{Reason: "this public key is an admin identity: make a new key"}
			case holder != device:
				return &ConflictError{Reason: fmt.Sprintf("this public key is already the identity of device %q: make a new key", holder)}
			}
			return r.checkNesting(ctx, device, pending)
		}
	}
	return r.checkClaimsByScan(ctx, device, publicKey, pending)
}

// checkNesting refuses a device id that is a dot-prefix of an enrolled (or,
// with pending, a waiting) one, or has one as its prefix: a read per
// ancestor and a filtered list of descendants.
func (r *Registry) checkNesting(ctx context.Context, device string, pending bool) error {
	now := r.now()
	nested := func(other, state string) error {
		return &ConflictError{Reason: fmt.Sprintf("device id %q and the %s id %q nest (one is a dot-prefix of the other); NATS permissions cannot keep them apart, so pick another id", device, state, other)}
	}
	waiting := func(e store.Entry) bool {
		p, err := decode[Pending](e.Value)
		return err != nil || !p.expired(now) // unreadable requests count, as in countWaiting
	}
	for i := range len(device) {
		if device[i] != '.' {
			continue
		}
		up := device[:i]
		if _, err := r.KV.Get(ctx, DeviceKey(up)); err == nil {
			return nested(up, "enrolled")
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if !pending {
			continue
		}
		if e, err := r.KV.Get(ctx, PendingKey(up)); err == nil && waiting(e) {
			return nested(up, "waiting")
		} else if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	below, err := r.KV.List(ctx, DeviceKey(device)+".>")
	if err != nil {
		return err
	}
	for _, e := range below {
		return nested(deviceOf(e.Key), "enrolled")
	}
	if pending {
		below, err := r.KV.List(ctx, PendingKey(device)+".>")
		if err != nil {
			return err
		}
		for _, e := range below {
			if waiting(e) {
				return nested(pendingOf(e.Key), "waiting")
			}
		}
	}
	return nil
}

// checkClaimsByScan is checkClaims reading every identity.
func (r *Registry) checkClaimsByScan(ctx context.Context, device, publicKey string, pending bool) error {
	entries, err := r.KV.List(ctx, "")
	if err != nil {
		return err
	}
	now := r.now()
	for _, e := range entries {
		var other, state string
		switch {
		case isDeviceKey(e.Key):
			other, state = deviceOf(e.Key), "enrolled"
			if rec, err := decode[Record](e.Value); err == nil && rec.PublicKey == publicKey && other != device {
				return &ConflictError{Reason: fmt.Sprintf("this public key is already the identity of device %q: make a new key", other)}
			}
		case isAdminKey(e.Key):
			if a, err := decode[Admin](e.Value); err == nil && a.PublicKey == publicKey {
				return &ConflictError{Reason: "this public key is an admin identity: make a new key"}
			}
			continue
		case pending && isPendingKey(e.Key):
			if p, err := decode[Pending](e.Value); err == nil && p.expired(now) {
				continue
			}
			other, state = pendingOf(e.Key), "waiting"
		default:
			continue
		}
		if Nested(device, other) {
			return &ConflictError{Reason: fmt.Sprintf("device id %q and the %s id %q nest (one is a dot-prefix of the other); NATS permissions cannot keep them apart, so pick another id", device, state, other)}
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
