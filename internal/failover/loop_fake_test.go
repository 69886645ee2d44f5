package failover_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/failover/pg"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// fakePG is a PostgreSQL the loop drives in memory: it counts how many of
// the loop's calls run at once, and can hang (each call then blocks until
// its context ends, as a stuck server would).
type fakePG struct {
	mu            sync.Mutex
	writable      bool
	hang          bool
	inFlight, max int
	fences        int
}

var errHung = errors.New("fake PostgreSQL: hung")

func (f *fakePG) call(ctx context.Context) (func(), error) { return f.enter(ctx, true) }

func (f *fakePG) enter(ctx context.Context, mayHang bool) (func(), error) {
	f.mu.Lock()
	f.inFlight++
	f.max = max(f.max, f.inFlight)
	hang := f.hang && mayHang
	f.mu.Unlock()
	done := func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}
	if hang {
		<-ctx.Done()
		return done, errHung
	}
	return done, nil
}

func (f *fakePG) Role(ctx context.Context) (pg.Role, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writable {
		return pg.RolePrimary, nil
	}
	return pg.RoleDown, errors.New("down")
}

func (f *fakePG) Observe(ctx context.Context) (pg.Observation, error) {
	done, err := f.call(ctx)
	defer done()
	if err != nil {
		return pg.Observation{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.writable {
		return pg.Observation{}, errors.New("down")
	}
	return pg.Observation{Position: pg.Position{LSN: 1, Timeline: 1}}, nil
}

func (f *fakePG) WALPosition(ctx context.Context) (pg.Position, error) {
	o, err := f.Observe(ctx)
	return o.Position, err
}

func (f *fakePG) Standbys(ctx context.Context) ([]pg.Standby, error) { return nil, nil }

func (f *fakePG) Fence(ctx context.Context, level int) error {
	done, _ := f.enter(ctx, false) // a fence never hangs here
	defer done()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writable = false
	f.fences++
	return nil
}

func (f *fakePG) Running() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.writable, nil
}

func (f *fakePG) Start(ctx context.Context) error {
	done, err := f.call(ctx)
	defer done()
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writable = true
	return nil
}

func (f *fakePG) Promote(ctx context.Context) error                     { return f.Start(ctx) }
func (f *fakePG) SetSyncStandby(ctx context.Context, name string) error { return nil }
func (f *fakePG) Follow(ctx context.Context, primary *pg.Instance) (string, error) {
	return "", errors.New("fake PostgreSQL: no follow")
}

// The loop against a fake PostgreSQL and a real store: a PostgreSQL that
// hangs (every call blocks until cancelled) gets the primary fenced, and
// once it answers again the primary unfences; throughout, the loop never
// has two actions touching PostgreSQL at once (a replaced action is waited
// for before the next starts).
func TestLoopOneActionAtATime(t *testing.T) {
	srv := meshtest.StartServer(t)
	st, err := store.NewNATS(meshtest.Connect(t, srv), store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kv, err := failover.EnsureBucket(ctx, st, "fake", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := failover.Bootstrap(ctx, kv, "n1", ""); err != nil {
		t.Fatal(err)
	}
	f := &fakePG{writable: true}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l, err := failover.NewLoop(failover.LoopConfig{Cluster: "fake", Node: "n1", Timings: failover.FastTimings(),
		Strategy: failover.AbsoluteConsistency, PG: f, Port: 5432, User: "postgres", SocketDir: "/tmp"}, kv, log)
	if err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(lctx) }()
	defer func() { lcancel(); <-done }()
	status := func(want failover.Status) func() error {
		return func() error {
			if s := l.Node().Status; s != want {
				return fmt.Errorf("n1 is %s, want %s", s, want)
			}
			return nil
		}
	}
	retry.Until(t, 30*time.Second, status(failover.StatusPrimary))
	f.mu.Lock()
	f.hang = true
	f.mu.Unlock()
	retry.Until(t, 30*time.Second, status(failover.StatusFenced))
	f.mu.Lock()
	f.hang = false
	f.mu.Unlock()
	retry.Until(t, 30*time.Second, status(failover.StatusPrimary))
	f.mu.Lock()
	if f.fences == 0 || !f.writable {
		t.Fatalf("fences %d, writable %v: the hang neither fenced nor was recovered from", f.fences, f.writable)
	}
	fences := f.fences
	// A decision that replaces an action in flight: while a beat hangs
	// in PostgreSQL, cluster-state names another primary; the fence must
	// wait for the cancelled beat to return.
	f.hang = true
	f.mu.Unlock()
	e, err := kv.Get(ctx, failover.KeyClusterState)
	if err != nil {
		t.Fatal(err)
	}
	cs, _, err := failover.DecodeState(e)
	if err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 30*time.Second, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.inFlight == 0 {
			return errors.New("no call in flight yet")
		}
		return nil
	})
	if _, err := kv.Update(ctx, failover.KeyClusterState, failover.EncodeState(failover.ClusterState{Primary: "n2", Epoch: cs.Epoch + 1}, "test"), e.Revision); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 30*time.Second, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.fences == fences {
			return errors.New("not fenced after another primary was named")
		}
		return nil
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.max != 1 {
		t.Fatalf("%d calls into PostgreSQL ran at once: actions overlapped", f.max)
	}
}
