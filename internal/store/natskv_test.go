package store_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/harmony-fleet/harmony/internal/testutil/leak"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/store/storetest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

func TestMain(m *testing.M) { leak.VerifyTestMain(m) }

func TestContractSingleNode(t *testing.T) {
	srv := meshtest.StartServer(t)
	nc := meshtest.Connect(t, srv)
	st, err := store.NewNATS(nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, func(*testing.T) store.Store { return st }, storetest.Options{})
}

// With DirectGet (device identities), on one node, Get keeps the whole
// contract: a single replica cannot lag.
func TestContractSingleNodeDirectGet(t *testing.T) {
	srv := meshtest.StartServer(t)
	nc := meshtest.Connect(t, srv)
	st, err := store.NewNATS(nc, store.NATSOptions{DirectGet: true})
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, func(*testing.T) store.Store { return st }, storetest.Options{})
}

// Watches that follow republished writes (agents) keep the contract of
// a watch from the start (resumed watches still use a consumer).
func TestContractSingleNodeRepublished(t *testing.T) {
	srv := meshtest.StartServer(t)
	nc := meshtest.Connect(t, srv)
	st, err := store.NewNATS(nc, store.NATSOptions{DirectGet: true, WatchRepublished: true})
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, func(*testing.T) store.Store { return st }, storetest.Options{Republish: true})
}

