package v1alpha1

import (
	"strings"
	"testing"
)

func TestRolloutValidationNamesTheField(t *testing.T) {
	n := func(v int) *int { return &v }
	base := func(r *RolloutSpec) Deployment {
		return Deployment{APIVersion: APIVersion, Kind: "Deployment", Metadata: Metadata{Name: "web"},
			Spec: DeploymentSpec{Resources: []Resource{}, Rollout: r}}
	}
	all := []RolloutBatch{{Percent: n(100)}}
	for _, c := range []struct {
		r     RolloutSpec
		field string
	}{
		{RolloutSpec{}, "spec.rollout.batches"},
		{RolloutSpec{Batches: []RolloutBatch{{Count: n(1), Percent: n(10)}}}, "spec.rollout.batches[0]"},
		{RolloutSpec{Batches: []RolloutBatch{{}}}, "spec.rollout.batches[0]"},
		{RolloutSpec{Batches: []RolloutBatch{{Count: n(0)}}}, "spec.rollout.batches[0].count"},
		{RolloutSpec{Batches: []RolloutBatch{{Percent: n(101)}}}, "spec.rollout.batches[0].percent"},
		{RolloutSpec{Batches: []RolloutBatch{{Selector: &Selector{MatchExpressions: []Requirement{{Key: "a", Operator: "Near"}}}}}}, "spec.rollout.batches[0].selector.matchExpressions[0].operator"},
		{RolloutSpec{Batches: all, SuccessThreshold: n(101)}, "spec.rollout.successThreshold"},
		{RolloutSpec{Batches: all, SuccessThreshold: n(0)}, "spec.rollout.successThreshold"},
		{RolloutSpec{Batches: all, Gate: RolloutGate{ReadyForSeconds: -1}}, "spec.rollout.gate.readyForSeconds"},
		{RolloutSpec{Batches: all, Gate: RolloutGate{ProgressDeadlineSeconds: n(0)}}, "spec.rollout.gate.progressDeadlineSeconds"},
		{RolloutSpec{Batches: all, MaxUpdating: -2}, "spec.rollout.maxUpdating"},
		{RolloutSpec{Batches: all, OnFailure: "retry"}, "spec.rollout.onFailure"},
	} {
		d := base(&c.r)
		err := d.Validate()
		fe, ok := First(err)
		if !ok || fe.Field != c.field {
			t.Errorf("%+v: %v, want the first error at %s", c.r, err, c.field)
		}
	}
	good := base(&RolloutSpec{Batches: []RolloutBatch{{Selector: &Selector{MatchLabels: map[string]string{"site": "lab"}}}, {Count: n(1)}, {Percent: n(100)}},
		SuccessThreshold: n(90), Gate: RolloutGate{ReadyForSeconds: 60}, MaxUpdating: 2, OnFailure: OnFailureRollback})
	if err := good.Validate(); err != nil {
		t.Errorf("a good rollout refused: %v", err)
	}
}

func TestParsedRolloutUnknownFieldIsNamed(t *testing.T) {
	_, err := ParseDeployments([]byte("apiVersion: harmony/v1alpha1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  resources: []\n  rollout:\n    batchez: []\n"))
	if err == nil || !strings.Contains(err.Error(), "batchez") {
		t.Fatalf("unknown rollout field: %v", err)
	}
}
