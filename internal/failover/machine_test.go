package failover

import (
	"testing"
	"time"
)

// A failing action is state: the node shows it until an action succeeds.
func TestFailingActionIsState(t *testing.T) {
	n := NewNode("n2", DefaultTimings(), AbsoluteConsistency)
	n, acts := Step(n, Event{Kind: EvStart, CS: ClusterState{Primary: "n1", Sync: "n2", Epoch: 1, Rev: 1}})
	if len(acts) != 1 || acts[0].Kind != ActFollow {
		t.Fatalf("start: %+v", acts)
	}
	n, acts = Step(n, Event{Kind: EvActionDone, Action: ActFollow, Result: ResultFailed})
	if n.Failing != ActFollow || len(acts) != 0 {
		t.Fatalf("after a failed follow: failing %q, actions %+v (a replica retries from its next tick)", n.Failing, acts)
	}
	n, acts = Step(n, Event{Kind: EvTick, Now: n.T.HeartbeatInterval})
	if len(acts) != 1 || acts[0].Kind != ActFollow || acts[0].Target != "n1" {
		t.Fatalf("the tick after a failed follow: actions %+v", acts)
	}
	n, _ = Step(n, Event{Kind: EvActionDone, Action: ActFollow, Result: ResultOK})
	if n.Failing != "" || n.Status != StatusReplica {
		t.Fatalf("after a good follow: failing %q, status %s", n.Failing, n.Status)
	}
}

// The start-up decision is the machine's: a node that cannot read
// cluster-state fences a serving PostgreSQL in AbsoluteConsistency (it
// cannot prove its role), keeps it serving in SplitBrainAllowed, and
// starts a non-serving one as a replica; and it honours the promises its
// predecessor may have given.
func TestStartWithoutTheStore(t *testing.T) {
	cases := []struct {
		strategy Strategy
		writable bool
		status   Status
		act      ActionKind
	}{
		{AbsoluteConsistency, true, StatusFencing, ActFence},
		{SplitBrainAllowed, true, StatusPrimary, ""},
		{AbsoluteConsistency, false, StatusReplica, ""},
	}
	for _, c := range cases {
		n := NewNode("n1", DefaultTimings(), c.strategy)
		n, acts := Step(n, Event{Kind: EvStart, Now: time.Minute, Result: ResultUnreachable, Writable: c.writable})
		var got ActionKind
		if len(acts) > 0 {
			got = acts[0].Kind
		}
		if n.Status != c.status || got != c.act {
			t.Errorf("%s writable=%v: status %s, action %q; want %s, %q", c.strategy, c.writable, n.Status, got, c.status, c.act)
		}
		if want := time.Minute + n.T.PromiseLease() + n.T.SafetyMargin; n.PromisedUntil != want {
			t.Errorf("%s: promised until %s, want %s", c.strategy, n.PromisedUntil, want)
		}
	}
}
