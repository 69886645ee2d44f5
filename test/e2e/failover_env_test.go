package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/failover/pg"
	"github.com/harmony-fleet/harmony/internal/store"
	"github.com/harmony-fleet/harmony/internal/testutil/netproxy"
	"github.com/harmony-fleet/harmony/internal/testutil/pgtest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// haCluster is a PostgreSQL cluster under harmony agents run as real
// processes: a harmony server (embedded NATS), real PostgreSQL 15 started by
// the test, and one agent per node, each reaching NATS through its own
// proxy so that one node can be cut off from the mesh alone.
type haCluster struct {
	t        testing.TB
	dir      string
	name     string
	profile  string
	strategy failover.Strategy
	natsURL  string
	kv       store.KV
	store    store.Store
	nodes    []*haNode
	replicas int // of the failover bucket (0: the default, 1)
	// paths are each node's own proxies to the members of a mesh cluster.
	paths map[string][]*netproxy.Proxy

	server     *proc
	serverArgs []string
	serverHTTP string
	// adminSeed, when set, is the server's admin identity (the server
	// runs with nats_auth: identities and every node is enrolled).
	adminSeed string
}

// stopServer stops the harmony server (and its embedded NATS).
func (c *haCluster) stopServer() {
	if code := c.server.signalAndWait(c.t, syscall.SIGTERM); code != 0 {
		c.t.Fatalf("server exit code %d", code)
	}
}

// startServer starts it again on the same data directory and ports.
func (c *haCluster) startServer() {
	c.server = startHarmony(c.t, c.serverArgs...)
	waitReady(c.t, c.serverHTTP)
}

type haNode struct {
	c     *haCluster
	name  string
	pg    *pg.Instance
	proxy *netproxy.Proxy // the node's own path to NATS (single-server harness)
	urls  []string        // NATS URLs the agent is given
	http  string
	peer  string // the failsafe listener (one port per node on one machine)
	// peerProxy is the only way the other members reach peer (the agent
	// advertises it): cutting it leaves nobody able to reach this node's
	// failsafe listener.
	peerProxy *netproxy.Proxy
	config    string
	log       string
	nkey      string // the node's enrolled identity (nats_nkey), if any
	// wrap prefixes the agent's command line (e.g. unshare into a time
	// namespace).
	wrap []string

	mu    sync.Mutex
	agent *exec.Cmd
	done  chan error
}

func newHACluster(t testing.TB, profile string, strategy failover.Strategy, names ...string) *haCluster {
	t.Helper()
	c, natsAddr := startHAServer(t, profile, strategy)
	c.startNodes(names, func(n *haNode) {
		n.proxy = netproxy.Start(t, natsAddr)
		n.urls = []string{"nats://" + n.proxy.Addr()}
	})
	return c.openBucket()
}

// startHAServer starts the harmony server of a failover cluster whose
// nodes are not started yet; it returns the embedded NATS address.
func startHAServer(t testing.TB, profile string, strategy failover.Strategy, extra ...string) (*haCluster, string) {
	t.Helper()
	dir := t.TempDir()
	natsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	serverArgs := append([]string{"server", "--data-dir", filepath.Join(dir, "server"), "--nats", natsAddr, "--http", httpAddr}, extra...)
	srv := startHarmony(t, serverArgs...)
	waitReady(t, "http://"+httpAddr)
	return &haCluster{t: t, dir: dir, name: "pg-" + strconv.Itoa(freePort(t)), profile: profile, strategy: strategy, natsURL: "nats://" + natsAddr,
		server: srv, serverArgs: serverArgs, serverHTTP: "http://" + httpAddr}, natsAddr
}

// newEnrolledHACluster is newHACluster with the server's NATS open only
// to enrolled identities: every node enrolls with a one-time token that
// grants its failover cluster, and the test reads the store and runs the
// failover commands with the server's admin identity.
func newEnrolledHACluster(t testing.TB, profile string, strategy failover.Strategy, names ...string) *haCluster {
	t.Helper()
	c, natsAddr := startHAServer(t, profile, strategy, "--nats-auth", "identities")
	c.adminSeed = filepath.Join(c.dir, "server", "nats-admin.nk")
	harmony := func(args ...string) string {
		cmd := exec.Command(binary, args...)
		cmd.Env = append(os.Environ(), "HARMONY_SERVER="+c.serverHTTP)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("harmony %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	c.startNodes(names, func(n *haNode) {
		n.proxy = netproxy.Start(t, natsAddr)
		n.urls = []string{"nats://" + n.proxy.Addr()}
		token := harmony("token", "create", "--device", n.name, "--failover-cluster", c.name)
		n.nkey = filepath.Join(c.dir, n.name+".nk")
		harmony("enroll", "--id", n.name, "--nkey", n.nkey, "--failover-cluster", c.name, "--token", token)
	})
	return c.openBucket()
}

