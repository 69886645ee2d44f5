package pg_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/harmony-fleet/harmony/internal/failover/pg"
	"github.com/harmony-fleet/harmony/internal/testutil/pgtest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

func exec(t *testing.T, in *pg.Instance, ctx context.Context, sql string) error {
	t.Helper()
	c, err := pgx.Connect(ctx, in.ConnString("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql)
	return err
}

func count(t *testing.T, in *pg.Instance) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, in.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The whole failover path on real PostgreSQL 15: streaming, synchronous
// commit that blocks without its standby, fencing, promotion, and the old
// primary rejoining with pg_rewind.
func TestFailoverPath(t *testing.T) {
	nodes := pgtest.Cluster(t, "n1", "n2")
	p, r := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	if role, err := p.Role(ctx); err != nil || role != pg.RolePrimary {
		t.Fatalf("n1 role %s %v", role, err)
	}
	if role, err := r.Role(ctx); err != nil || role != pg.RoleReplica {
		t.Fatalf("n2 role %s %v", role, err)
	}
	retry.Until(t, 30*time.Second, func() error {
		s, err := p.Standbys(ctx)
		if err != nil || len(s) != 1 || s[0].Name != "n2" || s[0].State != "streaming" {
			return fmt.Errorf("standbys %+v %v", s, err)
		}
		return nil
	})

	// Synchronous replication to n2.
	if err := p.SetSyncStandby(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 30*time.Second, func() error {
		s, _ := p.Standbys(ctx)
		if len(s) != 1 || s[0].SyncState != "sync" {
			return fmt.Errorf("standbys %+v", s)
		}
		return nil
	})
	if name, err := p.SyncStandby(ctx); err != nil || name != "n2" {
		t.Fatalf("sync standby %q %v", name, err)
	}
	if err := exec(t, p, ctx, "CREATE TABLE t (id int primary key)"); err != nil {
		t.Fatal(err)
	}
	if err := exec(t, p, ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}

	// Without its synchronous standby, the primary acknowledges nothing.
	if err := r.Fence(ctx, 0); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 1500*time.Millisecond)
	err := exec(t, p, short, "INSERT INTO t VALUES (2)")
	cancelShort()
	if err == nil {
		t.Fatal("a commit was acknowledged without the synchronous standby")
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}

	// Fence the primary: proven down.
	if err := p.Fence(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if running, _ := p.Running(); running {
		t.Fatal("fenced primary still running")
	}
	if err := p.Healthy(ctx); err == nil {
		t.Fatal("a fenced primary answers")
	}

	// Promote the replica; it has every acknowledged row.
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if role, err := r.Role(ctx); err != nil || role != pg.RolePrimary {
		t.Fatalf("after promote: %s %v", role, err)
	}
	if err := r.SetSyncStandby(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if got := count(t, r); got < 1 {
		t.Fatalf("promoted replica has %d rows", got)
	}
	if err := exec(t, r, ctx, "INSERT INTO t VALUES (3)"); err != nil {
		t.Fatal(err)
	}

	// The old primary rejoins as a replica of the new one.
	how, err := p.Follow(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if how != "rewind" {
		t.Fatalf("rejoined by %s, want rewind", how)
	}
	if role, err := p.Role(ctx); err != nil || role != pg.RoleReplica {
		t.Fatalf("old primary role %s %v", role, err)
	}
	retry.Until(t, 30*time.Second, func() error {
		c, err := pgx.Connect(ctx, p.ConnString("postgres"))
		if err != nil {
			return err
		}
		defer c.Close(context.Background())
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = 3").Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return errors.New("row 3 not replicated yet")
		}
		return nil
	})
}

func TestFenceEscalates(t *testing.T) {
	nodes := pgtest.Cluster(t, "solo")
	p := nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Fence(ctx, 2); err != nil { // SIGKILL of the postmaster
		t.Fatal(err)
	}
	if running, _ := p.Running(); running {
		t.Fatal("still running after SIGKILL")
	}
}

// A member whose data directory is gone (a replaced disk) cannot be
// rewound: following falls back to a fresh base backup, says so, and the
// node streams again with everything.
func TestFollowFallsBackToBaseBackup(t *testing.T) {
	nodes := pgtest.Cluster(t, "n1", "n2")
	p, r := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := exec(t, p, ctx, "CREATE TABLE t (id int primary key); INSERT INTO t SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	if err := r.Fence(ctx, 1); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(r.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(r.DataDir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	how, err := r.Follow(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(how, "basebackup (") {
		t.Fatalf("followed by %q, want basebackup", how)
	}
	if role, err := r.Role(ctx); err != nil || role != pg.RoleReplica {
		t.Fatalf("n2 is %s (%v) after the base backup", role, err)
	}
	if err := exec(t, p, ctx, "INSERT INTO t VALUES (101)"); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 30*time.Second, func() error {
		if n := count(t, r); n != 101 {
			return fmt.Errorf("n2 has %d rows, want 101", n)
		}
		return nil
	})
}
