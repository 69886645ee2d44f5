package agent_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/testutil/podmantest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// resourceAt checks the one resource of a status at generation gen: its
// phase, its conditions (the one the phase makes True, and only it) and
// its counters.
func resourceAt(gen int64, phase, trueCond string, restarts, repairs int) func(v1.DeviceState) error {
	return func(s v1.DeviceState) error {
		if s.ObservedGeneration != gen || len(s.Resources) != 1 {
			return fmt.Errorf("generation %d, %d resources (%s)", s.ObservedGeneration, len(s.Resources), s.Message)
		}
		r := s.Resources[0]
		if r.Phase != phase || r.Restarts != restarts || r.Repairs != repairs {
			return fmt.Errorf("%s %q restarts %d repairs %d; want %s, %d, %d", r.Phase, r.Message, r.Restarts, r.Repairs, phase, restarts, repairs)
		}
		if len(r.Conditions) != 3 {
			return fmt.Errorf("conditions %+v", r.Conditions)
		}
		for _, c := range r.Conditions {
			if want := map[bool]string{true: v1.ConditionTrue, false: v1.ConditionFalse}[c.Type == trueCond]; c.Status != want {
				return fmt.Errorf("condition %s is %s, want %s: %+v", c.Type, c.Status, want, r.Conditions)
			}
		}
		return nil
	}
}

func readyCondition(t *testing.T, s v1.DeviceState) v1.Condition {
	t.Helper()
	c, ok := s.Resources[0].Condition(v1.ConditionReady)
	if !ok || c.Status != v1.ConditionTrue || c.Reason != v1.PhaseReady || c.LastTransitionTime.IsZero() {
		t.Fatalf("ready condition %+v (%v)", c, ok)
	}
	return c
}

// afterSecondOf polls until the clock has passed the second of at, so
// that a transition now would show as another lastTransitionTime.
func afterSecondOf(t *testing.T, at time.Time) {
	t.Helper()
	retry.Until(t, 5*time.Second, func() error {
		if now := time.Now(); now.Before(at.Add(time.Second)) {
			return fmt.Errorf("the clock is at %s, not yet past the second of %s", now, at)
		}
		return nil
	})
}

// A File changed by hand and restored counts as a repair; applying a
// generation does not, and a new generation starts counting from zero.
// The Ready condition keeps its time through the repair.
func TestAgentCountsRepairs(t *testing.T) {
	f := startFleet(t)
	root := t.TempDir()
	startAgent(t, agentConfig(t, f.srv.ClientURL(), root, t.TempDir()))
	conf := filepath.Join(root, "app.conf")
	put := func(gen int64, content string) {
		f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: gen,
			Resources: []v1.Resource{fileRes("conf", conf, content, "")}})
	}

	put(1, "port=80\n")
	s := f.waitStatus(t, "web", resourceAt(1, v1.PhaseReady, v1.ConditionReady, 0, 0))
	ready := readyCondition(t, s)

	afterSecondOf(t, ready.LastTransitionTime)
	if err := os.WriteFile(conf, []byte("port=8080\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = f.waitStatus(t, "web", resourceAt(1, v1.PhaseReady, v1.ConditionReady, 0, 1))
	if c := readyCondition(t, s); !c.LastTransitionTime.Equal(ready.LastTransitionTime) {
		t.Fatalf("Ready since %v after a repair, was since %v", c.LastTransitionTime, ready.LastTransitionTime)
	}
	if b, _ := os.ReadFile(conf); string(b) != "port=80\n" {
		t.Fatalf("conf = %q", b)
	}

	put(2, "port=81\n")
	s = f.waitStatus(t, "web", resourceAt(2, v1.PhaseReady, v1.ConditionReady, 0, 0))
	if b, _ := os.ReadFile(conf); string(b) != "port=81\n" {
		t.Fatalf("conf = %q", b)
	}
	// Ready at generation 1, Ready at generation 2 in the same pass: not
	// a transition.
	if c := readyCondition(t, s); !c.LastTransitionTime.Equal(ready.LastTransitionTime) {
		t.Fatalf("Ready since %v after a new generation, was since %v", c.LastTransitionTime, ready.LastTransitionTime)
	}
}

// Conflicts and refusals carry conditions too: Degraded, with the phase
// as the reason.
func TestConditionsOfConflictAndRefusal(t *testing.T) {
	f := startFleet(t)
	root := t.TempDir()
	startAgent(t, agentConfig(t, f.srv.ClientURL(), root, t.TempDir()))
	shared := filepath.Join(root, "shared.conf")
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "zeta", Generation: 1, Resources: []v1.Resource{fileRes("c", shared, "zeta\n", "")}})
	f.waitStatus(t, "zeta", readyAt(1))
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "alpha", Generation: 1, Resources: []v1.Resource{fileRes("c", shared, "alpha\n", "")}})
	s := f.waitStatus(t, "alpha", resourceAt(1, v1.PhaseConflict, v1.ConditionDegraded, 0, 0))
	if c, _ := s.Resources[0].Condition(v1.ConditionDegraded); c.Reason != v1.PhaseConflict || !strings.Contains(c.Message, "zeta") {
		t.Fatalf("degraded %+v", c)
	}

	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "refused", Generation: 1,
		Resources: []v1.Resource{fileRes("c", filepath.Join(t.TempDir(), "outside"), "x", "")}})
	s = f.waitStatus(t, "refused", func(s v1.DeviceState) error {
		if s.RefusedGeneration != 1 {
			return fmt.Errorf("refused generation %d", s.RefusedGeneration)
		}
		return resourceAt(0, v1.PhaseInvalid, v1.ConditionDegraded, 0, 0)(s)
	})
	if c, _ := s.Resources[0].Condition(v1.ConditionDegraded); c.Reason != v1.PhaseInvalid || c.Message == "" {
		t.Fatalf("degraded %+v", c)
	}
}

