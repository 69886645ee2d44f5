package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
)

var phases = []string{v1.PhasePending, v1.PhaseProgressing, v1.PhaseReady, v1.PhaseFailed,
	v1.PhaseConflict, v1.PhaseInvalid, v1.PhaseUnsupported}

// condStatus is the three conditions' statuses, Ready Progressing Degraded.
func condStatus(cs []v1.Condition) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Type+"="+c.Status)
	}
	return strings.Join(out, " ")
}

func TestConditionsFromPhase(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		st     v1.ResourceStatus
		want   string
		reason string
	}{
		{v1.ResourceStatus{Phase: v1.PhaseReady, Message: "in sync"}, "Ready=True Progressing=False Degraded=False", "Ready"},
		{v1.ResourceStatus{Phase: v1.PhasePending}, "Ready=False Progressing=True Degraded=False", "Pending"},
		{v1.ResourceStatus{Phase: v1.PhaseProgressing, Message: "start period",
			Details: map[string]string{detailReason: ReasonHealthCheckPending}}, "Ready=False Progressing=True Degraded=False", ReasonHealthCheckPending},
		{v1.ResourceStatus{Phase: v1.PhaseFailed, Message: "unhealthy",
			Details: map[string]string{detailReason: ReasonUnhealthy, "health": "unhealthy"}}, "Ready=False Progressing=False Degraded=True", ReasonUnhealthy},
		{v1.ResourceStatus{Phase: v1.PhaseFailed, Message: "no podman",
			Details: map[string]string{detailReason: ReasonPodmanNotInstalled}}, "Ready=False Progressing=False Degraded=True", ReasonPodmanNotInstalled},
		{v1.ResourceStatus{Phase: v1.PhaseFailed, Message: "permission denied"}, "Ready=False Progressing=False Degraded=True", "Failed"},
		{v1.ResourceStatus{Phase: v1.PhaseConflict, Message: "managed by zeta"}, "Ready=False Progressing=False Degraded=True", "Conflict"},
		{v1.ResourceStatus{Phase: v1.PhaseInvalid, Message: "bad mode"}, "Ready=False Progressing=False Degraded=True", "Invalid"},
		{v1.ResourceStatus{Phase: v1.PhaseUnsupported, Message: "unknown kind"}, "Ready=False Progressing=False Degraded=True", "Unsupported"},
	} {
		t.Run(tc.st.Phase+"/"+tc.reason, func(t *testing.T) {
			cs := conditions(nil, tc.st, now)
			if got := condStatus(cs); got != tc.want {
				t.Fatalf("conditions %s, want %s", got, tc.want)
			}
			for _, c := range cs {
				if c.Reason != tc.reason || !c.LastTransitionTime.Equal(now) {
					t.Errorf("%s: reason %q at %v, want %q at %v", c.Type, c.Reason, c.LastTransitionTime, tc.reason, now)
				}
				if want := map[bool]string{true: tc.st.Message, false: ""}[c.Status == v1.ConditionTrue]; c.Message != want {
					t.Errorf("%s=%s: message %q, want %q", c.Type, c.Status, c.Message, want)
				}
			}
			if ready := (v1.ResourceStatus{Phase: tc.st.Phase, Conditions: cs}).IsReady(); ready != (tc.st.Phase == v1.PhaseReady) {
				t.Errorf("IsReady %v", ready)
			}
		})
	}
}

// Every phase to every phase: a condition keeps its lastTransitionTime
// exactly when its status stays, and exactly one condition is True.
func TestConditionsTransitionsExhaustive(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	for _, from := range phases {
		for _, to := range phases {
			prev := conditions(nil, v1.ResourceStatus{Phase: from}, t0)
			next := conditions(prev, v1.ResourceStatus{Phase: to, Message: "m"}, t1)
			if len(next) != 3 {
				t.Fatalf("%s -> %s: %d conditions", from, to, len(next))
			}
			trues := 0
			for i, c := range next {
				if c.Type != prev[i].Type {
					t.Fatalf("%s -> %s: condition %d is %s, was %s", from, to, i, c.Type, prev[i].Type)
				}
				if c.Status == v1.ConditionTrue {
					trues++
				}
				want := t1
				if c.Status == prev[i].Status {
					want = t0
				}
				if !c.LastTransitionTime.Equal(want) {
					t.Errorf("%s -> %s: %s %s->%s changed at %v, want %v", from, to, c.Type, prev[i].Status, c.Status, c.LastTransitionTime, want)
				}
			}
			if trues != 1 {
				t.Errorf("%s -> %s: %d conditions True: %s", from, to, trues, condStatus(next))
			}
		}
	}
}

