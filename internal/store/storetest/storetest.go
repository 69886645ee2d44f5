// Package storetest is the contract every store.Store implementation keeps.
// Run it from the implementation's tests with Run; the NATS store runs it on
// one embedded node and on a three-node cluster, the in-memory store as is.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/store"
)

// Factory returns a store for one test; buckets it creates may be shared
// with other tests of the same run, so each case uses its own bucket name.
type Factory func(t *testing.T) store.Store

// Options adapt the suite to an implementation.
type Options struct {
	// Replicas for the buckets the suite creates (1 when zero).
	Replicas int
	// Republish: the buckets republish their writes (on
	// "republished.<bucket>"), for stores that watch those subjects.
	Republish bool
}

// Run runs every contract case.
func Run(t *testing.T, newStore Factory, opts Options) {
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	s := &suite{newStore: newStore, opts: opts}
	t.Run("CreateGet", wrap(s.createGet))
	t.Run("CreateExistingConflicts", wrap(s.createExisting))
	t.Run("UpdateCAS", wrap(s.updateCAS))
	t.Run("DeleteCAS", wrap(s.deleteCAS))
	t.Run("GetMissing", wrap(s.getMissing))
	t.Run("InvalidKeys", wrap(s.invalidKeys))
	t.Run("List", wrap(s.list))
	t.Run("History", wrap(s.history))
	t.Run("WatchReplayThenUpdates", wrap(s.watchReplay))
	t.Run("WatchEmptyBucketReplays", wrap(s.watchEmpty))
	t.Run("WatchUpdatesOnly", wrap(s.watchUpdatesOnly))
	t.Run("WatchResume", wrap(s.watchResume))
	t.Run("WatchStopsWithContext", wrap(s.watchStops))
	t.Run("EnsureChecksSettings", wrap(s.ensureChecks))
	t.Run("ConcurrentCAS", wrap(s.concurrentCAS))
}

type suite struct {
	newStore Factory
	opts     Options
}

func (s *suite) kv(t *testing.T, history int) store.KV {
	t.Helper()
	st := s.newStore(t)
	cfg := store.BucketConfig{Name: bucketName(t), History: history, Replicas: s.opts.Replicas}
	if s.opts.Republish {
		cfg.Republish = "republished." + cfg.Name
	}
	kv, err := st.Ensure(ctx(t), cfg)
	if err != nil {
		t.Fatalf("ensure bucket: %v", err)
	}
	return kv
}

var bucketSeq struct {
	sync.Mutex
	n int
}

func bucketName(t *testing.T) string {
	bucketSeq.Lock()
	defer bucketSeq.Unlock()
	bucketSeq.n++
	return "contract-" + strconv.Itoa(bucketSeq.n)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func wantErr(t *testing.T, err, class error) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Fatalf("error = %v, want %v", err, class)
	}
}

// fatal carries an error out of must to the case's wrapper.
type fatal struct{ err error }

// must returns v, or ends the running case with err. Call it only from the
// case's own goroutine.
func must[T any](v T, err error) T {
	if err != nil {
		panic(fatal{err})
	}
	return v
}

// wrap turns must's panics into test failures.
func wrap(f func(t *testing.T)) func(t *testing.T) {
	return func(t *testing.T) {
		defer func() {
			if r := recover(); r != nil {
				if f, ok := r.(fatal); ok {
					t.Fatalf("unexpected error: %v", f.err)
				}
				panic(r)
			}
		}()
		f(t)
	}
}

func (s *suite) createGet(t *testing.T) {
	kv := s.kv(t, 1)
	before := time.Now().Add(-time.Minute)
	rev := must(kv.Create(ctx(t), "dev-1.web", []byte("hello")))
	if rev == 0 {
		t.Fatal("revision 0")
	}
	e := must(kv.Get(ctx(t), "dev-1.web"))
	if string(e.Value) != "hello" || e.Revision != rev || e.Key != "dev-1.web" || e.Op != store.OpPut {
		t.Fatalf("got %+v, want value hello at revision %d", e, rev)
	}
	if e.Created.Before(before) || e.Created.After(time.Now().Add(time.Minute)) {
		t.Fatalf("created %v is not the server's time of the write", e.Created)
	}
	rev2 := must(kv.Create(ctx(t), "dev-2.web", []byte("x")))
	if rev2 <= rev {
		t.Fatalf("revision %d after %d: revisions must grow bucket-wide", rev2, rev)
	}
}

