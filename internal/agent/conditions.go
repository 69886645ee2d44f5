package agent

import (
	"strings"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// A resource's status carries, besides its phase, what a progressive
// rollout's gate reads (api/v1alpha1 ResourceStatus): three conditions
// derived from the phase, and two counters of what happened to the
// resource since the agent started enforcing its generation.
//
//	phase                                   Ready  Progressing  Degraded
//	Ready                                   True   False        False
//	Pending, Progressing                    False  True         False
//	Failed, Conflict, Invalid, Unsupported  False  False        True
//
// Each condition's lastTransitionTime changes only when its status does;
// nothing here changes at every observation, so an unchanged resource
// leaves its status unchanged and the status writer writes nothing.

// conditionMessageMax bounds the message a condition repeats from its
// resource.
const conditionMessageMax = 200

// conditions derives a resource's conditions from its phase. prev are its
// conditions as last reported (none: a resource seen for the first time):
// a condition whose status stays keeps its lastTransitionTime; one that
// changes takes now. The reason is the status details' reason when there
// is one (Unhealthy, SecretUnavailable, ...), else the phase; the True
// condition carries the resource's message.
func conditions(prev []v1.Condition, st v1.ResourceStatus, now time.Time) []v1.Condition {
	reason := st.Details[detailReason]
	if reason == "" {
		reason = st.Phase
	}
	which := []struct {
		typ string
		on  bool
	}{
		{v1.ConditionReady, st.Phase == v1.PhaseReady},
		{v1.ConditionProgressing, st.Phase == v1.PhasePending || st.Phase == v1.PhaseProgressing},
		{v1.ConditionDegraded, degraded(st.Phase)},
	}
	out := make([]v1.Condition, 0, len(which))
	for _, w := range which {
		c := v1.Condition{Type: w.typ, Status: v1.ConditionFalse, Reason: reason, LastTransitionTime: now}
		if w.on {
			c.Status, c.Message = v1.ConditionTrue, shorten(st.Message, conditionMessageMax)
		}
		for _, p := range prev {
			if p.Type == c.Type && p.Status == c.Status {
				c.LastTransitionTime = p.LastTransitionTime
			}
		}
		out = append(out, c)
	}
	return out
}

// degraded: the phases in which the resource is not what its spec asks
// and waiting will not make it so.
func degraded(phase string) bool {
	switch phase {
	case v1.PhaseFailed, v1.PhaseConflict, v1.PhaseInvalid, v1.PhaseUnsupported:
		return true
	}
	return false
}

// shorten cuts msg to at most max bytes (and whole UTF-8 characters),
// marking the cut.
func shorten(msg string, max int) string {
	if len(msg) <= max {
		return msg
	}
	return strings.ToValidUTF8(msg[:max], "") + "..."
}

// counters are a resource's restarts and repairs at one generation: a
// resState is made per generation, so they start from zero with it.
type counters struct {
	synced   bool // in sync once at this generation, found so or applied
	repairs  int
	restarts int
	instance string // what ran when last observed (Result.Instance)
	count    int    // its restart count then
}

// inSync records a reconcile that ended in sync; corrected: the agent
// applied to get there. Only a correction of a resource already in sync
// at this generation is a repair (a file changed by hand, a container
// stopped): the first apply of a generation is the change itself.
func (c *counters) inSync(corrected bool) {
	if corrected && c.synced {
		c.repairs++
	}
	c.synced = true
}

// observed counts the restarts in place of what runs (a container
// restarted by its restart policy): the growth of its restart count since
// it was last observed. Another instance (a replaced container), or a
// count that went down (podman counts from zero again when a container is
// started by hand or by the agent), starts counting afresh; the first
// observation at a generation is where counting starts.
func (c *counters) observed(r Result) {
	if r.Instance == "" {
		return
	}
	if r.Instance == c.instance && r.Restarts > c.count {
		c.restarts += r.Restarts - c.count
	}
	c.instance, c.count = r.Instance, r.Restarts
}
