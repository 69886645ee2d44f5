package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/failover/pg"
	"github.com/harmony-fleet/harmony/internal/testutil/netproxy"
	"github.com/harmony-fleet/harmony/internal/testutil/pgtest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// newDocumentedHACluster is the setup of docs/failover.md followed
// literally, adapted only in ports and paths: PostgreSQL from initdb and
// pg_basebackup -R (pgtest.DocumentedCluster), and one agent per node with
// the configuration the docs show.
func newDocumentedHACluster(t *testing.T, strategy failover.Strategy, names ...string) *haCluster {
	t.Helper()
	c, natsAddr := startHAServer(t, "default", strategy)
	instances := pgtest.DocumentedCluster(t, names...)
	for i, name := range names {
		n := &haNode{c: c, name: name, pg: instances[i],
			http: fmt.Sprintf("127.0.0.1:%d", freePort(t)), peer: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			log: filepath.Join(c.dir, name+".log")}
		n.proxy = netproxy.Start(t, natsAddr)
		n.urls = []string{"nats://" + n.proxy.Addr()}
		n.writeDocumentedConfig()
		c.nodes = append(c.nodes, n)
	}
	c.startAll()
	return c.openBucket()
}

// writeDocumentedConfig writes the agent configuration of docs/failover.md
// ("Setting it up"). Adapted: the NATS URL (the test's proxy; the test
// server runs without TLS, so no nats_ca), state_dir and the agent's own
// http (one machine runs every node), the failover http and peer ports, and the
// PostgreSQL paths, port and host (its socket directory).
func (n *haNode) writeDocumentedConfig() {
	p := n.pg
	cfg := fmt.Sprintf(`id: %s
nats_url: [%s]
state_dir: %s
http: 127.0.0.1:0
failover:
  cluster: %s
  node: %s
  strategy: %s
  profile: default
  max_lag_on_failover: 1048576
  http: %s
  peer: %s
  replicas: 1
  postgres:
    bin_dir: %s
    data_dir: %s
    port: %d
    socket_dir: %s
    host: %s
    os_user: postgres
    superuser: postgres
`, n.name, strings.Join(n.urls, ", "), filepath.Join(n.c.dir, n.name+"-state"), n.c.name, n.name, n.c.strategy, n.http, n.peer,
		p.BinDir, p.DataDir, p.Port, p.SocketDir, p.SocketDir)
	n.config = filepath.Join(n.c.dir, n.name+".yaml")
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		n.c.t.Fatal(err)
	}
}

// killPostmaster SIGKILLs the node's postmaster only: its agent lives and
// its other server processes are left to notice.
func (n *haNode) killPostmaster() {
	n.c.t.Helper()
	pids := n.pgPIDs()
	if len(pids) == 0 {
		n.c.t.Fatalf("%s: no postmaster to kill", n.name)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		n.c.t.Fatal(err)
	}
	retry.Until(n.c.t, 10*time.Second, func() error {
		if running, _ := n.pg.Running(); running {
			return errors.New("postmaster still running")
		}
		return nil
	})
}

// followedBy lists how the node's agent rejoined, in order: the "by" of its
// "following the primary" log lines.
func (n *haNode) followedBy() []string {
	b, err := os.ReadFile(n.log)
	if err != nil {
		n.c.t.Fatal(err)
	}
	var out []string
	re := regexp.MustCompile(`by=("(?:[^"\\]|\\.)*"|\S+)`)
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "following the primary") {
			continue
		}
		if m := re.FindStringSubmatch(line); m != nil {
			v := m[1]
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
			out = append(out, v)
		}
	}
	return out
}

// streamsAs: primary's pg_stat_replication has standby streaming, and
// nothing that is not a member.
func streamsAs(primary *pg.Instance, standby string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sb, err := primary.Standbys(ctx)
	if err != nil {
		return err
	}
	if len(sb) != 1 || sb[0].Name != standby || sb[0].State != "streaming" || sb[0].SyncState != "sync" {
		return fmt.Errorf("%s's standbys: %+v, want %s streaming, sync", primary.Name, sb, standby)
	}
	return nil
}

func insertRow(t *testing.T, in *pg.Instance, id int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, in.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS kills (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO kills VALUES ($1) ON CONFLICT DO NOTHING", id); err != nil {
		t.Fatal(err)
	}
}