// A container on real podman that exits and is restarted by podman
// (restartPolicy always) counts a restart; one stopped by hand and started
// by the agent counts a repair. The resync is an hour, so the agent looks
// only when told: writing the same desired state again wakes it, after
// podman is done, so what it sees does not depend on timing.
func TestContainerRestartsAndRepairs(t *testing.T) {
	if err := podmantest.Setup(); err != nil {
		t.Fatal(err)
	}
	n := podmantest.Name(t)
	t.Cleanup(func() { _ = exec.Command("podman", "rm", "-f", "-t", "0", n).Run() })
	f := startFleet(t)
	cfg := agentConfig(t, f.srv.ClientURL(), t.TempDir(), t.TempDir())
	cfg.ResyncInterval = config.Duration(time.Hour)
	startAgent(t, cfg)

	// The container exits (code 1) each time /tmp/exit appears.
	spec, _ := json.Marshal(map[string]any{"name": n, "image": podmantest.Image, "stopTimeoutSeconds": 1,
		"command": []string{"sh", "-c", "while [ ! -f /tmp/exit ]; do sleep 1; done; rm /tmp/exit; exit 1"}})
	ds := v1.DesiredState{V: 1, Device: "dev-1", Deployment: "app", Generation: 1,
		Resources: []v1.Resource{{ID: "app", Kind: v1.KindContainer, Spec: spec}}}
	f.putDesired(t, ds)
	s := f.waitStatus(t, "app", resourceAt(1, v1.PhaseReady, v1.ConditionReady, 0, 0))
	ready := readyCondition(t, s)
	id := s.Resources[0].Details["containerId"]
	podman := func(args ...string) string {
		out, err := exec.Command("podman", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("podman %v: %v: %s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}

	afterSecondOf(t, ready.LastTransitionTime)
	podman("exec", n, "sh", "-c", "echo > /tmp/exit")
	retry.Until(t, 30*time.Second, func() error {
		out := podman("inspect", "--format", "{{.RestartCount}} {{.State.Running}}", n)
		if out != "1 true" {
			return fmt.Errorf("restart count and running: %s", out)
		}
		return nil
	})
	f.putDesired(t, ds)
	s = f.waitStatus(t, "app", resourceAt(1, v1.PhaseReady, v1.ConditionReady, 1, 0))
	if r := s.Resources[0]; r.Details["containerId"] != id || r.Details["restartCount"] != "1" {
		t.Fatalf("after a restart by podman: %+v", r)
	}
	if c := readyCondition(t, s); !c.LastTransitionTime.Equal(ready.LastTransitionTime) {
		t.Fatalf("Ready since %v after a restart, was since %v", c.LastTransitionTime, ready.LastTransitionTime)
	}

	// Stopped by hand: podman leaves it stopped, the agent starts it
	// (podman then counts its restarts from zero; the agent's count stays).
	podman("stop", "-t", "1", n)
	if out := podman("inspect", "--format", "{{.State.Running}}", n); out != "false" {
		t.Fatalf("running after stop: %s", out)
	}
	f.putDesired(t, ds)
	s = f.waitStatus(t, "app", resourceAt(1, v1.PhaseReady, v1.ConditionReady, 1, 1))
	if r := s.Resources[0]; r.Details["containerId"] != id || !strings.Contains(r.Message, "corrected") {
		t.Fatalf("after a start by the agent: %+v", r)
	}
	if c := readyCondition(t, s); !c.LastTransitionTime.Equal(ready.LastTransitionTime) {
		t.Fatalf("Ready since %v after a repair, was since %v", c.LastTransitionTime, ready.LastTransitionTime)
	}

	// A new generation replaces the container: both counters start again.
	spec2, _ := json.Marshal(map[string]any{"name": n, "image": podmantest.Image, "stopTimeoutSeconds": 1,
		"command": []string{"sh", "-c", "exec sleep 3600"}})
	ds.Generation, ds.Resources[0].Spec = 2, spec2
	f.putDesired(t, ds)
	s = f.waitStatus(t, "app", resourceAt(2, v1.PhaseReady, v1.ConditionReady, 0, 0))
	if r := s.Resources[0]; r.Details["containerId"] == id {
		t.Fatalf("not replaced: %+v", r)
	}
	if count, _ := strconv.Atoi(s.Resources[0].Details["restartCount"]); count != 0 {
		t.Fatalf("restart count %d of a new container", count)
	}
}
