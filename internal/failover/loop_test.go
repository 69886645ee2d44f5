package failover_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/failover/pg"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/pgtest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

type member struct {
	name   string
	pg     *pg.Instance
	loop   *failover.Loop
	cancel context.CancelFunc
	done   chan error
}

func insert(ctx context.Context, in *pg.Instance, id int) error {
	c, err := pgx.Connect(ctx, in.ConnString("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, "INSERT INTO t VALUES ($1)", id)
	return err
}

func has(ctx context.Context, in *pg.Instance, id int) (bool, error) {
	c, err := pgx.Connect(ctx, in.ConnString("postgres"))
	if err != nil {
		return false, err
	}
	defer c.Close(context.Background())
	var n int
	err = c.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = $1", id).Scan(&n)
	return n == 1, err
}

// A three-node cluster on real PostgreSQL and real embedded NATS, with the
// failover loops in this process: the primary's node crashes (agent gone,
// postmaster SIGKILLed); its synchronous standby promotes, names the third
// node its own synchronous standby and acknowledges writes; every write
// acknowledged before the crash is there.
func TestLoopFailsOverOnRealPostgres(t *testing.T) {
	names := []string{"n1", "n2", "n3"}
	instances := pgtest.Cluster(t, names...)
	srv := meshtest.StartServer(t)
	nc := meshtest.Connect(t, srv)
	st, err := store.NewNATS(nc, store.NATSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kv, err := failover.EnsureBucket(ctx, st, "test", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := failover.Bootstrap(ctx, kv, "n1", "n2"); err != nil {
		t.Fatal(err)
	}
	peers := map[string]*pg.Instance{}
	for i, n := range names {
		peers[n] = instances[i]
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	members := map[string]*member{}
	start := func(name string, in *pg.Instance) {
		l, err := failover.NewLoop(failover.LoopConfig{Cluster: "test", Node: name, Timings: failover.DefaultTimings(),
			Strategy: failover.AbsoluteConsistency, PG: in, Peers: peers}, kv, log.With("node", name))
		if err != nil {
			t.Fatal(err)
		}
		mctx, mcancel := context.WithCancel(ctx)
		m := &member{name: name, pg: in, loop: l, cancel: mcancel, done: make(chan error, 1)}
		go func() { m.done <- l.Run(mctx) }()
		members[name] = m
	}
	stop := func(m *member) {
		m.cancel()
		if err := <-m.done; err != nil {
			t.Errorf("%s: %v", m.name, err)
		}
	}
	for i, n := range names {
		start(n, instances[i])
	}
	t.Cleanup(func() {
		for _, m := range members {
			m.cancel()
		}
		for _, m := range members {
			<-m.done
		}
	})

	p := instances[0]
	retry.Until(t, 30*time.Second, func() error {
		if s := members["n1"].loop.Node().Status; s != failover.StatusPrimary {
			return fmt.Errorf("n1 is %s", s)
		}
		if sync, err := p.SyncStandby(ctx); err != nil || sync != "n2" {
			return fmt.Errorf("n1 waits for %q (%v)", sync, err)
		}
		return nil
	})
	c, err := pgx.Connect(ctx, p.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE t (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	acked := 0
	for id := 1; id <= 20; id++ {
		if err := insert(ctx, p, id); err != nil {
			t.Fatal(err)
		}
		acked = id
	}

	// The primary's node crashes.
	crash := time.Now()
	stop(members["n1"])
	if err := p.Fence(ctx, 2); err != nil {
		t.Fatal(err)
	}
	var newPrimary *pg.Instance
	probe := 1000
	retry.Until(t, 60*time.Second, func() error {
		for _, n := range []string{"n2", "n3"} {
			if members[n].loop.Node().Status == failover.StatusPrimary {
				newPrimary = members[n].pg
			}
		}
		if newPrimary == nil {
			return errors.New("no new primary yet")
		}
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		defer wcancel()
		probe++ // a fresh row per attempt: a timed-out attempt may still commit
		return insert(wctx, newPrimary, probe)
	})
	t.Logf("fault to first acknowledged write on the new primary: %s", time.Since(crash).Round(time.Millisecond))
	if newPrimary != instances[1] {
		t.Fatalf("the promoted node is not the synchronous standby n2")
	}
	for id := 1; id <= acked; id++ {
		if ok, err := has(ctx, newPrimary, id); err != nil || !ok {
			t.Fatalf("acknowledged row %d lost (%v)", id, err)
		}
	}

	// The old primary's node comes back: its agent finds cluster-state
	// naming n2 and rejoins it as a replica (rewinding the crashed data
	// directory); a row written on n2 afterwards reaches it.
	start("n1", p)
	retry.Until(t, 90*time.Second, func() error {
		if s := members["n1"].loop.Node().Status; s != failover.StatusReplica {
			return fmt.Errorf("n1 is %s", s)
		}
		if role, err := p.Role(ctx); err != nil || role != pg.RoleReplica {
			return fmt.Errorf("n1 PostgreSQL is %s (%v)", role, err)
		}
		return nil
	})
	if err := insert(ctx, newPrimary, 5000); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 30*time.Second, func() error {
		if ok, err := has(ctx, p, 5000); err != nil || !ok {
			return fmt.Errorf("row 5000 not on the rejoined n1 yet (%v)", err)
		}
		return nil
	})
}
