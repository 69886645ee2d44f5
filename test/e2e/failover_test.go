package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/testutil/netproxy"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// waitRole waits until node's endpoint path answers 200.
func waitEndpoint(t *testing.T, n *haNode, path string, within time.Duration) {
	t.Helper()
	retry.Until(t, within, func() error {
		if code := n.endpoint(path); code != http.StatusOK {
			return fmt.Errorf("%s %s answers %d", n.name, path, code)
		}
		return nil
	})
}

func logContains(t *testing.T, n *haNode, s string) bool {
	t.Helper()
	b, err := os.ReadFile(n.log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), s)
}

// The primary's whole node dies (agent and PostgreSQL SIGKILLed): the
// replica promotes and the client writes again, losing nothing it was told
// was written; the old primary's node comes back and rejoins as a replica by
// pg_rewind, and becomes the synchronous standby again.
func TestHAKillPrimary(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n1, n2 := c.node("n1"), c.node("n2")
	c.waitPrimary("n1", true, time.Minute)
	waitEndpoint(t, n2, "/replica", 30*time.Second)
	for _, probe := range []struct {
		n    *haNode
		path string
		want int
	}{{n1, "/primary", 200}, {n1, "/replica", 503}, {n1, "/health", 200}, {n2, "/primary", 503}, {n2, "/replica", 200}, {n2, "/health", 200}} {
		if got := probe.n.endpoint(probe.path); got != probe.want {
			t.Errorf("%s %s: %d, want %d", probe.n.name, probe.path, got, probe.want)
		}
	}
	w := c.startWriting("n1")

	fault := time.Now()
	n1.crash()
	first := w.waitAck(t, "n2", fault, 30*time.Second)
	t.Logf("fault to first acknowledged write on n2: %s", first.acked.Sub(fault).Round(time.Millisecond))
	cs := c.waitPrimary("n2", false, 10*time.Second)
	if cs.Epoch != 2 {
		t.Errorf("epoch %d after one failover, want 2", cs.Epoch)
	}

	// The old primary's node comes back.
	n1.start()
	waitEndpoint(t, n1, "/replica", time.Minute)
	c.waitPrimary("n2", true, time.Minute)
	if !logContains(t, n1, "by=rewind") {
		t.Errorf("n1 did not say it rejoined by pg_rewind")
	}
	w.waitAck(t, "n2", time.Now(), 10*time.Second)
	w.halt()
	w.checkNoOverlap(t, "n1", "n2")
	total := w.checkNoneLost(t, n2.pg)
	t.Logf("%d acknowledged writes, none lost", total)
}

// The primary is cut off from NATS and from its synchronous standby's
// failsafe listener (its agent's path to the server and its path to n2's
// listener blackholed; PostgreSQL replication still flows): with neither a
// confirmation nor a promise it fences before the replica promotes, so at
// no instant do both accept writes; when the paths heal it rejoins as a
// replica.
func TestHAPartitionedPrimaryFencesFirst(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n1, n2 := c.node("n1"), c.node("n2")
	c.waitPrimary("n1", true, time.Minute)
	w := c.startWriting("n1")

	fault := time.Now()
	n1.proxy.Cut()
	n2.peerProxy.Cut()
	first := w.waitAck(t, "n2", fault, 30*time.Second)
	t.Logf("partition to first acknowledged write on n2: %s", first.acked.Sub(fault).Round(time.Millisecond))
	if running, _ := n1.pg.Running(); running {
		if code := n1.endpoint("/primary"); code == http.StatusOK {
			t.Errorf("n1 still claims the primary role after n2 took over")
		}
	}
	n1.proxy.Heal()
	n2.peerProxy.Heal()
	waitEndpoint(t, n1, "/replica", time.Minute)
	c.waitPrimary("n2", true, time.Minute)
	w.halt()
	w.checkNoOverlap(t, "n1", "n2")
	w.checkNoneLost(t, n2.pg)
}

