// Package operator is the fleet control loop. It rebuilds the control
// plane's view from the store alone (one watch per fleet bucket), holds the
// liveness latch Recovering -> Converged (every watch has replayed its
// initial values; an empty bucket counts), renders desired state for every
// (device, deployment) match, writing only bytes that differ, removes
// orphaned desired state (unless too much of it disappears at once: the
// orphan guard, guard.go), and aggregates status from snapshots.
package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
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
	// DevicePresence holds the relays' records of the beats they answered
	// (nil: devices beat only through their own heartbeat keys).
	DevicePresence store.KV
	// Secrets (nil: none) gives the versions of secrets, which desired
	// state carries so that a rotation rolls out; the operator keeps no
	// value.
	Secrets store.KV
	// Rollouts (nil: none) holds the progress of batched rollouts
	// (rollout.go); without it a deployment's RolloutFrom is ignored and
	// every change goes to every device at once.
	Rollouts store.KV
}

func (b Buckets) all() []store.KV {
	all := []store.KV{b.Deployments, b.DesiredState, b.DeviceInfo, b.DeviceState, b.DeviceHeartbeat, b.DeviceLabels}
	if b.DevicePresence != nil {
		all = append(all, b.DevicePresence)
	}
	if b.Secrets != nil {
		all = append(all, b.Secrets)
	}
	if b.Rollouts != nil {
		all = append(all, b.Rollouts)
	}
	return all
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
	// OrphanHoldMin and OrphanHoldFraction bound the removals of orphaned
	// desired state made without an admin's release (the orphan guard,
	// guard.go and docs/adr/0014-orphan-collection-guard.md): guarded
	// removals are held once they reach max(OrphanHoldMin,
	// ⌈OrphanHoldFraction × desired-state keys stored⌉). Defaults 10 and
	// 0.10 (a zero or negative value takes the default).
	OrphanHoldMin      int
	OrphanHoldFraction float64
	// OrphanWindow is how long a removal caused by a device that
	// disappeared keeps counting towards that bound (default 10m).
	OrphanWindow time.Duration
	// Releases is the bucket (the server's leases bucket) where an admin's
	// release of held removals is recorded, under ReleaseKey, so that the
	// collecting server sees a release whichever server received it. Nil:
	// ReleaseOrphans releases this operator's hold only.
	Releases store.KV
	// RolloutTick is how often the rollout controller looks at the
	// rollouts in progress (default 500ms).
	RolloutTick time.Duration
}

// orphanMark is when a desired-state key was first seen orphaned, and
// whether a full pass saw it so (then there was no earlier view to compare
// with: the orphan guard bounds its removal).
type orphanMark struct {
	since time.Time
	full  bool
}

type heartbeat struct {
	lastAdvance time.Time // operator's clock (monotonic reading)
}

// advance records that device id beat at (the operator's clock), unless a
// later beat is known already: a device's beats reach the operator through
// its own key and through the records of every relay it talked to.
func (o *Operator) advance(id string, at, now time.Time) {
	if hb, ok := o.beats[id]; ok && !at.After(hb.lastAdvance) {
		return
	}
	o.beats[id] = heartbeat{lastAdvance: at}
	o.roll.beat(id, at, now)
}

// sinceStored is how long ago the store says e was written (never less
// than zero, whatever the two clocks say).
func sinceStored(e store.Entry) time.Duration {
	return max(0, time.Since(e.Created))
}

// presence is the presence bucket's name ("" when the operator has none).
func (o *Operator) presence() string {
	if o.b.DevicePresence == nil {
		return "" // no bucket has that name
	}
	return o.b.DevicePresence.Bucket()
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
	// legacy: the last value of each device's own heartbeat key;
	// presenceKeys: the presence records seen (their next ones are live).
	legacy       map[string]v1.Heartbeat
	presenceKeys map[string]bool
	// secretVersions: the version of every secret, by name; secretUses:
	// the secrets each deployment uses.
	secretVersions map[string]string
	secretUses     map[string][]string
	// rollouts: by deployment, what rendering and the rollout controller
	// know of its rollout (rollout.go); each value is replaced, never
	// changed, so a pass may keep it.
	rollouts    map[string]*Rollout
	renders     int // render passes, for tests and metrics
	writes      int // desired-state writes done
	orphanSince map[string]orphanMark
	dirty       work // what changed since the last render pass
	guard       *guard
	// releasesReplayed: the release record (Options.Releases) was read
	// once; records read before are older than any hold of this operator.
	releasesReplayed bool

	roll *rollup

	// want is the desired-state bytes of every (device, deployment) match
	// as last rendered; only the render loop touches it.
	want map[string][]byte
}

