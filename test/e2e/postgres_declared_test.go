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
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	t         *testing.T
	cli       func(args ...string) (string, error)
	base      string
	members   []declaredMember
	applied   time.Time
	server    *proc
	agents    map[string]*proc
	superuser string // the superuser's password, once the secret is made
	natsAddr  string
	ca, dir   string
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
	server := startHarmony(t, "server", "--data-dir", filepath.Join(dir, "server"), "--nats", natsAddr, "--http", httpAddr,
		"--tls", "auto", "--nats-auth", "identities", "--heartbeat-staleness", "3s")
	ca := filepath.Join(dir, "server", "tls", "ca.pem")
	base := "https://" + httpAddr
	waitTLSReady(t, base, ca)
	c := &declaredCluster{t: t, cli: cliAt(base, ca), server: server, agents: map[string]*proc{}, natsAddr: natsAddr, ca: ca, dir: dir}

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
	t.Cleanup(func() {
		// Registered before any agent starts, so it runs after every
		// agent has stopped (cleanups run last first): then nothing starts
		// PostgreSQL again, and every PostgreSQL goes.
		for _, m := range c.members {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			_ = osexec.CommandContext(ctx, "runuser", "-u", "postgres", "--", pgtest.BinDir+"/pg_ctl", "stop", "-m", "immediate", "-D", m.dataDir).Run()
			// The guard outlives its agent by design (a restarted agent
			// attaches to it again); the test's agents are gone for good.
			_ = osexec.CommandContext(ctx, "pkill", "-KILL", "-f", "guard --socket "+filepath.Join(c.dir, m.id, "state")).Run()
			cancel()
		}
	})
	for _, id := range ids {
		c.addMember(id, "role=db")
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		// What the members did, for whoever reads the failure.
		for id, a := range c.agents {
			if a.cmd.Process.Signal(syscall.SIGTERM) == nil {
				select {
				case <-a.done:
				case <-time.After(30 * time.Second):
				}
			}
			_ = os.WriteFile(filepath.Join(os.TempDir(), "declared-"+id+".log"), a.stderr.Bytes(), 0o600)
			for _, line := range strings.Split(a.stderr.String(), "\n") {
				if strings.Contains(line, "postgres member") || strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") || strings.Contains(line, "ence") || strings.Contains(line, "promot") || strings.Contains(line, "switchover") {
					t.Logf("%s: %s", id, line)
				}
			}
		}
	})
	return c
}

// addMember enrolls and starts the agent of device id with label, and
// gives it its own port and directories in the spec.
func (c *declaredCluster) addMember(id, label string) {
	t := c.t
	m := declaredMember{id: id, port: freePort(t), http: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		peer: fmt.Sprintf("127.0.0.1:%d", freePort(t)), dataDir: filepath.Join(c.base, id, "data"), logDir: filepath.Join(c.base, id, "log")}
	c.members = append(c.members, m)
	token := strings.TrimSpace(c.must(c.cli("token", "create", "--device", id)))
	seed := filepath.Join(c.dir, id, "identity.nk")
	c.must(c.cli("enroll", "--id", id, "--nkey", seed, "--token", token))
	c.agents[id] = startHarmony(t, "agent", "--http", "127.0.0.1:0", "--id", id, "--nats-url", "nats://"+c.natsAddr, "--nats-ca", c.ca,
		"--nats-nkey", seed, "--state-dir", filepath.Join(c.dir, id, "state"), "--label", label,
		"--heartbeat-interval", "300ms", "--resync-interval", "2s", "--retry-initial", "200ms", "--retry-max", "2s")
}

func (c *declaredCluster) member(id string) declaredMember {
	for _, m := range c.members {
		if m.id == id {
			return m
		}
	}
	c.t.Fatalf("no member %s", id)
	return declaredMember{}
}

