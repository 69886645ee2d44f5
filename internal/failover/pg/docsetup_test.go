package pg_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/harmony-fleet/harmony/internal/failover/pg"
	"github.com/harmony-fleet/harmony/internal/testutil/pgtest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// These tests build the cluster as docs/failover.md says (initdb, then
// pg_basebackup -R; no slots, no wal_keep_size) and check what the agent
// does with it.

func query[T any](t *testing.T, in *pg.Instance, sql string, args ...any) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, in.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var v T
	if err := c.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func mustExec(t *testing.T, in *pg.Instance, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := exec(t, in, ctx, sql); err != nil {
		t.Fatalf("%s on %s: %v", sql, in.Name, err)
	}
}

func postmasterPID(t *testing.T, in *pg.Instance) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(in.DataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// killPostmaster SIGKILLs the postmaster only, as a crash of that one
// process would.
func killPostmaster(t *testing.T, in *pg.Instance) {
	t.Helper()
	if err := syscall.Kill(postmasterPID(t, in), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 10*time.Second, func() error {
		if running, _ := in.Running(); running {
			return errors.New("postmaster still running")
		}
		return nil
	})
}

// waitStandbys waits until primary's pg_stat_replication lists exactly
// names (application_name), all streaming.
func waitStandbys(t *testing.T, primary *pg.Instance, names ...string) {
	t.Helper()
	retry.Until(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := primary.Standbys(ctx)
		if err != nil {
			return err
		}
		if len(s) != len(names) {
			return fmt.Errorf("standbys %+v, want %v", s, names)
		}
		for k, n := range names {
			if s[k].Name != n || s[k].State != "streaming" {
				return fmt.Errorf("standbys %+v, want %v streaming", s, names)
			}
		}
		return nil
	})
}

// A replica made with pg_basebackup -R streams as "walreceiver" without a
// slot. Following its primary renames it (node name, managed slot) by a
// reload, without a restart; following again changes nothing.
func TestDocumentedReplicaIsRenamed(t *testing.T) {
	nodes := pgtest.DocumentedCluster(t, "n1", "n2")
	p, r := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	waitStandbys(t, p, "walreceiver")
	pid := postmasterPID(t, r)

	how, err := r.Follow(ctx, p)
	if err != nil || how != "renamed" {
		t.Fatalf("follow: %q %v, want renamed", how, err)
	}
	waitStandbys(t, p, "n2")
	if got := postmasterPID(t, r); got != pid {
		t.Fatalf("n2 restarted (postmaster %d, was %d)", got, pid)
	}
	if active := query[bool](t, p, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", pg.SlotName("n2")); !active {
		t.Fatal("n2 does not stream through its slot")
	}
	if o, err := r.Observe(ctx); err != nil || !o.Replica || !o.Streaming {
		t.Fatalf("observe n2: %+v %v", o, err)
	}
	if how, err := r.Follow(ctx, p); err != nil || how != "already following" {
		t.Fatalf("follow again: %q %v", how, err)
	}
	if got := postmasterPID(t, r); got != pid {
		t.Fatalf("n2 restarted (postmaster %d, was %d)", got, pid)
	}
}

// Follow touches nothing when the primary to follow is still in recovery
// (not promoted yet) or does not answer: the local server keeps running as
// it was.
func TestFollowRefusesSourceNotPrimary(t *testing.T) {
	nodes := pgtest.DocumentedCluster(t, "n1", "n2")
	p, r := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pid := postmasterPID(t, p)

	how, err := p.Follow(ctx, r)
	if !errors.Is(err, pg.ErrSourceNotPrimary) {
		t.Fatalf("following a replica: %q %v, want ErrSourceNotPrimary", how, err)
	}
	gone := &pg.Instance{Name: "gone", SocketDir: t.TempDir(), Port: 1, Superuser: "postgres"}
	if how, err := p.Follow(ctx, gone); !errors.Is(err, pg.ErrSourceUnreachable) {
		t.Fatalf("following nobody: %q %v, want ErrSourceUnreachable", how, err)
	}
	if role, err := p.Role(ctx); err != nil || role != pg.RolePrimary {
		t.Fatalf("n1 is %s (%v) after refused follows", role, err)
	}
	if got := postmasterPID(t, p); got != pid {
		t.Fatalf("n1 restarted (postmaster %d, was %d)", got, pid)
	}
	if _, err := os.Stat(filepath.Join(p.DataDir, "standby.signal")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("n1's data directory was touched: standby.signal %v", err)
	}
	mustExec(t, p, "CREATE TABLE still_writable (id int)")
}