// newHAClusterOn runs the failover cluster on the three-node mesh mc: the
// failover bucket has three replicas, each node reaches NATS through the
// URLs links gives it, and the test itself reads the store through
// storeURLs.
func newHAClusterOn(t testing.TB, mc *meshCluster, profile string, strategy failover.Strategy, storeURLs []string, links map[string][]string, names ...string) *haCluster {
	t.Helper()
	c := &haCluster{t: t, dir: t.TempDir(), name: "pg-" + strconv.Itoa(freePort(t)), profile: profile, strategy: strategy,
		natsURL: strings.Join(storeURLs, ","), replicas: 3}
	c.startNodes(names, func(n *haNode) { n.urls = links[n.name] })
	return c.openBucket()
}

// startNodes creates the PostgreSQL instances and starts one agent per node.
func (c *haCluster) startNodes(names []string, link func(*haNode)) *haCluster {
	t := c.t
	instances := pgtest.Cluster(t, names...)
	for i, n := range names {
		node := &haNode{c: c, name: n, pg: instances[i],
			http: fmt.Sprintf("127.0.0.1:%d", freePort(t)), peer: fmt.Sprintf("127.0.0.1:%d", freePort(t)), log: filepath.Join(c.dir, n+".log")}
		node.peerProxy = netproxy.Start(t, node.peer)
		link(node)
		node.writeConfig()
		c.nodes = append(c.nodes, node)
	}
	c.startAll()
	return c
}

// startAll starts every node's agent; at the test's end it kills them and,
// when the test failed, shows the tail of each node's agent, guard and
// PostgreSQL logs.
func (c *haCluster) startAll() {
	t := c.t
	for _, n := range c.nodes {
		n.start()
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.kill()
		}
		if !t.Failed() {
			return
		}
		tail := func(what, node, path string, n int) {
			b, _ := os.ReadFile(path)
			if len(b) > n {
				b = b[len(b)-n:]
			}
			t.Logf("%s %s log (tail):\n%s", what, node, b)
		}
		for _, n := range c.nodes {
			tail("agent", n.name, n.log, 6000)
			tail("guard", n.name, filepath.Join(c.dir, n.name+"-state", "guard-"+c.name+".log"), 2000)
			tail("PostgreSQL", n.name, filepath.Join(n.pg.DataDir, "server.log"), 2000)
		}
	})
}

// openBucket waits until the agents have created the cluster's bucket and
// opens it for the test's own reads.
func (c *haCluster) openBucket() *haCluster {
	t := c.t
	c.store = storeAs(t, c.natsURL, c.adminSeed)
	retry.Until(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		kv, err := c.store.Open(ctx, failover.BucketName(c.name))
		c.kv = kv
		return err
	})
	return c
}

func (n *haNode) writeConfig() {
	cfg := map[string]any{
		"id":        n.name,
		"nats_url":  n.urls,
		"state_dir": filepath.Join(n.c.dir, n.name+"-state"),
		"log_level": "info",
		"http":      "127.0.0.1:0",
		"nats_nkey": n.nkey,
		"failover": map[string]any{
			"cluster":  n.c.name,
			"node":     n.name,
			"profile":  n.c.profile,
			"strategy": string(n.c.strategy),
			"http":     n.http,
			"peer":     n.peer,
			// The others reach the failsafe listener through its proxy.
			"peer_advertise": n.peerProxy.Addr(),
			"replicas":       max(n.c.replicas, 1),
			"postgres": map[string]any{
				"bin_dir": n.pg.BinDir, "data_dir": n.pg.DataDir, "port": n.pg.Port, "socket_dir": n.pg.SocketDir,
				"os_user": n.pg.OSUser, "superuser": n.pg.Superuser,
			},
		},
	}
	b, _ := json.Marshal(cfg) // JSON is YAML
	n.config = filepath.Join(n.c.dir, n.name+".yaml")
	if err := os.WriteFile(n.config, b, 0o600); err != nil {
		n.c.t.Fatal(err)
	}
}

