package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/mesh/meshtest"
	"github.com/harmony-fleet/harmony/internal/testutil/netproxy"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// startClusterAgent runs a fleet agent (label site=home) given urls.
func startClusterAgent(t *testing.T, id string, urls []string) *proc {
	root := t.TempDir()
	return startHarmony(t, "agent", "--http", "127.0.0.1:0", "--id", id, "--nats-url", strings.Join(urls, ","),
		"--state-dir", filepath.Join(root, "state"), "--label", "site=home", "--allowed-roots", filepath.Join(root, "files"),
		"--shell-jobs", "--heartbeat-interval", "300ms", "--resync-interval", "1s")
}

// applyVia applies deployment hello (a note makes each apply a new
// generation) through the API at api, retrying until it is accepted.
func applyVia(t *testing.T, api, note string) {
	t.Helper()
	path := deploymentFile(t, "hello", "site: home", note)
	retry.Until(t, time.Minute, func() error {
		if out, errOut, code := cli(t, api, "apply", "-f", path); code != 0 {
			return fmt.Errorf("apply through %s: %s %s", api, out, errOut)
		}
		return nil
	})
}

// waitGeneration waits until the API at api reports deployment hello at
// least at generation gen and succeeded on all of its matched devices.
func waitGeneration(t *testing.T, api string, gen int64, devices int) {
	t.Helper()
	retry.Until(t, time.Minute, func() error {
		d, err := describe(t, api, "hello")
		if err != nil {
			return err
		}
		if d.Status.Generation < gen || d.Status.Matched != devices || d.Status.Succeeded != devices || d.Status.Offline != 0 {
			return fmt.Errorf("through %s: %+v", api, d.Status)
		}
		return nil
	})
}

// Three harmony servers whose embedded NATS servers form one JetStream
// cluster, buckets at three replicas: a deployment applied through one is
// served by the others; an agent given all three NATS URLs moves to a
// survivor when its server is killed, and the fleet keeps converging
// through the two that are left; the killed one rejoins and catches up.
func TestThreeServersFormOneCluster(t *testing.T) {
	mc := newMeshCluster(t)
	startClusterAgent(t, "c1", mc.urls())
	applyVia(t, mc.members[0].http, "one")
	for _, m := range mc.members {
		waitCounts(t, m.http, "hello", 1, 1, 0)
	}
	mc.kill(0)
	applyVia(t, mc.members[1].http, "two")
	waitGeneration(t, mc.members[2].http, 2, 1)
	mc.start(0)
	waitGeneration(t, mc.members[0].http, 2, 1)
}

// applier applies new generations of deployment hello through the API of
// whichever member answers, as fast as it can, and counts the applies the
// API acknowledged and the longest time without one.
type applier struct {
	mu      sync.Mutex
	acked   int
	last    time.Time
	longest time.Duration
	failed  int
	stop    chan struct{}
	done    chan struct{}
}

func startApplier(t *testing.T, mc *meshCluster) *applier {
	a := &applier{stop: make(chan struct{}), done: make(chan struct{}), last: time.Now()}
	client := http.Client{Timeout: 10 * time.Second, Transport: bearer{http.DefaultTransport}}
	go func() {
		defer close(a.done)
		for i := 0; ; i++ {
			select {
			case <-a.stop:
				return
			default:
			}
			m := mc.members[i%len(mc.members)]
			doc := fmt.Sprintf(`{"apiVersion":"harmony/v1alpha1","kind":"Deployment","metadata":{"name":"hello"},`+
				`"spec":{"selector":{"matchLabels":{"site":"home"}},"resources":[{"id":"hello","kind":"ShellJob",`+
				`"spec":{"command":["echo","%d"]}}]}}`, i)
			resp, err := client.Post("http://"+m.http+"/api/v1/deployments", "application/json", bytes.NewReader([]byte(doc)))
			ok := err == nil && resp.StatusCode < 300
			if err == nil {
				resp.Body.Close()
			}
			now := time.Now()
			a.mu.Lock()
			if ok {
				a.acked++
				if gap := now.Sub(a.last); gap > a.longest {
					a.longest = gap
				}
				a.last = now
			} else {
				a.failed++
			}
			a.mu.Unlock()
		}
	}()
	t.Cleanup(a.halt)
	return a
}

func (a *applier) halt() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
}

func (a *applier) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.acked
}

