package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/testutil/netproxy"
)

// BenchmarkFailoverRTO measures the recovery time objective as a client sees
// it: from the fault to the first write acknowledged by the new primary,
// with a fresh two-node cluster (real PostgreSQL 15, agents as processes,
// AbsoluteConsistency) per run. Run it with -benchtime 1x and -count N for N
// trials; scripts/benchsummary gives min/median/max of rto-ms.
func BenchmarkFailoverRTO(b *testing.B) {
	faults := map[string]func(n *haNode){
		"kill":   func(n *haNode) { n.crash() },
		"freeze": func(n *haNode) { n.signalAll(syscall.SIGSTOP) },
		// Cut from the store alone, a primary keeps serving on its
		// standby's promises (the failsafe): the partition cuts the
		// failsafe links too.
		"partition": func(n *haNode) { n.isolate() },
	}
	for _, profile := range []string{"default", "fast"} {
		for _, fault := range []string{"kill", "freeze", "partition"} {
			b.Run(profile+"/"+fault, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					rto := rtoTrial(b, newHACluster(b, profile, failover.AbsoluteConsistency, "n1", "n2"), faults[fault])
					b.ReportMetric(float64(rto.Microseconds())/1000, "rto-ms")
				}
			})
		}
	}
	// The same on a three-member NATS cluster (failover bucket at three
	// replicas), each node linked to every member through its own paths.
	for _, fault := range []string{"kill", "freeze", "partition"} {
		b.Run("cluster3/default/"+fault, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				mc := newMeshCluster(b)
				links, paths := map[string][]string{}, map[string][]*netproxy.Proxy{}
				for _, n := range []string{"n1", "n2"} {
					for _, m := range mc.members {
						p := netproxy.Start(b, m.nats)
						links[n], paths[n] = append(links[n], "nats://"+p.Addr()), append(paths[n], p)
					}
				}
				c := newHAClusterOn(b, mc, "default", failover.AbsoluteConsistency, directURLs(mc, 0, 1, 2), links, "n1", "n2")
				c.paths = paths
				rto := rtoTrial(b, c, faults[fault])
				b.ReportMetric(float64(rto.Microseconds())/1000, "rto-ms")
			}
		})
	}
}

func rtoTrial(b *testing.B, c *haCluster, inject func(*haNode)) time.Duration {
	b.StopTimer()
	c.waitPrimary("n1", true, time.Minute)
	c.createTable("n1")
	w := c.startWriter()
	w.waitAck(b, "n1", time.Now(), 10*time.Second)
	b.StartTimer()
	fault := time.Now()
	inject(c.node("n1"))
	first := w.waitAck(b, "n2", fault, time.Minute)
	b.StopTimer()
	c.node("n1").signalAll(syscall.SIGCONT)
	w.halt()
	// (A frozen primary may confirm, after it resumes, commits it had
	// replicated before the freeze: the overlap check is the functional
	// tests' business; here nothing may be lost.)
	w.checkNoneLost(b, c.node("n2").pg)
	return first.acked.Sub(fault)
}