// work is what a render pass must look at: everything (the first pass
// after the view converged), or the devices, deployments and
// desired-state keys that changed. A pass costs what changed, not the
// size of the fleet.
type work struct {
	full                       bool
	devices, deployments, keys map[string]bool
}

func newWork(full bool) work {
	return work{full: full, devices: map[string]bool{}, deployments: map[string]bool{}, keys: map[string]bool{}}
}

func (w work) empty() bool {
	return !w.full && len(w.devices) == 0 && len(w.deployments) == 0 && len(w.keys) == 0
}

// New returns an operator over the given buckets.
func New(b Buckets, log *slog.Logger, opts Options) *Operator {
	if opts.Staleness <= 0 {
		opts.Staleness = 30 * time.Second
	}
	if opts.OrphanGrace <= 0 {
		opts.OrphanGrace = 2 * time.Second
	}
	if opts.OrphanHoldMin <= 0 {
		opts.OrphanHoldMin = 10
	}
	if opts.OrphanHoldFraction <= 0 {
		opts.OrphanHoldFraction = 0.10
	}
	if opts.RolloutTick <= 0 {
		opts.RolloutTick = 500 * time.Millisecond
	}
	if opts.OrphanWindow <= 0 {
		opts.OrphanWindow = 10 * time.Minute
	}
	o := &Operator{b: b, log: log, opts: opts, wake: make(chan struct{}, 1),
		raw: map[string]map[string]store.Entry{}, replayed: map[string]bool{},
		deployments: map[string]v1.Deployment{}, devices: map[string]v1.DeviceInfo{},
		overrides: map[string]map[string]*string{}, states: map[string]v1.DeviceState{}, beats: map[string]heartbeat{},
		legacy: map[string]v1.Heartbeat{}, presenceKeys: map[string]bool{},
		secretVersions: map[string]string{}, secretUses: map[string][]string{}, rollouts: map[string]*Rollout{},
		orphanSince: map[string]orphanMark{}, dirty: newWork(true), want: map[string][]byte{}, roll: newRollup(opts.Staleness),
		guard: newGuard(GuardLimits{Min: opts.OrphanHoldMin, Fraction: opts.OrphanHoldFraction, Window: opts.OrphanWindow})}
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
		if o.opts.Releases != nil {
			g.Go(func() error { return o.followReleases(ctx) })
		}
		if o.b.Rollouts != nil {
			g.Go(func() error { return o.rolloutLoop(ctx) })
		}
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
		delete(o.secretUses, e.Key)
		var from *v1.Deployment
		if !del {
			sd, err := v1.DecodeStoredDeployment(e.Value)
			if err != nil {
				o.log.Warn("ignoring an undecodable deployment", "key", e.Key, "err", err)
			} else {
				o.deployments[e.Key] = sd.Deployment
				// Devices a rollout has not reached keep the previous
				// spec: they need the versions of its secrets too.
				names := sd.Deployment.SecretNames()
				if o.b.Rollouts != nil && sd.RolloutFrom != nil {
					from = sd.RolloutFrom
					names = union(names, from.SecretNames())
				}
				if len(names) > 0 {
					o.secretUses[e.Key] = names
				}
			}
		}
		o.changeRolloutLocked(e.Key, func(r *Rollout) { r.From = from })
	case o.rolloutsBucket():
		var st *v1.RolloutState
		rev := e.Revision
		if del {
			rev = 0
		} else if got, err := v1.DecodeRolloutState(e.Value); err != nil {
			// No state, at its revision: the controller writes a new one
			// over it.
			o.log.Warn("an undecodable rollout state; the rollout starts again", "key", e.Key, "err", err)
		} else {
			st = &got
		}
		o.changeRolloutLocked(e.Key, func(r *Rollout) {
			r.State, r.Rev, r.pos = st, rev, nil
			if st != nil {
				r.pos = st.Positions()
			}
		})
	case o.secretsBucket():
		// Only the version is kept: it is all that desired state needs.
		delete(o.secretVersions, e.Key)
		if !del {
			sec, err := v1.DecodeSecret(e.Value)
			if err != nil || sec.Name != e.Key {
				o.log.Warn("ignoring an undecodable secret", "key", e.Key, "err", err)
			} else {
				o.secretVersions[e.Key] = sec.Version
			}
		}
		for dep, names := range o.secretUses {
			for _, n := range names {
				if n == e.Key {
					o.dirty.deployments[dep] = true
				}
			}
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
		// A device's own heartbeat key: written by an agent that talks to
		// the store directly (no device identity), or by an older agent.
		if del {
			delete(o.legacy, e.Key)
			delete(o.beats, e.Key)
			o.roll.forget(e.Key)
			break
		}
		hb, err := v1.DecodeHeartbeat(e.Value)
		if err != nil {
			break
		}
		prev, seen := o.legacy[e.Key]
		now := time.Now()
		switch {
		case !seen:
			// First sight (usually the replay after a restart): judge its
			// age by the store's timestamp, written by the NATS server's
			// clock; from now on, only by this process's monotonic clock.
			o.legacy[e.Key] = hb
			o.advance(e.Key, now.Add(-sinceStored(e)), now)
		case prev != hb:
			o.legacy[e.Key] = hb
			o.advance(e.Key, now, now)
		}
	case o.presence():
		// What one relay heard: a record per relay and shard, each naming
		// the devices whose beats it answered and how long before the
		// record was written (docs/adr/0020-presence.md).
		if del {
			delete(o.presenceKeys, e.Key)
			break
		}
		p, err := v1.DecodePresence(e.Value)
		if err != nil {
			o.log.Warn("ignoring an undecodable presence record", "key", e.Key, "err", err)
			break
		}
		now := time.Now()
		base := now
		if !o.presenceKeys[e.Key] {
			// First sight of this relay's record: its age from the store's
			// timestamp, as for a heartbeat key.
			o.presenceKeys[e.Key] = true
			base = now.Add(-sinceStored(e))
		}
		for id, ms := range p.Beats {
			o.advance(id, base.Add(-time.Duration(ms)*time.Millisecond), now)
		}
	}
	switch bucket {
	case o.b.Deployments.Bucket():
		o.roll.deployment(o, e.Key)
	case o.b.DeviceInfo.Bucket(), o.b.DeviceLabels.Bucket():
		o.roll.device(o, e.Key)
	case o.b.DeviceState.Bucket():
		o.roll.state(o, e.Key)
	}
	// Only what rendering reads wakes it: heartbeats and observed state
	// (most of the traffic) do not.
	switch bucket {
	case o.b.Deployments.Bucket(), o.rolloutsBucket():
		o.dirty.deployments[e.Key] = true
	case o.b.DeviceInfo.Bucket(), o.b.DeviceLabels.Bucket():
		o.dirty.devices[e.Key] = true
	case o.b.DesiredState.Bucket():
		o.dirty.keys[e.Key] = true
	case o.secretsBucket():
	default:
		return
	}
	o.poke()
}

