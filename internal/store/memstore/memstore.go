// Package memstore is an in-memory store.Store for unit tests of code that
// sits on the store. It keeps the same contract as the NATS store (the suite
// in package storetest proves it): bucket-wide growing revisions, CAS,
// deletion markers, bounded history per key and watches with a replay marker.
package memstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/harmony-fleet/harmony/internal/store"
)

// Store is an in-memory store.Store. The zero value is not usable; call New.
type Store struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	now     func() time.Time
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{buckets: map[string]*bucket{}, now: time.Now}
}

// Ensure implements store.Store.
func (s *Store) Ensure(_ context.Context, cfg store.BucketConfig) (store.KV, error) {
	if cfg.History < 1 || cfg.History > 64 {
		return nil, fmt.Errorf("memstore: bucket %s: history %d: must be 1..64", cfg.Name, cfg.History)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.buckets[cfg.Name]; ok {
		if b.cfg.History != cfg.History || b.cfg.Replicas != cfg.Replicas || b.cfg.MaxValueSize != cfg.MaxValueSize {
			return nil, &store.IncompatibleBucketError{Bucket: cfg.Name, Differences: []string{
				fmt.Sprintf("settings are %+v, want %+v", b.cfg, cfg)}}
		}
		return b, nil
	}
	b := &bucket{name: cfg.Name, cfg: cfg, now: s.now, keys: map[string][]store.Entry{}, changed: make(chan struct{})}
	s.buckets[cfg.Name] = b
	return b, nil
}

// Open implements store.Store.
func (s *Store) Open(_ context.Context, name string) (store.KV, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.buckets[name]
	if !ok {
		return nil, fmt.Errorf("memstore: open %s: %w", name, store.ErrBucketNotFound)
	}
	return b, nil
}

type bucket struct {
	name string
	cfg  store.BucketConfig
	now  func() time.Time

	mu   sync.Mutex
	seq  uint64
	log  []store.Entry            // every retained write, in revision order
	keys map[string][]store.Entry // retained revisions per key, oldest first
	// changed is closed and replaced on every write: a broadcast to watchers.
	changed chan struct{}
}

var _ store.KV = (*bucket)(nil)

func (b *bucket) Bucket() string { return b.name }

func (b *bucket) fail(op, key string, class error) error {
	return fmt.Errorf("memstore: %s %s/%s: %w", op, b.name, key, class)
}

func (b *bucket) latest(key string) (store.Entry, bool) {
	h := b.keys[key]
	if len(h) == 0 {
		return store.Entry{}, false
	}
	return h[len(h)-1], true
}

func (b *bucket) Get(ctx context.Context, key string) (store.Entry, error) {
	if err := check(ctx, key, false); err != nil {
		return store.Entry{}, b.fail("get", key, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.latest(key)
	if !ok || e.Op != store.OpPut {
		return store.Entry{}, b.fail("get", key, store.ErrNotFound)
	}
	return clone(e), nil
}

func (b *bucket) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := check(ctx, key, false); err != nil {
		return 0, b.fail("create", key, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.latest(key); ok && e.Op == store.OpPut {
		return 0, b.fail("create", key, store.ErrConflict)
	}
	return b.append(key, value, store.OpPut)
}

func (b *bucket) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	if err := check(ctx, key, false); err != nil {
		return 0, b.fail("update", key, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.latest(key); revision == 0 || !ok || e.Revision != revision {
		return 0, b.fail("update", key, store.ErrConflict)
	}
	return b.append(key, value, store.OpPut)
}

func (b *bucket) Delete(ctx context.Context, key string, revision uint64) error {
	if err := check(ctx, key, false); err != nil {
		return b.fail("delete", key, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if revision > 0 {
		if e, ok := b.latest(key); !ok || e.Revision != revision {
			return b.fail("delete", key, store.ErrConflict)
		}
	}
	_, err := b.append(key, nil, store.OpDelete)
	return err
}

// append records a write; b.mu is held.
func (b *bucket) append(key string, value []byte, op store.Op) (uint64, error) {
	if b.cfg.MaxValueSize > 0 && len(value) > int(b.cfg.MaxValueSize) {
		return 0, b.fail("write", key, store.ErrValueTooLarge)
	}
	b.seq++
	e := store.Entry{Key: key, Value: append([]byte(nil), value...), Revision: b.seq, Created: b.now(), Op: op}
	h := append(b.keys[key], e)
	if len(h) > b.cfg.History {
		dropped := h[0]
		h = h[1:]
		b.removeFromLog(dropped.Revision)
	}
	b.keys[key] = h
	b.log = append(b.log, e)
	close(b.changed)
	b.changed = make(chan struct{})
	return e.Revision, nil
}

func (b *bucket) removeFromLog(rev uint64) {
	i := sort.Search(len(b.log), func(i int) bool { return b.log[i].Revision >= rev })
	if i < len(b.log) && b.log[i].Revision == rev {
		b.log = append(b.log[:i], b.log[i+1:]...)
	}
}

func (b *bucket) List(ctx context.Context, filter string) ([]store.Entry, error) {
	if err := check(ctx, filter, true); err != nil {
		return nil, b.fail("list", filter, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []store.Entry
	for k := range b.keys {
		if e, ok := b.latest(k); ok && e.Op == store.OpPut && store.MatchFilter(filter, k) {
			out = append(out, clone(e))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (b *bucket) History(ctx context.Context, key string) ([]store.Entry, error) {
	if err := check(ctx, key, false); err != nil {
		return nil, b.fail("history", key, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	h := b.keys[key]
	if len(h) == 0 {
		return nil, b.fail("history", key, store.ErrNotFound)
	}
	out := make([]store.Entry, len(h))
	for i, e := range h {
		out[i] = clone(e)
	}
	return out, nil
}

func (b *bucket) Watch(ctx context.Context, filter string, opts store.WatchOptions) (store.Watcher, error) {
	if err := check(ctx, filter, true); err != nil {
		return nil, b.fail("watch", filter, err)
	}
	b.mu.Lock()
	var initial []store.Entry
	from := b.seq + 1 // first revision to follow after the initial values
	switch {
	case opts.ResumeFrom > 0:
		from = opts.ResumeFrom
	case opts.UpdatesOnly:
	default:
		for k := range b.keys {
			if e, ok := b.latest(k); ok && e.Op == store.OpPut && store.MatchFilter(filter, k) {
				initial = append(initial, clone(e))
			}
		}
		sort.Slice(initial, func(i, j int) bool { return initial[i].Revision < initial[j].Revision })
	}
	b.mu.Unlock()
	w := &watcher{events: make(chan store.Event, 64)}
	go w.run(ctx, b, filter, initial, from, opts.ResumeFrom > 0)
	return w, nil
}

type watcher struct {
	events chan store.Event
	err    error
}

func (w *watcher) Events() <-chan store.Event { return w.events }
func (w *watcher) Err() error                 { return w.err }

func (w *watcher) run(ctx context.Context, b *bucket, filter string, initial []store.Entry, from uint64, resume bool) {
	defer close(w.events)
	send := func(ev store.Event) bool {
		select {
		case w.events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for _, e := range initial {
		if !send(store.Event{Entry: e}) {
			return
		}
	}
	replayed := false
	if !resume {
		if !send(store.Event{Replayed: true}) {
			return
		}
		replayed = true
	}
	for {
		b.mu.Lock()
		var batch []store.Entry
		i := sort.Search(len(b.log), func(i int) bool { return b.log[i].Revision >= from })
		for ; i < len(b.log); i++ {
			if store.MatchFilter(filter, b.log[i].Key) {
				batch = append(batch, clone(b.log[i]))
			}
		}
		from = b.seq + 1
		changed := b.changed
		b.mu.Unlock()
		for _, e := range batch {
			if !send(store.Event{Entry: e}) {
				return
			}
		}
		if !replayed {
			replayed = true
			if !send(store.Event{Replayed: true}) {
				return
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

func check(ctx context.Context, key string, filter bool) error {
	if err := ctx.Err(); err != nil {
		return errors.Join(store.ErrUnavailable, err)
	}
	if filter {
		if key == "" {
			return nil
		}
		if !store.ValidFilter(key) {
			return store.ErrInvalidKey
		}
		return nil
	}
	if !store.ValidKey(key) {
		return store.ErrInvalidKey
	}
	return nil
}

func clone(e store.Entry) store.Entry {
	e.Value = append([]byte(nil), e.Value...)
	return e
}
