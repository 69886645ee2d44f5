package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harmony-fleet/harmony/internal/failover"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// BenchmarkFailsafeWriteGap measures how long a primary stops acknowledging
// writes through a control-plane blip that its synchronous standby rides
// out with it (the failsafe): a writer commits back to back on the primary
// (n1 at first) of a two-node cluster (real PostgreSQL 15, agents as processes,
// AbsoluteConsistency, default profile), and the measure is the longest
// time without an acknowledged write from the fault's start to 10 s after
// it ends. Faults, each 10 s long:
//
//   - restart: the harmony server (embedded NATS) stops, stays down, starts;
//   - freeze: the server is SIGSTOPped, then SIGCONTed;
//   - leaderkill: in a three-server cluster, the member leading the
//     failover bucket's stream is SIGKILLed, stays down, starts again.
//
// One cluster per scenario serves every trial (HARMONY_BENCH_TRIALS, 10 by
// default). A trial fails when the cluster fails over, an acknowledged
// write is lost or the harness cannot run it (the next trial measures
// whichever node is primary then); a failed trial is reported
// (metric failed-trials, its reason logged and written to the CSV) and never
// dropped. HARMONY_BENCH_CSV names a file the per-trial rows are appended to.
// Run it with -benchtime 1x.
func BenchmarkFailsafeWriteGap(b *testing.B) {
	trials := 10
	if v := os.Getenv("HARMONY_BENCH_TRIALS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("HARMONY_BENCH_TRIALS=%q: want a positive number", v)
		}
		trials = n
	}
	b.Run("restart", func(b *testing.B) {
		for range b.N {
			c := newHACluster(b, "default", failover.AbsoluteConsistency, "n1", "n2")
			listen := strings.TrimPrefix(c.natsURL, "nats://")
			gapTrials(b, c, trials, nil, func(t testing.TB) (up func()) {
				c.stopServer()
				retry.Holds(t, 10*time.Second, func() error {
					if conn, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
						conn.Close()
						return errors.New("the NATS port answers while the server is stopped")
					}
					return nil
				})
				return c.startServer
			}, func() {
				if c.server.cmd.ProcessState != nil {
					c.startServer()
				}
			})
		}
	})
	b.Run("freeze", func(b *testing.B) {
		for range b.N {
			c := newHACluster(b, "default", failover.AbsoluteConsistency, "n1", "n2")
			cont := func() { _ = c.server.cmd.Process.Signal(syscall.SIGCONT) }
			b.Cleanup(cont)
			gapTrials(b, c, trials, nil, func(t testing.TB) (up func()) {
				if err := c.server.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				stopped := func() error {
					if s := procState(c.server.cmd.Process.Pid); s != "T" {
						return fmt.Errorf("the server's state is %q, not stopped", s)
					}
					return nil
				}
				retry.Until(t, 5*time.Second, stopped) // the signal takes effect
				retry.Holds(t, 10*time.Second, stopped)
				return cont
			}, cont)
		}
	})
	b.Run("leaderkill", func(b *testing.B) {
		for range b.N {
			mc := newMeshCluster(b)
			all := mc.urls()
			c := newHAClusterOn(b, mc, "default", failover.AbsoluteConsistency, directURLs(mc, 0, 1, 2),
				map[string][]string{"n1": all, "n2": all}, "n1", "n2")
			js := mc.js()
			stream := "KV_" + failover.BucketName(c.name)
			const victim = 2
			prepare := func(t testing.TB) {
				// Not measured: the leader moves to the victim and the
				// cluster settles (a synchronous standby named) first.
				mc.t = t
				mc.moveLeaders(js, mc.members[victim].name, stream)
				c.waitPrimary("n1", true, time.Minute)
			}
			gapTrials(b, c, trials, prepare, func(t testing.TB) (up func()) {
				mc.kill(victim)
				retry.Holds(t, 10*time.Second, func() error {
					if mc.members[victim].proc.cmd.ProcessState == nil {
						return errors.New("the killed member runs")
					}
					return nil
				})
				return func() {
					mc.start(victim)
				}
			}, func() {
				mc.t = b
				if mc.members[victim].proc.cmd.ProcessState != nil {
					mc.start(victim)
				}
				mc.waitCurrent(js, stream)
			})
		}
	})
}

// gapTrial is one trial's outcome.
type gapTrial struct {
	primary string        // the node serving when the trial began
	gap     time.Duration // longest time it acknowledged no write in the window
	acks    int           // writes it acknowledged in the window
	fenced  bool          // its PostgreSQL stopped during the trial
	err     error         // the trial failed (failover, loss, harness)
}

