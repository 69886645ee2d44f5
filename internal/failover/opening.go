package failover

import (
	"context"
	"sync"

	"github.com/harmony-fleet/harmony/internal/store"
)

// openingKV is a bucket that may not be open yet: until it is, every call
// fails as an unreachable store does, so the loop (and its machine) starts
// and decides while the store does not answer, instead of the agent
// deciding before the loop runs.
type openingKV struct {
	bucket string
	mu     sync.RWMutex
	kv     store.KV
}

func (o *openingKV) set(kv store.KV) {
	o.mu.Lock()
	o.kv = kv
	o.mu.Unlock()
}

func (o *openingKV) get() (store.KV, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.kv == nil {
		return nil, store.ErrUnavailable
	}
	return o.kv, nil
}

func (o *openingKV) Bucket() string { return o.bucket }

func (o *openingKV) Get(ctx context.Context, key string) (store.Entry, error) {
	kv, err := o.get()
	if err != nil {
		return store.Entry{}, err
	}
	return kv.Get(ctx, key)
}

func (o *openingKV) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	kv, err := o.get()
	if err != nil {
		return 0, err
	}
	return kv.Create(ctx, key, value)
}

func (o *openingKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	kv, err := o.get()
	if err != nil {
		return 0, err
	}
	return kv.Update(ctx, key, value, revision)
}

func (o *openingKV) Delete(ctx context.Context, key string, revision uint64) error {
	kv, err := o.get()
	if err != nil {
		return err
	}
	return kv.Delete(ctx, key, revision)
}

func (o *openingKV) List(ctx context.Context, filter string) ([]store.Entry, error) {
	kv, err := o.get()
	if err != nil {
		return nil, err
	}
	return kv.List(ctx, filter)
}

func (o *openingKV) History(ctx context.Context, key string) ([]store.Entry, error) {
	kv, err := o.get()
	if err != nil {
		return nil, err
	}
	return kv.History(ctx, key)
}

func (o *openingKV) Watch(ctx context.Context, filter string, opts store.WatchOptions) (store.Watcher, error) {
	kv, err := o.get()
	if err != nil {
		return nil, err
	}
	return kv.Watch(ctx, filter, opts)
}
