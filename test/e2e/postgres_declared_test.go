package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/harmony-fleet/harmony/internal/testutil/pgtest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// declaredCluster is a PostgreSQL cluster made by one `harmony apply` of a
// PostgresCluster resource, on three enrolled agents of one server run
// with its defaults (TLS, identities), as docs/postgres.md says. The three
// members share this machine, so each has its own port, directories and
// endpoints (the spec's members overrides, which docs/postgres.md shows
// for that case).
type declaredCluster struct {
	t       *testing.T
	cli     func(args ...string) (string, error)
	base    string
	members []declaredMember
	applied time.Time
}

type declaredMember struct {
	id         string
	port       int
	http, peer string
	dataDir    string
	logDir     string
}

func newDeclaredCluster(t *testing.T, ids ...string) *declaredCluster {
	t.Helper()
	pgtest.Setup(t)
	dir := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startHarmony(t, "server", "--data-dir", filepath.Join(dir, "server"), "--nats", natsAddr, "--http", httpAddr,
		"--tls", "auto", "--nats-auth", "identities", "--heartbeat-staleness", "3s")
	ca := filepath.Join(dir, "server", "tls", "ca.pem")
	base := "https://" + httpAddr
	waitTLSReady(t, base, ca)
	c := &declaredCluster{t: t, cli: cliAt(base, ca)}

	// PostgreSQL's files live where the postgres user can reach them, as
	// /var/lib/postgresql is.
	var err error
	if c.base, err = os.MkdirTemp("", "harmony-declared-"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(c.base, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(c.base) })
	for _, id := range ids {
		m := declaredMember{id: id, port: freePort(t), http: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			peer: fmt.Sprintf("127.0.0.1:%d", freePort(t)), dataDir: filepath.Join(c.base, id, "data"), logDir: filepath.Join(c.base, id, "log")}
		c.members = append(c.members, m)
		token := strings.TrimSpace(c.must(c.cli("token", "create", "--device", id)))
		seed := filepath.Join(dir, id, "identity.nk")
		c.must(c.cli("enroll", "--id", id, "--nkey", seed, "--token", token))
		startHarmony(t, "agent", "--http", "127.0.0.1:0", "--id", id, "--nats-url", "nats://"+natsAddr, "--nats-ca", ca,
			"--nats-nkey", seed, "--state-dir", filepath.Join(dir, id, "state"), "--label", "role=db",
			"--heartbeat-interval", "300ms", "--resync-interval", "2s", "--retry-initial", "200ms", "--retry-max", "2s")
	}
	t.Cleanup(func() {
		// The agents stop first (their cleanups run after this one is
		// registered, so before it); then every PostgreSQL goes.
		for _, m := range c.members {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			_ = osexec.CommandContext(ctx, "runuser", "-u", "postgres", "--", pgtest.BinDir+"/pg_ctl", "stop", "-m", "immediate", "-D", m.dataDir).Run()
			cancel()
		}
	})
	return c
}

func (c *declaredCluster) must(out string, err error) string {
	c.t.Helper()
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// manifest is the deployment: the cluster, its parameters, one role and
// one database, the passwords from secret pg.
func (c *declaredCluster) manifest(params string) string {
	var members strings.Builder
	for _, m := range c.members {
		fmt.Fprintf(&members, "        %s: {dataDir: %s, logDir: %s, port: %d, socketDir: %s, host: 127.0.0.1, http: %q, peer: %q}\n",
			m.id, m.dataDir, m.logDir, m.port, filepath.Join(c.base, m.id, "sock"), m.http, m.peer)
	}
	return writeManifest(c.t, "orders-db", "role: db", fmt.Sprintf(`
  - id: postgres
    kind: PostgresCluster
    spec:
      cluster: orders
      version: 15
      superuserPassword: {secret: pg, key: superuser}
      profile: fast
      parameters: {%s}
      roles:
      - {name: app, password: {secret: pg, key: app}}
      databases:
      - {name: orders, owner: app}
      members:
%s`, params, members.String()))
}

// primary is the member whose /primary answers 200.
func (c *declaredCluster) primary() (declaredMember, error) {
	var found []declaredMember
	for _, m := range c.members {
		resp, err := http.Get("http://" + m.http + "/primary")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			found = append(found, m)
		}
	}
	if len(found) != 1 {
		return declaredMember{}, fmt.Errorf("%d members answer /primary", len(found))
	}
	return found[0], nil
}