// waitMore waits until n more applies were acknowledged.
func (a *applier) waitMore(t *testing.T, n int) {
	t.Helper()
	base := a.count()
	retry.Until(t, time.Minute, func() error {
		if got := a.count() - base; got < n {
			return fmt.Errorf("%d of %d applies acknowledged", got, n)
		}
		return nil
	})
}

// checkKept: the stored generation (a consistent read from the store)
// counts every acknowledged apply (each one changed the spec), so none was
// lost. It also waits for member m's view to show that generation and logs
// how long its view lagged.
func (a *applier) checkKept(t *testing.T, mc *meshCluster, m *clusterMember) int64 {
	t.Helper()
	a.mu.Lock()
	acked := a.acked
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var gen int64
	st := storeAt(t, strings.Join(directURLs(mc, 0, 1, 2), ","))
	retry.Until(t, 30*time.Second, func() error {
		kv, err := st.Open(ctx, "deployments")
		if err != nil {
			return err
		}
		e, err := kv.Get(ctx, "hello")
		if err != nil {
			return err
		}
		sd, err := v1.DecodeStoredDeployment(e.Value)
		if err != nil {
			t.Fatal(err)
		}
		gen = sd.Deployment.Metadata.Generation
		return nil
	})
	if gen < int64(acked) {
		t.Fatalf("generation %d in the store after %d acknowledged applies: an acknowledged apply was lost", gen, acked)
	}
	began := time.Now()
	retry.Until(t, time.Minute, func() error {
		d, err := describe(t, m.http, "hello")
		if err != nil {
			return err
		}
		if d.Status.Generation < gen {
			return fmt.Errorf("%s's view shows generation %d, the store %d", m.name, d.Status.Generation, gen)
		}
		return nil
	})
	t.Logf("%s's view reached generation %d %s after the store check", m.name, gen, time.Since(began).Round(time.Millisecond))
	return gen
}

// coordinationStreams are the streams a stream-leader kill should hit: the
// fleet's and the failover cluster's.
func (c *haCluster) coordinationStreams() []string {
	return append([]string{"KV_" + failover.BucketName(c.name)}, fleetStreams...)
}

// The member that leads every coordination stream (fleet buckets and the
// failover cluster's bucket) is SIGKILLed while deployments are being
// applied and a failover cluster is running with a healthy primary: no
// acknowledged apply or write is lost, the fleet converges, and the failover
// cluster does not fail over (same primary, same epoch). Through the
// election the primary keeps serving on its standby's promises (the
// failsafe): its PostgreSQL never stops and it acknowledges writes while
// the streams have no leader.
func TestClusterLeaderKillIsNotAFailover(t *testing.T) {
	mc := newMeshCluster(t)
	startClusterAgent(t, "c1", mc.urls())
	startClusterAgent(t, "c2", mc.urls())
	all := mc.urls()
	c := newHAClusterOn(t, mc, "default", failover.AbsoluteConsistency, directURLs(mc, 0, 1, 2),
		map[string][]string{"n1": all, "n2": all}, "n1", "n2")
	c.waitPrimary("n1", true, time.Minute)
	w := c.startWriting("n1")
	js := mc.js()
	mc.moveLeaders(js, "s3", c.coordinationStreams()...)
	// Moving a leader is a short election: the primary may fence for a
	// moment and drop its synchronous standby; the kill comes once the
	// cluster is whole again.
	c.waitPrimary("n1", true, time.Minute)
	a := startApplier(t, mc)
	a.waitMore(t, 5)
	pm := c.node("n1").postmaster()

	fault := time.Now()
	mc.kill(2)
	a.waitMore(t, 10)
	// The applies resumed: the fleet streams have elected their leaders.
	elected := time.Now()
	w.waitAck(t, "n1", time.Now(), time.Minute)
	a.halt()
	// The failover bucket's stream may still be electing its leader (the
	// primary, serving on the failsafe, does not wait for it).
	cs := c.waitState(time.Minute)
	if cs.Primary != "n1" || cs.Epoch != 1 {
		t.Fatalf("a stream-leader kill caused a failover: primary %s epoch %d", cs.Primary, cs.Epoch)
	}
	if got := c.node("n1").postmaster(); got != pm {
		t.Fatalf("n1's postmaster is %d, was %d before the kill: PostgreSQL stopped (fenced) during the election", got, pm)
	}
	electionGap, electionAcks := w.gapBetween("n1", fault, elected)
	if electionAcks == 0 {
		t.Fatalf("n1 acknowledged no write in the %s from the kill to the applies resuming", elected.Sub(fault).Round(time.Millisecond))
	}
	gen := a.checkKept(t, mc, mc.members[0])
	waitGeneration(t, mc.members[1].http, gen, 2)
	w.halt()
	total := w.checkNoneLost(t, c.node("n1").pg)
	t.Logf("leader kill: %d applies acknowledged (longest gap %s), generation %d; %d writes acknowledged, none lost; n1 write gap %s (%d writes acknowledged in the %s from the kill to the applies resuming, longest gap there %s)",
		a.acked, a.longest.Round(time.Millisecond), gen, total, w.longestGap("n1", fault).Round(time.Millisecond),
		electionAcks, elected.Sub(fault).Round(time.Millisecond), electionGap.Round(time.Millisecond))

	// The killed member comes back and catches up.
	mc.start(2)
	mc.waitCurrent(js, c.coordinationStreams()...)
	waitGeneration(t, mc.members[2].http, gen, 2)
}

