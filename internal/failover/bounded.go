package failover

import (
	"context"
	"sync"

	"github.com/harmony-fleet/harmony/internal/store"
)

// boundedKV holds every store call of the loop to its context's deadline,
// even when the store client does not: a NATS client reconnecting to a
// server that accepts TCP but does not answer (a frozen server) holds its
// connection's lock for its whole connect timeout, and calls queued behind
// it outlive their deadlines. A beat that overran its steps would stretch
// the time a primary serves unconfirmed, and delay the failsafe's promise
// requests until the promises lapsed. A call that outlives its context is
// abandoned: a read fails as unavailable, a write's outcome is unknown
// (the machine re-reads before acting on it). Abandoned calls finish on
// their own; Wait waits for them.
type boundedKV struct {
	kv store.KV
	wg sync.WaitGroup
}

// bounded runs call, returning its result or, once ctx ends first, late.
func bounded[T any](b *boundedKV, ctx context.Context, late error, call func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		v, err := call()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, late
	}
}

// Wait waits for abandoned calls to return.
func (b *boundedKV) Wait() { b.wg.Wait() }

func (b *boundedKV) Bucket() string { return b.kv.Bucket() }

func (b *boundedKV) Get(ctx context.Context, key string) (store.Entry, error) {
	return bounded(b, ctx, store.ErrUnavailable, func() (store.Entry, error) { return b.kv.Get(ctx, key) })
}

func (b *boundedKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	return bounded(b, ctx, store.ErrOutcomeUnknown, func() (uint64, error) { return b.kv.Create(ctx, key, value) })
}

func (b *boundedKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	return bounded(b, ctx, store.ErrOutcomeUnknown, func() (uint64, error) { return b.kv.Update(ctx, key, value, revision) })
}

func (b *boundedKV) Delete(ctx context.Context, key string, revision uint64) error {
	_, err := bounded(b, ctx, store.ErrOutcomeUnknown, func() (struct{}, error) { return struct{}{}, b.kv.Delete(ctx, key, revision) })
	return err
}

func (b *boundedKV) List(ctx context.Context, filter string) ([]store.Entry, error) {
	return bounded(b, ctx, store.ErrUnavailable, func() ([]store.Entry, error) { return b.kv.List(ctx, filter) })
}

func (b *boundedKV) History(ctx context.Context, key string) ([]store.Entry, error) {
	return bounded(b, ctx, store.ErrUnavailable, func() ([]store.Entry, error) { return b.kv.History(ctx, key) })
}

// Watch is not bounded: a watch lives as long as its context.
func (b *boundedKV) Watch(ctx context.Context, filter string, opts store.WatchOptions) (store.Watcher, error) {
	return b.kv.Watch(ctx, filter, opts)
}
