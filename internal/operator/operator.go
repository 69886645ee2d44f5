// Package operator is the fleet control loop. It rebuilds the control
// plane's view from the store alone (one watch per fleet bucket), holds the
// liveness latch Recovering -> Converged (every watch has replayed its
// initial values; an empty bucket counts), renders desired state for every
// (device, deployment) match, writing only bytes that differ, removes
// orphaned desired state, and aggregates status from snapshots.
package operator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"golang.org/x/sync/errgroup"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/store"
)

// Phase is the liveness latch.
type Phase string

const (
	// Recovering: at least one bucket has not finished its initial replay.
	Recovering Phase = "Recovering"
	// Converged: every bucket has replayed; the view reflects the store.
	Converged Phase = "Converged"
)

// Buckets are the operator's buckets.
type Buckets struct {
	Deployments, DesiredState, DeviceInfo, DeviceState, DeviceHeartbeat, DeviceLabels store.KV
}

func (b Buckets) all() []store.KV {
	return []store.KV{b.Deployments, b.DesiredState, b.DeviceInfo, b.DeviceState, b.DeviceHeartbeat, b.DeviceLabels}
}

// Options tune the operator.
type Options struct {
	// Staleness: a device whose heartbeat has not advanced for this long is
	// offline.
	Staleness time.Duration
	// Render turns rendering (and orphan removal) on; a read-only operator
	// only aggregates.
	Render bool
	// Lease, when set, must be held for orphans to be removed: with several
	// servers each running the operator, one of them collects (nil: this
	// operator is the only one).
	Lease interface{ Held() bool }
	// OrphanGrace is how long a desired-state key must stay unrendered
	// before it is removed (default 2s).
	OrphanGrace time.Duration
}

type heartbeat struct {
	boot        string
	seq         uint64
	lastAdvance time.Time // operator's clock (monotonic reading)
}

// Operator owns one watcher per bucket; cancelling Run's context stops them all.
type Operator struct {
	b    Buckets
	log  *slog.Logger
	opts Options
	wake chan struct{}

	mu          sync.RWMutex
	raw         map[string]map[string]store.Entry // bucket -> key -> latest entry
	replayed    map[string]bool
	deployments map[string]v1.Deployment
	devices     map[string]v1.DeviceInfo
	overrides   map[string]map[string]*string
	states      map[string]v1.DeviceState
	beats       map[string]heartbeat
	renders     int // render passes, for tests and metrics
	writes      int // desired-state writes done
	orphanSince map[string]time.Time
}

// New returns an operator over the given buckets.
func New(b Buckets, log *slog.Logger, opts Options) *Operator {
	if opts.Staleness <= 0 {
		opts.Staleness = 30 * time.Second
	}
	if opts.OrphanGrace <= 0 {
		opts.OrphanGrace = 2 * time.Second
	}
	o := &Operator{b: b, log: log, opts: opts, wake: make(chan struct{}, 1),
		raw: map[string]map[string]store.Entry{}, replayed: map[string]bool{},
		deployments: map[string]v1.Deployment{}, devices: map[string]v1.DeviceInfo{},
		overrides: map[string]map[string]*string{}, states: map[string]v1.DeviceState{}, beats: map[string]heartbeat{},
		orphanSince: map[string]time.Time{}}
	for _, kv := range b.all() {
		o.raw[kv.Bucket()] = map[string]store.Entry{}
	}
	return o
}

// Run watches every bucket (and renders, when enabled) until ctx ends. A
// watch that fails is started again from the revision after the last one
// seen, with capped exponential backoff; it never gives up.
func (o *Operator) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, kv := range o.b.all() {
		g.Go(func() error { return o.follow(ctx, kv) })
	}
	if o.opts.Render {
		g.Go(func() error { return o.renderLoop(ctx) })
	}
	return g.Wait()
}

