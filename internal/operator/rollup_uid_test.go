package operator

import (
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

// A device's status of an earlier deployment of the same name (deleted and
// created again, so another UID, generation 1 again) counts as no status.
func TestClassifyIgnoresAnEarlierDeploymentsStatus(t *testing.T) {
	d := v1.Deployment{Metadata: v1.Metadata{Name: "web", UID: "NEW", Generation: 1}}
	for _, c := range []struct {
		name string
		st   v1.DeviceState
		want pairClass
	}{
		{"this deployment, Ready", v1.DeviceState{UID: "NEW", ObservedGeneration: 1, Phase: v1.PhaseReady}, clsSucceeded},
		{"earlier deployment, Ready at 1", v1.DeviceState{UID: "OLD", ObservedGeneration: 1, Phase: v1.PhaseReady}, clsPending},
		{"earlier deployment, Failed", v1.DeviceState{UID: "OLD", ObservedGeneration: 1, Phase: v1.PhaseFailed}, clsPending},
		{"this deployment, Failed", v1.DeviceState{UID: "NEW", ObservedGeneration: 1, Phase: v1.PhaseFailed}, clsFailed},
	} {
		if got := classify(c.st, true, d); got != c.want {
			t.Errorf("%s: class %d, want %d", c.name, got, c.want)
		}
	}
	// Deployments and statuses from before UIDs still count.
	legacy := v1.Deployment{Metadata: v1.Metadata{Name: "web", Generation: 2}}
	if got := classify(v1.DeviceState{ObservedGeneration: 2, Phase: v1.PhaseReady}, true, legacy); got != clsSucceeded {
		t.Errorf("legacy: class %d, want succeeded", got)
	}
}
