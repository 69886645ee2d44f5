package e2e

import (
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover"
)

// BenchmarkFailoverRTO measures the recovery time objective as a client sees
// it: from the fault to the first write acknowledged by the new primary,
// with a fresh two-node cluster (real PostgreSQL 15, agents as processes,
// AbsoluteConsistency) per run. Run it with -benchtime 1x and -count N for N
// trials; scripts/benchsummary gives min/median/max of rto-ms.
func BenchmarkFailoverRTO(b *testing.B) {
	faults := map[string]func(n *haNode){
		"kill":      func(n *haNode) { n.crash() },
		"freeze":    func(n *haNode) { n.signalAll(syscall.SIGSTOP) },
		"partition": func(n *haNode) { n.proxy.Cut() },
	}
	for _, profile := range []string{"default", "fast"} {
		for _, fault := range []string{"kill", "freeze", "partition"} {
			b.Run(profile+"/"+fault, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					rto := rtoTrial(b, profile, faults[fault])
					b.ReportMetric(float64(rto.Microseconds())/1000, "rto-ms")
				}
			})
		}
	}
}

func rtoTrial(b *testing.B, profile string, inject func(*haNode)) time.Duration {
	b.StopTimer()
	c := newHACluster(b, profile, failover.AbsoluteConsistency, "n1", "n2")
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