// The stream leader's member and the primary's whole node die together: the
// failover still happens once the streams have a new leader (epoch 2, the
// replica acknowledges writes) and nothing acknowledged is lost.
func TestClusterLeaderKillDoesNotHideARealFailover(t *testing.T) {
	mc := newMeshCluster(t)
	all := mc.urls()
	c := newHAClusterOn(t, mc, "default", failover.AbsoluteConsistency, directURLs(mc, 0, 1, 2),
		map[string][]string{"n1": all, "n2": all}, "n1", "n2")
	c.waitPrimary("n1", true, time.Minute)
	w := c.startWriting("n1")
	mc.moveLeaders(mc.js(), "s3", c.coordinationStreams()...)
	// A primary without a named synchronous standby (it may drop it
	// during the leader moves) cannot fail over in AbsoluteConsistency:
	// the fault comes once the standby is named again.
	c.waitPrimary("n1", true, time.Minute)

	fault := time.Now()
	mc.kill(2)
	c.node("n1").crash()
	first := w.waitAck(t, "n2", fault, time.Minute)
	t.Logf("leader kill + primary crash to first acknowledged write on n2: %s", first.acked.Sub(fault).Round(time.Millisecond))
	cs := c.waitPrimary("n2", false, 30*time.Second)
	if cs.Epoch != 2 {
		t.Errorf("epoch %d after one failover, want 2", cs.Epoch)
	}
	w.halt()
	w.checkNoOverlap(t, "n1", "n2")
	total := w.checkNoneLost(t, c.node("n2").pg)
	t.Logf("%d acknowledged writes, none lost", total)
}

// directURLs are members' client addresses without the proxies (for the
// test's own store reads).
func directURLs(mc *meshCluster, members ...int) []string {
	var out []string
	for _, i := range members {
		out = append(out, "nats://"+mc.members[i].nats)
	}
	return out
}

// Member s3 is cut off from s1, s2 and the clients on their side. The fleet
// agent that was connected to s3 moves to s1 or s2 and keeps converging;
// the primary, whose only link is to s3, fences; the replica (linked to s1
// and s2) promotes; nothing acknowledged is lost. After the heal the old
// primary rejoins as a replica.
//
// The partition puts the primary on the minority side with s3, so it also
// loses its failsafe link to the replica (its path to n2's listener is cut
// with the rest): were that link left up, the replica would keep promising
// and the primary keep serving, which TestHAPrimaryCutFromStoreOnlyKeepsServing
// covers; this test is about the minority side giving the role up.
// PostgreSQL replication is not cut (as in the single-server partition
// test), so the promoted replica has every acknowledged write.
func TestClusterMinorityPartition(t *testing.T) {
	mc := newMeshCluster(t)
	// The fleet agent starts on s3: the two other paths refuse for now.
	mc.clients[0].Refuse()
	mc.clients[1].Refuse()
	agent := startClusterAgent(t, "c1", []string{mc.url(2), mc.url(0), mc.url(1)})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fleet agent c1 (tail):\n%s", tail(agent.stderr.String(), 6000))
		}
	})
	applyVia(t, mc.members[2].http, "before")
	waitGeneration(t, mc.members[2].http, 1, 1)
	mc.heal()

	// n1 reaches NATS only through its own path to s3, which the partition
	// leaves up; n2 only through s1 and s2.
	private := newPrivateLink(t, mc.members[2].nats)
	c := newHAClusterOn(t, mc, "default", failover.AbsoluteConsistency, directURLs(mc, 0, 1),
		map[string][]string{"n1": {private}, "n2": mc.urls(0, 1)}, "n1", "n2")
	c.waitPrimary("n1", true, time.Minute)
	w := c.startWriting("n1")

	fault := time.Now()
	mc.partition(2)
	c.node("n1").cutPeers()
	first := w.waitAck(t, "n2", fault, time.Minute)
	t.Logf("partition of s3 to first acknowledged write on n2: %s", first.acked.Sub(fault).Round(time.Millisecond))
	cs := c.waitPrimary("n2", false, 30*time.Second)
	if cs.Epoch != 2 {
		t.Errorf("epoch %d after one failover, want 2", cs.Epoch)
	}
	if c.node("n1").endpoint("/primary") == http.StatusOK {
		t.Errorf("n1 still claims the primary role on the minority side")
	}
	// The fleet agent left s3: a change applied on the majority side reaches it.
	applyVia(t, mc.members[0].http, "during")
	waitGeneration(t, mc.members[0].http, 2, 1)
	if agent.cmd.ProcessState != nil {
		t.Fatalf("the fleet agent exited: %s", agent.stderr)
	}

	mc.heal()
	c.node("n1").healPeers()
	waitEndpoint(t, c.node("n1"), "/replica", time.Minute)
	c.waitPrimary("n2", true, time.Minute)
	mc.waitCurrent(mc.js(0, 1), c.coordinationStreams()...)
	waitGeneration(t, mc.members[2].http, 2, 1)
	w.halt()
	w.checkNoOverlap(t, "n1", "n2")
	total := w.checkNoneLost(t, c.node("n2").pg)
	t.Logf("%d acknowledged writes, none lost", total)
}