// The primary is cut off from NATS only (its agent's path to the server
// blackholed) for 10 s, while its synchronous standby's failsafe listener
// and PostgreSQL replication are intact: the standby promises at every
// beat not to promote, so the primary keeps serving (its PostgreSQL never
// stops), there is no failover, and no acknowledged write is lost.
func TestHAPrimaryCutFromStoreOnlyKeepsServing(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n1 := c.node("n1")
	before := c.waitPrimary("n1", true, time.Minute)
	waitEndpoint(t, c.node("n2"), "/replica", 30*time.Second)
	w := c.startWriting("n1")
	pm := n1.postmaster()

	fault := time.Now()
	n1.proxy.Cut()
	c.holdServing(t, w, "n1", pm, 10*time.Second)
	healed := time.Now()
	n1.proxy.Heal()
	w.waitAck(t, "n1", healed, 10*time.Second)
	// Three failover timeouts after the heal: still no failover.
	retry.Holds(t, 3*failover.DefaultTimings().FailoverTimeout, func() error {
		if cs, err := c.state(); err == nil && (cs.Primary != "n1" || cs.Epoch != before.Epoch) {
			return fmt.Errorf("cluster-state moved from %+v to %+v", before, cs)
		}
		return nil
	})
	if got := n1.postmaster(); got != pm {
		t.Fatalf("n1's postmaster is %d, was %d: PostgreSQL stopped after the heal", got, pm)
	}
	w.halt()
	gap, acks := w.gapBetween("n1", fault, healed)
	total := w.checkNoneLost(t, n1.pg)
	if acks == 0 {
		t.Fatal("n1 acknowledged no write while cut off from the store")
	}
	t.Logf("cut from the store for %s: n1 acknowledged %d writes meanwhile, longest gap %s (whole episode %s); %d writes, none lost",
		healed.Sub(fault).Round(time.Millisecond), acks, gap.Round(time.Millisecond), w.longestGap("n1", fault).Round(time.Millisecond), total)
}

// The whole primary node is frozen (agent and every PostgreSQL process
// SIGSTOPped) for longer than failover_timeout, then resumed: the replica
// has been promoted, and the old primary accepts no write after it resumes,
// not even from clients that stayed connected to it. A commit it had
// already replicated to its synchronous standby before the freeze may still
// be confirmed to its client after the resume (the standby's confirmation
// was in flight); such a write is in the new primary's history, which the
// no-loss check proves.
func TestHAFrozenPrimaryAcknowledgesNothingAfterResume(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n1, n2 := c.node("n1"), c.node("n2")
	c.waitPrimary("n1", true, time.Minute)
	w := c.startWriting("n1")

	freeze := time.Now()
	n1.signalAll(syscall.SIGSTOP)
	frozen := time.Now() // every process of the node is stopped from here on
	first := w.waitAck(t, "n2", freeze, 30*time.Second)
	t.Logf("freeze to first acknowledged write on n2: %s", first.acked.Sub(freeze).Round(time.Millisecond))
	resume := time.Now()
	n1.signalAll(syscall.SIGCONT)
	waitEndpoint(t, n1, "/replica", time.Minute)
	c.waitPrimary("n2", true, time.Minute)
	w.waitAck(t, "n2", time.Now(), 10*time.Second)
	w.halt()
	late := 0
	for _, a := range w.snapshot() {
		if a.node != "n1" {
			continue
		}
		if !a.sent.Before(frozen) {
			t.Errorf("n1 acknowledged write %d sent at %s, after the node was frozen at %s", a.id, a.sent.Format(time.StampMicro), frozen.Format(time.StampMicro))
		}
		if a.acked.After(resume) {
			late++
		}
	}
	total := w.checkNoneLost(t, n2.pg)
	t.Logf("%d acknowledged writes, none lost; %d commits replicated before the freeze were confirmed after the resume", total, late)
}

// Restarting the primary's agent (PostgreSQL keeps running) causes no
// failover: the new agent reads cluster-state first and resumes.
func TestHAAgentRestartIsNotAFailover(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n1 := c.node("n1")
	before := c.waitPrimary("n1", true, time.Minute)
	c.createTable("n1")
	w := c.startWriter()
	for i := 0; i < 3; i++ {
		n1.stop()
		n1.start()
		waitEndpoint(t, n1, "/primary", 30*time.Second)
	}
	restarted := time.Now()
	// Watch for three failover timeouts after the last restart.
	retry.Holds(t, 3*failover.DefaultTimings().FailoverTimeout, func() error {
		if cs, err := c.state(); err == nil && (cs.Primary != "n1" || cs.Epoch != before.Epoch) {
			return fmt.Errorf("cluster-state moved to %+v after agent restarts", cs)
		}
		return nil
	})
	w.waitAck(t, "n1", restarted, 10*time.Second)
	w.halt()
	w.checkNoneLost(t, n1.pg)
}