// gapTrials runs trials of fault on cluster c under one writer committing
// back to back on every node (only the primary acknowledges), reports
// min/median/max of the trials that ran through and the number that
// failed, and appends every trial to HARMONY_BENCH_CSV. Each trial measures
// whichever node is primary when it begins (n1 unless an earlier trial
// failed over), so a failed trial does not spoil the next. prepare (if
// any) runs before each trial, unmeasured; fault starts the fault, holds
// it for its duration and returns how to end it; restore runs after every
// trial (successful or not) and brings the cluster back to a state a trial
// can start from.
func gapTrials(b *testing.B, c *haCluster, trials int, prepare func(testing.TB), fault func(t testing.TB) (up func()), restore func()) {
	b.StopTimer()
	c.waitPrimary("n1", true, time.Minute)
	c.createTable("n1")
	w := c.startWriter()
	w.waitAck(b, "n1", time.Now(), 10*time.Second)
	var results []gapTrial
	for i := range trials {
		r := runGapTrial(b, c, w, prepare, fault, restore)
		results = append(results, r)
		if r.err != nil {
			b.Logf("trial %d: FAILED: %v (primary %s, gap %s, %d acks, fenced %v)", i+1, r.err, r.primary, r.gap.Round(time.Millisecond), r.acks, r.fenced)
		} else {
			b.Logf("trial %d: primary %s, gap %s, %d acks, fenced %v", i+1, r.primary, r.gap.Round(time.Millisecond), r.acks, r.fenced)
		}
	}
	w.halt()
	var ms []float64
	failed := 0
	for _, r := range results {
		if r.err != nil {
			failed++
			continue
		}
		ms = append(ms, float64(r.gap.Microseconds())/1000)
	}
	slices.Sort(ms)
	if len(ms) > 0 {
		b.ReportMetric(ms[0], "gap-ms-min")
		b.ReportMetric(ms[len(ms)/2], "gap-ms-median")
		b.ReportMetric(ms[len(ms)-1], "gap-ms-max")
	}
	b.ReportMetric(float64(len(ms)), "trials-ok")
	b.ReportMetric(float64(failed), "failed-trials")
	writeGapCSV(b, results)
}

// runGapTrial runs one trial; a failure of the harness's checks (t.Fatal
// from a helper) ends the trial, not the benchmark.
func runGapTrial(b *testing.B, c *haCluster, w *writer, prepare func(testing.TB), fault func(testing.TB) func(), restore func()) (r gapTrial) {
	t := trialTB{b}
	c.t = t
	var start, end time.Time
	defer func() {
		if p := recover(); p != nil {
			f, ok := p.(trialFailure)
			if !ok {
				panic(p)
			}
			r.err = errors.New(f.msg)
			if !end.IsZero() {
				r.gap, r.acks = w.gapBetween(r.primary, start, time.Now())
			}
		}
		b.StopTimer()
		c.t = b
		restore()
	}()
	if prepare != nil {
		prepare(t)
	}
	before := c.waitState(time.Minute)
	r.primary = before.Primary
	before = c.waitPrimary(r.primary, true, time.Minute)
	w.waitAck(t, r.primary, time.Now(), 30*time.Second)
	n := c.node(r.primary)
	pm := n.postmaster()
	start = time.Now()
	b.StartTimer()
	up := fault(t)
	end = time.Now()
	up()
	// The window's last 10 s: no failover may happen.
	retry.Holds(t, 10*time.Second, func() error {
		if cs, err := c.state(); err == nil && (cs.Primary != before.Primary || cs.Epoch != before.Epoch) {
			return fmt.Errorf("failover: cluster-state moved from %+v to %+v", before, cs)
		}
		return nil
	})
	b.StopTimer()
	r.gap, r.acks = w.gapBetween(r.primary, start, end.Add(10*time.Second))
	r.fenced = n.postmaster() != pm
	if cs := c.waitState(time.Minute); cs.Primary != before.Primary || cs.Epoch != before.Epoch {
		t.Fatalf("failover: cluster-state moved from %+v to %+v", before, cs)
	}
	if r.fenced {
		// Serving again (unfenced) before the loss check reads it.
		c.waitPrimary(r.primary, false, time.Minute)
	}
	if lost := w.missingOn(t, n.pg); lost > 0 {
		t.Fatalf("%d acknowledged writes lost", lost)
	}
	return r
}

// trialFailure carries a failed check out of a trial.
type trialFailure struct{ msg string }

// trialTB is the benchmark's TB whose failures end the trial (by a panic
// runGapTrial recovers) instead of the benchmark, so that a failed trial
// is counted and reported rather than hiding the others.
type trialTB struct{ testing.TB }

func (t trialTB) Fatal(args ...any) { panic(trialFailure{fmt.Sprint(args...)}) }
func (t trialTB) Fatalf(format string, args ...any) {
	panic(trialFailure{fmt.Sprintf(format, args...)})
}
func (t trialTB) Error(args ...any) { panic(trialFailure{fmt.Sprint(args...)}) }
func (t trialTB) Errorf(format string, args ...any) {
	panic(trialFailure{fmt.Sprintf(format, args...)})
}
func (t trialTB) FailNow() { panic(trialFailure{"FailNow"}) }

// writeGapCSV appends the trials to HARMONY_BENCH_CSV (if set), writing
// the header when the file is new.
func writeGapCSV(b *testing.B, results []gapTrial) {
	path := os.Getenv("HARMONY_BENCH_CSV")
	if path == "" {
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var sb strings.Builder
	if statErr != nil {
		sb.WriteString("scenario,trial,primary,gap_ms,acks,fenced,failed\n")
	}
	scenario := b.Name()[strings.LastIndexByte(b.Name(), '/')+1:]
	for i, r := range results {
		reason := ""
		if r.err != nil {
			reason = strconv.Quote(r.err.Error())
		}
		fmt.Fprintf(&sb, "%s,%d,%s,%.1f,%d,%v,%s\n", scenario, i+1, r.primary, float64(r.gap.Microseconds())/1000, r.acks, r.fenced, reason)
	}
	if _, err := f.WriteString(sb.String()); err != nil {
		b.Fatal(err)
	}
}

// procState is the state letter of process pid (R, S, T: stopped, ...).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	j := strings.LastIndexByte(s, ')')
	if j < 0 || j+2 >= len(s) {
		return ""
	}
	return s[j+2 : j+3]
}