// beats stands for the loop calling RetainRewindWAL every few heartbeats.
func beats(t *testing.T, nodes ...*pg.Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range nodes {
		if err := n.RetainRewindWAL(ctx); err != nil {
			t.Fatalf("retain on %s: %v", n.Name, err)
		}
	}
}

// checkpoint on the primary and a restartpoint on the replica, as time
// passing would, each followed by a beat.
func checkpoint(t *testing.T, p, r *pg.Instance, retain bool) {
	t.Helper()
	mustExec(t, p, "CHECKPOINT")
	waitReplayed(t, p, r)
	mustExec(t, r, "CHECKPOINT")
	if retain {
		beats(t, p, r)
	}
}

// waitReplayed waits until r has replayed everything p has written.
func waitReplayed(t *testing.T, p, r *pg.Instance) {
	t.Helper()
	lsn := query[string](t, p, "SELECT pg_current_wal_lsn()::text")
	retry.Until(t, 2*time.Minute, func() error {
		if ok := query[bool](t, r, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn); !ok {
			return fmt.Errorf("%s has not replayed %s yet", r.Name, lsn)
		}
		return nil
	})
}

// write inserts rows rows of about 200 bytes (about 60 MB of WAL per 200k).
func write(t *testing.T, in *pg.Instance, rows int) {
	t.Helper()
	mustExec(t, in, fmt.Sprintf("INSERT INTO t (pad) SELECT repeat('x', 200) FROM generate_series(1, %d)", rows))
}

// rejoined checks old streams from primary under its name and has every row.
func rejoined(t *testing.T, old, primary *pg.Instance) {
	t.Helper()
	waitStandbys(t, primary, old.Name)
	mustExec(t, primary, "INSERT INTO t (pad) VALUES ('after')")
	want := count(t, primary)
	retry.Until(t, time.Minute, func() error {
		if n := count(t, old); n != want {
			return fmt.Errorf("%s has %d rows, want %d", old.Name, n, want)
		}
		return nil
	})
}

// The old primary rejoins by pg_rewind in the documented setup, with the
// agent's slots: after a SIGKILL of its postmaster (crash recovery's
// checkpoint would remove the WAL pg_rewind reads), with little or with
// several 16 MB segments of WAL written since the last checkpoint; and
// after a fast-shutdown fence that follows a divergence. Without the
// retention slot the same crash leaves a base backup as the only way back,
// which is what the documented setup did before.
func TestRejoinByRewind(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rows    int  // written between the last checkpoint and the fault
		fast    bool // diverge, then fence with a fast shutdown (else SIGKILL)
		retain  bool // the agent's retention slot
		wantHow string
	}{
		{"kill", 2000, false, true, "rewind"},
		{"kill-after-segments", 250000, false, true, "rewind"},
		{"fast-fence-after-divergence", 250000, true, true, "rewind"},
		{"kill-after-segments-without-retention", 250000, false, false, "basebackup (pg_rewind: error: could not find previous WAL record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := pgtest.DocumentedCluster(t, "n1", "n2")
			p, r := nodes[0], nodes[1]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if tc.retain {
				// The agent: the replica streams under its name through its slot.
				if how, err := r.Follow(ctx, p); err != nil || how != "renamed" {
					t.Fatalf("n2 follow: %q %v", how, err)
				}
			}
			mustExec(t, p, "CREATE TABLE t (id bigserial PRIMARY KEY, pad text)")
			write(t, p, 1000)
			checkpoint(t, p, r, tc.retain)
			write(t, p, 1000)
			checkpoint(t, p, r, tc.retain) // the slots now trail by one checkpoint
			write(t, p, tc.rows)
			waitReplayed(t, p, r)

			if tc.fast {
				// The replica is promoted while the primary still runs (cut
				// off, frozen): the primary writes past the fork, then is
				// fenced cleanly.
				if err := r.Promote(ctx); err != nil {
					t.Fatal(err)
				}
				write(t, p, tc.rows)
				if err := p.Fence(ctx, 0); err != nil {
					t.Fatal(err)
				}
			} else {
				killPostmaster(t, p) // its children are left to notice
				if err := r.Promote(ctx); err != nil {
					t.Fatal(err)
				}
			}
			write(t, r, 1000)
			if tc.retain {
				beats(t, r)
			}
			how, err := p.Follow(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("n1 rejoined by %s", how)
			if !strings.HasPrefix(how, tc.wantHow) {
				t.Fatalf("n1 rejoined by %q, want %q", how, tc.wantHow)
			}
			rejoined(t, p, r)
		})
	}
}

