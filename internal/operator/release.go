package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v5"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// ReleaseKey is the key of the release record in Options.Releases.
const ReleaseKey = "orphan-release"

// Errors of ReleaseOrphans.
var (
	// ErrNothingHeld: no removal is held, there is nothing to release.
	ErrNothingHeld = errors.New("no removals of orphaned desired state are held")
	// ErrHoldChanged: the hold is not the one the caller saw.
	ErrHoldChanged = errors.New("the held removals changed since they were read")
)

// ReleaseRecord is the value of ReleaseKey: an admin released the hold
// with this fingerprint. Every operator reads it; the one that holds the
// collection lease deletes. A record releases only a hold that began
// before it was written and still has its fingerprint.
type ReleaseRecord struct {
	V           int    `json:"v"`
	Fingerprint string `json:"fingerprint"`
	// Held, By and At are for people reading the bucket.
	Held int       `json:"held"`
	By   string    `json:"by,omitempty"`
	At   time.Time `json:"at"`
}

// maxReleaseBytes caps a release record (the leases bucket's values are small).
const maxReleaseBytes = 1 << 10

// DecodeReleaseRecord reads a release record, checking its format version.
func DecodeReleaseRecord(data []byte) (ReleaseRecord, error) {
	var r ReleaseRecord
	if len(data) > maxReleaseBytes {
		return r, fmt.Errorf("release record: %d bytes, more than %d", len(data), maxReleaseBytes)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("release record: %w", err)
	}
	if r.V != v1.FormatVersion {
		return r, fmt.Errorf("release record: format version %d, want %d", r.V, v1.FormatVersion)
	}
	if r.Fingerprint == "" {
		return r, errors.New("release record: no fingerprint")
	}
	return r, nil
}

// OrphanHold returns what the guard holds back (Held is 0 when nothing is).
func (o *Operator) OrphanHold() OrphanHold {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.guard.view()
}

// ReleaseOrphans releases the held removals: the collecting server deletes
// them at its next pass. fingerprint, when not empty, must name the hold
// as it is now (what the caller looked at); by names who released, for
// the record. With Options.Releases the release is a record every
// operator reads (the returned hold is this operator's at the time);
// without, it applies to this operator at once.
func (o *Operator) ReleaseOrphans(ctx context.Context, fingerprint, by string) (OrphanHold, error) {
	h := o.OrphanHold()
	switch {
	case h.Held == 0:
		return h, ErrNothingHeld
	case fingerprint == "":
		fingerprint = h.Fingerprint
	case fingerprint != h.Fingerprint:
		return h, fmt.Errorf("%w: asked for %s, held now: %d keys, %s", ErrHoldChanged, fingerprint, h.Held, h.Fingerprint)
	}
	if o.opts.Releases == nil {
		o.mu.Lock()
		keys := o.guard.release(fingerprint)
		o.approvedLocked(keys, by)
		o.mu.Unlock()
		if keys == nil {
			return h, ErrHoldChanged
		}
		o.poke()
		return h, nil
	}
	b, err := v1.Marshal(ReleaseRecord{V: v1.FormatVersion, Fingerprint: fingerprint, Held: h.Held, By: by, At: time.Now().UTC()})
	if err != nil {
		return h, err
	}
	kv := o.opts.Releases
	for attempt := 0; ; attempt++ {
		cur, err := kv.Get(ctx, ReleaseKey)
		switch {
		case errors.Is(err, store.ErrNotFound):
			_, err = kv.Create(ctx, ReleaseKey, b)
		case err == nil:
			_, err = kv.Update(ctx, ReleaseKey, b, cur.Revision)
		}
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue // another release meanwhile: ours is written after it
		}
		if err != nil {
			return h, fmt.Errorf("record the release: %w", err)
		}
		return h, nil
	}
}

// approvedLocked looks at released keys again at the next pass. o.mu is held.
func (o *Operator) approvedLocked(keys []string, by string) {
	if len(keys) == 0 {
		return
	}
	o.log.Warn("held removals of orphaned desired state released: the collecting server deletes them now",
		"keys", len(keys), "by", by)
	for _, k := range keys {
		o.dirty.keys[k] = true
	}
}

// followReleases watches the release record until ctx ends; a watch that
// fails is started again with capped exponential backoff.
func (o *Operator) followReleases(ctx context.Context) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 100 * time.Millisecond
	bo.MaxInterval = 5 * time.Second
	for {
		err := o.watchReleases(ctx, bo)
		if ctx.Err() != nil {
			return nil
		}
		wait := bo.NextBackOff()
		o.log.Warn("release watch ended; restarting", "bucket", o.opts.Releases.Bucket(), "err", err, "after", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (o *Operator) watchReleases(ctx context.Context, bo *backoff.ExponentialBackOff) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := o.opts.Releases.Watch(wctx, ReleaseKey, store.WatchOptions{})
	if err != nil {
		return err
	}
	for ev := range w.Events() {
		bo.Reset()
		if ev.Replayed {
			o.mu.Lock()
			o.releasesReplayed = true
			o.mu.Unlock()
			continue
		}
		if ev.Entry.Op == store.OpDelete {
			continue
		}
		rec, err := DecodeReleaseRecord(ev.Entry.Value)
		if err != nil {
			o.log.Warn("ignoring an undecodable release record", "err", err)
			continue
		}
		seen := releaseSeen{rev: ev.Entry.Revision, fingerprint: rec.Fingerprint}
		var keys []string
		o.mu.Lock()
		if o.releasesReplayed {
			keys = o.guard.see(seen)
			o.approvedLocked(keys, rec.By)
		} else {
			// There before this operator began to read: older than any
			// hold of its own (a restart's replays are judged as new).
			o.guard.seeOld(seen)
		}
		o.mu.Unlock()
		if keys != nil {
			o.poke()
		}
	}
	if err := w.Err(); err != nil {
		return err
	}
	return errors.New("watch closed")
}

// judge classifies the orphans ready for removal and lets the guard
// decide; it returns the removals to make now and logs a hold once, when
// it begins.
func (o *Operator) judge(now time.Time, deployments map[string]v1.Deployment, ready []removal) []removal {
	if len(ready) == 0 {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range ready {
		id, name, _ := v1.SplitDeviceKey(ready[i].key)
		_, known := o.devices[id]
		_, exists := deployments[name]
		ready[i].cause = orphanCause(known, exists)
	}
	before := len(o.guard.held)
	remove, began := o.guard.decide(now, len(o.raw[o.b.DesiredState.Bucket()]), ready)
	if added := len(o.guard.held) - before; began || added > 0 {
		h := o.guard.view()
		attrs := []any{"held", h.Held, "bound", h.Bound, "examples", h.Examples, "fingerprint", h.Fingerprint}
		for _, c := range AllCauses() {
			attrs = append(attrs, string(c), h.Causes[c])
		}
		if began {
			o.log.Warn("orphan guard: holding removals of orphaned desired state: too many devices or deployments "+
				"disappeared at once to take it for deletions; check the device-info and deployments buckets, then "+
				"release with `harmony orphans release` (POST /api/v1/orphans/release)", attrs...)
		} else {
			o.log.Info("orphan guard: more removals joined the hold", append(attrs, "added", added)...)
		}
	}
	if keys := o.guard.pending(); keys != nil {
		o.approvedLocked(keys, "")
		o.poke()
	}
	return remove
}