func (o *Operator) follow(ctx context.Context, kv store.KV) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 100 * time.Millisecond
	bo.MaxInterval = 5 * time.Second
	var last uint64
	for {
		opts := store.WatchOptions{}
		if last > 0 {
			opts.ResumeFrom = last + 1
		}
		err := o.watchOnce(ctx, kv, opts, &last, bo)
		if ctx.Err() != nil {
			return nil
		}
		wait := bo.NextBackOff()
		o.log.Warn("bucket watch ended; restarting", "bucket", kv.Bucket(), "err", err, "after", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func (o *Operator) watchOnce(ctx context.Context, kv store.KV, opts store.WatchOptions, last *uint64, bo *backoff.ExponentialBackOff) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.Watch(wctx, "", opts)
	if err != nil {
		return err
	}
	for ev := range w.Events() {
		bo.Reset()
		if ev.Replayed {
			o.markReplayed(kv.Bucket())
			continue
		}
		*last = ev.Entry.Revision
		o.apply(kv.Bucket(), ev.Entry)
	}
	if err := w.Err(); err != nil {
		return err
	}
	return errors.New("watch closed")
}

func (o *Operator) apply(bucket string, e store.Entry) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if e.Op == store.OpDelete {
		delete(o.raw[bucket], e.Key)
	} else {
		o.raw[bucket][e.Key] = e
	}
	del := e.Op == store.OpDelete
	switch bucket {
	case o.b.Deployments.Bucket():
		delete(o.deployments, e.Key)
		if !del {
			sd, err := v1.DecodeStoredDeployment(e.Value)
			if err != nil {
				o.log.Warn("ignoring an undecodable deployment", "key", e.Key, "err", err)
				break
			}
			o.deployments[e.Key] = sd.Deployment
		}
	case o.b.DeviceInfo.Bucket():
		delete(o.devices, e.Key)
		if !del {
			info, err := v1.DecodeDeviceInfo(e.Value)
			if err != nil || info.ID != e.Key {
				o.log.Warn("ignoring undecodable device info", "key", e.Key, "err", err)
				break
			}
			o.devices[e.Key] = info
		}
	case o.b.DeviceLabels.Bucket():
		delete(o.overrides, e.Key)
		if !del {
			dl, err := v1.DecodeDeviceLabels(e.Value)
			if err != nil {
				o.log.Warn("ignoring undecodable device labels", "key", e.Key, "err", err)
				break
			}
			o.overrides[e.Key] = dl.Overrides
		}
	case o.b.DeviceState.Bucket():
		delete(o.states, e.Key)
		if !del {
			st, err := v1.DecodeDeviceState(e.Value)
			if err != nil {
				break
			}
			o.states[e.Key] = st
		}
	case o.b.DeviceHeartbeat.Bucket():
		if del {
			delete(o.beats, e.Key)
			break
		}
		hb, err := v1.DecodeHeartbeat(e.Value)
		if err != nil {
			break
		}
		prev, seen := o.beats[e.Key]
		now := time.Now()
		switch {
		case !seen:
			// First sight (usually the replay after a restart): judge its
			// age by the store's timestamp, written by the NATS server's
			// clock; from now on, only by this process's monotonic clock.
			age := time.Since(e.Created)
			if age < 0 {
				age = 0
			}
			o.beats[e.Key] = heartbeat{boot: hb.Boot, seq: hb.Seq, lastAdvance: now.Add(-age)}
		case prev.boot != hb.Boot || prev.seq != hb.Seq:
			o.beats[e.Key] = heartbeat{boot: hb.Boot, seq: hb.Seq, lastAdvance: now}
		}
	}
	o.poke()
}

func (o *Operator) poke() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *Operator) markReplayed(bucket string) {
	o.mu.Lock()
	first := !o.replayed[bucket]
	o.replayed[bucket] = true
	done := len(o.replayed) == len(o.raw)
	o.mu.Unlock()
	if first {
		o.log.Debug("bucket replayed", "bucket", bucket)
		if done {
			o.log.Info("operator converged: view rebuilt from the store")
		}
	}
	o.poke()
}

// Phase returns the latch.
func (o *Operator) Phase() Phase {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if len(o.replayed) == len(o.raw) {
		return Converged
	}
	return Recovering
}

// Progress says how many buckets have replayed, for readiness messages.
func (o *Operator) Progress() string {
	o.mu.RLock()
	defer o.mu.RUnlock()
	var pending []string
	for b := range o.raw {
		if !o.replayed[b] {
			pending = append(pending, b)
		}
	}
	sort.Strings(pending)
	return fmt.Sprintf("%d of %d buckets replayed; waiting for %v", len(o.raw)-len(pending), len(o.raw), pending)
}

// Counts returns the number of live keys per bucket.
func (o *Operator) Counts() map[string]int {
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := map[string]int{}
	for b, v := range o.raw {
		out[b] = len(v)
	}
	return out
}

// Snapshot copies the view for aggregation.
func (o *Operator) Snapshot() Snapshot {
	o.mu.RLock()
	defer o.mu.RUnlock()
	s := Snapshot{Deployments: make(map[string]v1.Deployment, len(o.deployments)), Devices: make(map[string]Device, len(o.devices)),
		States: make(map[string]v1.DeviceState, len(o.states)), HeartbeatAge: make(map[string]time.Duration, len(o.beats)),
		Staleness: o.opts.Staleness}
	for k, v := range o.deployments {
		s.Deployments[k] = v
	}
	for k, v := range o.devices {
		s.Devices[k] = Device{Info: v, Overrides: o.overrides[k]}
	}
	for k, v := range o.states {
		s.States[k] = v
	}
	now := time.Now()
	for k, v := range o.beats {
		s.HeartbeatAge[k] = now.Sub(v.lastAdvance)
	}
	return s
}

