package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// signalAgent sends sig to the node's agent only (its PostgreSQL and its
// guard keep running).
func (n *haNode) signalAgent(t *testing.T, sig syscall.Signal) {
	t.Helper()
	n.mu.Lock()
	cmd := n.agent
	n.mu.Unlock()
	if cmd == nil {
		t.Fatalf("%s: no agent runs", n.name)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// pgStops waits until the node's PostgreSQL no longer runs and returns how
// long after since that was seen.
func (n *haNode) pgStops(t *testing.T, since time.Time, within time.Duration) time.Duration {
	t.Helper()
	retry.Until(t, within, func() error {
		if running, _ := n.pg.Running(); running {
			return fmt.Errorf("%s's PostgreSQL still runs %s after its agent stopped", n.name, time.Since(since).Round(time.Millisecond))
		}
		return nil
	})
	return time.Since(since)
}

// guardFenced checks the guard's own log says it stopped PostgreSQL (the
// agent did not: it was dead or frozen).
func (n *haNode) guardFenced(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.c.dir, n.name+"-state", "guard-"+n.c.name+".log"))
	if err != nil {
		t.Fatalf("the guard's log: %v", err)
	}
	if !strings.Contains(string(b), "msg=fenced") {
		t.Fatalf("the guard's log records no fence:\n%s", b)
	}
}

// The primary's agent is SIGKILLed while PostgreSQL keeps running: the
// guard the agent fed stops PostgreSQL (nobody else would), the standby
// takes over, no two nodes acknowledge writes at once and nothing
// acknowledged is lost; the old node rejoins when its agent is back.
func TestHAAgentKilledGuardFences(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n1, n2 := c.node("n1"), c.node("n2")
	c.waitPrimary("n1", true, time.Minute)
	w := c.startWriting("n1")
	w.waitAck(t, "n1", time.Now(), 30*time.Second)

	fault := time.Now()
	n1.kill()
	stopped := n1.pgStops(t, fault, 30*time.Second)
	first := w.waitAck(t, "n2", fault, time.Minute)
	t.Logf("agent SIGKILL: PostgreSQL stopped by the guard within %s; first write on n2 after %s",
		stopped.Round(time.Millisecond), first.acked.Sub(fault).Round(time.Millisecond))
	n1.guardFenced(t)

	n1.start()
	waitEndpoint(t, n1, "/replica", 2*time.Minute)
	c.waitPrimary("n2", true, time.Minute)
	w.halt()
	w.checkNoOverlap(t, "n1", "n2")
	total := w.checkNoneLost(t, n2.pg)
	t.Logf("%d acknowledged writes, none lost", total)
}

// The primary's agent alone is frozen (SIGSTOP) for 10 s while PostgreSQL
// runs on: the guard stops PostgreSQL, the standby takes over; after
// SIGCONT the old agent finds its PostgreSQL stopped and someone else
// named, and rejoins as a replica. Nothing acknowledged is lost.
func TestHAAgentFrozenGuardFences(t *testing.T) {
	c := newHACluster(t, "default", failover.AbsoluteConsistency, "n1", "n2")
	n1, n2 := c.node("n1"), c.node("n2")
	c.waitPrimary("n1", true, time.Minute)
	w := c.startWriting("n1")
	w.waitAck(t, "n1", time.Now(), 30*time.Second)

	fault := time.Now()
	n1.signalAgent(t, syscall.SIGSTOP)
	stopped := n1.pgStops(t, fault, 30*time.Second)
	first := w.waitAck(t, "n2", fault, time.Minute)
	t.Logf("agent SIGSTOP: PostgreSQL stopped by the guard within %s; first write on n2 after %s",
		stopped.Round(time.Millisecond), first.acked.Sub(fault).Round(time.Millisecond))
	// The rest of the 10 s freeze: the old primary stays down.
	if rest := 10*time.Second - time.Since(fault); rest > 0 {
		retry.Holds(t, rest, func() error {
			if running, _ := n1.pg.Running(); running {
				return errors.New("n1's PostgreSQL runs again while its agent is frozen")
			}
			return nil
		})
	}
	n1.guardFenced(t)
	n1.signalAgent(t, syscall.SIGCONT)
	waitEndpoint(t, n1, "/replica", 2*time.Minute)
	cs := c.waitPrimary("n2", true, time.Minute)
	if cs.Epoch != 2 {
		t.Errorf("epoch %d after one failover, want 2", cs.Epoch)
	}
	w.halt()
	w.checkNoOverlap(t, "n1", "n2")
	total := w.checkNoneLost(t, n2.pg)
	t.Logf("%d acknowledged writes, none lost", total)
}
