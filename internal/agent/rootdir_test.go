package agent_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/harmony-fleet/harmony/api/v1alpha1"
	"github.com/harmony-fleet/harmony/internal/agent"
	"github.com/harmony-fleet/harmony/internal/config"
)

// With root_dir (harmony dev), a File's path is resolved under it: the
// path as written is what the allowed roots and the status see, and
// nothing leads out of the root: not '..', not a symlink, not the real
// path given as if it were the path, not a container volume through a
// symlink. Shell jobs run in the root.
func TestRootDirMapsPathsAndKeepsThemIn(t *testing.T) {
	f := startFleet(t)
	root := t.TempDir()
	outside := t.TempDir()
	cfg := agentConfig(t, f.srv.ClientURL(), "/unused", t.TempDir())
	cfg.AllowedRoots = config.DefaultAgent().AllowedRoots // /etc/harmony, /srv/harmony
	cfg.RootDir = root
	startAgent(t, cfg)

	spec := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	job := v1.Resource{ID: "pwd", Kind: v1.KindShellJob, Spec: spec(map[string]any{"command": []string{"/bin/sh", "-c", "pwd > etc/harmony/pwd"}})}
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1,
		Resources: []v1.Resource{fileRes("motd", "/etc/harmony/motd", "hello\n", "0644"), job}})
	f.waitStatus(t, "web", readyAt(1))
	if b, err := os.ReadFile(filepath.Join(root, "etc/harmony/motd")); err != nil || string(b) != "hello\n" {
		t.Fatalf("motd under the root: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc/harmony/pwd")); err != nil || strings.TrimSpace(string(b)) != root {
		t.Fatalf("the shell job's working directory: %q %v, want %s", b, err, root)
	}

	if err := os.Symlink(outside, filepath.Join(root, "etc/harmony/link")); err != nil {
		t.Fatal(err)
	}
	volume := func(host string) v1.Resource {
		return v1.Resource{ID: "c", Kind: v1.KindContainer, Spec: spec(map[string]any{"image": "localhost/busybox:latest",
			"volumes": []map[string]string{{"hostPath": host, "containerPath": "/x"}}})}
	}
	for i, c := range []struct {
		name string
		res  v1.Resource
		want string
	}{
		{"dot-dot", fileRes("pwn", "/etc/harmony/../../"+strings.TrimPrefix(outside, "/")+"/pwn", "x", ""), "spec.path"},
		{"symlink out of the root", fileRes("pwn", "/etc/harmony/link/pwn", "x", ""), "spec.path"},
		{"outside the allowed roots as written", fileRes("pwn", "/etc/pwn", "x", ""), "spec.path"},
		{"the real path as the path", fileRes("pwn", filepath.Join(root, "etc/harmony/pwn"), "x", ""), "spec.path"},
		{"volume through a symlink", volume("/etc/harmony/link"), "hostPath"},
	} {
		gen := int64(i + 2)
		f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: gen, Resources: []v1.Resource{c.res}})
		s := f.waitStatus(t, "web", func(s v1.DeviceState) error {
			if !strings.Contains(s.Message, fmt.Sprintf("generation %d refused", gen)) {
				return fmt.Errorf("%s: %s", c.name, s.Message)
			}
			return nil
		})
		all := ""
		for _, r := range s.Resources {
			all += r.Field + " " + r.Message + " | "
		}
		if s.ObservedGeneration != 1 || !strings.Contains(all, c.want) {
			t.Errorf("%s: generation %d, resources %s; want refused naming %s", c.name, s.ObservedGeneration, all, c.want)
		}
	}
	for _, p := range []string{filepath.Join(outside, "pwn"), "/etc/pwn", filepath.Join(root, root, "etc/harmony/pwn")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was created", p)
		}
	}
}

// A Container on a machine without podman, and a SystemdUnit where no
// systemd answers, are Failed with a reason and a message that say so, and
// the rest of the deployment is applied.
func TestMissingPodmanAndSystemdBlock(t *testing.T) {
	f := startFleet(t)
	root := t.TempDir()
	cfg := agentConfig(t, f.srv.ClientURL(), root, t.TempDir())
	cfg.Podman = filepath.Join(t.TempDir(), "podman") // not there
	cfg.SystemdBus = "unix:path=" + filepath.Join(t.TempDir(), "system_bus_socket")
	cfg.SystemdUnitDir = t.TempDir()
	cfg.Capabilities = []string{v1.CapabilitySystemdUnitFiles}
	startAgent(t, cfg)
	spec := func(v any) json.RawMessage { b, _ := json.Marshal(v); return b }
	f.putDesired(t, v1.DesiredState{V: 1, Device: "dev-1", Deployment: "web", Generation: 1, Resources: []v1.Resource{
		fileRes("motd", filepath.Join(root, "motd"), "hello\n", ""),
		{ID: "web", Kind: v1.KindContainer, Spec: spec(map[string]any{"image": "localhost/busybox:latest"})},
		{ID: "unit", Kind: v1.KindSystemdUnit, Spec: spec(map[string]any{"name": "hello.service", "content": "[Service]\nExecStart=/bin/true\n"})},
	}})
	want := map[string][2]string{
		"web":  {agent.ReasonPodmanNotInstalled, "Container needs podman, which is not installed on this machine"},
		"unit": {agent.ReasonSystemdUnavailable, "SystemdUnit needs systemd (no system bus at " + cfg.SystemdBus + ")"},
		"motd": {"", "in sync"},
	}
	s := f.waitStatus(t, "web", func(s v1.DeviceState) error {
		if s.Phase != v1.PhaseFailed || len(s.Resources) != 3 {
			return fmt.Errorf("phase %s, %d resources", s.Phase, len(s.Resources))
		}
		for _, r := range s.Resources {
			w := want[r.ID]
			if r.Message != w[1] || r.Details["reason"] != w[0] {
				return fmt.Errorf("%s: %s %q %v", r.ID, r.Phase, r.Message, r.Details)
			}
		}
		return nil
	})
	for _, r := range s.Resources {
		if r.ID != "motd" && (r.Phase != v1.PhaseFailed || r.NextRetry != nil) {
			t.Errorf("%s: phase %s, next retry %v; want Failed, looked at again every pass", r.ID, r.Phase, r.NextRetry)
		}
	}
}