// start runs the node's agent (appending to its log).
func (n *haNode) start() {
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		n.c.t.Fatal(err)
	}
	args := append(append([]string{}, n.wrap...), binary, "agent", "--config", n.config)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		n.c.t.Fatal(err)
	}
	f.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	n.mu.Lock()
	n.agent, n.done = cmd, done
	n.mu.Unlock()
}

// kill SIGKILLs the agent (if it runs) and waits for it.
func (n *haNode) kill() {
	n.mu.Lock()
	cmd, done := n.agent, n.done
	n.agent = nil
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Kill()
	<-done
}

// stop sends SIGTERM to the agent and waits for a clean exit.
func (n *haNode) stop() {
	n.mu.Lock()
	cmd, done := n.agent, n.done
	n.agent = nil
	n.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			n.c.t.Errorf("agent %s exit after SIGTERM: %v", n.name, err)
		}
	case <-time.After(30 * time.Second):
		n.c.t.Fatalf("agent %s did not stop within 30s of SIGTERM", n.name)
	}
}

// pgPIDs are the postmaster and its children.
func (n *haNode) pgPIDs() []int { return postmasterFamily(n.pg.DataDir) }

// postmasterFamily is the postmaster of dataDir and its children.
func postmasterFamily(dataDir string) []int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return nil
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return nil
	}
	pids := []int{pm}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		j := strings.LastIndexByte(s, ')')
		if j < 0 {
			continue
		}
		fields := strings.Fields(s[j+1:])
		if len(fields) > 2 {
			if ppid, _ := strconv.Atoi(fields[1]); ppid == pm {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// signalAll sends sig to the agent and every PostgreSQL process of the node.
func (n *haNode) signalAll(sig syscall.Signal) {
	n.mu.Lock()
	cmd := n.agent
	n.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(sig)
	}
	for _, pid := range n.pgPIDs() {
		_ = syscall.Kill(pid, sig)
	}
}

// crash kills the whole node: agent and PostgreSQL, SIGKILL.
func (n *haNode) crash() {
	n.signalAll(syscall.SIGSTOP) // nothing moves while the set is collected
	pids := n.pgPIDs()
	n.kill()
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	retry.Until(n.c.t, 10*time.Second, func() error {
		if running, _ := n.pg.Running(); running {
			return errors.New("postmaster still running")
		}
		return nil
	})
}

func (n *haNode) endpoint(path string) int {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get("http://" + n.http + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (c *haCluster) node(name string) *haNode {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

// state reads cluster-state from the store.
func (c *haCluster) state() (failover.ClusterState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	e, err := c.kv.Get(ctx, failover.KeyClusterState)
	if err != nil {
		return failover.ClusterState{}, err
	}
	cs, _, err := failover.DecodeState(e)
	return cs, err
}

// waitPrimary waits until cluster-state names primary, its /primary says
// 200 and, in AbsoluteConsistency with wantSync set, a synchronous standby
// is named and configured.
func (c *haCluster) waitPrimary(primary string, wantSync bool, within time.Duration) failover.ClusterState {
	c.t.Helper()
	var cs failover.ClusterState
	retry.Until(c.t, within, func() error {
		var err error
		cs, err = c.state()
		if err != nil {
			return err
		}
		if cs.Primary != primary {
			return fmt.Errorf("cluster-state names %q", cs.Primary)
		}
		if code := c.node(primary).endpoint("/primary"); code != http.StatusOK {
			return fmt.Errorf("%s /primary answers %d", primary, code)
		}
		if wantSync && c.strategy == failover.AbsoluteConsistency {
			if cs.Sync == "" {
				return errors.New("no synchronous standby named yet")
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if s, err := c.node(primary).pg.SyncStandby(ctx); err != nil || s != cs.Sync {
				return fmt.Errorf("PostgreSQL waits for %q (%v), cluster-state names %q", s, err, cs.Sync)
			}
		}
		return nil
	})
	return cs
}

// cli runs the harmony failover command line against the cluster.
func (c *haCluster) cli(args ...string) (string, error) {
	args = append([]string{"failover"}, args...)
	args = append(args, "--cluster", c.name, "--nats-url", c.natsURL, "--nats-nkey", c.adminSeed)
	out, err := exec.Command(binary, args...).CombinedOutput()
	return string(out), err
}

// ack is one write the client saw acknowledged.
type ack struct {
	id          int64
	node        string
	sent, acked time.Time
}

// writer is a client that writes to every node all the time, over
// connections it keeps open, and logs every acknowledged write.
type writer struct {
	next   atomic.Int64
	mu     sync.Mutex
	acks   []ack
	stop   atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (c *haCluster) createTable(primary string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.node(primary).pg.ConnString("postgres"))
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TABLE acked (id bigint PRIMARY KEY, node text NOT NULL)"); err != nil {
		c.t.Fatal(err)
	}
}

func (c *haCluster) startWriter() *writer {
	var names []string
	for _, n := range c.nodes {
		names = append(names, n.name)
	}
	return c.startWriterOn(names...)
}

// startWriterOn is startWriter writing to the named nodes only.
func (c *haCluster) startWriterOn(names ...string) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{cancel: cancel}
	for _, name := range names {
		w.wg.Add(1)
		go w.run(ctx, name, c.node(name).pg.ConnString("postgres"))
	}
	c.t.Cleanup(w.halt)
	return w
}

func (w *writer) run(ctx context.Context, node, conninfo string) {
	defer w.wg.Done()
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
			return true
		}
	}
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := pgx.Connect(cctx, conninfo)
		cancel()
		if err != nil {
			if !pause() {
				return
			}
			continue
		}
		for ctx.Err() == nil {
			id := w.next.Add(1)
			sent := time.Now()
			// No deadline on the statement: a cancelled wait for a
			// synchronous standby would report the commit as done.
			_, err := conn.Exec(ctx, "INSERT INTO acked (id, node) VALUES ($1, $2)", id, node)
			at := time.Now()
			if w.stop.Load() {
				break
			}
			if err == nil {
				w.mu.Lock()
				w.acks = append(w.acks, ack{id: id, node: node, sent: sent, acked: at})
				w.mu.Unlock()
				continue
			}
			if conn.IsClosed() || !pause() {
				break
			}
		}
		conn.Close(context.Background())
	}
}