// query runs a one-value query on member m as the superuser, over TCP
// with its password.
func (c *declaredCluster) query(m declaredMember, db, q string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=%s sslmode=disable", m.port, c.superuser, db))
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var v string
	err = conn.QueryRow(ctx, q).Scan(&v)
	return v, err
}

// ready waits until the deployment's n members are Ready, and returns
// each selected member's status details.
func (c *declaredCluster) ready(n int, ids ...string) map[string]map[string]string {
	c.t.Helper()
	var details map[string]map[string]string
	retry.Until(c.t, 3*time.Minute, func() error {
		out, err := c.cli("describe", "deployment", "orders-db", "-o", "json")
		if err != nil {
			return err
		}
		var d struct {
			Status struct {
				Matched, Succeeded int
				LastError          string
			}
		}
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			return err
		}
		if d.Status.Matched != n || d.Status.Succeeded != n {
			return fmt.Errorf("%d of %d members Ready, want %d (%s)", d.Status.Succeeded, d.Status.Matched, n, d.Status.LastError)
		}
		details = map[string]map[string]string{}
		for _, id := range ids {
			out, err := c.cli("describe", "device", id, "-o", "json")
			if err != nil {
				return err
			}
			var dev struct {
				States []struct {
					Deployment string
					Resources  []struct {
						Phase   string
						Details map[string]string
					}
				}
			}
			if err := json.Unmarshal([]byte(out), &dev); err != nil {
				return err
			}
			for _, st := range dev.States {
				if st.Deployment == "orders-db" && len(st.Resources) == 1 {
					details[id] = st.Resources[0].Details
				}
			}
			if details[id] == nil {
				return fmt.Errorf("%s: no status of orders-db", id)
			}
		}
		return nil
	})
	return details
}