// TestDeclaredPostgresCluster: one apply of a three-member cluster gives
// one primary and two streaming replicas, a synchronous standby named,
// the declared role and database; a writer finds the primary through
// /primary and writes as the declared role, and its row is on the
// replicas.
func TestDeclaredPostgresCluster(t *testing.T) {
	c := newDeclaredCluster(t, "db-1", "db-2", "db-3")
	superuser, app := "su-"+rand.Text(), "app-"+rand.Text()
	c.must(c.cli("secret", "create", "pg", "--from-literal", "superuser="+superuser, "--from-literal", "app="+app))
	c.applied = time.Now()
	c.must(c.cli("apply", "-f", c.manifest(`max_connections: "50"`)))

	// The writer: find the primary, connect as app, write.
	var firstWrite time.Duration
	var primary declaredMember
	retry.Until(t, 3*time.Minute, func() error {
		p, err := c.primary()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=app password=%s dbname=orders sslmode=disable", p.port, app))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY); INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING"); err != nil {
			return err
		}
		firstWrite, primary = time.Since(c.applied), p
		return nil
	})
	t.Logf("apply to first acknowledged write: %s (primary %s)", firstWrite.Round(time.Millisecond), primary.id)

	// Every member Ready; one primary, two replicas, a sync standby.
	var roles []string
	retry.Until(t, 2*time.Minute, func() error {
		out, err := c.cli("describe", "deployment", "orders-db", "-o", "json")
		if err != nil {
			return err
		}
		var d struct {
			Status struct{ Matched, Succeeded int }
		}
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			return err
		}
		if d.Status.Matched != 3 || d.Status.Succeeded != 3 {
			return fmt.Errorf("%d of %d members Ready", d.Status.Succeeded, d.Status.Matched)
		}
		roles = roles[:0]
		sync := ""
		for _, m := range c.members {
			out, err := c.cli("describe", "device", m.id, "-o", "json")
			if err != nil {
				return err
			}
			var dev struct {
				States []struct {
					Resources []struct {
						Details map[string]string
					}
				}
			}
			if err := json.Unmarshal([]byte(out), &dev); err != nil {
				return err
			}
			if len(dev.States) != 1 || len(dev.States[0].Resources) != 1 {
				return fmt.Errorf("%s: unexpected status %s", m.id, out)
			}
			det := dev.States[0].Resources[0].Details
			roles = append(roles, det["role"])
			if det["syncStandby"] != "" {
				sync = det["syncStandby"]
			}
		}
		if strings.Join(roles, ",") == "" || strings.Count(strings.Join(roles, ","), "Primary") != 1 || strings.Count(strings.Join(roles, ","), "Replica") != 2 {
			return fmt.Errorf("roles %v", roles)
		}
		if sync == "" || sync == primary.id {
			return fmt.Errorf("synchronous standby %q", sync)
		}
		return nil
	})

	// The row is on every replica (read as the superuser over TCP).
	for _, m := range c.members {
		if m.id == primary.id {
			continue
		}
		retry.Until(t, 30*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=orders sslmode=disable", m.port, superuser))
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("%s has %d rows", m.id, n)
			}
			return nil
		})
	}
	// PostgreSQL's own log is outside the data directory.
	for _, m := range c.members {
		if fi, err := os.Stat(filepath.Join(m.logDir, "postgresql.log")); err != nil || fi.Size() == 0 {
			t.Errorf("%s: log %v", m.id, err)
		}
	}
}