// Two replicas race to replace a dead primary (SplitBrainAllowed, where
// both may promote): exactly one wins; the other follows it.
func TestHATwoReplicasRaceExactlyOneWins(t *testing.T) {
	c := newHACluster(t, "default", failover.SplitBrainAllowed, "n1", "n2", "n3")
	c.waitPrimary("n1", false, time.Minute)
	waitEndpoint(t, c.node("n2"), "/replica", 30*time.Second)
	waitEndpoint(t, c.node("n3"), "/replica", 30*time.Second)
	c.node("n1").crash()
	var winner string
	retry.Until(t, 30*time.Second, func() error {
		cs, err := c.state()
		if err != nil {
			return err
		}
		if cs.Primary == "n1" {
			return fmt.Errorf("no promotion yet")
		}
		winner = cs.Primary
		return nil
	})
	loser := map[string]string{"n2": "n3", "n3": "n2"}[winner]
	waitEndpoint(t, c.node(winner), "/primary", 30*time.Second)
	waitEndpoint(t, c.node(loser), "/replica", 30*time.Second)
	if code := c.node(loser).endpoint("/primary"); code == http.StatusOK {
		t.Fatalf("both %s and %s answer /primary", winner, loser)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hist, err := c.kv.History(ctx, failover.KeyClusterState)
	if err != nil {
		t.Fatal(err)
	}
	promotions := 0
	for _, e := range hist {
		cs, _, err := failover.DecodeState(e)
		if err == nil && cs.Epoch == 2 && cs.Sync == "" {
			promotions++
		}
	}
	if promotions != 1 {
		t.Fatalf("%d promotions to epoch 2 stored, want exactly 1", promotions)
	}
	if cs, _ := c.state(); cs.Epoch != 2 {
		t.Fatalf("epoch %d, want 2: a second promotion happened", cs.Epoch)
	}
}

// Switchover through the CLI: planned, zero acknowledged writes lost, the
// old primary follows the new one; status and history show it.
func TestHASwitchoverLosesNothing(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n2 := c.node("n2")
	c.waitPrimary("n1", true, time.Minute)
	waitEndpoint(t, n2, "/replica", 30*time.Second)
	w := c.startWriting("n1")
	if out, err := c.cli("switchover", "--to", "n1"); err == nil {
		t.Fatalf("switchover to the primary itself succeeded: %s", out)
	}
	start := time.Now()
	out, err := c.cli("switchover", "--to", "n2")
	if err != nil {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	if !strings.Contains(out, "n2 is primary") {
		t.Errorf("switchover output: %s", out)
	}
	first := w.waitAck(t, "n2", start, 30*time.Second)
	t.Logf("switchover to first acknowledged write on n2: %s", first.acked.Sub(start).Round(time.Millisecond))
	waitEndpoint(t, c.node("n1"), "/replica", time.Minute)
	c.waitPrimary("n2", true, time.Minute)
	w.waitAck(t, "n2", time.Now(), 10*time.Second)
	w.halt()
	w.checkNoOverlap(t, "n1", "n2")
	total := w.checkNoneLost(t, n2.pg)
	t.Logf("%d acknowledged writes, none lost", total)

	// The old primary's next heartbeat reports it a replica.
	retry.Until(t, 10*time.Second, func() error {
		status, err := c.cli("status")
		if err != nil {
			return fmt.Errorf("status: %v\n%s", err, status)
		}
		for _, want := range []string{"primary n2, epoch 2", "n1    sync standby  Replica", "n2    primary       Primary"} {
			if !strings.Contains(status, want) {
				return fmt.Errorf("status lacks %q:\n%s", want, status)
			}
		}
		return nil
	})
	hist, err := c.cli("history", "-o", "json")
	if err != nil {
		t.Fatalf("history: %v\n%s", err, hist)
	}
	var rows []struct {
		Epoch   uint64 `json:"epoch"`
		Primary string `json:"primary"`
		Reason  string `json:"reason"`
	}
	if err := json.Unmarshal([]byte(hist), &rows); err != nil {
		t.Fatalf("history json: %v\n%s", err, hist)
	}
	saw := false
	for _, r := range rows {
		saw = saw || (r.Epoch == 2 && r.Primary == "n2" && strings.Contains(r.Reason, "switchover"))
	}
	if !saw {
		t.Fatalf("history shows no switchover to n2: %s", hist)
	}
}

// Pause stops automatic failover for maintenance: a dead primary is not
// replaced until failover is resumed.
func TestHAPauseHoldsFailover(t *testing.T) {
	c := newHACluster(t, "fast", failover.AbsoluteConsistency, "n1", "n2")
	c.waitPrimary("n1", true, time.Minute)
	if out, err := c.cli("pause"); err != nil || !strings.Contains(out, "paused") {
		t.Fatalf("pause: %v %s", err, out)
	}
	retry.Until(t, 10*time.Second, func() error {
		cs, err := c.state()
		if err != nil || !cs.Paused {
			return fmt.Errorf("not paused yet (%v)", err)
		}
		return nil
	})
	c.node("n1").crash()
	retry.Holds(t, 4*failover.FastTimings().FailoverTimeout, func() error {
		if cs, err := c.state(); err == nil && cs.Primary != "n1" {
			return fmt.Errorf("failover while paused: %+v", cs)
		}
		return nil
	})
	if out, err := c.cli("resume"); err != nil {
		t.Fatalf("resume: %v %s", err, out)
	}
	c.waitPrimary("n2", false, 30*time.Second)
}

// SplitBrainAllowed: a primary cut off from NATS keeps serving; the replica
// promotes; on healing the old primary is demoted and rewound, and the
// transactions it took alone are counted in an event and a metric.
func TestHASplitBrainAllowedCountsDivergence(t *testing.T) {
	c := newHACluster(t, "default", failover.SplitBrainAllowed, "n1", "n2")
	n1 := c.node("n1")
	c.waitPrimary("n1", false, time.Minute)
	waitEndpoint(t, c.node("n2"), "/replica", 30*time.Second)
	c.createTable("n1")
	w := c.startWriter()
	fault := time.Now()
	n1.proxy.Cut()
	t.Logf("n1 cut off from NATS at %s", fault.Format(time.StampMicro))
	w.waitAck(t, "n2", fault, 30*time.Second)
	w.waitAck(t, "n1", time.Now(), 10*time.Second) // still serving, cut off
	t.Logf("healing at %s", time.Now().Format(time.StampMicro))
	n1.proxy.Heal()
	waitEndpoint(t, n1, "/replica", time.Minute)
	w.halt()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	events, err := c.kv.List(ctx, failover.EventPrefix+"diverged.>")
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 {
		t.Fatalf("%d divergence events, want 1", len(events))
	}
	var ev failover.EventRecord
	if err := json.Unmarshal(events[0].Value, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Node != "n1" || ev.Transactions == 0 {
		t.Fatalf("divergence event %+v: want n1 with a positive count", ev)
	}
	// The writes n1 acknowledged that the new primary does not have are
	// what the split brain cost; the event's count is of the same order.
	lost := w.missingOn(t, c.node("n2").pg)
	t.Logf("n1 diverged by %d transactions; %d writes it acknowledged are not on n2", ev.Transactions, lost)
	resp, err := http.Get("http://" + n1.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body strings.Builder
	buf := make([]byte, 64<<10)
	for {
		k, err := resp.Body.Read(buf)
		body.WriteString(string(buf[:k]))
		if err != nil {
			break
		}
	}
	want := fmt.Sprintf(`harmony_failover_diverged_transactions_total{cluster=%q,node="n1"} %d`, c.name, ev.Transactions)
	if !strings.Contains(body.String(), want) {
		t.Fatalf("metrics lack %q", want)
	}
}

// Three nodes: the synchronous standby dies; the primary stops naming it
// (so it cannot be promoted), names the other replica once it has caught
// up, and commits go on. A later failover promotes that replica with every
// acknowledged write.
func TestHASyncStandbyLossDoesNotBlockCommits(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2", "n3")
	cs := c.waitPrimary("n1", true, time.Minute)
	other := map[string]string{"n2": "n3", "n3": "n2"}[cs.Sync]
	waitEndpoint(t, c.node(other), "/replica", 30*time.Second)
	w := c.startWriting("n1")
	c.node(cs.Sync).crash()
	lost := time.Now()
	retry.Until(t, 30*time.Second, func() error {
		now, err := c.state()
		if err != nil || now.Sync != other {
			return fmt.Errorf("synchronous standby %q (%v), want %s", now.Sync, err, other)
		}
		return nil
	})
	w.waitAck(t, "n1", lost, 10*time.Second)
	fault := time.Now()
	c.node("n1").crash()
	w.waitAck(t, other, fault, 30*time.Second)
	w.halt()
	w.checkNoOverlap(t, "n1", other)
	total := w.checkNoneLost(t, c.node(other).pg)
	t.Logf("%d acknowledged writes, none lost", total)
}

// One agent's clock is minutes away from the others': the replica's agent
// runs in a time namespace whose monotonic and boot clocks are ten minutes
// ahead. Nothing compares two machines' clocks, so there is no spurious
// failover, and the real one still happens on time.
func TestHAClockOffsetNeitherCausesNorMissesAFailover(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n1, n2 := c.node("n1"), c.node("n2")
	c.waitPrimary("n1", true, time.Minute)
	n2.stop()
	n2.wrap = []string{"unshare", "--time", "--monotonic", "600", "--boottime", "600"}
	n2.start()
	waitEndpoint(t, n2, "/replica", 30*time.Second)
	before, err := c.state()
	if err != nil {
		t.Fatal(err)
	}
	retry.Holds(t, 3*failover.DefaultTimings().FailoverTimeout, func() error {
		if cs, err := c.state(); err == nil && cs.Epoch != before.Epoch {
			return fmt.Errorf("spurious failover with a skewed clock: %+v", cs)
		}
		return nil
	})
	w := c.startWriting("n1")
	fault := time.Now()
	n1.crash()
	first := w.waitAck(t, "n2", fault, 30*time.Second)
	t.Logf("with a clock ten minutes ahead, fault to first acknowledged write on n2: %s", first.acked.Sub(fault).Round(time.Millisecond))
	w.halt()
	w.checkNoneLost(t, n2.pg)
}

// The primary's PostgreSQL dies and cannot start again while its agent
// runs: the agent fences it; its heartbeats now say Fenced, which holds no
// failover off, so the synchronous standby takes over; the broken node later
// rejoins as a replica (pg_rewind or a fresh base backup).
func TestHAPrimaryPostgresDiesForGood(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n1, n2 := c.node("n1"), c.node("n2")
	c.waitPrimary("n1", true, time.Minute)
	waitEndpoint(t, n2, "/replica", 30*time.Second)
	w := c.startWriting("n1")
	conf := filepath.Join(n1.pg.DataDir, "postgresql.conf")
	if err := os.Rename(conf, conf+".broken"); err != nil {
		t.Fatal(err)
	}
	fault := time.Now()
	for _, pid := range n1.pgPIDs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	first := w.waitAck(t, "n2", fault, time.Minute)
	t.Logf("PostgreSQL death to first acknowledged write on n2: %s", first.acked.Sub(fault).Round(time.Millisecond))
	waitEndpoint(t, n1, "/replica", time.Minute)
	w.halt()
	w.checkNoOverlap(t, "n1", "n2")
	w.checkNoneLost(t, n2.pg)
}

// The whole store goes away (the harmony server and its embedded NATS
// stop) for 10 s, longer than failover_timeout, and comes back on its
// data: in AbsoluteConsistency the primary keeps serving on its
// synchronous standby's promises (the failsafe; the standby is reachable
// over the direct peer link), its PostgreSQL never stops, the standby
// never promotes (it measures the primary's staleness only over time it
// could see the store), and nothing acknowledged is lost.
func TestHAServerRestartStopsNoWrite(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	testStoreBlip(t, c, "stopped", c.stopServer, c.startServer)
}

// The harmony server (with its embedded NATS) is frozen by SIGSTOP for
// 10 s, then resumed: connections stay open but nothing answers, so every
// store call times out. As with a stopped server, the primary keeps
// serving on the failsafe and nothing fails over.
func TestHAServerFrozenStopsNoWrite(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	signal := func(sig syscall.Signal) func() {
		return func() {
			if err := c.server.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(signal(syscall.SIGCONT))
	testStoreBlip(t, c, "frozen", signal(syscall.SIGSTOP), signal(syscall.SIGCONT))
}

// testStoreBlip runs a store outage of 10 s between down and up under a
// writer on the primary n1 and checks that nothing changed: n1 served
// throughout (same postmaster, acknowledging writes), the same primary at
// the same epoch afterwards, n2 never acknowledged, nothing lost.
func testStoreBlip(t *testing.T, c *haCluster, what string, down, up func()) {
	n1 := c.node("n1")
	before := c.waitPrimary("n1", true, time.Minute)
	waitEndpoint(t, c.node("n2"), "/replica", 30*time.Second)
	c.createTable("n1")
	w := c.startWriter()
	w.waitAck(t, "n1", time.Now(), 10*time.Second)
	pm := n1.postmaster()

	fault := time.Now()
	down()
	c.holdServing(t, w, "n1", pm, 10*time.Second)
	back := time.Now()
	up()
	cs := c.waitState(time.Minute)
	if cs.Primary != "n1" || cs.Epoch != before.Epoch {
		t.Fatalf("cluster-state moved from %+v to %+v across the store outage", before, cs)
	}
	w.waitAck(t, "n1", time.Now(), 10*time.Second)
	// Three failover timeouts after the store returned: still no failover,
	// n1 still serving.
	c.holdServing(t, w, "n1", pm, 3*failover.DefaultTimings().FailoverTimeout)
	if cs, err := c.state(); err != nil || cs.Primary != "n1" || cs.Epoch != before.Epoch {
		t.Fatalf("cluster-state after the outage: %+v (%v), want primary n1 at epoch %d", cs, err, before.Epoch)
	}
	w.halt()
	gap, acks := w.gapBetween("n1", fault, back)
	if acks == 0 {
		t.Fatalf("n1 acknowledged no write while the server was %s", what)
	}
	total := w.checkNoneLost(t, n1.pg)
	t.Logf("server %s for %s: n1 acknowledged %d writes meanwhile (longest gap %s); longest gap over the whole episode %s; %d writes, none lost, none on n2",
		what, back.Sub(fault).Round(time.Millisecond), acks, gap.Round(time.Millisecond), w.longestGap("n1", fault).Round(time.Millisecond), total)
}

// The agents start while the store cannot be reached (their paths to NATS
// blackholed): the primary's agent fences its PostgreSQL, as it cannot
// prove it owns the cluster. When the store answers, the cluster still gets
// its first primary (this one), which accepts writes again.
func TestHAStartsBeforeTheStoreAnswers(t *testing.T) {
	c, natsAddr := startHAServer(t, "default", failover.AbsoluteConsistency)
	c.startNodes([]string{"n1", "n2"}, func(n *haNode) {
		n.proxy = netproxy.Start(t, natsAddr)
		n.proxy.Cut()
		n.urls = []string{"nats://" + n.proxy.Addr()}
	})
	n1 := c.node("n1")
	retry.Until(t, 30*time.Second, func() error {
		if running, _ := n1.pg.Running(); running {
			return errors.New("n1 has not fenced its primary yet")
		}
		return nil
	})
	if !logContains(t, n1, "store not answering at start") {
		t.Errorf("n1's log does not say it decided without the store")
	}
	for _, n := range c.nodes {
		n.proxy.Heal()
	}
	c.openBucket()
	cs := c.waitPrimary("n1", true, time.Minute)
	if cs.Epoch != 1 {
		t.Errorf("epoch %d for the first primary, want 1", cs.Epoch)
	}
	w := c.startWriting("n1")
	w.halt()
	w.checkNoneLost(t, n1.pg)
}

// The failover role under enrolled identities: each member may reach its
// own fleet keys and its cluster's bucket only, reads by direct get, and
// the operator's commands use the server's admin identity. A switchover
// and a failover after a crash both work.
func TestHAEnrolledMembers(t *testing.T) {
	c := newEnrolledHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n1, n2 := c.node("n1"), c.node("n2")
	c.waitPrimary("n1", true, time.Minute)
	waitEndpoint(t, n2, "/replica", 30*time.Second)
	if out, err := c.cli("switchover", "--to", "n2"); err != nil {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	waitEndpoint(t, n1, "/replica", time.Minute)
	c.waitPrimary("n2", true, time.Minute)
	w := c.startWriting("n2")
	fault := time.Now()
	n2.crash()
	w.waitAck(t, "n1", fault, 30*time.Second)
	cs := c.waitPrimary("n1", false, 10*time.Second)
	if cs.Epoch != 3 {
		t.Errorf("epoch %d after a switchover and a failover, want 3", cs.Epoch)
	}
	w.halt()
	total := w.checkNoneLost(t, n1.pg)
	t.Logf("%d acknowledged writes, none lost", total)
	for _, n := range c.nodes {
		if logContains(t, n, "Permissions Violation") || logContains(t, n, "refused this identity") {
			t.Errorf("%s was refused something under its identity", n.name)
		}
	}
}

// The server restart of TestHAServerRestartStopsNoWrite with the members
// under enrolled identities: every store call goes through the server's
// relay, which the restart takes away as well; the failsafe holds the same.
func TestHAEnrolledServerRestartStopsNoWrite(t *testing.T) {
	c := newEnrolledHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	testStoreBlip(t, c, "stopped", c.stopServer, c.startServer)
}