// failover runs `harmony failover ARGS --cluster orders` as the docs
// say: with the server's admin identity, over TLS.
func (c *declaredCluster) failover(args ...string) (string, error) {
	args = append([]string{"failover"}, args...)
	args = append(args, "--cluster", "orders", "--nats-url", "nats://"+c.natsAddr, "--nats-ca", c.ca,
		"--nats-nkey", filepath.Join(c.dir, "server", "nats-admin.nk"))
	return c.cli(args...)
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

// roleWriter writes a row every 20 ms to whichever member answers /primary,
// as the declared role, and keeps the ids PostgreSQL acknowledged and the
// longest time without an acknowledged write.
type roleWriter struct {
	mu     sync.Mutex
	acked  []int
	maxGap time.Duration
	last   time.Time
	done   chan struct{}
	cancel context.CancelFunc
}

func (c *declaredCluster) startWriter(password string) *roleWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &roleWriter{done: make(chan struct{}), cancel: cancel, last: time.Now()}
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for id := 1; ctx.Err() == nil; id++ {
			if conn == nil {
				if p, err := c.primary(); err == nil {
					cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
					conn, _ = pgx.Connect(cctx, fmt.Sprintf("host=127.0.0.1 port=%d user=app password=%s dbname=orders sslmode=disable", p.port, password))
					ccancel()
				}
			}
			if conn != nil {
				wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
				_, err := conn.Exec(wctx, "INSERT INTO w VALUES ($1)", id)
				wcancel()
				if err == nil {
					w.mu.Lock()
					w.acked = append(w.acked, id)
					w.maxGap = max(w.maxGap, time.Since(w.last))
					w.last = time.Now()
					w.mu.Unlock()
				} else {
					conn.Close(context.Background())
					conn = nil
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *roleWriter) stop() ([]int, time.Duration) {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked, w.maxGap
}

// startTimes are the members' postmaster start times.
func (c *declaredCluster) startTimes() map[string]string {
	c.t.Helper()
	out := map[string]string{}
	// A member may be between a stop and a start (a rejoin): ask again.
	retry.Until(c.t, time.Minute, func() error {
		for _, m := range c.members {
			v, err := c.query(m, "postgres", "SELECT pg_postmaster_start_time()::text")
			if err != nil {
				return fmt.Errorf("%s: %v", m.id, err)
			}
			out[m.id] = v
		}
		return nil
	})
	return out
}

// everyMember waits until query answers want on every member.
func (c *declaredCluster) everyMember(q, want string) {
	c.t.Helper()
	retry.Until(c.t, 3*time.Minute, func() error {
		for _, m := range c.members {
			got, err := c.query(m, "postgres", q)
			if err != nil {
				return fmt.Errorf("%s: %v", m.id, err)
			}
			if got != want {
				return fmt.Errorf("%s: %s = %s, want %s", m.id, q, got, want)
			}
		}
		return nil
	})
}

// TestDeclaredPostgresCluster: one apply of a three-member cluster gives
// one primary and two streaming replicas, a synchronous standby named,
// the declared role and database; a writer finds the primary through
// /primary and writes as the declared role, and its row is on the
// replicas. A parameter PostgreSQL reloads changes no member's start
// time; one that needs a restart rolls through the cluster (replicas,
// then a switchover) with every acknowledged write kept; a bad value is
// refused at apply; no password shows in any log.
func TestDeclaredPostgresCluster(t *testing.T) {
	c := newDeclaredCluster(t, "db-1", "db-2", "db-3")
	app := "app-" + rand.Text()
	c.superuser = "su-" + rand.Text()
	c.must(c.cli("secret", "create", "pg", "--from-literal", "superuser="+c.superuser, "--from-literal", "app="+app))
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
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY); INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING; CREATE TABLE IF NOT EXISTS w (id int PRIMARY KEY)"); err != nil {
			return err
		}
		firstWrite, primary = time.Since(c.applied), p
		return nil
	})
	t.Logf("apply to first acknowledged write: %s (primary %s)", firstWrite.Round(time.Millisecond), primary.id)

	// Every member Ready: one primary, two replicas, a sync standby.
	var details map[string]map[string]string
	retry.Until(t, 2*time.Minute, func() error {
		details = c.ready(3, "db-1", "db-2", "db-3")
		var roles []string
		sync := ""
		for _, id := range []string{"db-1", "db-2", "db-3"} {
			roles = append(roles, details[id]["role"])
			if s := details[id]["syncStandby"]; s != "" {
				sync = s
			}
		}
		if got := strings.Join(roles, ","); strings.Count(got, "Primary") != 1 || strings.Count(got, "Replica") != 2 {
			return fmt.Errorf("roles %s", got)
		}
		if sync == "" || sync == primary.id {
			return fmt.Errorf("synchronous standby %q (primary %s)", sync, primary.id)
		}
		return nil
	})
	// The row is on every replica.
	for _, m := range c.members {
		retry.Until(t, 30*time.Second, func() error {
			n, err := c.query(m, "orders", "SELECT count(*)::text FROM t")
			if err != nil || n != "1" {
				return fmt.Errorf("%s: %s rows, %v", m.id, n, err)
			}
			return nil
		})
	}

	// A bad value is refused at apply, naming the field; nothing changes.
	if _, err := c.cli("apply", "-f", c.manifest(`max_connections: "lots"`)); err == nil ||
		!strings.Contains(err.Error(), "spec.resources[0].spec.parameters.max_connections") || !strings.Contains(err.Error(), "want a number") {
		t.Fatalf("a bad max_connections: %v", err)
	}
	if _, err := c.cli("apply", "-f", c.manifest(`max_conections: "60"`)); err == nil || !strings.Contains(err.Error(), "did you mean max_connections?") {
		t.Fatalf("a misspelt parameter: %v", err)
	}

	w := c.startWriter(app)
	// A reload: no member restarts.
	before := c.startTimes()
	c.must(c.cli("apply", "-f", c.manifest(`max_connections: "50", work_mem: "8MB"`)))
	c.everyMember("SHOW work_mem", "8MB")
	if after := c.startTimes(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a reload-only change restarted members: %v -> %v", before, after)
	}

	// A restart, rolled: every member restarts, the primary after a
	// switchover; no acknowledged write is lost.
	epochBefore := details[primary.id]["epoch"]
	c.must(c.cli("apply", "-f", c.manifest(`max_connections: "60", work_mem: "8MB"`)))
	c.everyMember("SHOW max_connections", "60")
	details = c.ready(3, "db-1", "db-2", "db-3")
	restarted := c.startTimes()
	for id, at := range before {
		if restarted[id] == at {
			t.Errorf("%s was not restarted for max_connections", id)
		}
	}
	for id, d := range details {
		if d["pendingRestart"] != "" {
			t.Errorf("%s still waits for a restart: %s", id, d["pendingRestart"])
		}
		if d["role"] == "Primary" && d["epoch"] == epochBefore {
			t.Errorf("the primary %s restarted without a switchover (epoch %s)", id, epochBefore)
		}
	}
	acked, gap := w.stop()
	if len(acked) < 10 {
		t.Fatalf("the writer got %d writes acknowledged", len(acked))
	}
	p, err := c.primary()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, id := range acked {
		ids = append(ids, strconv.Itoa(id))
	}
	got, err := c.query(p, "orders", "SELECT count(*)::text FROM w WHERE id IN ("+strings.Join(ids, ",")+")")
	if err != nil || got != strconv.Itoa(len(acked)) {
		t.Fatalf("%s of %d acknowledged writes on the primary after the rolling restart: %v", got, len(acked), err)
	}
	t.Logf("rolling restart for max_connections: %d writes acknowledged, all kept; longest time without an acknowledged write %s",
		len(acked), gap.Round(time.Millisecond))

	// Operations on members: each refused when unsafe, else carried out.
	var cur, syncStandby, other string
	retry.Until(t, 2*time.Minute, func() error {
		details = c.ready(3, "db-1", "db-2", "db-3")
		for id, d := range details {
			if d["role"] == "Primary" {
				cur, syncStandby = id, d["syncStandby"]
			}
		}
		if cur == "" || syncStandby == "" {
			return fmt.Errorf("primary %q, synchronous standby %q", cur, syncStandby)
		}
		return nil
	})
	for id := range details {
		if id != cur && id != syncStandby {
			other = id
		}
	}
	if out, err := c.failover("reload", other); err != nil || !strings.Contains(out, "reloaded") {
		t.Fatalf("failover reload %s: %s %v", other, out, err)
	}
	if _, err := c.failover("reinit", cur); err == nil || !strings.Contains(err.Error(), "is the primary: switch over first") {
		t.Fatalf("failover reinit of the primary: %v", err)
	}
	before = c.startTimes()
	if out, err := c.failover("restart", syncStandby); err != nil || !strings.Contains(out, "restarted") {
		t.Fatalf("failover restart %s (the synchronous standby, another replica streaming): %s %v", syncStandby, out, err)
	}
	if after := c.startTimes(); after[syncStandby] == before[syncStandby] || after[cur] != before[cur] {
		t.Fatalf("restart of %s: start times %v -> %v", syncStandby, before, after)
	}
	if out, err := c.failover("reinit", other); err != nil || !strings.Contains(out, "cloning it again") {
		t.Fatalf("failover reinit %s: %s %v", other, out, err)
	}
	c.ready(3, other)
	retry.Until(t, 2*time.Minute, func() error {
		n, err := c.query(c.member(other), "orders", "SELECT count(*)::text FROM t")
		if err != nil || n != "1" {
			return fmt.Errorf("%s after reinit: %s rows, %v", other, n, err)
		}
		return nil
	})

	// The superuser's password rotated: every member takes the new one
	// (the primary alters the role, each member its password file), with
	// no restart and no failover.
	details = c.ready(3, "db-1", "db-2", "db-3")
	epochNow := ""
	for _, d := range details {
		if d["role"] == "Primary" {
			epochNow = d["epoch"]
		}
	}
	before = c.startTimes()
	oldSuper := c.superuser
	c.superuser = "su-" + rand.Text()
	c.must(c.cli("secret", "create", "pg", "--replace", "--from-literal", "superuser="+c.superuser, "--from-literal", "app="+app))
	retry.Until(t, 2*time.Minute, func() error {
		for _, m := range c.members {
			if _, err := c.query(m, "postgres", "SELECT 1::text"); err != nil {
				return fmt.Errorf("%s with the new password: %v", m.id, err)
			}
		}
		return nil
	})
	for id, d := range c.ready(3, "db-1", "db-2", "db-3") {
		if d["role"] == "Primary" && d["epoch"] != epochNow {
			t.Errorf("rotating the superuser's password moved the primary to %s (epoch %s, was %s)", id, d["epoch"], epochNow)
		}
	}
	if after := c.startTimes(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("rotating the superuser's password restarted members: %v -> %v", before, after)
	}

	// PostgreSQL's own log is outside the data directory; no password is
	// in any log.
	var logs strings.Builder
	for _, m := range c.members {
		b, err := os.ReadFile(filepath.Join(m.logDir, "postgresql.log"))
		if err != nil || len(b) == 0 {
			t.Errorf("%s: log %v", m.id, err)
		}
		logs.Write(b)
	}
	for id, a := range c.agents {
		a.signalAndWait(t, syscall.SIGTERM)
		logs.WriteString(a.stderr.String())
		_ = id
	}
	c.server.signalAndWait(t, syscall.SIGTERM)
	logs.WriteString(c.server.stderr.String())
	for name, v := range map[string]string{"superuser": c.superuser, "old superuser": oldSuper, "app": app} {
		if strings.Contains(logs.String(), v) {
			t.Errorf("the %s password is in a log", name)
		}
	}
}