// Every member is restarted in turn (SIGTERM, start, caught up) while
// deployments are applied through whichever API answers and a fleet agent
// runs: every acknowledged apply is kept, the fleet converges, and the
// longest time without an acknowledged apply is logged (the benchmark
// records it).
func TestClusterRollingRestart(t *testing.T) {
	mc := newMeshCluster(t)
	startClusterAgent(t, "c1", mc.urls())
	startClusterAgent(t, "c2", mc.urls())
	js := mc.js()
	a := startApplier(t, mc)
	a.waitMore(t, 5)
	for i := range mc.members {
		began := time.Now()
		mc.stop(i)
		a.waitMore(t, 3) // the API answers while one member is down
		mc.start(i)
		mc.waitCurrent(js, fleetStreams...)
		t.Logf("%s restarted and caught up in %s", mc.members[i].name, time.Since(began).Round(time.Millisecond))
		a.waitMore(t, 3)
	}
	a.halt()
	gen := a.checkKept(t, mc, mc.members[0])
	for _, m := range mc.members {
		waitGeneration(t, m.http, gen, 2)
	}
	if a.count() == 0 {
		t.Fatal("no apply acknowledged")
	}
	t.Logf("rolling restart: %d applies acknowledged, %d refused or failed, longest gap %s", a.acked, a.failed, a.longest.Round(time.Millisecond))
}

// newPrivateLink is a path to addr of one client alone, which a partition
// of the shared paths leaves up.
func newPrivateLink(t *testing.T, addr string) string {
	return "nats://" + netproxy.Start(t, addr).Addr()
}

// Two harmony servers on an external three-node NATS cluster (no embedded
// NATS; buckets at three replicas): both serve the API, exactly one holds
// the orphan-collection lease, and an agent given the three URLs converges
// through a NATS node's loss.
func TestServersOnAnExternalNATSCluster(t *testing.T) {
	nc := meshtest.StartCluster(t, 3)
	urls := strings.Join(nc.URLs(), ",")
	var apis []string
	for range 2 {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		startHarmony(t, "server", "--nats-url", urls, "--data-dir", t.TempDir(), "--http", addr, "--replicas", "3", "--heartbeat-staleness", "3s")
		waitReady(t, "http://"+addr)
		apis = append(apis, addr)
	}
	startClusterAgent(t, "c1", nc.URLs())
	applyVia(t, apis[0], "one")
	for _, api := range apis {
		waitGeneration(t, api, 1, 1)
	}
	retry.Until(t, 20*time.Second, func() error {
		held := 0
		for _, api := range apis {
			if metric(t, api, `harmony_server_lease_held{lease="orphan-gc"}`) == 1 {
				held++
			}
		}
		if held != 1 {
			return fmt.Errorf("%d servers hold the lease", held)
		}
		return nil
	})
	nc.Stop(0)
	applyVia(t, apis[1], "two")
	waitGeneration(t, apis[0], 2, 1)
}
