// Package operator is the fleet control loop. This first part rebuilds the
// control plane's view of the fleet from the store alone: it watches every
// fleet bucket, keeps the latest entry of every key, and holds the liveness
// latch that goes Recovering -> Converged once every watch has replayed its
// initial values (an empty bucket counts as replayed).
package operator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"golang.org/x/sync/errgroup"

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

// Operator owns one watcher per bucket; cancelling Run's context stops them all.
type Operator struct {
	kvs []store.KV
	log *slog.Logger

	mu       sync.RWMutex
	views    map[string]map[string]store.Entry // bucket -> key -> latest entry
	replayed map[string]bool
}

// New returns an operator over the given buckets.
func New(kvs []store.KV, log *slog.Logger) *Operator {
	o := &Operator{kvs: kvs, log: log, views: map[string]map[string]store.Entry{}, replayed: map[string]bool{}}
	for _, kv := range kvs {
		o.views[kv.Bucket()] = map[string]store.Entry{}
	}
	return o
}

// Run watches every bucket until ctx ends. A watch that fails is started
// again from the revision after the last one seen, with capped exponential
// backoff; it never gives up.
func (o *Operator) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, kv := range o.kvs {
		g.Go(func() error { return o.follow(ctx, kv) })
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
		delete(o.views[bucket], e.Key)
		return
	}
	o.views[bucket][e.Key] = e
}

func (o *Operator) markReplayed(bucket string) {
	o.mu.Lock()
	first := !o.replayed[bucket]
	o.replayed[bucket] = true
	done := len(o.replayed) == len(o.kvs)
	o.mu.Unlock()
	if first {
		o.log.Debug("bucket replayed", "bucket", bucket)
		if done {
			o.log.Info("operator converged: view rebuilt from the store")
		}
	}
}

// Phase returns the latch.
func (o *Operator) Phase() Phase {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if len(o.replayed) == len(o.kvs) {
		return Converged
	}
	return Recovering
}

// Progress says how many buckets have replayed, for readiness messages.
func (o *Operator) Progress() string {
	o.mu.RLock()
	defer o.mu.RUnlock()
	var pending []string
	for _, kv := range o.kvs {
		if !o.replayed[kv.Bucket()] {
			pending = append(pending, kv.Bucket())
		}
	}
	sort.Strings(pending)
	return fmt.Sprintf("%d of %d buckets replayed; waiting for %v", len(o.kvs)-len(pending), len(o.kvs), pending)
}

// Counts returns the number of live keys per bucket.
func (o *Operator) Counts() map[string]int {
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := map[string]int{}
	for b, v := range o.views {
		out[b] = len(v)
	}
	return out
}