func (s *suite) createExisting(t *testing.T) {
	kv := s.kv(t, 1)
	must(kv.Create(ctx(t), "k", []byte("a")))
	_, err := kv.Create(ctx(t), "k", []byte("b"))
	wantErr(t, err, store.ErrConflict)
	if e := must(kv.Get(ctx(t), "k")); string(e.Value) != "a" {
		t.Fatalf("a failed create changed the value to %q", e.Value)
	}
}

func (s *suite) updateCAS(t *testing.T) {
	kv := s.kv(t, 1)
	r1 := must(kv.Create(ctx(t), "k", []byte("1")))
	r2 := must(kv.Update(ctx(t), "k", []byte("2"), r1))
	if r2 <= r1 {
		t.Fatalf("update revision %d not after %d", r2, r1)
	}
	_, err := kv.Update(ctx(t), "k", []byte("stale"), r1)
	wantErr(t, err, store.ErrConflict)
	_, err = kv.Update(ctx(t), "missing", []byte("x"), r2)
	wantErr(t, err, store.ErrConflict)
	_, err = kv.Update(ctx(t), "k", []byte("x"), 0)
	wantErr(t, err, store.ErrConflict)
	if e := must(kv.Get(ctx(t), "k")); string(e.Value) != "2" || e.Revision != r2 {
		t.Fatalf("got %q@%d, want 2@%d", e.Value, e.Revision, r2)
	}
}

func (s *suite) deleteCAS(t *testing.T) {
	kv := s.kv(t, 1)
	r1 := must(kv.Create(ctx(t), "k", []byte("1")))
	r2 := must(kv.Update(ctx(t), "k", []byte("2"), r1))
	wantErr(t, kv.Delete(ctx(t), "k", r1), store.ErrConflict)
	if _, err := kv.Get(ctx(t), "k"); err != nil {
		t.Fatalf("a failed delete removed the key: %v", err)
	}
	if err := kv.Delete(ctx(t), "k", r2); err != nil {
		t.Fatal(err)
	}
	_, err := kv.Get(ctx(t), "k")
	wantErr(t, err, store.ErrNotFound)
	// A deleted key can be created again.
	r3 := must(kv.Create(ctx(t), "k", []byte("3")))
	if r3 <= r2 {
		t.Fatalf("recreated at %d, not after %d", r3, r2)
	}
}

func (s *suite) getMissing(t *testing.T) {
	kv := s.kv(t, 1)
	_, err := kv.Get(ctx(t), "nothing.here")
	wantErr(t, err, store.ErrNotFound)
}

func (s *suite) invalidKeys(t *testing.T) {
	kv := s.kv(t, 1)
	for _, k := range []string{"", ".a", "a.", "a..b", "a b", "a*", "a.>", "_kv.x", "ü"} {
		_, err := kv.Create(ctx(t), k, []byte("x"))
		if !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("create %q: %v, want ErrInvalidKey", k, err)
		}
		_, err = kv.Get(ctx(t), k)
		if !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("get %q: %v, want ErrInvalidKey", k, err)
		}
	}
	_, err := kv.List(ctx(t), "a..b")
	wantErr(t, err, store.ErrInvalidKey)
}

func (s *suite) list(t *testing.T) {
	kv := s.kv(t, 1)
	for _, k := range []string{"d1.web", "d1.db", "d2.web", "other"} {
		must(kv.Create(ctx(t), k, []byte(k)))
	}
	r := must(kv.Create(ctx(t), "d1.gone", []byte("x")))
	if err := kv.Delete(ctx(t), "d1.gone", r); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]string{
		"":      {"d1.db", "d1.web", "d2.web", "other"},
		"d1.*":  {"d1.db", "d1.web"},
		"*.web": {"d1.web", "d2.web"},
		"d1.>":  {"d1.db", "d1.web"},
		"none":  nil,
	}
	for filter, want := range cases {
		got := keysOf(must(kv.List(ctx(t), filter)))
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("List(%q) = %v, want %v", filter, got, want)
		}
	}
}

