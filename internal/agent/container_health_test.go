package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent"
	"github.com/harmony-fleet/harmony/internal/config"
	"github.com/harmony-fleet/harmony/internal/testutil/podmantest"
	"github.com/harmony-fleet/harmony/internal/testutil/retry"
)

// A Container with a health check, on real podman, with a resync of an
// hour: the agent runs the checks itself at their interval (no systemd
// timers here), reports Ready only while healthy and Failed when unhealthy,
// and a changed check replaces the container.
func TestContainerHealthCheckStatus(t *testing.T) {
	if err := podmantest.Setup(); err != nil {
		t.Fatal(err)
	}
	n := podmantest.Name(t)
	t.Cleanup(func() { _ = exec.Command("podman", "rm", "-f", "-t", "0", n).Run() })
	f := startFleet(t)
	cfg := agentConfig(t, f.srv.ClientURL(), t.TempDir(), t.TempDir())
	cfg.ResyncInterval = config.Duration(time.Hour)
	startAgent(t, cfg)

	res := func(check map[string]any) v1.Resource {
		b, _ := json.Marshal(map[string]any{"name": n, "image": podmantest.Image, "command": []string{"sh", "-c", "echo ok > /tmp/ok; exec sleep 3600"},
			"stopTimeoutSeconds": 1, "healthCheck": check})
		return v1.Resource{ID: "app", Kind: v1.KindContainer, Spec: b}
	}
	resource := func(phase, reason, msg string) func(v1.DeviceState) error {
		return func(s v1.DeviceState) error {
			if len(s.Resources) != 1 {
				return fmt.Errorf("%d resources", len(s.Resources))
			}
			r := s.Resources[0]
			if r.Phase != phase || r.Details["reason"] != reason || !strings.Contains(r.Message, msg) {
				return fmt.Errorf("%s %q %v; want %s %s %q", r.Phase, r.Message, r.Details, phase, reason, msg)
			}
			return nil
		}
	}

	check := map[string]any{"command": []string{"sh", "-c", "test -f /tmp/ok"}, "intervalSeconds": 1, "retries": 2}
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "health", Generation: 1, Resources: []v1.Resource{res(check)}})
	s := f.waitStatus(t, "health", readyAt(1))
	r := s.Resources[0]
	if !strings.HasPrefix(r.Message, "running, healthy") || r.Details["health"] != "healthy" {
		t.Fatalf("ready: %+v", r)
	}
	id := r.Details["containerId"]

	if out, err := exec.Command("podman", "exec", n, "busybox", "rm", "/tmp/ok").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	s = f.waitStatus(t, "health", resource(v1.PhaseFailed, agent.ReasonUnhealthy, `unhealthy: health check "sh -c test -f /tmp/ok" failed 2 times in a row`))
	if s.Phase != v1.PhaseFailed || s.Resources[0].Details["containerId"] != id || s.Resources[0].NextRetry != nil {
		t.Fatalf("unhealthy: %+v", s)
	}

	if out, err := exec.Command("podman", "exec", n, "sh", "-c", "echo ok > /tmp/ok").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	f.waitStatus(t, "health", readyAt(1))

	// A check that never passes: Progressing while it may still pass (a
	// start period of an hour), never Ready; the container is replaced.
	check = map[string]any{"command": []string{"false"}, "intervalSeconds": 1, "startPeriodSeconds": 3600}
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "health", Generation: 2, Resources: []v1.Resource{res(check)}})
	s = f.waitStatus(t, "health", func(s v1.DeviceState) error {
		if s.ObservedGeneration != 2 || s.Phase != v1.PhaseProgressing {
			return fmt.Errorf("generation %d %s", s.ObservedGeneration, s.Phase)
		}
		return resource(v1.PhaseProgressing, agent.ReasonHealthCheckPending, "start period")(s)
	})
	if s.Resources[0].Details["containerId"] == id {
		t.Fatalf("the changed check did not replace the container: %+v", s.Resources[0])
	}
}

// A container created but never started (its command is not in the image)
// is the agent's all the same: removing the deployment removes it.
func TestContainerThatNeverStartedIsRemoved(t *testing.T) {
	if err := podmantest.Setup(); err != nil {
		t.Fatal(err)
	}
	n := podmantest.Name(t)
	t.Cleanup(func() { _ = exec.Command("podman", "rm", "-f", "-t", "0", n).Run() })
	f := startFleet(t)
	startAgent(t, agentConfig(t, f.srv.ClientURL(), t.TempDir(), t.TempDir()))
	spec, _ := json.Marshal(map[string]any{"name": n, "image": podmantest.Image, "command": []string{"/no/such/program"}, "stopTimeoutSeconds": 1})
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "broken", Generation: 1,
		Resources: []v1.Resource{{ID: "app", Kind: v1.KindContainer, Spec: spec}}})
	f.waitStatus(t, "broken", func(s v1.DeviceState) error {
		if len(s.Resources) != 1 || s.Resources[0].Phase != v1.PhaseFailed {
			return fmt.Errorf("status %+v", s)
		}
		return nil
	})
	if out, err := exec.Command("podman", "container", "exists", n).CombinedOutput(); err != nil {
		t.Fatalf("the failed container is not there to remove (%v: %s)", err, out)
	}
	if err := f.kvs["desired-state"].Delete(context.Background(), v1.DeviceKey("dev-1", "broken"), 0); err != nil {
		t.Fatal(err)
	}
	retry.Until(t, 60*time.Second, func() error {
		if exec.Command("podman", "container", "exists", n).Run() == nil {
			return fmt.Errorf("container %s is still there after its deployment was removed", n)
		}
		return nil
	})
}