// startWriting creates the table on primary, starts the writer and waits
// for primary's first acknowledgement.
func (c *haCluster) startWriting(primary string) *writer {
	c.t.Helper()
	c.createTable(primary)
	w := c.startWriter()
	w.waitAck(c.t, primary, time.Now(), 10*time.Second)
	return w
}

// halt stops the writer; acknowledgements after this are not counted.
func (w *writer) halt() {
	if w.stop.Swap(true) {
		return
	}
	w.cancel()
	w.wg.Wait()
}

func (w *writer) snapshot() []ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := append([]ack(nil), w.acks...)
	sort.Slice(out, func(i, j int) bool { return out[i].acked.Before(out[j].acked) })
	return out
}

// waitAcks waits until node has acknowledged a write after since.
func (w *writer) waitAck(t testing.TB, node string, since time.Time, within time.Duration) ack {
	t.Helper()
	var first ack
	retry.Until(t, within, func() error {
		for _, a := range w.snapshot() {
			if a.node == node && a.sent.After(since) {
				first = a
				return nil
			}
		}
		return fmt.Errorf("no write acknowledged by %s yet", node)
	})
	return first
}

// checkNoOverlap: every write old acknowledged was acknowledged before the
// first write new acknowledged was even sent (so at no instant did both
// accept writes).
func (w *writer) checkNoOverlap(t testing.TB, old, new string) {
	t.Helper()
	acks := w.snapshot()
	var lastOld, firstNewSent time.Time
	for _, a := range acks {
		if a.node == old && a.acked.After(lastOld) {
			lastOld = a.acked
		}
		if a.node == new && (firstNewSent.IsZero() || a.sent.Before(firstNewSent)) {
			firstNewSent = a.sent
		}
	}
	if firstNewSent.IsZero() {
		t.Fatalf("%s acknowledged no write", new)
	}
	if !lastOld.Before(firstNewSent) {
		t.Fatalf("split brain: %s acknowledged a write at %s, after a write to %s was sent at %s",
			old, lastOld.Format(time.StampMicro), new, firstNewSent.Format(time.StampMicro))
	}
}

// checkNoneLost: every acknowledged write is on primary.
func (w *writer) checkNoneLost(t testing.TB, primary *pg.Instance) int {
	t.Helper()
	if lost := w.missingOn(t, primary); lost > 0 {
		t.Fatalf("%d acknowledged writes lost", lost)
	}
	return len(w.snapshot())
}