// Stats are counters for tests and metrics.
func (o *Operator) Stats() (renders, writes int) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.renders, o.writes
}

// renderLoop renders after every change once the view has converged.
func (o *Operator) renderLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-o.wake:
		}
		if o.Phase() != Converged {
			continue
		}
		if err := o.render(ctx); err != nil && ctx.Err() == nil {
			o.log.Warn("render pass incomplete; will retry on the next change", "err", err)
			// Try again soon even without a change.
			time.AfterFunc(time.Second, o.poke)
		}
	}
}

// render writes every desired-state value whose bytes differ from the store
// and deletes every desired-state key no deployment renders any more
// (orphans: a deployment deleted, a device that no longer matches or is
// gone). Conflicts are left to the next pass: the watch brings the winner's
// bytes, which are the same bytes when another operator rendered them.
func (o *Operator) render(ctx context.Context) error {
	o.mu.Lock()
	o.renders++
	devices := make(map[string]Device, len(o.devices))
	for k, v := range o.devices {
		devices[k] = Device{Info: v, Overrides: o.overrides[k]}
	}
	deployments := make(map[string]v1.Deployment, len(o.deployments))
	for k, v := range o.deployments {
		deployments[k] = v
	}
	have := make(map[string]store.Entry, len(o.raw[o.b.DesiredState.Bucket()]))
	for k, v := range o.raw[o.b.DesiredState.Bucket()] {
		have[k] = v
	}
	o.mu.Unlock()

	want, err := Render(deployments, devices)
	if err != nil {
		return err
	}
	var firstErr error
	note := func(err error) {
		if err != nil && !errors.Is(err, store.ErrConflict) && firstErr == nil {
			firstErr = err
		}
	}
	writes := 0
	now := time.Now()
	for _, key := range sortedKeys(want) {
		b := want[key]
		cur, ok := have[key]
		switch {
		case ok && bytes.Equal(cur.Value, b):
			continue
		case ok && newerGeneration(cur.Value, deployments, key):
			// Another operator with a fresher view wrote a later generation;
			// ours is stale and must never roll a device back.
			continue
		case ok:
			_, err = o.b.DesiredState.Update(ctx, key, b, cur.Revision)
		default:
			_, err = o.b.DesiredState.Create(ctx, key, b)
		}
		if err == nil {
			writes++
		}
		note(err)
	}
	later := false // orphans wait: one more pass after the grace
	for _, key := range sortedKeys(have) {
		if _, ok := want[key]; ok {
			continue
		}
		if _, _, err := v1.SplitDeviceKey(key); err != nil {
			continue // not a key this operator writes: leave it alone
		}
		// An orphan is removed only once it has stayed an orphan for a
		// moment: another operator's view may be ahead of ours (a device
		// that just started matching), and a removal tells the agent to
		// delete what runs.
		o.mu.Lock()
		since, seen := o.orphanSince[key]
		if !seen {
			o.orphanSince[key] = now
		}
		o.mu.Unlock()
		if !seen || now.Sub(since) < o.opts.OrphanGrace {
			later = true
			continue
		}
		if o.opts.Lease != nil && !o.opts.Lease.Held() {
			// Another server collects; look again later, in case the
			// lease comes to this one.
			later = true
			continue
		}
		err := o.b.DesiredState.Delete(ctx, key, have[key].Revision)
		if err == nil {
			writes++
			o.log.Info("removed orphaned desired state", "key", key)
		}
		note(err)
	}
	if later {
		time.AfterFunc(o.opts.OrphanGrace, o.poke)
	}
	o.mu.Lock()
	o.writes += writes
	for key := range o.orphanSince {
		if _, still := have[key]; !still {
			delete(o.orphanSince, key)
		} else if _, wanted := want[key]; wanted {
			delete(o.orphanSince, key)
		}
	}
	o.mu.Unlock()
	return firstErr
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// newerGeneration reports whether the stored desired value of key carries a
// later generation than the deployment this operator knows.
func newerGeneration(stored []byte, deployments map[string]v1.Deployment, key string) bool {
	_, dep, err := v1.SplitDeviceKey(key)
	if err != nil {
		return false
	}
	ds, err := v1.DecodeDesiredState(stored)
	if err != nil {
		return false
	}
	return ds.Generation > deployments[dep].Metadata.Generation
}