// RetainRewindWAL bounds slot retention, keeps its slot one checkpoint
// behind the latest, drops a replica's leftover member slots, and creates
// again a slot PostgreSQL invalidated for exceeding the bound.
func TestRetainRewindWAL(t *testing.T) {
	nodes := pgtest.DocumentedCluster(t, "n1", "n2")
	p, r := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	restart := func(in *pg.Instance) string {
		return query[string](t, in, "SELECT COALESCE(restart_lsn::text, '') FROM pg_replication_slots WHERE slot_name = $1", pg.RewindSlot)
	}
	redo := func(in *pg.Instance) string {
		return query[string](t, in, "SELECT redo_lsn::text FROM pg_control_checkpoint()")
	}
	beats(t, p)
	if got := query[string](t, p, "SHOW max_slot_wal_keep_size"); got != "1GB" {
		t.Fatalf("max_slot_wal_keep_size %s, want the default bound 1GB", got)
	}
	first := restart(p)
	mustExec(t, p, "CREATE TABLE t (id bigserial PRIMARY KEY, pad text)")
	mustExec(t, p, "CHECKPOINT")
	before := redo(p)
	beats(t, p)
	if got := restart(p); got != first {
		t.Fatalf("advanced to %s after one checkpoint, want it kept at %s", got, first)
	}
	write(t, p, 1000)
	mustExec(t, p, "CHECKPOINT")
	beats(t, p)
	if got := restart(p); got != before {
		t.Fatalf("retention slot at %s, want the redo point of the checkpoint before the latest, %s", got, before)
	}

	// A replica drops member slots it kept from being a primary.
	mustExec(t, r, fmt.Sprintf("SELECT pg_create_physical_replication_slot('%s', true)", pg.SlotName("n3")))
	beats(t, r)
	if n := query[int](t, r, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", pg.SlotName("n3")); n != 0 {
		t.Fatal("the replica kept a member slot")
	}
	if n := query[int](t, r, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", pg.RewindSlot); n != 1 {
		t.Fatal("the replica has no retention slot")
	}

	// Past the bound, PostgreSQL invalidates the slot; it is created again.
	mustExec(t, p, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
	mustExec(t, p, "SELECT pg_reload_conf()")
	mustExec(t, p, "CHECKPOINT")
	beats(t, p)
	write(t, p, 200000)
	mustExec(t, p, "CHECKPOINT")
	if st := query[string](t, p, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", pg.RewindSlot); st != "lost" {
		t.Fatalf("retention slot %s past the bound, want lost", st)
	}
	if err := p.RetainRewindWAL(ctx); err != nil {
		t.Fatal(err)
	}
	if st := query[string](t, p, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", pg.RewindSlot); st == "lost" {
		t.Fatal("the invalidated slot was kept")
	}
}