func TestContractCluster(t *testing.T) {
	c := meshtest.StartCluster(t, 3)
	nc := c.Connect()
	st, err := store.NewNATS(nc, store.NATSOptions{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, func(*testing.T) store.Store { return st }, storetest.Options{Replicas: 3})
}

// TestCASSurvivesLeaderKill runs a CAS counter from several goroutines on a
// three-replica bucket and kills the stream leader halfway. Writes whose
// outcome is unknown are resolved by re-reading (each attempt writes a unique
// value). At the end every acknowledged write must be in the key's history
// exactly once, in the order of the counter, and no two writers may have won
// the same revision.
func TestCASSurvivesLeaderKill(t *testing.T) {
	c := meshtest.StartCluster(t, 3)
	nc := c.Connect()
	st, err := store.NewNATS(nc, store.NATSOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kv, err := st.Ensure(ctx, store.BucketConfig{Name: "cas", History: 64, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "counter", []byte("0 init")); err != nil {
		t.Fatal(err)
	}

	const writers, total = 4, 56 // at most 59 wins + 1: the 64 kept revisions hold all
	type win struct {
		rev, base uint64
		value     string
	}
	var (
		mu      sync.Mutex
		wins    []win
		killed  bool
		unknown int
	)
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(wins) }
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 0; count() < total && ctx.Err() == nil; attempt++ {
				e, err := get(ctx, kv)
				if err != nil {
					t.Logf("writer %d: get: %v", w, err)
					continue // unavailable during the election: try again
				}
				n, _ := strconv.Atoi(strings.Fields(string(e.Value))[0])
				value := fmt.Sprintf("%d w%d-a%d", n+1, w, attempt)
				rev, err := update(ctx, kv, value, e.Revision)
				switch {
				case err == nil:
				case errors.Is(err, store.ErrConflict):
					continue
				case errors.Is(err, store.ErrUnavailable):
					t.Logf("writer %d: update: %v", w, err)
					continue
				case errors.Is(err, store.ErrOutcomeUnknown):
					// Resolve by reading: our unique value is either the
					// revision right after the base, or it never landed.
					mu.Lock()
					unknown++
					mu.Unlock()
					rev = resolve(ctx, kv, e.Revision, value)
					if rev == 0 {
						continue
					}
				default:
					t.Errorf("writer %d: %v", w, err)
					return
				}
				mu.Lock()
				wins = append(wins, win{rev: rev, base: e.Revision, value: value})
				if len(wins) == total/2 && !killed {
					killed = true
					leader := c.StreamLeader("KV_cas")
					if leader < 0 {
						t.Errorf("no stream leader to kill")
					} else {
						t.Logf("killing stream leader %s after %d writes", c.Configs[leader].Name, len(wins))
						go c.Stop(leader) // do not hold mu while it shuts down
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if !killed {
		t.Fatal("the leader was never killed")
	}
	t.Logf("%d acknowledged writes, %d with unknown outcome resolved by reading", len(wins), unknown)

	var hist []store.Entry
	retry.Until(t, 30*time.Second, func() error {
		hist, err = history(context.Background(), kv)
		return err
	})
	seen := map[uint64]string{}
	for _, h := range hist {
		seen[h.Revision] = string(h.Value)
	}
	bases := map[uint64]bool{}
	for _, w := range wins {
		if got, ok := seen[w.rev]; !ok || got != w.value {
			t.Errorf("acknowledged write %q at revision %d is not in the history (found %q)", w.value, w.rev, got)
		}
		if bases[w.base] {
			t.Errorf("two writers won on base revision %d", w.base)
		}
		bases[w.base] = true
	}
	// The history is a chain: each value is the previous plus one, each
	// value appears once.
	values := map[string]bool{}
	for i, h := range hist {
		if values[string(h.Value)] {
			t.Errorf("value %q appears twice in the history", h.Value)
		}
		values[string(h.Value)] = true
		if i == 0 {
			continue
		}
		prev, _ := strconv.Atoi(strings.Fields(string(hist[i-1].Value))[0])
		cur, _ := strconv.Atoi(strings.Fields(string(h.Value))[0])
		if cur != prev+1 {
			t.Errorf("history jumps from %d to %d at revision %d: a lost or doubled update", prev, cur, h.Revision)
		}
	}
	if len(hist) != len(wins)+1 {
		t.Errorf("history holds %d writes, %d acknowledged plus the initial one expected", len(hist), len(wins))
	}
}

// resolve finds whether value was written right after base: the revision it
// got, or 0 when it did not land (the next write after base is someone
// else's, or there is none).
func resolve(ctx context.Context, kv store.KV, base uint64, value string) uint64 {
	for ctx.Err() == nil {
		hist, err := history(ctx, kv)
		if err != nil {
			continue
		}
		for i, h := range hist {
			if h.Revision != base {
				continue
			}
			if i+1 < len(hist) && string(hist[i+1].Value) == value {
				return hist[i+1].Revision
			}
			return 0
		}
		return 0 // base fell out of the history: someone else wrote after it
	}
	return 0
}

func history(ctx context.Context, kv store.KV) ([]store.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return kv.History(ctx, "counter")
}

func get(ctx context.Context, kv store.KV) (store.Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return kv.Get(ctx, "counter")
}

func update(ctx context.Context, kv store.KV, value string, rev uint64) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return kv.Update(ctx, "counter", []byte(value), rev)
}

// A write the republished subscription never sees (here: the bucket stops
// republishing) still reaches the watch through its periodic re-read, and
// so does a delete.
func TestRepublishedWatchRechecks(t *testing.T) {
	srv := meshtest.StartServer(t)
	nc := meshtest.Connect(t, srv)
	ctx := context.Background()
	st, err := store.NewNATS(nc, store.NATSOptions{WatchRepublished: true, RepublishRecheck: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := st.Ensure(ctx, store.BucketConfig{Name: "rp", History: 1, Replicas: 1, Republish: "rp.out"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "dev.gone", []byte("x")); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.Watch(wctx, "dev.*", store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next := func() store.Event {
		t.Helper()
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("watch ended: %v", w.Err())
			}
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event")
		}
		return store.Event{}
	}
	if ev := next(); ev.Entry.Key != "dev.gone" {
		t.Fatalf("first event %+v", ev)
	}
	if ev := next(); !ev.Replayed {
		t.Fatalf("want the replay marker, got %+v", ev)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "KV_rp")
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.RePublish = nil
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, "dev.new", []byte("y"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Entry.Key != "dev.new" || ev.Entry.Revision != rev || string(ev.Entry.Value) != "y" {
		t.Fatalf("want dev.new at %d from the re-read, got %+v", rev, ev)
	}
	e, err := kv.Get(ctx, "dev.gone")
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, "dev.gone", e.Revision); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Entry.Key != "dev.gone" || ev.Entry.Op != store.OpDelete {
		t.Fatalf("want the delete of dev.gone from the re-read, got %+v", ev)
	}
}

// Only what the bucket's stream republished reaches a republished watch:
// another stream republishing into its subjects a message stored with the
// bucket's headers (the server adds its own, so they come twice) is
// ignored, and so is a consumer's delivery (which has a reply subject).
// Publishing on the subjects directly is for permissions to refuse.
func TestRepublishedWatchIgnoresForgeries(t *testing.T) {
	srv := meshtest.StartServer(t)
	nc := meshtest.Connect(t, srv)
	ctx := context.Background()
	st, err := store.NewNATS(nc, store.NATSOptions{WatchRepublished: true})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := st.Ensure(ctx, store.BucketConfig{Name: "rf", History: 1, Replicas: 1, Republish: "rf.out"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.Watch(wctx, "dev.*", store.WatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-w.Events(); !ev.Replayed {
		t.Fatalf("want the replay marker, got %+v", ev)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"},
		RePublish: &jetstream.RePublish{Source: "evil.>", Destination: "rf.out.>"}}); err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("evil.dev.evil")
	m.Header.Set("Nats-Stream", "KV_rf")
	m.Header.Set("Nats-Subject", "$KV.rf.dev.evil")
	m.Header.Set("Nats-Sequence", "999999")
	m.Data = []byte("forged")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	d := nats.NewMsg("rf.out.dev.evil2")
	d.Reply = "$JS.ACK.KV_rf.c.1.1.1.1.0"
	d.Header.Set("Nats-Stream", "KV_rf")
	d.Header.Set("Nats-Subject", "$KV.rf.dev.evil2")
	d.Header.Set("Nats-Sequence", "999999")
	if err := nc.PublishMsg(d); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "dev.real", []byte("real")); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.Events():
		if ev.Entry.Key != "dev.real" {
			t.Fatalf("the watch took %+v before the real write", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
}

// TestBucketsRefuseRollups: a write carrying Nats-Rollup (which would erase
// every key of the bucket, or every revision of a key, without a per-key
// event) and a stream purge are refused by every bucket, also by one made
// before (nats.go's KV default allows rollups): Ensure turns them off.
func TestBucketsRefuseRollups(t *testing.T) {
	srv := meshtest.StartServer(t)
	nc := meshtest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// An old bucket, as nats.go makes it.
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "old", History: 1}); err != nil {
		t.Fatal(err)
	}
	st, err := store.NewNATS(nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"old", "new"} {
		kv, err := st.Ensure(ctx, store.BucketConfig{Name: name, History: 1, Replicas: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"a", "b"} {
			if _, err := kv.Create(ctx, k, []byte(k)); err != nil {
				t.Fatal(err)
			}
		}
		m := nats.NewMsg("$KV." + name + ".a")
		m.Header.Set("Nats-Rollup", "all")
		m.Data = []byte("wipe")
		if _, err := js.PublishMsg(ctx, m); err == nil {
			t.Errorf("%s: a rollup write was stored", name)
		}
		s, err := js.Stream(ctx, "KV_"+name)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctx); err == nil {
			t.Errorf("%s: the stream was purged", name)
		}
		if l, err := kv.List(ctx, ""); err != nil || len(l) != 2 {
			t.Errorf("%s after the attempts: %v, %v; want a and b", name, l, err)
		}
		// Deletes by marker still work.
		e, err := kv.Get(ctx, "b")
		if err != nil {
			t.Fatal(err)
		}
		if err := kv.Delete(ctx, "b", e.Revision); err != nil {
			t.Errorf("%s: delete: %v", name, err)
		}
	}
}
