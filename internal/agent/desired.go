package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent/localstate"
	"github.com/harmony-fleet/harmony/internal/store"
)

// candidate is the latest desired-state value of one deployment, decoded or
// not. The engine decides whether it becomes the one enforced.
type candidate struct {
	raw       []byte
	ds        v1.DesiredState
	err       error // the envelope did not decode or validate
	revision  uint64
	fromCache bool
}

// desiredSet follows this device's keys in the desired-state bucket.
type desiredSet struct {
	device string
	state  *localstate.Dir
	log    *slog.Logger
	retry  retryPolicy
	health *health

	mu    sync.Mutex
	items map[string]candidate // by deployment
}

func newDesiredSet(device string, st *localstate.Dir, log *slog.Logger, retry retryPolicy, h *health) *desiredSet {
	return &desiredSet{device: device, state: st, log: log, retry: retry, health: h, items: map[string]candidate{}}
}

// loadCache starts from the last good desired states kept on disk.
func (d *desiredSet) loadCache() error {
	cached, err := d.state.LoadDesired()
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for dep, raw := range cached {
		ds, err := v1.DecodeDesiredState(raw)
		if err != nil {
			d.log.Warn("cached desired state unreadable; ignoring it", "deployment", dep, "err", err)
			continue
		}
		d.items[dep] = candidate{raw: raw, ds: ds, fromCache: true}
	}
	if len(cached) > 0 {
		d.log.Info("enforcing cached desired state until the mesh answers", "deployments", len(cached))
	}
	return nil
}

func (d *desiredSet) snapshot() map[string]candidate {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]candidate, len(d.items))
	for k, v := range d.items {
		out[k] = v
	}
	return out
}

// follow watches <device>.* until ctx ends, restarting the watch whenever
// it fails. Every watch reads the device's keys whole (not from the last
// revision seen): the desired-state bucket may lose its latest writes when
// the server loses power (it is rebuilt by the operator, ADR 0012), and a
// revision the agent saw can then be reused for another write.
func (d *desiredSet) follow(ctx context.Context, kv store.KV, wake func()) error {
	bo := d.retry.backoff()
	for ctx.Err() == nil {
		err := d.watchOnce(ctx, kv, wake, bo)
		d.health.setWatch(false)
		if ctx.Err() != nil {
			return nil
		}
		d.retry.retried("desired-state watch")
		wait := bo.NextBackOff()
		d.log.Warn("desired-state watch ended; restarting", "err", err, "after", wait)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return nil
}

func (d *desiredSet) watchOnce(ctx context.Context, kv store.KV, wake func(), bo interface{ Reset() }) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.Watch(wctx, d.device+".*", store.WatchOptions{})
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	replayed := false
	for ev := range w.Events() {
		bo.Reset()
		if ev.Replayed {
			replayed = true
			d.dropUnseen(seen)
			d.health.setWatch(true)
			wake()
			continue
		}
		dep, ok := d.deploymentOf(ev.Entry.Key)
		if !ok {
			continue
		}
		if !replayed {
			seen[dep] = ev.Entry.Op != store.OpDelete
		}
		d.apply(dep, ev.Entry)
		wake()
	}
	if err := w.Err(); err != nil {
		return err
	}
	return errors.New("watch closed")
}

func (d *desiredSet) deploymentOf(key string) (string, bool) {
	dev, dep, err := v1.SplitDeviceKey(key)
	if err != nil || dev != d.device {
		d.log.Warn("ignoring a desired-state key that is not this device's", "key", key)
		return "", false
	}
	return dep, true
}

func (d *desiredSet) apply(dep string, e store.Entry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Op == store.OpDelete {
		delete(d.items, dep)
		return
	}
	if cur, ok := d.items[dep]; ok && bytes.Equal(cur.raw, e.Value) {
		cur.revision, cur.fromCache = e.Revision, false
		d.items[dep] = cur
		return
	}
	ds, err := v1.DecodeDesiredState(e.Value)
	if err == nil && (ds.Device != d.device || ds.Deployment != dep) {
		err = &v1.FieldError{Field: "device", Reason: "the value names " + ds.Device + "." + ds.Deployment + ", not its key"}
	}
	d.items[dep] = candidate{raw: e.Value, ds: ds, err: err, revision: e.Revision}
}

// dropUnseen forgets deployments the store no longer has, once a watch
// has read the device's keys whole: they were deleted while the agent was
// away or its watch was down.
func (d *desiredSet) dropUnseen(seen map[string]bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var gone []string
	for dep := range d.items {
		if !seen[dep] {
			delete(d.items, dep)
			gone = append(gone, dep)
		}
	}
	if len(gone) > 0 {
		d.log.Info("deployments removed while offline", "deployments", strings.Join(gone, ","))
	}
}