// A resource that stays Ready while its message and reason change keeps
// its Ready time: a correction is not a transition.
func TestConditionsKeepTimeWhileReady(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	cs := conditions(nil, v1.ResourceStatus{Phase: v1.PhaseReady, Message: "in sync"}, t0)
	cs = conditions(cs, v1.ResourceStatus{Phase: v1.PhaseReady, Message: "in sync (corrected: content)"}, t0.Add(time.Hour))
	if c := cs[0]; c.Type != v1.ConditionReady || c.Status != v1.ConditionTrue || !c.LastTransitionTime.Equal(t0) || c.Message != "in sync (corrected: content)" {
		t.Fatalf("ready: %+v", c)
	}
}

func TestConditionMessageIsShort(t *testing.T) {
	long := strings.Repeat("é", 1000)
	cs := conditions(nil, v1.ResourceStatus{Phase: v1.PhaseFailed, Message: long}, time.Now())
	if m := cs[2].Message; len(m) > conditionMessageMax+3 || !strings.HasPrefix(long, strings.TrimSuffix(m, "...")) {
		t.Fatalf("message of %d bytes: %q", len(m), m)
	}
}

func TestCountersRepairs(t *testing.T) {
	var c counters
	c.inSync(true) // the first apply of the generation: the change itself
	c.inSync(false)
	if c.repairs != 0 {
		t.Fatalf("repairs %d after the first apply", c.repairs)
	}
	c.inSync(true) // drift corrected
	c.inSync(false)
	c.inSync(true)
	if c.repairs != 2 {
		t.Fatalf("repairs %d, want 2", c.repairs)
	}

	// Found in sync first (an agent restarted): the first correction is a
	// repair.
	c = counters{}
	c.inSync(false)
	c.inSync(true)
	if c.repairs != 1 {
		t.Fatalf("repairs %d, want 1", c.repairs)
	}
}

func TestCountersRestarts(t *testing.T) {
	type obs struct {
		instance string
		count    int
	}
	for _, tc := range []struct {
		name string
		seen []obs
		want int
	}{
		{"first sight is the base", []obs{{"a", 5}}, 0},
		{"grows", []obs{{"a", 5}, {"a", 5}, {"a", 7}}, 2},
		{"started again counts from zero", []obs{{"a", 0}, {"a", 1}, {"a", 0}, {"a", 2}}, 3},
		{"replaced", []obs{{"a", 3}, {"b", 0}, {"b", 1}}, 1},
		{"replaced, seen late", []obs{{"a", 3}, {"b", 4}}, 0},
		{"nothing runs", []obs{{"a", 1}, {"", 0}, {"a", 2}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c counters
			for _, o := range tc.seen {
				c.observed(Result{Instance: o.instance, Restarts: o.count})
			}
			if c.restarts != tc.want {
				t.Fatalf("restarts %d, want %d", c.restarts, tc.want)
			}
		})
	}
}

// A status of many resources with long messages still fits the limit the
// server's decoder enforces, and keeps every condition.
func TestEncodeStatusFits(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	s := v1.DeviceState{V: v1.FormatVersion, Device: "dev-1", Deployment: "big", ObservedGeneration: 1, Phase: v1.PhaseFailed}
	for i := range v1.MaxResources {
		r := v1.ResourceStatus{ID: fmt.Sprintf("resource-%03d", i), Kind: v1.KindContainer, Phase: v1.PhaseFailed,
			Message: strings.Repeat("x", 2000), Since: now, NextRetry: &now, Restarts: 3, Repairs: 1,
			Details: map[string]string{"containerId": "0123456789ab", "state": "running", "restartCount": "3",
				"startedAt": now.Format(time.RFC3339), "health": "unhealthy", detailReason: ReasonUnhealthy}}
		r.Conditions = conditions(nil, r, now)
		s.Resources = append(s.Resources, r)
	}
	b, err := encodeStatus(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v1.DecodeDeviceState(b)
	if err != nil {
		t.Fatalf("%d bytes: %v", len(b), err)
	}
	for _, r := range got.Resources {
		if c, ok := r.Condition(v1.ConditionDegraded); !ok || c.Status != v1.ConditionTrue || c.Reason != ReasonUnhealthy || len(r.Conditions) != 3 || r.Restarts != 3 || r.Repairs != 1 {
			t.Fatalf("%s: %+v", r.ID, r)
		}
	}

	// A status within the limit is encoded whole.
	s.Resources = s.Resources[:10]
	b, _ = encodeStatus(s)
	if whole, _ := v1.Marshal(s); string(b) != string(whole) {
		t.Fatal("a small status was changed")
	}
}
