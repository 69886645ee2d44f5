package failover

import "testing"

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