func keysOf(es []store.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Key)
	}
	return out
}

func (s *suite) history(t *testing.T) {
	kv := s.kv(t, 3)
	rev := must(kv.Create(ctx(t), "k", []byte("0")))
	for i := 1; i < 5; i++ {
		rev = must(kv.Update(ctx(t), "k", []byte(strconv.Itoa(i)), rev))
	}
	if err := kv.Delete(ctx(t), "k", rev); err != nil {
		t.Fatal(err)
	}
	h := must(kv.History(ctx(t), "k"))
	if len(h) != 3 {
		t.Fatalf("history has %d entries, want 3 (the bucket keeps 3)", len(h))
	}
	if string(h[0].Value) != "3" || string(h[1].Value) != "4" || h[2].Op != store.OpDelete {
		t.Fatalf("history = %v", h)
	}
	if !(h[0].Revision < h[1].Revision && h[1].Revision < h[2].Revision) {
		t.Fatalf("history not oldest first: %v", h)
	}
	_, err := kv.History(ctx(t), "never")
	wantErr(t, err, store.ErrNotFound)
}

// next waits for the next event of w.
func next(t *testing.T, w store.Watcher) store.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("watch ended: %v", w.Err())
		}
		return ev
	case <-time.After(20 * time.Second):
		t.Fatal("no watch event within 20s")
	}
	return store.Event{}
}

func expectEntry(t *testing.T, w store.Watcher, key, value string, op store.Op) store.Entry {
	t.Helper()
	ev := next(t, w)
	if ev.Replayed || ev.Entry.Key != key || string(ev.Entry.Value) != value || ev.Entry.Op != op {
		t.Fatalf("event %+v, want %s %s=%q", ev, op, key, value)
	}
	return ev.Entry
}

func expectReplayed(t *testing.T, w store.Watcher) {
	t.Helper()
	if ev := next(t, w); !ev.Replayed {
		t.Fatalf("event %+v, want the replay marker", ev)
	}
}

func (s *suite) watchReplay(t *testing.T) {
	kv := s.kv(t, 1)
	must(kv.Create(ctx(t), "a.1", []byte("x")))
	r := must(kv.Create(ctx(t), "a.2", []byte("y")))
	must(kv.Update(ctx(t), "a.2", []byte("y2"), r))
	must(kv.Create(ctx(t), "b.1", []byte("z")))
	w := must(kv.Watch(ctx(t), "a.*", store.WatchOptions{}))
	expectEntry(t, w, "a.1", "x", store.OpPut)
	expectEntry(t, w, "a.2", "y2", store.OpPut) // latest value only
	expectReplayed(t, w)
	r3 := must(kv.Create(ctx(t), "a.3", []byte("new")))
	must(kv.Create(ctx(t), "b.2", []byte("not watched")))
	e := expectEntry(t, w, "a.3", "new", store.OpPut)
	if e.Revision != r3 {
		t.Fatalf("watched revision %d, written %d", e.Revision, r3)
	}
	if err := kv.Delete(ctx(t), "a.3", r3); err != nil {
		t.Fatal(err)
	}
	expectEntry(t, w, "a.3", "", store.OpDelete)
}

func (s *suite) watchEmpty(t *testing.T) {
	kv := s.kv(t, 1)
	w := must(kv.Watch(ctx(t), "", store.WatchOptions{}))
	expectReplayed(t, w)
	must(kv.Create(ctx(t), "k", []byte("v")))
	expectEntry(t, w, "k", "v", store.OpPut)
}

func (s *suite) watchUpdatesOnly(t *testing.T) {
	kv := s.kv(t, 1)
	must(kv.Create(ctx(t), "old", []byte("v")))
	w := must(kv.Watch(ctx(t), "", store.WatchOptions{UpdatesOnly: true}))
	expectReplayed(t, w)
	must(kv.Create(ctx(t), "new", []byte("v")))
	expectEntry(t, w, "new", "v", store.OpPut)
}

