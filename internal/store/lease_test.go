package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/store/memstore"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func leaseKV(t *testing.T) store.KV {
	t.Helper()
	kv, err := memstore.New().Ensure(context.Background(), store.BucketConfig{Name: "leases", History: 1, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestLeaseOneHolderAndTakeOver(t *testing.T) {
	ctx := context.Background()
	kv := leaseKV(t)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	const ttl = 6 * time.Second
	a := store.NewLease(kv, "orphan-gc", "a", store.LeaseOptions{TTL: ttl, Now: clock.now})
	b := store.NewLease(kv, "orphan-gc", "b", store.LeaseOptions{TTL: ttl, Now: clock.now})

	a.Step(ctx)
	b.Step(ctx)
	if !a.Held() || b.Held() {
		t.Fatalf("first come: a held=%v b held=%v, want a only", a.Held(), b.Held())
	}
	// a keeps renewing: b never takes over, however long it waits.
	for i := 0; i < 10; i++ {
		clock.advance(ttl / 3)
		a.Step(ctx)
		b.Step(ctx)
		if !a.Held() || b.Held() {
			t.Fatalf("round %d while a renews: a held=%v b held=%v", i, a.Held(), b.Held())
		}
	}
	// a stops renewing (crashed or cut off): its own claim ends before b
	// may take over, and b takes over once the revision stood still a TTL.
	var aEnded, bTook time.Duration
	for elapsed := time.Duration(0); elapsed <= 2*ttl; elapsed += 500 * time.Millisecond {
		if !a.Held() && aEnded == 0 {
			aEnded = elapsed
		}
		b.Step(ctx)
		if b.Held() && bTook == 0 {
			bTook = elapsed
		}
		if a.Held() && b.Held() {
			t.Fatalf("both hold the lease %s after a's last renewal", elapsed)
		}
		clock.advance(500 * time.Millisecond)
	}
	if aEnded == 0 || bTook == 0 || bTook < aEnded {
		t.Fatalf("a's claim ended at %s, b took over at %s", aEnded, bTook)
	}
	// a comes back: its renewal loses the compare-and-set and it knows.
	a.Step(ctx)
	if a.Held() || !b.Held() {
		t.Fatalf("after a's return: a held=%v b held=%v", a.Held(), b.Held())
	}
}

func TestLeaseReleasedOnStopIsTakenAtOnce(t *testing.T) {
	kv := leaseKV(t)
	clock := &fakeClock{t: time.Unix(1000, 0)}
	a := store.NewLease(kv, "orphan-gc", "a", store.LeaseOptions{TTL: time.Hour, Now: clock.now})
	b := store.NewLease(kv, "orphan-gc", "b", store.LeaseOptions{TTL: time.Hour, Now: clock.now})
	a.Step(context.Background())
	b.Step(context.Background())
	if !a.Held() || b.Held() {
		t.Fatalf("a held=%v b held=%v, want a only", a.Held(), b.Held())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if a.Held() {
		t.Fatal("a still holds the lease after it stopped")
	}
	b.Step(context.Background())
	if !b.Held() {
		t.Fatal("b did not take the released lease at once")
	}
}

// slowAnswer stores an Update at once, lets the contender look, and only
// then lets the holder's clock reach the answer: the answer took that long.
type slowAnswer struct {
	store.KV
	between func()
}

func (k *slowAnswer) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	rev, err := k.KV.Update(ctx, key, value, revision)
	k.between()
	return rev, err
}

// The holder counts its claim from when it sent a renewal, not from when
// the answer came, and gives it up a quarter TTL early: a contender that saw
// the renewal the moment it was stored, on a clock running 10 % fast, still
// takes over only after the holder stopped believing it holds the lease.
func TestLeaseSlowRenewalAndFastContenderClock(t *testing.T) {
	ctx := context.Background()
	kv := leaseKV(t)
	const ttl = 6 * time.Second
	base := time.Unix(1000, 0)
	var elapsed time.Duration
	holderClock := func() time.Time { return base.Add(elapsed) }
	fastClock := func() time.Time { return base.Add(elapsed * 11 / 10) }
	b := store.NewLease(kv, "orphan-gc", "b", store.LeaseOptions{TTL: ttl, Now: fastClock})
	slow := &slowAnswer{KV: kv}
	a := store.NewLease(slow, "orphan-gc", "a", store.LeaseOptions{TTL: ttl, Now: holderClock})
	slow.between = func() {}
	a.Step(ctx)
	b.Step(ctx)
	if !a.Held() || b.Held() {
		t.Fatalf("a held=%v b held=%v, want a only", a.Held(), b.Held())
	}
	// One renewal whose answer takes half a TTL; then a stops for good.
	elapsed += time.Second
	slow.between = func() {
		b.Step(ctx) // b reads the renewal as soon as it is stored
		elapsed += ttl / 2
	}
	a.Step(ctx)
	if !a.Held() {
		t.Fatal("a lost the lease through a slow renewal")
	}
	took := false
	for ; elapsed < 4*ttl; elapsed += 50 * time.Millisecond {
		b.Step(ctx)
		if a.Held() && b.Held() {
			t.Fatalf("both hold the lease %s after a's last renewal was sent", elapsed-time.Second)
		}
		took = took || b.Held()
	}
	if !took {
		t.Fatal("b never took over the abandoned lease")
	}
}
