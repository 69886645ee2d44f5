package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
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
	agentArgs map[string][]string
	superuser string // the superuser's password, once the secret is made
	natsAddr  string
	url       string // the server's HTTPS API and dashboard
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
	c := &declaredCluster{t: t, cli: cliAt(base, ca), server: server, agents: map[string]*proc{}, agentArgs: map[string][]string{}, natsAddr: natsAddr, url: base, ca: ca, dir: dir}

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
			c.signal(m, syscall.SIGCONT) // a test that failed while a device was frozen
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
	c.agentArgs[id] = []string{"agent", "--http", "127.0.0.1:0", "--id", id, "--nats-url", "nats://" + c.natsAddr, "--nats-ca", c.ca,
		"--nats-nkey", seed, "--state-dir", filepath.Join(c.dir, id, "state"), "--label", label,
		"--heartbeat-interval", "300ms", "--resync-interval", "2s", "--retry-initial", "200ms", "--retry-max", "2s"}
	c.startAgent(id)
}

// startAgent starts device id's agent (again, after a crash): its labels
// are the server's from enrollment on, so the first --label stays.
func (c *declaredCluster) startAgent(id string) {
	c.agents[id] = startHarmony(c.t, c.agentArgs[id]...)
}

// machine is every process of member m's device: its agent, its guard and
// its PostgreSQL.
func (c *declaredCluster) machine(m declaredMember) []int {
	pids := postmasterFamily(m.dataDir)
	if a := c.agents[m.id]; a != nil {
		// Its pid even if it has exited (ProcessState is written by the
		// goroutine that waits for it): a signal to it then does nothing.
		pids = append(pids, a.cmd.Process.Pid)
	}
	out, _ := osexec.Command("pgrep", "-f", "guard --socket "+filepath.Join(c.dir, m.id, "state")).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// signal sends sig to every process of m's device.
func (c *declaredCluster) signal(m declaredMember, sig syscall.Signal) {
	for _, pid := range c.machine(m) {
		_ = syscall.Kill(pid, sig)
	}
}

// crash kills m's device at once: agent, guard and PostgreSQL, SIGKILL.
func (c *declaredCluster) crash(m declaredMember) {
	c.t.Helper()
	c.signal(m, syscall.SIGSTOP) // nothing moves while the set is collected
	pids := c.machine(m)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	<-c.agents[m.id].done
	retry.Until(c.t, 10*time.Second, func() error {
		if len(postmasterFamily(m.dataDir)) > 0 && syscall.Kill(postmasterFamily(m.dataDir)[0], 0) == nil {
			return fmt.Errorf("%s's postmaster still runs", m.id)
		}
		return nil
	})
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

// memberStatus is the status device id reports for its member of
// orders-db.
func (c *declaredCluster) memberStatus(id string) (phase, message string, details map[string]string, err error) {
	out, err := c.cli("describe", "device", id, "-o", "json")
	if err != nil {
		return "", "", nil, err
	}
	var dev struct {
		States []struct {
			Deployment string
			Resources  []struct {
				Phase, Message string
				Details        map[string]string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &dev); err != nil {
		return "", "", nil, err
	}
	for _, st := range dev.States {
		if st.Deployment == "orders-db" && len(st.Resources) == 1 {
			r := st.Resources[0]
			return r.Phase, r.Message, r.Details, nil
		}
	}
	return "", "", nil, fmt.Errorf("%s: no status of orders-db", id)
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
			_, _, det, err := c.memberStatus(id)
			if err != nil {
				return err
			}
			details[id] = det
		}
		return nil
	})
	return details
}

// create makes the cluster as docs/postgres.md says: the secret with the
// superuser's and the role's passwords, then one apply. It returns the
// role's password.
func (c *declaredCluster) create() string {
	c.t.Helper()
	app := "app-" + rand.Text()
	c.superuser = "su-" + rand.Text()
	c.must(c.cli("secret", "create", "pg", "--from-literal", "superuser="+c.superuser, "--from-literal", "app="+app))
	c.applied = time.Now()
	c.must(c.cli("apply", "-f", c.manifest(`max_connections: "50"`)))
	return app
}

// firstWrite waits until a writer finds the primary through /primary,
// connects as app with its password and runs sql; it returns the primary
// and how long after the apply that was.
func (c *declaredCluster) firstWrite(password, sql string) (declaredMember, time.Duration) {
	c.t.Helper()
	var primary declaredMember
	var took time.Duration
	retry.Until(c.t, 3*time.Minute, func() error {
		p, err := c.primary()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=app password=%s dbname=orders sslmode=disable", p.port, password))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, sql); err != nil {
			return err
		}
		took, primary = time.Since(c.applied), p
		return nil
	})
	return primary, took
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
	client := http.Client{Timeout: time.Second} // a frozen member does not answer
	for _, m := range c.members {
		resp, err := client.Get("http://" + m.http + "/primary")
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
// as the declared role, and keeps what PostgreSQL acknowledged and the
// longest time without an acknowledged write.
type roleWriter struct {
	mu     sync.Mutex
	acks   []roleAck
	maxGap time.Duration
	last   time.Time
	done   chan struct{}
	cancel context.CancelFunc
}

// roleAck is one acknowledged write: its id, the member that acknowledged
// it, and when it was sent.
type roleAck struct {
	id   int
	by   string
	sent time.Time
}

func (c *declaredCluster) startWriter(password string) *roleWriter {
	ctx, cancel := context.WithCancel(context.Background())
	w := &roleWriter{done: make(chan struct{}), cancel: cancel, last: time.Now()}
	go func() {
		defer close(w.done)
		var conn *pgx.Conn
		var at string
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
					at = p.id
				}
			}
			if conn != nil {
				sent := time.Now()
				wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
				_, err := conn.Exec(wctx, "INSERT INTO w VALUES ($1)", id)
				wcancel()
				if err == nil {
					w.mu.Lock()
					w.acks = append(w.acks, roleAck{id: id, by: at, sent: sent})
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

// ackedSince waits until a write sent after from is acknowledged by a
// member other than not, and returns it.
func (w *roleWriter) ackedSince(t *testing.T, from time.Time, not string) roleAck {
	t.Helper()
	var got roleAck
	retry.Until(t, time.Minute, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, a := range w.acks {
			if a.sent.After(from) && a.by != not {
				got = a
				return nil
			}
		}
		return fmt.Errorf("no write sent after %s acknowledged by a member other than %s", from.Format(time.StampMilli), not)
	})
	return got
}

// stop ends the writer and returns its acknowledged writes and the longest
// time without one.
func (w *roleWriter) stop() ([]roleAck, time.Duration) {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acks, w.maxGap
}

// kept fails the test unless every acknowledged write is on member m.
func (c *declaredCluster) kept(m declaredMember, acks []roleAck) {
	c.t.Helper()
	if len(acks) == 0 {
		c.t.Fatal("no write was acknowledged")
	}
	var ids []string
	for _, a := range acks {
		ids = append(ids, strconv.Itoa(a.id))
	}
	got, err := c.query(m, "orders", "SELECT count(*)::text FROM w WHERE id IN ("+strings.Join(ids, ",")+")")
	if err != nil || got != strconv.Itoa(len(acks)) {
		c.t.Fatalf("%s of %d acknowledged writes on %s: %v", got, len(acks), m.id, err)
	}
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
	app := c.create()

	// The writer: find the primary, connect as app, write.
	primary, firstWrite := c.firstWrite(app, "CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY); INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING; CREATE TABLE IF NOT EXISTS w (id int PRIMARY KEY)")
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

	// Three members raced to bootstrap: exactly one initdb, every member a
	// copy of it.
	sysid, err := c.query(primary, "postgres", "SELECT system_identifier::text FROM pg_control_system()")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.members {
		if got, err := c.query(m, "postgres", "SELECT system_identifier::text FROM pg_control_system()"); err != nil || got != sysid {
			t.Fatalf("%s has system identifier %s, the primary %s: %v", m.id, got, sysid, err)
		}
	}

	// Each replica streams through its own slot on the primary, which may
	// hold back at most the documented 1 GB of WAL.
	retry.Until(t, time.Minute, func() error {
		n, err := c.query(primary, "postgres", "SELECT count(*)::text FROM pg_replication_slots WHERE active AND slot_name LIKE 'harmony_%'")
		if err != nil || n != "2" {
			return fmt.Errorf("%s active replica slots on the primary, want 2 (%v)", n, err)
		}
		if got, err := c.query(primary, "postgres", "SHOW max_slot_wal_keep_size"); err != nil || got != "1GB" {
			return fmt.Errorf("max_slot_wal_keep_size %s on the primary, want 1GB (%v)", got, err)
		}
		return nil
	})

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
	// Status follows a member's restart within a moment.
	retry.Until(t, time.Minute, func() error {
		details = c.ready(3, "db-1", "db-2", "db-3")
		for id, d := range details {
			if d["pendingRestart"] != "" {
				return fmt.Errorf("%s still waits for a restart: %s", id, d["pendingRestart"])
			}
		}
		return nil
	})
	restarted := c.startTimes()
	for id, at := range before {
		if restarted[id] == at {
			t.Errorf("%s was not restarted for max_connections", id)
		}
	}
	for id, d := range details {
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
	c.kept(p, acked)
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

	// No password in anything a user or a viewer reads: CLI outputs, API
	// answers, dashboard pages (the cluster page too), failover status.
	var logs strings.Builder
	for _, args := range [][]string{{"get", "deployments", "-o", "yaml"}, {"describe", "deployment", "orders-db", "-o", "json"},
		{"describe", "deployment", "orders-db"}, {"get", "devices", "-o", "yaml"}, {"describe", "device", cur, "-o", "json"},
		{"describe", "device", cur}, {"secret", "list", "-o", "yaml"}} {
		logs.WriteString(c.must(c.cli(args...)))
	}
	logs.WriteString(c.must(c.failover("status")))
	client := httpsClient(t, c.ca)
	for _, path := range []string{"/api/v1/deployments/orders-db", "/api/v1/devices/" + cur, "/api/v1/secrets",
		"/deployments/orders-db", "/devices/" + cur, "/clusters/orders"} {
		logs.WriteString(getWithToken(t, client, c.url+path))
	}
	if !strings.Contains(logs.String(), "superuserPassword") || !strings.Contains(logs.String(), "syncStandby") {
		t.Error("the outputs read show neither the spec's secret reference nor the members' status: the check would see nothing")
	}

	// PostgreSQL's own log is outside the data directory; no password is
	// in any log.
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
			t.Errorf("the %s password is in an output, an answer or a log", name)
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
	app := c.create()
	primary, _ := c.firstWrite(app, "CREATE TABLE IF NOT EXISTS w (id int PRIMARY KEY); INSERT INTO w VALUES (0) ON CONFLICT DO NOTHING")
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
	// Gone from the cluster, its device may no longer use the cluster's
	// bucket; the members that stay still may.
	retry.Until(t, time.Minute, func() error {
		var ids struct {
			Identities []struct{ Device, Cluster string }
		}
		if err := json.Unmarshal([]byte(getWithToken(t, httpsClient(t, c.ca), c.url+"/api/v1/identities")), &ids); err != nil {
			return err
		}
		for _, id := range ids.Identities {
			switch {
			case id.Device == leaving.id && id.Cluster != "":
				return fmt.Errorf("%s left the cluster but may still use the bucket of cluster %s", id.Device, id.Cluster)
			case id.Device == primary.id && id.Cluster != "orders":
				return fmt.Errorf("the primary %s is granted cluster %q", id.Device, id.Cluster)
			}
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
	c.kept(newPrimary, acked)
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

	// Nor may it leave: labelled out, it stays the synchronous standby
	// (writes go on, each confirmed by it) and the cluster view says why.
	c.must(c.cli("label", "device", last, "role=gone"))
	retry.Until(t, time.Minute, func() error {
		out, err := c.failover("status")
		if err != nil {
			return err
		}
		if !strings.Contains(out, last+" is no longer declared by its deployment: leaving refused: "+last+" is the only synchronous standby") {
			return fmt.Errorf("failover status does not say %s may not leave:\n%s", last, out)
		}
		return nil
	})
	if got, err := c.query(newPrimary, "orders", "INSERT INTO w VALUES (-1) RETURNING id::text"); err != nil || got != "-1" {
		t.Fatalf("a write while %s is refused leave: %s %v", last, got, err)
	}
	if _, err := c.query(c.member(last), "postgres", "SELECT 1::text"); err != nil {
		t.Fatalf("%s stopped although it may not leave: %v", last, err)
	}
	// Labelled back in, it is a member like before.
	c.must(c.cli("label", "device", last, "role=db"))
	c.ready(2, last)
	retry.Until(t, time.Minute, func() error {
		out, err := c.failover("status")
		if err != nil {
			return err
		}
		if strings.Contains(out, "no longer declared") {
			return fmt.Errorf("failover status still says %s leaves:\n%s", last, out)
		}
		return nil
	})

	// The deployment deleted: every member goes (the standby does not stay
	// for a primary that leaves too), and every grant is taken back.
	c.must(c.cli("delete", "deployment", "orders-db"))
	deleted := time.Now()
	defer func() {
		t.Logf("the deployment deleted: every member gone, every grant taken back in %s", time.Since(deleted).Round(time.Second))
	}()
	retry.Until(t, 2*time.Minute, func() error {
		for _, id := range []string{newPrimary.id, last} {
			if _, err := c.query(c.member(id), "postgres", "SELECT 1::text"); err == nil {
				return fmt.Errorf("%s's PostgreSQL still runs", id)
			}
		}
		var ids struct {
			Identities []struct{ Device, Cluster string }
		}
		if err := json.Unmarshal([]byte(getWithToken(t, httpsClient(t, c.ca), c.url+"/api/v1/identities")), &ids); err != nil {
			return err
		}
		for _, id := range ids.Identities {
			if id.Cluster != "" {
				return fmt.Errorf("%s may still use the bucket of cluster %s", id.Device, id.Cluster)
			}
		}
		return nil
	})
}

// TestDeclaredPostgresFailover: a declared cluster keeps the guarantees of
// a hand-built one. The primary's device crashes (agent, guard and
// PostgreSQL killed at once): another member takes over, and when the
// device comes back its member rejoins as a replica. Then the new primary's
// device freezes (every process stopped) and resumes: another member takes
// over, the frozen one acknowledges no write sent after the freeze, and it
// rejoins as a replica. No acknowledged write is lost.
func TestDeclaredPostgresFailover(t *testing.T) {
	c := newDeclaredCluster(t, "db-1", "db-2", "db-3")
	app := c.create()
	first, _ := c.firstWrite(app, "CREATE TABLE IF NOT EXISTS w (id int PRIMARY KEY)")
	c.ready(3, "db-1", "db-2", "db-3")
	w := c.startWriter(app)
	w.ackedSince(t, time.Now(), "")

	// The primary's device crashes.
	crash := time.Now()
	c.crash(first)
	took := c.promotedBesides(first, crash)
	a := w.ackedSince(t, crash, first.id)
	t.Logf("crash of %s: another member serves /primary after %s; the writer's first write acknowledged by %s after %s",
		first.id, took.Round(time.Millisecond), a.by, a.sent.Sub(crash).Round(time.Millisecond))
	c.startAgent(first.id)
	c.rejoined(first.id)

	// The new primary's device freezes, then resumes.
	second, err := c.primary()
	if err != nil {
		t.Fatal(err)
	}
	c.signal(second, syscall.SIGSTOP)
	frozen := time.Now() // every process of the device is stopped from here on
	took = c.promotedBesides(second, frozen)
	a = w.ackedSince(t, frozen, second.id)
	t.Logf("freeze of %s: another member serves /primary after %s; the writer's first write acknowledged by %s after %s (its statement on the frozen primary times out after 3 s)",
		second.id, took.Round(time.Millisecond), a.by, a.sent.Sub(frozen).Round(time.Millisecond))
	c.signal(second, syscall.SIGCONT)
	c.rejoined(second.id)
	w.ackedSince(t, time.Now(), second.id)
	acks, gap := w.stop()
	for _, a := range acks {
		if a.by == second.id && a.sent.After(frozen) {
			t.Errorf("%s acknowledged write %d sent at %s, after it was frozen at %s", second.id, a.id, a.sent.Format(time.StampMicro), frozen.Format(time.StampMicro))
		}
	}
	now, err := c.primary()
	if err != nil {
		t.Fatal(err)
	}
	c.kept(now, acks)
	// The old primaries have every write too (they rejoined by rewind or
	// a clone, not as a fork).
	for _, m := range []declaredMember{first, second} {
		retry.Until(t, time.Minute, func() error {
			n, err := c.query(m, "orders", "SELECT count(*)::text FROM w")
			if err != nil {
				return err
			}
			if want, _ := c.query(now, "orders", "SELECT count(*)::text FROM w"); n != want {
				return fmt.Errorf("%s has %s rows, the primary %s", m.id, n, want)
			}
			return nil
		})
	}
	t.Logf("%d acknowledged writes, all kept; longest time without one %s", len(acks), gap.Round(time.Millisecond))
}

// promotedBesides waits until a member other than m answers /primary with
// 200, and returns how long after since that was.
func (c *declaredCluster) promotedBesides(m declaredMember, since time.Time) time.Duration {
	c.t.Helper()
	client := http.Client{Timeout: 500 * time.Millisecond}
	retry.Until(c.t, time.Minute, func() error {
		for _, o := range c.members {
			if o.id == m.id {
				continue
			}
			if resp, err := client.Get("http://" + o.http + "/primary"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
		}
		return fmt.Errorf("no member besides %s serves /primary", m.id)
	})
	return time.Since(since)
}

// rejoined waits until id reports itself a healthy replica again (the
// status it reported before its fault may still be the server's for a
// moment).
func (c *declaredCluster) rejoined(id string) {
	c.t.Helper()
	retry.Until(c.t, 2*time.Minute, func() error {
		phase, msg, d, err := c.memberStatus(id)
		if err != nil {
			return err
		}
		if phase != "Ready" || d["role"] != "Replica" {
			return fmt.Errorf("%s: %s %q, role %q", id, phase, msg, d["role"])
		}
		return nil
	})
}

// TestDeclaredPostgresBadInput: a member that cannot join says why in its
// typed status and touches nothing. The cluster starts on db-1; then db-2,
// whose data directory holds another cluster, and db-3, whose port another
// program holds, are labelled in. Each reports its reason; db-2's foreign
// cluster is left as it was, also when it turns out to be of another
// PostgreSQL version; once the port is free db-3 joins, once the directory
// is moved away db-2 does. An update asking for a PostgreSQL version the
// devices do not have is refused by each, naming spec.version, and the
// running cluster goes on untouched.
func TestDeclaredPostgresBadInput(t *testing.T) {
	c := newDeclaredCluster(t, "db-1")
	c.addMember("db-2", "role=later")
	c.addMember("db-3", "role=later")
	app := c.create()
	c.firstWrite(app, "CREATE TABLE IF NOT EXISTS w (id int PRIMARY KEY)")
	c.ready(1, "db-1")

	// db-2's data directory holds a cluster of its own.
	d2, d3 := c.member("db-2"), c.member("db-3")
	if err := os.MkdirAll(filepath.Dir(d2.dataDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := osexec.Command("chown", "postgres:postgres", filepath.Dir(d2.dataDir)).Run(); err != nil {
		t.Fatal(err)
	}
	if out, err := osexec.Command("runuser", "-u", "postgres", "--", pgtest.BinDir+"/initdb", "-D", d2.dataDir).CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	control := func() string {
		b, err := os.ReadFile(filepath.Join(d2.dataDir, "global", "pg_control"))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := os.ReadFile(filepath.Join(d2.dataDir, "PG_VERSION"))
		return string(v) + string(b)
	}
	foreign := control()
	// db-3's port is another program's.
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", d3.port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	status := func(id, reason, inMessage string) {
		t.Helper()
		retry.Until(t, 2*time.Minute, func() error {
			phase, msg, details, err := c.memberStatus(id)
			if err != nil {
				return err
			}
			if phase != "Failed" || details["reason"] != reason || !strings.Contains(msg, inMessage) {
				return fmt.Errorf("%s: %s %q (%v), want Failed, reason %s, %q", id, phase, msg, details, reason, inMessage)
			}
			return nil
		})
	}
	c.must(c.cli("label", "device", "db-2", "role=db"))
	c.must(c.cli("label", "device", "db-3", "role=db"))
	status("db-2", "DataDirectoryHoldsAnotherCluster", "spec.dataDir: "+d2.dataDir+" holds another cluster")
	status("db-3", "PortInUse", fmt.Sprintf("spec.port: %d is in use", d3.port))
	if control() != foreign {
		t.Fatal("db-2's foreign data directory was changed")
	}

	// The same directory found to be of another version: told so.
	if err := os.WriteFile(filepath.Join(d2.dataDir, "PG_VERSION"), []byte("14\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	foreign = control()
	status("db-2", "VersionMismatch", "spec.version: 15, but the data directory "+d2.dataDir+" holds a PostgreSQL 14 cluster")
	if control() != foreign {
		t.Fatal("db-2's foreign data directory was changed")
	}

	// The port freed: db-3 joins. The directory moved away: db-2 does.
	ln.Close()
	if err := os.Rename(d2.dataDir, d2.dataDir+".old"); err != nil {
		t.Fatal(err)
	}
	details := c.ready(3, "db-2", "db-3")
	for id, d := range details {
		if d["role"] != "Replica" {
			t.Errorf("%s joined as %q", id, d["role"])
		}
	}

	// A version no device has: refused by each member, naming the field;
	// the cluster runs on as it was.
	before := c.startTimes()
	path := c.manifest(`max_connections: "50"`)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), "version: 15", "version: 16", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	c.must(c.cli("apply", "-f", path))
	for _, id := range []string{"db-1", "db-2", "db-3"} {
		retry.Until(t, time.Minute, func() error {
			phase, msg, _, err := c.memberStatus(id)
			if err != nil {
				return err
			}
			if phase != "Invalid" || !strings.Contains(msg, "resources[0].spec.version: 16: PostgreSQL 16 is not installed on this device") {
				return fmt.Errorf("%s: %s %q, want Invalid naming spec.version", id, phase, msg)
			}
			return nil
		})
	}
	if p, err := c.primary(); err != nil {
		t.Fatal(err)
	} else if got, err := c.query(p, "orders", "INSERT INTO w VALUES (1) RETURNING id::text"); err != nil || got != "1" {
		t.Fatalf("a write after the refused update: %s %v", got, err)
	}
	if after := c.startTimes(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refused update restarted members: %v -> %v", before, after)
	}
	c.must(c.cli("apply", "-f", c.manifest(`max_connections: "50"`)))
	c.ready(3, "db-1", "db-2", "db-3")

	// db-1 moved to a port another program holds: refused before the
	// member is touched, naming the field; it runs on where it was.
	busy, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	before = c.startTimes()
	was := c.members[0].port
	c.members[0].port = busy.Addr().(*net.TCPAddr).Port
	moved := c.manifest(`max_connections: "50"`)
	c.members[0].port = was
	c.must(c.cli("apply", "-f", moved))
	retry.Until(t, time.Minute, func() error {
		phase, msg, _, err := c.memberStatus("db-1")
		if err != nil {
			return err
		}
		want := fmt.Sprintf("resources[0].spec.members.db-1.port: %d is in use by another program on this device; the member keeps running on %d", busy.Addr().(*net.TCPAddr).Port, was)
		if phase != "Invalid" || !strings.Contains(msg, want) {
			return fmt.Errorf("db-1: %s %q, want Invalid %q", phase, msg, want)
		}
		return nil
	})
	if after := c.startTimes(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refused move restarted members: %v -> %v", before, after)
	}
	c.must(c.cli("apply", "-f", c.manifest(`max_connections: "50"`)))
	c.ready(3, "db-1", "db-2", "db-3")
}