// missingOn counts acknowledged writes that are not on primary: those
// acknowledged before it reads the table (the writer may still run).
func (w *writer) missingOn(t testing.TB, primary *pg.Instance) int {
	t.Helper()
	acked := w.snapshot()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, primary.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT id FROM acked")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	have := make(map[int64]bool, len(ids))
	for _, id := range ids {
		have[id] = true
	}
	lost := 0
	for _, a := range acked {
		if !have[a.id] {
			lost++
		}
	}
	return lost
}

// longestGap is the longest time after since between two acknowledgements
// by node (or from since to its first one).
func (w *writer) longestGap(node string, since time.Time) time.Duration {
	prev, longest := since, time.Duration(0)
	for _, a := range w.snapshot() {
		if a.node != node || a.acked.Before(since) {
			continue
		}
		if gap := a.acked.Sub(prev); gap > longest {
			longest = gap
		}
		prev = a.acked
	}
	return longest
}

// gapBetween is the longest time within [from, to] during which node
// acknowledged no write (from from to its first acknowledgement, between
// two, and from its last one to to); acks counts its acknowledgements in
// the window.
func (w *writer) gapBetween(node string, from, to time.Time) (longest time.Duration, acks int) {
	prev := from
	for _, a := range w.snapshot() {
		if a.node != node || a.acked.Before(from) || a.acked.After(to) {
			continue
		}
		acks++
		longest = max(longest, a.acked.Sub(prev))
		prev = a.acked
	}
	return max(longest, to.Sub(prev)), acks
}

// lastAck is when node last acknowledged a write (zero: never).
func (w *writer) lastAck(node string) time.Time {
	var last time.Time
	for _, a := range w.snapshot() {
		if a.node == node && a.acked.After(last) {
			last = a.acked
		}
	}
	return last
}

// postmaster is the PID of the node's running postmaster (0: none). A
// fence stops PostgreSQL, so the same PID before and after an episode
// proves PostgreSQL ran throughout.
func (n *haNode) postmaster() int {
	if running, _ := n.pg.Running(); !running {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(n.pg.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))
	return pid
}

// holdServing holds for d that primary keeps serving: its postmaster is
// still pm (PostgreSQL never stopped), it acknowledged a write within the
// last five seconds, and no other node acknowledged any.
func (c *haCluster) holdServing(t testing.TB, w *writer, primary string, pm int, d time.Duration) {
	t.Helper()
	n := c.node(primary)
	retry.Holds(t, d, func() error {
		if got := n.postmaster(); got != pm {
			return fmt.Errorf("%s's postmaster is %d, was %d: PostgreSQL stopped", primary, got, pm)
		}
		if since := time.Since(w.lastAck(primary)); since > 5*time.Second {
			return fmt.Errorf("%s acknowledged no write for %s", primary, since.Round(time.Millisecond))
		}
		for _, o := range c.nodes {
			if o.name != primary && !w.lastAck(o.name).IsZero() {
				return fmt.Errorf("%s acknowledged a write: it was never primary", o.name)
			}
		}
		return nil
	})
}

// waitState waits until the store answers and returns cluster-state.
func (c *haCluster) waitState(within time.Duration) failover.ClusterState {
	c.t.Helper()
	var cs failover.ClusterState
	retry.Until(c.t, within, func() error {
		var err error
		cs, err = c.state()
		return err
	})
	return cs
}

// cutMesh blackholes every path of the node to NATS.
func (n *haNode) cutMesh() {
	if n.proxy != nil {
		n.proxy.Cut()
	}
	for _, p := range n.c.paths[n.name] {
		p.Cut()
	}
}

// cutPeers blackholes the failsafe links of the node, both ways: its own
// listener's proxy and every other member's (each listener has one proxy
// for all its callers, so in a cluster of more than two the others lose
// their links to each other too). PostgreSQL replication is not touched.
func (n *haNode) cutPeers() {
	for _, o := range n.c.nodes {
		o.peerProxy.Cut()
	}
}

// healPeers undoes cutPeers.
func (n *haNode) healPeers() {
	for _, o := range n.c.nodes {
		o.peerProxy.Heal()
	}
}

// isolate cuts the node off from the store and from its peers' failsafe
// listeners: a primary so cut off can get neither a confirmation nor a
// promise, so it fences (AbsoluteConsistency).
func (n *haNode) isolate() {
	n.cutMesh()
	n.cutPeers()
}