// TestDeclaredPostgresMembers: a member whose data directory is deleted
// clones itself again and rejoins, keeping its log; a device labelled into
// the selector joins as a replica; a replica labelled out leaves without a
// failover (its slot dropped on the primary); the primary labelled out
// hands over first, and no acknowledged write is lost.
func TestDeclaredPostgresMembers(t *testing.T) {
	c := newDeclaredCluster(t, "db-1", "db-2", "db-3")
	c.addMember("db-4", "role=spare")
	app := "app-" + rand.Text()
	c.superuser = "su-" + rand.Text()
	c.must(c.cli("secret", "create", "pg", "--from-literal", "superuser="+c.superuser, "--from-literal", "app="+app))
	c.must(c.cli("apply", "-f", c.manifest(`max_connections: "50"`)))
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
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS w (id int PRIMARY KEY); INSERT INTO w VALUES (0) ON CONFLICT DO NOTHING"); err != nil {
			return err
		}
		primary = p
		return nil
	})
	c.ready(3, "db-1", "db-2", "db-3")
	rowsOn := func(m declaredMember, want string) {
		t.Helper()
		retry.Until(t, 2*time.Minute, func() error {
			n, err := c.query(m, "orders", "SELECT count(*)::text FROM w")
			if err != nil || n != want {
				return fmt.Errorf("%s: %s rows, %v", m.id, n, err)
			}
			return nil
		})
	}
	var replicas []declaredMember
	for _, id := range []string{"db-1", "db-2", "db-3"} {
		if id != primary.id {
			replicas = append(replicas, c.member(id))
		}
	}

	// A replica's data directory deleted: it is cloned again and rejoins.
	victim := replicas[0]
	logBefore, _ := os.Stat(filepath.Join(victim.logDir, "postgresql.log"))
	if err := os.RemoveAll(victim.dataDir); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 3*time.Minute, func() error {
		if _, err := os.Stat(filepath.Join(victim.dataDir, "PG_VERSION")); err != nil {
			return err
		}
		_, err := c.query(victim, "postgres", "SELECT 1::text")
		return err
	})
	c.ready(3, victim.id)
	rowsOn(victim, "1")
	if logAfter, err := os.Stat(filepath.Join(victim.logDir, "postgresql.log")); err != nil || logBefore == nil || logAfter.Size() <= logBefore.Size() {
		t.Errorf("%s's log after the re-clone: %v (before %v): the log should keep its history", victim.id, err, logBefore)
	}

	// db-4 labelled into the selector joins as a replica.
	c.must(c.cli("label", "device", "db-4", "role=db"))
	d4 := c.ready(4, "db-4")["db-4"]
	if d4["role"] != "Replica" {
		t.Fatalf("db-4 joined as %q", d4["role"])
	}
	rowsOn(c.member("db-4"), "1")

	// A replica that is not the synchronous standby labelled out: it
	// leaves, no failover, its slot goes. (The primary and its standby are
	// read again: the steps before may have moved them.)
	var err error
	if primary, err = c.primary(); err != nil {
		t.Fatal(err)
	}
	now := c.ready(4, primary.id)[primary.id]
	epoch, sync := now["epoch"], now["syncStandby"]
	var leaving declaredMember
	for _, id := range []string{"db-1", "db-2", "db-3", "db-4"} {
		if id != primary.id && id != sync {
			leaving = c.member(id)
		}
	}
	c.must(c.cli("label", "device", leaving.id, "role=gone"))
	after := c.ready(3, primary.id)[primary.id]
	if after["epoch"] != epoch || after["role"] != "Primary" {
		t.Fatalf("replica %s leaving caused a failover: %v (epoch was %s)", leaving.id, after, epoch)
	}
	retry.Until(t, time.Minute, func() error {
		n, err := c.query(primary, "postgres", "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'harmony_"+strings.ReplaceAll(leaving.id, "-", "_")+"'")
		if err != nil || n != "0" {
			return fmt.Errorf("the slot of %s on the primary: %s, %v", leaving.id, n, err)
		}
		if _, err := c.query(leaving, "postgres", "SELECT 1::text"); err == nil {
			return fmt.Errorf("%s's PostgreSQL still runs", leaving.id)
		}
		return nil
	})

	// The primary labelled out: a switchover first, no write lost.
	w := c.startWriter(app)
	c.must(c.cli("label", "device", primary.id, "role=gone"))
	var newPrimary declaredMember
	retry.Until(t, 3*time.Minute, func() error {
		p, err := c.primary()
		if err != nil {
			return err
		}
		if p.id == primary.id {
			return fmt.Errorf("%s is still the primary", p.id)
		}
		newPrimary = p
		return nil
	})
	c.ready(2, newPrimary.id)
	acked, gap := w.stop()
	var ids []string
	for _, id := range acked {
		ids = append(ids, strconv.Itoa(id))
	}
	if len(ids) == 0 {
		t.Fatal("no write was acknowledged while the primary left")
	}
	got, err := c.query(newPrimary, "orders", "SELECT count(*)::text FROM w WHERE id IN ("+strings.Join(ids, ",")+")")
	if err != nil || got != strconv.Itoa(len(acked)) {
		t.Fatalf("%s of %d acknowledged writes on the new primary %s: %v", got, len(acked), newPrimary.id, err)
	}
	t.Logf("the primary %s left: %s took over; %d writes acknowledged, all kept; longest time without one %s",
		primary.id, newPrimary.id, len(acked), gap.Round(time.Millisecond))

	// Two members left: the replica is the only synchronous standby, and
	// restarting it would stop every write.
	var last string
	retry.Until(t, 2*time.Minute, func() error {
		if last = c.ready(2, newPrimary.id)[newPrimary.id]["syncStandby"]; last == "" || last == newPrimary.id {
			return fmt.Errorf("no synchronous standby named yet (%q)", last)
		}
		return nil
	})
	if _, err := c.failover("restart", last); err == nil || !strings.Contains(err.Error(), "only synchronous standby") {
		t.Fatalf("failover restart of the only synchronous standby %s: %v", last, err)
	}
}