func countRows(t *testing.T, in *pg.Instance) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, in.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM kills").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The documented two-node setup, AbsoluteConsistency: the replica made by
// pg_basebackup -R is recorded as sync under its node name; SIGKILL of the
// primary's postmaster (its agent lives) promotes the standby, and the old
// node rejoins by pg_rewind, streams again and is named sync. Twenty kills,
// alternating nodes; every committed row survives every failover.
func TestHADocumentedSetupKillPostmaster(t *testing.T) {
	const kills = 20
	c := newDocumentedHACluster(t, failover.AbsoluteConsistency, "n1", "n2")
	cs := c.waitPrimary("n1", true, 2*time.Minute)
	if cs.Sync != "n2" {
		t.Fatalf("cluster-state names %q as sync, want n2", cs.Sync)
	}
	retry.Until(t, time.Minute, func() error { return streamsAs(c.node("n1").pg, "n2") })

	deadline := time.Now().Add(15 * time.Minute)
	var rewinds, backups, reclaimed int
	for k := 1; k <= kills; k++ {
		if time.Now().After(deadline) {
			t.Fatalf("only %d kills of %d within the test's time", k-1, kills)
		}
		old := c.node(cs.Primary)
		next := c.node(map[string]string{"n1": "n2", "n2": "n1"}[old.name])
		insertRow(t, old.pg, k) // acknowledged by the synchronous standby
		before := len(old.followedBy())
		start := time.Now()

		killed := old.pgPIDs()
		old.killPostmaster()
		// Two outcomes are right: the standby is promoted, or (its agent
		// being alive) the old primary restarts PostgreSQL and claims the
		// role back by compare-and-set before the standby's timeout. Only
		// the first is a failover to rejoin from; the second is counted
		// and the kill made again.
		epoch := cs.Epoch
		outcome := ""
		retry.Until(t, time.Minute, func() error {
			now, err := c.state()
			switch {
			case err != nil:
				return err
			case now.Primary == next.name && next.endpoint("/primary") == http.StatusOK:
				outcome, cs = "promoted", now
			case now.Primary == old.name && now.Epoch == epoch && old.endpoint("/primary") == http.StatusOK &&
				len(killed) > 0 && len(old.pgPIDs()) > 0 && old.pgPIDs()[0] != killed[0]:
				outcome, cs = "reclaimed", now
			default:
				return fmt.Errorf("cluster-state names %q at epoch %d", now.Primary, now.Epoch)
			}
			return nil
		})
		if outcome == "reclaimed" {
			reclaimed++
			t.Logf("kill %d of %s: its agent restarted PostgreSQL and kept the role (no failover)", k, old.name)
			if got := countRows(t, old.pg); got != k {
				t.Fatalf("kill %d: %s has %d rows, want %d", k, old.name, got, k)
			}
			cs = c.waitPrimary(old.name, true, 2*time.Minute)
			k-- // the same row again: inserting it is a no-op
			continue
		}
		promoted := time.Since(start)
		if got := countRows(t, next.pg); got != k {
			t.Fatalf("kill %d: %s has %d rows, want %d", k, next.name, got, k)
		}
		waitEndpoint(t, old, "/replica", 2*time.Minute)
		cs = c.waitPrimary(next.name, true, 2*time.Minute)
		if cs.Sync != old.name {
			t.Fatalf("kill %d: cluster-state names %q as sync, want %s", k, cs.Sync, old.name)
		}
		retry.Until(t, time.Minute, func() error { return streamsAs(next.pg, old.name) })
		hows := old.followedBy()[before:]
		if len(hows) == 0 {
			t.Fatalf("kill %d: %s did not log how it rejoined", k, old.name)
		}
		how := hows[len(hows)-1]
		if how == "rewind" {
			rewinds++
		} else {
			backups++
		}
		t.Logf("kill %d of %s: promoted %s after %s, rejoined by %q after %s", k, old.name, next.name,
			promoted.Round(time.Millisecond), how, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("%d failovers: %d rejoins by pg_rewind, %d by base backup; %d kills the old primary's agent recovered from without a failover",
		kills, rewinds, backups, reclaimed)
	if backups > 0 {
		t.Errorf("%d of %d rejoins were base backups, want every one by pg_rewind", backups, kills)
	}
}
