package failover

import (
	"strings"
	"testing"
	"time"
)

func TestTimingsValidate(t *testing.T) {
	for name, tm := range map[string]Timings{"default": DefaultTimings(), "fast": FastTimings()} {
		if err := tm.Validate(); err != nil {
			t.Errorf("%s profile: %v", name, err)
		}
	}
	bad := DefaultTimings()
	bad.FailoverTimeout = 1650 * time.Millisecond // needs more than 1.25s + 0.4s
	err := bad.Validate()
	if err == nil {
		t.Fatal("unsafe failover_timeout accepted")
	}
	for _, want := range []string{"failover_timeout", "1.65s", "250ms", "(3) + 1", "400ms", "= 1.65s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not show %q", err, want)
		}
	}
	for _, tc := range []struct {
		mutate func(*Timings)
		field  string
	}{
		{func(t *Timings) { t.HeartbeatInterval = 0 }, "heartbeat_interval"},
		{func(t *Timings) { t.HeartbeatTimeout = -1 }, "heartbeat_timeout"},
		{func(t *Timings) { t.FailureThreshold = 0 }, "failure_threshold"},
		{func(t *Timings) { t.SuccessThreshold = 0 }, "success_threshold"},
		{func(t *Timings) { t.SafetyMargin = -time.Second }, "safety_margin"},
	} {
		tm := DefaultTimings()
		tc.mutate(&tm)
		if err := tm.Validate(); err == nil || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("%s: %v", tc.field, err)
		}
	}
}

// A restarted agent whose node still owns the epoch and whose PostgreSQL
// still serves resumes as primary without fencing or failover.
func TestRestartedPrimaryResumes(t *testing.T) {
	n := NewNode("n1", DefaultTimings(), AbsoluteConsistency)
	cs := ClusterState{Primary: "n1", Sync: "n2", Epoch: 4, Rev: 9}
	n, acts := Step(n, Event{Kind: EvStart, CS: cs, Writable: true})
	if n.Status != StatusPrimary || len(acts) != 1 || acts[0].Kind != ActBeat {
		t.Fatalf("after start: %s %v", n.Status, acts)
	}
	n, acts = Step(n, Event{Kind: EvBeatResult, Result: ResultOK, CS: cs, PGSync: "n2"})
	if n.Status != StatusPrimary || len(acts) != 0 {
		t.Fatalf("after a good beat: %s %v", n.Status, acts)
	}
}

// A CAS conflict on the primary's own heartbeat is a fatal demotion.
func TestHeartbeatConflictFencesAtOnce(t *testing.T) {
	n := NewNode("n1", DefaultTimings(), AbsoluteConsistency)
	cs := ClusterState{Primary: "n1", Sync: "n2", Epoch: 1, Rev: 1}
	n, _ = Step(n, Event{Kind: EvStart, CS: cs, Writable: true})
	n, acts := Step(n, Event{Kind: EvBeatResult, Result: ResultConflict})
	if n.Status != StatusFencing || len(acts) != 1 || acts[0].Kind != ActFence {
		t.Fatalf("after a conflict: %s %v", n.Status, acts)
	}
	// A fence that fails escalates and the node never reports itself fenced.
	for level := 1; level <= 2; level++ {
		n, acts = Step(n, Event{Kind: EvActionDone, Action: ActFence, Result: ResultFailed})
		if n.Status != StatusFencing || acts[0].Escalation != level {
			t.Fatalf("failed fence %d: %s %v", level, n.Status, acts)
		}
	}
}

// A slow health check does not fence while the thresholds say healthy.
func TestSlowChecksBelowThresholdKeepServing(t *testing.T) {
	tm := DefaultTimings()
	n := NewNode("n1", tm, AbsoluteConsistency)
	cs := ClusterState{Primary: "n1", Sync: "n2", Epoch: 1, Rev: 1}
	n, _ = Step(n, Event{Kind: EvStart, CS: cs, Writable: true})
	for i := 0; i < tm.FailureThreshold-1; i++ {
		n, _ = Step(n, Event{Kind: EvBeatResult, Result: ResultUnreachable})
		if n.Status != StatusPrimary {
			t.Fatalf("fenced after %d failures, threshold %d", i+1, tm.FailureThreshold)
		}
	}
	n, _ = Step(n, Event{Kind: EvBeatResult, Result: ResultOK, CS: cs, PGSync: "n2"})
	if n.Failures != 0 || n.Status != StatusPrimary {
		t.Fatalf("a success must reset the count: %+v", n)
	}
}