func (s *suite) watchResume(t *testing.T) {
	kv := s.kv(t, 5)
	r1 := must(kv.Create(ctx(t), "k", []byte("1")))
	r2 := must(kv.Update(ctx(t), "k", []byte("2"), r1))
	must(kv.Update(ctx(t), "k", []byte("3"), r2))
	// Resuming from r2 replays every retained revision from r2 on.
	w := must(kv.Watch(ctx(t), "", store.WatchOptions{ResumeFrom: r2}))
	expectEntry(t, w, "k", "2", store.OpPut)
	expectEntry(t, w, "k", "3", store.OpPut)
	expectReplayed(t, w)
	must(kv.Create(ctx(t), "k2", []byte("4")))
	expectEntry(t, w, "k2", "4", store.OpPut)
}

func (s *suite) watchStops(t *testing.T) {
	kv := s.kv(t, 1)
	c, cancel := context.WithCancel(ctx(t))
	w := must(kv.Watch(c, "", store.WatchOptions{}))
	expectReplayed(t, w)
	// Fill the pipeline past any buffer so the watcher is blocked on sending
	// when it is cancelled; it must still stop.
	for i := 0; i < 300; i++ {
		must(kv.Create(ctx(t), "k"+strconv.Itoa(i), []byte("v")))
	}
	cancel()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case _, ok := <-w.Events():
			if !ok {
				if w.Err() != nil {
					t.Fatalf("a cancelled watch reports %v", w.Err())
				}
				return
			}
		case <-deadline:
			t.Fatal("watch did not stop after its context was cancelled")
		}
	}
}

func (s *suite) ensureChecks(t *testing.T) {
	st := s.newStore(t)
	name := bucketName(t)
	cfg := store.BucketConfig{Name: name, History: 2, Replicas: s.opts.Replicas}
	kv := must(st.Ensure(ctx(t), cfg))
	must(kv.Create(ctx(t), "k", []byte("kept")))
	// Ensuring the same settings again binds to the existing bucket.
	kv2 := must(st.Ensure(ctx(t), cfg))
	if e := must(kv2.Get(ctx(t), "k")); string(e.Value) != "kept" {
		t.Fatalf("value after second Ensure: %q", e.Value)
	}
	other := cfg
	other.History = 5
	_, err := st.Ensure(ctx(t), other)
	var inc *store.IncompatibleBucketError
	if !errors.As(err, &inc) || inc.Bucket != name || len(inc.Differences) == 0 {
		t.Fatalf("Ensure with other history: %v, want IncompatibleBucketError", err)
	}
	if _, err := st.Open(ctx(t), "no-such-bucket"); !errors.Is(err, store.ErrBucketNotFound) {
		t.Fatalf("Open missing: %v, want ErrBucketNotFound", err)
	}
	kv3 := must(st.Open(ctx(t), name))
	if e := must(kv3.Get(ctx(t), "k")); string(e.Value) != "kept" {
		t.Fatalf("value via Open: %q", e.Value)
	}
}

// concurrentCAS: several goroutines increment one counter by CAS. Every
// successful update must be based on a distinct revision, the final value
// must equal the number of successes, and no two writers may win the same
// revision.
func (s *suite) concurrentCAS(t *testing.T) {
	kv := s.kv(t, 64)
	must(kv.Create(ctx(t), "counter", []byte("0")))
	const writers, each = 4, 10
	var mu sync.Mutex
	wonFrom := map[uint64]int{} // base revision -> writer that won it
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < each; {
				e, err := kv.Get(ctx(t), "counter")
				if err != nil {
					errs <- err
					return
				}
				n, _ := strconv.Atoi(string(e.Value))
				_, err = kv.Update(ctx(t), "counter", []byte(strconv.Itoa(n+1)), e.Revision)
				if errors.Is(err, store.ErrConflict) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if other, dup := wonFrom[e.Revision]; dup {
					errs <- fmt.Errorf("writers %d and %d both won revision %d", other, w, e.Revision)
				}
				wonFrom[e.Revision] = w
				mu.Unlock()
				done++
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	e := must(kv.Get(ctx(t), "counter"))
	if string(e.Value) != strconv.Itoa(writers*each) {
		t.Fatalf("counter = %s after %d successful increments: an update was lost", e.Value, writers*each)
	}
}