// rolloutsBucket is the rollouts bucket's name ("" when the operator has
// none).
func (o *Operator) rolloutsBucket() string {
	if o.b.Rollouts == nil {
		return ""
	}
	return o.b.Rollouts.Bucket()
}

// union is a and the names of b not in a.
func union(a, b []string) []string {
	out := append([]string(nil), a...)
	for _, n := range b {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// secretsBucket is the secrets bucket's name ("" when the operator has
// none).
func (o *Operator) secretsBucket() string {
	if o.b.Secrets == nil {
		return ""
	}
	return o.b.Secrets.Bucket()
}

// secretVersionsLocked returns, by deployment, the versions of the secrets
// it uses ("" for a secret that does not exist). o.mu is held.
func (o *Operator) secretVersionsLocked() map[string]map[string]string {
	out := make(map[string]map[string]string, len(o.secretUses))
	for dep, names := range o.secretUses {
		m := make(map[string]string, len(names))
		for _, n := range names {
			m[n] = o.secretVersions[n]
		}
		out[dep] = m
	}
	return out
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

// Snapshot copies the view for aggregation. It costs the size of the
// fleet: questions about one deployment or one device have narrow answers
// (read.go).
func (o *Operator) Snapshot() Snapshot { return o.snapshotAt(time.Now()) }

// snapshotAt copies the view, heartbeat ages as of now.
func (o *Operator) snapshotAt(now time.Time) Snapshot {
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
	for k, v := range o.beats {
		s.HeartbeatAge[k] = now.Sub(v.lastAdvance)
	}
	return s
}

// Deployments copies the deployments (only: Snapshot copies everything).
func (o *Operator) Deployments() map[string]v1.Deployment {
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := make(map[string]v1.Deployment, len(o.deployments))
	for k, v := range o.deployments {
		out[k] = v
	}
	return out
}

// HeartbeatAge is how long ago a device's heartbeat last advanced.
func (o *Operator) HeartbeatAge(id string) (time.Duration, bool) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	hb, ok := o.beats[id]
	return time.Since(hb.lastAdvance), ok
}

// StateMessage is the message of a device's status for one deployment.
func (o *Operator) StateMessage(key string) string {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.states[key].Message
}

// Rollup returns every deployment's counts and the devices' liveness,
// kept up to date as events arrive (see rollup): reading it costs the
// number of deployments and of offline devices, not the fleet's size.
func (o *Operator) Rollup() Rollup {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.roll.read(time.Now())
}

// Stats are counters for tests and metrics.
func (o *Operator) Stats() (renders, writes int) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.renders, o.writes
}
