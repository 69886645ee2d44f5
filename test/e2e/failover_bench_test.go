package e2e

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover"
)

// rtoTrials is how many trials each RTO benchmark runs: 3 by default,
// HARMONY_RTO_TRIALS for the published numbers.
func rtoTrials(b *testing.B) int {
	if v := os.Getenv("HARMONY_RTO_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("HARMONY_RTO_TRIALS=%q: want a positive number", v)
		}
		return n
	}
	return 3
}

// BenchmarkFailoverRTO measures the recovery time objective as a client sees
// it: from the fault to the first write acknowledged by the new primary,
// with a fresh two-node cluster (real PostgreSQL 15, agents as processes,
// AbsoluteConsistency) per trial.
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
					var rtos []time.Duration
					for trial := 0; trial < rtoTrials(b); trial++ {
						b.Run(fmt.Sprintf("trial-%d", trial), func(b *testing.B) {
							rtos = append(rtos, rtoTrial(b, profile, faults[fault]))
						})
					}
					slices.Sort(rtos)
					ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
					b.ReportMetric(ms(rtos[0]), "min-ms")
					b.ReportMetric(ms(rtos[len(rtos)/2]), "median-ms")
					b.ReportMetric(ms(rtos[len(rtos)-1]), "max-ms")
					b.ReportMetric(float64(len(rtos)), "trials")
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
